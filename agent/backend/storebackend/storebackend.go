// Package storebackend serves enrichment's lineage reads (backend.Lineage)
// from the local lineage store (agent/lineage), with prepared statements:
// an alert costs a handful of queries over a store of a million VMs.
package storebackend

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/vmlineage/vmlineage/agent/backend"
	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/plugins"
)

// Backend reads the lineage store. Closing it leaves the store open.
type Backend struct {
	st      *lineage.Store // read through: the store itself or a reader on it
	own     bool           // st is a reader this backend opened
	cache   *famCache      // nil: no caching (New)
	queries atomic.Int64
}

// CacheVMs bounds the VMs of the families Open's backend keeps
// (a few hundred bytes each).
const CacheVMs = 50000

var _ backend.Lineage = (*Backend)(nil)

// New serves reads through st's own connections.
func New(st *lineage.Store) *Backend { return &Backend{st: st} }

// Open serves reads through a reader of its own on st's file
// (lineage.Store.OpenReader): page caches sized for random lookups over
// a million VMs, and no waiting behind the tracer's connections.
func Open(st *lineage.Store, o lineage.ReaderOptions) (*Backend, error) {
	if o.Conns <= 0 {
		o.Conns = 2
	}
	o.Conns++ // one is kept for the cache's data_version
	r, err := st.OpenReader(o)
	if err != nil {
		return nil, err
	}
	c, err := newFamCache(context.Background(), r.DB(), CacheVMs)
	if err != nil {
		r.Close()
		return nil, err
	}
	return &Backend{st: r, own: true, cache: c}, nil
}

// CacheStats reports the family cache's hits and misses.
func (b *Backend) CacheStats() (hits, misses int64) {
	if b.cache == nil {
		return 0, 0
	}
	return b.cache.stats()
}

// Fresh implements backend.Lineage: one PRAGMA data_version.
func (b *Backend) Fresh(ctx context.Context) error {
	ctx, err := bounded(ctx)
	if err != nil {
		return err
	}
	if b.cache == nil {
		return nil
	}
	b.count(1)
	_, err = b.cache.fresh(ctx)
	return err
}

// FamilyOf implements backend.Lineage: from the cache, or on a miss the
// family's root (RootOf) and then the family read from it, in turn with
// other reads of that family (a member of a family known to be large:
// the family read alone, without turns).
func (b *Backend) FamilyOf(ctx context.Context, uuid string, limit int) (*backend.Family, error) {
	ctx, err := bounded(ctx)
	if err != nil {
		return nil, err
	}
	var version int64
	from := uuid // where the family read starts: the root, once known
	if b.cache != nil {
		f := b.cache.get(uuid, true)
		if f == nil && !b.cache.isLarge(uuid) {
			b.count(1)
			root, err := b.st.RootOf(ctx, uuid)
			if err != nil {
				return nil, notFound(err)
			}
			if afterRootOf != nil {
				afterRootOf()
			}
			defer b.cache.fillFor(root)()
			from = root
			f = b.cache.get(uuid, true) // read meanwhile by the alert ahead
		}
		if f != nil {
			if limit > 0 && len(f.Members) > limit {
				return nil, nil
			}
			return f, nil
		}
		b.cache.missed()
		b.cache.mu.Lock()
		version = b.cache.version // the version the read below belongs to at the earliest
		b.cache.mu.Unlock()
	}
	b.count(1)
	// Read up to CacheVMs members so that a family cached once serves any
	// limit; larger ones are not kept.
	max := limit
	if b.cache != nil {
		max = CacheVMs
	}
	ms, truncated, err := b.st.FamilyHistory(ctx, from, max)
	if err == nil && from != uuid && !truncated && !slices.ContainsFunc(ms, func(m lineage.FamilyMember) bool { return m.UUID == uuid }) {
		// The tree changed between the two reads (uuid was linked to
		// another parent): read its family as it is now.
		b.count(1)
		ms, truncated, err = b.st.FamilyHistory(ctx, uuid, max)
	}
	if err != nil {
		return nil, notFound(err)
	}
	if b.cache != nil && (truncated || len(ms) > largeFamily) {
		uu := make([]string, len(ms))
		for i := range ms {
			uu[i] = ms[i].UUID
		}
		b.cache.markLarge(uu)
	}
	if truncated {
		return nil, nil
	}
	fm := make([]backend.FamilyMember, len(ms))
	for i := range ms {
		m := &ms[i]
		fm[i] = backend.FamilyMember{VM: ToVM(&m.VM), Depth: m.Depth, SpansComplete: m.SpansComplete, Spans: make([]backend.Span, len(m.Spans))}
		for j, s := range m.Spans {
			fm[i].Spans[j] = backend.Span{From: s.From, To: s.To, PowerState: s.PowerState, HostUUID: s.HostUUID}
		}
	}
	f := backend.NewFamily(fm)
	if b.cache != nil {
		b.cache.put(f, version)
	}
	if limit > 0 && len(f.Members) > limit {
		return nil, nil
	}
	return f, nil
}

