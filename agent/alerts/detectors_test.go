package alerts

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/alerts/alertstest"
	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/plugins"
	"github.com/vmlineage/vmlineage/plugins/plugintest"
)

func mkrec(vm, name, parent string, a record.Activity, at time.Time, n int) *record.Record {
	short := fmt.Sprintf("ffff%08x", n)
	return &record.Record{ID: record.ID(alertstest.Pool, short, 0), PoolUUID: alertstest.Pool, VMUUID: vm, VMName: name, ParentVMUUID: parent,
		Activity: a, Start: at, End: at.Add(time.Second), Result: record.Success, Source: record.SourceXAPI, TaskID: short}
}

// The streaming path: records go to rollback and shadow-copy through the
// plugin protocol, and they read the store through the broker.
func TestDetectorFindingsOnRecords(t *testing.T) {
	st := alertstest.ThreatModel(t)
	ctx := context.Background()
	vm1 := alertstest.VMUUID["vm1"]
	snap := "5a5a5a5a-0000-4000-8000-000000000001"
	tSnap := alertstest.At(200)
	tRevert := tSnap.Add(50 * time.Hour)
	tSuspend := alertstest.At(300)
	tResume := tSuspend.Add(3 * time.Hour)
	revert := mkrec(vm1, "vm1", "", record.Revert, tRevert, 4)
	revert.SnapshotUUID = snap
	resume := mkrec(alertstest.VMUUID["vm2"], "vm2", "", record.Resume, tResume, 6)
	var destroy *record.Record
	err := st.Update(ctx, func(tx *lineage.Tx) error {
		if err := tx.PutVM(&lineage.VM{UUID: snap, PoolUUID: alertstest.Pool, Name: "vm1 before patch", ParentUUID: vm1, ParentVia: "snapshot", Kind: lineage.KindSnapshot, FirstSeen: tSnap, LastSeen: tSnap}); err != nil {
			return err
		}
		for _, r := range []*record.Record{
			mkrec(snap, "vm1 before patch", vm1, record.Snapshot, tSnap, 1),
			mkrec(vm1, "vm1", "", record.Reboot, tSnap.Add(time.Hour), 2),
			mkrec(vm1, "vm1", "", record.Reboot, tSnap.Add(2*time.Hour), 3),
			revert,
			mkrec(alertstest.VMUUID["vm2"], "vm2", "", record.Suspend, tSuspend, 5),
			resume,
		} {
			if _, err := tx.PutRecord(r); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	recs, err := st.Records(ctx, lineage.Filter{VMUUID: alertstest.Origin, Activity: record.Destroy})
	if err != nil || len(recs) != 1 {
		t.Fatalf("destroy record: %v %d", err, len(recs))
	}
	destroy = &recs[0]

	svc, err := NewService(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	dir, pins := plugintest.Setup(t, plugintest.ShippedDetectors("rollback", "shadow-copy")...)
	m, err := plugins.NewManager(plugins.Config{Dir: dir, Pins: pins}, svc)
	if err != nil {
		t.Fatal(err)
	}
	m.Start(ctx)
	defer m.Close()

	find := func(r *record.Record, kind string) plugins.Finding {
		t.Helper()
		for _, res := range m.OnRecord(ctx, r) {
			if res.Err != nil {
				t.Fatalf("%s: %v", res.Detector, res.Err)
			}
			for _, f := range res.Findings {
				if f.Kind == kind {
					return f
				}
			}
		}
		t.Fatalf("no %s finding for %s of %s", kind, r.Activity, r.VMName)
		return plugins.Finding{}
	}
	f := find(revert, "rollback")
	if f.Detector != "rollback" || f.Details["snapshot_age"] != "50h0m0s" || f.Details["lost_operations"] != "reboot×2" || f.Severity != 7 ||
		!strings.Contains(f.Summary, "vm1 before patch") {
		t.Errorf("revert finding: %+v", f)
	}
	f = find(resume, "rollback")
	if f.Details["image_age"] != "2h59m59s" || !strings.Contains(f.Summary, "old suspend image") {
		t.Errorf("resume finding: %+v", f)
	}
	f = find(destroy, "shadow_copy")
	if !strings.Contains(f.Summary, "clone vm1") || !strings.Contains(f.Summary, "clone vm5") || f.VMName != "origin" {
		t.Errorf("shadow copy finding: %+v", f)
	}
	f = find(destroy, "orphan")
	if f.Details["orphans"] != "vm1, vm2, vm3, vm4, vm5" {
		t.Errorf("orphan finding: %+v", f)
	}
	// Nothing to say about an ordinary start.
	for _, res := range m.OnRecord(ctx, mkrec(vm1, "vm1", "", record.Start, tRevert.Add(time.Minute), 9)) {
		if res.Err != nil || len(res.Findings) != 0 {
			t.Errorf("%s on start: %v %+v", res.Detector, res.Err, res.Findings)
		}
	}
	// An alert on vm1 shortly after the revert carries the rollback finding.
	e := NewEnricher(svc, m, nil)
	a, err := ParseJSON([]byte(fmt.Sprintf(`{"@timestamp":%q,"host.name":"vm1"}`, tRevert.Add(10*time.Minute).Format(time.RFC3339))), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	js, err := e.Enrich(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(js), `"kind":"rollback"`) || !strings.Contains(string(js), "10m0s before this alert") {
		t.Errorf("alert after revert lacks the rollback finding: %s", js)
	}
}

func TestPumpStreamsFindings(t *testing.T) {
	dir, pins := plugintest.Setup(t, plugintest.Detector{Name: "ok", Pkg: plugintest.TestDetector, Mode: "ok"})
	svc, err := NewService(context.Background(), alertstest.ThreatModel(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	m, err := plugins.NewManager(plugins.Config{Dir: dir, Pins: pins}, svc)
	if err != nil {
		t.Fatal(err)
	}
	m.Start(context.Background())
	defer m.Close()
	var mu sync.Mutex
	var docs []string
	p := NewPump(m, func(doc []byte) { mu.Lock(); docs = append(docs, string(doc)); mu.Unlock() }, nil, 4)
	for i := 0; i < 20; i++ {
		p.OnRecord(mkrec(alertstest.VMUUID["vm1"], "vm1", "", record.Start, alertstest.At(1000+i), 100+i))
	}
	p.Close()
	if len(docs) != 20 || p.Missed() != 0 {
		t.Fatalf("%d findings, %d missed", len(docs), p.Missed())
	}
	var d map[string]any
	if err := json.Unmarshal([]byte(docs[0]), &d); err != nil || d["message"] != "saw start" || d["@timestamp"] != "2024-03-01T09:16:40.000Z" {
		t.Fatalf("%v %s", err, docs[0])
	}
}
