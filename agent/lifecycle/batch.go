package lifecycle

import (
	"strings"
	"time"

	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/xapi"
)

// batch collects what one event batch (or one resync) changed before it is
// turned into records and store writes.
type batch struct {
	t        *Tracer
	resync   bool
	dirty    map[string]bool              // VM refs whose facts changed
	deleted  map[string]*vmInfo           // VMs deleted in this batch, last known facts
	finish   map[string]bool              // task refs to finalise
	vanished map[string]bool              // task keys that left every VM's current_operations
	before   map[string]map[string]string // VMs' current_operations before this batch touched them
	hosts    bool
	baseline bool      // first sync of this pool: store it, record nothing
	from     time.Time // resync: pool time of the last contact before it
}

// since is the earliest time a change this batch notes can have happened.
func (b *batch) since() time.Time {
	if b.resync {
		return b.from
	}
	// The pool was last seen at the previous commit: a change in this batch
	// happened after it. That is long ago in the catch-up that follows a
	// restart, whose changes were made while the agent was away.
	if c := b.t.contact; !c.IsZero() && c.Before(b.t.now()) {
		return c
	}
	return b.t.now()
}

func newBatch(t *Tracer) *batch {
	return &batch{t: t, dirty: map[string]bool{}, deleted: map[string]*vmInfo{}, finish: map[string]bool{},
		vanished: map[string]bool{}, before: map[string]map[string]string{}}
}

func (b *batch) apply(ev *xapi.Event) {
	t := b.t
	t.seq++
	switch strings.ToLower(ev.Class) {
	case "vm":
		if ev.Operation == "del" || ev.Snapshot == nil {
			if vi := t.vms[ev.Ref]; vi != nil {
				b.keepBefore(vi)
				for k := range vi.ops {
					b.vanish(k)
				}
				vi.delSeq = t.seq
				t.remember(ev.Ref)
				t.appearGone(vi.uuid)
				if len(vi.ops) == 0 && !vi.control && !b.baseline {
					t.note(change{Kind: "vanish", VMUUID: vi.uuid, Ref: ev.Ref, Name: vi.name, At: t.now(),
						FromPower: vi.power, FromHost: t.hostUUID(vi.resident)})
				}
				b.deleted[ev.Ref] = vi
				t.forget(ev.Ref, vi)
				delete(t.vms, ev.Ref)
				if t.byUUID[vi.uuid] == ev.Ref {
					delete(t.byUUID, vi.uuid)
				}
				delete(b.dirty, ev.Ref)
			}
			return
		}
		b.applyVM(ev.Ref, ev.Snapshot, ev.Operation == "add")
	case "task":
		if ev.Operation == "del" || ev.Snapshot == nil {
			delete(t.live, ev.Ref)
			if tk := t.tasks[ev.Ref]; tk != nil {
				t.touchTask(ev.Ref)
				tk.Gone = true
				tk.GoneAt = t.now()
				tk.EndSeq = t.seq
				b.finish[ev.Ref] = true
			}
			return
		}
		b.applyTask(ev.Ref, ev.Snapshot)
	case "host":
		if ev.Operation == "del" || ev.Snapshot == nil {
			delete(t.hosts, ev.Ref)
			return
		}
		s := ev.Snapshot
		name := s.NameLabel
		if name == "" {
			name = s.Hostname
		}
		t.hosts[ev.Ref] = hostInfo{uuid: s.UUID, name: name, address: s.Address}
		b.hosts = true
	case "pool":
		if ev.Snapshot != nil {
			t.pool = poolInfo{ref: ev.Ref, uuid: ev.Snapshot.UUID, name: ev.Snapshot.NameLabel, master: ev.Snapshot.Master}
			b.hosts = true
		}
	case "vif":
		if ev.Operation == "del" || ev.Snapshot == nil {
			if v, ok := t.vifs[ev.Ref]; ok {
				delete(t.vifs, ev.Ref)
				b.dirty[v.vm] = true
			}
			return
		}
		t.vifs[ev.Ref] = vifInfo{vm: ev.Snapshot.VM, mac: strings.ToLower(ev.Snapshot.MAC)}
		b.dirty[ev.Snapshot.VM] = true
	case "vm_guest_metrics":
		if ev.Operation == "del" || ev.Snapshot == nil {
			delete(t.gms, ev.Ref)
			if vm := t.gmVM[ev.Ref]; vm != "" {
				b.dirty[vm] = true
			}
			delete(t.gmVM, ev.Ref)
			return
		}
		t.gms[ev.Ref] = ipsOf(ev.Snapshot.Networks)
		if vm := t.gmVM[ev.Ref]; vm != "" {
			b.dirty[vm] = true
		}
	}
}

