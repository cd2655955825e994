package alerts

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmlineage/vmlineage/plugins"
)

// alertSchema is the alert log (a SQLite file of its own, see AlertsPath):
// the alerts as received and as sent out, and which VMs each named when,
// which is what lineage-suspects counts ("k VMs of one family within a
// window").
const alertSchema = `
CREATE TABLE IF NOT EXISTS alerts (
  seq         INTEGER PRIMARY KEY AUTOINCREMENT,
  id          TEXT NOT NULL UNIQUE,
  time_ms     INTEGER NOT NULL,
  received_ms INTEGER NOT NULL,
  source      TEXT NOT NULL DEFAULT '',
  matched     INTEGER NOT NULL,
  json        TEXT NOT NULL,
  enriched    TEXT
);
CREATE INDEX IF NOT EXISTS alerts_time ON alerts(time_ms);
CREATE TABLE IF NOT EXISTS alert_vms (
  alert_seq INTEGER NOT NULL,
  vm_uuid   TEXT NOT NULL,
  time_ms   INTEGER NOT NULL,
  field     TEXT NOT NULL DEFAULT '',
  value     TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS alert_vms_vm ON alert_vms(vm_uuid, time_ms);
CREATE TABLE IF NOT EXISTS alert_log_state (
  id  INTEGER PRIMARY KEY CHECK (id = 1),
  gen INTEGER NOT NULL,
  vm_rowid INTEGER NOT NULL DEFAULT 0
);
`

// alertLogStateRowid adds alert_log_state.vm_rowid to a log made before
// it: the highest alert_vms rowid ever given out. Rows get theirs from it
// (commit), so a rowid is never given out twice, even after retention
// emptied the table (SQLite would start again at 1), and sync, which
// reads other processes' rows by rowid, misses none.
const alertLogStateRowid = "ALTER TABLE alert_log_state ADD COLUMN vm_rowid INTEGER NOT NULL DEFAULT 0"

// alertLog stores alerts off the enrichment path. An alert is visible to
// AlertedVMs from the moment it is matched (so two alerts of one family a
// millisecond apart see each other), and written by one goroutine in
// batches of whatever queued meanwhile (group commit): the enriched alert
// never waits for a disk write or for another writer of the store (the
// tracer's large transactions hold SQLite's write lock).
//
// Until its batch is committed an alert is in the in-memory overlay.
// AlertedVMs reads the committed rows and adds the overlay entries of
// batches not committed yet. Which batches a read saw comes from the read
// itself: every commit stores its batch number (alert_log_state.gen) in
// the same transaction, and the read's one statement returns that number
// with the rows, from the same snapshot. So an alert is counted exactly
// once whichever side of a commit the read falls on, and a read never
// waits for a commit. (It used to: a lock held around COMMIT stalled
// every enrichment for up to a second whenever the commit ran a WAL
// checkpoint behind a busy disk.)
//
// A crash loses the stored copies of the alerts of the batch being
// gathered or written (they have gone out enriched); Close writes what is
// queued.
type alertLog struct {
	db  *sql.DB
	log *slog.Logger
	// queries counts SQL statements (the benchmark reports them per alert).
	queries *atomic.Int64
	stmts   sync.Map // query -> *sql.Stmt, prepared once: parsing SQL costs more than these queries

	mu   sync.Mutex
	byVM map[string][]*pending
	byID map[string]*pending
	// unresolved: alerts admitted to a worker but not yet tied to their
	// VMs; a read waits for them (see begin).
	unresolved map[*pending]struct{}
	// recent remembers the ids of the last alerts committed, so that a
	// re-sent alert (a sensor's retry) is not counted again while its
	// copy waits to be found a duplicate at commit.
	recent    map[string]bool
	recentIDs []string
	recentAt  int
	queue     []*pending
	wake      chan struct{}
	hurry     chan struct{} // ends a linger: a full batch, a flush or close
	closed    bool
	done      chan struct{}
	written   uint64 // last batch numbered (alert_log_state.gen at start)
	writing   bool   // run holds a batch taken from queue
	writeMu   sync.Mutex
	// idx answers AlertedVMs from memory (see alertIndex); l.mu.
	idx *alertIndex
	// slow: the last commits that took slowCommit or more; l.mu.
	slow []Span

	// The writer's own connection: every commit goes through it, so its
	// data_version changes only when another process commits to the log
	// (see sync). Used under writeMu.
	wconn       *sql.Conn
	dataVersion int64
	tailRowid   int64          // alert_vms rows up to this one are in idx
	ownRowids   map[int64]bool // rows this process wrote after tailRowid
	packed      []byte         // the packed documents of the batch being written

	ret        atomic.Pointer[Retention] // nil: keep every alert
	pruned     atomic.Int64              // alerts retention deleted
	pruneNow   atomic.Bool               // a new bound: the writer prunes at once
	pruneEvery time.Duration             // pruneEvery; tests set 0 (every commit)
	lastPrune  time.Time                 // writeMu
}

