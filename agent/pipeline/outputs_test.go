package pipeline_test

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/config"
	"github.com/vmlineage/vmlineage/agent/verify"
	"github.com/vmlineage/vmlineage/agent/xapi/xapisim"
	"github.com/vmlineage/vmlineage/internal/receivers"
)

// TestRecordsReachEveryOutput traces every-activity into three outputs at
// once: CEF over TLS syslog into rsyslog (parsed back by liblognorm), ECS
// through the Elasticsearch output into VictoriaLogs, and an ECS JSON-lines
// file. Every ground-truth record must arrive in each, once.
func TestRecordsReachEveryOutput(t *testing.T) {
	rs := receivers.StartRsyslog(t)
	vl := receivers.StartVictoriaLogs(t)
	sc, err := xapisim.Builtin("every-activity")
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, sc, true, "")
	cfg := h.config()
	jsonl := filepath.Join(h.dir, "out", "records.jsonl")
	chainl := filepath.Join(h.dir, "out", "chain.jsonl")
	cfg.Outputs = []config.Output{
		{Name: "siem", Type: "syslog", Format: "cef", Network: "tls", Address: rs.TLSAddr, CAFile: rs.CAFile},
		{Name: "es", Type: "elasticsearch", URLs: []string{vl.ESURL}, Namespace: "e2e"},
		{Name: "archive", Type: "file", Format: "ecs", Path: jsonl},
		{Name: "chain", Type: "file", Format: "json", Path: chainl},
	}
	ctx := context.Background()
	a := h.startAgent(ctx, cfg)
	if err := h.srv.Play(ctx, sc, 20); err != nil {
		t.Fatal(err)
	}
	truth, _ := h.srv.Truth()
	got := waitTraced(t, a.Store, truth, 30*time.Second)
	want := map[string]bool{}
	for _, r := range got {
		want[r.ID] = true
	}

	// The archive file: one ECS document per record, event.id = record id.
	waitUntil(t, ctx, 30*time.Second, "file output", func() bool { return len(fileIDs(t, jsonl)) >= len(want)+1 }) // + the start checkpoint
	checkIDs(t, "file", fileIDs(t, jsonl), want)

	// rsyslog: every record once, CEF parsed field by field by liblognorm.
	msgs := rs.WaitMessages(t, len(want)+1, 30*time.Second)
	var ids []string
	for _, m := range msgs {
		i := strings.Index(m.Msg, "externalId=")
		if i < 0 {
			t.Errorf("syslog message without externalId: %q", m.Msg)
			continue
		}
		ids = append(ids, strings.Fields(m.Msg[i+len("externalId="):])[0])
	}
	checkIDs(t, "syslog", ids, want)
	parsed := rs.ParsedCEF(t)
	if len(parsed) < len(want) {
		t.Errorf("liblognorm parsed %d of %d CEF messages", len(parsed), len(want))
	}

	// VictoriaLogs through the Elasticsearch bulk API.
	var es []string
	waitUntil(t, ctx, 30*time.Second, "elasticsearch output", func() bool {
		vl.Flush(t)
		es = es[:0]
		for _, row := range vl.Query(t, `data_stream.namespace:e2e | fields event.id`) {
			es = append(es, row["event.id"])
		}
		return len(es) >= len(want)+1
	})
	checkIDs(t, "elasticsearch", es, want)
	for _, o := range a.Outputs() {
		h := o.Health()
		t.Logf("%s: sent %d, failed %d, retried %d, spool %+v", o.Name, h.Health.Sent, h.Health.Failed, h.Health.Retried, h.Spool)
	}

	// The JSON-lines copy verifies as a chain on its own, and the SIEM's
	// copy (the links in its CEF lines) vouches for the store.
	waitUntil(t, ctx, 30*time.Second, "json file output", func() bool { return countLines(chainl) >= len(want)+1 })
	f, err := os.Open(chainl)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := verify.File([]verify.Input{{Name: chainl, R: f}})
	if err != nil || res.Problem != nil || res.Records != int64(len(want)) || res.First != 1 {
		t.Fatalf("verify --file: %+v %v %v", res, err, res.Problem)
	}
	var siem strings.Builder
	for _, m := range msgs {
		siem.WriteString(m.Msg + "\n")
	}
	links, _, err := verify.Links(strings.NewReader(siem.String()))
	if err != nil || len(links) < len(want) {
		t.Fatalf("links in the syslog copy: %d (%v)", len(links), err)
	}
	vs, err := verify.AgainstStore(ctx, a.Store, "rsyslog", links)
	if err != nil || vs.Problem != nil || vs.Matched < len(want) {
		t.Fatalf("the syslog copy does not vouch for the store: %+v %v %v", vs, err, vs.Problem)
	}
}

func countLines(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return strings.Count(string(b), "\n")
}

func fileIDs(t testing.TB, path string) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var ids []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var d struct {
			Event struct{ ID string } `json:"event"`
		}
		if err := json.Unmarshal(sc.Bytes(), &d); err != nil {
			t.Errorf("file output line is not JSON: %v", err)
			continue
		}
		ids = append(ids, d.Event.ID)
	}
	return ids
}

// checkIDs wants every id once: nothing lost, nothing doubled.
func checkIDs(t *testing.T, output string, ids []string, want map[string]bool) {
	t.Helper()
	seen := map[string]int{}
	checkpoints := 0
	for _, id := range ids {
		if strings.HasPrefix(id, "chain-") {
			checkpoints++ // a chain checkpoint (formats.CheckpointID), not a record
			continue
		}
		seen[id]++
	}
	if checkpoints == 0 {
		t.Errorf("%s: no chain checkpoint arrived", output)
	}
	missing, dup := 0, 0
	for id := range want {
		if seen[id] == 0 {
			missing++
		}
	}
	for id, n := range seen {
		if n > 1 {
			dup++
		}
		if !want[id] {
			t.Errorf("%s: unknown record id %s", output, id)
		}
	}
	t.Logf("%s: expected %d, delivered %d, missing %d, duplicated %d", output, len(want), len(seen), missing, dup)
	if missing > 0 || dup > 0 {
		t.Errorf("%s: %d records missing, %d duplicated", output, missing, dup)
	}
}