// afterRootOf, when set (tests), runs between a miss's RootOf and its
// family read.
var afterRootOf func()

// Queries is how many SQL queries the backend made.
func (b *Backend) Queries() int64 { return b.queries.Load() }

// Close implements backend.Lineage: it closes the reader Open made; the
// store itself stays open (its owner closes it).
func (b *Backend) Close() error {
	if b.cache != nil {
		b.cache.close()
	}
	if b.own {
		return b.st.Close()
	}
	return nil
}

func (b *Backend) count(n int) { b.queries.Add(int64(n)) }

// bounded is the context for one of the alert path's reads, which are
// bounded (by key, or by a limit) and end soon on their own: ctx's values
// without its end, once ctx is checked. Given a context that can end,
// database/sql and the SQLite driver each start a goroutine per query to
// watch it (the driver also sets SQLite's progress handler), two
// goroutines for each of an alert's three or four queries, each waking an
// idle processor. A context that has ended still stops the next read.
func bounded(ctx context.Context) (context.Context, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return context.WithoutCancel(ctx), nil
}

// ToVM converts a store VM.
func ToVM(v *lineage.VM) plugins.VM {
	return plugins.VM{UUID: v.UUID, PoolUUID: v.PoolUUID, Name: v.Name, ParentUUID: v.ParentUUID, ParentVia: v.ParentVia,
		Kind: v.Kind, PowerState: v.PowerState, HostUUID: v.HostUUID, FirstSeen: v.FirstSeen, LastSeen: v.LastSeen, Destroyed: v.Destroyed}
}

func toVMs(vs []lineage.VM, err error) ([]plugins.VM, error) {
	if err != nil {
		return nil, notFound(err)
	}
	out := make([]plugins.VM, len(vs))
	for i := range vs {
		out[i] = ToVM(&vs[i])
	}
	return out, nil
}

// notFound maps the store's ErrNotFound onto the plugin protocol's.
func notFound(err error) error {
	if errors.Is(err, lineage.ErrNotFound) && !errors.Is(err, plugins.ErrNotFound) {
		return fmt.Errorf("%w (%w)", err, plugins.ErrNotFound)
	}
	return err
}

// VM implements backend.Lineage.
func (b *Backend) VM(ctx context.Context, uuid string) (plugins.VM, error) {
	b.count(1)
	v, err := b.st.VMAt(ctx, uuid)
	if err != nil {
		return plugins.VM{}, notFound(err)
	}
	return ToVM(&v), nil
}

// Ancestors implements backend.Lineage.
func (b *Backend) Ancestors(ctx context.Context, uuid string) ([]plugins.VM, error) {
	b.count(1)
	return toVMs(b.st.Ancestors(ctx, uuid))
}

// Descendants implements backend.Lineage.
func (b *Backend) Descendants(ctx context.Context, uuid string) ([]plugins.VM, error) {
	b.count(1)
	return toVMs(b.st.Descendants(ctx, uuid))
}

// Siblings implements backend.Lineage.
func (b *Backend) Siblings(ctx context.Context, uuid string) ([]plugins.VM, error) {
	b.count(1)
	return toVMs(b.st.Siblings(ctx, uuid))
}

// Family implements backend.Lineage.
func (b *Backend) Family(ctx context.Context, uuid string) ([]plugins.VM, error) {
	ms, err := b.FamilyAt(ctx, uuid, time.Now(), 0)
	if err != nil {
		return nil, err
	}
	out := make([]plugins.VM, len(ms))
	for i := range ms {
		out[i] = ms[i].VM
	}
	return out, nil
}

// FamilyAt implements backend.Lineage in one query.
func (b *Backend) FamilyAt(ctx context.Context, uuid string, at time.Time, limit int) ([]backend.Member, error) {
	b.count(1)
	ms, err := b.st.FamilyAt(ctx, uuid, at, limit)
	if err != nil {
		return nil, notFound(err)
	}
	return members(ms), nil
}

