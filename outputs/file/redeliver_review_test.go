package file

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/vmlineage/vmlineage/outputs"
)

// `vmlineage outputs redeliver` builds a second file output on the path the
// running agent writes (pipeline.BuildOutput, "beside the running agent").
// The file output assumes it is the only writer: its size is its own tally
// from open, and a short write (disk full; here the file-size limit) is cut
// back to that tally, which removes every line the agent appended since the
// redelivery opened the file: records the agent had acknowledged.
func TestReviewRedeliverThroughAFileOutputCutsTheAgentsLines(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "records.jsonl")
	agent, err := New(Config{Path: path, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer agent.Close()
	ctx := context.Background()
	if err := agent.Send(ctx, []outputs.Item{{ID: "r1", Payload: []byte(`{"id":"r1"}`)}}); err != nil {
		t.Fatal(err)
	}
	// The redelivery starts: it opens the output, then reads the file.
	cli, err := New(Config{Path: path, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	// Meanwhile the agent goes on writing.
	if err := agent.Send(ctx, []outputs.Item{{ID: "r2", Payload: []byte(`{"id":"r2"}`)}, {ID: "r3", Payload: []byte(`{"id":"r3"}`)}}); err != nil {
		t.Fatal(err)
	}
	dl := filepath.Join(dir, "deadletter.jsonl")
	d, _ := outputs.OpenDeadLetter(dl)
	d.Write([]outputs.DeadLetterEntry{outputs.Entry("archive", outputs.Item{ID: "big", Payload: []byte(`{"id":"big","pad":"` + strings.Repeat("x", 200) + `"}`)}, 413, "too big")})
	d.Close()

	// The disk fills up while the redelivered line is written.
	fi, _ := os.Stat(path)
	var old syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old)
	lim := syscall.Rlimit{Cur: uint64(fi.Size()) + 20, Max: old.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Skip(err)
	}
	_, rerr := outputs.Redeliver(ctx, dl, cli, outputs.RedeliverOptions{})
	syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old)
	if rerr == nil {
		t.Fatal("the short write did not fail")
	}
	b, _ := os.ReadFile(path)
	if !strings.Contains(string(b), `"r2"`) || !strings.Contains(string(b), `"r3"`) {
		t.Fatalf("the agent's acknowledged records r2, r3 are gone after the failed redelivery; file now:\n%s\n(redeliver: %v)", b, rerr)
	}
}
