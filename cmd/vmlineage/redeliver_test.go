package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/config"
	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/pipeline"
	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/formats/ecs"
	"github.com/vmlineage/vmlineage/internal/receivers"
	"github.com/vmlineage/vmlineage/outputs"
	"github.com/vmlineage/vmlineage/outputs/elasticsearch"
)

// mappingBrokenES answers every bulk create with the recorded 400 mapping
// error of Elasticsearch (outputs/elasticsearch/testdata/bulk_mixed.json,
// its third item), as a cluster with a wrong template does.
func mappingBrokenES(t *testing.T) *httptest.Server {
	b, err := os.ReadFile("../../outputs/elasticsearch/testdata/bulk_mixed.json")
	if err != nil {
		t.Fatal(err)
	}
	var rec struct {
		Items []map[string]map[string]any `json:"items"`
	}
	if err := json.Unmarshal(b, &rec); err != nil || len(rec.Items) < 3 || rec.Items[2]["create"]["status"] != 400.0 {
		t.Fatalf("recorded answer: %v", err)
	}
	tmpl := rec.Items[2]["create"]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Elastic-Product", "Elasticsearch")
		w.Header().Set("Content-Type", "application/json")
		body, _ := io.ReadAll(r.Body)
		if !strings.HasSuffix(r.URL.Path, "/_bulk") {
			http.Error(w, `{"error":"no handler"}`, 404)
			return
		}
		var items []any
		sc := bufio.NewScanner(bytes.NewReader(body))
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for i := 0; sc.Scan(); i++ {
			if i%2 == 1 {
				continue // the document
			}
			var a map[string]struct {
				ID string `json:"_id"`
			}
			json.Unmarshal(sc.Bytes(), &a)
			it := map[string]any{}
			for k, v := range tmpl {
				it[k] = v
			}
			it["_id"] = a["create"].ID
			items = append(items, map[string]any{"create": it})
		}
		json.NewEncoder(w).Encode(map[string]any{"took": 3, "errors": true, "items": items})
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestRedeliverSendsDeadLettersToTheReceiver: records an Elasticsearch
// output dead-lettered (a mapping error on every document) go out with
// `vmlineage outputs redeliver` once the output points at a receiver that
// takes them (VictoriaLogs here), each once, and a second run sends nothing.
func TestRedeliverSendsDeadLettersToTheReceiver(t *testing.T) {
	dir := t.TempDir()
	broken := mappingBrokenES(t)
	out, err := pipeline.BuildOutput(config.Output{Name: "es", Type: "elasticsearch", URLs: []string{broken.URL}}, dir)
	if err != nil {
		t.Fatal(err)
	}
	var items []outputs.Item
	var want []string
	for i := range 3 {
		at := time.Date(2026, 12, 4, 9, 0, i, 0, time.UTC)
		r := record.Record{ID: record.ID("redeliver-pool", fmt.Sprintf("%012x", i), 0), PoolUUID: "redeliver-pool",
			VMUUID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), VMName: fmt.Sprintf("redeliver-vm%d", i), Activity: record.Clone,
			Operation: "VM.clone", Start: at, End: at, Result: record.Success, Source: record.SourceXAPI}
		items = append(items, outputs.Item{ID: r.ID, Payload: ecs.Marshal(&r, nil), Time: at})
		want = append(want, r.ID)
	}
	if err := out.Send(context.Background(), items); err != nil {
		t.Fatalf("the output must dead-letter a mapping error, not fail: %v", err)
	}
	out.Close()
	dl := filepath.Join(dir, "deadletter", "es.jsonl")
	b, err := os.ReadFile(dl)
	if err != nil || strings.Count(string(b), "\n") != 3 || !strings.Contains(string(b), `"status":400`) {
		t.Fatalf("dead-letter file: %v\n%s", err, b)
	}

	// The mended receiver: VictoriaLogs, or the cluster at ES_URL.
	cfg := filepath.Join(dir, "c.yaml")
	var held func() []string
	if u := os.Getenv("ES_URL"); u != "" {
		ns := fmt.Sprintf("t%d", time.Now().UnixNano())
		oc := config.Output{Name: "es", Type: "elasticsearch", URLs: []string{u}, Namespace: ns, Username: os.Getenv("ES_USER"),
			CAFile: os.Getenv("ES_CA_FILE"), Fingerprint: os.Getenv("ES_FINGERPRINT"), AllowHTTP: true}
		yaml := fmt.Sprintf("data_dir: %s\noutputs:\n  - {name: es, type: elasticsearch, urls: [%q], namespace: %s, allow_http: true", dir, u, ns)
		if oc.Username != "" {
			pw := filepath.Join(dir, "pw")
			os.WriteFile(pw, []byte(os.Getenv("ES_PASSWORD")), 0o600)
			oc.PasswordFile = pw
			yaml += fmt.Sprintf(", username: %q, password_file: %q", oc.Username, pw)
		}
		if oc.CAFile != "" {
			yaml += fmt.Sprintf(", ca_file: %q", oc.CAFile)
		}
		if oc.Fingerprint != "" {
			yaml += fmt.Sprintf(", fingerprint: %q", oc.Fingerprint)
		}
		os.WriteFile(cfg, []byte(yaml+"}\n"), 0o600)
		held = func() []string { return esEventIDs(t, oc, dir) }
	} else {
		vl := receivers.StartVictoriaLogs(t)
		os.WriteFile(cfg, []byte(fmt.Sprintf("data_dir: %s\noutputs:\n  - {name: es, type: elasticsearch, urls: [%q]}\n", dir, vl.ESURL)), 0o600)
		held = func() []string {
			vl.Flush(t)
			var ids []string
			for _, r := range vl.Query(t, `event.dataset:"vmlineage.lifecycle" | fields event.id`) {
				ids = append(ids, r["event.id"])
			}
			return ids
		}
	}

	// status counts what waits.
	st, err := lineage.Open(filepath.Join(dir, "lineage.db"))
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	pending := func() (float64, float64) {
		t.Helper()
		s, err := run(t, "status", "--data-dir", dir)
		var v struct {
			DeadLetters map[string]struct {
				Pending          float64 `json:"pending"`
				RedeliveredBytes float64 `json:"redelivered_bytes"`
			} `json:"dead_letters"`
		}
		if err != nil || json.Unmarshal([]byte(s), &v) != nil {
			t.Fatalf("status: %v\n%s", err, s)
		}
		return v.DeadLetters["es"].Pending, v.DeadLetters["es"].RedeliveredBytes
	}
	if n, at := pending(); n != 3 || at != 0 {
		t.Fatalf("status before: %v pending after byte %v, want 3 after 0", n, at)
	}

	s, err := run(t, "outputs", "redeliver", "--dry-run", "--config", cfg)
	if err != nil || !strings.Contains(s, "es: "+dl+": 3 entries waiting after byte 0") || !strings.Contains(s, "3  400 document_parsing_exception") {
		t.Fatalf("dry run: %v\n%s", err, s)
	}
	if _, err := os.Stat(outputs.MarkPath(dl)); err == nil {
		t.Fatal("a dry run moved the mark")
	}
	s, err = run(t, "outputs", "redeliver", "es", "--config", cfg)
	if err != nil || !strings.Contains(s, "es: 3 sent again; redelivered up to byte "+fmt.Sprint(len(b))) {
		t.Fatalf("redeliver: %v\n%s", err, s)
	}
	got := held()
	sort.Strings(got)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("the receiver holds %v, want %v", got, want)
	}
	if n, at := pending(); n != 0 || at != float64(len(b)) {
		t.Fatalf("status after: %v pending after byte %v, want 0 after %d", n, at, len(b))
	}
	s, err = run(t, "outputs", "redeliver", "--config", cfg)
	if err != nil || !strings.Contains(s, "0 entries waiting") || !strings.Contains(s, "0 sent again") {
		t.Fatalf("second run: %v\n%s", err, s)
	}
	if s, err := run(t, "outputs", "redeliver", "nope", "--config", cfg); err == nil || !strings.Contains(err.Error(), `no output named "nope"`) {
		t.Fatalf("unknown output: %v\n%s", err, s)
	}
}

