package e2e_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/alerts"
	"github.com/vmlineage/vmlineage/agent/config"
	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/pipeline"
	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/agent/xapi/xapisim"
	"github.com/vmlineage/vmlineage/plugins"
	"github.com/vmlineage/vmlineage/plugins/plugintest"
)

func TestMain(m *testing.M) { plugintest.Main(m) }

// The acceptance of issue 4 on a traced pool: the simulator plays the
// threat-model, the agent traces it into its store, and alerts for vm1..vm4
// (by uuid, by name, by IP) are enriched: from the second on, vm5 (halted)
// is the first suspect and origin the common ancestor, destroyed.
func TestThreatModelTracedAndEnriched(t *testing.T) {
	sc, err := xapisim.Builtin("threat-model")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte("s3cret\n"), 0o600)
	srv := xapisim.New(xapisim.Config{Scenario: sc, TLS: true, Password: "s3cret"})
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cfg := config.Default()
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.XAPI.URL, cfg.XAPI.PasswordFile, cfg.XAPI.Fingerprint = srv.URL(), pw, srv.CertFingerprint()
	cfg.XAPI.EventTimeout = config.Duration(2 * time.Second)
	a, err := pipeline.New(cfg, pipeline.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), BackoffBase: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done; a.Close() }()
	wait(t, "agent baseline", func() bool { return a.Tracer.PoolUUID() != "" })
	if err := srv.Play(ctx, sc, 20); err != nil {
		t.Fatal(err)
	}
	truth, _ := srv.Truth()
	var last time.Time
	wait(t, "the scenario traced", func() bool {
		got, err := a.Store.Records(ctx, lineage.Filter{})
		if err != nil || len(got) < len(truth) {
			return false
		}
		for _, r := range got {
			if r.Start.After(last) {
				last = r.Start
			}
		}
		return true
	})

	uuids, ips := map[string]string{}, map[string]string{}
	for _, v := range sc.VMs {
		uuids[v.Name] = v.UUID
	}
	for _, s := range sc.Steps {
		if s.NewName != "" {
			uuids[s.NewName], ips[s.NewName] = s.NewUUID, s.IP
		}
	}
	svc, err := alerts.NewService(ctx, a.Store)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	pdir, pins := plugintest.Setup(t, plugintest.ShippedDetectors()...)
	m, err := plugins.NewManager(plugins.Config{Dir: pdir, Pins: pins}, svc)
	if err != nil {
		t.Fatal(err)
	}
	m.Start(ctx)
	defer m.Close()
	e := alerts.NewEnricher(svc, m, nil)

	for bi, by := range []string{"uuid", "name", "ip"} {
		for i, vm := range []string{"vm1", "vm2", "vm3", "vm4"} {
			at := last.Add(time.Duration(10+60*(4*bi+i)) * time.Minute) // a fresh day per mode: windows do not overlap
			at = at.Add(time.Duration(bi) * 48 * time.Hour)
			var doc string
			switch by {
			case "uuid":
				doc = fmt.Sprintf(`{"@timestamp":%q,"cloud":{"instance":{"id":%q}}}`, at.Format(time.RFC3339), uuids[vm])
			case "name":
				doc = fmt.Sprintf(`{"@timestamp":%q,"host":{"name":%q}}`, at.Format(time.RFC3339), vm)
			case "ip":
				doc = fmt.Sprintf(`{"@timestamp":%q,"source":{"ip":%q}}`, at.Format(time.RFC3339), ips[vm])
			}
			al, err := alerts.ParseJSON([]byte(doc), time.Now())
			if err != nil {
				t.Fatal(err)
			}
			js, err := e.Enrich(ctx, al)
			if err != nil {
				t.Fatal(err)
			}
			out := string(js)
			if !strings.Contains(out, `"matched":true`) {
				t.Fatalf("%s %s not matched: %s", by, vm, out)
			}
			if i == 0 {
				continue
			}
			first := strings.Index(out, `"suspects":[{"vm_uuid":"`+uuids["vm5"]+`","vm_name":"vm5"`)
			if first < 0 || !strings.Contains(out, `"power_state":"Halted"`) ||
				!strings.Contains(out, `"common_ancestor":{"vm_uuid":"`+uuids["origin"]+`"`) || !strings.Contains(out, `"name":"origin"`) ||
				!strings.Contains(out, `"destroyed":true`) {
				t.Fatalf("%s: alert for %s: want vm5 (halted) first and origin (destroyed) as ancestor:\n%s", by, vm, out)
			}
		}
	}
	// The traced records went through the streaming detectors too.
	var kinds []string
	recs, _ := a.Store.Records(ctx, lineage.Filter{Activity: record.Destroy})
	for _, r := range recs {
		for _, res := range m.OnRecord(ctx, &r) {
			for _, f := range res.Findings {
				kinds = append(kinds, f.Kind)
			}
		}
	}
	if !strings.Contains(strings.Join(kinds, ","), "shadow_copy") || !strings.Contains(strings.Join(kinds, ","), "orphan") {
		t.Errorf("destroy of origin: findings %v", kinds)
	}
	// Issue 8 on the same traced pool and stored alerts: the forensics view.
	checkForensicsView(t, a.Store, svc, sc.Start)
}

func wait(t *testing.T, what string, f func() bool) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); !f(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
