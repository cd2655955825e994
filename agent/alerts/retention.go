package alerts

import (
	"context"
	"database/sql"
	"fmt"
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
// bound stops growing.
type Retention struct {
	MaxAge    time.Duration
	MaxAlerts int64
}

func (r Retention) bounded() bool { return r.MaxAge > 0 || r.MaxAlerts > 0 }

// Pruning runs inside the batch commits while alerts come in: each commit
// deletes up to pruneSlack more aged alerts than it stores, so a log at
// its bound keeps its size and a backlog shrinks. An idle writer prunes
// every pruneIdleEvery, pruneChunk alerts per transaction, as long as no
// alert waits to be stored.
const (
	pruneSlack     = 64
	pruneChunk     = 4096
	pruneIdleEvery = 10 * time.Second
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
	// stored alert (gaps only make this keep fewer, never more).
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
	// The cut is the end of the run of oldest alerts that have to go: a
	// walk from the head, at most limit rows, that stops at the first kept
	// one. (Receipt times follow seq unless the clock stepped back; an
	// alert stored after such a step waits for those before it.)
	st, err := l.txStmt(ctx, tx, "SELECT seq, received_ms FROM alerts ORDER BY seq LIMIT ?")
	if err != nil {
		return 0, nil, err
	}
	l.queries.Add(1)
	rows, err := st.QueryContext(ctx, limit)
	if err != nil {
		return 0, nil, err
	}
	cut := int64(-1)
	for rows.Next() {
		var seq, recv int64
		if err := rows.Scan(&seq, &recv); err != nil {
			rows.Close()
			return 0, nil, err
		}
		if seq > countCut && recv >= ageCut {
			break
		}
		cut = seq
		deleted++
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, nil, err
	}
	if deleted == 0 {
		return 0, nil, nil
	}
	del, err := l.txStmt(ctx, tx, "DELETE FROM alerts WHERE seq<=?")
	if err != nil {
		return 0, nil, err
	}
	l.queries.Add(1)
	if _, err := del.ExecContext(ctx, cut); err != nil {
		return 0, nil, err
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
	}
}

// dropIndexed removes pruned rows from the in-memory index (they no
// longer count); l.mu is held.
func (l *alertLog) dropIndexed(gone []vmAt) {
	for _, g := range gone {
		l.idx.remove(g.vm, g.at)
	}
}

// pruneIdle prunes in transactions of its own while the writer has
// nothing to store; called by the writer, under writeMu.
func (l *alertLog) pruneIdle(ctx context.Context) error {
	r := l.retention()
	if !r.bounded() {
		return nil
	}
	for {
		l.mu.Lock()
		busy := len(l.queue) > 0 || l.closed
		l.mu.Unlock()
		if busy {
			return nil
		}
		tx, err := l.wconn.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		n, gone, err := l.prune(ctx, tx, r, time.Now(), 0, pruneChunk)
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
		if n < pruneChunk {
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

// SetRetention bounds the alert log from its next commit on (the writer
// also prunes within pruneIdleEvery when idle). A process that only
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
