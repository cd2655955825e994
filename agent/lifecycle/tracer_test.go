package lifecycle

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/agent/xapi"
)

// fakePool builds event batches the way xapi's event.from reports them, for
// tests of the tracer's pairing rules in isolation (the end-to-end tests
// play the simulator).
type fakePool struct {
	gen   int
	vms   map[string]*xapi.Snapshot
	tasks map[string]*xapi.Snapshot
	evs   []xapi.Event
	t0    time.Time
}

func newFakePool() *fakePool {
	return &fakePool{vms: map[string]*xapi.Snapshot{}, tasks: map[string]*xapi.Snapshot{}, t0: time.Date(2024, 3, 1, 9, 0, 0, 0, time.UTC)}
}

func (p *fakePool) ev(class, op, ref string, s *xapi.Snapshot) {
	p.gen++
	var cp *xapi.Snapshot
	if s != nil {
		c := *s
		c.CurrentOperations = map[string]string{}
		for k, v := range s.CurrentOperations {
			c.CurrentOperations[k] = v
		}
		cp = &c
	}
	p.evs = append(p.evs, xapi.Event{ID: fmt.Sprint(p.gen), Class: class, Operation: op, Ref: ref, Snapshot: cp})
}

func (p *fakePool) flush() *xapi.EventBatch {
	b := &xapi.EventBatch{Events: p.evs, Token: fmt.Sprintf("%020d,%020d", p.gen, 0)}
	p.evs = nil
	return b
}

func (p *fakePool) snapshot() *xapi.PoolSnapshot {
	out := map[string]map[string]*xapi.Snapshot{
		"pool": {"OpaqueRef:pool": {UUID: "pool-1", NameLabel: "lab", Master: "OpaqueRef:h1"}},
		"host": {"OpaqueRef:h1": {UUID: "host-1", NameLabel: "xen1"}, "OpaqueRef:h2": {UUID: "host-2", NameLabel: "xen2"}},
		"vm":   {}, "task": {},
	}
	for r, v := range p.vms {
		c := *v
		out["vm"][r] = &c
	}
	for r, v := range p.tasks {
		c := *v
		out["task"][r] = &c
	}
	return &xapi.PoolSnapshot{PoolRef: "OpaqueRef:pool", Records: out}
}

func (p *fakePool) at(sec int) time.Time { return p.t0.Add(time.Duration(sec) * time.Second) }

func taskRef(n int) string { return fmt.Sprintf("OpaqueRef:%08x-%04x-4000-8000-000000000000", n, n) }

