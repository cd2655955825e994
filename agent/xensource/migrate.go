package xensource

import (
	"github.com/vmlineage/vmlineage/agent/record"
)

// appendRecords appends a closed task's records to out: one, or for an
// import one per "Created VM" line (ids with index 0..n-1, as the XAPI
// ground truth numbers the VMs of an import).
func (d *Deriver) appendRecords(out []record.Record, t *task) []record.Record {
	r := d.build(t)
	if t.activity != record.Import || r.Result != record.Success || t.created < 2 {
		return append(out, r)
	}
	for i := 0; i < t.created; i++ {
		c := r
		c.ID = record.ID(d.cfg.PoolUUID, t.id, i)
		c.Unknown = append([]string(nil), r.Unknown...)
		out = append(out, c)
	}
	return out
}

// build turns a closed task into its record. Everything the lines did not
// show is named in Unknown, never guessed.
func (d *Deriver) build(t *task) record.Record {
	r := record.Record{
		ID:        record.ID(d.cfg.PoolUUID, t.id, 0),
		PoolUUID:  d.cfg.PoolUUID,
		Activity:  t.activity,
		Operation: t.op,
		Start:     t.first,
		End:       t.last,
		Result:    t.result,
		TaskID:    t.id,
		Source:    record.SourceLog,
	}
	if r.Result == "" {
		// xapi never logs success (reference fact 8): no failure block by
		// the time the task closed means it succeeded.
		r.Result = record.Success
	}
	unknown := make([]string, 0, 4)
	unk := func(f string) { unknown = append(unknown, f) }
	if t.result == "" && t.xenopsdOnlyFailure() {
		// Only xenopsd's side was read and it failed: the task failed, but
		// the XenAPI error xapi made of it is not in these lines.
		r.Result = record.Failure
		unk("error")
	} else if r.Result != record.Success {
		r.Error = FormatError(t.errCode, t.errParams)
	}

	r.HostName = d.executingHost(t)
	if r.HostName == "" {
		unk("host_name")
	}
	if u := d.cfg.Hosts[r.HostName]; u != "" {
		r.HostUUID = u
	} else {
		unk("host_uuid")
	}

	switch {
	case t.activity == record.Revert:
		// The audit line names the snapshot; the reverted VM appears only as
		// an OpaqueRef ("Reverting OpaqueRef:… to OpaqueRef:…").
		r.SnapshotUUID = t.vmUUID
		if r.SnapshotUUID == "" {
			unk("snapshot_uuid")
		}
		unk("vm_uuid")
		unk("vm_name")
		unk("parent_vm_uuid")
	case t.activity.Creating() && r.Result == record.Success:
		// vm_uuid is the new VM: clone/copy/snapshot lines name the source
		// and the new name, rarely the new uuid (UEFI clones only).
		r.VMUUID, r.VMName = t.newVM, t.newName
		if r.VMUUID == "" {
			unk("vm_uuid")
		}
		if !t.hasNewName {
			unk("vm_name")
		}
		switch t.activity {
		case record.Create, record.Import:
			// No parent VM by definition.
		default:
			r.ParentVMUUID = t.vmUUID
			if r.ParentVMUUID == "" {
				unk("parent_vm_uuid")
			}
		}
		if r.VMUUID != "" && r.ParentVMUUID != "" {
			d.parents[r.VMUUID] = r.ParentVMUUID
		}
	default:
		// Any other activity, and a creating one that failed: the VM acted on.
		r.VMUUID, r.VMName = t.vmUUID, t.vmName
		if r.VMUUID == "" {
			unk("vm_uuid")
		}
		if r.VMName == "" {
			unk("vm_name")
		}
		if p, ok := d.parents[r.VMUUID]; ok && r.VMUUID != "" {
			r.ParentVMUUID = p
		} else {
			unk("parent_vm_uuid")
		}
	}

	if t.activity == record.Migrate {
		r.DestinationHostUUID = t.destUUID
		if r.DestinationHostUUID == "" {
			if dest := d.destinationHost(t, r.HostName); dest != "" {
				r.DestinationHostUUID = d.cfg.Hosts[dest]
			}
		}
		if r.DestinationHostUUID == "" {
			unk("destination_host_uuid")
		}
	}
	if !t.ended {
		// No end marker: End is the task's last line, a lower bound.
		unk("end")
	}
	// The logs show the task's short id only; its full uuid and exact
	// creation/finish times live in XAPI's database.
	unk("task_uuid")
	r.Unknown = unknown
	return r
}

// executingHost picks the host a record is attributed to, following the
// XAPI ground truth: the coordinator for clone/copy/snapshot (their task's
// resident_on is arbitrary), else the host that ran the
// operation. Evidence, strongest first: the member that logged "task …
// forwarded", a host whose xapi called xenopsd for the task, a host whose
// xenopsd ran it (for migrate: not the destination), the host whose event
// thread saw the expected power state, the coordinator (audit line).
func (d *Deriver) executingHost(t *task) string {
	switch t.activity {
	case record.Clone, record.Copy, record.Snapshot:
		if t.coordinator != "" {
			return t.coordinator
		}
		if d.cfg.Master != "" {
			return d.cfg.Master
		}
	}
	pick := func(f func(h *hostSeen) bool) string {
		for i := range t.hosts {
			if f(&t.hosts[i]) {
				return t.hosts[i].name
			}
		}
		return ""
	}
	if t.activity == record.Migrate {
		if h := pick(func(h *hostSeen) bool { return h.migrateFrom }); h != "" {
			return h
		}
	}
	for _, f := range []func(h *hostSeen) bool{
		func(h *hostSeen) bool { return h.forwarded },
		func(h *hostSeen) bool { return h.xapiCall },
		func(h *hostSeen) bool { return h.xenopsd && t.activity != record.Migrate },
		func(h *hostSeen) bool { return h.state && t.activity != record.Migrate },
		func(h *hostSeen) bool { return h.audit },
		func(h *hostSeen) bool { return h.xapiTask },
		func(h *hostSeen) bool { return h.failed },
	} {
		if h := pick(f); h != "" {
			return h
		}
	}
	if t.coordinator != "" {
		return t.coordinator
	}
	if t.activity != record.Migrate && len(t.hosts) > 0 {
		return t.hosts[0].name
	}
	return ""
}

// destinationHost pairs the two sides of an intra-pool migration: the
// destination's xenopsd runs the receive under the source task's dbg (same
// "Async.VM.pool_migrate R:<id>", reference §5), so it is the other host
// whose xenopsd logged this task, or whose event thread saw the VM running.
func (d *Deriver) destinationHost(t *task, source string) string {
	for _, f := range []func(h *hostSeen) bool{
		func(h *hostSeen) bool { return h.migrateTo },
		func(h *hostSeen) bool { return h.xenopsd && !h.migrateFrom },
		func(h *hostSeen) bool { return h.state },
	} {
		for i := range t.hosts {
			h := &t.hosts[i]
			if h.name != source && f(h) {
				return h.name
			}
		}
	}
	return ""
}

// xenopsdOnlyFailure: a xenopsd failure marker and no xapi line at all for
// the task (xapi's own verdict, logged when it gives up, was not read).
func (t *task) xenopsdOnlyFailure() bool {
	failed := false
	for i := range t.hosts {
		if t.hosts[i].xapiTask || t.hosts[i].audit || t.hosts[i].forwarded {
			return false
		}
		failed = failed || t.hosts[i].xenopsdFailed
	}
	return failed
}
