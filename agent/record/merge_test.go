package record

import (
	"slices"
	"testing"
	"time"
)

// TestMergeInferredResult: the tracer saw a clone's task vanish before it
// finished and found no new VM, so it stored a failure of the source VM with
// the result listed unknown; the logs then show the clone succeeded. The
// merge must take the logs' result and, the activity being creating, their
// view of the VM (the new VM, whose uuid the logs cannot name), so that the
// tracer can later complete it with the VM it saw appear.
func TestMergeInferredResult(t *testing.T) {
	at := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	guess := Record{ID: "i", Activity: Clone, Result: Failure, VMUUID: "src", VMName: "base", ParentVMUUID: "grandparent",
		Source: SourceXAPI, TaskUUID: "t", Start: at, End: at.Add(3 * time.Second), Unknown: []string{"end", "result", "error"}}
	logged := Record{ID: "i", Activity: Clone, Result: Success, VMName: "gen-35", ParentVMUUID: "src",
		Source: SourceLog, Start: at, End: at.Add(3 * time.Second), Unknown: []string{"vm_uuid", "task_uuid"}}
	m := guess
	if !Merge(&m, &logged) {
		t.Fatal("nothing merged")
	}
	if m.Result != Success || m.VMUUID != "" || m.VMName != "gen-35" || m.ParentVMUUID != "src" || m.TaskUUID != "t" ||
		!m.IsUnknown("vm_uuid") || m.IsUnknown("result") || m.IsUnknown("error") || m.IsUnknown("end") {
		t.Errorf("merged %+v", m)
	}
	// The other way round (the logs' record stored first, during a
	// failover) the known result stays, and so do its VM fields: the
	// guess's VM is the source, which a success would not name (found by
	// the chaos suite: a clone stored against its source VM, and the new
	// VM then inferred as a 'create').
	m2 := logged
	Merge(&m2, &guess)
	if m2.Result != Success || m2.VMName != "gen-35" || m2.VMUUID != "" || !m2.IsUnknown("vm_uuid") ||
		m2.ParentVMUUID != "src" || m2.TaskUUID != "t" {
		t.Errorf("a known result's VM was taken from an inferred one: %+v", m2)
	}
	// A failure both agree on keeps the tracer's VM and takes the error.
	fail := logged
	fail.Result, fail.Error, fail.VMUUID, fail.VMName, fail.Unknown = Failure, "SR_FULL", "src", "base", nil
	m3 := guess
	Merge(&m3, &fail)
	if m3.Result != Failure || m3.Error != "SR_FULL" || m3.VMUUID != "src" || slices.Contains(m3.Unknown, "result") {
		t.Errorf("failure merge: %+v", m3)
	}
}
