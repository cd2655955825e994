package lifecycle

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/agent/xapi"
)

// Resync replaces the tracer's view with a full snapshot of the pool (every
// record of every subscribed class, keyed by lower-case class then ref),
// records what changed since the store last knew the pool (source
// "resync"), finalises tasks that ended while nobody watched, and persists
// token. The first sync of a pool only takes a baseline: the VMs that exist
// are stored, no record claims they were just created.
func (t *Tracer) Resync(ctx context.Context, ps *xapi.PoolSnapshot, token, reason string) error {
	snap := map[string]map[string]*xapi.Snapshot{}
	for class, recs := range ps.Records {
		snap[strings.ToLower(class)] = recs
	}
	if err := t.load(ctx); err != nil {
		return err
	}
	// The last contact before this resync (Flush below may move it).
	from := t.contact
	if err := t.Flush(ctx); err != nil {
		return err
	}
	t.delivered()
	// The snapshot's classes are read one after another (VMs before
	// tasks): a task's time says nothing of how fresh the VMs are.
	seen := t.seenAt
	t.stats.Resyncs++
	// Tasks seen before this resync end, now or later, across a gap.
	t.gapSeq, t.catchUp = t.seq, false
	t.holdBeforeGap()
	b := newBatch(t)
	b.resync = true
	b.from = from
	b.hosts = true
	if v, err := t.store.AgentState(ctx, KeyBaseline+"."+snapPoolUUID(snap)); err == nil && v == "" {
		b.baseline = true
	}
	sorted := func(m map[string]*xapi.Snapshot) []string {
		refs := make([]string, 0, len(m))
		for r := range m {
			refs = append(refs, r)
		}
		sort.Strings(refs)
		return refs
	}
	// Hosts, VIFs and guest metrics are small: rebuilt from the snapshot.
	t.hosts, t.vifs, t.gms, t.gmVM = map[string]hostInfo{}, map[string]vifInfo{}, map[string][]string{}, map[string]string{}
	for _, class := range []string{"pool", "host", "vif", "vm_guest_metrics"} {
		for _, r := range sorted(snap[class]) {
			b.apply(&xapi.Event{Class: class, Operation: "add", Ref: r, Snapshot: snap[class][r]})
		}
	}
	// VMs are reconciled with what the tracer saw before the gap, so a change
	// made while nobody watched is a change (a task that ended unseen can
	// still be tied to it) rather than a fresh start.
	for _, r := range sorted(snap["vm"]) {
		op := "mod"
		if t.vms[r] == nil {
			op = "add"
		}
		b.apply(&xapi.Event{Class: "vm", Operation: op, Ref: r, Snapshot: snap["vm"][r]})
	}
	var vanished []string
	for r := range t.vms {
		if _, ok := snap["vm"][r]; !ok {
			vanished = append(vanished, r)
		}
	}
	sort.Strings(vanished)
	for _, r := range vanished {
		b.apply(&xapi.Event{Class: "vm", Operation: "del", Ref: r})
	}
	for _, r := range sorted(snap["task"]) {
		b.apply(&xapi.Event{Class: "task", Operation: "add", Ref: r, Snapshot: snap["task"][r]})
	}
	// Tasks the tracer followed that no longer exist ended while nobody watched.
	for r, tk := range t.tasks {
		if _, ok := snap["task"][r]; ok || tk.Recorded || t.keyHeld(r) {
			continue
		}
		tk.Gone = true
		if tk.GoneAt.IsZero() {
			tk.GoneAt = t.now()
		}
		tk.EndSeq = t.seq
		b.finish[r] = true
	}
	// The tasks alive now are the snapshot's; from here on the event stream
	// keeps the set, checked against valid_ref_counts (reconcile.go).
	clear(t.live)
	for r := range snap["task"] {
		t.live[r] = true
	}
	t.liveKnown = true
	// Completed tasks still in the pool may have been recorded before a
	// restart: ids are deterministic, so the store ignores a second copy.
	t.seenAt = seen
	t.log.Info("resync", "reason", reason, "vms", len(t.vms), "tasks", len(snap["task"]), "hosts", len(t.hosts))
	return t.commit(ctx, b, token)
}

