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
	t.stats.Resyncs++
	oldTasks := t.tasks
	t.reset()
	t.tasks = map[string]*taskInfo{}
	b := newBatch(t)
	b.resync = true
	b.hosts = true
	// Order matters: hosts and pool first (records name hosts), then VIFs and
	// guest metrics (VM facts), VMs, and tasks last.
	for _, class := range []string{"pool", "host", "vif", "vm_guest_metrics", "vm", "task"} {
		refs := make([]string, 0, len(snap[class]))
		for r := range snap[class] {
			refs = append(refs, r)
		}
		sort.Strings(refs)
		for _, r := range refs {
			if class == "task" {
				if old := oldTasks[r]; old != nil {
					t.tasks[r] = old
				}
			}
			b.apply(&xapi.Event{Class: class, Operation: "add", Ref: r, Snapshot: snap[class][r]})
		}
		if class == "vm" {
			// Tasks tied to VMs before the resync keep their history.
			for r, tk := range t.tasks {
				if old := oldTasks[r]; old != nil && old != tk {
					merge(old, tk)
					t.tasks[r] = old
				}
			}
		}
	}
	// Pending tasks that no longer exist ended while the agent was away.
	for r, old := range oldTasks {
		if _, ok := snap["task"][r]; ok || old.Recorded {
			continue
		}
		if _, ok := t.tasks[r]; !ok {
			t.tasks[r] = old
		}
		if !t.keyHeld(r) {
			old.Gone = true
			b.finish[r] = true
		}
	}
	// Completed tasks still in the pool may have been recorded before a
	// restart: ids are deterministic, so the store ignores a second copy.
	t.log.Info("resync", "reason", reason, "vms", len(t.vms), "tasks", len(snap["task"]), "hosts", len(t.hosts))
	return t.commit(ctx, b, token)
}

func merge(dst, src *taskInfo) {
	for k, v := range src.VMs {
		if _, ok := dst.VMs[k]; !ok {
			dst.VMs[k] = v
		}
	}
	for k, v := range src.VMUUIDs {
		if _, ok := dst.VMUUIDs[k]; !ok {
			dst.VMUUIDs[k] = v
		}
	}
	for _, r := range src.NewVMs {
		dst.NewVMs = appendUnique(dst.NewVMs, r)
	}
	if src.Seen {
		dst.Seen, dst.UUID, dst.Name, dst.Status = true, src.UUID, src.Name, src.Status
		dst.Created, dst.Finished, dst.Result, dst.ErrorInfo, dst.SubtaskOf = src.Created, src.Finished, src.Result, src.ErrorInfo, src.SubtaskOf
		dst.Done = src.Done
	}
}

// diff compares the pool (the tracer's fresh view) with the store and
// returns records for every difference no task explained.
func (t *Tracer) diff(b *batch) []pending {
	ctx := context.Background()
	baseline := false
	if v, _ := t.store.AgentState(ctx, KeyBaseline+"."+t.pool.uuid); v == "" {
		baseline = true
	}
	stored, err := t.store.VMs(ctx, t.pool.uuid)
	if err != nil {
		t.log.Error("resync: reading the store failed; no differences recorded", "err", err)
		return nil
	}
	now := t.now()
	explained := map[string]bool{}
	for _, tk := range t.tasks {
		if tk.Recorded && b.finish[tk.Ref] {
			for u := range tk.VMUUIDs {
				explained[u] = true
			}
		}
	}
	var out []pending
	add := func(vmUUID, name, parent string, a record.Activity, host, dest string, ref string) {
		r := record.Record{ID: record.ResyncID(t.pool.uuid, vmUUID, a, now), PoolUUID: t.pool.uuid, VMUUID: vmUUID, VMName: name,
			ParentVMUUID: parent, Activity: a, Start: now, End: now, Result: record.Success, Source: record.SourceResync,
			HostUUID: host, DestinationHostUUID: dest, Unknown: []string{"start", "end", "task_uuid"}}
		for _, h := range t.hosts {
			if h.uuid == host {
				r.HostName = h.name
			}
		}
		if r.HostUUID == "" {
			r.HostUUID, r.HostName = t.hostFor(&taskInfo{}, nil, nil)
		}
		out = append(out, pending{rec: r, vmRef: ref, parent: parent})
	}
	inStore := map[string]lineage.VM{}
	for _, v := range stored {
		inStore[v.UUID] = v
	}
	for ref, vi := range t.vms {
		if vi.control || vi.uuid == "" {
			continue
		}
		old, ok := inStore[vi.uuid]
		host := t.hostUUID(vi.resident)
		switch {
		case baseline || explained[vi.uuid]:
		case !ok || old.IsDestroyed():
			a, parent := record.Create, ""
			if vi.kind == lineage.KindSnapshot {
				a = record.Snapshot
				if sv := t.vms[vi.snapshotOf]; sv != nil {
					parent = sv.uuid
				}
			} else if vi.importTask != "" {
				a = record.Import
			}
			add(vi.uuid, vi.name, parent, a, host, "", ref)
			if parent != "" {
				t.via[vi.uuid] = string(a)
			}
		default:
			if a, dest := transition(old, vi, host); a != "" {
				add(vi.uuid, vi.name, t.parents[vi.uuid], a, pick(old.HostUUID, host), dest, ref)
			}
			if old.Kind != lineage.KindTemplate && vi.kind == lineage.KindTemplate {
				add(vi.uuid, vi.name, t.parents[vi.uuid], record.ConvertToTemplate, "", "", ref)
			}
		}
	}
	for _, v := range stored {
		if v.IsDestroyed() {
			continue
		}
		if _, alive := t.byUUID[v.UUID]; alive || baseline || explained[v.UUID] {
			continue
		}
		add(v.UUID, v.Name, t.parents[v.UUID], record.Destroy, "", "", "")
		b.deleted["resync:"+v.UUID] = &vmInfo{uuid: v.UUID, name: v.Name, kind: v.Kind}
	}
	b.baseline = baseline
	return out
}

