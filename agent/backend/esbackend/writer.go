package esbackend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/outputs/elasticsearch"
)

// Sink takes VM documents: elasticsearch.Output.IndexVMs.
type Sink interface {
	IndexVMs(ctx context.Context, docs []elasticsearch.VMDoc) error
}

// Writer keeps the VM index in step with a lineage store: at its first
// start it writes every VM, then every VM the store changes (its records,
// state spans and address spans say which), with its whole subtree when a
// record gives it a parent (their ancestor paths change). Its position
// is kept in the store (agent_state), so a restarted agent goes on where
// it stopped and a document is at worst written twice. Every Refresh it
// rewrites the live VMs, which covers the one change the store's rows do
// not show (an address a running VM dropped without taking another).
type Writer struct {
	Store *lineage.Store
	Sink  Sink
	// Key names the position in agent_state (one per output).
	Key string
	Log *slog.Logger
	// Poll is how often the store is looked at (default 1s); Wake makes
	// it look now (the tracer's commits). Refresh defaults to 1h.
	Poll    time.Duration
	Refresh time.Duration
	Wake    <-chan struct{}
	// Batch is the number of documents per bulk request (default 500).
	Batch int
}

// Run writes until ctx ends.
func (w *Writer) Run(ctx context.Context) error {
	if w.Poll <= 0 {
		w.Poll = time.Second
	}
	if w.Refresh <= 0 {
		w.Refresh = time.Hour
	}
	if w.Batch <= 0 {
		w.Batch = 500
	}
	if w.Log == nil {
		w.Log = slog.New(slog.DiscardHandler)
	}
	cur, ok, err := w.cursor(ctx)
	if err != nil {
		return err
	}
	if !ok {
		// First start: the position now, then every VM (changes made
		// meanwhile are seen again from that position).
		if cur, err = w.Store.CurrentCursor(ctx); err != nil {
			return err
		}
		if err := w.all(ctx, false); err != nil {
			return err
		}
		if err := w.save(ctx, cur); err != nil {
			return err
		}
	}
	tick := time.NewTicker(w.Poll)
	defer tick.Stop()
	lastRefresh := time.Now()
	for {
		next, n, err := w.Step(ctx, cur)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			w.Log.Error("VM index: writing failed; retrying", "err", err)
		} else {
			cur = next
		}
		if time.Since(lastRefresh) >= w.Refresh {
			if err := w.all(ctx, true); err != nil && ctx.Err() == nil {
				w.Log.Error("VM index: refreshing the live VMs failed", "err", err)
			}
			lastRefresh = time.Now()
		}
		if n > 0 && err == nil {
			continue // more may be waiting
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		case <-w.Wake:
		}
	}
}

// Step writes the documents of the VMs changed after cur and returns the
// position after them and how many changes it saw.
func (w *Writer) Step(ctx context.Context, cur lineage.ChangeCursor) (lineage.ChangeCursor, int, error) {
	ch, next, err := w.Store.ChangedVMs(ctx, cur, 1000)
	if err != nil {
		return cur, 0, err
	}
	if next == cur {
		return cur, 0, nil
	}
	uuids := ch.VMs
	seen := map[string]bool{}
	for _, u := range uuids {
		seen[u] = true
	}
	for _, s := range ch.Subtrees {
		sub, err := w.Store.FamilyUUIDs(ctx, s, 0)
		if err != nil {
			return cur, 0, err
		}
		for _, u := range sub {
			if !seen[u] {
				seen[u] = true
				uuids = append(uuids, u)
			}
		}
	}
	if err := w.write(ctx, uuids); err != nil {
		return cur, 0, err
	}
	if err := w.save(ctx, next); err != nil {
		return cur, 0, err
	}
	return next, len(uuids) + 1, nil
}

// all writes every VM (liveOnly: those not destroyed).
func (w *Writer) all(ctx context.Context, liveOnly bool) error {
	after := ""
	for {
		uu, err := w.Store.VMUUIDsAfter(ctx, after, w.Batch, liveOnly)
		if err != nil || len(uu) == 0 {
			return err
		}
		if err := w.write(ctx, uu); err != nil {
			return err
		}
		after = uu[len(uu)-1]
	}
}

func (w *Writer) write(ctx context.Context, uuids []string) error {
	for len(uuids) > 0 {
		part := uuids[:min(len(uuids), w.Batch)]
		uuids = uuids[len(part):]
		docs := make([]elasticsearch.VMDoc, 0, len(part))
		for _, u := range part {
			h, err := w.Store.VMHistory(ctx, u)
			if errors.Is(err, lineage.ErrNotFound) {
				continue // a span of a VM the store does not hold as a VM
			}
			if err != nil {
				return err
			}
			d := BuildDoc(&h)
			docs = append(docs, elasticsearch.VMDoc{ID: u, Doc: d.Marshal()})
		}
		if len(docs) == 0 {
			continue
		}
		if err := w.Sink.IndexVMs(ctx, docs); err != nil {
			return err
		}
	}
	return nil
}

func (w *Writer) cursor(ctx context.Context) (lineage.ChangeCursor, bool, error) {
	var c lineage.ChangeCursor
	v, err := w.Store.AgentState(ctx, w.Key)
	if err != nil || v == "" {
		return c, false, err
	}
	if err := json.Unmarshal([]byte(v), &c); err != nil {
		return c, false, fmt.Errorf("VM index position %s: %w", w.Key, err)
	}
	return c, true, nil
}

func (w *Writer) save(ctx context.Context, c lineage.ChangeCursor) error {
	b, _ := json.Marshal(c)
	return w.Store.Update(ctx, func(tx *lineage.Tx) error { return tx.SetAgentState(w.Key, string(b)) })
}
