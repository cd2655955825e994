package lifecycle

import (
	"context"
	"sort"
	"time"

	"github.com/vmlineage/vmlineage/agent/xapi"
)

// event.from keeps only the newest 256 to 512 deletions of each class
// (xen-api db_cache_types.ml Table.remove): a tracer that falls behind a
// busy pool misses task and VM dels without any error, and a task whose del
// is lost would wait forever for its end. Every batch carries the pool's
// count of live objects per class (valid_ref_counts); holding more than the
// pool counts means dels were dropped, and the watcher re-reads that
// class's refs (xapi.Reconciler). Tasks are checked at most this often: a
// missed del only delays a record, and get_all is one more round trip.
const taskReconcileEvery = time.Second

// Stale lists the classes the tracer holds more live objects of than the
// pool counted in the last batch (xapi.Reconciler).
func (t *Tracer) Stale() []string {
	var out []string
	if n, ok := t.counts["vm"]; ok && len(t.vms) > n {
		out = append(out, "VM")
	}
	if n, ok := t.counts["task"]; ok && t.liveKnown && len(t.live) > n && time.Since(t.lastTaskSync) >= taskReconcileEvery {
		out = append(out, "task")
	}
	return out
}

// Reconcile takes every object of class the tracer holds and refs lacks as
// deleted, as if event.from had said so (xapi.Reconciler). Its effects
// are committed with the next batch's.
func (t *Tracer) Reconcile(ctx context.Context, class string, refs []string) error {
	if err := t.load(ctx); err != nil {
		return err
	}
	alive := make(map[string]bool, len(refs))
	for _, r := range refs {
		alive[r] = true
	}
	var gone []string
	switch class {
	case "task":
		t.lastTaskSync = time.Now()
		for r := range t.live {
			if !alive[r] {
				gone = append(gone, r)
			}
		}
	case "VM", "vm":
		for r := range t.vms {
			if !alive[r] {
				gone = append(gone, r)
			}
		}
	default:
		return nil
	}
	if len(gone) == 0 {
		return nil
	}
	sort.Strings(gone)
	t.log.Info("dels event.from dropped, found by re-reading refs", "class", class, "gone", len(gone))
	evs := make([]xapi.Event, len(gone))
	for i, r := range gone {
		evs[i] = xapi.Event{Class: class, Operation: "del", Ref: r}
	}
	t.applyEvents(evs)
	t.stats.Reconciled += int64(len(gone))
	if t.openEvents >= flushEvents || time.Since(t.openSince) >= flushAfter {
		return t.Flush(ctx)
	}
	return nil
}
