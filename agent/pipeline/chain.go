package pipeline

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/record"
)

// chainKeeper seals the records the store holds unsealed (when a second
// source or the audit log may still complete them) and takes the chain
// checkpoints that go to every output.
type chainKeeper struct {
	st     *lineage.Store
	log    *slog.Logger
	settle time.Duration
	every  time.Duration
	sealed func(n int) // after records were sealed (wakes the outputs)
	// complete, when set, may complete an unsealed record (its actor,
	// joined from the audit log) and say it is final, so it is sealed before
	// the settle time.
	complete func(*record.Record) (changed, final bool)
	// otherSettled, when set, is the log source's Settled: a record the
	// tracer saw only in part (fields listed unknown that the logs reveal)
	// also waits until the logs are committed past its end, at most
	// otherWait in each process, so that their record can complete it
	// (record.Merge) before the chain fixes it.
	otherSettled func() time.Time
	otherWait    time.Duration
	started      time.Time
	// mayName, when set, is the tracer's MayName: a creation whose new VM
	// is unknown waits unsealed while the tracer may still name it (it has
	// not seen the pool since, or a VM of that name waits to be matched),
	// each record at most nameWait in each process.
	mayName  func(*record.Record) bool
	nameWait time.Duration
	heldMu   sync.Mutex
	held     map[string]time.Time // record id → when this process first held it for the tracer

	mu     sync.Mutex
	marks  []seqMark // storage seq seen at a time, oldest first
	loaded bool
	saved  int64 // newest seq of the marks last persisted
}

// marksKey keeps the marks across restarts: a record's settle time runs from
// when it was stored, not from the start of the process that seals it (an
// agent restarted more often than chain.settle would otherwise never seal).
const marksKey = "chain.settle_marks"

// otherSlack covers the difference between the pool's second-precision
// times and the logs'.
const otherSlack = 5 * time.Second

type seqMark struct {
	at  time.Time
	seq int64
}

// sealPass seals what has waited settle (every record stored before the
// newest mark at least settle old) and what ready says is complete. With
// all set, it seals everything unsealed (shutdown of a store that defers
// nothing more, tests).
func (k *chainKeeper) sealPass(ctx context.Context, all bool) (int, error) {
	last, err := k.st.LastSeq(ctx)
	if err != nil {
		return 0, err
	}
	now := time.Now()
	k.mu.Lock()
	if !k.loaded {
		k.loaded = true
		k.marks = append(k.loadMarks(ctx), k.marks...)
	}
	// The oldest time a seq was seen is the one that counts.
	if n := len(k.marks); n == 0 || k.marks[n-1].seq < last {
		k.marks = append(k.marks, seqMark{now, last})
	}
	var upTo int64
	i := 0
	for ; i < len(k.marks) && now.Sub(k.marks[i].at) >= k.settle; i++ {
		upTo = k.marks[i].seq
	}
	if i > 1 {
		k.marks = k.marks[i-1:]
	}
	var persist []seqMark
	if n := len(k.marks); n > 0 && k.marks[n-1].seq > k.saved {
		persist = append(persist, k.marks...)
		k.saved = k.marks[n-1].seq
	}
	k.mu.Unlock()
	if persist != nil {
		k.saveMarks(ctx, persist)
	}
	var fn lineage.SealFunc
	scan := upTo
	if all {
		scan = last
	} else if k.complete != nil || k.otherSettled != nil || k.mayName != nil {
		// Records stored after upTo are sealed early only when final; any
		// waits while the log source may still complete it.
		scan = last
		fn = func(seq int64, r *record.Record) (bool, bool) {
			changed, final := false, false
			if k.complete != nil {
				changed, final = k.complete(r)
			}
			return (seq <= upTo || final) && !k.awaitsLogs(r) && !k.awaitsTracer(r), changed
		}
	}
	if scan <= 0 {
		return 0, nil
	}
	out, err := k.st.Seal(ctx, scan, fn, 20000)
	if n := len(out); n > 0 && k.sealed != nil {
		k.sealed(n)
	}
	return len(out), err
}

