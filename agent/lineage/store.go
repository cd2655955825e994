// Package lineage is vmlineage's embedded store: lifecycle records, the VM
// family tree, each VM's power state, host, names and addresses over time,
// and the agent's own state (event token, pending tasks, log offsets). It is
// one SQLite file (modernc.org/sqlite, WAL) that a person can open with the
// sqlite3 shell; README.md documents the tables.
package lineage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// Store is an open lineage store. It is safe for concurrent use: writes are
// serialised by SQLite, reads run beside them (WAL).
type Store struct {
	db   *sql.DB
	path string

	// Writes go through one connection with a large page cache: the
	// tracer's working set (the live VMs' rows and the index pages that
	// records land in) is some tens of megabytes, and with the default
	// 2 MB cache every transaction read most of it back from the file.
	// Readers keep the small default cache.
	wmu   sync.Mutex
	wconn *sql.Conn
	wvm   *sql.Stmt // LookupVM on wconn

	mu    sync.Mutex
	stmts map[string]*sql.Stmt // prepared once, used by every write transaction

	// deferSeal leaves new records unsealed for Seal to chain later (the
	// agent, while an audit log or a second source may still complete
	// them); otherwise PutRecord seals at once.
	deferSeal atomic.Bool
	merged    atomic.Int64

	refusedParents atomic.Uint64
	refusedMu      sync.Mutex
	refused        map[[2]string]bool // claims refused (under refusedMu)
	// OnRefusedParent, when set before the first write, hears of each
	// parent link refused because it would close a cycle in the tree.
	OnRefusedParent func(child, parent string)
}

func (s *Store) refuseParent(child, parent string) {
	// Once per claim: the tracer writes a VM again with the parent it was
	// told (on a rename, say), and one warning says it all.
	s.refusedMu.Lock()
	if s.refused == nil {
		s.refused = map[[2]string]bool{}
	}
	seen := s.refused[[2]string{child, parent}]
	if !seen && len(s.refused) < 10000 {
		s.refused[[2]string{child, parent}] = true
	}
	s.refusedMu.Unlock()
	if seen {
		return
	}
	s.refusedParents.Add(1)
	if s.OnRefusedParent != nil {
		s.OnRefusedParent(child, parent)
	}
}

// RefusedParents counts the parent links refused since Open because they
// would have made a VM its own ancestor, each claim once.
func (s *Store) RefusedParents() uint64 { return s.refusedParents.Load() }

// Open opens or creates the store at path. The directory is created with
// mode 0750 when missing.
func Open(path string) (*Store, error) {
	if path == "" {
		return nil, errors.New("lineage: empty store path")
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("lineage: create store directory: %w", err)
		}
	}
	q := url.Values{}
	// WAL with synchronous=NORMAL survives a killed process (SIGKILL) without
	// losing a committed transaction; only a power loss can drop the last few.
	// busy_timeout comes first: switching a fresh file to WAL while another
	// process opens it too would otherwise fail at once (SQLITE_BUSY).
	for _, p := range []string{"busy_timeout(10000)", "journal_mode(WAL)", "synchronous(NORMAL)", "foreign_keys(0)", "temp_store(MEMORY)", "cache_size(-2000)", "wal_autocheckpoint(8192)"} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("lineage: open %s: %w", path, err)
	}
	db.SetMaxOpenConns(4)
	s := &Store{db: db, path: path, stmts: map[string]*sql.Stmt{}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for wait := 10 * time.Millisecond; ; wait = min(2*wait, 500*time.Millisecond) {
		if s.wconn, err = db.Conn(ctx); err == nil {
			if _, err = s.wconn.ExecContext(ctx, fmt.Sprintf("PRAGMA cache_size=%d", -writerCacheKiB)); err != nil {
				s.wconn.Close()
			}
		}
		// A fresh file switched to WAL by another process at the same
		// moment answers SQLITE_BUSY without waiting (SQLite will not wait
		// where waiting could deadlock): try again.
		if err == nil || !isBusy(err) || sleepCtx(ctx, wait) != nil {
			break
		}
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("lineage: open %s: %w", path, err)
	}
	if err := s.migrate(); err != nil {
		s.wconn.Close()
		db.Close()
		return nil, err
	}
	return s, nil
}