// pending is an alert not yet committed.
type pending struct {
	id  string
	at  int64 // alert time, ms
	vms []string
	// named: the VMs the entry counts for, as matched; the stored row
	// is tied to these, whichever copy's row is stored (see finish).
	named []plugins.AlertVM
	// storedCopy: the log held the alert already when it was matched
	// (resolveMatch): it counts for no VM, whichever copy matches later.
	storedCopy bool
	// resolved is closed once the entry's VMs are known (see resolve);
	// state says how far it is: begun, admitted (a worker has it), resolved.
	resolved chan struct{}
	state    int
	gen      uint64 // batch it is being written in; 0 while queued or still being enriched
	row      *alertRow
	refs     int // Enrich calls holding it (a re-sent alert shares the entry)
}

type alertRow struct {
	id       string
	timeMS   int64
	received int64
	source   string
	json     string
	enriched []byte
	vms      []plugins.AlertVM
}

// packBatch packs the documents of batch (see packDoc) into l.packed:
// [i][0] the alert as received, [i][1] as sent (nil when none).
func (l *alertLog) packBatch(batch []*pending) ([][2][]byte, error) {
	buf := l.packed[:0]
	ends := make([][2]int, len(batch))
	var err error
	for i, p := range batch {
		if buf, err = packDoc(buf, []byte(p.row.json)); err != nil {
			return nil, err
		}
		ends[i][0] = len(buf)
		if p.row.enriched != nil {
			if buf, err = packDoc(buf, p.row.enriched); err != nil {
				return nil, err
			}
		}
		ends[i][1] = len(buf)
	}
	l.packed = buf
	if cap(buf) > 1<<20 {
		l.packed = nil // an outsized batch: its buffer is not kept
	}
	docs := make([][2][]byte, len(batch))
	start := 0
	for i, e := range ends {
		docs[i][0] = buf[start:e[0]:e[0]]
		if e[1] > e[0] {
			docs[i][1] = buf[e[0]:e[1]:e[1]]
		}
		start = e[1]
	}
	return docs, nil
}

// writerCacheKiB is the page cache of the connection that writes the
// alert log. Each alert changes a page of each index at random (alert_vms
// by VM, alerts by id), so a batch touches many pages: with the 256 KiB
// of the reading connections (16 pages) they did not stay in the cache
// and were read again from the file, the same page several times over.
// Enrich1MVMs: the host's reads fell from 66-69 to 59.5 KiB per alert and
// its syscalls by 1.1-1.4 per alert (what it writes did not change).
const writerCacheKiB = 8 << 10

func newAlertLog(ctx context.Context, db *sql.DB, log *slog.Logger, queries *atomic.Int64) (*alertLog, error) {
	return newAlertLogMax(ctx, db, log, queries, maxIndexedAlerts)
}

func newAlertLogMax(ctx context.Context, db *sql.DB, log *slog.Logger, queries *atomic.Int64, maxIndexed int) (*alertLog, error) {
	l := &alertLog{db: db, log: log, queries: queries,
		byVM: map[string][]*pending{}, byID: map[string]*pending{}, unresolved: map[*pending]struct{}{}, recent: map[string]bool{}, recentIDs: make([]string, recentAlerts), wake: make(chan struct{}, 1), hurry: make(chan struct{}, 1), done: make(chan struct{}),
		idx: newAlertIndex(maxIndexed), ownRowids: map[int64]bool{}, pruneEvery: pruneEvery}
	// Batch numbers go on from the last one committed: a read compares
	// them with the number stored.
	var gen sql.NullInt64
	if err := db.QueryRowContext(ctx, "SELECT MAX(gen) FROM alert_log_state").Scan(&gen); err != nil {
		return nil, fmt.Errorf("alerts: read the alert log's batch number: %w", err)
	}
	l.written = uint64(gen.Int64)
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("alerts: alert log connection: %w", err)
	}
	if _, err := conn.ExecContext(ctx, fmt.Sprintf("PRAGMA cache_size=%d", -writerCacheKiB)); err != nil {
		conn.Close()
		return nil, fmt.Errorf("alerts: alert log connection: %w", err)
	}
	l.wconn = conn
	if err := l.loadIndex(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("alerts: read the alert log into memory: %w", err)
	}
	go l.run()
	return l, nil
}

