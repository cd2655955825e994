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
	Kind       string    `json:"kind"` // appear, vanish, power, template
	VMUUID     string    `json:"vm"`
	Ref        string    `json:"ref,omitempty"`
	Name       string    `json:"name,omitempty"`
	FromPower  string    `json:"from_power,omitempty"`
	FromHost   string    `json:"from_host,omitempty"` // host uuid
	ToPower    string    `json:"to_power,omitempty"`
	ToHost     string    `json:"to_host,omitempty"`
	SnapshotOf string    `json:"snapshot_of,omitempty"` // uuid
	Imported   bool      `json:"imported,omitempty"`
	Snapshot   bool      `json:"snapshot,omitempty"`
	At         time.Time `json:"at"`    // pool clock when seen
	Noted      time.Time `json:"noted"` // this machine's clock when seen
	// Since is the earliest pool time the change can have happened: the
	// last time the tracer saw the pool before a resync, else At.
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
			delete(t.changes, key) // back where it was
			return
		}
	}
	if c.Kind == "vanish" {
		delete(t.changes, "appear/"+c.VMUUID)
	}
	t.changes[key] = c
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

// settle drops the changes that this batch's records explain, and turns
// those no task explained in time (or at a resync) into records.
func (t *Tracer) settle(b *batch, out []pending) []pending {
	for _, p := range out {
		if p.rec.VMUUID == "" {
			continue
		}
		for _, k := range []string{"appear", "vanish", "power", "template"} {
			delete(t.changes, k+"/"+p.rec.VMUUID)
		}
	}
	now := t.now()
	keys := make([]string, 0, len(t.changes))
	for k := range t.changes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var more []pending
	for _, k := range keys {
		c := t.changes[k]
		// The pool clock only moves when tasks are seen; a quiet pool still
		// ages the change by this machine's clock. At a resync no task will
		// come to explain a change, but another source (the log source) may
		// still store its record: with one, a change waits by this machine's
		// clock, the one that source's lines arrive by (the pool clock jumps
		// when the tracer catches up after an outage).
		switch {
		case t.OtherSources:
			if time.Since(c.Noted) < grace {
				continue
			}
		case b.resync:
		case now.Sub(c.At) < grace && time.Since(c.Noted) < grace:
			continue
		}
		if vi := t.vms[c.Ref]; vi != nil && len(vi.ops) > 0 && c.Kind != "vanish" {
			continue // an operation in flight will explain it
		}
		delete(t.changes, k)
		if p, ok := t.inferred(c); ok {
			more = append(more, p)
		}
	}
	return more
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
	case "power":
		a, dest = transition(c.FromPower, c.FromHost, c.ToPower, c.ToHost)
		host = c.FromHost
		if host == "" {
			host = c.ToHost
		}
	}
	if a == "" {
		return pending{}, false
	}
	if t.OtherSources {
		if p, explained := t.explainedByStore(c, a); explained {
			return p, p.rec.ID != ""
		}
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
		recs, err := t.store.UnattributedCreations(ctx, c.Name, since)
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
		case "power":
			switch r.Activity {
			case record.Start, record.Shutdown, record.Reboot, record.Suspend, record.Resume, record.Pause,
				record.Unpause, record.Migrate, record.Revert:
				return pending{}, true
			}
		}
	}
	return pending{}, false
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