// forget keeps a deleted VM's last facts for a while: the task that
// destroyed it usually completes in a later batch.
func (t *Tracer) forget(ref string, vi *vmInfo) {
	const keep = 4096
	t.gone[ref] = vi
	t.goneFIFO = append(t.goneFIFO, ref)
	if len(t.goneFIFO) > keep {
		delete(t.gone, t.goneFIFO[0])
		t.goneFIFO = t.goneFIFO[1:]
	}
}

// vanish notes that task key k left a VM, at the pool clock of that moment.
func (b *batch) vanish(k string) {
	b.vanished[k] = true
	if tk := b.t.tasks[k]; tk != nil && tk.GoneAt.IsZero() {
		b.t.touchTask(k)
		tk.GoneAt = b.t.now()
		tk.EndSeq = b.t.seq
	}
}

func (b *batch) keepBefore(vi *vmInfo) {
	if _, ok := b.before[vi.ref]; !ok {
		b.before[vi.ref] = vi.ops
	}
}

func (b *batch) applyVM(ref string, s *xapi.Snapshot, added bool) {
	t := b.t
	// A known VM's record is rewritten in place (nothing keeps a pointer to
	// a live VM's record across batches); prev is its copy from before.
	vi := t.vms[ref]
	var prev *vmInfo
	var old vmInfo
	if vi != nil {
		old = *vi
		prev = &old
	} else {
		vi = new(vmInfo)
	}
	*vi = vmInfo{ref: ref, uuid: s.UUID, name: s.NameLabel, power: s.PowerState, resident: s.ResidentOn,
		kind: kindOf(s), snapshotOf: s.SnapshotOf, ops: s.CurrentOperations, guestMetrics: s.GuestMetrics,
		vifs: s.VIFs, control: s.IsControlDomain, template: s.IsATemplate}
	if xapi.IsNull(vi.resident) {
		vi.resident = ""
	}
	if xapi.IsNull(vi.snapshotOf) {
		vi.snapshotOf = ""
	}
	if s.OtherConfig != nil {
		vi.importTask = s.OtherConfig["import_task"]
	}
	// A VM is new when xapi says "add" — or, in a resync, when the store has
	// never seen it (every VM of a snapshot is an "add").
	isNew := (added && !b.resync) || (b.resync && prev == nil && !t.edge(vi.uuid).known)
	vi.modSeq = t.seq
	t.remember(ref)
	switch {
	case prev == nil:
		if isNew {
			vi.addSeq = t.seq // a candidate for a creating task that hid its key
		}
	case prev.power != vi.power || prev.resident != vi.resident:
		vi.addSeq, vi.claimedSeq = prev.addSeq, prev.claimedSeq
		vi.powerSeq, vi.prevPower, vi.prevResident = t.seq, prev.power, prev.resident
		vi.powerFrom = prev.modSeq
	default:
		vi.addSeq, vi.powerSeq, vi.claimedSeq, vi.prevPower, vi.prevResident = prev.addSeq, prev.powerSeq, prev.claimedSeq, prev.prevPower, prev.prevResident
		vi.powerFrom = prev.powerFrom
	}
	b.noteVM(prev, vi, isNew)
	if prev != nil {
		b.keepBefore(prev)
		for k := range prev.ops {
			if _, still := vi.ops[k]; !still {
				b.vanish(k)
			}
		}
	}
	t.vms[ref] = vi
	if vi.control {
		return // dom0 and driver domains are counted, never traced
	}
	t.byUUID[vi.uuid] = ref
	if !xapi.IsNull(vi.guestMetrics) {
		t.gmVM[vi.guestMetrics] = ref
	}
	for k, op := range vi.ops {
		tk := t.task(k)
		if _, seen := tk.VMs[ref]; !seen {
			t.touchTask(k)
			tk.VMs[ref] = op
			tk.VMUUIDs[vi.uuid] = op
			src := vi
			if prev != nil {
				src = prev
			}
			if tk.SrcHost == "" {
				tk.SrcHost = t.hostUUID(src.resident)
			}
			if tk.FirstSeen.IsZero() {
				tk.FirstSeen = t.now()
			}
			// A VM that appears already carrying the task's key was made by
			// that task (xapi creates clones with current_operations set).
			// In a resync every VM is an "add": only one the store has never
			// seen counts as new.
			// A snapshot's new VM is a snapshot and a clone's or copy's
			// never is: a VM of the other kind carrying the key is the
			// source, even when first seen now (made while nobody watched).
			if isNew && snapshotOp(op) == (vi.kind == lineage.KindSnapshot) {
				tk.NewVMs = appendUnique(tk.NewVMs, ref)
			}
		}
		if op == "hard_shutdown" && tk.InRevert == "" {
			// VM.revert's sub-task, if its object is never seen: noted now,
			// while both keys are in sight (nestedInRevert).
			for k2, op2 := range vi.ops {
				if k2 != k && (op2 == "reverting" || op2 == "revert") {
					tk.InRevert = k2
					t.touchTask(k)
					break
				}
			}
		}
	}
	b.dirty[ref] = true
}

