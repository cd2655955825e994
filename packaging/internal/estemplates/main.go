// Command estemplates writes the Elasticsearch set-up bodies the
// elasticsearch output installs itself (outputs/elasticsearch Setup), as
// files for operators who install them by hand or with their own tooling:
// the composable index templates and the ILM policy, with the output's
// defaults. Usage: go run ./packaging/internal/estemplates DIR
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/vmlineage/vmlineage/outputs/elasticsearch"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: estemplates DIR")
		os.Exit(2)
	}
	// The URL is never contacted: New needs one to build the client.
	o, err := elasticsearch.New(elasticsearch.Config{URLs: []string{"http://127.0.0.1:9200"}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "estemplates:", err)
		os.Exit(1)
	}
	files := map[string]any{
		"index-template.json":    o.IndexTemplate(),
		"vm-index-template.json": o.VMIndexTemplate(),
		"ilm-policy.json":        o.ILMPolicyBody(),
	}
	for name, body := range files {
		b, err := json.MarshalIndent(body, "", "  ")
		if err == nil {
			err = os.WriteFile(filepath.Join(os.Args[1], name), append(b, '\n'), 0o644)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "estemplates:", err)
			os.Exit(1)
		}
	}
}
