package lifecycle

import (
	"context"
	"slices"
	"sort"
	"time"

	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/agent/xapi"
)

// A change is something that happened to a VM with no task in sight: it
// appeared, vanished, changed power state, host or kind. It waits a grace
// period for a task to explain it (a synchronous call's task is often only
// seen as it vanishes, a batch or two later); if none does, it becomes a
// record of its own, source "resync": inferred by comparing states. A VM
// shut down from inside the guest, a task that began and ended while the
// agent was dead, an operation behind an EVENTS_LOST: all end up here, so
// nothing that changed the pool goes unrecorded.
type change struct {
	Kind       string `json:"kind"` // appear, vanish, power, template, implied (noteImplied)
	VMUUID     string `json:"vm"`
	Ref        string `json:"ref,omitempty"`
	Name       string `json:"name,omitempty"`
	FromPower  string `json:"from_power,omitempty"`
	FromHost   string `json:"from_host,omitempty"` // host uuid
	ToPower    string `json:"to_power,omitempty"`
	ToHost     string `json:"to_host,omitempty"`
	SnapshotOf string `json:"snapshot_of,omitempty"` // uuid
	Imported   bool   `json:"imported,omitempty"`
	// Vanished: an appear whose VM is gone again. Its creation is still
	// matched to the record that made it, never inferred.
	Vanished bool      `json:"vanished,omitempty"`
	Snapshot bool      `json:"snapshot,omitempty"`
	At       time.Time `json:"at"`    // pool clock when seen
	Noted    time.Time `json:"noted"` // this machine's clock when seen
	// Since is the earliest pool time the change can have happened: the
	// last time the tracer saw the pool (before a resync, or before the
	// batch that showed the change).
	Since time.Time `json:"since,omitzero"`
}

// grace is how long (pool time) a change waits for a task to explain it.
const grace = 30 * time.Second

func (t *Tracer) note(c change) {
	if c.VMUUID == "" {
		return
	}
	c.Noted = time.Now()
	key := c.Kind + "/" + c.VMUUID
	if old, ok := t.changes[key]; ok && c.Kind == "power" {
		c.FromPower, c.FromHost, c.At = old.FromPower, old.FromHost, old.At // keep where it started
		c.Noted = old.Noted
		if c.FromPower == c.ToPower && c.FromHost == c.ToHost {
			t.dropChange(key) // back where it was
			return
		}
	}
	if c.Kind == "vanish" {
		t.appearGone(c.VMUUID)
	}
	t.changes[key] = c
	t.notedNow = append(t.notedNow, key)
	t.touchChange(key)
}

// appearGone marks the pending appearance of a VM that is deleted again:
// the record of the operation that made it (the logs', which cannot name
// it) still needs it, but a VM gone needs no inferred creation.
func (t *Tracer) appearGone(uuid string) {
	key := "appear/" + uuid
	if c, ok := t.changes[key]; ok && !c.Vanished {
		c.Vanished = true
		t.changes[key] = c
		t.touchChange(key)
	}
}

// dropChange forgets the change under key, if any.
func (t *Tracer) dropChange(key string) {
	if _, ok := t.changes[key]; ok {
		delete(t.changes, key)
		t.touchChange(key)
	}
}

// noteVM records the unexplained parts of a VM update (applyVM).
func (b *batch) noteVM(prev, vi *vmInfo, isNew bool) {
	t := b.t
	if vi.control || b.baseline {
		return
	}
	busy := len(vi.ops) > 0 || (prev != nil && len(prev.ops) > 0)
	switch {
	case prev == nil:
		if isNew && !t.edge(vi.uuid).known && !busy {
			c := change{Kind: "appear", VMUUID: vi.uuid, Ref: vi.ref, Name: vi.name, At: t.now(), Since: b.since(), Imported: vi.importTask != "",
				Snapshot: vi.kind == lineage.KindSnapshot, ToPower: vi.power, ToHost: t.hostUUID(vi.resident)}
			if sv := t.vmByRef(b, vi.snapshotOf); sv != nil {
				c.SnapshotOf = sv.uuid
			}
			t.note(c)
		}
	case busy:
		if b.resync || t.catchUp {
			b.noteImplied(prev, vi)
		}
	default:
		if prev.power != vi.power || prev.resident != vi.resident {
			t.note(change{Kind: "power", VMUUID: vi.uuid, Ref: vi.ref, Name: vi.name, At: t.now(), Since: b.since(),
				FromPower: prev.power, FromHost: t.hostUUID(prev.resident), ToPower: vi.power, ToHost: t.hostUUID(vi.resident)})
		}
		if !prev.template && vi.template && vi.kind == lineage.KindTemplate {
			t.note(change{Kind: "template", VMUUID: vi.uuid, Ref: vi.ref, Name: vi.name, At: t.now(), Since: b.since()})
		}
	}
}

