package alerts

import (
	"context"
	"database/sql"
	"fmt"
	"runtime"
	"time"
)

// Retention bounds the alert log, which otherwise keeps every alert
// forever (about 3 KiB of enriched JSON each, plus its index entries):
// alerts received more than MaxAge ago go, and so do the oldest ones past
// the newest MaxAlerts. A zero field sets no bound of its kind.
//
// Alerts go in the order they were received (the log's seq), oldest
// first, each with the rows that tie it to its VMs, and they stop
// counting for AlertedVMs as they go: a detector's window longer than
// MaxAge sees fewer alerts (lineage-suspects' default is 24 h). Freed
// pages are reused by the alerts that come in next, so a log past its
// bound stops growing. Another process with the same log open (a
// `vmlineage enrich` beside the agent) keeps counting, from its in-memory
// index, the alerts the agent pruned, until it restarts or its index
// lets them go as it fills: its sync reads only the rows added.
type Retention struct {
	MaxAge    time.Duration
	MaxAlerts int64
}

func (r Retention) bounded() bool { return r.MaxAge > 0 || r.MaxAlerts > 0 }

// The writer prunes at most every pruneEvery (alertLog.pruneEvery), all
// that has aged up to pruneMax alerts at a time: in the transaction of the
// batch then due while alerts come in, alone (and again at once while
// there is more) when idle. A log at its bound so keeps its size, give or
// take pruneEvery's worth of alerts, and MaxAlerts is exceeded by at most
// that much.
//
// Seldom and in bulk, not a little at every commit: the alert id and VM
// indexes are keyed at random, so each deleted alert rewrites a page of
// each, and deletes spread over many commits rewrite the same pages again
// and again. The bulk is deleted in steps of pruneStep alerts with a yield
// between them, so that enrichment goroutines get the CPU meanwhile.
// Enrich1MVMs with a log at its bound (VMLINEAGE_BENCH_ALERTLOG=steady,
// 100,000 alerts aging out at 1,000/s; 2026-12-03, no steal; p99 of the
// same log without retention in the same spell in brackets):
//
//	at every commit (about 50 alerts)   p99 22-36 ms (10-11)  host CPU 0.95-1.07 ms/alert  writes 50 KiB/alert
//	every 5 s, one statement            p99 69-97 ms (15-17)  host CPU 0.90                 writes 32-36
//	every 5 s, steps of 128 with yields p99 45-59 ms (16-18)  host CPU 0.85-0.91            writes 33-36
//
// (host CPU without retention: 0.79-0.91.) How often, in alternating
// pairs of the stepped prune: every second was worse than every 5 s in
// 3 of 3 (p99 45-49 against 26-43 ms, host CPU 0.92-0.95 against
// 0.80-0.89), every 10 s better than every 5 s in 2 of 3 (20 s runs: p99
// 43-50 against 39-90 ms): much of a prune's cost is per prune, not per
// alert (it rewrites much of the indexes, whatever it deletes). A sleep
// of 10 ms between steps instead of a yield (the transaction held open
// longer, the batches waiting behind it) was not shown better: p99 58,
// 96 and 60 against 38, 33 and 100 ms (3 pairs). A prune of 5-10 s of alerts still takes a few
// hundred milliseconds, and the alerts enriched meanwhile wait: a log
// that dropped whole partitions would not pay per alert.
const (
	pruneEvery = 10 * time.Second
	pruneMax   = 16384
	pruneChunk = 256 // alert_vms rows per delete statement
	pruneStep  = 128 // alerts per delete statement
)

// vmAt is one alert_vms row that pruning deleted.
type vmAt struct {
	vm string
	at int64
}