// AncestryAt implements backend.Lineage in one query.
func (b *Backend) AncestryAt(ctx context.Context, uuid string, at time.Time) ([]backend.Member, error) {
	ctx, err := bounded(ctx)
	if err != nil {
		return nil, err
	}
	b.count(1)
	ms, err := b.st.AncestryAt(ctx, uuid, at)
	if err != nil {
		return nil, notFound(err)
	}
	return members(ms), nil
}

func members(ms []lineage.Member) []backend.Member {
	out := make([]backend.Member, len(ms))
	for i := range ms {
		m := &ms[i]
		out[i] = backend.Member{VM: ToVM(&m.VM), Depth: m.Depth,
			State: plugins.VMState{UUID: m.UUID, PowerState: m.PowerStateAt, HostUUID: m.HostAt, Existed: m.ExistedAt}}
	}
	return out
}

// FamilyUUIDs implements backend.Lineage (the parent index only).
func (b *Backend) FamilyUUIDs(ctx context.Context, root string, limit int) ([]string, error) {
	b.count(1)
	return b.st.FamilyUUIDs(ctx, root, limit)
}

// VMsAt implements backend.Lineage.
func (b *Backend) VMsAt(ctx context.Context, uuids []string, at time.Time) ([]backend.Member, error) {
	ctx, err := bounded(ctx)
	if err != nil {
		return nil, err
	}
	b.count((len(uuids) + 255) / 256)
	ms, err := b.st.StatesAtOf(ctx, uuids, at)
	if err != nil {
		return nil, err
	}
	return members(ms), nil
}

// RecordFacts implements backend.Lineage.
func (b *Backend) RecordFacts(ctx context.Context, uuid string, since, until time.Time, limit int) ([]plugins.RecordFact, error) {
	ctx, err := bounded(ctx)
	if err != nil {
		return nil, err
	}
	b.count(1)
	fs, err := b.st.RecordFactsOfVM(ctx, uuid, since, until, limit)
	if err != nil {
		return nil, err
	}
	out := make([]plugins.RecordFact, len(fs))
	for i, f := range fs {
		out[i] = plugins.RecordFact{VMUUID: f.VMUUID, Activity: f.Activity, Start: f.Start}
	}
	return out, nil
}

// StatesAt implements backend.Lineage.
func (b *Backend) StatesAt(ctx context.Context, uuids []string, at time.Time) ([]plugins.VMState, error) {
	ctx, err := bounded(ctx)
	if err != nil {
		return nil, err
	}
	b.count((len(uuids) + 255) / 256)
	ms, err := b.st.StatesAtOf(ctx, uuids, at)
	if err != nil {
		return nil, err
	}
	out := make([]plugins.VMState, len(ms))
	for i := range ms {
		out[i] = plugins.VMState{UUID: ms[i].UUID, PowerState: ms[i].PowerStateAt, HostUUID: ms[i].HostAt, Existed: ms[i].ExistedAt}
	}
	return out, nil
}

// Records implements backend.Lineage.
func (b *Backend) Records(ctx context.Context, q plugins.RecordQuery) ([]record.Record, error) {
	b.count(1)
	return b.st.Records(ctx, lineage.Filter{VMUUID: q.VMUUID, Activity: q.Activity, Since: q.Since, Until: q.Until, Limit: q.Limit})
}

// RecordsOfVM implements backend.Lineage.
func (b *Backend) RecordsOfVM(ctx context.Context, uuid string, since, until time.Time, limit int) ([]record.Record, error) {
	ctx, err := bounded(ctx)
	if err != nil {
		return nil, err
	}
	b.count(1)
	return b.st.RecordsOfVM(ctx, uuid, since, until, limit)
}

// FindVMs implements backend.Lineage.
func (b *Backend) FindVMs(ctx context.Context, kind, value string, at time.Time) ([]string, error) {
	ctx, err := bounded(ctx)
	if err != nil {
		return nil, err
	}
	b.count(1)
	switch kind {
	case backend.KindUUID:
		v, err := b.st.VMAt(ctx, strings.ToLower(strings.TrimSpace(value)))
		if errors.Is(err, lineage.ErrNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		return []string{v.UUID}, nil
	case backend.KindName, backend.KindIP, backend.KindMAC:
		return b.st.FindByAttrAt(ctx, kind, value, at)
	}
	return nil, fmt.Errorf("storebackend: unknown key kind %q", kind)
}