// startsFrom is the power state an activity requires of its VM (xapi
// refuses it in any other, VM_BAD_POWER_STATE), for those that require one
// other than running.
func startsFrom(a record.Activity) string {
	switch a {
	case record.Unpause:
		return xapi.Paused
	case record.Resume:
		return xapi.Suspended
	case record.Start:
		return xapi.Halted
	}
	return ""
}

// leftIn says whether an operation other than the one a power state is
// named after can leave its VM in it: a revert to a checkpoint leaves the
// VM suspended, to a snapshot halted.
func leftIn(a record.Activity, power string) bool {
	return a == record.Revert && (power == xapi.Suspended || power == xapi.Halted)
}

// cameAfter says whether r's operation began from the state a pending power
// change of its VM ended in (an unpause after an unseen pause): it came
// after that change and does not explain it.
func (t *Tracer) cameAfter(r *record.Record) bool {
	c, ok := t.changes["power/"+r.VMUUID]
	from := startsFrom(r.Activity)
	return ok && from != "" && c.ToPower == from && c.FromPower != from
}

// noteImplied notes the change an operation in flight implies, seen across
// a gap (a restart's catch-up, a resync): a VM last seen running that is
// being unpaused was paused meanwhile, by an operation that began and ended
// unseen (the agent killed, or its events coalesced away). That operation
// is an "implied" change: unlike a power change, no record of the VM
// explains it except its own kind (the unpause's record is the VM's, yet
// no pause), and like one it waits for its operation's record from the
// store or another source before it is inferred.
//
// Only for an operation the tracer did not know before the gap: the VM's
// state from before may already show that operation's own effect (a start
// whose VM was stored running while its key was still on it).
func (b *batch) noteImplied(prev, vi *vmInfo) {
	if prev == nil || prev.power == "" {
		return
	}
	t := b.t
	for key, op := range vi.ops {
		a, _ := record.ActivityOf(op)
		from := startsFrom(a)
		if from == "" || from == prev.power {
			continue
		}
		if _, had := prev.ops[key]; had || t.beforeGap[key] || t.taskRecorded(vi.uuid, key, b.since()) {
			continue
		}
		t.note(change{Kind: "implied", VMUUID: vi.uuid, Ref: vi.ref, Name: vi.name, At: t.now(), Since: b.since(),
			FromPower: prev.power, FromHost: t.hostUUID(prev.resident), ToPower: from})
		return
	}
}

// taskRecorded says whether the store holds a record of the task (by its
// short id) about the VM since the given time.
func (t *Tracer) taskRecorded(vmUUID, taskRef string, since time.Time) bool {
	recs, err := t.store.RecordsOfVMSince(context.Background(), vmUUID, since.Add(-sourceSlack))
	if err != nil {
		t.log.Warn("lifecycle: reading the store for a task's record failed", "err", err)
		return true // unsure: infer nothing
	}
	id := shortID(taskRef)
	for _, r := range recs {
		if r.TaskID == id {
			return true
		}
	}
	return false
}

