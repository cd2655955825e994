package lifecycle

import (
	"context"
	"sort"
	"strings"
	"time"

	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/record"
)

// pending is a record about to be written, with the VM facts it implies.
type pending struct {
	rec    record.Record
	vmRef  string // VM the record is about, when it still exists
	parent string // lineage edge to set: rec.VMUUID → parent
}

// commit finalises the batch's tasks and writes records, VM facts, pending
// tasks and the token in one transaction.
func (t *Tracer) commit(ctx context.Context, b *batch, token string) error {
	// Keys that vanished from every VM without the task object ever being
	// seen: a synchronous call that started and ended between two polls.
	for k := range b.vanished {
		tk := t.tasks[k]
		if tk == nil || tk.Seen || tk.Recorded || t.keyHeld(k) {
			continue
		}
		tk.Gone = true
		b.finish[k] = true
	}
	refs := make([]string, 0, len(b.finish))
	for r := range b.finish {
		refs = append(refs, r)
	}
	sort.Slice(refs, func(i, j int) bool { return t.tasks[refs[i]].sortKey() < t.tasks[refs[j]].sortKey() })
	var out []pending
	for _, r := range refs {
		out = append(out, t.finalize(b, t.tasks[r])...)
	}
	if b.resync {
		t.diff(b)
	}
	out = append(out, t.settle(b, out)...)
	at := map[string]time.Time{}
	for _, p := range out {
		if p.rec.VMUUID != "" {
			at[p.rec.VMUUID] = p.rec.End
		}
	}
	var committed []*record.Record
	err := t.store.Update(ctx, func(tx *lineage.Tx) error {
		if b.hosts && t.pool.uuid != "" {
			if err := t.writeHosts(tx); err != nil {
				return err
			}
		}
		if b.baseline {
			if err := tx.SetAgentState(KeyBaseline+"."+t.pool.uuid, record.FormatTime(t.now())); err != nil {
				return err
			}
		}
		for i := range out {
			p := &out[i]
			if err := p.rec.Validate(); err != nil {
				// One bad record must not stall the stream; say so loudly.
				t.log.Error("dropping an invalid record", "err", err)
				continue
			}
			isNew, err := tx.PutRecord(&p.rec)
			if err != nil {
				return err
			}
			if isNew {
				committed = append(committed, &p.rec)
			}
		}
		for _, p := range out {
			if p.rec.Activity.Creating() && p.rec.Result == record.Success && p.vmRef != "" {
				b.dirty[p.vmRef] = true
			}
		}
		for ref := range b.dirty {
			vi := t.vms[ref]
			if vi == nil || vi.control || vi.uuid == "" {
				continue
			}
			if err := t.writeVM(tx, b, vi, b.effective(at, vi.uuid)); err != nil {
				return err
			}
		}
		for _, vi := range b.deleted {
			if vi.control || vi.uuid == "" {
				continue
			}
			if _, alive := t.byUUID[vi.uuid]; alive {
				continue // re-created under a new ref (revert of a destroyed VM)
			}
			when := b.effective(at, vi.uuid)
			if !t.edge(vi.uuid).known {
				if err := t.writeVM(tx, b, vi, when); err != nil {
					return err
				}
			}
			if err := tx.MarkDestroyed(vi.uuid, when); err != nil {
				return err
			}
		}
		if err := t.savePending(tx, b); err != nil {
			return err
		}
		if t.pool.uuid != "" {
			if err := tx.SetAgentState(KeyPool, t.pool.uuid); err != nil {
				return err
			}
		}
		if token != "" {
			return tx.SetAgentState(KeyToken, token)
		}
		return nil
	})
	if err != nil {
		return err
	}
	// Only now that the transaction is committed does the store hold it.
	if pool := t.pool.uuid; pool != "" {
		t.synced.Store(&pool)
	}
	if b.savedPending != "" {
		t.savedPending = b.savedPending
	}
	for u, w := range b.written {
		t.written[u] = w
		t.markKnown(u)
	}
	for _, vi := range b.deleted {
		delete(t.written, vi.uuid)
	}
	t.gc(b)
	t.trimEdges()
	for _, r := range committed {
		t.stats.Records++
		if r.Source == record.SourceResync {
			t.stats.ResyncRecords++
		}
		if t.OnRecord != nil {
			t.OnRecord(r)
		}
	}
	return nil
}

func (tk *taskInfo) sortKey() string {
	ts := tk.Created
	if ts.IsZero() {
		ts = tk.FirstSeen
	}
	return ts.UTC().Format(time.RFC3339Nano) + tk.Ref
}

// keyHeld reports whether some VM still carries task key k. Only the VMs
// that ever carried it are looked at (the task remembers them).
func (t *Tracer) keyHeld(k string) bool {
	tk := t.tasks[k]
	if tk == nil {
		return false
	}
	for ref := range tk.VMs {
		if vi := t.vms[ref]; vi != nil {
			if _, ok := vi.ops[k]; ok {
				return true
			}
		}
	}
	return false
}