// diff finds the VMs the store holds alive that the pool no longer has and
// the tracer never saw vanish (it had not seen them since it started): they
// were destroyed while nobody watched.
func snapPoolUUID(snap map[string]map[string]*xapi.Snapshot) string {
	for _, p := range snap["pool"] {
		return p.UUID
	}
	return ""
}

func (t *Tracer) diff(b *batch) {
	if b.baseline {
		return
	}
	err := t.store.EachLiveVM(context.Background(), t.pool.uuid, func(v *lineage.VM) {
		if _, alive := t.byUUID[v.UUID]; alive {
			return
		}
		if _, noted := t.changes["vanish/"+v.UUID]; noted {
			return
		}
		t.note(change{Kind: "vanish", VMUUID: v.UUID, Name: v.Name, At: t.now(), Since: b.since(), FromPower: v.PowerState, FromHost: v.HostUUID})
		b.deleted["resync:"+v.UUID] = &vmInfo{uuid: v.UUID, name: v.Name, kind: v.Kind}
	})
	if err != nil {
		t.log.Error("resync: reading the store failed; VMs destroyed while the agent was away may go unrecorded", "err", err)
	}
}

// load reads the tracer's persisted state once: pool, pending tasks,
// unexplained changes, and the VMs of the pool as the store last knew them.
// The family tree itself stays in the store (edge looks it up on demand), so
// memory follows the live pool, not the history.
func (t *Tracer) load(ctx context.Context) error {
	if t.loaded {
		return nil
	}
	t.loaded = true
	t.catchUp = true
	pool, err := t.store.AgentState(ctx, KeyPool)
	if err != nil {
		return err
	}
	if t.pool.uuid == "" {
		t.pool.uuid = pool
	}
	js, err := t.store.AgentState(ctx, KeyPending)
	if err != nil {
		return err
	}
	var saved pendingHead
	if js != "" {
		if err := json.Unmarshal([]byte(js), &saved); err != nil {
			return fmt.Errorf("lifecycle: pending-task state in the store is corrupt (delete key %s to start afresh): %w", KeyPending, err)
		}
		t.savedHead = js
	}
	// Tasks and changes have a key each (savePending); a store written by an
	// older agent keeps them inside the head, and they move to their own keys
	// at the next commit.
	for _, tk := range saved.Tasks {
		t.touchTask(tk.Ref)
	}
	for _, c := range saved.Changes {
		t.touchChange(c.Kind + "/" + c.VMUUID)
	}
	err = t.store.EachAgentState(ctx, keyTaskPrefix, func(k, v string) error {
		tk := new(taskInfo)
		if err := json.Unmarshal([]byte(v), tk); err != nil {
			return fmt.Errorf("lifecycle: pending task %s in the store is corrupt (delete that key to drop it): %w", k, err)
		}
		saved.Tasks = append(saved.Tasks, tk)
		seq := strings.TrimPrefix(k, keyTaskPrefix)
		t.savedTasks[tk.Ref] = seq
		if n, err := strconv.ParseInt(seq, 10, 64); err == nil && n >= t.taskKeySeq {
			t.taskKeySeq = n + 1
		}
		return nil
	})
	if err != nil {
		return err
	}
	err = t.store.EachAgentState(ctx, keyChangePrefix, func(k, v string) error {
		var c change
		if err := json.Unmarshal([]byte(v), &c); err != nil {
			return fmt.Errorf("lifecycle: pending change %s in the store is corrupt (delete that key to drop it): %w", k, err)
		}
		saved.Changes = append(saved.Changes, c)
		t.savedChanges[strings.TrimPrefix(k, keyChangePrefix)] = true
		return nil
	})
	if err != nil {
		return err
	}
	if js == "" && len(saved.Tasks) == 0 && len(saved.Changes) == 0 {
		return nil
	}
	t.pool = poolInfo{ref: saved.Pool.Ref, uuid: saved.Pool.UUID, name: saved.Pool.Name, master: saved.Pool.Master}
	if t.pool.uuid == "" {
		t.pool.uuid = pool
	}
	at := saved.ServerAt
	if v, err := t.store.AgentState(ctx, keyServerAt); err == nil && v != "" {
		if x, err := time.Parse(time.RFC3339Nano, v); err == nil && x.After(at) {
			at = x
		}
	}
	// The pool's clock may already have been read (SetServerTime at the
	// first resync after a restart): the saved time is older.
	t.observe(at)
	// The last contact; a store written by an older agent has only the
	// clock.
	t.contact = at
	if v, err := t.store.AgentState(ctx, keyContact); err == nil && v != "" {
		if x, err := time.Parse(time.RFC3339Nano, v); err == nil {
			t.contact, t.savedContact = x, v
		}
	}
	if t.contact.After(t.seenAt) {
		t.seenAt = t.contact
	}
	for _, c := range saved.Changes {
		t.changes[c.Kind+"/"+c.VMUUID] = c
	}
	t.publish()
	hostRef := map[string]string{}
	for _, h := range saved.Hosts {
		t.hosts[h.Ref] = hostInfo{uuid: h.UUID, name: h.Name, address: h.Address}
		hostRef[h.UUID] = h.Ref
	}
	// Rebuild the view of the pool the tracer had before it stopped, so the
	// events of the catch-up that precedes the first resync (tasks that
	// ended while the agent was down) can still be tied to their VMs.
	err = t.store.EachLiveVM(ctx, t.pool.uuid, func(v *lineage.VM) {
		if v.Ref == "" {
			return
		}
		t.vms[v.Ref] = &vmInfo{ref: v.Ref, uuid: v.UUID, name: v.Name, power: v.PowerState, resident: hostRef[v.HostUUID], kind: v.Kind,
			template: v.Kind != lineage.KindVM}
		t.byUUID[v.UUID] = v.Ref
	})
	if err != nil {
		return err
	}
	gone, err := t.store.RecentlyDestroyed(ctx, t.pool.uuid, 1024)
	if err != nil {
		return err
	}
	for i := len(gone) - 1; i >= 0; i-- {
		v := gone[i]
		t.forget(v.Ref, &vmInfo{ref: v.Ref, uuid: v.UUID, name: v.Name, power: v.PowerState, kind: v.Kind})
	}
	for _, tk := range saved.Tasks {
		if tk.VMs == nil {
			tk.VMs = map[string]string{}
		}
		if tk.VMUUIDs == nil {
			tk.VMUUIDs = map[string]string{}
		}
		t.tasks[tk.Ref] = tk
	}
	t.holdBeforeGap()
	return nil
}