// snapshotOp says whether a vm_operation makes a snapshot VM.
func snapshotOp(op string) bool {
	switch op {
	case "snapshot", "checkpoint", "snapshot_with_quiesce":
		return true
	}
	return false
}

func (b *batch) applyTask(ref string, s *xapi.Snapshot) {
	t := b.t
	tk := t.task(ref)
	t.live[ref] = true
	// Only a change of what is persisted makes the task dirty: most task
	// events are progress updates.
	if !tk.Seen || tk.UUID != s.UUID || tk.Name != s.NameLabel || tk.Status != s.Status || tk.Result != s.Result ||
		len(tk.ErrorInfo) != len(s.ErrorInfo) || (xapi.TimeSet(s.Finished) && !tk.Finished.Equal(s.Finished)) ||
		(!xapi.IsNull(s.SubtaskOf) && tk.SubtaskOf != s.SubtaskOf) || (!xapi.IsNull(s.ResidentOn) && tk.Resident != t.hostUUID(s.ResidentOn)) {
		t.touchTask(ref)
	}
	tk.Seen = true
	tk.UUID, tk.Name, tk.Status = s.UUID, s.NameLabel, s.Status
	if xapi.TimeSet(s.Created) {
		tk.Created = s.Created.UTC()
	}
	if xapi.TimeSet(s.Finished) {
		tk.Finished = s.Finished.UTC()
	}
	tk.Result, tk.ErrorInfo = s.Result, s.ErrorInfo
	if !xapi.IsNull(s.SubtaskOf) {
		tk.SubtaskOf = s.SubtaskOf
	}
	if !xapi.IsNull(s.ResidentOn) {
		tk.Resident = t.hostUUID(s.ResidentOn)
	}
	t.observeData(s.Created, s.Finished)
	if tk.FirstSeen.IsZero() {
		tk.FirstSeen = t.now()
	}
	if s.Status != xapi.TaskPending && s.Status != xapi.TaskCancelling && s.Status != "" {
		tk.Done = true
		tk.EndSeq = t.seq
		b.finish[ref] = true
	}
}

// task returns the tracked task for ref, creating it.
func (t *Tracer) task(ref string) *taskInfo {
	tk := t.tasks[ref]
	if tk == nil {
		tk = &taskInfo{Ref: ref, VMs: map[string]string{}, VMUUIDs: map[string]string{}, FirstSeq: t.seq}
		t.tasks[ref] = tk
		t.touchTask(ref)
	}
	return tk
}

// ipsOf extracts a guest's addresses from VM_guest_metrics.networks, whose
// keys are "0/ip", "0/ipv4/0", "0/ipv6/1", … (xapi_guest_agent.ml).
func ipsOf(networks map[string]string) []string {
	var ips []string
	for k, v := range networks {
		if v == "" {
			continue
		}
		parts := strings.Split(k, "/")
		if len(parts) >= 2 && (parts[1] == "ip" || parts[1] == "ipv4" || parts[1] == "ipv6") {
			ips = appendUnique(ips, v)
		}
	}
	return ips
}

func appendUnique(s []string, v string) []string {
	for _, x := range s {
		if x == v {
			return s
		}
	}
	return append(s, v)
}

// effective returns the time a VM change takes effect: the end of the record
// that explains it, else the pool clock.
func (b *batch) effective(at map[string]time.Time, uuid string) time.Time {
	if x, ok := at[uuid]; ok {
		return x
	}
	return b.t.now()
}