func (t *Tracer) writeHosts(tx *lineage.Tx) error {
	now := t.now()
	for _, h := range t.hosts {
		if h.uuid == "" {
			continue
		}
		if err := tx.PutHost(&lineage.Host{UUID: h.uuid, PoolUUID: t.pool.uuid, Name: h.name, Address: h.address, FirstSeen: now, LastSeen: now}); err != nil {
			return err
		}
	}
	return tx.PutPool(&lineage.Pool{UUID: t.pool.uuid, Name: t.pool.name, MasterUUID: t.masterUUID()})
}

// written is what the store holds of a VM, so that an update that changes
// nothing costs no SQL (most events touch fields vmlineage does not keep).
type written struct {
	name, parent, kind, power, host, ref string
	macs, ips                            string
}

// writeVM stores a VM's current facts, effective at when, writing only what
// differs from what the store already holds.
func (t *Tracer) writeVM(tx *lineage.Tx, b *batch, vi *vmInfo, when time.Time) error {
	var macs []string
	for _, r := range vi.vifs {
		if v, ok := t.vifs[r]; ok && v.mac != "" {
			macs = appendUnique(macs, v.mac)
		}
	}
	ips := t.gms[vi.guestMetrics]
	sort.Strings(macs)
	sort.Strings(ips)
	ed := t.edge(vi.uuid)
	now := written{name: vi.name, parent: ed.parent, kind: vi.kind, power: vi.power, host: t.hostUUID(vi.resident),
		ref: vi.ref, macs: strings.Join(macs, ","), ips: strings.Join(ips, ",")}
	was, ok := b.written[vi.uuid]
	if !ok {
		was, ok = t.written[vi.uuid]
	}
	if ok && was == now {
		return nil
	}
	if !ok || was.name != now.name || was.parent != now.parent || was.kind != now.kind || was.power != now.power || was.host != now.host || was.ref != now.ref {
		v := &lineage.VM{UUID: vi.uuid, Ref: vi.ref, PoolUUID: t.pool.uuid, Name: vi.name, ParentUUID: now.parent,
			Kind: vi.kind, PowerState: vi.power, HostUUID: now.host, FirstSeen: when, LastSeen: when}
		if v.ParentUUID != "" {
			v.ParentVia = ed.via
		}
		if err := tx.PutVM(v); err != nil {
			return err
		}
	}
	// With what the store holds known, changes are written blind (no read
	// first); the first write of a VM in this process checks the store.
	var err error
	if !ok {
		err = tx.SetState(vi.uuid, vi.power, now.host, when)
	} else if was.power != now.power || was.host != now.host {
		err = tx.MoveState(vi.uuid, vi.power, now.host, when)
	}
	if err != nil {
		return err
	}
	attr := func(kind string, changed bool, before, values []string) error {
		switch {
		case !ok:
			return tx.SetAttrs(vi.uuid, kind, values, when)
		case changed:
			return tx.ReplaceAttrs(vi.uuid, kind, before, values, when)
		}
		return nil
	}
	// Names may hold commas: they are compared whole, addresses as lists.
	if err := attr(lineage.AttrName, was.name != now.name, []string{was.name}, []string{vi.name}); err != nil {
		return err
	}
	if err := attr(lineage.AttrMAC, was.macs != now.macs, split(was.macs), macs); err != nil {
		return err
	}
	if err := attr(lineage.AttrIP, was.ips != now.ips, split(was.ips), ips); err != nil {
		return err
	}
	b.written[vi.uuid] = now
	return nil
}

func split(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// gc forgets recorded tasks that are gone, and bounds the memory of recorded
// tasks whose deletion XAPI has not yet reported.
func (t *Tracer) gc(b *batch) {
	for r := range b.finish {
		if tk := t.tasks[r]; tk != nil && tk.Recorded && tk.Gone {
			delete(t.tasks, r)
		}
	}
	// A full sweep only when the map has grown: it runs after every batch.
	const keep = 20000
	if len(t.tasks) < keep+keep/2 {
		return
	}
	var recorded []*taskInfo
	for r, tk := range t.tasks {
		if tk.Recorded && tk.Gone {
			delete(t.tasks, r)
		} else if tk.Recorded {
			recorded = append(recorded, tk)
		}
	}
	if len(recorded) > keep {
		sort.Slice(recorded, func(i, j int) bool { return recorded[i].sortKey() < recorded[j].sortKey() })
		for _, tk := range recorded[:len(recorded)-keep] {
			delete(t.tasks, tk.Ref)
		}
	}
}

func (t *Tracer) vmByRef(b *batch, ref string) *vmInfo {
	if vi := t.vms[ref]; vi != nil {
		return vi
	}
	if vi := b.deleted[ref]; vi != nil {
		return vi
	}
	return t.gone[ref]
}