// Agent-state keys of the pending state: one per task in flight and one per
// unexplained change, so that a commit rewrites only what changed (a busy
// pool has thousands in flight, and one document of them all rewritten at
// every commit cost more than everything else the tracer does). A task's
// key is a sequence number, not its ref: the tasks in flight then sit side
// by side in a few pages of the table instead of one page each.
const (
	keyTaskPrefix   = "tracer.task/"
	keyChangePrefix = "tracer.change/"
	keyServerAt     = "tracer.server_at"
	keyContact      = "tracer.contact" // pool time up to which the last commit saw the pool
)

// pendingHead is what KeyPending holds: the pool, its hosts and clock.
// Tasks and Changes are only read, from stores written by older agents.
type pendingHead struct {
	Pool     poolState   `json:"pool"`
	ServerAt time.Time   `json:"server_at,omitzero"` // older agents; now under keyServerAt
	Tasks    []*taskInfo `json:"tasks,omitempty"`
	Hosts    []hostState `json:"hosts"`
	Changes  []change    `json:"changes,omitempty"`
}

type poolState struct{ Ref, UUID, Name, Master string }
type hostState struct{ Ref, UUID, Name, Address string }

// touchTask notes that task ref changed and must be persisted (or
// forgotten) at the next commit.
func (t *Tracer) touchTask(ref string) { t.touchedTasks[ref] = true }

func (t *Tracer) touchChange(key string) { t.touchedChanges[key] = true }

// persistTask reports whether a restart needs task tk: a VM task not yet
// recorded.
func persistTask(tk *taskInfo) bool {
	if tk == nil || tk.Recorded {
		return false
	}
	class, _, _ := record.SplitTaskName(tk.Name)
	return len(tk.VMs) > 0 || class == "VM"
}

