package main

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/alerts"
	"github.com/vmlineage/vmlineage/agent/alerts/alertstest"
	"github.com/vmlineage/vmlineage/agent/config"
	"github.com/vmlineage/vmlineage/plugins/plugintest"
)

// `vmlineage enrich` end to end: threat-model store, shipped detectors
// built and pinned, alerts for vm1..vm4 by name on stdin.
func TestEnrichCommand(t *testing.T) {
	st := alertstest.ThreatModel(t)
	// The command opens <data-dir>/<store file>; put the fixture there.
	dataDir := filepath.Dir(st.Path())
	cfg := config.Default()
	cfg.DataDir = dataDir
	if cfg.StorePath() != st.Path() {
		t.Fatalf("store file name differs from the fixture's (%s vs %s)", cfg.StorePath(), st.Path())
	}
	st.Close()
	dir, pins := plugintest.Setup(t, plugintest.ShippedDetectors()...)
	var in bytes.Buffer
	for i, vm := range []string{"vm1", "vm2", "vm3", "vm4"} {
		fmt.Fprintf(&in, `{"@timestamp":%q,"host":{"name":%q},"event":{"kind":"alert"}}`+"\n", alertstest.At(600+60*i).Format(time.RFC3339), vm)
	}
	in.WriteString("{oops\n")
	c := newEnrichCmd()
	var out, errOut bytes.Buffer
	c.SetIn(&in)
	c.SetOut(&out)
	c.SetErr(&errOut)
	c.SetArgs(append([]string{"--data-dir", dataDir, "--plugin-dir", dir, "--window", "1h", "--k", "2"}, plugintest.Flags(pins)...))
	if err := c.Execute(); err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 5 {
		t.Fatalf("want 5 lines, got %d:\n%s\nstderr:\n%s", len(lines), out.String(), errOut.String())
	}
	for i, line := range lines[1:4] {
		var doc struct {
			VL struct {
				Suspects []struct {
					Name  string `json:"vm_name"`
					State string `json:"power_state"`
				} `json:"suspects"`
				CA struct {
					Name      string `json:"name"`
					Destroyed bool   `json:"destroyed"`
				} `json:"common_ancestor"`
			} `json:"vmlineage"`
		}
		if err := json.Unmarshal([]byte(line), &doc); err != nil {
			t.Fatal(err)
		}
		if len(doc.VL.Suspects) == 0 || doc.VL.Suspects[0].Name != "vm5" || doc.VL.Suspects[0].State != "Halted" ||
			doc.VL.CA.Name != "origin" || !doc.VL.CA.Destroyed {
			t.Errorf("alert %d: %s", i+2, line)
		}
	}
	if !strings.Contains(lines[4], `"vmlineage":{"error"`) || !strings.Contains(errOut.String(), "line 5") {
		t.Errorf("bad line: %s\nstderr: %s", lines[4], errOut.String())
	}
}