func openStore(t *testing.T) *lineage.Store {
	t.Helper()
	s, err := lineage.Open(filepath.Join(t.TempDir(), "lineage.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// clone plays xapi's write order for Async.VM.clone (reference section 11).
func (p *fakePool) clone(n int, src, newRef, newUUID, name string, start int) {
	tr := taskRef(n)
	tk := &xapi.Snapshot{UUID: fmt.Sprintf("task-%d", n), NameLabel: "Async.VM.clone", Status: "pending", Created: p.at(start)}
	p.tasks[tr] = tk
	p.ev("task", "add", tr, tk)
	p.vms[src].CurrentOperations = map[string]string{tr: "clone"}
	p.ev("vm", "mod", src, p.vms[src])
	nv := &xapi.Snapshot{UUID: newUUID, NameLabel: name, PowerState: "Halted", CurrentOperations: map[string]string{tr: "clone"}}
	p.vms[newRef] = nv
	p.ev("vm", "add", newRef, nv)
	nv.CurrentOperations = nil
	p.ev("vm", "mod", newRef, nv)
	p.vms[src].CurrentOperations = nil
	p.ev("vm", "mod", src, p.vms[src])
	tk.Status, tk.Finished, tk.Result = "success", p.at(start+2), "<value>"+newRef+"</value>"
	p.ev("task", "mod", tr, tk)
	delete(p.tasks, tr)
	p.ev("task", "del", tr, nil)
}

func (p *fakePool) power(n int, vm, op, state, host string, start int, sync bool) {
	tr := taskRef(n)
	name := "Async.VM." + op
	if sync {
		name = "VM." + op
	}
	tk := &xapi.Snapshot{UUID: fmt.Sprintf("task-%d", n), NameLabel: name, Status: "pending", Created: p.at(start)}
	p.tasks[tr] = tk
	p.ev("task", "add", tr, tk)
	p.vms[vm].CurrentOperations = map[string]string{tr: op}
	p.ev("vm", "mod", vm, p.vms[vm])
	p.vms[vm].PowerState, p.vms[vm].ResidentOn = state, host
	p.vms[vm].CurrentOperations = nil
	p.ev("vm", "mod", vm, p.vms[vm])
	if !sync {
		tk.Status, tk.Finished = "success", p.at(start+1)
		p.ev("task", "mod", tr, tk)
	}
	delete(p.tasks, tr)
	p.ev("task", "del", tr, nil)
}

func TestThreatModelPairing(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	tr := New(st, nil)
	p := newFakePool()
	p.vms["OpaqueRef:origin"] = &xapi.Snapshot{UUID: "origin-uuid", NameLabel: "origin", PowerState: "Running", ResidentOn: "OpaqueRef:h1"}
	tr.SetServerTime(p.at(0))
	if err := tr.Resync(ctx, p.snapshot(), "", "start"); err != nil {
		t.Fatal(err)
	}
	p.power(1, "OpaqueRef:origin", "clean_shutdown", "Halted", "OpaqueRef:NULL", 5, false)
	for i := 1; i <= 5; i++ {
		p.clone(10+i, "OpaqueRef:origin", fmt.Sprintf("OpaqueRef:vm%d", i), fmt.Sprintf("vm%d-uuid", i), fmt.Sprintf("vm%d", i), 10*i)
		if err := feed(ctx, tr, p.flush()); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= 4; i++ {
		p.power(20+i, fmt.Sprintf("OpaqueRef:vm%d", i), "start", "Running", "OpaqueRef:h2", 100+i, i%2 == 0)
	}
	tk := taskRef(30)
	p.tasks[tk] = &xapi.Snapshot{UUID: "task-30", NameLabel: "Async.VM.destroy", Status: "pending", Created: p.at(200)}
	p.ev("task", "add", tk, p.tasks[tk])
	p.vms["OpaqueRef:origin"].CurrentOperations = map[string]string{tk: "destroy"}
	p.ev("vm", "mod", "OpaqueRef:origin", p.vms["OpaqueRef:origin"])
	delete(p.vms, "OpaqueRef:origin")
	p.ev("vm", "del", "OpaqueRef:origin", nil)
	p.tasks[tk].Status, p.tasks[tk].Finished = "success", p.at(201)
	p.ev("task", "mod", tk, p.tasks[tk])
	if err := feed(ctx, tr, p.flush()); err != nil {
		t.Fatal(err)
	}

	recs, err := st.Records(ctx, lineage.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	count := map[record.Activity]int{}
	for _, r := range recs {
		count[r.Activity]++
		if r.Activity == record.Clone {
			if r.ParentVMUUID != "origin-uuid" || r.Result != record.Success {
				t.Errorf("clone record %+v: want parent origin-uuid, success", r)
			}
			if r.ID != record.ID("pool-1", record.TaskShortID(taskRef(10+int(r.VMName[2]-'0'))), 0) {
				t.Errorf("clone id %s is not derived from pool and task", r.ID)
			}
		}
		if r.Activity == record.Start && (r.HostUUID != "host-2" || r.ParentVMUUID != "origin-uuid") {
			t.Errorf("start record %+v: want host-2 and lineage parent origin-uuid", r)
		}
		if r.Activity == record.Shutdown && r.HostUUID != "host-1" {
			t.Errorf("shutdown should be on the host the VM ran on: %+v", r)
		}
	}
	want := map[record.Activity]int{record.Shutdown: 1, record.Clone: 5, record.Start: 4, record.Destroy: 1}
	for a, n := range want {
		if count[a] != n {
			t.Errorf("%s records: got %d, want %d (all: %v)", a, count[a], n, count)
		}
	}
	kids, err := st.Descendants(ctx, "origin-uuid")
	if err != nil || len(kids) != 5 {
		t.Fatalf("descendants of origin: %v %v", kids, err)
	}
	o, err := st.VM(ctx, "origin-uuid")
	if err != nil || !o.IsDestroyed() || !o.Destroyed.Equal(p.at(201)) {
		t.Fatalf("origin should be destroyed at %v: %+v %v", p.at(201), o, err)
	}
	v5, _ := st.VM(ctx, "vm5-uuid")
	if v5.PowerState != "Halted" {
		t.Errorf("vm5 should be halted: %+v", v5)
	}
	// The pool before the clones existed holds only origin.
	at, err := st.StateAt(ctx, "pool-1", p.at(9))
	if err != nil || len(at) != 1 || at[0].VM.Name != "origin" {
		t.Fatalf("state before clones: %+v %v", at, err)
	}
	at, _ = st.StateAt(ctx, "pool-1", p.at(150))
	running := 0
	for _, s := range at {
		if s.PowerState == "Running" && s.HostName == "xen2" {
			running++
		}
	}
	if running != 4 {
		t.Errorf("at +150s want 4 VMs running on xen2, got %+v", at)
	}

	// Replaying the same batches (an agent that restarts from an old token)
	// stores nothing twice.
	before, _ := st.CountRecords(ctx)
	tr2 := New(st, nil)
	if err := tr2.Resync(ctx, p.snapshot(), "", "restart"); err != nil {
		t.Fatal(err)
	}
	after, _ := st.CountRecords(ctx)
	if after != before {
		t.Errorf("resync of an unchanged pool added %d records", after-before)
	}
}

func TestResyncRecordsWhatChanged(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	p := newFakePool()
	p.vms["OpaqueRef:a"] = &xapi.Snapshot{UUID: "a", NameLabel: "a", PowerState: "Running", ResidentOn: "OpaqueRef:h1"}
	p.vms["OpaqueRef:b"] = &xapi.Snapshot{UUID: "b", NameLabel: "b", PowerState: "Halted"}
	tr := New(st, nil)
	if err := tr.Resync(ctx, p.snapshot(), "", "start"); err != nil {
		t.Fatal(err)
	}
	if n, _ := st.CountRecords(ctx); n != 0 {
		t.Fatalf("baseline must record nothing, got %d", n)
	}
	// While the agent was away: a migrated, b destroyed, c appeared.
	p.vms["OpaqueRef:a"].ResidentOn = "OpaqueRef:h2"
	delete(p.vms, "OpaqueRef:b")
	p.vms["OpaqueRef:c"] = &xapi.Snapshot{UUID: "c", NameLabel: "c", PowerState: "Halted"}
	if err := New(st, nil).Resync(ctx, p.snapshot(), "", "restart"); err != nil {
		t.Fatal(err)
	}
	recs, _ := st.Records(ctx, lineage.Filter{})
	got := map[string]string{}
	for _, r := range recs {
		if r.Source != record.SourceResync {
			t.Errorf("want source resync: %+v", r)
		}
		got[r.VMUUID] = string(r.Activity)
	}
	want := map[string]string{"a": "migrate", "b": "destroy", "c": "create"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("resync records %v, want %v", got, want)
	}
}

// A VM shut down from inside the guest changes state with no task at all:
// after the grace period it is recorded, inferred from the states.
func TestGuestShutdownWithoutTask(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	tr := New(st, nil)
	p := newFakePool()
	p.vms["OpaqueRef:a"] = &xapi.Snapshot{UUID: "a", NameLabel: "a", PowerState: "Running", ResidentOn: "OpaqueRef:h1"}
	p.vms["OpaqueRef:b"] = &xapi.Snapshot{UUID: "b", NameLabel: "b", PowerState: "Halted"}
	tr.SetServerTime(p.at(0))
	if err := tr.Resync(ctx, p.snapshot(), "", "start"); err != nil {
		t.Fatal(err)
	}
	p.vms["OpaqueRef:a"].PowerState, p.vms["OpaqueRef:a"].ResidentOn = "Halted", "OpaqueRef:NULL"
	p.ev("vm", "mod", "OpaqueRef:a", p.vms["OpaqueRef:a"])
	if err := feed(ctx, tr, p.flush()); err != nil {
		t.Fatal(err)
	}
	if n, _ := st.CountRecords(ctx); n != 0 {
		t.Fatalf("a change must wait for a task that may explain it; got %d records at once", n)
	}
	// Time passes on the pool (another VM's task), and no task claims it.
	p.power(1, "OpaqueRef:b", "start", "Running", "OpaqueRef:h2", 60, false)
	if err := feed(ctx, tr, p.flush()); err != nil {
		t.Fatal(err)
	}
	recs, _ := st.Records(ctx, lineage.Filter{VMUUID: "a"})
	if len(recs) != 1 || recs[0].Activity != record.Shutdown || recs[0].Source != record.SourceResync || recs[0].HostUUID != "host-1" {
		t.Fatalf("want one inferred shutdown of a on host-1, got %+v", recs)
	}
	if !recs[0].Start.Equal(p.at(0)) {
		t.Errorf("the inferred record is dated when the change was seen: %v", recs[0].Start)
	}
}

// feed applies a batch and commits it (the watcher flushes when the pool is
// quiet; a test has no watcher).
func feed(ctx context.Context, tr *Tracer, b *xapi.EventBatch) error {
	if err := tr.Events(ctx, b); err != nil {
		return err
	}
	return tr.Flush(ctx)
}

// resyncAt resyncs tr with the pool as it is at second at and commits;
// a nil tr is a restarted agent on the same store.
func resyncAt(t *testing.T, st *lineage.Store, tr *Tracer, p *fakePool, at int, reason string) *Tracer {
	t.Helper()
	ctx := context.Background()
	if tr == nil {
		tr = New(st, nil)
	}
	tr.SetServerTime(p.at(at))
	if err := tr.Resync(ctx, p.snapshot(), "", reason); err != nil {
		t.Fatal(err)
	}
	if err := tr.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	return tr
}

// endTask has the task succeed at second at and vanish, as events.
func (p *fakePool) endTask(ref string, at int) {
	p.tasks[ref].Status, p.tasks[ref].Finished = "success", p.at(at)
	p.ev("task", "mod", ref, p.tasks[ref])
	delete(p.tasks, ref)
	p.ev("task", "del", ref, nil)
}

// touchAt feeds an update of the VM at second at (the pool going on: a
// pending change's grace runs out).
func touchAt(t *testing.T, tr *Tracer, p *fakePool, vmRef string, at int) {
	t.Helper()
	tr.SetServerTime(p.at(at))
	p.ev("vm", "mod", vmRef, p.vms[vmRef])
	if err := feed(context.Background(), tr, p.flush()); err != nil {
		t.Fatal(err)
	}
}

// recordLines is every stored record as "activity result of vm (source)",
// sorted.
func recordLines(st *lineage.Store) []string {
	recs, _ := st.Records(context.Background(), lineage.Filter{})
	var got []string
	for _, r := range recs {
		got = append(got, fmt.Sprintf("%s %s of %s (%s)", r.Activity, r.Result, r.VMUUID, r.Source))
	}
	sort.Strings(got)
	return got
}

// TestOverlappingDestroysKeepTheirVMs: two destroys run at once; the tracer
// sees the one's key on VM y and y deleted, the other's task without ever
// seeing its VM x (its key coalesced away, x deleted while the event stream
// was lost). y's deletion is the first's (its key says so); the second's
// window spans the gap, so its VM is not guessed. It used to be able to take
// y (found by the chaos suite: a VM destroyed twice, another never).
func TestOverlappingDestroysKeepTheirVMs(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	tr := New(st, nil)
	p := newFakePool()
	p.vms["OpaqueRef:x"] = &xapi.Snapshot{UUID: "x", NameLabel: "x", PowerState: "Halted"}
	p.vms["OpaqueRef:y"] = &xapi.Snapshot{UUID: "y", NameLabel: "y", PowerState: "Halted"}
	tr.SetServerTime(p.at(0))
	if err := tr.Resync(ctx, p.snapshot(), "", "start"); err != nil {
		t.Fatal(err)
	}
	d1, d2 := taskRef(1), taskRef(2)
	p.tasks[d1] = &xapi.Snapshot{UUID: "task-1", NameLabel: "Async.VM.destroy", Status: "pending", Created: p.at(10)}
	p.ev("task", "add", d1, p.tasks[d1])
	p.tasks[d2] = &xapi.Snapshot{UUID: "task-2", NameLabel: "Async.VM.destroy", Status: "pending", Created: p.at(10)}
	p.ev("task", "add", d2, p.tasks[d2])
	p.vms["OpaqueRef:y"].CurrentOperations = map[string]string{d2: "destroy"}
	p.ev("vm", "mod", "OpaqueRef:y", p.vms["OpaqueRef:y"])
	delete(p.vms, "OpaqueRef:y")
	p.ev("vm", "del", "OpaqueRef:y", nil)
	if err := feed(ctx, tr, p.flush()); err != nil {
		t.Fatal(err)
	}
	// EVENTS_LOST: x and both tasks are gone when the tracer looks again.
	delete(p.vms, "OpaqueRef:x")
	delete(p.tasks, d1)
	delete(p.tasks, d2)
	tr.OtherSources = true // the logs will name the VM: no guess across the gap
	if err := tr.Resync(ctx, p.snapshot(), "", "events_lost"); err != nil {
		t.Fatal(err)
	}
	recs, _ := st.Records(ctx, lineage.Filter{})
	byTask := map[string]record.Record{}
	for _, r := range recs {
		if r.TaskUUID != "" {
			byTask[r.TaskUUID] = r
		}
	}
	if r := byTask["task-2"]; r.VMUUID != "y" {
		t.Errorf("task-2 destroyed y: %+v", r)
	}
	// task-1's window spans the gap: its VM stays unknown (the logs can
	// name it), and x's destruction is inferred; never y twice.
	if r := byTask["task-1"]; r.VMUUID != "" || !r.IsUnknown("vm_uuid") {
		t.Errorf("task-1's VM was guessed across the gap: %+v", r)
	}
	ys := 0
	for _, r := range recs {
		if r.VMUUID == "y" {
			ys++
		}
	}
	if ys != 1 {
		t.Errorf("y destroyed %d times", ys)
	}
}

// TestSourceFirstSeenWithTheKey: after a restart, the catch-up shows a VM
// made while the agent was away (s) already carrying the key of a snapshot
// being taken of it, and the snapshot (n). Only n is the snapshot's new VM:
// s used to count as a second one (a record of index 1 with the source as
// the "new" VM; found by the chaos suite).
func TestSourceFirstSeenWithTheKey(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	tr := New(st, nil)
	p := newFakePool()
	p.vms["OpaqueRef:a"] = &xapi.Snapshot{UUID: "a", NameLabel: "a", PowerState: "Halted"}
	tr.SetServerTime(p.at(0))
	if err := tr.Resync(ctx, p.snapshot(), "", "start"); err != nil {
		t.Fatal(err)
	}
	for _, byResult := range []bool{true, false} {
		n := 1
		if !byResult {
			n = 2
		}
		tk := taskRef(n)
		src, snap := fmt.Sprintf("OpaqueRef:s%d", n), fmt.Sprintf("OpaqueRef:n%d", n)
		p.tasks[tk] = &xapi.Snapshot{UUID: fmt.Sprintf("task-%d", n), NameLabel: "Async.VM.snapshot", Status: "pending", Created: p.at(10 * n)}
		p.ev("task", "add", tk, p.tasks[tk])
		p.vms[src] = &xapi.Snapshot{UUID: fmt.Sprintf("s%d", n), NameLabel: "s", PowerState: "Halted", CurrentOperations: map[string]string{tk: "snapshot"}}
		p.ev("vm", "add", src, p.vms[src])
		p.vms[snap] = &xapi.Snapshot{UUID: fmt.Sprintf("n%d", n), NameLabel: "n", PowerState: "Halted", IsASnapshot: true, SnapshotOf: src,
			CurrentOperations: map[string]string{tk: "snapshot"}}
		p.ev("vm", "add", snap, p.vms[snap])
		p.vms[src].CurrentOperations, p.vms[snap].CurrentOperations = nil, nil
		p.ev("vm", "mod", src, p.vms[src])
		p.ev("vm", "mod", snap, p.vms[snap])
		p.tasks[tk].Status, p.tasks[tk].Finished = "success", p.at(10*n+2)
		if byResult {
			p.tasks[tk].Result = "<value>" + snap + "</value>"
		}
		p.ev("task", "mod", tk, p.tasks[tk])
		delete(p.tasks, tk)
		p.ev("task", "del", tk, nil)
		if err := feed(ctx, tr, p.flush()); err != nil {
			t.Fatal(err)
		}
		recs, _ := st.Records(ctx, lineage.Filter{})
		var mine []record.Record
		for _, r := range recs {
			if r.TaskUUID == fmt.Sprintf("task-%d", n) {
				mine = append(mine, r)
			}
		}
		if len(mine) != 1 || mine[0].VMUUID != fmt.Sprintf("n%d", n) || mine[0].ParentVMUUID != fmt.Sprintf("s%d", n) {
			t.Errorf("result seen %v: want one snapshot record of n%d from s%d, got %+v", byResult, n, n, mine)
		}
	}
}

// TestCatchUpFindsTheLogsRecord: the agent was away while a clone ran; the
// log source stored the clone (its new VM's uuid unknown to the logs). The
// catch-up after the restart shows the new VM as an ordinary "add", long
// after the clone ended: the tracer must find the logs' record (the change
// happened after its last contact with the pool, not just before the
// catch-up) instead of inferring a "create" of its own.
func TestCatchUpFindsTheLogsRecord(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	p := newFakePool()
	p.vms["OpaqueRef:a"] = &xapi.Snapshot{UUID: "a", NameLabel: "a", PowerState: "Halted"}
	tr := New(st, nil)
	tr.OtherSources = true
	tr.OtherSettled = func() time.Time { return p.at(3600) }
	tr.SetServerTime(p.at(0))
	if err := tr.Resync(ctx, p.snapshot(), "", "start"); err != nil {
		t.Fatal(err)
	}
	logged := record.Record{ID: record.ID("pool-1", "0000000a0001", 0), PoolUUID: "pool-1", VMName: "gen-1", ParentVMUUID: "a",
		Activity: record.Clone, Operation: "clone", Start: p.at(5), End: p.at(8), Result: record.Success, TaskID: "0000000a0001",
		Source: record.SourceLog, Unknown: []string{"vm_uuid", "end", "task_uuid"}}
	if err := st.Update(ctx, func(tx *lineage.Tx) error { _, err := tx.PutRecord(&logged); return err }); err != nil {
		t.Fatal(err)
	}
	// The catch-up, 90 s of pool time later (its tasks move the pool clock).
	p.power(2, "OpaqueRef:a", "start", "Running", "OpaqueRef:h1", 90, false)
	p.vms["OpaqueRef:g"] = &xapi.Snapshot{UUID: "g", NameLabel: "gen-1", PowerState: "Halted"}
	p.ev("vm", "add", "OpaqueRef:g", p.vms["OpaqueRef:g"])
	if err := feed(ctx, tr, p.flush()); err != nil {
		t.Fatal(err)
	}
	// The change has waited its grace (this machine's clock).
	for k, c := range tr.changes {
		c.Noted = c.Noted.Add(-time.Minute)
		tr.changes[k] = c
	}
	if err := tr.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	recs, _ := st.Records(ctx, lineage.Filter{})
	for _, r := range recs {
		if r.Source == record.SourceResync {
			t.Errorf("inferred %s of %s, which the logs' clone explains", r.Activity, r.VMName)
		}
	}
	if e := tr.edge("g"); e.parent != "a" {
		t.Errorf("gen-1's parent: %+v, want a (from the logs' clone)", e)
	}
}

// TestLoggedRevertExplainsPowerChange: a revert ran while the agent was
// away; the logs recorded it naming the snapshot, not the VM. The VM's
// change of power state seen afterwards is that revert (the snapshot's
// source), not a shutdown of its own: no resync record, and the logs'
// record gets the VM (found by the chaos suite: 17 reverts doubled by
// inferred shutdowns and suspends).
func TestLoggedRevertExplainsPowerChange(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	st.DeferSeal(true)
	p := newFakePool()
	p.vms["OpaqueRef:a"] = &xapi.Snapshot{UUID: "a", NameLabel: "a", PowerState: "Running", ResidentOn: "OpaqueRef:h1"}
	p.vms["OpaqueRef:s"] = &xapi.Snapshot{UUID: "s", NameLabel: "a-snap", PowerState: "Halted", IsASnapshot: true, SnapshotOf: "OpaqueRef:a"}
	tr := New(st, nil)
	tr.OtherSources = true
	tr.OtherSettled = func() time.Time { return p.at(3600) }
	tr.SetServerTime(p.at(0))
	if err := tr.Resync(ctx, p.snapshot(), "", "start"); err != nil {
		t.Fatal(err)
	}
	logged := record.Record{ID: record.ID("pool-1", "0000000b0002", 0), PoolUUID: "pool-1", SnapshotUUID: "s",
		Activity: record.Revert, Operation: "revert", Start: p.at(20), End: p.at(25), Result: record.Success, TaskID: "0000000b0002",
		Source: record.SourceLog, Unknown: []string{"vm_uuid", "vm_name", "parent_vm_uuid", "task_uuid"}}
	if err := st.Update(ctx, func(tx *lineage.Tx) error { _, err := tx.PutRecord(&logged); return err }); err != nil {
		t.Fatal(err)
	}
	p.vms["OpaqueRef:b"] = &xapi.Snapshot{UUID: "b", NameLabel: "b", PowerState: "Halted"}
	p.ev("vm", "add", "OpaqueRef:b", p.vms["OpaqueRef:b"])
	p.vms["OpaqueRef:a"].PowerState, p.vms["OpaqueRef:a"].ResidentOn = "Halted", "OpaqueRef:NULL"
	p.ev("vm", "mod", "OpaqueRef:a", p.vms["OpaqueRef:a"])
	if err := tr.Resync(ctx, p.snapshot(), "", "restart"); err != nil {
		t.Fatal(err)
	}
	for k, c := range tr.changes {
		c.Noted = c.Noted.Add(-time.Minute)
		tr.changes[k] = c
	}
	if err := tr.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	recs, _ := st.Records(ctx, lineage.Filter{})
	for _, r := range recs {
		switch {
		case r.Source == record.SourceResync && r.VMUUID == "a":
			t.Errorf("inferred %s of a, which the logged revert explains", r.Activity)
		case r.ID == logged.ID && (r.VMUUID != "a" || r.VMName != "a" || r.IsUnknown("vm_uuid")):
			t.Errorf("the logged revert was not completed with its VM: %+v", r)
		}
	}
}

// TestRivalTasksLeaveTheVMUnknown: two suspends vanish unseen in one batch
// (their keys never seen); only q's change falls inside their windows (p's
// came before they were seen). The first finalized used to take q — a
// confident, wrong record — leaving q's own task with nothing. Neither may
// claim q: both could have made its change.
func TestRivalTasksLeaveTheVMUnknown(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	tr := New(st, nil)
	p := newFakePool()
	p.vms["OpaqueRef:p"] = &xapi.Snapshot{UUID: "p", NameLabel: "p", PowerState: "Running", ResidentOn: "OpaqueRef:h1"}
	p.vms["OpaqueRef:q"] = &xapi.Snapshot{UUID: "q", NameLabel: "q", PowerState: "Running", ResidentOn: "OpaqueRef:h1"}
	tr.SetServerTime(p.at(0))
	if err := tr.Resync(ctx, p.snapshot(), "", "start"); err != nil {
		t.Fatal(err)
	}
	p.vms["OpaqueRef:p"].PowerState, p.vms["OpaqueRef:p"].ResidentOn = "Suspended", "OpaqueRef:NULL"
	p.ev("vm", "mod", "OpaqueRef:p", p.vms["OpaqueRef:p"])
	if err := feed(ctx, tr, p.flush()); err != nil {
		t.Fatal(err)
	}
	t1, t2 := taskRef(1), taskRef(2)
	for i, r := range []string{t1, t2} {
		p.tasks[r] = &xapi.Snapshot{UUID: fmt.Sprintf("task-%d", i+1), NameLabel: "Async.VM.suspend", Status: "pending", Created: p.at(10)}
		p.ev("task", "add", r, p.tasks[r])
	}
	p.vms["OpaqueRef:q"].PowerState, p.vms["OpaqueRef:q"].ResidentOn = "Suspended", "OpaqueRef:NULL"
	p.ev("vm", "mod", "OpaqueRef:q", p.vms["OpaqueRef:q"])
	if err := feed(ctx, tr, p.flush()); err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{t1, t2} {
		delete(p.tasks, r)
		p.ev("task", "del", r, nil)
	}
	if err := feed(ctx, tr, p.flush()); err != nil {
		t.Fatal(err)
	}
	recs, _ := st.Records(ctx, lineage.Filter{})
	claims := 0
	for _, r := range recs {
		if r.TaskUUID != "" && r.VMUUID == "q" {
			claims++
		}
	}
	if claims > 0 {
		t.Errorf("%d tasks claimed q's change although two could have made it: %+v", claims, recs)
	}
}

// TestSucceededCreationOfAnUnseenVM: a clone succeeds, naming a new VM the
// tracer never saw (made and gone between two looks). The record is the
// clone of an unknown VM from the source, never "the source, cloned
// successfully", which read as a confident record of the wrong VM.
func TestSucceededCreationOfAnUnseenVM(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	tr := New(st, nil)
	p := newFakePool()
	p.vms["OpaqueRef:a"] = &xapi.Snapshot{UUID: "a", NameLabel: "a", PowerState: "Halted"}
	tr.SetServerTime(p.at(0))
	if err := tr.Resync(ctx, p.snapshot(), "", "start"); err != nil {
		t.Fatal(err)
	}
	tk := taskRef(1)
	p.tasks[tk] = &xapi.Snapshot{UUID: "task-1", NameLabel: "Async.VM.clone", Status: "pending", Created: p.at(10)}
	p.ev("task", "add", tk, p.tasks[tk])
	p.vms["OpaqueRef:a"].CurrentOperations = map[string]string{tk: "clone"}
	p.ev("vm", "mod", "OpaqueRef:a", p.vms["OpaqueRef:a"])
	p.vms["OpaqueRef:a"].CurrentOperations = nil
	p.ev("vm", "mod", "OpaqueRef:a", p.vms["OpaqueRef:a"])
	p.tasks[tk].Status, p.tasks[tk].Finished, p.tasks[tk].Result = "success", p.at(13), "<value>OpaqueRef:never-seen</value>"
	p.ev("task", "mod", tk, p.tasks[tk])
	if err := feed(ctx, tr, p.flush()); err != nil {
		t.Fatal(err)
	}
	recs, _ := st.Records(ctx, lineage.Filter{})
	if len(recs) != 1 {
		t.Fatalf("want one record, got %+v", recs)
	}
	r := recs[0]
	if r.Activity != record.Clone || r.Result != record.Success || r.VMUUID == "a" || !r.IsUnknown("vm_uuid") || r.ParentVMUUID != "a" {
		t.Errorf("want a successful clone of an unknown VM from a: %+v", r)
	}
}

// TestVanishExplainedByAnEarlierDestroy: the store holds the tracer's
// record of a VM's destroy, but the VM's vanishing is noticed only at a
// later resync whose last contact is after that destroy ended (a restart
// between the two): the destroy still explains it.
func TestVanishExplainedByAnEarlierDestroy(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	p := newFakePool()
	p.vms["OpaqueRef:a"] = &xapi.Snapshot{UUID: "a", NameLabel: "a", PowerState: "Halted"}
	tr := New(st, nil)
	tr.OtherSources = true
	tr.OtherSettled = func() time.Time { return p.at(3600) }
	tr.SetServerTime(p.at(0))
	if err := tr.Resync(ctx, p.snapshot(), "", "start"); err != nil {
		t.Fatal(err)
	}
	destroyed := record.Record{ID: record.ID("pool-1", "0000000c0003", 0), PoolUUID: "pool-1", VMUUID: "a", VMName: "a",
		Activity: record.Destroy, Operation: "destroy", Start: p.at(5), End: p.at(6), Result: record.Success, TaskID: "0000000c0003",
		Source: record.SourceLog, Unknown: []string{"task_uuid"}}
	if err := st.Update(ctx, func(tx *lineage.Tx) error { _, err := tx.PutRecord(&destroyed); return err }); err != nil {
		t.Fatal(err)
	}
	p.power(4, "OpaqueRef:a", "start", "Halted", "", 60, false) // moves the pool clock past the destroy
	if err := feed(ctx, tr, p.flush()); err != nil {
		t.Fatal(err)
	}
	delete(p.vms, "OpaqueRef:a")
	tr2 := New(st, nil)
	tr2.OtherSources = true
	tr2.OtherSettled = tr.OtherSettled
	if err := tr2.Resync(ctx, p.snapshot(), "", "restart"); err != nil {
		t.Fatal(err)
	}
	for k, c := range tr2.changes {
		c.Noted = c.Noted.Add(-time.Minute)
		tr2.changes[k] = c
	}
	if err := tr2.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	recs, _ := st.Records(ctx, lineage.Filter{VMUUID: "a"})
	for _, r := range recs {
		if r.Source == record.SourceResync {
			t.Errorf("inferred %s of a, which the stored destroy explains", r.Activity)
		}
	}
}

// TestRestartKeepsThePoolClock: the first resync after a restart reads the
// pool's clock (host.get_servertime) before the tracer loads its saved
// state; the saved, older time must not win, or what the resync finds is
// dated before it happened (seen in the chaos suite: inferred records two
// minutes before the operations, which the log source then could not be
// waited for).
func TestRestartKeepsThePoolClock(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	p := newFakePool()
	p.vms["OpaqueRef:a"] = &xapi.Snapshot{UUID: "a", NameLabel: "a", PowerState: "Halted"}
	tr := New(st, nil)
	tr.SetServerTime(p.at(0))
	if err := tr.Resync(ctx, p.snapshot(), "", "start"); err != nil {
		t.Fatal(err)
	}
	p.vms["OpaqueRef:a"].PowerState, p.vms["OpaqueRef:a"].ResidentOn = "Running", "OpaqueRef:h1"
	tr2 := New(st, nil)
	tr2.SetServerTime(p.at(600))
	if err := tr2.Resync(ctx, p.snapshot(), "", "restart"); err != nil {
		t.Fatal(err)
	}
	recs, _ := st.Records(ctx, lineage.Filter{VMUUID: "a"})
	if len(recs) != 1 || !recs[0].Start.Equal(p.at(600)) {
		t.Fatalf("want the start found at the resync dated by the pool's clock %v: %+v", p.at(600), recs)
	}
}

// TestChangeDatedByItsBatch: in a catch-up the VMs come before the tasks
// that move the pool's clock (add, mod, del order); a change is dated by
// the batch's clock, not by the clock before the batch (a minute stale
// after a restart, which made the tracer stop waiting for the logs too
// early: found by the chaos suite).
func TestChangeDatedByItsBatch(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	p := newFakePool()
	p.vms["OpaqueRef:a"] = &xapi.Snapshot{UUID: "a", NameLabel: "a", PowerState: "Halted"}
	tr := New(st, nil)
	tr.OtherSources = true
	tr.OtherSettled = func() time.Time { return time.Time{} }
	tr.SetServerTime(p.at(0))
	if err := tr.Resync(ctx, p.snapshot(), "", "start"); err != nil {
		t.Fatal(err)
	}
	p.vms["OpaqueRef:g"] = &xapi.Snapshot{UUID: "g", NameLabel: "gen-1", PowerState: "Halted"}
	p.ev("vm", "add", "OpaqueRef:g", p.vms["OpaqueRef:g"])
	p.power(2, "OpaqueRef:a", "start", "Running", "OpaqueRef:h1", 90, false)
	if err := feed(ctx, tr, p.flush()); err != nil {
		t.Fatal(err)
	}
	c, ok := tr.changes["appear/g"]
	if !ok {
		t.Fatalf("no change noted for the new VM: %+v", tr.changes)
	}
	if c.At.Before(p.at(90)) {
		t.Errorf("change dated %v, before the batch's clock %v", c.At, p.at(90))
	}
}

// TestLoggedRevertToASnapshotGone: as TestLoggedRevertExplainsPowerChange,
// but the snapshot was made and destroyed while the agent was away: only
// the logs' record of the snapshot (its name, its source) ties it to the VM.
func TestLoggedRevertToASnapshotGone(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	st.DeferSeal(true)
	p := newFakePool()
	p.vms["OpaqueRef:a"] = &xapi.Snapshot{UUID: "a", NameLabel: "a", PowerState: "Running", ResidentOn: "OpaqueRef:h1"}
	tr := New(st, nil)
	tr.OtherSources = true
	tr.OtherSettled = func() time.Time { return p.at(3600) }
	tr.SetServerTime(p.at(0))
	if err := tr.Resync(ctx, p.snapshot(), "", "start"); err != nil {
		t.Fatal(err)
	}
	logs := []record.Record{
		{ID: record.ID("pool-1", "0000000a0001", 0), PoolUUID: "pool-1", VMName: "a-snap", ParentVMUUID: "a", Activity: record.Snapshot,
			Start: p.at(10), End: p.at(12), Result: record.Success, TaskID: "0000000a0001", Source: record.SourceLog, Unknown: []string{"vm_uuid", "task_uuid"}},
		{ID: record.ID("pool-1", "0000000b0002", 0), PoolUUID: "pool-1", SnapshotUUID: "s", Activity: record.Revert, Start: p.at(20), End: p.at(25),
			Result: record.Success, TaskID: "0000000b0002", Source: record.SourceLog, Unknown: []string{"vm_uuid", "vm_name", "parent_vm_uuid", "task_uuid"}},
		{ID: record.ID("pool-1", "0000000c0003", 0), PoolUUID: "pool-1", VMUUID: "s", VMName: "a-snap", Activity: record.Destroy, Start: p.at(30), End: p.at(31),
			Result: record.Success, TaskID: "0000000c0003", Source: record.SourceLog, Unknown: []string{"parent_vm_uuid", "task_uuid"}},
	}
	if err := st.Update(ctx, func(tx *lineage.Tx) error {
		for i := range logs {
			if _, err := tx.PutRecord(&logs[i]); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	p.vms["OpaqueRef:a"].PowerState, p.vms["OpaqueRef:a"].ResidentOn = "Halted", "OpaqueRef:NULL"
	if err := tr.Resync(ctx, p.snapshot(), "", "restart"); err != nil {
		t.Fatal(err)
	}
	for k, c := range tr.changes {
		c.Noted = c.Noted.Add(-time.Minute)
		tr.changes[k] = c
	}
	if err := tr.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	recs, _ := st.Records(ctx, lineage.Filter{})
	for _, r := range recs {
		switch {
		case r.Source == record.SourceResync && r.VMUUID == "a":
			t.Errorf("inferred %s of a, which the logged revert explains", r.Activity)
		case r.ID == logs[1].ID && r.VMUUID != "a":
			t.Errorf("the logged revert was not completed with its VM: %+v", r)
		}
	}
}

// TestNoGuessAcrossARestart: a destroy task was pending when the agent
// died; the catch-up after the restart shows one VM deleted and the task
// gone. Other destroys may have run unseen meanwhile, so the one deletion in
// sight is not taken as the task's (found by the chaos suite: a destroy
// recorded against the VM another, unseen destroy removed).
func TestNoGuessAcrossARestart(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	p := newFakePool()
	p.vms["OpaqueRef:x"] = &xapi.Snapshot{UUID: "x", NameLabel: "x", PowerState: "Halted"}
	p.vms["OpaqueRef:y"] = &xapi.Snapshot{UUID: "y", NameLabel: "y", PowerState: "Halted"}
	tr := New(st, nil)
	tr.SetServerTime(p.at(0))
	if err := tr.Resync(ctx, p.snapshot(), "", "start"); err != nil {
		t.Fatal(err)
	}
	d1 := taskRef(1)
	p.tasks[d1] = &xapi.Snapshot{UUID: "task-1", NameLabel: "Async.VM.destroy", Status: "pending", Created: p.at(10)}
	p.ev("task", "add", d1, p.tasks[d1])
	if err := feed(ctx, tr, p.flush()); err != nil {
		t.Fatal(err)
	}
	// The agent dies; x goes by task-1 (its deletion not in the catch-up:
	// already out of the deletion queue), y by a task never seen.
	delete(p.vms, "OpaqueRef:x")
	delete(p.vms, "OpaqueRef:y")
	p.ev("vm", "del", "OpaqueRef:y", nil)
	delete(p.tasks, d1)
	p.ev("task", "del", d1, nil)
	tr2 := New(st, nil)
	tr2.OtherSources = true
	if err := feed(ctx, tr2, p.flush()); err != nil {
		t.Fatal(err)
	}
	recs, _ := st.Records(ctx, lineage.Filter{})
	for _, r := range recs {
		if r.TaskUUID == "task-1" && r.VMUUID == "y" {
			t.Errorf("task-1 was given y, the one deletion in sight after the restart: %+v", r)
		}
	}
}

// TestResyncWaitsForTheRunningTask: the agent restarts while a synchronous
// suspend runs. Its resync finds the VM suspended, its current_operations
// already empty, and the task still pending; the task's del comes after.
// The change is the task's: one suspend record, none inferred beside it
// (TestSIGKILLMidScenario found both). Likewise a clone's new VM seen at a
// resync before the clone's result names it is no 'create'.
func TestResyncWaitsForTheRunningTask(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	p := newFakePool()
	p.vms["OpaqueRef:p"] = &xapi.Snapshot{UUID: "p", NameLabel: "p", PowerState: "Running", ResidentOn: "OpaqueRef:h1"}
	p.vms["OpaqueRef:a"] = &xapi.Snapshot{UUID: "a", NameLabel: "a", PowerState: "Halted"}
	tr := New(st, nil)
	tr.SetServerTime(p.at(0))
	if err := tr.Resync(ctx, p.snapshot(), "", "start"); err != nil {
		t.Fatal(err)
	}
	if err := tr.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// While no agent runs: a sync suspend of p and a clone of a, both
	// still pending, their VMs' current_operations already empty.
	sus, cl := taskRef(1), taskRef(2)
	p.tasks[sus] = &xapi.Snapshot{UUID: "task-1", NameLabel: "VM.suspend", Status: "pending", Created: p.at(10)}
	p.vms["OpaqueRef:p"].PowerState, p.vms["OpaqueRef:p"].ResidentOn = "Suspended", "OpaqueRef:NULL"
	p.tasks[cl] = &xapi.Snapshot{UUID: "task-2", NameLabel: "Async.VM.clone", Status: "pending", Created: p.at(11)}
	p.vms["OpaqueRef:n"] = &xapi.Snapshot{UUID: "n", NameLabel: "n", PowerState: "Halted"}

	tr = New(st, nil) // the restarted agent
	tr.SetServerTime(p.at(12))
	if err := tr.Resync(ctx, p.snapshot(), "", "start"); err != nil {
		t.Fatal(err)
	}
	if err := tr.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	delete(p.tasks, sus)
	p.ev("task", "del", sus, nil)
	p.tasks[cl].Status, p.tasks[cl].Finished, p.tasks[cl].Result = "success", p.at(14), "<value>OpaqueRef:n</value>"
	p.ev("task", "mod", cl, p.tasks[cl])
	delete(p.tasks, cl)
	p.ev("task", "del", cl, nil)
	if err := feed(ctx, tr, p.flush()); err != nil {
		t.Fatal(err)
	}
	recs, _ := st.Records(ctx, lineage.Filter{})
	var got []string
	for _, r := range recs {
		got = append(got, fmt.Sprintf("%s %s of %s (%s)", r.Activity, r.Result, r.VMUUID, r.Source))
	}
	if len(recs) != 2 {
		t.Fatalf("want the suspend and the clone, got %q", got)
	}
	for _, r := range recs {
		if r.Source != record.SourceXAPI {
			t.Errorf("inferred record beside the task's: %q", got)
		}
		if r.Activity == record.Suspend && (r.VMUUID != "p" || r.Result != record.Success) {
			t.Errorf("the suspend is p's, and succeeded (p is suspended): %q", got)
		}
		if r.Activity == record.Clone && (r.VMUUID != "n" || r.Result != record.Success) {
			t.Errorf("the clone made n: %q", got)
		}
	}
}

// TestOwnRecordExplainsOnlyItsKind: a VM's start is stored, the agent
// restarts, and its resync finds the VM halted by a shutdown no task showed
// (from inside the guest). The start just stored is no explanation of that:
// the shutdown is inferred.
func TestOwnRecordExplainsOnlyItsKind(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	p := newFakePool()
	p.vms["OpaqueRef:v"] = &xapi.Snapshot{UUID: "v", NameLabel: "v", PowerState: "Halted"}
	tr := New(st, nil)
	tr.SetServerTime(p.at(0))
	if err := tr.Resync(ctx, p.snapshot(), "", "start"); err != nil {
		t.Fatal(err)
	}
	p.power(1, "OpaqueRef:v", "start", "Running", "OpaqueRef:h1", 10, false)
	if err := feed(ctx, tr, p.flush()); err != nil {
		t.Fatal(err)
	}
	p.vms["OpaqueRef:v"].PowerState, p.vms["OpaqueRef:v"].ResidentOn = "Halted", "OpaqueRef:NULL"
	tr = New(st, nil)
	tr.SetServerTime(p.at(12))
	if err := tr.Resync(ctx, p.snapshot(), "", "start"); err != nil {
		t.Fatal(err)
	}
	recs, _ := st.Records(ctx, lineage.Filter{})
	var got []string
	shutdowns := 0
	for _, r := range recs {
		got = append(got, fmt.Sprintf("%s of %s (%s)", r.Activity, r.VMUUID, r.Source))
		if r.Activity == record.Shutdown && r.VMUUID == "v" {
			shutdowns++
		}
	}
	if shutdowns != 1 {
		t.Errorf("want the start and an inferred shutdown of v, got %q", got)
	}
}

// TestSnapshotSourceOfACloneFirstSeenWithTheKey: a snapshot made while no
// agent watched is cloned just as the tracer comes back; the catch-up shows
// the snapshot for the first time ("add"), already carrying the clone's key.
// A clone or copy never makes a snapshot, so the snapshot is the clone's
// source, not its new VM (found by the chaos suite: the clone recorded as
// made of the snapshot, and its real new VM inferred as a 'create').
func TestSnapshotSourceOfACloneFirstSeenWithTheKey(t *testing.T) {
	for _, newSeenWithKey := range []bool{true, false} {
		t.Run(fmt.Sprintf("new VM seen with the key %v", newSeenWithKey), func(t *testing.T) {
			ctx := context.Background()
			st := openStore(t)
			st.DeferSeal(true) // as the agent does with a log source: the logs' record completes the tracer's
			p := newFakePool()
			p.vms["OpaqueRef:a"] = &xapi.Snapshot{UUID: "a", NameLabel: "a", PowerState: "Halted"}
			tr := New(st, nil)
			tr.OtherSources = true
			tr.OtherSettled = func() time.Time { return p.at(3600) }
			tr.SetServerTime(p.at(0))
			if err := tr.Resync(ctx, p.snapshot(), "", "start"); err != nil {
				t.Fatal(err)
			}
			tk := taskRef(0xa0001)
			p.tasks[tk] = &xapi.Snapshot{UUID: "task-c", NameLabel: "Async.VM.clone", Status: "pending", Created: p.at(10)}
			p.ev("task", "add", tk, p.tasks[tk])
			p.vms["OpaqueRef:s"] = &xapi.Snapshot{UUID: "s", NameLabel: "s", PowerState: "Halted", IsASnapshot: true, IsATemplate: true,
				SnapshotOf: "OpaqueRef:a", CurrentOperations: map[string]string{tk: "clone"}}
			p.ev("vm", "add", "OpaqueRef:s", p.vms["OpaqueRef:s"])
			if err := feed(ctx, tr, p.flush()); err != nil {
				t.Fatal(err)
			}
			// The agent dies; the next one's catch-up shows the rest.
			tr = New(st, nil)
			tr.OtherSources = true
			tr.OtherSettled = func() time.Time { return p.at(3600) }
			p.vms["OpaqueRef:n"] = &xapi.Snapshot{UUID: "n", NameLabel: "gen-1", PowerState: "Halted", IsATemplate: true,
				CurrentOperations: map[string]string{tk: "clone"}}
			if newSeenWithKey {
				p.ev("vm", "add", "OpaqueRef:n", p.vms["OpaqueRef:n"])
			}
			p.vms["OpaqueRef:n"].CurrentOperations, p.vms["OpaqueRef:s"].CurrentOperations = nil, nil
			p.ev("vm", map[bool]string{true: "mod", false: "add"}[newSeenWithKey], "OpaqueRef:n", p.vms["OpaqueRef:n"])
			p.ev("vm", "mod", "OpaqueRef:s", p.vms["OpaqueRef:s"])
			delete(p.tasks, tk) // its completion and result unseen
			p.ev("task", "del", tk, nil)
			if err := feed(ctx, tr, p.flush()); err != nil {
				t.Fatal(err)
			}
			// The logs' record of the clone (same id): its new VM by name.
			logged := record.Record{ID: record.ID("pool-1", shortID(tk), 0), PoolUUID: "pool-1", VMName: "gen-1", ParentVMUUID: "s",
				Activity: record.Clone, Operation: "clone", Start: p.at(10), End: p.at(12), Result: record.Success, TaskID: shortID(tk),
				Source: record.SourceLog, Unknown: []string{"vm_uuid", "end", "task_uuid"}}
			if err := st.Update(ctx, func(tx *lineage.Tx) error { _, err := tx.PutRecord(&logged); return err }); err != nil {
				t.Fatal(err)
			}
			for k, c := range tr.changes {
				c.Noted = c.Noted.Add(-time.Minute)
				tr.changes[k] = c
			}
			if err := tr.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			recs, _ := st.Records(ctx, lineage.Filter{})
			var got []string
			for _, r := range recs {
				got = append(got, fmt.Sprintf("%s %s of %s from %s (%s)", r.Activity, r.Result, r.VMUUID, r.ParentVMUUID, r.Source))
			}
			if len(recs) != 1 || recs[0].Activity != record.Clone || recs[0].VMUUID != "n" || recs[0].ParentVMUUID != "s" ||
				recs[0].Result != record.Success {
				t.Errorf("want one record: the clone of n from s, got %q", got)
			}
		})
	}
}

// TestSourceAndNewVMBothFirstSeenWithTheKey: a template made while no agent
// watched is cloned as the tracer comes back; the catch-up shows it and the
// clone's new template for the first time, both carrying the clone's key,
// and the task gone with its result unseen. Nothing tells which of the two
// the clone made: the record is one (index 0), its VM and parent unknown
// (the logs name them), never one record per VM (found by the chaos suite:
// a second record, index 1, for the new VM, the first naming the source as
// the clone's new VM).
func TestSourceAndNewVMBothFirstSeenWithTheKey(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	p := newFakePool()
	p.vms["OpaqueRef:a"] = &xapi.Snapshot{UUID: "a", NameLabel: "a", PowerState: "Halted"}
	tr := New(st, nil)
	tr.OtherSources = true
	tr.OtherSettled = func() time.Time { return p.at(3600) }
	tr.SetServerTime(p.at(0))
	if err := tr.Resync(ctx, p.snapshot(), "", "start"); err != nil {
		t.Fatal(err)
	}
	tk := taskRef(0xa0002)
	p.tasks[tk] = &xapi.Snapshot{UUID: "task-c", NameLabel: "Async.VM.clone", Status: "pending", Created: p.at(10)}
	p.ev("task", "add", tk, p.tasks[tk])
	if err := feed(ctx, tr, p.flush()); err != nil {
		t.Fatal(err)
	}
	// The agent dies; the catch-up of the next one shows both templates.
	tr = New(st, nil)
	tr.OtherSources = true
	tr.OtherSettled = func() time.Time { return p.at(3600) }
	for _, v := range []string{"s", "n"} {
		p.vms["OpaqueRef:"+v] = &xapi.Snapshot{UUID: v, NameLabel: "gen-" + v, PowerState: "Halted", IsATemplate: true,
			CurrentOperations: map[string]string{tk: "clone"}}
		p.ev("vm", "add", "OpaqueRef:"+v, p.vms["OpaqueRef:"+v])
	}
	if err := feed(ctx, tr, p.flush()); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"s", "n"} {
		p.vms["OpaqueRef:"+v].CurrentOperations = nil
		p.ev("vm", "mod", "OpaqueRef:"+v, p.vms["OpaqueRef:"+v])
	}
	delete(p.tasks, tk) // its completion and result unseen
	p.ev("task", "del", tk, nil)
	if err := feed(ctx, tr, p.flush()); err != nil {
		t.Fatal(err)
	}
	recs, _ := st.Records(ctx, lineage.Filter{})
	var got []string
	for _, r := range recs {
		got = append(got, fmt.Sprintf("%s %s of %q from %q (%s)", r.Activity, r.Result, r.VMUUID, r.ParentVMUUID, r.Source))
	}
	if len(recs) != 1 || recs[0].ID != record.ID("pool-1", shortID(tk), 0) {
		t.Fatalf("want one record of the clone (index 0), got %q", got)
	}
	if r := recs[0]; r.VMUUID == "s" || r.ParentVMUUID == "n" || (r.VMUUID == "" && !r.IsUnknown("vm_uuid")) ||
		(r.ParentVMUUID == "" && !r.IsUnknown("parent_vm_uuid")) {
		t.Errorf("the clone's VM and parent cannot be told apart: want them unknown, got %q (unknown %v)", got, r.Unknown)
	}
}

// TestChangeJustAfterAResyncSnapshot: a resync reads the pool's VMs, then
// its clock (host.get_servertime), which is later: a VM shut down between
// the two shows up as a change only in the first batch after the resync.
// The change can have happened before that clock reading; the logs' record
// of the shutdown, ended before it, explains it (found by the chaos suite:
// the change was dated from the resync's clock, the logs' record fell
// outside its window and a resync record doubled it).
func TestChangeJustAfterAResyncSnapshot(t *testing.T) {
	for _, restart := range []bool{false, true} {
		t.Run(fmt.Sprintf("restart %v", restart), func(t *testing.T) { changeJustAfterAResyncSnapshot(t, restart) })
	}
}

// changeJustAfterAResyncSnapshot: with restart, the agent dies after the
// resync and the change shows in the next one's catch-up.
func changeJustAfterAResyncSnapshot(t *testing.T, restart bool) {
	ctx := context.Background()
	st := openStore(t)
	p := newFakePool()
	p.vms["OpaqueRef:v"] = &xapi.Snapshot{UUID: "v", NameLabel: "v", PowerState: "Running", ResidentOn: "OpaqueRef:h1"}
	p.vms["OpaqueRef:w"] = &xapi.Snapshot{UUID: "w", NameLabel: "w", PowerState: "Halted"}
	tr := New(st, nil)
	tr.OtherSources = true
	tr.OtherSettled = func() time.Time { return p.at(3600) }
	tr.SetServerTime(p.at(0))
	if err := tr.Resync(ctx, p.snapshot(), "", "start"); err != nil {
		t.Fatal(err)
	}
	p.power(1, "OpaqueRef:w", "start", "Running", "OpaqueRef:h2", 10, false)
	if err := feed(ctx, tr, p.flush()); err != nil {
		t.Fatal(err)
	}
	// EVENTS_LOST; the resync's snapshot still shows v running, v is shut
	// down (the logs store it), and the resync reads the clock. Its tasks,
	// read after its VMs, already hold one created after the shutdown.
	snap := p.snapshot()
	snap.Records["task"][taskRef(0xb0002)] = &xapi.Snapshot{UUID: "task-later", NameLabel: "Async.VM.start", Status: "pending", Created: p.at(38)}
	logged := record.Record{ID: record.ID("pool-1", "0000000b0001", 0), PoolUUID: "pool-1", VMUUID: "v", VMName: "v",
		Activity: record.Shutdown, Operation: "hard_shutdown", Start: p.at(30), End: p.at(31), Result: record.Success,
		TaskID: "0000000b0001", Source: record.SourceLog, Unknown: []string{"task_uuid", "parent_vm_uuid"}}
	if err := st.Update(ctx, func(tx *lineage.Tx) error { _, err := tx.PutRecord(&logged); return err }); err != nil {
		t.Fatal(err)
	}
	tr.SetServerTime(p.at(40))
	if err := tr.Resync(ctx, snap, "", "events_lost"); err != nil {
		t.Fatal(err)
	}
	if restart {
		tr = New(st, nil)
		tr.OtherSources = true
		tr.OtherSettled = func() time.Time { return p.at(3600) }
		tr.SetServerTime(p.at(45))
	}
	p.vms["OpaqueRef:v"].PowerState, p.vms["OpaqueRef:v"].ResidentOn = "Halted", "OpaqueRef:NULL"
	p.ev("vm", "mod", "OpaqueRef:v", p.vms["OpaqueRef:v"])
	if err := feed(ctx, tr, p.flush()); err != nil {
		t.Fatal(err)
	}
	for k, c := range tr.changes {
		c.Noted = c.Noted.Add(-time.Minute)
		tr.changes[k] = c
	}
	if err := tr.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	recs, _ := st.Records(ctx, lineage.Filter{})
	for _, r := range recs {
		if r.Source == record.SourceResync {
			t.Errorf("inferred %s of %s at %s beside the logs' record", r.Activity, r.VMName, record.FormatTime(r.Start))
		}
	}
}

// TestRevertSubtaskAcrossARestart: a revert runs as the agent dies; the
// tracer had seen the revert's keys on the VM and the snapshot and the key
// of its hard_shutdown sub-task on the VM, never that sub-task's object.
// After the restart both tasks are gone and the VM as the store knew it
// carries no keys: the sub-task still folds into the revert, it is no
// shutdown of its own (found by the chaos suite: a failed shutdown
// standing for nothing).
func TestRevertSubtaskAcrossARestart(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	p := newFakePool()
	p.vms["OpaqueRef:v"] = &xapi.Snapshot{UUID: "v", NameLabel: "v", PowerState: "Running", ResidentOn: "OpaqueRef:h1"}
	p.vms["OpaqueRef:s"] = &xapi.Snapshot{UUID: "s", NameLabel: "s", PowerState: "Suspended", IsASnapshot: true, IsATemplate: true,
		SnapshotOf: "OpaqueRef:v"}
	tr := New(st, nil)
	tr.SetServerTime(p.at(0))
	if err := tr.Resync(ctx, p.snapshot(), "", "start"); err != nil {
		t.Fatal(err)
	}
	rv, hs := taskRef(0xc0001), taskRef(0xc0002)
	p.tasks[rv] = &xapi.Snapshot{UUID: "task-r", NameLabel: "Async.VM.revert", Status: "pending", Created: p.at(10)}
	p.ev("task", "add", rv, p.tasks[rv])
	p.vms["OpaqueRef:s"].CurrentOperations = map[string]string{rv: "revert"}
	p.ev("vm", "mod", "OpaqueRef:s", p.vms["OpaqueRef:s"])
	p.vms["OpaqueRef:v"].CurrentOperations = map[string]string{rv: "reverting", hs: "hard_shutdown"}
	p.ev("vm", "mod", "OpaqueRef:v", p.vms["OpaqueRef:v"])
	if err := feed(ctx, tr, p.flush()); err != nil {
		t.Fatal(err)
	}
	// The agent dies; the revert ends (the VM as the checkpoint was).
	p.vms["OpaqueRef:v"].CurrentOperations, p.vms["OpaqueRef:s"].CurrentOperations = nil, nil
	p.vms["OpaqueRef:v"].PowerState, p.vms["OpaqueRef:v"].ResidentOn = "Suspended", "OpaqueRef:NULL"
	delete(p.tasks, rv)
	tr = New(st, nil)
	tr.SetServerTime(p.at(20))
	if err := tr.Resync(ctx, p.snapshot(), "", "start"); err != nil {
		t.Fatal(err)
	}
	recs, _ := st.Records(ctx, lineage.Filter{})
	var got []string
	for _, r := range recs {
		got = append(got, fmt.Sprintf("%s %s of %s (%s)", r.Activity, r.Result, r.VMUUID, r.Source))
	}
	if len(recs) != 1 || recs[0].Activity != record.Revert || recs[0].VMUUID != "v" {
		t.Errorf("want the revert of v alone, got %q", got)
	}
}

// TestUnknownResultCreationExplainsTheVMThatAppeared: a snapshot task is
// seen pending, tied to no VM; then a gap (EVENTS_LOST): the resync finds
// the task gone, its completion never seen, and a new snapshot VM. The
// task's record knows neither its VM nor its result (no VM it made was seen:
// an inferred failure). The VM that appeared is that snapshot's: one
// record, not a second, inferred one beside it (the chaos suite found both).
func TestUnknownResultCreationExplainsTheVMThatAppeared(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	tr := New(st, nil)
	p := newFakePool()
	// With the logs to name it, the tracer does not guess the task's VM
	// across the gap (attribute); no log record comes here.
	tr.OtherSources = true
	tr.OtherSettled = func() time.Time { return p.at(3600) }
	p.vms["OpaqueRef:a"] = &xapi.Snapshot{UUID: "a", NameLabel: "a", PowerState: "Running", ResidentOn: "OpaqueRef:h1"}
	tr.SetServerTime(p.at(0))
	if err := tr.Resync(ctx, p.snapshot(), "", "start"); err != nil {
		t.Fatal(err)
	}
	tk := taskRef(1)
	p.tasks[tk] = &xapi.Snapshot{UUID: "task-1", NameLabel: "Async.VM.snapshot", Status: "pending", Created: p.at(10)}
	p.ev("task", "add", tk, p.tasks[tk])
	if err := feed(ctx, tr, p.flush()); err != nil {
		t.Fatal(err)
	}
	delete(p.tasks, tk)
	p.vms["OpaqueRef:s"] = &xapi.Snapshot{UUID: "s", NameLabel: "a-snap", PowerState: "Halted", IsASnapshot: true, SnapshotOf: "OpaqueRef:a"}
	p.evs = nil
	tr.SetServerTime(p.at(20))
	if err := tr.Resync(ctx, p.snapshot(), "", "EVENTS_LOST"); err != nil {
		t.Fatal(err)
	}
	for k, c := range tr.changes {
		c.Noted = c.Noted.Add(-time.Minute)
		tr.changes[k] = c
	}
	if err := tr.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	recs, _ := st.Records(ctx, lineage.Filter{})
	var own, resync []record.Record
	for _, r := range recs {
		switch {
		case r.TaskUUID == "task-1":
			own = append(own, r)
		case r.Source == record.SourceResync:
			resync = append(resync, r)
		}
	}
	if len(own) != 1 || own[0].VMUUID != "" || !own[0].IsUnknown("vm_uuid") || !own[0].IsUnknown("result") {
		t.Fatalf("want the task's record of unknown VM and result, got %+v (all: %+v)", own, recs)
	}
	if len(resync) != 0 {
		t.Errorf("the snapshot that appeared was also inferred: %+v", resync)
	}
	// The family tree keeps the edge the inferred record gave: a snapshot
	// names its source.
	if v, err := st.LookupVM(ctx, "s"); err != nil || v.ParentUUID != "a" {
		t.Errorf("the snapshot's parent in the store: %+v %v (want a)", v, err)
	}
}

// TestUnknownResultSnapshotOfTheSourceExplainsTheVMThatAppeared: as
// TestUnknownResultCreationExplainsTheVMThatAppeared, but the snapshot task
// was seen holding its source: its record is about the source (nothing it
// made seen, result unknown). The snapshot of that source that appeared is
// still the task's, not a second operation.
func TestUnknownResultSnapshotOfTheSourceExplainsTheVMThatAppeared(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	tr := New(st, nil)
	p := newFakePool()
	tr.OtherSources = true
	tr.OtherSettled = func() time.Time { return p.at(3600) }
	p.vms["OpaqueRef:a"] = &xapi.Snapshot{UUID: "a", NameLabel: "a", PowerState: "Running", ResidentOn: "OpaqueRef:h1"}
	tr.SetServerTime(p.at(0))
	if err := tr.Resync(ctx, p.snapshot(), "", "start"); err != nil {
		t.Fatal(err)
	}
	tk := taskRef(1)
	p.tasks[tk] = &xapi.Snapshot{UUID: "task-1", NameLabel: "Async.VM.snapshot", Status: "pending", Created: p.at(10)}
	p.ev("task", "add", tk, p.tasks[tk])
	p.vms["OpaqueRef:a"].CurrentOperations = map[string]string{tk: "snapshot"}
	p.ev("vm", "mod", "OpaqueRef:a", p.vms["OpaqueRef:a"])
	if err := feed(ctx, tr, p.flush()); err != nil {
		t.Fatal(err)
	}
	delete(p.tasks, tk)
	p.vms["OpaqueRef:a"].CurrentOperations = nil
	p.vms["OpaqueRef:s"] = &xapi.Snapshot{UUID: "s", NameLabel: "a-snap", PowerState: "Halted", IsASnapshot: true, SnapshotOf: "OpaqueRef:a"}
	p.evs = nil
	tr.SetServerTime(p.at(20))
	if err := tr.Resync(ctx, p.snapshot(), "", "EVENTS_LOST"); err != nil {
		t.Fatal(err)
	}
	for k, c := range tr.changes {
		c.Noted = c.Noted.Add(-time.Minute)
		tr.changes[k] = c
	}
	if err := tr.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	recs, _ := st.Records(ctx, lineage.Filter{})
	var own, resync []record.Record
	for _, r := range recs {
		switch {
		case r.TaskUUID == "task-1":
			own = append(own, r)
		case r.Source == record.SourceResync:
			resync = append(resync, r)
		}
	}
	if len(own) != 1 || own[0].VMUUID != "a" || !own[0].IsUnknown("result") {
		t.Fatalf("want the task's record about its source, result unknown, got %+v (all: %+v)", own, recs)
	}
	if len(resync) != 0 {
		t.Errorf("the snapshot that appeared was also inferred: %+v", resync)
	}
	if v, err := st.LookupVM(ctx, "s"); err != nil || v.ParentUUID != "a" {
		t.Errorf("the snapshot's parent in the store: %+v %v (want a)", v, err)
	}
}

// TestRevertSubtaskSeenOnlyAtAResync: a restart's resync reads the VMs
// while a revert runs (the VM carries the revert's key and its
// hard_shutdown sub-task's) and the tasks seconds later, when the revert
// has ended and the sub-task is gone: the revert is recorded, the sub-task
// waits for its key to vanish. The agent dies before it does; the next one
// finds neither key nor revert task. The sub-task still folds into the
// revert (chaos long form: a failed shutdown standing for nothing, first
// seen after the revert's end, the revert recorded and forgotten by then).
func TestRevertSubtaskSeenOnlyAtAResync(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	p := newFakePool()
	p.vms["OpaqueRef:v"] = &xapi.Snapshot{UUID: "v", NameLabel: "v", PowerState: "Running", ResidentOn: "OpaqueRef:h1"}
	p.vms["OpaqueRef:s"] = &xapi.Snapshot{UUID: "s", NameLabel: "s", PowerState: "Halted", IsASnapshot: true, IsATemplate: true,
		SnapshotOf: "OpaqueRef:v"}
	tr := New(st, nil)
	tr.SetServerTime(p.at(0))
	if err := tr.Resync(ctx, p.snapshot(), "", "start"); err != nil {
		t.Fatal(err)
	}
	// A restart: the VMs read mid-revert, the tasks after its end.
	rv, hs := taskRef(0xc0011), taskRef(0xc0012)
	p.vms["OpaqueRef:s"].CurrentOperations = map[string]string{rv: "revert"}
	p.vms["OpaqueRef:v"].CurrentOperations = map[string]string{rv: "reverting", hs: "hard_shutdown"}
	p.tasks[rv] = &xapi.Snapshot{UUID: "task-r", NameLabel: "Async.VM.revert", Status: "success", Created: p.at(10), Finished: p.at(15)}
	tr = New(st, nil)
	tr.SetServerTime(p.at(17))
	if err := tr.Resync(ctx, p.snapshot(), "", "start"); err != nil {
		t.Fatal(err)
	}
	// The agent dies; the revert's effect is all the next one sees.
	p.vms["OpaqueRef:v"].CurrentOperations, p.vms["OpaqueRef:s"].CurrentOperations = nil, nil
	p.vms["OpaqueRef:v"].PowerState, p.vms["OpaqueRef:v"].ResidentOn = "Halted", "OpaqueRef:NULL"
	delete(p.tasks, rv)
	tr = New(st, nil)
	tr.SetServerTime(p.at(30))
	if err := tr.Resync(ctx, p.snapshot(), "", "start"); err != nil {
		t.Fatal(err)
	}
	recs, _ := st.Records(ctx, lineage.Filter{})
	var got []string
	for _, r := range recs {
		got = append(got, fmt.Sprintf("%s %s %s of %s (%s)", r.TaskID, r.Activity, r.Result, r.VMUUID, r.Source))
	}
	if len(recs) != 1 || recs[0].Activity != record.Revert || recs[0].VMUUID != "v" {
		t.Errorf("want the revert of v alone, got %q", got)
	}
}

// TestSortByGen: events come out in generation order, events of one
// generation (and ids that do not parse, which count as 0) in the order
// they came, exactly as a stable sort by the parsed id leaves them.
func TestSortByGen(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for n := 0; n < 200; n++ {
		evs := make([]xapi.Event, rng.IntN(40))
		for i := range evs {
			id := strconv.Itoa(rng.IntN(12))
			if rng.IntN(10) == 0 {
				id = "x"
			}
			evs[i] = xapi.Event{ID: id, Ref: strconv.Itoa(i)}
		}
		if n%3 == 0 { // already ordered: left as it is
			sort.SliceStable(evs, func(i, j int) bool { return genOf(evs[i].ID) < genOf(evs[j].ID) })
		}
		want := slices.Clone(evs)
		sort.SliceStable(want, func(i, j int) bool { return genOf(want[i].ID) < genOf(want[j].ID) })
		sortByGen(evs)
		if !slices.Equal(evs, want) {
			t.Fatalf("got %v, want %v", evs, want)
		}
	}
}

// TestParentUnknownSurvivesARestart: a clone whose source was never learnt
// (its task pending across a restart, the source's key gone) makes a VM
// whose parent is unknown. After another restart, that VM's start must
// still list its parent unknown, not claim it has none: the store keeps
// how the VM was made even without its parent (TestSIGKILLMidScenario:
// 'start of app1: parent_vm_uuid = , want d0d0…' after a SIGKILL).
func TestParentUnknownSurvivesARestart(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	p := newFakePool()
	p.vms["OpaqueRef:a"] = &xapi.Snapshot{UUID: "a", NameLabel: "a", PowerState: "Halted"}
	resyncAt(t, st, nil, p, 0, "start")
	cl := taskRef(2)
	p.tasks[cl] = &xapi.Snapshot{UUID: "task-2", NameLabel: "Async.VM.clone", Status: "pending", Created: p.at(11)}
	p.vms["OpaqueRef:n"] = &xapi.Snapshot{UUID: "n", NameLabel: "n", PowerState: "Halted"}
	tr := resyncAt(t, st, nil, p, 12, "start")
	p.tasks[cl].Result = "<value>OpaqueRef:n</value>"
	p.endTask(cl, 14)
	if err := feed(ctx, tr, p.flush()); err != nil {
		t.Fatal(err)
	}
	tr = resyncAt(t, st, nil, p, 16, "start")
	p.power(3, "OpaqueRef:n", "start", "Running", "OpaqueRef:h1", 20, false)
	if err := feed(ctx, tr, p.flush()); err != nil {
		t.Fatal(err)
	}
	recs, _ := st.Records(ctx, lineage.Filter{VMUUID: "n"})
	var clones, starts int
	for _, r := range recs {
		switch r.Activity {
		case record.Clone:
			clones++
			if r.ParentVMUUID != "" || !r.IsUnknown("parent_vm_uuid") {
				t.Errorf("the clone's source was never seen: want its parent listed unknown, got %+v", r)
			}
		case record.Start:
			starts++
			if r.ParentVMUUID != "" || !r.IsUnknown("parent_vm_uuid") {
				t.Errorf("n's parent is unknown: its start must say so, not claim none: %+v", r)
			}
		}
	}
	if clones != 1 || starts != 1 {
		t.Errorf("want one clone and one start of n, got %+v", recs)
	}
}

// TestCatchUpCountIsNoWarning: after a start, the view restored from the
// store lacks the control domains (never stored), so the catch-up's VM
// count always exceeds it: a resync follows, logged as what it is, not as a
// warning (one per restart, on every pool). The same shortfall later is a
// warning.
func TestCatchUpCountIsNoWarning(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	p := newFakePool()
	p.vms["OpaqueRef:d0"] = &xapi.Snapshot{UUID: "dom0", NameLabel: "Control domain on host: xen1", PowerState: "Running", IsControlDomain: true}
	p.vms["OpaqueRef:a"] = &xapi.Snapshot{UUID: "a", NameLabel: "a", PowerState: "Halted"}
	resyncAt(t, st, nil, p, 0, "start")
	var logs bytes.Buffer
	tr := New(st, slog.New(slog.NewTextHandler(&logs, nil)))
	p.ev("vm", "mod", "OpaqueRef:a", p.vms["OpaqueRef:a"])
	b := p.flush()
	b.ValidRefCounts = map[string]int{"vm": 2}
	if err := tr.Events(ctx, b); !errors.Is(err, xapi.ErrResyncNeeded) {
		t.Fatalf("the catch-up with a VM the view lacks: want a resync asked for, got %v", err)
	}
	if !strings.Contains(logs.String(), "level=INFO msg=\"catch-up:") || strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("the catch-up's count logged as:\n%s", logs.String())
	}
	// Past the catch-up, a VM the tracer lacks is a fault worth a warning.
	logs.Reset()
	p.ev("vm", "mod", "OpaqueRef:a", p.vms["OpaqueRef:a"])
	b = p.flush()
	b.ValidRefCounts = map[string]int{"vm": 2}
	if err := tr.Events(ctx, b); !errors.Is(err, xapi.ErrResyncNeeded) {
		t.Fatalf("want a resync asked for, got %v", err)
	}
	if !strings.Contains(logs.String(), "level=WARN msg=\"VM count differs") {
		t.Errorf("a VM lacking past the catch-up logged as:\n%s", logs.String())
	}
}

// TestUnseenPauseImpliedByUnpause: the agent is killed after web was last
// stored running; meanwhile web is paused and its unpause begins (pause
// and its task come and go unseen: killed before its group commit, or
// coalesced away). The restarted agent sees web carrying the unpause's key,
// paused still or already running: the unpause implies a pause nobody saw,
// recorded as inferred (source resync), once, beside the unpause
// (TestSIGKILLMidScenario: 'missing record: pause success of web').
func TestUnseenPauseImpliedByUnpause(t *testing.T) {
	// seen: "paused": the restart came between the pause and the unpause
	// (the VM seen paused, no key); "unpausing": the VM paused, the
	// unpause's key on it; "running": the unpause's effect seen already.
	// "live": no restart; the pause's task never seen (coalesced away),
	// the VM seen paused, the unpause seen whole within the pause's grace.
	for _, seen := range []string{"paused", "unpausing", "running", "live"} {
		t.Run(seen, func(t *testing.T) {
			applied := seen == "running"
			ctx := context.Background()
			st := openStore(t)
			p := newFakePool()
			p.vms["OpaqueRef:w"] = &xapi.Snapshot{UUID: "w", NameLabel: "web", PowerState: "Running", ResidentOn: "OpaqueRef:h1"}
			tr := resyncAt(t, st, nil, p, 0, "start")
			un := taskRef(2)
			p.vms["OpaqueRef:w"].PowerState = xapi.Paused
			if seen == "unpausing" || seen == "running" {
				p.tasks[un] = &xapi.Snapshot{UUID: "task-2", NameLabel: "Async.VM.unpause", Status: "pending", Created: p.at(10)}
				p.vms["OpaqueRef:w"].CurrentOperations = map[string]string{un: "unpause"}
			}
			if applied {
				p.vms["OpaqueRef:w"].PowerState = xapi.Running
			}
			if seen == "live" {
				p.ev("vm", "mod", "OpaqueRef:w", p.vms["OpaqueRef:w"])
				tr.SetServerTime(p.at(12))
				if err := feed(ctx, tr, p.flush()); err != nil {
					t.Fatal(err)
				}
			} else {
				tr = resyncAt(t, st, nil, p, 12, "start") // the restarted agent
			}
			if seen == "paused" || seen == "live" {
				// The unpause, seen live.
				p.tasks[un] = &xapi.Snapshot{UUID: "task-2", NameLabel: "Async.VM.unpause", Status: "pending", Created: p.at(13)}
				p.ev("task", "add", un, p.tasks[un])
				p.vms["OpaqueRef:w"].CurrentOperations = map[string]string{un: "unpause"}
				p.ev("vm", "mod", "OpaqueRef:w", p.vms["OpaqueRef:w"])
			}
			p.vms["OpaqueRef:w"].PowerState, p.vms["OpaqueRef:w"].CurrentOperations = xapi.Running, nil
			p.ev("vm", "mod", "OpaqueRef:w", p.vms["OpaqueRef:w"])
			p.endTask(un, 14)
			if err := feed(ctx, tr, p.flush()); err != nil {
				t.Fatal(err)
			}
			touchAt(t, tr, p, "OpaqueRef:w", 60)
			got, want := recordLines(st), []string{"pause success of w (resync)", "unpause success of w (xapi)"}
			if !slices.Equal(got, want) {
				t.Errorf("records: got %q, want %q", got, want)
			}
		})
	}
}

// TestOwnOperationImpliesNothing: a start seen live has already made its
// VM run, its key still on the VM, when a resync (a relogin) comes: the VM
// was last seen running because of that very start, which implies no
// shutdown before it. The same after a restart, the start's task restored
// from the store (TestFaultsDuringPlay: a shutdown of app1 invented).
func TestOwnOperationImpliesNothing(t *testing.T) {
	for _, restart := range []bool{false, true} {
		t.Run(fmt.Sprintf("restart=%v", restart), func(t *testing.T) {
			ctx := context.Background()
			st := openStore(t)
			p := newFakePool()
			p.vms["OpaqueRef:a"] = &xapi.Snapshot{UUID: "a", NameLabel: "app1", PowerState: xapi.Halted}
			tr := resyncAt(t, st, nil, p, 0, "start")
			s := taskRef(1)
			p.tasks[s] = &xapi.Snapshot{UUID: "task-1", NameLabel: "Async.VM.start", Status: "pending", Created: p.at(10)}
			p.ev("task", "add", s, p.tasks[s])
			p.vms["OpaqueRef:a"].CurrentOperations = map[string]string{s: "start"}
			p.ev("vm", "mod", "OpaqueRef:a", p.vms["OpaqueRef:a"])
			p.vms["OpaqueRef:a"].PowerState, p.vms["OpaqueRef:a"].ResidentOn = xapi.Running, "OpaqueRef:h2"
			p.ev("vm", "mod", "OpaqueRef:a", p.vms["OpaqueRef:a"])
			tr.SetServerTime(p.at(11))
			if err := feed(ctx, tr, p.flush()); err != nil {
				t.Fatal(err)
			}
			if restart {
				tr = nil
			}
			tr = resyncAt(t, st, tr, p, 12, "relogin")
			p.vms["OpaqueRef:a"].CurrentOperations = nil
			p.ev("vm", "mod", "OpaqueRef:a", p.vms["OpaqueRef:a"])
			p.endTask(s, 13)
			if err := feed(ctx, tr, p.flush()); err != nil {
				t.Fatal(err)
			}
			touchAt(t, tr, p, "OpaqueRef:a", 60)
			if got, want := recordLines(st), []string{"start success of a (xapi)"}; !slices.Equal(got, want) {
				t.Errorf("records: got %q, want %q", got, want)
			}
		})
	}
}

// TestRevertExplainsTheStateAnOperationStartsFrom: a VM last seen running
// was reverted while no agent watched (the logs tell it): to a checkpoint,
// which leaves it suspended, or to a snapshot, which leaves it halted. The
// resume or start seen after the restart starts from the state the revert
// left, so it implies no suspend or shutdown (chaos suite, seed 5: a
// suspend of vm-000476 invented before its resume).
func TestRevertExplainsTheStateAnOperationStartsFrom(t *testing.T) {
	for _, tc := range []struct {
		left, op, name string
		src            record.Source
	}{
		{xapi.Suspended, "resume", "Async.VM.resume", record.SourceLog},
		{xapi.Halted, "start", "Async.VM.start", record.SourceLog},
		// The tracer's own record, stored just before a SIGKILL that
		// came before the VM's new state was (the chaos case).
		{xapi.Suspended, "resume", "Async.VM.resume", record.SourceXAPI},
		{xapi.Halted, "start", "Async.VM.start", record.SourceXAPI},
	} {
		t.Run(tc.op+"/"+string(tc.src), func(t *testing.T) {
			ctx := context.Background()
			st := openStore(t)
			p := revertedWhileDown(t, st, tc.src)
			p.vms["OpaqueRef:w"].PowerState, p.vms["OpaqueRef:w"].ResidentOn = tc.left, ""
			op := taskRef(2)
			p.tasks[op] = &xapi.Snapshot{UUID: "task-2", NameLabel: tc.name, Status: "pending", Created: p.at(10)}
			p.vms["OpaqueRef:w"].CurrentOperations = map[string]string{op: tc.op}
			tr := New(st, nil) // the restarted agent
			if tc.src == record.SourceLog {
				tr.OtherSources = true
				tr.OtherSettled = func() time.Time { return p.at(3600) }
			}
			tr = resyncAt(t, st, tr, p, 12, "start")
			p.vms["OpaqueRef:w"].PowerState, p.vms["OpaqueRef:w"].ResidentOn = xapi.Running, "OpaqueRef:h1"
			p.vms["OpaqueRef:w"].CurrentOperations = nil
			p.ev("vm", "mod", "OpaqueRef:w", p.vms["OpaqueRef:w"])
			p.endTask(op, 14)
			if err := feed(ctx, tr, p.flush()); err != nil {
				t.Fatal(err)
			}
			touchAt(t, tr, p, "OpaqueRef:w", 60)
			if err := tr.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			got, want := recordLines(st), []string{tc.op + " success of w (xapi)", "revert success of w (" + string(tc.src) + ")"}
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("records: got %q, want %q", got, want)
			}
		})
	}
}

// TestRevertExplainsAPowerChange: the same revert, the VM found suspended
// or halted by the restart's resync with no operation on it: the stored
// revert explains the change (no suspend or shutdown inferred).
func TestRevertExplainsAPowerChange(t *testing.T) {
	for _, left := range []string{xapi.Suspended, xapi.Halted} {
		t.Run(left, func(t *testing.T) {
			ctx := context.Background()
			st := openStore(t)
			p := revertedWhileDown(t, st, record.SourceXAPI)
			p.vms["OpaqueRef:w"].PowerState, p.vms["OpaqueRef:w"].ResidentOn = left, ""
			tr := resyncAt(t, st, nil, p, 12, "start")
			touchAt(t, tr, p, "OpaqueRef:w", 60)
			if err := tr.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if got, want := recordLines(st), []string{"revert success of w (xapi)"}; !slices.Equal(got, want) {
				t.Errorf("records: got %q, want %q", got, want)
			}
		})
	}
}

// revertedWhileDown is a pool whose VM web ("w"), seen running by a first
// resync, was then reverted with no tracer watching: the revert's record
// (from src) is stored, the VM's new state is not.
func revertedWhileDown(t *testing.T, st *lineage.Store, src record.Source) *fakePool {
	t.Helper()
	p := newFakePool()
	p.vms["OpaqueRef:w"] = &xapi.Snapshot{UUID: "w", NameLabel: "web", PowerState: xapi.Running, ResidentOn: "OpaqueRef:h1"}
	resyncAt(t, st, nil, p, 0, "start")
	revert := record.Record{ID: record.ID("pool-1", "0000000c0005", 0), PoolUUID: "pool-1", VMUUID: "w", VMName: "web",
		Activity: record.Revert, Operation: "revert", Start: p.at(5), End: p.at(6), Result: record.Success, TaskID: "0000000c0005",
		Source: src, Unknown: []string{"task_uuid"}}
	if err := st.Update(context.Background(), func(tx *lineage.Tx) error { _, err := tx.PutRecord(&revert); return err }); err != nil {
		t.Fatal(err)
	}
	return p
}
