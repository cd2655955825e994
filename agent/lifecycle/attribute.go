package lifecycle

import (
	"slices"
	"sort"

	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/agent/xapi"
)

// attribute ties a task to its VM when no VM's current_operations was seen
// naming it: a synchronous call, or one that event.from's coalescing hid.
// In order: VM refs in the task's error parameters (VM_BAD_POWER_STATE names
// the VM); then the only VM whose change inside the task's window fits the
// operation (created for clone/copy/snapshot/…, deleted for destroy, power
// state or host changed as the operation would). Ambiguity leaves the VM
// unknown rather than guessed.
func (t *Tracer) attribute(b *batch, tk *taskInfo, op string, act record.Activity) {
	if act.Creating() {
		// The source may be known from its key while the new VM's own key
		// was never seen: look for the new VM all the same.
		if len(tk.NewVMs) > 0 || len(xapi.ParseResultRefs(tk.Result)) > 0 {
			return
		}
	} else if len(tk.VMs) > 0 {
		return
	}
	for _, p := range tk.ErrorInfo {
		if len(tk.VMs) > 0 {
			break
		}
		if vi := t.vmByRef(b, p); vi != nil && !vi.control {
			tk.VMs[p] = op
			tk.VMUUIDs[vi.uuid] = op
			return
		}
	}
	in := func(seq int64) bool { return seq > 0 && seq >= tk.FirstSeq && (tk.EndSeq == 0 || seq <= tk.EndSeq) }
	if t.OtherSources && tk.FirstSeq <= t.gapSeq {
		// The window spans a gap (a restart, a resync): changes made then
		// were seen, if at all, only as states, and the one change in sight
		// need not be this task's. With another source (the logs) to name
		// the VM, leave it unknown rather than guess; alone, the guess is
		// still better than a record of no VM beside an inferred one.
		return
	}
	// A VM another task is tied to by its key changed for that task: two
	// destroys whose windows overlap must not both take the VM the one saw
	// deleted when the other's VM vanished unseen (an outage, a kill).
	owned := func(ref string) bool {
		for _, o := range t.tasks {
			if o == tk || o.SubtaskOf == tk.Ref || tk.SubtaskOf == o.Ref {
				continue
			}
			if _, ok := o.VMs[ref]; ok {
				return true
			}
		}
		return false
	}
	var cands []*vmInfo
	consider := func(vi *vmInfo) {
		if vi == nil || vi.control || owned(vi.ref) {
			return
		}
		switch {
		case act.Creating():
			if !in(vi.addSeq) || t.claimed[vi.ref] {
				return
			}
			if (act == record.Snapshot || act == record.Checkpoint) != (vi.kind == "snapshot") {
				return
			}
			if vi.kind == "snapshot" && len(tk.VMs) > 0 {
				if _, fromSource := tk.VMs[vi.snapshotOf]; !fromSource {
					return
				}
			}
		case act == record.Destroy:
			if !in(vi.delSeq) || t.claimed["del:"+vi.ref] {
				return
			}
		default:
			if !in(vi.powerSeq) || vi.claimedSeq == vi.powerSeq || !fits(act, vi) {
				return
			}
		}
		cands = append(cands, vi)
	}
	window := t.touched(tk)
	for _, ref := range window {
		consider(t.vmByRef(b, ref))
	}
	if len(cands) == 0 && (tk.Status == xapi.TaskFailure || tk.Status == xapi.TaskCancelled) {
		// A refused or cancelled operation changes nothing but the VM's
		// allowed_operations, which still shows as a mod of that VM inside
		// the task's window: the VM touched then, if only one, is the one.
		for _, ref := range window {
			if vi := t.vms[ref]; vi != nil && !vi.control && in(vi.modSeq) && !(act.Creating() && in(vi.addSeq)) {
				cands = append(cands, vi)
			}
		}
		if len(cands) == 1 && len(tk.VMs) == 0 {
			vi := cands[0]
			tk.VMs[vi.ref] = op
			tk.VMUUIDs[vi.uuid] = op
		}
		return
	}
	if len(cands) != 1 {
		return
	}
	vi := cands[0]
	if t.rivalFor(tk, act, vi) {
		return
	}
	switch {
	case act.Creating():
		tk.NewVMs = append(tk.NewVMs, vi.ref)
		if vi.snapshotOf != "" {
			if src := t.vmByRef(b, vi.snapshotOf); src != nil {
				tk.VMs[vi.snapshotOf] = op
				tk.VMUUIDs[src.uuid] = op
			}
		}
	case act == record.Destroy:
		t.claimed["del:"+vi.ref] = true
		tk.VMs[vi.ref] = op
		tk.VMUUIDs[vi.uuid] = op
	default:
		tk.VMs[vi.ref] = op
		tk.VMUUIDs[vi.uuid] = op
		if tk.SrcHost == "" {
			tk.SrcHost = t.hostUUID(vi.prevResident)
		}
	}
}