// savedState is what a commit persisted of the pending state, applied to
// the tracer once the transaction is committed.
type savedState struct {
	head, serverAt      string
	contact             string
	tasks               [][2]string // task ref and key written
	changes             []string    // change keys written
	dropTasks, dropChgs []string    // task refs and change keys deleted
}

// savePending persists what a restart needs to finish the tasks in flight:
// the tasks not yet recorded, the pool, the hosts, the pool clock and the
// unexplained changes. Only what changed since the last commit is written.
func (t *Tracer) savePending(tx *lineage.Tx) (*savedState, error) {
	var st savedState
	for ref := range t.touchedTasks {
		tk := t.tasks[ref]
		if persistTask(tk) {
			t.jsonBuf = tk.appendJSON(t.jsonBuf[:0])
			js := t.jsonBuf
			seq, ok := t.savedTasks[ref]
			if !ok {
				seq = fmt.Sprintf("%012d", t.taskKeySeq)
				t.taskKeySeq++
			}
			if err := tx.SetAgentState(keyTaskPrefix+seq, string(js)); err != nil {
				return nil, err
			}
			st.tasks = append(st.tasks, [2]string{ref, seq})
		} else if seq, ok := t.savedTasks[ref]; ok {
			if err := tx.DeleteAgentState(keyTaskPrefix + seq); err != nil {
				return nil, err
			}
			st.dropTasks = append(st.dropTasks, ref)
		}
	}
	for key := range t.touchedChanges {
		if c, ok := t.changes[key]; ok {
			js, err := json.Marshal(c)
			if err != nil {
				return nil, err
			}
			if err := tx.SetAgentState(keyChangePrefix+key, string(js)); err != nil {
				return nil, err
			}
			st.changes = append(st.changes, key)
		} else if t.savedChanges[key] {
			if err := tx.DeleteAgentState(keyChangePrefix + key); err != nil {
				return nil, err
			}
			st.dropChgs = append(st.dropChgs, key)
		}
	}
	// The pool clock moves with nearly every batch: it has a key of its own
	// so that the head is rewritten only when pool or hosts change.
	if at := t.serverAt.Format(time.RFC3339Nano); !t.serverAt.IsZero() && at != t.savedServerAt {
		if err := tx.SetAgentState(keyServerAt, at); err != nil {
			return nil, err
		}
		st.serverAt = at
	}
	if at := t.seenAt.Format(time.RFC3339Nano); !t.seenAt.IsZero() && at != t.savedContact {
		if err := tx.SetAgentState(keyContact, at); err != nil {
			return nil, err
		}
		st.contact = at
	}
	head := pendingHead{Pool: poolState{t.pool.ref, t.pool.uuid, t.pool.name, t.pool.master}}
	for r, h := range t.hosts {
		head.Hosts = append(head.Hosts, hostState{r, h.uuid, h.name, h.address})
	}
	sort.Slice(head.Hosts, func(i, j int) bool { return head.Hosts[i].Ref < head.Hosts[j].Ref })
	js, err := json.Marshal(head)
	if err != nil {
		return nil, err
	}
	if string(js) != t.savedHead {
		if err := tx.SetAgentState(KeyPending, string(js)); err != nil {
			return nil, err
		}
		st.head = string(js)
	}
	return &st, nil
}

// saved applies what a committed transaction persisted.
func (t *Tracer) saved(st *savedState) {
	if st == nil {
		return
	}
	if st.head != "" {
		t.savedHead = st.head
	}
	if st.serverAt != "" {
		t.savedServerAt = st.serverAt
	}
	if st.contact != "" {
		t.savedContact = st.contact
	}
	for _, rk := range st.tasks {
		t.savedTasks[rk[0]] = rk[1]
	}
	for _, r := range st.dropTasks {
		delete(t.savedTasks, r)
	}
	for _, k := range st.changes {
		t.savedChanges[k] = true
	}
	for _, k := range st.dropChgs {
		delete(t.savedChanges, k)
	}
	clear(t.touchedTasks)
	clear(t.touchedChanges)
}

// holdBeforeGap notes the tasks known as a gap begins (noteImplied).
func (t *Tracer) holdBeforeGap() {
	t.beforeGap = make(map[string]bool, len(t.tasks))
	for ref := range t.tasks {
		t.beforeGap[ref] = true
	}
}
