package lifecycle

import (
	"time"

	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/agent/xapi"
)

// finalize turns a completed (or vanished) task into its records. Sub-tasks
// fold into their parent and produce none.
func (t *Tracer) finalize(b *batch, tk *taskInfo) []pending {
	if tk == nil || tk.Recorded {
		return nil
	}
	if !tk.Done && !tk.Gone {
		return nil
	}
	tk.Recorded = true
	if tk.SubtaskOf != "" {
		return nil
	}
	if t.nestedInRevert(b, tk) {
		// The VM's halt is the revert's doing; the revert's record may be
		// out already (a restart between), so it cannot explain it now.
		for uuid := range tk.VMUUIDs {
			t.dropChange("power/" + uuid)
		}
		return nil
	}
	op := tk.mainOp()
	act, ok := record.ActivityOf(op)
	if !ok || op == "" {
		return nil
	}
	t.attribute(b, tk, op, act)
	class, _, _ := record.SplitTaskName(tk.Name)
	if len(tk.VMs) == 0 && class != "VM" {
		return nil // not a VM operation (VDI.clone, host.*, task.create …)
	}
	base := record.Record{
		PoolUUID: t.pool.uuid, Activity: act, TaskUUID: tk.UUID, TaskID: shortID(tk.Ref),
		Source: record.SourceXAPI, Start: tk.Created, End: tk.Finished,
	}
	if act == record.Other {
		base.Operation = op
	} else {
		base.Operation = op
	}
	if base.Start.IsZero() {
		base.Start = tk.FirstSeen
		base.Unknown = append(base.Unknown, "start")
	}
	if base.End.IsZero() {
		base.End = tk.GoneAt
		if base.End.IsZero() {
			base.End = t.now()
		}
		base.Unknown = append(base.Unknown, "end")
	}
	if base.End.Before(base.Start) {
		base.End = base.Start
	}
	if tk.UUID == "" {
		base.Unknown = append(base.Unknown, "task_uuid")
	}
	base.Error = errorText(tk.ErrorInfo)
	var out []pending
	if act.Creating() {
		out = t.creating(b, tk, base)
	} else {
		out = t.acting(b, tk, base, op)
	}
	for i := range out {
		r := &out[i].rec
		// A creation whose result is unknown may have made a VM it did
		// not see, though its record names the source.
		if (r.VMUUID == "" && r.IsUnknown("vm_uuid")) || (act.Creating() && r.IsUnknown("result") && out[i].vmRef == "") {
			t.noteUnsure(tk, act)
			break
		}
	}
	if !tk.Done {
		// The task vanished before its completion was seen: the result is
		// read from the VM's state and the error text is not known.
		for i := range out {
			r := &out[i].rec
			for _, f := range []string{"result", "error"} {
				if !r.IsUnknown(f) {
					r.Unknown = append(r.Unknown, f)
				}
			}
		}
	}
	return out
}

// nestedInRevert folds the hard_shutdown that VM.revert runs as a sub-task
// when its task object was never seen (its subtask_of unknown).
func (t *Tracer) nestedInRevert(b *batch, tk *taskInfo) bool {
	if tk.Seen {
		return false
	}
	if tk.InRevert != "" {
		return true
	}
	for ref, op := range tk.VMs {
		if op != "hard_shutdown" {
			continue
		}
		if t.revertHeld(tk, ref) {
			return true
		}
		vi := t.vmByRef(b, ref)
		if vi == nil {
			continue
		}
		for k, o := range vi.ops {
			if k != tk.Ref && (o == "reverting" || o == "revert") {
				return true
			}
		}
		if ops, ok := b.before[ref]; ok {
			for k, o := range ops {
				if k != tk.Ref && (o == "reverting" || o == "revert") {
					return true
				}
			}
		}
	}
	return false
}

// revertHeld reports whether a revert task held VM ref while tk did: the
// revert's key may be gone from the VM before the tracer looks again (a
// restart between: the VM as loaded from the store carries no keys), but
// the revert task itself is still known.
func (t *Tracer) revertHeld(tk *taskInfo, ref string) bool {
	end := func(x *taskInfo) time.Time {
		if !x.Finished.IsZero() {
			return x.Finished
		}
		return x.GoneAt
	}
	for _, o := range t.tasks {
		if o == tk {
			continue
		}
		if op := o.VMs[ref]; op != "reverting" && op != "revert" {
			continue
		}
		// Both held the VM at some moment: o began before tk ended and
		// ended (if it did) after tk was first seen.
		if e := end(tk); !e.IsZero() && !o.FirstSeen.IsZero() && o.FirstSeen.After(e) {
			continue
		}
		if e := end(o); !e.IsZero() && !tk.FirstSeen.IsZero() && e.Before(tk.FirstSeen) {
			continue
		}
		return true
	}
	return false
}

