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
	prepared map[string]written // what the writes in vms will leave the store holding, by VM uuid
	saved    *savedState        // tracer state persisted by this commit
}

// vmWrite is a VM's facts at one point, to be stored.
type vmWrite struct {
	vi       vmFacts
	now      written
	macs     []string
	ips      []string
	when     time.Time
	destroy  bool
	unknownV bool // the store did not know the VM when this was prepared
}

// vmFacts names the VM; what is written of it is in vmWrite.now.
type vmFacts struct{ uuid string }

func newWrites() *writes {
	return &writes{finish: map[string]bool{}, written: map[string]written{}, prepared: map[string]written{}}
}

// writesSomething reports whether vw would write anything: the store (as of the
// last commit, or as the writes prepared since will leave it) may already
// hold these facts. Most VM events change only fields the store does not
// keep, and are dropped here rather than carried to the commit.
func (t *Tracer) writesSomething(w *writes, vw *vmWrite) bool {
	was, ok := w.prepared[vw.vi.uuid]
	if !ok {
		was, ok = t.written[vw.vi.uuid]
	}
	return !ok || was.destroyed || was != vw.now
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
		t.touchTask(r)
	}
	sort.Slice(refs, func(i, j int) bool { return t.tasks[refs[i]].before(t.tasks[refs[j]]) })
	start := len(w.out) // this batch's records go straight to w.out
	for _, r := range refs {
		w.out = append(w.out, t.finalize(b, t.tasks[r])...)
	}
	if b.resync {
		t.diff(b)
	}
	w.out = append(w.out, t.settle(b, w.out[start:])...)
	out := w.out[start:]
	at := map[string]time.Time{}
	for _, p := range out {
		if p.rec.VMUUID != "" {
			at[p.rec.VMUUID] = p.rec.End
		}
		if a := p.rec.Activity; a.Creating() && p.rec.Result == record.Success {
			// Whichever path matched it, a creation whose source is
			// unknown leaves its VM's edge saying how it was made, so
			// that the VM's later records (after a restart too) list the
			// parent unknown rather than claim it has none.
			if a != record.Create && a != record.Import && p.rec.VMUUID != "" && p.rec.IsUnknown("parent_vm_uuid") {
				if e := t.edge(p.rec.VMUUID); e.parent == "" && e.via == "" {
					t.setEdge(p.rec.VMUUID, "", string(a))
				}
			}
			// The made VM is written with its record, so that its edge is
			// stored in the same transaction: a SIGKILL cannot keep the
			// one without the other.
			ref := p.vmRef
			if ref == "" && p.rec.VMUUID != "" {
				ref = t.byUUID[p.rec.VMUUID]
			}
			if ref != "" {
				b.dirty[ref] = true
			}
		}
	}
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
		vw := t.snapshotVM(vi, b.effective(at, vi.uuid), false)
		if t.writesSomething(w, &vw) {
			w.vms = append(w.vms, vw)
			w.prepared[vi.uuid] = vw.now
		}
	}
	for _, vi := range b.deleted {
		if vi.control || vi.uuid == "" {
			continue
		}
		if _, alive := t.byUUID[vi.uuid]; alive {
			continue // re-created under a new ref (revert of a destroyed VM)
		}
		w.vms = append(w.vms, t.snapshotVM(vi, b.effective(at, vi.uuid), true))
		w.prepared[vi.uuid] = written{destroyed: true}
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
	return vmWrite{vi: vmFacts{uuid: vi.uuid}, macs: macs, ips: ips, when: when, destroy: destroy, unknownV: !ed.known,
		now: written{name: vi.name, parent: ed.parent, via: ed.via, kind: vi.kind, power: vi.power, host: t.hostUUID(vi.resident),
			ref: vi.ref, macs: strings.Join(macs, ","), ips: strings.Join(ips, ",")}}
}

// commit prepares one batch and writes it at once (resyncs, tests).
func (t *Tracer) commit(ctx context.Context, b *batch, token string) error {
	w := newWrites()
	t.prepare(b, w)
	err := t.write(ctx, w, token)
	if err != nil && t.open == nil {
		// As Flush: what prepare worked out (inferred records, a
		// resync's VM facts) is not worked out again; the next Flush
		// writes it.
		t.open, t.openToken, t.openSince, t.openEvents = w, token, time.Now(), 0
	}
	return err
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
		if t.pool.uuid != "" && t.pool.uuid != t.poolSaved {
			if err := tx.SetAgentState(KeyPool, t.pool.uuid); err != nil {
				return err
			}
			t.poolSaved = t.pool.uuid
		}
		if token != "" {
			return tx.SetAgentState(KeyToken, token)
		}
		return nil
	})
	if err != nil {
		// What this transaction was to write is not in the store: write
		// hosts, pool and pool uuid in full next time.
		t.hostsWritten, t.poolWritten, t.poolSaved = nil, poolInfo{}, ""
		return err
	}
	// Only now that the transaction is committed does the store hold it.
	t.stats.Commits++
	t.contact = t.seenAt
	if t.contact.IsZero() {
		// Nothing yet dates the data (a first sync, no task seen): the
		// clock reading is all there is.
		t.contact = t.serverAt
	}
	if pool := t.pool.uuid; pool != "" {
		t.synced.Store(&pool)
	}
	t.publish()
	t.saved(w.saved)
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

