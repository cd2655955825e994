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

// writes is what one or more batches leave to write: records and VM facts
// computed when each batch was applied (so a VM's state at each step is
// kept even when the batches are committed together), in order.
type writes struct {
	out      []pending
	vms      []vmWrite
	hosts    bool
	baseline bool
	finish   map[string]bool
	written  map[string]written
	saved    string // tracer state persisted by this commit
}

// vmWrite is a VM's facts at one point, to be stored.
type vmWrite struct {
	vi       vmInfo
	now      written
	macs     []string
	ips      []string
	when     time.Time
	destroy  bool
	unknownV bool // the store did not know the VM when this was prepared
}

func newWrites() *writes {
	return &writes{finish: map[string]bool{}, written: map[string]written{}}
}

// prepare finalises the batch's tasks and turns the batch into writes,
// reading the tracer's view as it is right after the batch.
func (t *Tracer) prepare(b *batch, w *writes) {
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
		w.finish[r] = true
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
		if p.rec.Activity.Creating() && p.rec.Result == record.Success && p.vmRef != "" {
			b.dirty[p.vmRef] = true
		}
	}
	w.out = append(w.out, out...)
	w.hosts = w.hosts || b.hosts
	w.baseline = w.baseline || b.baseline
	dirty := make([]string, 0, len(b.dirty))
	for ref := range b.dirty {
		dirty = append(dirty, ref)
	}
	sort.Strings(dirty)
	for _, ref := range dirty {
		vi := t.vms[ref]
		if vi == nil || vi.control || vi.uuid == "" {
			continue
		}
		w.vms = append(w.vms, t.snapshotVM(vi, b.effective(at, vi.uuid), false))
	}
	for _, vi := range b.deleted {
		if vi.control || vi.uuid == "" {
			continue
		}
		if _, alive := t.byUUID[vi.uuid]; alive {
			continue // re-created under a new ref (revert of a destroyed VM)
		}
		w.vms = append(w.vms, t.snapshotVM(vi, b.effective(at, vi.uuid), true))
	}
}

// snapshotVM captures what writeVM stores of a VM now.
func (t *Tracer) snapshotVM(vi *vmInfo, when time.Time, destroy bool) vmWrite {
	var macs []string
	for _, r := range vi.vifs {
		if v, ok := t.vifs[r]; ok && v.mac != "" {
			macs = appendUnique(macs, v.mac)
		}
	}
	ips := append([]string(nil), t.gms[vi.guestMetrics]...)
	sort.Strings(macs)
	sort.Strings(ips)
	ed := t.edge(vi.uuid)
	return vmWrite{vi: *vi, macs: macs, ips: ips, when: when, destroy: destroy, unknownV: !ed.known,
		now: written{name: vi.name, parent: ed.parent, via: ed.via, kind: vi.kind, power: vi.power, host: t.hostUUID(vi.resident),
			ref: vi.ref, macs: strings.Join(macs, ","), ips: strings.Join(ips, ",")}}
}

// commit prepares one batch and writes it at once (resyncs, tests).
func (t *Tracer) commit(ctx context.Context, b *batch, token string) error {
	w := newWrites()
	t.prepare(b, w)
	return t.write(ctx, w, token)
}

// write stores records, VM facts, pending tasks and the token in one
// transaction.
func (t *Tracer) write(ctx context.Context, w *writes, token string) error {
	var committed []*record.Record
	err := t.store.Update(ctx, func(tx *lineage.Tx) error {
		if w.hosts && t.pool.uuid != "" {
			if err := t.writeHosts(tx); err != nil {
				return err
			}
		}
		if w.baseline {
			if err := tx.SetAgentState(KeyBaseline+"."+t.pool.uuid, record.FormatTime(t.now())); err != nil {
				return err
			}
		}
		for i := range w.out {
			p := &w.out[i]
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
		for i := range w.vms {
			vw := &w.vms[i]
			if !vw.destroy || vw.unknownV {
				if err := t.writeVM(tx, w, vw); err != nil {
					return err
				}
			}
			if vw.destroy {
				if err := tx.MarkDestroyed(vw.vi.uuid, vw.when); err != nil {
					return err
				}
				delete(w.written, vw.vi.uuid)
				w.written[vw.vi.uuid] = written{destroyed: true}
			}
		}
		saved, err := t.savePending(tx)
		if err != nil {
			return err
		}
		w.saved = saved
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
	t.contact = t.serverAt
	if pool := t.pool.uuid; pool != "" {
		t.synced.Store(&pool)
	}
	if w.saved != "" {
		t.savedPending = w.saved
	}
	for u, wr := range w.written {
		if wr.destroyed {
			delete(t.written, u)
			continue
		}
		t.written[u] = wr
		t.markKnown(u)
	}
	t.gc(w)
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
	name, parent, via, kind, power, host, ref string
	macs, ips                                 string
	destroyed                                 bool
}

// writeVM stores a VM's facts, writing only what differs from what the store
// already holds.
func (t *Tracer) writeVM(tx *lineage.Tx, w *writes, vw *vmWrite) error {
	vi, now, when := &vw.vi, vw.now, vw.when
	was, ok := w.written[vi.uuid]
	if !ok {
		was, ok = t.written[vi.uuid]
	}
	if was.destroyed {
		ok = false
	}
	if ok && was == now {
		return nil
	}
	if !ok || was.name != now.name || was.parent != now.parent || was.kind != now.kind || was.power != now.power || was.host != now.host || was.ref != now.ref {
		v := &lineage.VM{UUID: vi.uuid, Ref: vi.ref, PoolUUID: t.pool.uuid, Name: vi.name, ParentUUID: now.parent,
			Kind: vi.kind, PowerState: vi.power, HostUUID: now.host, FirstSeen: when, LastSeen: when}
		if v.ParentUUID != "" {
			v.ParentVia = now.via
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
	if err := attr(lineage.AttrMAC, was.macs != now.macs, split(was.macs), vw.macs); err != nil {
		return err
	}
	if err := attr(lineage.AttrIP, was.ips != now.ips, split(was.ips), vw.ips); err != nil {
		return err
	}
	w.written[vi.uuid] = now
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
func (t *Tracer) gc(w *writes) {
	for r := range w.finish {
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