// settle drops the changes that this batch's records explain, and turns
// those no task explained in time (or at a resync) into records.
func (t *Tracer) settle(b *batch, out []pending) []pending {
	// A change is seen when its batch is: the batch's events (a catch-up
	// after a restart, the tasks that ran meanwhile) may move the pool's
	// clock well past the time it had when the change was applied.
	fresh := make(map[string]bool, len(t.notedNow))
	for _, k := range t.notedNow {
		if c, ok := t.changes[k]; ok && t.now().After(c.At) {
			c.At = t.now()
			t.changes[k] = c
		}
		fresh[k] = true
	}
	t.notedNow = t.notedNow[:0]
	if !t.OtherSources {
		t.completeByOnlyChange(out)
	}
	for _, p := range out {
		if p.rec.VMUUID == "" {
			continue
		}
		for _, k := range []string{"appear", "vanish", "power", "template"} {
			// Only the creation that made a VM explains its appearance: a
			// start or destroy of a VM made while nobody watched left the
			// record of its making without its VM (and the tree without
			// its edge).
			if k == "appear" && (!p.rec.Activity.Creating() || p.rec.Result != record.Success) {
				continue
			}
			if k == "power" && t.cameAfter(&p.rec) {
				continue
			}
			t.dropChange(k + "/" + p.rec.VMUUID)
		}
	}
	more := t.completeLogged(fresh)
	now, wall := t.now(), time.Now()
	var due []string
	for k, c := range t.changes {
		// The pool clock only moves when tasks are seen; a quiet pool still
		// ages the change by this machine's clock. At a resync no task will
		// come to explain a change, but another source (the log source) may
		// still store its record: with one, a change waits by this machine's
		// clock, the one that source's lines arrive by (the pool clock jumps
		// when the tracer catches up after an outage).
		switch {
		case t.OtherSources:
			if wall.Sub(c.Noted) < grace || t.otherPending(c) {
				continue
			}
		case b.resync:
		case now.Sub(c.At) < grace && wall.Sub(c.Noted) < grace:
			continue
		}
		due = append(due, k)
	}
	sort.Strings(due)
	// This batch's records without their VM are candidates too (they are
	// stored with it, after settle).
	t.batchUnknown = t.batchUnknown[:0]
	for i := range out {
		r := &out[i].rec
		if (r.VMUUID == "" && r.IsUnknown("vm_uuid")) || (r.Activity.Creating() && r.Result != record.Success && r.IsUnknown("result")) {
			t.batchUnknown = append(t.batchUnknown, *r)
		}
	}
	for _, k := range due {
		c := t.changes[k]
		if vi := t.vms[c.Ref]; vi != nil && len(vi.ops) > 0 && c.Kind != "vanish" {
			continue // an operation in flight will explain it
		}
		if t.inFlightFor(c) {
			// A task that can explain it is still running, tied to no VM
			// or to this one: a restart's catch-up shows the VM as it is
			// now (its current_operations already empty, a clone's new VM
			// before the task's result names it), and the task ends later.
			continue
		}
		t.dropChange(k)
		if c.Kind == "appear" && c.Vanished {
			if p, ok := t.loggedCreation(c); ok {
				more = append(more, p)
			} else {
				t.explainedByUnattributed(c, record.Create)
			}
			continue
		}
		if p, ok := t.inferred(c); ok {
			more = append(more, p)
		} else if c.Kind == "appear" && c.Ref != "" {
			// A record it stands for may have given it its family-tree
			// edge (explainedByUnattributed): write the VM again (nothing
			// is written when nothing changed).
			b.dirty[c.Ref] = true
		}
	}
	return more
}

// completeByOnlyChange gives a record of this batch that ended with its VM
// unknown (a task seen across a gap: a restart's resync found its VM
// already changed, its current_operations empty) the one pending change
// that fits it: the only record of that activity without a VM, the only
// change implying that activity in its time window. Without another source
// to name the VM, the guess beats a record of no VM beside an inferred one;
// with one, the logs name it (attribute leaves it unknown then).
func (t *Tracer) completeByOnlyChange(out []pending) {
	for i := range out {
		r := &out[i].rec
		if r.VMUUID != "" || !r.IsUnknown("vm_uuid") || r.Activity.Creating() {
			continue
		}
		if r.Result != record.Success && !r.IsUnknown("result") {
			continue // a failure seen as such changed nothing
		}
		rivals := 0
		for j := range out {
			if out[j].rec.VMUUID == "" && out[j].rec.Activity == r.Activity {
				rivals++
			}
		}
		if rivals != 1 {
			continue
		}
		end := r.End
		if end.IsZero() {
			end = t.now()
		}
		from, to := r.Start.Add(-sourceSlack), end.Add(sourceSlack)
		var only *change
		n := 0
		for k := range t.changes {
			c := t.changes[k]
			if c.Kind == "appear" || changeActivity(c) != r.Activity {
				continue
			}
			since := c.Since
			if since.IsZero() || since.After(c.At) {
				since = c.At
			}
			if c.At.Before(from) || since.After(to) {
				continue
			}
			n++
			only = &c
		}
		if n != 1 {
			continue
		}
		c := only
		r.VMUUID, r.VMName = c.VMUUID, c.Name
		drop := []string{"vm_uuid", "vm_name"}
		if parent := t.edge(c.VMUUID).parent; parent != "" {
			r.ParentVMUUID = parent
			drop = append(drop, "parent_vm_uuid")
		}
		if r.IsUnknown("host_uuid") || r.HostUUID == "" {
			host := c.FromHost
			if host == "" {
				host = c.ToHost
			}
			if host != "" {
				r.HostUUID, r.HostName = t.named(host)
				drop = append(drop, "host_uuid", "host_name")
			}
		}
		if r.IsUnknown("result") {
			// The change it made is in sight: it succeeded.
			r.Result, r.Error = record.Success, ""
			drop = append(drop, "result", "error")
		}
		r.Unknown = slices.DeleteFunc(slices.Clone(r.Unknown), func(f string) bool { return slices.Contains(drop, f) })
		if len(r.Unknown) == 0 {
			r.Unknown = nil
		}
		out[i].vmRef = c.Ref
		t.log.Debug("lifecycle: a task that ended with its VM unknown is given the only change that fits it", "task", r.TaskUUID, "vm", c.VMUUID, "activity", r.Activity)
	}
}