func pick(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// transition names the activity that explains a change of power state or
// host seen only by comparing two states.
func transition(old lineage.VM, vi *vmInfo, host string) (record.Activity, string) {
	from, to := old.PowerState, vi.power
	switch {
	case from == to && from == xapi.Running && old.HostUUID != "" && host != "" && old.HostUUID != host:
		return record.Migrate, host
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

// load reads the tracer's persisted state once: pool, lineage parents and
// pending tasks.
func (t *Tracer) load(ctx context.Context) error {
	if t.parents != nil {
		return nil
	}
	pool, err := t.store.AgentState(ctx, KeyPool)
	if err != nil {
		return err
	}
	if t.pool.uuid == "" {
		t.pool.uuid = pool
	}
	vms, err := t.store.VMs(ctx, "")
	if err != nil {
		return err
	}
	t.parents = make(map[string]string, len(vms))
	t.via = make(map[string]string, len(vms))
	t.known = make(map[string]bool, len(vms))
	for _, v := range vms {
		t.known[v.UUID] = true
		if v.ParentUUID != "" {
			t.parents[v.UUID] = v.ParentUUID
			t.via[v.UUID] = v.ParentVia
		}
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
	}
	if err := json.Unmarshal([]byte(js), &saved); err != nil {
		return fmt.Errorf("lifecycle: pending-task state in the store is corrupt (delete key %s to start afresh): %w", KeyPending, err)
	}
	t.pool = poolInfo{ref: saved.Pool.Ref, uuid: saved.Pool.UUID, name: saved.Pool.Name, master: saved.Pool.Master}
	t.serverAt = saved.ServerAt
	for _, h := range saved.Hosts {
		t.hosts[h.Ref] = hostInfo{uuid: h.UUID, name: h.Name, address: h.Address}
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
// the tasks not yet recorded, the pool, the hosts and the pool clock.
func (t *Tracer) savePending(tx *lineage.Tx) error {
	var saved struct {
		Pool     poolState   `json:"pool"`
		ServerAt time.Time   `json:"server_at"`
		Tasks    []*taskInfo `json:"tasks"`
		Hosts    []hostState `json:"hosts"`
	}
	saved.Pool = poolState{t.pool.ref, t.pool.uuid, t.pool.name, t.pool.master}
	saved.ServerAt = t.serverAt
	for _, tk := range t.tasks {
		if !tk.Recorded && len(tk.VMs)+len(tk.Name) > 0 && !strings.HasPrefix(tk.Name, "VDI.") {
			saved.Tasks = append(saved.Tasks, tk)
		}
	}
	sort.Slice(saved.Tasks, func(i, j int) bool { return saved.Tasks[i].Ref < saved.Tasks[j].Ref })
	for r, h := range t.hosts {
		saved.Hosts = append(saved.Hosts, hostState{r, h.uuid, h.name, h.address})
	}
	sort.Slice(saved.Hosts, func(i, j int) bool { return saved.Hosts[i].Ref < saved.Hosts[j].Ref })
	js, err := json.Marshal(saved)
	if err != nil {
		return err
	}
	return tx.SetAgentState(KeyPending, string(js))
}
