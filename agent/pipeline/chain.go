package pipeline

import (
	"context"
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

	mu    sync.Mutex
	marks []seqMark // storage seq seen at a time, oldest first
}

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
	k.marks = append(k.marks, seqMark{now, last})
	var upTo int64
	i := 0
	for ; i < len(k.marks) && now.Sub(k.marks[i].at) >= k.settle; i++ {
		upTo = k.marks[i].seq
	}
	if i > 1 {
		k.marks = k.marks[i-1:]
	}
	k.mu.Unlock()
	var fn lineage.SealFunc
	scan := upTo
	if all {
		scan = last
	} else if k.complete != nil {
		// Records stored after upTo are sealed early only when final.
		scan = last
		fn = func(seq int64, r *record.Record) (bool, bool) {
			changed, final := k.complete(r)
			return seq <= upTo || final, changed
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