// inFlightFor reports whether a running task could be the operation behind
// c: one of the activity c implies (any creating one for a VM that
// appeared), tied to no VM or to c's.
func (t *Tracer) inFlightFor(c change) bool {
	want := changeActivity(c)
	if want == "" {
		return false
	}
	for _, tk := range t.tasks {
		if tk.Done || tk.Gone || tk.Recorded || tk.SubtaskOf != "" {
			continue
		}
		a, ok := record.ActivityOf(tk.mainOp())
		if !ok {
			continue
		}
		if c.Kind == "appear" {
			if a.Creating() {
				return true
			}
			continue
		}
		if a != want {
			continue
		}
		if _, mine := tk.VMs[c.Ref]; mine || len(tk.VMs) == 0 {
			return true
		}
	}
	return false
}

// changeActivity is the activity a change implies (inferred's choice).
func changeActivity(c change) record.Activity {
	switch c.Kind {
	case "appear":
		return record.Create
	case "vanish":
		return record.Destroy
	case "template":
		return record.ConvertToTemplate
	case "power", "implied":
		a, _ := transition(c.FromPower, c.FromHost, c.ToPower, c.ToHost)
		return a
	}
	return ""
}

// otherPending says the other source may still store the operation behind
// c: it has not settled past the time c was seen (see OtherSettled).
func (t *Tracer) otherPending(c change) bool {
	if t.OtherSettled == nil {
		return false
	}
	if !t.OtherSettled().Before(c.At.Add(sourceSlack)) {
		return false
	}
	since := c.Noted
	if t.started.After(since) {
		since = t.started
	}
	if wait := t.OtherWait; wait > 0 && time.Since(since) >= wait {
		t.log.Warn("lifecycle: the log source has not settled past a change; inferring its record", "vm", c.VMUUID, "change", c.Kind,
			"at", c.At, "settled", t.OtherSettled())
		return false
	}
	return true
}

