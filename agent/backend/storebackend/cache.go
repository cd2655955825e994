package storebackend

import (
	"context"
	"database/sql"
	"fmt"
	"sync"

	"github.com/vmlineage/vmlineage/agent/backend"
)

// famCache keeps the families the alert path read, so that the alerts of
// one family (which come in bursts: that is what lineage-suspects looks
// for) read the store once. It is exact: every entry belongs to one
// version of the store, SQLite's data_version as seen by a connection
// kept for the purpose, which changes with every commit made elsewhere;
// Fresh (once per alert) drops everything when it has changed. On a busy
// pool (the tracer commits several times a second) entries live that
// long; on a quiet one until memory bounds them.
type famCache struct {
	conn *sql.Conn // data_version is per connection
	// filling lets one read of a family run at a time (keyed by the
	// family's root, see fillFor): the alerts of one family arrive
	// together, and those behind the first find its family in the cache
	// when the read is done instead of reading it again (under load most
	// of a burst was in flight at once and nearly every alert read its
	// family itself; a bounded wait did not hold under load: at 2 and 10
	// ms nearly all stopped waiting and read again). Reads of different
	// families run side by side. Members of large families, whose reads
	// take tens of milliseconds and more, read without taking turns once
	// one read has shown their size. Under c.mu.
	filling map[string]*rootFill
	// large holds the members of the families found to be larger than
	// largeFamily (at most maxLarge of them); it outlives clearing.
	large map[string]struct{}

	mu      sync.Mutex
	version int64
	byRoot  map[string]*backend.Family
	rootOf  map[string]string
	vms     int // members held
	max     int

	hits, misses int64
}

func newFamCache(ctx context.Context, db *sql.DB, maxVMs int) (*famCache, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	c := &famCache{conn: conn, max: maxVMs, byRoot: map[string]*backend.Family{}, rootOf: map[string]string{}, large: map[string]struct{}{}, filling: map[string]*rootFill{}}
	if c.version, err = c.dataVersion(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

func (c *famCache) dataVersion(ctx context.Context) (int64, error) {
	var v int64
	if err := c.conn.QueryRowContext(ctx, "PRAGMA data_version").Scan(&v); err != nil {
		return 0, fmt.Errorf("storebackend: data_version: %w", err)
	}
	return v, nil
}

// fresh drops everything when the store changed since the entries were
// read; it returns the version they now belong to.
func (c *famCache) fresh(ctx context.Context) (int64, error) {
	v, err := c.dataVersion(ctx)
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if v != c.version {
		c.version = v
		c.clearLocked()
	}
	return v, nil
}

func (c *famCache) clearLocked() {
	clear(c.byRoot)
	clear(c.rootOf)
	c.vms = 0
}

// get returns the cached family of uuid, or nil; count says whether the
// lookup counts as a hit or a miss (a second look after waiting for a
// fill counts only when it hits).
func (c *famCache) get(uuid string, count bool) *backend.Family {
	c.mu.Lock()
	defer c.mu.Unlock()
	if root, ok := c.rootOf[uuid]; ok {
		if count {
			c.hits++
		}
		return c.byRoot[root]
	}
	return nil
}

// rootFill is the turn-taking of the reads of one family.
type rootFill struct {
	mu   sync.Mutex
	refs int // holders and waiters; the entry goes with the last
}

// fillFor waits until no other read of the family rooted at root runs,
// and returns the function that ends this one's turn. (One turn for all
// families made every miss wait for the read ahead, whatever its family:
// in Enrich1MVMs, where half the alerts read a family, the waits added up
// to about 0.3 s a run, 2026-12-03.)
func (c *famCache) fillFor(root string) (done func()) {
	c.mu.Lock()
	f := c.filling[root]
	if f == nil {
		f = &rootFill{}
		c.filling[root] = f
	}
	f.refs++
	c.mu.Unlock()
	f.mu.Lock()
	return func() {
		f.mu.Unlock()
		c.mu.Lock()
		if f.refs--; f.refs == 0 {
			delete(c.filling, root)
		}
		c.mu.Unlock()
	}
}

// largeFamily is the size above which a family is read without taking
// turns (fillFor); maxLarge bounds the members remembered as such.
var largeFamily = 1000

const maxLarge = 200000

// isLarge reports whether uuid was last seen in a family larger than
// largeFamily.
func (c *famCache) isLarge(uuid string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.large[uuid]
	return ok
}

// markLarge remembers the members of a family larger than largeFamily.
func (c *famCache) markLarge(uuids []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, u := range uuids {
		if len(c.large) >= maxLarge {
			return
		}
		c.large[u] = struct{}{}
	}
}

// missed counts a read the cache could not answer.
func (c *famCache) missed() {
	c.mu.Lock()
	c.misses++
	c.mu.Unlock()
}

// put keeps f when it was read at the version the cache is at.
func (c *famCache) put(f *backend.Family, version int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if version != c.version || c.byRoot[f.Root] != nil {
		return
	}
	if c.vms+len(f.Members) > c.max {
		c.clearLocked() // simple and bounded: the next alerts refill what they use
	}
	c.byRoot[f.Root] = f
	for i := range f.Members {
		c.rootOf[f.Members[i].UUID] = f.Root
	}
	c.vms += len(f.Members)
}

func (c *famCache) stats() (hits, misses int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hits, c.misses
}

func (c *famCache) close() { c.conn.Close() }
