package lineage

import (
	"database/sql"
	"fmt"
	"net/url"
	"strconv"
)

// ReaderOptions size a read-only view of a store (OpenReader).
type ReaderOptions struct {
	// Conns is the number of connections (default 2).
	Conns int
	// CacheKiB is the page cache of each connection (default 256). Not
	// more: SQLite empties a connection's cache whenever another connection
	// commits (the tracer does several times a second on a busy pool), and
	// emptying a large cache costs more than it saved. (A memory map
	// instead, mmap_size, was measured slower: every page fetched from the
	// map is parsed again, and first touches fault.)
	CacheKiB int
}

// OpenReader opens a second, read-only handle on the store's file with its
// own connections and page caches, for a hot read path (alert
// enrichment). Only read methods may be used on it; it never changes the
// schema. Close it before the store.
func (s *Store) OpenReader(o ReaderOptions) (*Store, error) {
	if o.Conns <= 0 {
		o.Conns = 2
	}
	if o.CacheKiB <= 0 {
		o.CacheKiB = 256
	}
	q := url.Values{}
	for _, p := range []string{"busy_timeout(10000)", "query_only(1)", "temp_store(MEMORY)", "cache_size(-" + strconv.Itoa(o.CacheKiB) + ")"} {
		q.Add("_pragma", p)
	}
	db, err := sql.Open("sqlite", "file:"+s.path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("lineage: open reader on %s: %w", s.path, err)
	}
	db.SetMaxOpenConns(o.Conns)
	db.SetMaxIdleConns(o.Conns)
	db.SetConnMaxIdleTime(0)
	return &Store{db: db, path: s.path, stmts: map[string]*sql.Stmt{}}, nil
}
