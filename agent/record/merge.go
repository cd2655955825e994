package record

import "slices"

// Merge completes stored with what other, a second sighting of the same
// operation (same id: the tracer and the log source, or an audit line),
// knows and stored does not: a field stored left empty or listed unknown
// takes other's value when other knows it. Nothing stored knows is
// overwritten, so the order in which two sources arrive does not matter
// for what either could reveal. It reports whether stored changed.
func Merge(stored *Record, other *Record) bool {
	changed := false
	// A result the first sighting only inferred (listed unknown: the tracer
	// saw the task vanish, not finish) gives way to one the second knows.
	// For a creating activity the VM fields follow the result: the source
	// VM on failure, the new VM on success, which other names or lists
	// unknown (the logs cannot name a clone's new VM).
	if stored.IsUnknown("result") && other.Result != "" && !other.IsUnknown("result") {
		if stored.Result != other.Result && stored.Activity.Creating() {
			// The parent follows too: a failure's is the source VM's own
			// parent, a success's the source.
			stored.VMUUID, stored.VMName, stored.ParentVMUUID = other.VMUUID, other.VMName, other.ParentVMUUID
			stored.setUnknown("vm_uuid", other.IsUnknown("vm_uuid"))
			stored.setUnknown("vm_name", other.IsUnknown("vm_name"))
			stored.setUnknown("parent_vm_uuid", other.IsUnknown("parent_vm_uuid"))
		}
		if stored.Result != other.Result {
			stored.Result, stored.Error = other.Result, other.Error
			stored.setUnknown("error", other.IsUnknown("error"))
		}
		stored.forget("result")
		changed = true
	}
	str := func(name string, dst *string, src string) {
		if src == "" || other.IsUnknown(name) {
			return
		}
		if *dst == "" || stored.IsUnknown(name) {
			if *dst != src || stored.IsUnknown(name) {
				*dst = src
				stored.forget(name)
				changed = true
			}
		}
	}
	str("host_uuid", &stored.HostUUID, other.HostUUID)
	str("host_name", &stored.HostName, other.HostName)
	// A creating activity's VM fields mean different VMs by result (see
	// above): a record whose result differs says nothing of this one's.
	if !stored.Activity.Creating() || stored.Result == other.Result {
		str("vm_uuid", &stored.VMUUID, other.VMUUID)
		str("vm_name", &stored.VMName, other.VMName)
		str("parent_vm_uuid", &stored.ParentVMUUID, other.ParentVMUUID)
	}
	str("operation", &stored.Operation, other.Operation)
	if stored.Result == other.Result {
		str("error", &stored.Error, other.Error)
	}
	str("task_uuid", &stored.TaskUUID, other.TaskUUID)
	str("task_id", &stored.TaskID, other.TaskID)
	str("destination_host_uuid", &stored.DestinationHostUUID, other.DestinationHostUUID)
	str("snapshot_uuid", &stored.SnapshotUUID, other.SnapshotUUID)
	if !other.End.IsZero() && !other.IsUnknown("end") && (stored.End.IsZero() || stored.IsUnknown("end")) {
		stored.End = other.End
		stored.forget("end")
		changed = true
	}
	if !other.Start.IsZero() && !other.IsUnknown("start") && stored.IsUnknown("start") {
		stored.Start = other.Start
		stored.forget("start")
		changed = true
	}
	if stored.End.Before(stored.Start) {
		stored.End = stored.Start
	}
	if other.Actor != nil && (stored.Actor == nil || *stored.Actor == (Actor{})) {
		a := *other.Actor
		stored.Actor = &a
		changed = true
	}
	return changed
}

// setUnknown lists name in r.Unknown, or removes it.
func (r *Record) setUnknown(name string, unknown bool) {
	if !unknown {
		r.forget(name)
	} else if !r.IsUnknown(name) {
		r.Unknown = append(slices.Clone(r.Unknown), name)
	}
}

// forget removes name from r.Unknown.
func (r *Record) forget(name string) {
	if i := slices.Index(r.Unknown, name); i >= 0 {
		r.Unknown = slices.Delete(slices.Clone(r.Unknown), i, i+1)
		if len(r.Unknown) == 0 {
			r.Unknown = nil
		}
	}
}

// Forget removes names from r.Unknown: what they name has been learnt.
func (r *Record) Forget(names ...string) {
	for _, n := range names {
		r.forget(n)
	}
}
