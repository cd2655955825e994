package lifecycle

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
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
	t.stats.Resyncs++
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
	// Completed tasks still in the pool may have been recorded before a
	// restart: ids are deterministic, so the store ignores a second copy.
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
	pool, err := t.store.AgentState(ctx, KeyPool)
	if err != nil {
		return err
	}
	if t.pool.uuid == "" {
		t.pool.uuid = pool
	}
	js, err := t.store.AgentState(ctx, KeyPending)
	if err != nil || js == "" {
		return err
	}
	var saved struct {
		Pool     poolState   `json:"pool"`
		ServerAt time.Time   `json:"server_at"`
		Tasks    []*taskInfo `json:"tasks"`
		Hosts    []hostState `json:"hosts"`
		Changes  []change    `json:"changes"`
	}
	if err := json.Unmarshal([]byte(js), &saved); err != nil {
		return fmt.Errorf("lifecycle: pending-task state in the store is corrupt (delete key %s to start afresh): %w", KeyPending, err)
	}
	t.pool = poolInfo{ref: saved.Pool.Ref, uuid: saved.Pool.UUID, name: saved.Pool.Name, master: saved.Pool.Master}
	t.serverAt = saved.ServerAt
	t.contact = saved.ServerAt
	for _, c := range saved.Changes {
		t.changes[c.Kind+"/"+c.VMUUID] = c
	}
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
	return nil
}

type poolState struct{ Ref, UUID, Name, Master string }
type hostState struct{ Ref, UUID, Name, Address string }

// savePending persists what a restart needs to finish the tasks in flight:
// the tasks not yet recorded, the pool, the hosts, the pool clock and the
// unexplained changes. It writes only what changed since the last batch:
// with many tasks in flight this runs for every batch.
func (t *Tracer) savePending(tx *lineage.Tx) (string, error) {
	var saved struct {
		Pool     poolState   `json:"pool"`
		ServerAt time.Time   `json:"server_at"`
		Tasks    []*taskInfo `json:"tasks"`
		Hosts    []hostState `json:"hosts"`
		Changes  []change    `json:"changes"`
	}
	saved.Pool = poolState{t.pool.ref, t.pool.uuid, t.pool.name, t.pool.master}
	saved.ServerAt = t.serverAt
	for _, tk := range t.tasks {
		if tk.Recorded {
			continue
		}
		if class, _, _ := record.SplitTaskName(tk.Name); len(tk.VMs) > 0 || class == "VM" {
			saved.Tasks = append(saved.Tasks, tk)
		}
	}
	sort.Slice(saved.Tasks, func(i, j int) bool { return saved.Tasks[i].Ref < saved.Tasks[j].Ref })
	for r, h := range t.hosts {
		saved.Hosts = append(saved.Hosts, hostState{r, h.uuid, h.name, h.address})
	}
	sort.Slice(saved.Hosts, func(i, j int) bool { return saved.Hosts[i].Ref < saved.Hosts[j].Ref })
	for _, c := range t.changes {
		saved.Changes = append(saved.Changes, c)
	}
	sort.Slice(saved.Changes, func(i, j int) bool {
		return saved.Changes[i].Kind+saved.Changes[i].VMUUID < saved.Changes[j].Kind+saved.Changes[j].VMUUID
	})
	js, err := json.Marshal(saved)
	if err != nil {
		return "", err
	}
	if string(js) == t.savedPending {
		return "", nil
	}
	return string(js), tx.SetAgentState(KeyPending, string(js))
}
