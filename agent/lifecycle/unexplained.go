package lifecycle

import (
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
		t.dropChange("appear/" + c.VMUUID)
	}
	t.changes[key] = c
	t.touchChange(key)
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
			c := change{Kind: "appear", VMUUID: vi.uuid, Ref: vi.ref, Name: vi.name, At: t.now(), Imported: vi.importTask != "",
				Snapshot: vi.kind == lineage.KindSnapshot, ToPower: vi.power, ToHost: t.hostUUID(vi.resident)}
			if sv := t.vmByRef(b, vi.snapshotOf); sv != nil {
				c.SnapshotOf = sv.uuid
			}
			t.note(c)
		}
	case busy:
	default:
		if prev.power != vi.power || prev.resident != vi.resident {
			t.note(change{Kind: "power", VMUUID: vi.uuid, Ref: vi.ref, Name: vi.name, At: t.now(),
				FromPower: prev.power, FromHost: t.hostUUID(prev.resident), ToPower: vi.power, ToHost: t.hostUUID(vi.resident)})
		}
		if !prev.template && vi.template && vi.kind == lineage.KindTemplate {
			t.note(change{Kind: "template", VMUUID: vi.uuid, Ref: vi.ref, Name: vi.name, At: t.now()})
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
			t.dropChange(k + "/" + p.rec.VMUUID)
		}
	}
	now, wall := t.now(), time.Now()
	var due []string
	for k, c := range t.changes {
		// The pool clock only moves when tasks are seen; a quiet pool still
		// ages the change by this machine's clock.
		if !b.resync && now.Sub(c.At) < grace && wall.Sub(c.Noted) < grace {
			continue
		}
		due = append(due, k)
	}
	sort.Strings(due)
	var more []pending
	for _, k := range due {
		c := t.changes[k]
		if vi := t.vms[c.Ref]; vi != nil && len(vi.ops) > 0 && c.Kind != "vanish" {
			continue // an operation in flight will explain it
		}
		t.dropChange(k)
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