// creating handles clone, copy, snapshot, checkpoint, import and create: the
// new VMs come from the task result or from the VMs created carrying the
// task's key; the parent is the VM that held the key without being new.
func (t *Tracer) creating(b *batch, tk *taskInfo, base record.Record) []pending {
	// The task's result names the new VMs when it was seen; the VMs that
	// appeared carrying the key stand in only when it was not: a source VM
	// first seen in a catch-up also appears carrying the key.
	newRefs := xapi.ParseResultRefs(tk.Result)
	isNew := map[string]bool{}
	if len(newRefs) == 0 {
		newRefs = append(newRefs, tk.NewVMs...)
		if len(newRefs) == 1 && (base.Activity == record.Clone || base.Activity == record.Copy) && !tk.heldByOther(newRefs[0]) {
			// xapi drops a clone's key from the new VM before the source's:
			// a VM first seen carrying it while no other VM ever did is the
			// source, made while nobody watched (a snapshot's new VM is
			// told apart by its kind).
			newRefs = nil
		}
		if len(newRefs) > 1 && makesOneVM(base.Activity) {
			// Several VMs first seen carrying the key of an operation that
			// makes one: the source was made while nobody watched and is
			// first seen beside its copy. Which is which, nothing the
			// tracer saw tells: neither is named (the logs name them).
			for _, r := range newRefs {
				isNew[r] = true
			}
			newRefs = nil
		}
	}
	for _, r := range newRefs {
		isNew[r] = true
	}
	var src *vmInfo
	for ref := range tk.VMs {
		if !isNew[ref] {
			if vi := t.vmByRef(b, ref); vi != nil {
				src = vi
			}
		}
	}
	var out []pending
	for i, ref := range newRefs {
		nv := t.vmByRef(b, ref)
		if nv == nil || nv.control {
			continue
		}
		r := base
		r.Unknown = append([]string(nil), base.Unknown...)
		r.ID = record.ID(t.pool.uuid, r.TaskID, i)
		r.VMUUID, r.VMName = nv.uuid, nv.name
		parent := ""
		switch {
		case base.Activity == record.Import || base.Activity == record.Create:
		case src != nil:
			parent = src.uuid
		case nv.snapshotOf != "":
			if sv := t.vmByRef(b, nv.snapshotOf); sv != nil {
				parent = sv.uuid
			}
		}
		if parent == "" && base.Activity != record.Import && base.Activity != record.Create {
			r.Unknown = append(r.Unknown, "parent_vm_uuid")
		}
		r.ParentVMUUID = parent
		r.HostUUID, r.HostName = t.hostFor(tk, src, nil)
		r.Result, _ = t.outcome(tk, base.Activity, nv, true)
		if parent != "" {
			t.setEdge(nv.uuid, parent, string(base.Activity))
		} else if base.Activity != record.Import && base.Activity != record.Create && t.edge(nv.uuid).parent == "" {
			// Made from a VM not known: its records list the parent unknown
			// rather than claim it has none (parentOf).
			t.setEdge(nv.uuid, "", string(base.Activity))
		}
		t.claimed[ref] = true
		out = append(out, pending{rec: r, vmRef: ref, parent: parent})
	}
	if len(out) > 0 {
		return out
	}
	r := base
	r.ID = record.ID(t.pool.uuid, r.TaskID, 0)
	if tk.Done && tk.Status == xapi.TaskSuccess {
		// It succeeded, so it made a VM, one the tracer has not seen (gone
		// again, or made while nobody watched): the record is about that
		// VM, unknown here (another source may name it), never about the
		// source, which would read as a confident success of the wrong VM.
		r.Unknown = append(r.Unknown, "vm_uuid", "vm_name")
		switch {
		case src != nil:
			r.ParentVMUUID = src.uuid
		case base.Activity != record.Import && base.Activity != record.Create:
			r.Unknown = append(r.Unknown, "parent_vm_uuid")
		}
		r.HostUUID, r.HostName = t.hostFor(tk, src, nil)
		r.Result = record.Success
		if refs := xapi.ParseResultRefs(tk.Result); len(refs) == 1 {
			t.expectNew(refs[0], r)
		}
		return []pending{{rec: r}}
	}
	// Nothing was created (a failure, or the result was never seen): the
	// record is about the source VM.
	if src == nil {
		// Not knowing the VM, the record knows neither its name nor parent.
		r.Unknown = append(r.Unknown, "vm_uuid", "vm_name", "parent_vm_uuid")
	} else {
		r.VMUUID, r.VMName = src.uuid, src.name
		t.parentOf(&r, src.uuid)
	}
	r.HostUUID, r.HostName = t.hostFor(tk, src, nil)
	r.Result, _ = t.outcome(tk, base.Activity, src, false)
	return []pending{{rec: r}}
}

// heldByOther says whether a VM other than ref carried tk's key.
func (tk *taskInfo) heldByOther(ref string) bool {
	for r := range tk.VMs {
		if r != ref {
			return true
		}
	}
	return false
}

// makesOneVM says whether a creating activity makes exactly one VM.
func makesOneVM(a record.Activity) bool {
	switch a {
	case record.Clone, record.Copy, record.Snapshot, record.Checkpoint:
		return true
	}
	return false
}