func (t *Tracer) inferred(c change) (pending, bool) {
	var a record.Activity
	parent, host, dest := t.edge(c.VMUUID).parent, "", ""
	switch c.Kind {
	case "appear":
		a, parent, host = record.Create, "", c.ToHost
		switch {
		case c.Snapshot:
			a, parent = record.Snapshot, c.SnapshotOf
		case c.Imported:
			a = record.Import
		}
	case "vanish":
		a, host = record.Destroy, c.FromHost
	case "template":
		a = record.ConvertToTemplate
	case "power", "implied":
		a, dest = transition(c.FromPower, c.FromHost, c.ToPower, c.ToHost)
		host = c.FromHost
		if host == "" {
			host = c.ToHost
		}
	}
	if a == "" {
		return pending{}, false
	}
	// The store may hold the operation already: another source's record,
	// or the tracer's own from before a restart whose commit the change's
	// window spans.
	if p, explained := t.explainedByStore(c, a); explained {
		return p, p.rec.ID != ""
	}
	if t.explainedByUnattributed(c, a) {
		return pending{}, false
	}
	r := record.Record{ID: record.ResyncID(t.pool.uuid, c.VMUUID, a, c.At), PoolUUID: t.pool.uuid, VMUUID: c.VMUUID, VMName: c.Name,
		ParentVMUUID: parent, Activity: a, Operation: "", Start: c.At, End: c.At, Result: record.Success, Source: record.SourceResync,
		DestinationHostUUID: dest, Unknown: []string{"start", "end", "task_uuid"}}
	if a.Creating() && parent == "" && a != record.Create && a != record.Import {
		r.Unknown = append(r.Unknown, "parent_vm_uuid")
	}
	if host == "" {
		host = t.masterUUID()
	}
	r.HostUUID, r.HostName = t.named(host)
	if parent != "" && a.Creating() {
		t.setEdge(c.VMUUID, parent, string(a))
	}
	return pending{rec: r, vmRef: c.Ref, parent: func() string {
		if a.Creating() {
			return parent
		}
		return ""
	}()}, true
}

// transition names the activity that explains a change of power state or
// host seen only by comparing two states.
func transition(from, fromHost, to, toHost string) (record.Activity, string) {
	switch {
	case from == to && from == xapi.Running && fromHost != "" && toHost != "" && fromHost != toHost:
		return record.Migrate, toHost
	case from == to:
		return "", ""
	case to == xapi.Running && from == xapi.Suspended:
		return record.Resume, ""
	case to == xapi.Running && from == xapi.Paused:
		return record.Unpause, ""
	case to == xapi.Running || (to == xapi.Paused && from == xapi.Halted):
		return record.Start, ""
	case to == xapi.Halted:
		return record.Shutdown, ""
	case to == xapi.Suspended:
		return record.Suspend, ""
	case to == xapi.Paused:
		return record.Pause, ""
	}
	return "", ""
}

// explainedByUnattributed reports whether a record of activity a whose VM
// is unknown, in the window the change can have happened in, stands for it:
// after a gap (a restart, EVENTS_LOST) the tracer records a task it saw end
// without being sure of its VM (another task of the same activity could
// have made the change), and the change it leaves unexplained is that very
// operation. Inferring a record for it too would count the operation
// twice. The record is claimed (one change each) but not completed: which
// of several such tasks made which change is what was unsure. A creating
// record whose result is unknown too (its completion never seen and no VM
// it made seen: an inferred failure) explains a VM that appeared as well:
// that VM is the one it did not see.
func (t *Tracer) explainedByUnattributed(c change, a record.Activity) bool {
	from := c.Since
	if from.IsZero() || from.After(c.At) {
		from = c.At
	}
	from, to := from.Add(-sourceSlack), c.At.Add(sourceSlack)
	// A snapshot that appeared names its source: a snapshot or checkpoint
	// recorded about that source with its result unknown (nothing it made
	// was seen) stands for it as one of unknown VM does.
	source := ""
	if c.Kind == "appear" && c.Snapshot {
		source = c.SnapshotOf
	}
	fits := func(r *record.Record) bool {
		if t.claimedLog[r.ID] || r.Source == record.SourceResync {
			return false
		}
		if r.VMUUID != "" && (source == "" || r.VMUUID != source || r.Result == record.Success) {
			return false
		}
		if r.Result != record.Success {
			if c.Kind != "appear" || !r.Activity.Creating() || !r.IsUnknown("result") {
				return false
			}
			// Not sure it made a VM at all: it must have made one of this kind.
			if snap := r.Activity == record.Snapshot || r.Activity == record.Checkpoint; snap != c.Snapshot {
				return false
			}
		}
		if r.Activity != a && (c.Kind != "appear" || !r.Activity.Creating()) {
			return false
		}
		end := r.End
		if end.IsZero() {
			end = r.Start
		}
		if end.Before(from) || r.Start.After(to) {
			return false
		}
		// A creation names its new VM (the logs and the tracer both know
		// the name it was given).
		return c.Kind != "appear" || r.VMUUID != "" || r.VMName == "" || r.VMName == c.Name
	}
	claim := func(r *record.Record) bool {
		t.claimedLog[r.ID] = true
		if c.Kind == "appear" && r.VMName != "" && r.VMName == c.Name && r.ParentVMUUID != "" && r.Activity.Creating() {
			// The name the operation gave is the VM's: its family-tree edge
			// is as sure as the record's parent.
			t.setEdge(c.VMUUID, r.ParentVMUUID, string(r.Activity))
		} else if c.Kind == "appear" && c.Snapshot && c.SnapshotOf != "" && t.edge(c.VMUUID).parent == "" {
			// A snapshot names its source whichever task made it: the edge
			// the inferred record would have given.
			via := string(a)
			if r.Activity == record.Snapshot || r.Activity == record.Checkpoint {
				via = string(r.Activity)
			}
			t.setEdge(c.VMUUID, c.SnapshotOf, via)
		}
		t.log.Debug("lifecycle: a VM change stands for a record whose VM is unknown", "vm", c.VMUUID, "change", c.Kind, "record", r.ID, "activity", r.Activity)
		return true
	}
	for i := range t.batchUnknown {
		if r := &t.batchUnknown[i]; fits(r) {
			return claim(r)
		}
	}
	recs, err := t.store.UnattributedOf(context.Background(), a, from, to)
	if err != nil {
		t.log.Warn("lifecycle: reading the store for a record of unknown VM failed", "err", err)
		return false
	}
	for i := range recs {
		if r := &recs[i]; fits(r) {
			return claim(r)
		}
	}
	if source != "" {
		recs, err := t.store.RecordsOfVMSince(context.Background(), source, from)
		if err != nil {
			t.log.Warn("lifecycle: reading the store for a record of unknown result failed", "err", err)
			return false
		}
		for i := range recs {
			if r := &recs[i]; fits(r) {
				return claim(r)
			}
		}
	}
	return false
}

