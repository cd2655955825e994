package e2e_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/config"
	"github.com/vmlineage/vmlineage/agent/metrics/metricstest"
	"github.com/vmlineage/vmlineage/agent/pipeline"
	"github.com/vmlineage/vmlineage/agent/xapi/xapisim"
	"github.com/vmlineage/vmlineage/internal/receivers"
	"github.com/vmlineage/vmlineage/plugins/plugintest"
)

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestAgentRunsDetectors runs the agent itself with its detectors and alert
// intake configured: records stream through the detectors (the destroy of
// origin gives shadow-copy findings), alerts posted to /v1/alerts come back
// and go to the outputs enriched (vm5 the halted suspect).
func TestAgentRunsDetectors(t *testing.T) {
	sc, _ := xapisim.Builtin("threat-model")
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte("s3cret\n"), 0o600)
	tok := filepath.Join(dir, "token")
	os.WriteFile(tok, []byte("a-token-of-some-length\n"), 0o600)
	srv := xapisim.New(xapisim.Config{Scenario: sc, TLS: true, Password: "s3cret"})
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	pdir, pins := plugintest.Setup(t, plugintest.ShippedDetectors()...)
	out := filepath.Join(dir, "out.jsonl")
	cfg := config.Default()
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.XAPI.URL, cfg.XAPI.PasswordFile, cfg.XAPI.Fingerprint = srv.URL(), pw, srv.CertFingerprint()
	cfg.XAPI.EventTimeout = config.Duration(2 * time.Second)
	cfg.Detectors.Dir, cfg.Detectors.Pins = pdir, pins
	cfg.Alerts.HTTPListen, cfg.Alerts.TokenFile = freeAddr(t), tok
	cfg.Alerts.SyslogListen = freeAddr(t)
	cfg.Metrics.Listen = freeAddr(t)
	cfg.Outputs = []config.Output{{Name: "archive", Type: "file", Format: "ecs", Path: out}}
	a, err := pipeline.New(cfg, pipeline.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), BackoffBase: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done; a.Close() }()
	wait(t, "agent baseline", func() bool { return a.Tracer.PoolUUID() != "" && srv.Waiting() > 0 })
	if err := srv.Play(ctx, sc, 0); err != nil {
		t.Fatal(err)
	}
	truth, _ := srv.Truth()
	wait(t, "records", func() bool { n, _ := a.Store.CountRecords(ctx); return n >= int64(len(truth)) })

	post := func(doc string) string {
		req, _ := http.NewRequest("POST", "http://"+cfg.Alerts.HTTPListen+"/v1/alerts", bytes.NewBufferString(doc))
		req.Header.Set("Authorization", "Bearer a-token-of-some-length")
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode/100 != 2 {
			t.Fatalf("POST /v1/alerts: %d %s", resp.StatusCode, b)
		}
		return string(b)
	}
	at := sc.Start.Add(3 * time.Minute)
	post(fmt.Sprintf(`{"@timestamp":%q,"host":{"name":"vm1"}}`, at.Format(time.RFC3339)))
	second := post(fmt.Sprintf(`{"@timestamp":%q,"host":{"name":"vm2"}}`, at.Add(time.Minute).Format(time.RFC3339)))
	if !strings.Contains(second, `"vm_name":"vm5"`) {
		t.Errorf("the second alert's answer names no vm5 suspect: %.400s", second)
	}
	post(fmt.Sprintf(`{"@timestamp":%q,"host":{"name":"no-such-vm"}}`, at.Format(time.RFC3339)))
	// The metrics endpoint counts the three alerts, times them by phase,
	// and counts the detector calls by outcome.
	mf := metricstest.Scrape(t, "http://"+cfg.Metrics.Listen+"/metrics")
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   func(float64) bool
	}{
		{"vmlineage_alerts_total", map[string]string{"outcome": "matched"}, func(v float64) bool { return v == 2 }},
		{"vmlineage_alerts_total", map[string]string{"outcome": "unmatched"}, func(v float64) bool { return v == 1 }},
		{"vmlineage_alert_enrich_seconds", nil, func(v float64) bool { return v == 3 }},
		{"vmlineage_alert_phase_seconds", map[string]string{"phase": "match"}, func(v float64) bool { return v == 3 }},
		{"vmlineage_alert_phase_seconds", map[string]string{"phase": "detectors"}, func(v float64) bool { return v == 2 }},
		// Both matched alerts have a destroyed ancestor: shadow-copy is asked.
		{"vmlineage_detector_calls_total", map[string]string{"detector": "shadow-copy", "call": "enrich", "outcome": "ok"}, func(v float64) bool { return v == 2 }},
		// Only the second alert has two alerted VMs in the family.
		{"vmlineage_detector_calls_total", map[string]string{"detector": "lineage-suspects", "call": "enrich", "outcome": "ok"}, func(v float64) bool { return v == 1 }},
		{"vmlineage_detector_calls_total", map[string]string{"detector": "lineage-suspects", "call": "enrich", "outcome": "skipped"}, func(v float64) bool { return v == 1 }},
		{"vmlineage_detector_call_seconds", map[string]string{"detector": "shadow-copy", "call": "enrich"}, func(v float64) bool { return v == 2 }},
		{"vmlineage_detector_calls_total", map[string]string{"detector": "shadow-copy", "call": "on_record", "outcome": "ok"}, func(v float64) bool { return v >= 1 }},
		{"vmlineage_detector_up", map[string]string{"detector": "rollback"}, func(v float64) bool { return v == 1 }},
		{"vmlineage_alerts_in_flight", nil, func(v float64) bool { return v == 0 }},
	} {
		if v, ok := metricstest.Value(mf, c.name, c.labels); !ok || !c.want(v) {
			t.Errorf("%s%v = %v (found %v)", c.name, c.labels, v, ok)
		}
	}
	wait(t, "findings and enriched alerts in the output", func() bool {
		b, _ := os.ReadFile(out)
		s := string(b)
		return strings.Contains(s, "shadow_copy") && strings.Contains(s, `"vm_name":"vm5"`)
	})
	// A syslog message that is not an alert reaches the outputs as an
	// error document, as in `alerts serve`.
	c, err := net.Dial("tcp", cfg.Alerts.SyslogListen)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "<134>1 2024-03-01T09:20:00Z av1 av - - - not-a-cef-alert\n")
	c.Close()
	wait(t, "the error document of a bad syslog alert in the output", func() bool {
		b, _ := os.ReadFile(out)
		return strings.Contains(string(b), "pipeline_error") && strings.Contains(string(b), "not-a-cef-alert")
	})
}