// rivalFor says whether another task of the same activity, also without
// its VM, could have made vi's change as well (its window holds it): after a
// restart or a lost event stream several such tasks end in one batch, and
// the first to be finalized would otherwise take the only change it sees,
// which may be the other's (the change of its own VM was never seen).
func (t *Tracer) rivalFor(tk *taskInfo, act record.Activity, vi *vmInfo) bool {
	// The change surfaced at seq and happened after lo: a power change
	// any time since the VM was last seen before it (a VM touched again
	// after its task ended shows its change only then), so a task that
	// ended in between may have made it.
	seq := vi.powerSeq
	lo := vi.powerFrom + 1
	switch {
	case act.Creating():
		seq, lo = vi.addSeq, vi.addSeq
	case act == record.Destroy:
		seq, lo = vi.delSeq, vi.delSeq
	}
	lo = min(lo, seq)
	overlaps := func(first, end int64) bool { return first <= seq && (end == 0 || end >= lo) }
	for _, o := range t.tasks {
		if o == tk || o.SubtaskOf != "" || len(o.VMs) > 0 || len(o.NewVMs) > 0 {
			continue
		}
		if a, ok := record.ActivityOf(o.mainOp()); !ok || a != act {
			continue
		}
		if overlaps(o.FirstSeq, o.EndSeq) {
			return true
		}
	}
	// A task already recorded without its VM is a rival as well: its VM's
	// change may come in a later batch than its end, and taking it gives
	// one record the other's VM while the other's own change is inferred.
	for _, w := range t.unsure {
		if w.act == act && overlaps(w.first, w.end) {
			return true
		}
	}
	return false
}

// unsureWindow is the event window of a task recorded with its VM (or new
// VM) unknown: a change inside it may be that task's.
type unsureWindow struct {
	act        record.Activity
	first, end int64
}

// noteUnsure remembers tk's window once it is recorded without its VM. Old
// windows go once they end before the oldest remembered event (touched
// refuses such windows anyway).
func (t *Tracer) noteUnsure(tk *taskInfo, act record.Activity) {
	const most = 4096
	if len(t.unsure) >= most/2 && len(t.recent) > 0 {
		oldest := t.recent[0].seq
		t.unsure = slices.DeleteFunc(t.unsure, func(w unsureWindow) bool { return w.end != 0 && w.end < oldest })
	}
	if len(t.unsure) >= most {
		t.unsure = append(t.unsure[:0:0], t.unsure[len(t.unsure)-most/2:]...)
	}
	t.unsure = append(t.unsure, unsureWindow{act: act, first: tk.FirstSeq, end: tk.EndSeq})
}

// touched returns the refs of the VMs that changed inside the task's window
// of events, from the log of recent VM events (no scan of the whole pool).
func (t *Tracer) touched(tk *taskInfo) []string {
	lo := sort.Search(len(t.recent), func(i int) bool { return t.recent[i].seq >= tk.FirstSeq })
	hi := len(t.recent)
	if tk.EndSeq != 0 {
		hi = sort.Search(len(t.recent), func(i int) bool { return t.recent[i].seq > tk.EndSeq })
	}
	// A window that long (a task followed across a gap, many tasks ending
	// at a resync) holds too many changes to single one out: leave the VM
	// unknown rather than scan and guess.
	if hi-lo > maxWindow || (t.recentTrimmed && len(t.recent) > 0 && tk.FirstSeq < t.recent[0].seq) {
		return nil // or part of the window is no longer in the log
	}
	seen := map[string]bool{}
	var refs []string
	for i := lo; i < len(t.recent); i++ {
		r := t.recent[i]
		if tk.EndSeq != 0 && r.seq > tk.EndSeq {
			break
		}
		if !seen[r.ref] {
			seen[r.ref] = true
			refs = append(refs, r.ref)
		}
	}
	return refs
}

// maxWindow is the most VM events a task's window may hold for touched to
// single a VM out.
const maxWindow = 2048

// remember logs a VM event for touched; the log keeps the newest events
// only: a window reaching further back than maxWindow events is refused
// anyway.
func (t *Tracer) remember(ref string) {
	const keep = 2 * maxWindow
	t.recent = append(t.recent, recentEvent{seq: t.seq, ref: ref})
	if len(t.recent) > 2*keep {
		t.recent = append(t.recent[:0:0], t.recent[len(t.recent)-keep:]...)
		t.recentTrimmed = true
	}
}

type recentEvent struct {
	seq int64
	ref string
}

// fits reports whether a VM's last power change is what act does.
func fits(act record.Activity, vi *vmInfo) bool {
	running := vi.power == xapi.Running || vi.power == xapi.Paused
	switch act {
	case record.Start:
		return running && vi.prevPower == xapi.Halted
	case record.Resume:
		return running && vi.prevPower == xapi.Suspended
	case record.Unpause:
		return vi.power == xapi.Running && vi.prevPower == xapi.Paused
	case record.Shutdown:
		return vi.power == xapi.Halted && vi.prevPower != xapi.Halted
	case record.Suspend:
		return vi.power == xapi.Suspended && vi.prevPower == xapi.Running
	case record.Pause:
		return vi.power == xapi.Paused && vi.prevPower == xapi.Running
	case record.Migrate:
		return vi.power == xapi.Running && vi.prevResident != "" && vi.resident != vi.prevResident
	}
	return false
}