// alerts.max_alerts of --config bounds the alert log `vmlineage enrich`
// writes: every alert still goes out enriched, and the log keeps the
// newest ones only (pruned when the run ends, if not before).
func TestEnrichKeepsAlertLogBound(t *testing.T) {
	st := alertstest.ThreatModel(t)
	dataDir := filepath.Dir(st.Path())
	st.Close()
	cfgPath := filepath.Join(t.TempDir(), "vmlineage.yaml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf("data_dir: %s\nalerts:\n  max_alerts: 3\n", dataDir)), 0o600); err != nil {
		t.Fatal(err)
	}
	dir, pins := plugintest.Setup(t, plugintest.ShippedDetectors()...)
	var in bytes.Buffer
	for i := range 8 {
		vm := fmt.Sprintf("vm%d", 1+i%4)
		fmt.Fprintf(&in, `{"@timestamp":%q,"host":{"name":%q},"event":{"kind":"alert","id":"bound-%d"}}`+"\n", alertstest.At(600+60*i).Format(time.RFC3339), vm, i)
	}
	c := newEnrichCmd()
	var out, errOut bytes.Buffer
	c.SetIn(&in)
	c.SetOut(&out)
	c.SetErr(&errOut)
	c.SetArgs(append([]string{"--config", cfgPath, "--plugin-dir", dir}, plugintest.Flags(pins)...))
	if err := c.Execute(); err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	if n := strings.Count(out.String(), `"suspects"`); n == 0 || strings.Count(strings.TrimSpace(out.String()), "\n") != 7 {
		t.Fatalf("want 8 enriched alerts, got:\n%s\nstderr:\n%s", out.String(), errOut.String())
	}
	db, err := sql.Open("sqlite", "file:"+alerts.AlertsPath(filepath.Join(dataDir, "lineage.db"))+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n, vms int
	if err := db.QueryRow("SELECT COUNT(*), (SELECT COUNT(*) FROM alert_vms) FROM alerts").Scan(&n, &vms); err != nil {
		t.Fatal(err)
	}
	if n != 3 || vms != 3 {
		t.Fatalf("the alert log holds %d alerts and %d VM rows after the run, want 3 and 3 (alerts.max_alerts)", n, vms)
	}

	// `vmlineage alerts export` reads those three back, documents unpacked.
	export := func(args ...string) []alerts.StoredAlert {
		t.Helper()
		c := newAlertsCmd()
		var out, errOut bytes.Buffer
		c.SetOut(&out)
		c.SetErr(&errOut)
		c.SetArgs(append([]string{"export", "--config", cfgPath}, args...))
		if err := c.Execute(); err != nil {
			t.Fatalf("alerts export %v: %v\n%s", args, err, errOut.String())
		}
		var got []alerts.StoredAlert
		for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			if line == "" {
				continue
			}
			var a alerts.StoredAlert
			if err := json.Unmarshal([]byte(line), &a); err != nil {
				t.Fatalf("alerts export %v: line %q: %v", args, line, err)
			}
			got = append(got, a)
		}
		return got
	}
	all := export()
	if len(all) != 3 {
		t.Fatalf("export: %d alerts, want 3", len(all))
	}
	// Which three the bound kept depends on the order the batches were
	// stored in; each line must agree with the alert it names.
	times := []time.Time{}
	for i, a := range all {
		var k int
		if _, err := fmt.Sscanf(a.ID, "bound-%d", &k); err != nil {
			t.Fatalf("export line %d: id %q", i, a.ID)
		}
		vm := fmt.Sprintf("vm%d", 1+k%4)
		if !a.Matched || len(a.VMs) != 1 || a.VMs[0].Field != "host.name" || a.VMs[0].Value != vm || a.Error != "" ||
			!strings.Contains(string(a.Alert), `"id":"`+a.ID+`"`) || !strings.Contains(string(a.Enriched), `"suspects"`) ||
			!a.Time.Equal(alertstest.At(600+60*k)) || (i > 0 && a.Seq <= all[i-1].Seq) {
			t.Errorf("export line %d: %+v\nalert %s\nenriched %s", i, a, a.Alert, a.Enriched)
		}
		times = append(times, a.Time)
	}
	// Two of the three may name the same VM.
	vm := all[1].VMs[0].Value
	var want, got []string
	for _, a := range all {
		if a.VMs[0].Value == vm {
			want = append(want, a.ID)
		}
	}
	for _, a := range export("--vm", vm) {
		got = append(got, a.ID)
	}
	if !slices.Equal(got, want) {
		t.Errorf("--vm %s: %v, want %v", vm, got, want)
	}
	slices.SortFunc(times, time.Time.Compare)
	if got := export("--since", times[1].Format(time.RFC3339), "--limit", "1"); len(got) != 1 || !got[0].Time.After(times[0]) {
		t.Errorf("--since --limit 1: %d alerts", len(got))
	}
	if got := export("--until", times[1].Format(time.RFC3339)); len(got) != 1 || !got[0].Time.Equal(times[0]) {
		t.Errorf("--until: %d alerts", len(got))
	}
}