// sourceSlack covers the difference between XAPI's second-precision times
// and the logs' milliseconds.
const sourceSlack = 5 * time.Second

// explainedByStore reports whether another source (the log source) has
// stored the operation behind a change the tracer could only infer: then no
// resync record is made. A VM that appeared is matched to a creating record
// whose new VM the logs could not name (same name, since the change could
// have happened): the returned pending completes that record with the VM's
// uuid (the store merges it while the record is unsealed) and sets the
// family-tree edge it gives.
func (t *Tracer) explainedByStore(c change, a record.Activity) (pending, bool) {
	ctx := context.Background()
	since := c.Since
	if since.IsZero() || since.After(c.At) {
		since = c.At
	}
	since = since.Add(-sourceSlack)
	if c.Kind == "appear" {
		return t.loggedCreation(c)
	}
	if c.Kind == "power" {
		if p, ok := t.revertOf(ctx, c); ok {
			return p, true
		}
	}
	if c.Kind == "vanish" {
		// A VM is destroyed once: any destroy of it explains its vanishing,
		// however long before the tracer noticed (a restart's first resync
		// may come after the tracer's own record of the destroy).
		since = time.Time{}
	}
	recs, err := t.store.RecordsOfVMSince(ctx, c.VMUUID, since)
	if err != nil {
		t.log.Warn("lifecycle: reading the store for another source's record failed", "err", err)
		return pending{}, false
	}
	for _, r := range recs {
		if r.Source == record.SourceResync {
			continue
		}
		switch c.Kind {
		case "vanish":
			if r.Activity == record.Destroy {
				return pending{}, true
			}
		case "template":
			if r.Activity == record.ConvertToTemplate {
				return pending{}, true
			}
		case "implied":
			// Only its own kind, or a revert that left the VM in the state
			// its next operation starts from: that operation (the unpause
			// that implied a pause) is stored by every source.
			if r.Activity == a || leftIn(r.Activity, c.ToPower) {
				return pending{}, true
			}
		case "power":
			if !t.OtherSources {
				// The tracer's own record explains only a change of its
				// kind: a start stored just before a restart says nothing
				// of the shutdown the restart's resync finds. A revert
				// explains the suspended or halted state it leaves.
				if r.Activity == a || leftIn(r.Activity, c.ToPower) {
					return pending{}, true
				}
				continue
			}
			switch r.Activity {
			case record.Start, record.Shutdown, record.Reboot, record.Suspend, record.Resume, record.Pause,
				record.Unpause, record.Migrate, record.Revert:
				return pending{}, true
			}
		}
	}
	return pending{}, false
}