// awaitsLogs says r, a record the tracer saw only in part, waits for the
// log source (see otherSettled). So does one whose actor lacks the
// session's originator: a root session's is only in xensource.log's
// Session.create line, which xapi writes later than the audit line that
// makes the actor final.
func (k *chainKeeper) awaitsLogs(r *record.Record) bool {
	if k.otherSettled == nil || r.Source != record.SourceXAPI {
		return false
	}
	partial := r.Actor != nil && r.Actor.Originator == ""
	for _, f := range r.Unknown {
		if f != "task_uuid" && f != "start" {
			partial = true // the logs never know a task's uuid
		}
	}
	if !partial || (k.otherWait > 0 && time.Since(k.started) >= k.otherWait) {
		return false
	}
	end := r.End
	if end.IsZero() {
		end = r.Start
	}
	return k.otherSettled().Before(end.Add(otherSlack))
}

// awaitsTracer says r, a creation whose new VM is unknown, waits for the
// tracer to name it (see mayName).
func (k *chainKeeper) awaitsTracer(r *record.Record) bool {
	if k.mayName == nil {
		return false
	}
	k.heldMu.Lock()
	defer k.heldMu.Unlock()
	since, held := k.held[r.ID]
	unnamed := r.Activity.Creating() && r.Result == record.Success && r.VMUUID == "" && r.IsUnknown("vm_uuid")
	if !unnamed || !k.mayName(r) || (held && time.Since(since) >= k.nameWait) {
		delete(k.held, r.ID)
		return false
	}
	if !held {
		if k.held == nil {
			k.held = map[string]time.Time{}
		}
		k.held[r.ID] = time.Now()
	}
	return true
}

func (k *chainKeeper) loadMarks(ctx context.Context) []seqMark {
	v, err := k.st.AgentState(ctx, marksKey)
	if err != nil || v == "" {
		return nil
	}
	var raw [][2]int64
	if err := json.Unmarshal([]byte(v), &raw); err != nil {
		k.log.Warn("chain: unreadable settle marks; records stored before this start wait chain.settle again", "err", err)
		return nil
	}
	out := make([]seqMark, 0, len(raw))
	for _, m := range raw {
		out = append(out, seqMark{time.UnixMilli(m[0]), m[1]})
		k.saved = max(k.saved, m[1])
	}
	return out
}

func (k *chainKeeper) saveMarks(ctx context.Context, ms []seqMark) {
	raw := make([][2]int64, len(ms))
	for i, m := range ms {
		raw[i] = [2]int64{m.at.UnixMilli(), m.seq}
	}
	js, _ := json.Marshal(raw)
	if err := k.st.Update(ctx, func(tx *lineage.Tx) error { return tx.SetAgentState(marksKey, string(js)) }); err != nil && ctx.Err() == nil {
		k.log.Debug("chain: saving settle marks failed", "err", err)
	}
}

// run seals every half second and checkpoints every k.every until ctx
// ends; then it seals what has settled and takes the shutdown checkpoint.
func (k *chainKeeper) run(ctx context.Context, deferred bool) {
	k.checkpoint(context.WithoutCancel(ctx), "start")
	sealTick := time.NewTicker(500 * time.Millisecond)
	defer sealTick.Stop()
	var cpTick <-chan time.Time
	if k.every > 0 {
		t := time.NewTicker(k.every)
		defer t.Stop()
		cpTick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			fin := context.WithoutCancel(ctx)
			if deferred {
				if _, err := k.sealPass(fin, false); err != nil {
					k.log.Warn("chain: sealing at shutdown failed", "err", err)
				}
			}
			k.checkpoint(fin, "shutdown")
			return
		case <-sealTick.C:
			if !deferred {
				continue
			}
			if _, err := k.sealPass(ctx, false); err != nil && ctx.Err() == nil {
				k.log.Warn("chain: sealing failed", "err", err)
			}
		case <-cpTick:
			k.checkpoint(ctx, "periodic")
		}
	}
}

func (k *chainKeeper) checkpoint(ctx context.Context, reason string) {
	cp, added, err := k.st.AddCheckpoint(ctx, reason, time.Now(), false)
	if err != nil {
		k.log.Warn("chain: checkpoint failed", "err", err)
		return
	}
	if added {
		k.log.Info("chain checkpoint", "seq", cp.Seq, "hash", cp.Hash, "reason", reason)
		if k.sealed != nil {
			k.sealed(0)
		}
	}
}
