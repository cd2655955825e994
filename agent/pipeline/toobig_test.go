package pipeline_test

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/config"
	"github.com/vmlineage/vmlineage/agent/xapi/xapisim"
)

// TestRecordTooBigForTheSpoolIsDeadLettered: a record the spool can never
// take (here every ECS record is larger than a 1 KiB spool) used to be
// retried every second for ever, stopping the output's feed. Each such
// record now goes to the output's dead-letter file, counted in TooBig, and
// the feed moves on.
func TestRecordTooBigForTheSpoolIsDeadLettered(t *testing.T) {
	sc := xapisim.Generate(xapisim.GenConfig{Hosts: 1, VMs: 3, Ops: 12, Seed: 5})
	h := newHarness(t, sc, false, "")
	cfg := h.config()
	cfg.Outputs = []config.Output{{Name: "tiny", Type: "file", Format: "ecs", Path: filepath.Join(h.dir, "out", "tiny.jsonl"), SpoolMaxBytes: 1 << 10}}
	cfg.Metrics.Listen = freeAddr(t)
	ctx := context.Background()
	a := h.startAgent(ctx, cfg)
	if err := h.srv.Play(ctx, sc, 0); err != nil {
		t.Fatal(err)
	}
	truth, _ := h.srv.Truth()
	got := waitTraced(t, a.Store, truth, 60*time.Second)
	dl := filepath.Join(cfg.DataDir, "deadletter", "tiny.jsonl")
	dead := func() map[string]bool {
		ids := map[string]bool{}
		f, err := os.Open(dl)
		if err != nil {
			return ids
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var e struct {
				ID     string `json:"id"`
				Status int    `json:"status"`
			}
			if json.Unmarshal(sc.Bytes(), &e) == nil && e.Status == 413 {
				ids[e.ID] = true
			}
		}
		return ids
	}
	waitUntil(t, ctx, 30*time.Second, "dead letters of every record", func() bool {
		d := dead()
		for _, r := range got {
			if !d[r.ID] {
				return false
			}
		}
		return true
	})
	if n := a.Outputs()[0].TooBig.Load(); n < uint64(len(got)) {
		t.Fatalf("TooBig %d, want at least %d", n, len(got))
	}
	_, body := get(t, "http://"+cfg.Metrics.Listen+"/metrics")
	if n := metricValue(body, "vmlineage_records_dead_lettered_total"); n < float64(len(got)) {
		t.Errorf("vmlineage_records_dead_lettered_total %v, want at least %d", n, len(got))
	}
}