// loggedCreation matches a VM that appeared to the creating record whose
// new VM another source could not name (same name, made since the change
// could have happened); the returned pending completes that record with
// the VM's uuid (the store merges it while the record is unsealed) and sets
// the family-tree edge it gives.
func (t *Tracer) loggedCreation(c change) (pending, bool) {
	since := c.Since
	if since.IsZero() || since.After(c.At) {
		since = c.At
	}
	recs, err := t.store.UnattributedCreations(context.Background(), c.Name, since.Add(-sourceSlack))
	if err != nil {
		t.log.Warn("lifecycle: reading the store for another source's record failed", "err", err)
		return pending{}, false
	}
	for _, r := range recs {
		if t.claimedLog[r.ID] || !creationFits(c, &r) {
			continue
		}
		t.claimedLog[r.ID] = true
		done := r
		done.VMUUID = c.VMUUID
		done.Unknown = slices.DeleteFunc(slices.Clone(r.Unknown), func(f string) bool { return f == "vm_uuid" })
		if r.ParentVMUUID != "" {
			t.setEdge(c.VMUUID, r.ParentVMUUID, string(r.Activity))
		}
		t.log.Debug("lifecycle: a VM seen at a resync is the new VM of a logged operation", "vm", c.VMUUID, "record", r.ID, "activity", r.Activity)
		return pending{rec: done, vmRef: c.Ref, parent: r.ParentVMUUID}, true
	}
	return pending{}, false
}

// completeLogged gives each VM that appeared with no task in sight the
// logged creation that made it as soon as the store holds that record, not
// when the change is due: a change waits its grace (30 s) and any creating
// task in flight, while the chain seals a record chain.settle after it was
// stored (10 s in the chaos suite), and a sealed record is never completed.
// Changes noted by this batch are looked up at once, the others at most
// once a second (the log source stores records all the time).
func (t *Tracer) completeLogged(fresh map[string]bool) []pending {
	var out []pending
	for k := range fresh {
		if c, ok := t.changes[k]; ok && c.Kind == "appear" {
			if p, ok := t.expected(c); ok {
				t.dropChange(k)
				out = append(out, p)
			}
		}
	}
	if !t.OtherSources {
		return out
	}
	all := time.Since(t.loggedChecked) >= time.Second
	if all {
		t.loggedChecked = time.Now()
	}
	var keys []string
	for k, c := range t.changes {
		if c.Kind == "appear" && (all || fresh[k]) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		c := t.changes[k]
		if vi := t.vms[c.Ref]; vi != nil && len(vi.ops) > 0 {
			continue // an operation in flight will explain it
		}
		if p, ok := t.loggedCreation(c); ok {
			t.dropChange(k)
			out = append(out, p)
		}
	}
	return out
}

// expectNew remembers the record of a creation seen succeeding whose new
// VM, named by ref in the task's result, the tracer had not seen: a resync
// reads the pool's VMs before its tasks, so a VM made in between shows
// only in the next batch. The oldest go first (in memory only: after a
// restart the logs' name stands in).
func (t *Tracer) expectNew(ref string, r record.Record) {
	const most = 1024
	if t.awaitNew == nil {
		t.awaitNew = map[string]record.Record{}
	}
	if _, ok := t.awaitNew[ref]; !ok {
		t.awaitFIFO = append(t.awaitFIFO, ref)
	}
	t.awaitNew[ref] = r
	if len(t.awaitFIFO) > most {
		delete(t.awaitNew, t.awaitFIFO[0])
		t.awaitFIFO = t.awaitFIFO[1:]
	}
}

// expected completes the record expectNew kept for the VM that appeared
// under the ref its task's result named.
func (t *Tracer) expected(c change) (pending, bool) {
	r, ok := t.awaitNew[c.Ref]
	if !ok || c.Ref == "" {
		return pending{}, false
	}
	delete(t.awaitNew, c.Ref)
	done := r
	done.VMUUID, done.VMName = c.VMUUID, c.Name
	drop := []string{"vm_uuid", "vm_name"}
	if done.ParentVMUUID == "" && c.SnapshotOf != "" {
		done.ParentVMUUID = c.SnapshotOf
		drop = append(drop, "parent_vm_uuid")
	}
	done.Unknown = slices.DeleteFunc(slices.Clone(r.Unknown), func(f string) bool { return slices.Contains(drop, f) })
	if len(done.Unknown) == 0 {
		done.Unknown = nil
	}
	if done.ParentVMUUID != "" {
		t.setEdge(c.VMUUID, done.ParentVMUUID, string(done.Activity))
	}
	t.log.Debug("lifecycle: a VM that appeared is the one its creation's result named", "vm", c.VMUUID, "record", r.ID)
	return pending{rec: done, vmRef: c.Ref, parent: done.ParentVMUUID}, true
}