// before orders tasks by creation (first sight when the creation time is
// unknown), then ref.
func (tk *taskInfo) before(o *taskInfo) bool {
	a, b := tk.Created, o.Created
	if a.IsZero() {
		a = tk.FirstSeen
	}
	if b.IsZero() {
		b = o.FirstSeen
	}
	if !a.Equal(b) {
		return a.Before(b)
	}
	return tk.Ref < o.Ref
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

// writeHosts stores the hosts and the pool that changed since they were last
// written, and all of them (their last_seen) once a minute of pool time:
// every VM that starts, stops or moves changes its host's resident_VMs, so
// host events come with most batches and rewriting every host each time
// cost more than the VMs themselves.
func (t *Tracer) writeHosts(tx *lineage.Tx) error {
	now := t.now()
	all := t.hostsWritten == nil || now.Sub(t.hostsWrittenAt) >= time.Minute || now.Before(t.hostsWrittenAt)
	if all {
		t.hostsWritten, t.hostsWrittenAt = map[string]hostInfo{}, now
	}
	for _, h := range t.hosts {
		if h.uuid == "" || (!all && t.hostsWritten[h.uuid] == h) {
			continue
		}
		if err := tx.PutHost(&lineage.Host{UUID: h.uuid, PoolUUID: t.pool.uuid, Name: h.name, Address: h.address, FirstSeen: now, LastSeen: now}); err != nil {
			return err
		}
		t.hostsWritten[h.uuid] = h
	}
	p := poolInfo{uuid: t.pool.uuid, name: t.pool.name, master: t.masterUUID()}
	if !all && t.poolWritten == p {
		return nil
	}
	t.poolWritten = p
	return tx.PutPool(&lineage.Pool{UUID: p.uuid, Name: p.name, MasterUUID: p.master})
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
	// A VM the store has never held (unknownV, and nothing written since)
	// has no state or attribute rows: they are inserted without reading.
	fresh := !ok && vw.unknownV
	switch {
	case ok && was.name == now.name && was.parent == now.parent && was.via == now.via && was.kind == now.kind && was.ref == now.ref:
		if was.power != now.power || was.host != now.host {
			if err := tx.SetPower(vi.uuid, now.power, now.host, when); err != nil {
				return err
			}
		}
	default:
		v := &lineage.VM{UUID: vi.uuid, Ref: now.ref, PoolUUID: t.pool.uuid, Name: now.name, ParentUUID: now.parent,
			Kind: now.kind, PowerState: now.power, HostUUID: now.host, FirstSeen: when, LastSeen: when, ParentVia: now.via}
		if err := tx.PutVM(v); err != nil {
			return err
		}
	}
	// With what the store holds known, changes are written blind (no read
	// first); the first write of a VM in this process checks the store.
	var err error
	switch {
	case fresh:
		err = tx.OpenState(vi.uuid, now.power, now.host, when)
	case !ok:
		err = tx.SetState(vi.uuid, now.power, now.host, when)
	case was.power != now.power || was.host != now.host:
		err = tx.MoveState(vi.uuid, now.power, now.host, when)
	}
	if err != nil {
		return err
	}
	attr := func(kind string, changed bool, before, values []string) error {
		switch {
		case fresh:
			return tx.ReplaceAttrs(vi.uuid, kind, nil, values, when)
		case !ok:
			return tx.SetAttrs(vi.uuid, kind, values, when)
		case changed:
			return tx.ReplaceAttrs(vi.uuid, kind, before, values, when)
		}
		return nil
	}
	// Names may hold commas: they are compared whole, addresses as lists.
	if err := attr(lineage.AttrName, was.name != now.name, []string{was.name}, []string{now.name}); err != nil {
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
// tasks whose deletion XAPI has not yet reported: the oldest recorded go
// first (a FIFO, so nothing is scanned or sorted after each batch).
func (t *Tracer) gc(w *writes) {
	for r := range w.finish {
		tk := t.tasks[r]
		switch {
		case tk == nil || !tk.Recorded:
		case tk.Gone:
			delete(t.tasks, r)
		default:
			t.recorded = append(t.recorded, r)
		}
	}
	const keep = 20000
	if len(t.recorded) > keep+keep/4 { // trimmed in steps: the copy is then rare
		n := len(t.recorded) - keep
		for _, r := range t.recorded[:n] {
			if tk := t.tasks[r]; tk != nil && tk.Recorded {
				delete(t.tasks, r)
			}
		}
		t.recorded = append(t.recorded[:0:0], t.recorded[n:]...)
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