// loadIndex fills the index with the newest alerts of the log (all of
// them when they fit), and notes where the log ends and its data_version,
// in one read transaction: what other processes commit after it is read
// by sync.
func (l *alertLog) loadIndex(ctx context.Context) error {
	tx, err := l.wconn.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := tx.QueryRowContext(ctx, "PRAGMA data_version").Scan(&l.dataVersion); err != nil {
		return err
	}
	var last sql.NullInt64
	if err := tx.QueryRowContext(ctx, "SELECT MAX(rowid) FROM alert_vms").Scan(&last); err != nil {
		return err
	}
	l.tailRowid = last.Int64
	max := l.idx.max
	rows, err := tx.QueryContext(ctx, "SELECT vm_uuid, time_ms FROM alert_vms ORDER BY time_ms DESC LIMIT ?", max+1)
	if err != nil {
		return err
	}
	defer rows.Close()
	type entry struct {
		vm string
		at int64
	}
	var es []entry
	for rows.Next() {
		var e entry
		if err := rows.Scan(&e.vm, &e.at); err != nil {
			return err
		}
		es = append(es, e)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if len(es) > max {
		// More than fit: keep those after the oldest time that does not
		// fit whole.
		cut := es[max].at
		for len(es) > 0 && es[len(es)-1].at <= cut {
			es = es[:len(es)-1]
		}
		l.idx.from = cut + 1
	}
	for i := len(es) - 1; i >= 0; i-- {
		l.idx.add(es[i].vm, es[i].at)
	}
	return nil
}

// syncEvery is how often an idle writer looks for alerts another process
// wrote to the log (a busy one looks after each commit): they count for
// AlertedVMs from the index this much later at most.
const syncEvery = 100 * time.Millisecond

// syncNow is sync from any goroutine.
func (l *alertLog) syncNow(ctx context.Context) error {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	return l.sync(ctx)
}

// sync adds to the index the alerts other processes (a `vmlineage enrich`
// beside the agent) committed to the log since it last looked. Its
// connection's data_version changes only when another connection commits,
// and every commit of this process goes through that connection; the
// rows after tailRowid it did not write are the others'. Called under
// writeMu.
func (l *alertLog) sync(ctx context.Context) error {
	var v int64
	if err := l.wconn.QueryRowContext(ctx, "PRAGMA data_version").Scan(&v); err != nil {
		return err
	}
	if v == l.dataVersion {
		// No one else wrote: the rows after tailRowid are this process's.
		for id := range l.ownRowids {
			l.tailRowid = max(l.tailRowid, id)
		}
		clear(l.ownRowids)
		return nil
	}
	l.queries.Add(1)
	rows, err := l.wconn.QueryContext(ctx, "SELECT rowid, vm_uuid, time_ms FROM alert_vms WHERE rowid>? ORDER BY rowid", l.tailRowid)
	if err != nil {
		return err
	}
	defer rows.Close()
	tail := l.tailRowid
	type entry struct {
		vm string
		at int64
	}
	var foreign []entry
	for rows.Next() {
		var id int64
		var e entry
		if err := rows.Scan(&id, &e.vm, &e.at); err != nil {
			return err
		}
		tail = max(tail, id)
		if !l.ownRowids[id] {
			foreign = append(foreign, e)
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	l.mu.Lock()
	for _, e := range foreign {
		l.idx.add(e.vm, e.at)
	}
	l.mu.Unlock()
	l.tailRowid, l.dataVersion = tail, v
	for id := range l.ownRowids {
		if id <= tail {
			delete(l.ownRowids, id)
		}
	}
	return nil
}

// recentAlerts is how many committed alert ids are remembered.
const recentAlerts = 1 << 16

// States of a pending entry.
const (
	pendingBegun    = iota // entered in arrival order, waiting for a worker
	pendingAdmitted        // a worker has it; its VMs are being matched
	pendingResolved        // tied to its VMs: counted by AlertedVMs
)

// begin enters the alert in the log in arrival order, before it is tied
// to VMs: that (a store query) runs later, on a worker, and resolve then
// makes the alert visible to AlertedVMs for the VMs it matched. A read
// first waits for every admitted alert (one a worker has) to be resolved.
// Callers admit alerts in arrival order (Ordered takes a worker for each
// in turn), so every alert that arrived before a reading one has been
// admitted and is waited for: each alert counts for those that arrived
// after it exactly as when they ran one by one, while the intake itself
// does no query. Waiting only for admitted alerts cannot deadlock: they
// resolve without waiting for anything.
func (l *alertLog) begin(id string, at time.Time) *pending {
	l.mu.Lock()
	defer l.mu.Unlock()
	prev := l.byID[id]
	if prev != nil && prev.gen == 0 && prev.refs > 0 {
		prev.refs++ // re-sent while the first copy is being enriched: one entry
		return prev
	}
	p := &pending{id: id, at: at.UnixMilli(), refs: 1, resolved: make(chan struct{})}
	if prev != nil || l.recent[id] {
		p.state = pendingResolved
		close(p.resolved)
		return p // re-sent after the first copy: stored once, counted once
	}
	l.byID[id] = p
	return p
}

// admit says a worker has the alert: reads wait for it from now on.
func (l *alertLog) admit(p *pending) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if p.state == pendingBegun {
		p.state = pendingAdmitted
		l.unresolved[p] = struct{}{}
	}
}

// resolve ties a begun alert to the VMs it matched (none when matching
// failed: it must still be called). Only the first call for an entry
// counts (a re-sent alert shares its first copy's entry).
func (l *alertLog) resolve(p *pending, vms []plugins.AlertVM) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.resolveLocked(p, vms)
}

func (l *alertLog) resolveLocked(p *pending, vms []plugins.AlertVM) {
	if p.state == pendingResolved {
		// A copy re-sent while the first is enriched shares its entry.
		// When the first copy's matching failed (its request ended, a
		// store error) and this one's found VMs, the alert counts for
		// these from now on and is stored tied to them.
		if len(p.named) == 0 && len(vms) > 0 && !p.storedCopy && p.gen == 0 && l.byID[p.id] == p {
			l.count(p, vms)
		}
		return
	}
	delete(l.unresolved, p)
	p.state = pendingResolved
	l.count(p, vms)
	close(p.resolved)
}

// count makes the entry count for the VMs; l.mu is held.
func (l *alertLog) count(p *pending, vms []plugins.AlertVM) {
	p.named = vms
	for _, v := range vms {
		p.vms = append(p.vms, v.UUID)
		l.byVM[v.UUID] = append(l.byVM[v.UUID], p)
		l.idx.add(v.UUID, p.at)
	}
}

// resolveMatch is resolve for an alert just matched: one the log holds
// already counts for no VM again.
func (l *alertLog) resolveMatch(ctx context.Context, p *pending, vms []plugins.AlertVM) {
	stored := len(vms) > 0 && l.storedBefore(ctx, p)
	l.mu.Lock()
	defer l.mu.Unlock()
	if stored {
		p.storedCopy = true // re-sent: its stored copy counts
		vms = nil
	}
	l.resolveLocked(p, vms)
}

// storedBefore says whether the entry's alert is in the log already: a
// sensor re-sent it after this process started, or after its id left
// recent. Such an alert must count for no VM again (the stored copy
// counts): resolve it with none. A failed read says no; the commit then
// finds the copy and takes the entry's count back, only later.
func (l *alertLog) storedBefore(ctx context.Context, p *pending) bool {
	l.mu.Lock()
	fresh := l.byID[p.id] == p && p.state != pendingResolved
	l.mu.Unlock()
	if !fresh {
		return false // a copy of an alert this process holds: counted once already
	}
	if ctx.Err() != nil {
		return false
	}
	// Without the context's end, as the lineage reads on the alert path
	// (README, "Tests and benchmark"): one keyed read, and a context that
	// can end costs a goroutine per query.
	ctx = context.WithoutCancel(ctx)
	st, err := l.stmt(ctx, "SELECT 1 FROM alerts WHERE id=?")
	if err != nil {
		return false
	}
	l.queries.Add(1)
	var one int
	return st.QueryRowContext(ctx, p.id).Scan(&one) == nil
}

// awaitResolved waits until the alerts admitted so far are tied to their
// VMs.
func (l *alertLog) awaitResolved(ctx context.Context) error {
	l.mu.Lock()
	if len(l.unresolved) == 0 {
		l.mu.Unlock()
		return nil
	}
	waits := make([]chan struct{}, 0, len(l.unresolved))
	for p := range l.unresolved {
		waits = append(waits, p.resolved)
	}
	l.mu.Unlock()
	for _, c := range waits {
		select {
		case <-c:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// finish queues the alert (and its enriched form) for writing.
func (l *alertLog) finish(p *pending, row *alertRow) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.resolveLocked(p, nil) // never tied to VMs: counts for none
	// The row is tied to the VMs the entry counts for, so that the log
	// and the index agree whichever copy's match counted.
	row.vms = p.named
	if p.refs--; p.row == nil || p.refs <= 0 {
		p.row = row // the last enrichment of a re-sent alert is the one stored
	}
	if p.refs > 0 {
		return
	}
	if l.closed {
		// Close has already written the queue: write this one alone.
		l.mu.Unlock()
		l.write([]*pending{p})
		l.mu.Lock()
		return
	}
	l.queue = append(l.queue, p)
	signal(l.wake)
	if len(l.queue) >= lingerBatch {
		signal(l.hurry)
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// commitLinger is how long the writer lets a batch gather before it
// commits it, unless lingerBatch alerts are queued first. Each commit
// writes the log's shared pages (indexes, sequence, batch number) again
// and empties the page caches of the connections that read AlertedVMs:
// with a commit per alert or two, storing cost about 0.15 ms of CPU per
// alert at 600 alerts/s. Meanwhile the alerts are counted from the
// overlay; a crash loses at most this much more of their stored copies.
// 50 ms rather than 10: a commit rewrites whole 16 KiB pages, the same
// index pages at each commit; Enrich1MVMs (1,000 alerts/s) wrote 19.3
// instead of 31-32 KiB and made 20.0-20.6 instead of 22.0-22.4 syscalls
// per alert (3 alternating pairs, 2026-12-03; CPU and p99 within noise).
const (
	commitLinger = 50 * time.Millisecond
	lingerBatch  = 256
)

func (l *alertLog) run() {
	defer close(l.done)
	for {
		l.mu.Lock()
		n, closed := len(l.queue), l.closed
		l.mu.Unlock()
		if n == 0 {
			if closed {
				// A short run (vmlineage enrich) ends within the bound
				// too, not only the commits pruneEvery apart.
				l.writeMu.Lock()
				if err := l.pruneIdle(context.Background(), true); err != nil {
					l.log.Warn("alert retention", "error", err)
				}
				l.writeMu.Unlock()
				return
			}
			select {
			case <-l.wake:
			case <-time.After(syncEvery):
				l.writeMu.Lock()
				if err := l.sync(context.Background()); err != nil {
					l.log.Warn("reading the alerts other processes stored failed", "error", err)
				}
				l.writeMu.Unlock()
			}
			l.writeMu.Lock()
			if l.pruneDue(time.Now()) {
				if err := l.pruneIdle(context.Background(), false); err != nil {
					l.log.Warn("alert retention", "error", err)
				}
			}
			l.writeMu.Unlock()
			continue
		}
		if n < lingerBatch && !closed {
			l.linger()
		}
		l.mu.Lock()
		batch := l.queue
		l.queue = nil
		l.writing = true
		l.mu.Unlock()
		l.write(batch)
		l.mu.Lock()
		l.writing = false
		l.mu.Unlock()
	}
}

// linger waits commitLinger or until hurried.
func (l *alertLog) linger() {
	t := time.NewTimer(commitLinger)
	defer t.Stop()
	select {
	case <-t.C:
	case <-l.hurry:
	}
}

// write commits a batch, retrying a failing store a few times; alerts it
// cannot store are logged (they have gone out enriched).
func (l *alertLog) write(batch []*pending) {
	l.writeMu.Lock() // batches commit in the order they are numbered
	defer l.writeMu.Unlock()
	for attempt := 0; ; attempt++ {
		began := time.Now()
		again, gone, err := l.commit(batch)
		took := time.Since(began)
		l.mu.Lock()
		if took >= slowCommit {
			if len(l.slow) == maxSlowCommits {
				l.slow = append(l.slow[:0], l.slow[1:]...)
			}
			l.slow = append(l.slow, Span{At: began, Took: took})
		}
		if err == nil || attempt >= 4 {
			for _, p := range batch {
				l.forget(p)
			}
			// An alert stored before (re-sent after a restart) is in the
			// index from the log already.
			for _, p := range again {
				for _, vm := range p.vms {
					l.idx.remove(vm, p.at)
				}
			}
			if err == nil {
				l.dropIndexed(gone)
			}
			l.mu.Unlock()
			if err != nil {
				l.log.Error("alerts could not be stored (they went out enriched)", "alerts", len(batch), "error", err)
			}
			if err := l.sync(context.Background()); err != nil {
				l.log.Warn("reading the alerts other processes stored failed", "error", err)
			}
			return
		}
		for _, p := range batch {
			p.gen = 0
		}
		l.mu.Unlock()
		l.log.Warn("storing alerts failed; retrying", "alerts", len(batch), "error", err)
		time.Sleep(time.Duration(50<<attempt) * time.Millisecond)
	}
}

// Span is when something began and how long it took.
type Span struct {
	At   time.Time
	Took time.Duration
}

// A commit that takes slowCommit or more (a WAL checkpoint, typically) is
// remembered (Service.SlowCommits), the last maxSlowCommits of them.
const (
	slowCommit     = 20 * time.Millisecond
	maxSlowCommits = 256
)

// slowCommits returns the slow commits remembered, oldest first.
func (l *alertLog) slowCommits() []Span {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.slow)
}

// forget drops a committed alert from the overlay; l.mu is held.
func (l *alertLog) forget(p *pending) {
	for _, u := range p.vms {
		list := l.byVM[u]
		for i, q := range list {
			if q == p {
				list = append(list[:i], list[i+1:]...)
				break
			}
		}
		if len(list) == 0 {
			delete(l.byVM, u)
		} else {
			l.byVM[u] = list
		}
	}
	if l.byID[p.id] == p {
		delete(l.byID, p.id)
	}
	if !l.recent[p.id] {
		if old := l.recentIDs[l.recentAt]; old != "" {
			delete(l.recent, old)
		}
		l.recentIDs[l.recentAt] = p.id
		l.recentAt = (l.recentAt + 1) % recentAlerts
		l.recent[p.id] = true
	}
}

// commit writes the batch in one transaction; again lists its alerts the
// log held before (re-sent ones), gone the alert_vms rows retention
// deleted in it (before the inserts, so that they reuse the freed pages).
func (l *alertLog) commit(batch []*pending) (again []*pending, gone []vmAt, err error) {
	ctx := context.Background()
	// Packed before the transaction, which then holds the log's lock
	// only for SQLite's own work.
	docs, err := l.packBatch(batch)
	if err != nil {
		return nil, nil, err
	}
	tx, err := l.wconn.BeginTx(ctx, nil)
	if err != nil {
		return nil, nil, err
	}
	defer tx.Rollback()
	own := map[int64]bool{}
	// Exec, not RETURNING seq: a statement that returns rows costs a
	// database/sql Rows per alert. A conflict changes no row. NOT EXISTS
	// first: a conflicting insert would still use up a seq, and the count
	// bound cuts by seq (retention.go), so every re-sent alert would cost
	// a kept one.
	ins, err := l.txStmt(ctx, tx, `INSERT INTO alerts(id,time_ms,received_ms,source,matched,json,enriched)
		SELECT ?1,?2,?3,?4,?5,?6,?7 WHERE NOT EXISTS (SELECT 1 FROM alerts WHERE id=?1)
		ON CONFLICT(id) DO NOTHING`)
	if err != nil {
		return nil, nil, err
	}
	insVM, err := l.txStmt(ctx, tx, "INSERT INTO alert_vms(rowid,alert_seq,vm_uuid,time_ms,field,value) VALUES(?,?,?,?,?,?)")
	if err != nil {
		return nil, nil, err
	}
	upd, err := l.txStmt(ctx, tx, "UPDATE alerts SET enriched=? WHERE id=?")
	if err != nil {
		return nil, nil, err
	}
	// The batch's number comes from the stored one, under the write lock
	// this statement takes: another process writing the log (vmlineage
	// enrich beside the agent) numbers its batches from the same row, so
	// the stored number rises with every commit whoever made it, which is
	// what a read's comparison needs. Numbered from this process's own
	// count, a batch could get a number a read already took for committed
	// and drop it uncounted.
	// It also returns the last alert_vms rowid given out (see
	// alertLogStateRowid); the table's own highest covers a log that
	// older code wrote to.
	mark, err := l.txStmt(ctx, tx, `INSERT INTO alert_log_state(id,gen) VALUES(1,?) ON CONFLICT(id) DO UPDATE SET gen=max(gen+1, excluded.gen)
		RETURNING gen, max(vm_rowid, COALESCE((SELECT MAX(rowid) FROM alert_vms), 0))`)
	if err != nil {
		return nil, nil, err
	}
	setRowid, err := l.txStmt(ctx, tx, "UPDATE alert_log_state SET vm_rowid=? WHERE id=1")
	if err != nil {
		return nil, nil, err
	}
	l.mu.Lock()
	next := l.written + 1
	l.mu.Unlock()
	var gen uint64
	var rowid int64
	if err := mark.QueryRowContext(ctx, int64(next)).Scan(&gen, &rowid); err != nil {
		return nil, nil, err
	}
	// Numbered before COMMIT: a read whose snapshot holds the commit must
	// find the entries numbered (or it would count them twice).
	l.mu.Lock()
	l.written = gen
	for _, p := range batch {
		p.gen = gen
	}
	l.mu.Unlock()
	// Unnumbered again before the rollback (deferred earlier, so run
	// after this) lets another process commit under the same number: a
	// read must not take these entries for that batch.
	defer func() {
		if err != nil {
			l.mu.Lock()
			for _, p := range batch {
				p.gen = 0
			}
			l.mu.Unlock()
		}
	}()
	pruned := 0
	if now := time.Now(); l.pruneDue(now) {
		if pruned, gone, err = l.prune(ctx, tx, l.retention(), now, len(batch), pruneMax); err != nil {
			return nil, nil, fmt.Errorf("retention: %w", err)
		}
	}
	n := 0
	for i, p := range batch {
		r := p.row
		var enriched any // NULL when the alert has no enriched form
		if docs[i][1] != nil {
			enriched = docs[i][1]
		}
		n++
		res, err := ins.ExecContext(ctx, r.id, r.timeMS, r.received, r.source, len(r.vms) > 0, docs[i][0], enriched)
		if err != nil {
			return nil, nil, err
		}
		var seq int64
		changed, err := res.RowsAffected()
		if err == nil && changed > 0 {
			seq, err = res.LastInsertId()
		}
		if err != nil {
			return nil, nil, err
		}
		if changed == 0 {
			// Stored before (a re-sent alert): counted once, its enriched
			// form refreshed.
			n++
			if _, err := upd.ExecContext(ctx, enriched, r.id); err != nil {
				return nil, nil, err
			}
			again = append(again, p)
			continue
		}
		for _, v := range r.vms {
			n++
			rowid++
			if _, err := insVM.ExecContext(ctx, rowid, seq, v.UUID, r.timeMS, v.Field, v.Value); err != nil {
				return nil, nil, err
			}
			own[rowid] = true
		}
	}
	if len(own) > 0 {
		n++
		if _, err := setRowid.ExecContext(ctx, rowid); err != nil {
			return nil, nil, err
		}
	}
	l.queries.Add(int64(n + 3))
	if err := tx.Commit(); err != nil {
		return nil, nil, err
	}
	for id := range own {
		l.ownRowids[id] = true
	}
	l.pruned.Add(int64(pruned))
	return again, gone, nil
}

// flush returns once the alerts finished before it are written.
func (l *alertLog) flush() {
	signal(l.hurry)
	for {
		l.mu.Lock()
		idle := len(l.queue) == 0 && !l.writing
		l.mu.Unlock()
		if idle {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// close writes what is queued.
func (l *alertLog) close() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	l.mu.Unlock()
	signal(l.wake)
	signal(l.hurry)
	<-l.done
}

// release closes what close left open for alerts finished after it (they
// are written one by one): the statements and the writer's connection.
// Call it before closing the database.
func (l *alertLog) release() {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	l.stmts.Range(func(_, v any) bool { v.(*sql.Stmt).Close(); return true })
	l.wconn.Close()
}

// stmt returns the statement for q, prepared once.
func (l *alertLog) stmt(ctx context.Context, q string) (*sql.Stmt, error) {
	if st, ok := l.stmts.Load(q); ok {
		return st.(*sql.Stmt), nil
	}
	st, err := l.db.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	if prev, loaded := l.stmts.LoadOrStore(q, st); loaded {
		st.Close()
		return prev.(*sql.Stmt), nil
	}
	return st, nil
}

func (l *alertLog) txStmt(ctx context.Context, tx *sql.Tx, q string) (*sql.Stmt, error) {
	st, err := l.stmt(ctx, q)
	if err != nil {
		return nil, err
	}
	return tx.StmtContext(ctx, st), nil
}

type overlayHit struct {
	vm string
	p  *pending
}

// alertedVMs says which of the VMs were named by an alert in [since, until]
// (both inclusive), committed or not.
func (l *alertLog) alertedVMs(ctx context.Context, uuids []string, since, until time.Time) ([]plugins.AlertedVM, error) {
	s, u := since.UnixMilli(), until.UnixMilli()
	uuids = uniqueUUIDs(uuids) // a uuid asked twice counts once, on either path
	if err := l.awaitResolved(ctx); err != nil {
		return nil, fmt.Errorf("alerted VMs: waiting for the alerts before: %w", err)
	}
	l.mu.Lock()
	if l.idx.covers(s) {
		out := make([]plugins.AlertedVM, 0, len(uuids))
		for _, vm := range uuids {
			if f, la, n := l.idx.count(vm, s, u); n > 0 {
				out = append(out, plugins.AlertedVM{UUID: vm, First: msTime(f), Last: msTime(la), Count: int64(n)})
			}
		}
		l.mu.Unlock()
		sortAlerted(out)
		return out, nil
	}
	l.mu.Unlock()
	var hits []overlayHit
	// The overlay first, the rows second. An entry committed before the
	// overlay was taken is no longer in it; one committed between the two
	// is in the rows, and its batch number, read after the rows, is at
	// most the one the rows came with. (The number at the time the overlay
	// was taken would not do: a queued entry has none yet.)
	l.mu.Lock()
	for _, vm := range uuids {
		for _, p := range l.byVM[vm] {
			if p.at >= s && p.at <= u {
				hits = append(hits, overlayHit{vm, p})
			}
		}
	}
	l.mu.Unlock()
	agg := map[string]*plugins.AlertedVM{}
	seen, err := l.aggregate(ctx, uuids, s, u, agg)
	if err != nil {
		return nil, fmt.Errorf("alerted VMs: %w", err)
	}
	l.mu.Lock()
	keep := hits[:0]
	for _, h := range hits {
		// A batch numbered at most the stored number was committed: a
		// failed attempt's entries are renumbered before any later batch
		// can commit.
		if g := h.p.gen; g == 0 || g > seen[h.vm] {
			keep = append(keep, h)
		}
	}
	l.mu.Unlock()
	for _, h := range keep {
		t := msTime(h.p.at)
		a := agg[h.vm]
		if a == nil {
			agg[h.vm] = &plugins.AlertedVM{UUID: h.vm, First: t, Last: t, Count: 1}
			continue
		}
		a.Count++
		if t.Before(a.First) {
			a.First = t
		}
		if t.After(a.Last) {
			a.Last = t
		}
	}
	out := make([]plugins.AlertedVM, 0, len(agg))
	for _, a := range agg {
		out = append(out, *a)
	}
	sortAlerted(out)
	return out, nil
}

// uniqueUUIDs drops repeated uuids, keeping the first of each (uuids
// itself when a short list has none: a family's list allocates nothing).
func uniqueUUIDs(uuids []string) []string {
	if len(uuids) <= 16 {
		dup := false
		for i := 1; i < len(uuids) && !dup; i++ {
			dup = slices.Contains(uuids[:i], uuids[i])
		}
		if !dup {
			return uuids
		}
	}
	seen := make(map[string]bool, len(uuids))
	out := make([]string, 0, len(uuids))
	for _, u := range uuids {
		if !seen[u] {
			seen[u] = true
			out = append(out, u)
		}
	}
	return out
}

// sortAlerted orders by first alert, then uuid.
func sortAlerted(out []plugins.AlertedVM) {
	sort.Slice(out, func(i, j int) bool {
		if !out[i].First.Equal(out[j].First) {
			return out[i].First.Before(out[j].First)
		}
		return out[i].UUID < out[j].UUID
	})
}

// aggregate adds the committed alerts of the VMs in [s, u] (ms) to agg and
// returns, for each VM, the last batch committed in the snapshot its rows
// were read from (one statement reads the rows and alert_log_state
// together; a long list is read in several).
func (l *alertLog) aggregate(ctx context.Context, uuids []string, s, u int64, agg map[string]*plugins.AlertedVM) (map[string]uint64, error) {
	const chunk = 256
	seen := make(map[string]uint64, len(uuids))
	for rest := uuids; len(rest) > 0; {
		part := rest[:min(chunk, len(rest))]
		rest = rest[len(part):]
		list, in := inList(part)
		st, err := l.stmt(ctx, `SELECT NULL, 0, 0, 0, COALESCE((SELECT gen FROM alert_log_state WHERE id=1), 0)
			UNION ALL
			SELECT vm_uuid, MIN(time_ms), MAX(time_ms), COUNT(*), 0 FROM alert_vms
			WHERE time_ms>=?1 AND time_ms<=?2 AND vm_uuid IN (`+list+`) GROUP BY vm_uuid`)
		if err != nil {
			return nil, err
		}
		l.queries.Add(1)
		rows, err := st.QueryContext(ctx, append([]any{s, u}, in...)...)
		if err != nil {
			return nil, err
		}
		var gen int64
		for rows.Next() {
			var vm sql.NullString
			var a plugins.AlertedVM
			var f, la, g int64
			if err := rows.Scan(&vm, &f, &la, &a.Count, &g); err != nil {
				rows.Close()
				return nil, err
			}
			if !vm.Valid {
				gen = g
				continue
			}
			a.UUID, a.First, a.Last = vm.String, msTime(f), msTime(la)
			agg[a.UUID] = &a
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		for _, vm := range part {
			seen[vm] = uint64(gen)
		}
	}
	return seen, nil
}

// inList is "?3,?4,…" for the values after two leading parameters. Lists
// are padded to a power of two (repeating the last value) so that few
// distinct statements are prepared.
func inList(vals []string) (string, []any) {
	n := 1
	for n < len(vals) {
		n *= 2
	}
	args := make([]any, n)
	var b strings.Builder
	for i := range args {
		args[i] = vals[min(i, len(vals)-1)]
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "?%d", i+3)
	}
	return b.String(), args
}