// isBusy reports SQLITE_BUSY (any extended code).
func isBusy(err error) bool {
	var c interface{ Code() int }
	return errors.As(err, &c) && c.Code()&0xff == 5
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// writerCacheKiB is the page cache of the writing connection.
const writerCacheKiB = 32 << 10

func (s *Store) migrate() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var v int
	if err := s.db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return fmt.Errorf("lineage: %s is not a vmlineage store: %w", s.path, err)
	}
	if v > schemaVersion {
		return fmt.Errorf("lineage: %s has schema version %d, newer than this vmlineage (%d)", s.path, v, schemaVersion)
	}
	if _, err := s.db.ExecContext(ctx, schema); err != nil {
		return fmt.Errorf("lineage: create schema in %s: %w", s.path, err)
	}
	if v == 0 {
		v = 1 // a new file: schema made the v1 tables
	}
	for ; v < schemaVersion; v++ {
		err := s.Update(ctx, func(tx *Tx) error {
			tx.upgrading = true
			// Another process (the agent and a command opening a fresh
			// store at once) may have upgraded since the version was read:
			// read it again inside the (immediate) transaction.
			var cur int
			if err := tx.tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&cur); err != nil {
				return err
			}
			if cur > v {
				return nil
			}
			for _, q := range upgrades[v] {
				if _, err := tx.tx.ExecContext(ctx, q); err != nil {
					return fmt.Errorf("%s: %w", strings.Fields(q)[0:3], err)
				}
			}
			if v == 1 {
				if err := tx.sealLegacy(); err != nil {
					return err
				}
			}
			_, err := tx.tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version=%d", v+1))
			return err
		})
		if err != nil {
			return fmt.Errorf("lineage: upgrade %s from schema %d: %w", s.path, v, err)
		}
	}
	return nil
}

// Path is the file the store lives in.
func (s *Store) Path() string { return s.path }

// DB exposes the database for read-only tooling (status, exports).
func (s *Store) DB() *sql.DB { return s.db }

// Close closes the store.
func (s *Store) Close() error {
	s.mu.Lock()
	for _, st := range s.stmts {
		st.Close()
	}
	s.stmts = map[string]*sql.Stmt{}
	s.mu.Unlock()
	s.wmu.Lock()
	if s.wvm != nil {
		s.wvm.Close()
	}
	if s.wconn != nil { // a reader (OpenReader) has none
		s.wconn.Close()
	}
	s.wmu.Unlock()
	return s.db.Close()
}

// prepared returns the statement for q, prepared once for the store: SQL
// parsing would otherwise dominate the tracer's small transactions.
func (s *Store) prepared(ctx context.Context, q string) (*sql.Stmt, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.stmts[q]; ok {
		return st, nil
	}
	st, err := s.db.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	s.stmts[q] = st
	return st, nil
}

// Update runs fn in one write transaction: everything fn does is committed
// together or not at all. The tracer commits each event batch, its records
// and its event token this way, so a killed agent resumes exactly.
func (s *Store) Update(ctx context.Context, fn func(*Tx) error) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("lineage: begin: %w", err)
	}
	// A transaction once begun runs to its end: the driver watches a
	// cancellable context with a goroutine per statement, which cost the
	// tracer more than many of its statements; busy_timeout bounds waits.
	ctx = context.WithoutCancel(ctx)
	sqlTx, err := s.wconn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("lineage: begin: %w", err)
	}
	tx := &Tx{tx: sqlTx, ctx: ctx, store: s}
	if err := fn(tx); err != nil {
		sqlTx.Rollback()
		return err
	}
	if err := tx.saveHead(); err != nil {
		sqlTx.Rollback()
		return err
	}
	if err := sqlTx.Commit(); err != nil {
		return fmt.Errorf("lineage: commit: %w", err)
	}
	return nil
}

// AgentState returns the value stored under key, "" when absent.
func (s *Store) AgentState(ctx context.Context, key string) (string, error) {
	var v string
	err := s.db.QueryRowContext(ctx, "SELECT value FROM agent_state WHERE key=?", key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("lineage: read state %q: %w", key, err)
	}
	return v, nil
}

// EachAgentState calls fn for every key that starts with prefix, in key
// order (a range scan of the primary key).
func (s *Store) EachAgentState(ctx context.Context, prefix string, fn func(key, value string) error) error {
	rows, err := s.db.QueryContext(ctx, "SELECT key,value FROM agent_state WHERE key>=? AND key<? ORDER BY key", prefix, prefixEnd(prefix))
	if err != nil {
		return fmt.Errorf("lineage: read state %q*: %w", prefix, err)
	}
	defer rows.Close()
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return err
		}
		if err := fn(k, v); err != nil {
			return err
		}
	}
	return rows.Err()
}

// prefixEnd is the smallest string above every string that starts with p
// (SQLite compares TEXT bytewise).
func prefixEnd(p string) string {
	b := []byte(p)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1])
		}
	}
	return "\xff\xff\xff\xff"
}

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v).UTC()
}

func nullMS(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMilli()
}

func fromNullMS(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return fromMS(v.Int64)
}

// itoa keeps strconv out of callers' way for state keys.
func itoa(i int64) string { return strconv.FormatInt(i, 10) }