// esEventIDs reads back the event ids of the output's data stream from a
// real cluster, after a refresh.
func esEventIDs(t *testing.T, oc config.Output, dir string) []string {
	t.Helper()
	out, err := pipeline.BuildOutput(oc, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	o := out.(*elasticsearch.Output)
	es := o.Client()
	if res, err := es.Indices.Refresh(es.Indices.Refresh.WithIndex(o.DataStream())); err == nil {
		res.Body.Close()
	}
	res, err := es.Search(es.Search.WithIndex(o.DataStream()), es.Search.WithSize(100))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var ans struct {
		Hits struct {
			Hits []struct {
				Source struct {
					Event struct {
						ID string `json:"id"`
					} `json:"event"`
				} `json:"_source"`
			} `json:"hits"`
		} `json:"hits"`
	}
	if err := json.NewDecoder(res.Body).Decode(&ans); err != nil {
		t.Fatalf("search %s: %s: %v", o.DataStream(), res.Status(), err)
	}
	var ids []string
	for _, h := range ans.Hits.Hits {
		ids = append(ids, h.Source.Event.ID)
	}
	return ids
}

// A file output is written by the running agent alone (a second writer
// cuts the file back to its own tally on a short write): redeliver goes
// through one only when told the agent is stopped; a stdout output has
// nobody to send to.
func TestRedeliverThroughAFileOutputWantsTheAgentStopped(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "records.jsonl")
	cfg := filepath.Join(dir, "c.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("data_dir: %s\noutputs:\n  - {name: archive, type: file, format: ecs, path: %s}\n  - {name: screen, type: stdout}\n", dir, path)), 0o600)
	for _, name := range []string{"archive", "screen"} {
		d, err := outputs.OpenDeadLetter(filepath.Join(dir, "deadletter", name+".jsonl"))
		if err != nil {
			t.Fatal(err)
		}
		d.Write([]outputs.DeadLetterEntry{outputs.Entry(name, outputs.Item{ID: "big", Payload: []byte(`{"id":"big"}`)}, 413, "too big for the spool")})
		d.Close()
	}
	s, err := run(t, "outputs", "redeliver", "archive", "screen", "--config", cfg)
	if err == nil || !strings.Contains(s, "archive: FAILED: the running agent writes "+path+" alone") || !strings.Contains(s, "screen: FAILED: a stdout output has no receiver") {
		t.Fatalf("named, without --agent-stopped: %v\n%s", err, s)
	}
	// Not named (a timer's plain run): skipped with a word, not failed.
	s, err = run(t, "outputs", "redeliver", "--config", cfg)
	if err != nil || !strings.Contains(s, "archive: skipped: the running agent writes") || !strings.Contains(s, "screen: skipped: a stdout output") {
		t.Fatalf("not named: %v\n%s", err, s)
	}
	if b, _ := os.ReadFile(path); len(b) != 0 {
		t.Fatalf("the file output was written: %q", b)
	}
	if s, err := run(t, "outputs", "redeliver", "archive", "--agent-stopped", "--config", cfg); err != nil || !strings.Contains(s, "archive: 1 sent again") {
		t.Fatalf("with --agent-stopped: %v\n%s", err, s)
	}
	if b, _ := os.ReadFile(path); string(b) != `{"id":"big"}`+"\n" {
		t.Fatalf("the file output holds %q", b)
	}
	if s, err := run(t, "outputs", "redeliver", "screen", "--dry-run", "--config", cfg); err != nil || !strings.Contains(s, "1 entries waiting") {
		t.Fatalf("dry run of stdout: %v\n%s", err, s)
	}
}