// TestAgentWritesVMDocuments runs the agent with an Elasticsearch output
// (VictoriaLogs here, which takes the bulk API): besides the records, one
// document per VM arrives in the VM index, with the family root and the
// ancestor path that lineage.backend: elasticsearch reads.
func TestAgentWritesVMDocuments(t *testing.T) {
	sc, _ := xapisim.Builtin("threat-model")
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte("s3cret\n"), 0o600)
	srv := xapisim.New(xapisim.Config{Scenario: sc, TLS: true, Password: "s3cret"})
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	vl := receivers.StartVictoriaLogs(t)
	cfg := config.Default()
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.XAPI.URL, cfg.XAPI.PasswordFile, cfg.XAPI.Fingerprint = srv.URL(), pw, srv.CertFingerprint()
	cfg.XAPI.EventTimeout = config.Duration(2 * time.Second)
	cfg.Outputs = []config.Output{{Name: "es", Type: "elasticsearch", URLs: []string{vl.ESURL}}}
	a, err := pipeline.New(cfg, pipeline.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), BackoffBase: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done; a.Close() }()
	wait(t, "agent baseline", func() bool { return a.Tracer.PoolUUID() != "" && srv.Waiting() > 0 })
	if err := srv.Play(ctx, sc, 0); err != nil {
		t.Fatal(err)
	}
	truth, _ := srv.Truth()
	wait(t, "records", func() bool { n, _ := a.Store.CountRecords(ctx); return n >= int64(len(truth)) })
	var rows []map[string]string
	wait(t, "VM documents with their lineage", func() bool {
		vl.Flush(t)
		rows = vl.Query(t, `vm.uuid:* | sort by (_time) | fields vm.uuid, vm.name, vm.destroyed, lineage.root, lineage.ancestors, lineage.depth`)
		latest := map[string]map[string]string{}
		for _, r := range rows {
			latest[r["vm.uuid"]] = r
		}
		root := ""
		for _, r := range latest {
			if r["lineage.depth"] == "0" && r["vm.destroyed"] == "true" {
				root = r["vm.uuid"]
			}
		}
		n := 0
		for _, r := range latest {
			if root != "" && r["lineage.root"] == root && r["lineage.depth"] == "1" && strings.Contains(r["lineage.ancestors"], root) {
				n++
			}
		}
		return n == 5 // vm1..vm5, clones of the destroyed origin
	})
}