// prune deletes, in tx, up to limit of the oldest alerts the retention
// no longer keeps, and their alert_vms rows, which it returns (for the
// in-memory index). now is the time retention counts back from; incoming
// alerts are about to be stored in the same transaction (they count
// against MaxAlerts).
func (l *alertLog) prune(ctx context.Context, tx *sql.Tx, r Retention, now time.Time, incoming, limit int) (deleted int, gone []vmAt, err error) {
	if !r.bounded() || limit <= 0 {
		return 0, nil, nil
	}
	// The highest seq a count bound keeps no longer. seq grows by one per
	// stored alert (a re-sent one takes none, see commit; a gap would
	// only make this keep fewer, never more).
	countCut := int64(-1)
	if r.MaxAlerts > 0 {
		var top sql.NullInt64
		l.queries.Add(1)
		if err := tx.QueryRowContext(ctx, "SELECT MAX(seq) FROM alerts").Scan(&top); err != nil {
			return 0, nil, err
		}
		countCut = top.Int64 + int64(incoming) - r.MaxAlerts
	}
	ageCut := int64(-1 << 62)
	if r.MaxAge > 0 {
		ageCut = now.Add(-r.MaxAge).UnixMilli()
	}
	// The cut is the end of the run of oldest alerts that have to go,
	// within limit alerts of the head: found by a binary search over seq
	// with point reads. A walk read every row, whole enriched documents
	// and all, only to be read again by the delete: Enrich1MVMs steady,
	// 3 alternating pairs, reads 83.3-83.8 → 80.4-80.6 KiB per alert, p99
	// lower in 2 (37.8, 37.0, 49.7 against 62.4, 47.1, 45.5 ms). Receipt
	// times follow seq unless the clock stepped back; around such a step
	// an alert may go up to the step's size early.
	first, err := l.seqAtOrAfter(ctx, tx, 0)
	if err != nil || first.seq < 0 || !first.aged(countCut, ageCut) {
		return 0, nil, err
	}
	lo, hi := first.seq, first.seq+int64(limit) // lo goes, hi is past the limit
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		next, err := l.seqAtOrAfter(ctx, tx, mid)
		if err != nil {
			return 0, nil, err
		}
		if next.seq >= 0 && next.seq < hi && next.aged(countCut, ageCut) {
			lo = next.seq
		} else {
			hi = mid
		}
	}
	cut := lo
	del, err := l.txStmt(ctx, tx, "DELETE FROM alerts WHERE seq<=?")
	if err != nil {
		return 0, nil, err
	}
	// In steps, letting other goroutines run between them: a prune of
	// thousands of alerts is a few hundred milliseconds of CPU.
	for c := first.seq + pruneStep - 1; ; c += pruneStep {
		c = min(c, cut)
		l.queries.Add(1)
		res, err := del.ExecContext(ctx, c)
		if err != nil {
			return 0, nil, err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return 0, nil, err
		}
		deleted += int(n)
		if c == cut {
			break
		}
		runtime.Gosched()
	}
	// alert_vms has no index on alert_seq (it would cost every alert an
	// index write): its rows are stored in seq order (each commit inserts
	// an alert's rows right after it, under SQLite's write lock), so
	// those of the deleted alerts are at its head. The walk is bounded
	// by rowid and repeated while it finds a full chunk.
	delVM, err := l.txStmt(ctx, tx, `DELETE FROM alert_vms WHERE rowid IN (SELECT rowid FROM alert_vms ORDER BY rowid LIMIT ?1)
		AND alert_seq<=?2 RETURNING vm_uuid, time_ms`)
	if err != nil {
		return 0, nil, err
	}
	for {
		l.queries.Add(1)
		rows, err := delVM.QueryContext(ctx, pruneChunk, cut)
		if err != nil {
			return 0, nil, err
		}
		n := 0
		for rows.Next() {
			var g vmAt
			if err := rows.Scan(&g.vm, &g.at); err != nil {
				rows.Close()
				return 0, nil, err
			}
			gone = append(gone, g)
			n++
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return 0, nil, err
		}
		if n < pruneChunk {
			return deleted, gone, nil
		}
		runtime.Gosched()
	}
}

// seqReceived is an alert's seq and receipt time; seq -1: none.
type seqReceived struct{ seq, received int64 }

// aged says whether the alert is past a count cut (seq) or an age cut
// (receipt, ms).
func (r seqReceived) aged(countCut, ageCut int64) bool {
	return r.seq <= countCut || r.received < ageCut
}

// seqAtOrAfter reads the first alert at or after seq.
func (l *alertLog) seqAtOrAfter(ctx context.Context, tx *sql.Tx, seq int64) (seqReceived, error) {
	st, err := l.txStmt(ctx, tx, "SELECT seq, received_ms FROM alerts WHERE seq>=? ORDER BY seq LIMIT 1")
	if err != nil {
		return seqReceived{}, err
	}
	l.queries.Add(1)
	r := seqReceived{seq: -1}
	if err := st.QueryRowContext(ctx, seq).Scan(&r.seq, &r.received); err != nil && err != sql.ErrNoRows {
		return seqReceived{}, err
	}
	return r, nil
}

// dropIndexed removes pruned rows from the in-memory index (they no
// longer count); l.mu is held.
func (l *alertLog) dropIndexed(gone []vmAt) {
	for _, g := range gone {
		l.idx.remove(g.vm, g.at)
	}
}

// pruneDue says whether the writer prunes now (a bound just set, or
// pruneEvery passed), and if so notes the time; under writeMu.
func (l *alertLog) pruneDue(now time.Time) bool {
	if !l.retention().bounded() {
		return false
	}
	if l.pruneNow.Swap(false) || now.Sub(l.lastPrune) >= l.pruneEvery {
		l.lastPrune = now
		return true
	}
	return false
}

// pruneIdle prunes in transactions of its own while the writer has
// nothing to store (final: at close, whatever comes); called by the
// writer, under writeMu.
func (l *alertLog) pruneIdle(ctx context.Context, final bool) error {
	r := l.retention()
	if !r.bounded() {
		return nil
	}
	for {
		l.mu.Lock()
		busy := len(l.queue) > 0 || l.closed
		l.mu.Unlock()
		if busy && !final {
			l.pruneNow.Store(true) // the next commit prunes what is left
			return nil
		}
		tx, err := l.wconn.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		n, gone, err := l.prune(ctx, tx, r, time.Now(), 0, pruneMax)
		if err == nil && n > 0 {
			err = tx.Commit()
		} else {
			tx.Rollback()
		}
		if err != nil {
			return fmt.Errorf("pruning the alert log: %w", err)
		}
		if n > 0 {
			l.mu.Lock()
			l.dropIndexed(gone)
			l.mu.Unlock()
			l.pruned.Add(int64(n))
		}
		if n < pruneMax {
			return nil
		}
	}
}

// retention is the bound in force (none until SetRetention).
func (l *alertLog) retention() Retention {
	if r := l.ret.Load(); r != nil {
		return *r
	}
	return Retention{}
}

// SetRetention bounds the alert log from the writer's next commit on, or
// at once when it is idle. A process that only
// reads the log (the web view's marks) leaves it unset.
func (s *Service) SetRetention(r Retention) {
	s.log.setRetention(r)
}

func (l *alertLog) setRetention(r Retention) {
	l.ret.Store(&r)
	l.pruneNow.Store(true)
	signal(l.wake)
}

// Pruned is how many alerts retention deleted since the service opened.
func (s *Service) Pruned() int64 { return s.log.pruned.Load() }