// revertOf finds a logged revert that explains a VM's change of power
// state: the logs name the snapshot reverted to, not the VM, so the VM is
// the snapshot's source (its family-tree parent). The returned pending
// completes the record with the VM.
func (t *Tracer) revertOf(ctx context.Context, c change) (pending, bool) {
	// The snapshot ties a revert to its VM firmly enough to look back
	// past the change's Since (the tracer's last contact may postdate the
	// revert when only a coalesced view of it was seen); a record once
	// completed is no longer unattributed.
	recs, err := t.store.UnattributedReverts(ctx, time.Time{})
	if err != nil {
		t.log.Warn("lifecycle: reading the store for another source's record failed", "err", err)
		return pending{}, false
	}
	for _, r := range recs {
		if r.SnapshotUUID == "" || t.claimedLog[r.ID] || t.snapshotSource(r.SnapshotUUID) != c.VMUUID {
			continue
		}
		t.claimedLog[r.ID] = true
		done := r
		done.VMUUID, done.VMName = c.VMUUID, c.Name
		drop := map[string]bool{"vm_uuid": true, "vm_name": c.Name != ""}
		if p := t.edge(c.VMUUID).parent; p != "" {
			done.ParentVMUUID, drop["parent_vm_uuid"] = p, true
		}
		done.Unknown = slices.DeleteFunc(slices.Clone(r.Unknown), func(f string) bool { return drop[f] })
		t.log.Debug("lifecycle: a change seen at a resync is a logged revert", "vm", c.VMUUID, "record", r.ID, "snapshot", r.SnapshotUUID)
		return pending{rec: done, vmRef: c.Ref}, true
	}
	return pending{}, false
}

// snapshotSource is the uuid of the VM a snapshot was taken of: its
// snapshot_of as the pool shows it, else its family-tree parent.
func (t *Tracer) snapshotSource(uuid string) string {
	if ref, ok := t.byUUID[uuid]; ok {
		if vi := t.vms[ref]; vi != nil && vi.snapshotOf != "" {
			if src := t.vms[vi.snapshotOf]; src != nil {
				return src.uuid
			}
		}
	}
	if p := t.edge(uuid).parent; p != "" {
		return p
	}
	// Made and gone while nobody watched XAPI: the logs' record of the
	// snapshot names its source, and the store knows the snapshot's name.
	ctx := context.Background()
	name := ""
	if v, err := t.store.VM(ctx, uuid); err == nil {
		name = v.Name
	}
	if name == "" { // never in the pool's view: a record of it (its destroy) has the name
		if rs, err := t.store.RecordsOfVMSince(ctx, uuid, time.Time{}); err == nil {
			for _, r := range rs {
				if r.VMName != "" {
					name = r.VMName
				}
			}
		}
	}
	if name == "" {
		return ""
	}
	recs, err := t.store.UnattributedCreations(ctx, name, time.Time{})
	if err != nil {
		return ""
	}
	for _, r := range recs {
		if (r.Activity == record.Snapshot || r.Activity == record.Checkpoint) && r.Result == record.Success && r.ParentVMUUID != "" {
			return r.ParentVMUUID
		}
	}
	return ""
}

// creationFits says whether a logged creation can have made the VM that
// appeared.
func creationFits(c change, r *record.Record) bool {
	if r.Result != record.Success {
		return false
	}
	switch {
	case c.Snapshot:
		if r.Activity != record.Snapshot && r.Activity != record.Checkpoint {
			return false
		}
		return c.SnapshotOf == "" || r.ParentVMUUID == "" || r.ParentVMUUID == c.SnapshotOf
	case c.Imported:
		return r.Activity == record.Import
	}
	return r.Activity == record.Clone || r.Activity == record.Copy || r.Activity == record.Create || r.Activity == record.Import
}
