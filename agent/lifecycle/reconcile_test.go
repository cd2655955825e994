package lifecycle

import (
	"context"
	"testing"

	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/agent/xapi"
)

// TestDroppedDelsFoundByCount: xapi keeps the newest 256 to 512 deletions
// per class, so a tracer that falls behind misses the del of a task whose
// completion it never saw, and of a VM. valid_ref_counts gives it away;
// Reconcile with the pool's refs finishes the task (its record written,
// result read from the VM) and marks the VM destroyed.
func TestDroppedDelsFoundByCount(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	tr := New(st, nil)
	p := newFakePool()
	p.vms["OpaqueRef:a"] = &xapi.Snapshot{UUID: "a", NameLabel: "a", PowerState: "Halted"}
	p.vms["OpaqueRef:b"] = &xapi.Snapshot{UUID: "b", NameLabel: "b", PowerState: "Halted"}
	tr.SetServerTime(p.at(0))
	if err := tr.Resync(ctx, p.snapshot(), "", "start"); err != nil {
		t.Fatal(err)
	}
	// A synchronous start: the task and the VM's key are seen, then the key
	// goes and the task's del is dropped.
	tk := taskRef(1)
	p.tasks[tk] = &xapi.Snapshot{UUID: "task-1", NameLabel: "VM.start", Status: "pending", Created: p.at(10)}
	p.ev("task", "add", tk, p.tasks[tk])
	p.vms["OpaqueRef:a"].CurrentOperations = map[string]string{tk: "start"}
	p.ev("vm", "mod", "OpaqueRef:a", p.vms["OpaqueRef:a"])
	if err := feed(ctx, tr, p.flush()); err != nil {
		t.Fatal(err)
	}
	p.vms["OpaqueRef:a"].CurrentOperations = nil
	p.vms["OpaqueRef:a"].PowerState, p.vms["OpaqueRef:a"].ResidentOn = "Running", "OpaqueRef:h2"
	p.ev("vm", "mod", "OpaqueRef:a", p.vms["OpaqueRef:a"])
	delete(p.tasks, tk) // its del is never delivered
	delete(p.vms, "OpaqueRef:b")
	b := p.flush()
	b.ValidRefCounts = map[string]int{"vm": 1, "task": 0}
	// The key left the VM, so the task is finalised from that already; what
	// the count shows is the task (and the VM) the tracer still holds alive.
	if err := tr.Events(ctx, b); err != nil {
		t.Fatal(err)
	}
	stale := tr.Stale()
	if len(stale) != 2 || stale[0] != "VM" || stale[1] != "task" {
		t.Fatalf("Stale() = %v, want [VM task]", stale)
	}
	if err := tr.Reconcile(ctx, "VM", []string{"OpaqueRef:a"}); err != nil {
		t.Fatal(err)
	}
	if err := tr.Reconcile(ctx, "task", nil); err != nil {
		t.Fatal(err)
	}
	if err := tr.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if s := tr.Stale(); len(s) != 0 {
		t.Fatalf("still stale after reconciling: %v", s)
	}
	if tr.Stats().Reconciled != 2 {
		t.Errorf("reconciled %d objects, want 2", tr.Stats().Reconciled)
	}
	recs, _ := st.Records(ctx, lineage.Filter{VMUUID: "a"})
	if len(recs) != 1 || recs[0].Activity != record.Start || recs[0].Result != record.Success || recs[0].TaskUUID != "task-1" {
		t.Fatalf("want the start of a from task-1, got %+v", recs)
	}
	if _, ok := tr.tasks[tk]; ok {
		t.Errorf("the task whose del was dropped is still held")
	}
	v, err := st.VM(ctx, "b")
	if err != nil || !v.IsDestroyed() {
		t.Fatalf("b should be marked destroyed: %+v %v", v, err)
	}
}

// TestPendingTasksSurviveRestart: the tasks in flight are kept one key each
// and a new tracer on the same store finishes them.
func TestPendingTasksSurviveRestart(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	tr := New(st, nil)
	p := newFakePool()
	p.vms["OpaqueRef:a"] = &xapi.Snapshot{UUID: "a", NameLabel: "a", PowerState: "Halted"}
	tr.SetServerTime(p.at(0))
	if err := tr.Resync(ctx, p.snapshot(), "", "start"); err != nil {
		t.Fatal(err)
	}
	tk := taskRef(2)
	p.tasks[tk] = &xapi.Snapshot{UUID: "task-2", NameLabel: "Async.VM.start", Status: "pending", Created: p.at(10)}
	p.ev("task", "add", tk, p.tasks[tk])
	p.vms["OpaqueRef:a"].CurrentOperations = map[string]string{tk: "start"}
	p.ev("vm", "mod", "OpaqueRef:a", p.vms["OpaqueRef:a"])
	if err := feed(ctx, tr, p.flush()); err != nil {
		t.Fatal(err)
	}
	n := 0
	if err := st.EachAgentState(ctx, keyTaskPrefix, func(k, v string) error { n++; return nil }); err != nil || n != 1 {
		t.Fatalf("want one persisted task, got %d (%v)", n, err)
	}
	// The start finishes while no tracer runs; the key is gone from the VM
	// when the next one catches up.
	p.vms["OpaqueRef:a"].CurrentOperations = nil
	p.vms["OpaqueRef:a"].PowerState, p.vms["OpaqueRef:a"].ResidentOn = "Running", "OpaqueRef:h1"
	p.ev("vm", "mod", "OpaqueRef:a", p.vms["OpaqueRef:a"])
	p.tasks[tk].Status, p.tasks[tk].Finished = "success", p.at(14)
	p.ev("task", "mod", tk, p.tasks[tk])
	tr2 := New(st, nil)
	if err := feed(ctx, tr2, p.flush()); err != nil {
		t.Fatal(err)
	}
	recs, _ := st.Records(ctx, lineage.Filter{VMUUID: "a"})
	if len(recs) != 1 || recs[0].Activity != record.Start || recs[0].HostUUID != "host-1" || recs[0].TaskUUID != "task-2" {
		t.Fatalf("want the start of a from task-2 on host-1, got %+v", recs)
	}
	n = 0
	st.EachAgentState(ctx, keyTaskPrefix, func(k, v string) error { n++; return nil })
	if n != 0 {
		t.Errorf("%d recorded tasks still persisted", n)
	}
}