// acting handles every activity that does not create a VM.
func (t *Tracer) acting(b *batch, tk *taskInfo, base record.Record, op string) []pending {
	var vm *vmInfo
	var vmRef string
	var snap *vmInfo
	for ref, o := range tk.VMs {
		vi := t.vmByRef(b, ref)
		if vi == nil {
			continue
		}
		switch {
		case base.Activity == record.Revert && o == "revert":
			snap = vi
		default:
			vm, vmRef = vi, ref
		}
	}
	if vm == nil && base.Activity == record.Revert && snap != nil && snap.snapshotOf != "" {
		vm, vmRef = t.vmByRef(b, snap.snapshotOf), snap.snapshotOf
	}
	if vm == nil {
		for _, ref := range xapi.ParseResultRefs(tk.Result) { // migrate_send returns the VM
			if vi := t.vmByRef(b, ref); vi != nil {
				vm, vmRef = vi, ref
			}
		}
	}
	r := base
	r.ID = record.ID(t.pool.uuid, r.TaskID, 0)
	if vm == nil {
		// Not knowing the VM, the record knows neither its name nor parent.
		r.Unknown = append(r.Unknown, "vm_uuid", "vm_name", "parent_vm_uuid")
	} else {
		r.VMUUID, r.VMName = vm.uuid, vm.name
		t.parentOf(&r, vm.uuid)
	}
	if snap != nil {
		r.SnapshotUUID = snap.uuid
	}
	var after *vmInfo
	if vm != nil && t.vms[vmRef] != nil {
		after = t.vms[vmRef]
		after.claimedSeq = after.powerSeq
	}
	if vm != nil && base.Activity == record.Destroy {
		t.claimed["del:"+vmRef] = true // no other destroy may take this deletion
	}
	r.HostUUID, r.HostName = t.hostFor(tk, vm, after)
	if r.HostUUID == t.masterUUID() && tk.SrcHost == "" && residentOp(base.Activity) && (after == nil || t.hostUUID(after.resident) == "") {
		// The master is only the fallback: a VM that runs had a host of its
		// own, which nothing the tracer saw names.
		r.Unknown = append(r.Unknown, "host_uuid")
	} else if b.resync && tk.SrcHost == "" && after != nil {
		// Read from the pool's state at the resync, which may already be
		// later than this operation's end.
		r.Unknown = append(r.Unknown, "host_uuid")
	}
	r.Result, _ = t.outcome(tk, base.Activity, after, false)
	if base.Activity == record.Migrate && after != nil {
		if dst := t.hostUUID(after.resident); dst != "" && (dst != r.HostUUID || r.Result == record.Success) {
			r.DestinationHostUUID = dst
		}
	}
	return []pending{{rec: r, vmRef: vmRef}}
}

// residentOp says whether an activity runs on the host the VM is resident
// on (so the master is a guess when no host is known).
func residentOp(a record.Activity) bool {
	switch a {
	case record.Start, record.Resume, record.Shutdown, record.Reboot, record.Suspend, record.Pause, record.Unpause, record.Migrate:
		return true
	}
	return false
}

// hostFor applies the host rule of the README: clone, copy, snapshot and
// revert name the pool master (XAPI runs them there or on a random host that
// sees the storage, so task.resident_on means nothing); every other activity
// names the host the VM was resident on when it began, else the host it is
// resident on after (start, resume), else the master (halted VMs).
func (t *Tracer) hostFor(tk *taskInfo, vm, after *vmInfo) (uuid, name string) {
	switch tk.mainOp() {
	case "clone", "copy", "snapshot", "snapshot_with_quiesce", "revert", "reverting":
		return t.named(t.masterUUID())
	}
	uuid = tk.SrcHost
	if uuid == "" && after != nil {
		uuid = t.hostUUID(after.resident)
	}
	if uuid == "" && vm != nil && after == nil {
		uuid = t.hostUUID(vm.resident)
	}
	if uuid == "" {
		uuid = t.masterUUID()
	}
	return t.named(uuid)
}

func (t *Tracer) named(uuid string) (string, string) {
	for _, h := range t.hosts {
		if h.uuid == uuid {
			return uuid, h.name
		}
	}
	return uuid, ""
}

// parentOf sets r's parent VM from the family tree; a VM made (by clone,
// copy, snapshot …) from a VM the tracer never learnt has its parent listed
// unknown, not empty.
func (t *Tracer) parentOf(r *record.Record, uuid string) {
	e := t.edge(uuid)
	r.ParentVMUUID = e.parent
	// A VM whose appearance no creation explained yet may well have a
	// parent: the record says unknown, not none (the seal fills it from the
	// tree once the creation is matched).
	_, unexplained := t.changes["appear/"+uuid]
	if e.parent == "" && (e.via != "" || unexplained) && !r.IsUnknown("parent_vm_uuid") {
		r.Unknown = append(r.Unknown, "parent_vm_uuid")
	}
}
