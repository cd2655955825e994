package esbackend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/alerts"
	"github.com/vmlineage/vmlineage/agent/alerts/alertstest"
	"github.com/vmlineage/vmlineage/agent/backend"
	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/plugins"
	"github.com/vmlineage/vmlineage/plugins/plugintest"
)

func TestMain(m *testing.M) { plugintest.Main(m) }

// The acceptance through Elasticsearch: with the threat-model's VM
// documents and records there, alerts for vm1..vm4 (by name) are enriched
// by the shipped detectors reading lineage from Elasticsearch only; after
// the second, vm5 (halted) is the first suspect and origin, destroyed, the
// common ancestor.
func TestEnrichThroughElasticsearch(t *testing.T) {
	st := alertstest.ThreatModel(t)
	s := newESSession(t, "threatmodel")
	s.writeStore(t, st)
	ctx := context.Background()
	lin := s.backend()
	svc, err := alerts.NewServiceWith(ctx, lin, filepath.Join(t.TempDir(), "alerts.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	dir, pins := plugintest.Setup(t, plugintest.ShippedDetectors("lineage-suspects", "rollback", "shadow-copy")...)
	m, err := plugins.NewManager(plugins.Config{Dir: dir, Pins: pins}, svc)
	if err != nil {
		t.Fatal(err)
	}
	m.Start(ctx)
	t.Cleanup(m.Close)
	e := alerts.NewEnricher(svc, m, nil)
	for i, vm := range []string{"vm1", "vm2", "vm3", "vm4"} {
		doc := fmt.Sprintf(`{"@timestamp":%q,"event":{"kind":"alert","id":"es-%s"},"host":{"name":%q},"rule":{"name":"EICAR"}}`,
			alertstest.At(600+60*i).Format(time.RFC3339), vm, vm)
		a, err := alerts.ParseJSON([]byte(doc), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		js, err := e.Enrich(ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		var out struct {
			VL struct {
				Matched bool `json:"matched"`
				VMs     []struct {
					UUID       string `json:"vm_uuid"`
					PowerState string `json:"power_state"`
				} `json:"vms"`
				CommonAncestor *struct {
					UUID      string `json:"vm_uuid"`
					Name      string `json:"name"`
					Destroyed bool   `json:"destroyed"`
				} `json:"common_ancestor"`
				Suspects  []plugins.Suspect `json:"suspects"`
				Findings  []plugins.Finding `json:"findings"`
				Detectors []struct {
					Name, Status, Error string
				} `json:"detectors"`
				Notes []string `json:"notes"`
			} `json:"vmlineage"`
		}
		if err := json.Unmarshal(js, &out); err != nil {
			t.Fatal(err)
		}
		v := out.VL
		if !v.Matched || len(v.VMs) != 1 || v.VMs[0].UUID != alertstest.VMUUID[vm] || v.VMs[0].PowerState != "Running" {
			t.Fatalf("alert %d: matched %+v; notes %q", i+1, v.VMs, v.Notes)
		}
		for _, d := range v.Detectors {
			if d.Status == "failed" {
				t.Errorf("alert %d: detector %s failed: %s", i+1, d.Name, d.Error)
			}
		}
		var originGone bool
		for _, f := range v.Findings {
			originGone = originGone || f.Kind == "origin_destroyed"
		}
		if !originGone {
			t.Errorf("alert %d: no origin_destroyed finding: %s", i+1, js)
		}
		if i == 0 {
			continue
		}
		if len(v.Suspects) == 0 || v.Suspects[0].VMName != "vm5" || v.Suspects[0].PowerState != "Halted" {
			t.Fatalf("alert %d: want vm5 (Halted) first: %s", i+1, js)
		}
		if ca := v.CommonAncestor; ca == nil || ca.UUID != alertstest.Origin || ca.Name != "origin" || !ca.Destroyed {
			t.Fatalf("alert %d: common ancestor %+v", i+1, ca)
		}
	}

	// The detectors' Lineage service, answered from Elasticsearch.
	desc, err := lin.Descendants(ctx, alertstest.Origin)
	if err != nil || len(desc) != 5 || desc[0].Name != "vm1" || desc[4].Name != "vm5" {
		t.Errorf("descendants of origin: %v %+v", err, desc)
	}
	sibs, err := lin.Siblings(ctx, alertstest.VMUUID["vm3"])
	if err != nil || len(sibs) != 4 {
		t.Errorf("siblings of vm3: %v %+v", err, sibs)
	}
	anc, err := lin.Ancestors(ctx, alertstest.VMUUID["vm2"])
	if err != nil || len(anc) != 1 || anc[0].UUID != alertstest.Origin || !anc[0].IsDestroyed() {
		t.Errorf("ancestors of vm2: %v %+v", err, anc)
	}
	// vm5 held 10.1.0.15 from 09:01:45 until its shutdown at 09:02:10.
	for _, c := range []struct {
		sec  int
		want string
	}{{100, ""}, {120, alertstest.VMUUID["vm5"]}, {200, ""}} {
		uu, err := lin.FindVMs(ctx, backend.KindIP, "10.1.0.15", alertstest.At(c.sec))
		if err != nil || strings.Join(uu, ",") != c.want {
			t.Errorf("10.1.0.15 at +%ds: %v %v, want %q", c.sec, uu, err, c.want)
		}
	}
	sts, err := lin.StatesAt(ctx, []string{alertstest.VMUUID["vm5"], alertstest.Origin}, alertstest.At(125))
	if err != nil || sts[0].PowerState != "Running" || sts[1].Existed {
		t.Errorf("states at +125s: %v %+v", err, sts)
	}
	recs, err := lin.Records(ctx, plugins.RecordQuery{VMUUID: alertstest.Origin})
	if err != nil || len(recs) != 6 || recs[0].Activity != record.Clone || recs[5].Activity != record.Destroy || recs[5].VMName != "origin" {
		t.Errorf("records of origin: %v %d %+v", err, len(recs), recs)
	}
	if _, err := lin.VM(ctx, "00000000-dead-4000-8000-000000000000"); !errors.Is(err, plugins.ErrNotFound) {
		t.Errorf("unknown VM: %v", err)
	}
}
