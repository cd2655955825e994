package lineage

// Read-only queries for alert enrichment (agent/alerts through
// agent/backend/storebackend). Each is one prepared statement: an alert
// costs a handful of them, and parsing SQL would otherwise be a large part
// of that cost. Query plans are checked in enrich_queries_test.go.

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/vmlineage/vmlineage/agent/record"
)

// Member is a VM of a family with where it stood at a given time.
type Member struct {
	VM
	// Depth below the family root (the root is 0).
	Depth int
	// PowerStateAt and HostAt are from the state span open at the time
	// asked ("" when none was); ExistedAt says whether the VM existed then.
	PowerStateAt string
	HostAt       string
	ExistedAt    bool
}

// goneAtQ2 is goneAt for the time parameter ?2 (?1 in StatesAtOf's).
const goneAtQ2 = "EXISTS(SELECT 1 FROM vm_gaps g WHERE g.vm_uuid=v.uuid AND g.from_ms<=?2 AND g.to_ms>?2)"

const familyAtQuery = `WITH RECURSIVE
  up(uuid, parent, depth) AS (
    SELECT uuid, parent_uuid, 0 FROM vms WHERE uuid=?1
    UNION ALL
    SELECT v.uuid, v.parent_uuid, up.depth+1 FROM vms v JOIN up ON v.uuid=up.parent WHERE up.parent<>'' AND up.depth<?3),
  root(uuid) AS (SELECT uuid FROM up ORDER BY depth DESC LIMIT 1),
  down(uuid, depth) AS (
    SELECT uuid, 0 FROM root
    UNION
    SELECT v.uuid, down.depth+1 FROM vms v JOIN down ON v.parent_uuid=down.uuid WHERE down.depth<?3)
SELECT v.uuid,v.pool_uuid,v.name,v.parent_uuid,v.parent_via,v.kind,v.power_state,v.host_uuid,v.first_seen_ms,v.last_seen_ms,v.destroyed_ms,v.xapi_ref,
  d.depth, st.power_state, st.host_uuid, ` + goneAtQ2 + `
FROM (SELECT uuid, MIN(depth) AS depth FROM down GROUP BY uuid) d
JOIN vms v ON v.uuid=d.uuid
LEFT JOIN vm_states st ON st.vm_uuid=v.uuid AND st.from_ms<=?2 AND (st.to_ms IS NULL OR st.to_ms>?2)
ORDER BY d.depth, v.first_seen_ms, v.uuid, st.from_ms DESC`

// FamilyAt returns the whole family of uuid (its root first, then every
// descendant of the root, breadth first, each generation by first
// sighting) with each member's power state and host at time at, in one
// query. It returns at most limit+1 members (limit <= 0: all), so that a
// caller bounding what it handles can tell that the family is larger.
// ErrNotFound when uuid is not in the store.
func (s *Store) FamilyAt(ctx context.Context, uuid string, at time.Time, limit int) ([]Member, error) {
	st, err := s.prepared(ctx, familyAtQuery)
	if err != nil {
		return nil, fmt.Errorf("lineage: family of %s: %w", uuid, err)
	}
	t := ms(at)
	rows, err := st.QueryContext(ctx, uuid, t, maxDepth)
	if err != nil {
		return nil, fmt.Errorf("lineage: family of %s: %w", uuid, err)
	}
	defer rows.Close()
	var out []Member
	last := ""
	for rows.Next() {
		var m Member
		var first, lastSeen int64
		var destroyed sql.NullInt64
		var ps, host sql.NullString
		var gone bool
		v := &m.VM
		if err := rows.Scan(&v.UUID, &v.PoolUUID, &v.Name, &v.ParentUUID, &v.ParentVia, &v.Kind, &v.PowerState, &v.HostUUID,
			&first, &lastSeen, &destroyed, &v.Ref, &m.Depth, &ps, &host, &gone); err != nil {
			return nil, err
		}
		if v.UUID == last { // overlapping spans written at the same millisecond: the newest won
			continue
		}
		last = v.UUID
		v.FirstSeen, v.LastSeen, v.Destroyed = fromMS(first), fromMS(lastSeen), fromNullMS(destroyed)
		m.PowerStateAt, m.HostAt = ps.String, host.String
		m.ExistedAt = first <= t && (!destroyed.Valid || destroyed.Int64 > t) && !gone
		out = append(out, m)
		if limit > 0 && len(out) > limit {
			break
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("VM %s: %w", uuid, ErrNotFound)
	}
	return out, nil
}

// StatesAtOf gives the listed VMs as they stood at time at, in the order
// asked; a uuid not in the store comes back with only its UUID set and
// ExistedAt false. One query per 256 VMs.
func (s *Store) StatesAtOf(ctx context.Context, uuids []string, at time.Time) ([]Member, error) {
	t := ms(at)
	found := make(map[string]Member, len(uuids))
	const chunk = 256
	for rest := uuids; len(rest) > 0; {
		part := rest[:min(chunk, len(rest))]
		rest = rest[len(part):]
		list, args := inList(part)
		st, err := s.prepared(ctx, `SELECT v.uuid,v.pool_uuid,v.name,v.parent_uuid,v.parent_via,v.kind,v.power_state,v.host_uuid,v.first_seen_ms,v.last_seen_ms,v.destroyed_ms,v.xapi_ref,
			st.power_state, st.host_uuid, `+strings.ReplaceAll(goneAtQ2, "?2", "?1")+`
			FROM vms v LEFT JOIN vm_states st ON st.vm_uuid=v.uuid AND st.from_ms<=?1 AND (st.to_ms IS NULL OR st.to_ms>?1)
			WHERE v.uuid IN (`+list+`) ORDER BY v.uuid, st.from_ms DESC`)
		if err != nil {
			return nil, fmt.Errorf("lineage: states: %w", err)
		}
		rows, err := st.QueryContext(ctx, append([]any{t}, args...)...)
		if err != nil {
			return nil, fmt.Errorf("lineage: states: %w", err)
		}
		for rows.Next() {
			var m Member
			var first, lastSeen int64
			var destroyed sql.NullInt64
			var ps, host sql.NullString
			var gone bool
			v := &m.VM
			if err := rows.Scan(&v.UUID, &v.PoolUUID, &v.Name, &v.ParentUUID, &v.ParentVia, &v.Kind, &v.PowerState, &v.HostUUID,
				&first, &lastSeen, &destroyed, &v.Ref, &ps, &host, &gone); err != nil {
				rows.Close()
				return nil, err
			}
			if _, dup := found[v.UUID]; dup {
				continue
			}
			v.FirstSeen, v.LastSeen, v.Destroyed = fromMS(first), fromMS(lastSeen), fromNullMS(destroyed)
			m.PowerStateAt, m.HostAt = ps.String, host.String
			m.ExistedAt = first <= t && (!destroyed.Valid || destroyed.Int64 > t) && !gone
			found[v.UUID] = m
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	out := make([]Member, len(uuids))
	for i, u := range uuids {
		if m, ok := found[u]; ok {
			out[i] = m
		} else {
			out[i].UUID = u
		}
	}
	return out, nil
}

// inList is "?2,?3,…" for the values after a first parameter. Lists are
// padded to a power of two (repeating the last value) so that few distinct
// statements are prepared.
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
		fmt.Fprintf(&b, "?%d", i+2)
	}
	return b.String(), args
}

// VMAt returns one VM by uuid (a prepared Store.VM).
func (s *Store) VMAt(ctx context.Context, uuid string) (VM, error) {
	st, err := s.prepared(ctx, "SELECT "+vmCols+" FROM vms WHERE uuid=?")
	if err != nil {
		return VM{}, err
	}
	v, err := scanVM(st.QueryRowContext(ctx, uuid))
	if errors.Is(err, sql.ErrNoRows) {
		return VM{}, fmt.Errorf("VM %s: %w", uuid, ErrNotFound)
	}
	return v, err
}

// FindByAttrAt is FindByAttr at a given (non-zero) time, prepared: the
// uuids of the VMs that held value then, in uuid order.
func (s *Store) FindByAttrAt(ctx context.Context, kind, value string, at time.Time) ([]string, error) {
	if kind == AttrMAC {
		value = normalizeMAC(value)
	}
	// No DISTINCT or ORDER BY in SQL: they cost a temporary B-tree per
	// call; the handful of rows are sorted here.
	st, err := s.prepared(ctx, `SELECT vm_uuid FROM vm_attrs WHERE kind=?1 AND value=?2 AND from_ms<=?3 AND (to_ms IS NULL OR to_ms>?3)`)
	if err != nil {
		return nil, err
	}
	rows, err := st.QueryContext(ctx, kind, value, ms(at))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	var u string // one scan target: one declared per row escapes each time
	for rows.Next() {
		if err := rows.Scan(&u); err != nil {
			return nil, err
		}
		if !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	slices.Sort(out)
	return out, rows.Err()
}

// RecordsOfVM returns the records of the VM (as VM or as parent) that
// started in [since, until), by start time then id, at most limit (> 0).
func (s *Store) RecordsOfVM(ctx context.Context, uuid string, since, until time.Time, limit int) ([]record.Record, error) {
	st, err := s.prepared(ctx, `SELECT json FROM records WHERE (vm_uuid=?1 OR parent_vm_uuid=?1) AND start_ms>=?2 AND start_ms<?3
		ORDER BY start_ms, id LIMIT ?4`)
	if err != nil {
		return nil, err
	}
	rows, err := st.QueryContext(ctx, uuid, ms(since), ms(until), limit)
	if err != nil {
		return nil, fmt.Errorf("lineage: records of %s: %w", uuid, err)
	}
	defer rows.Close()
	var out []record.Record
	for rows.Next() {
		var js []byte
		if err := rows.Scan(&js); err != nil {
			return nil, err
		}
		var r record.Record
		if err := json.Unmarshal(js, &r); err != nil {
			return nil, fmt.Errorf("lineage: a record of %s is corrupt: %w", uuid, err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// AncestryAt returns the VM and its ancestors, nearest first up to the
// family root, each with its state at time at (one query; the up walk
// and the joins go by primary key). ErrNotFound when uuid is unknown.
func (s *Store) AncestryAt(ctx context.Context, uuid string, at time.Time) ([]Member, error) {
	st, err := s.prepared(ctx, `WITH RECURSIVE up(uuid, depth) AS (
		  SELECT ?1, 0
		  UNION ALL
		  SELECT v.parent_uuid, up.depth+1 FROM up CROSS JOIN vms v ON v.uuid=up.uuid WHERE v.parent_uuid<>'' AND up.depth<?3)
		SELECT v.uuid,v.pool_uuid,v.name,v.parent_uuid,v.parent_via,v.kind,v.power_state,v.host_uuid,v.first_seen_ms,v.last_seen_ms,v.destroyed_ms,v.xapi_ref,
		  up.depth, st.power_state, st.host_uuid, `+goneAtQ2+`
		FROM up CROSS JOIN vms v ON v.uuid=up.uuid
		LEFT JOIN vm_states st ON st.vm_uuid=v.uuid AND st.from_ms<=?2 AND (st.to_ms IS NULL OR st.to_ms>?2)
		ORDER BY up.depth, st.from_ms DESC`)
	if err != nil {
		return nil, fmt.Errorf("lineage: ancestry of %s: %w", uuid, err)
	}
	t := ms(at)
	rows, err := st.QueryContext(ctx, uuid, t, maxDepth)
	if err != nil {
		return nil, fmt.Errorf("lineage: ancestry of %s: %w", uuid, err)
	}
	defer rows.Close()
	var out []Member
	for rows.Next() {
		var m Member
		var first, lastSeen int64
		var destroyed sql.NullInt64
		var ps, host sql.NullString
		var gone bool
		v := &m.VM
		if err := rows.Scan(&v.UUID, &v.PoolUUID, &v.Name, &v.ParentUUID, &v.ParentVia, &v.Kind, &v.PowerState, &v.HostUUID,
			&first, &lastSeen, &destroyed, &v.Ref, &m.Depth, &ps, &host, &gone); err != nil {
			return nil, err
		}
		if n := len(out); n > 0 && out[n-1].Depth == m.Depth {
			continue // overlapping spans written at the same millisecond: the newest won
		}
		v.FirstSeen, v.LastSeen, v.Destroyed = fromMS(first), fromMS(lastSeen), fromNullMS(destroyed)
		m.PowerStateAt, m.HostAt = ps.String, host.String
		m.ExistedAt = first <= t && (!destroyed.Valid || destroyed.Int64 > t) && !gone
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("VM %s: %w", uuid, ErrNotFound)
	}
	// Depth counted up from the VM; Member.Depth is below the root.
	top := out[len(out)-1].Depth
	for i := range out {
		out[i].Depth = top - out[i].Depth
	}
	return out, nil
}

// FamilyUUIDs returns root and every VM descending from it (the root
// first), at most limit+1 of them when limit > 0. It reads only the
// parent index.
func (s *Store) FamilyUUIDs(ctx context.Context, root string, limit int) ([]string, error) {
	st, err := s.prepared(ctx, `WITH RECURSIVE down(uuid, depth) AS (
		  SELECT ?1, 0
		  UNION ALL
		  SELECT v.uuid, down.depth+1 FROM down CROSS JOIN vms v ON v.parent_uuid=down.uuid WHERE down.depth<?2)
		SELECT uuid FROM down`)
	if err != nil {
		return nil, fmt.Errorf("lineage: family of %s: %w", root, err)
	}
	rows, err := st.QueryContext(ctx, root, maxDepth)
	if err != nil {
		return nil, fmt.Errorf("lineage: family of %s: %w", root, err)
	}
	defer rows.Close()
	var out []string
	seen := map[string]bool{}
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return nil, err
		}
		if seen[u] {
			continue // only a corrupt (cyclic) tree repeats a VM
		}
		seen[u] = true
		out = append(out, u)
		if limit > 0 && len(out) > limit {
			break
		}
	}
	return out, rows.Err()
}

// RecordFact is what a record says in brief.
type RecordFact struct {
	VMUUID   string
	Activity record.Activity
	Start    time.Time
}

// RecordFactsOfVM returns the VM, activity and start of the VM's records
// (as VM or as parent) that started in [since, until), at most limit,
// without reading the records themselves.
func (s *Store) RecordFactsOfVM(ctx context.Context, uuid string, since, until time.Time, limit int) ([]RecordFact, error) {
	st, err := s.prepared(ctx, `SELECT vm_uuid, activity, start_ms FROM records WHERE vm_uuid=?1 AND start_ms>=?2 AND start_ms<?3
		UNION ALL
		SELECT vm_uuid, activity, start_ms FROM records WHERE parent_vm_uuid=?1 AND vm_uuid<>?1 AND start_ms>=?2 AND start_ms<?3
		LIMIT ?4`)
	if err != nil {
		return nil, err
	}
	rows, err := st.QueryContext(ctx, uuid, ms(since), ms(until), limit)
	if err != nil {
		return nil, fmt.Errorf("lineage: records of %s: %w", uuid, err)
	}
	defer rows.Close()
	var out []RecordFact
	var f RecordFact // one set of scan targets (see FamilyHistory)
	var start int64
	dest := []any{&f.VMUUID, &f.Activity, &start}
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		f.Start = fromMS(start)
		out = append(out, f)
	}
	return out, rows.Err()
}

// Span is a power state span of a VM: from From until To (zero: still).
type Span struct {
	From, To   time.Time
	PowerState string
	HostUUID   string
}

// FamilyMember is a VM of a family with its state history.
type FamilyMember struct {
	VM
	Depth int
	// Spans are the VM's state spans, newest first; when SpansComplete is
	// false only the newest MaxSpans are there.
	Spans         []Span
	SpansComplete bool
}

// MaxSpans bounds the state spans FamilyHistory keeps per VM.
const MaxSpans = 64

// upToRoot walks from ?1 up its parents present in the store (at most ?2
// generations); its deepest row is the family's root, for RootOf and
// FamilyHistory alike.
const upToRoot = `up(uuid, parent, depth) AS (
		    SELECT uuid, parent_uuid, 0 FROM vms WHERE uuid=?1
		    UNION ALL
		    SELECT v.uuid, v.parent_uuid, up.depth+1 FROM up CROSS JOIN vms v ON v.uuid=up.parent WHERE up.parent<>'' AND up.depth<?2)`

// RootOf returns the root of uuid's family as FamilyHistory finds it: the
// topmost ancestor reachable through parents present in the store, or
// uuid itself when it has none. ErrNotFound when uuid is unknown. One
// primary-key lookup per generation: the alert path asks it before a
// family read so that reads of different families need not take turns.
// (Only a corrupt, cyclic parent chain makes it walk to maxDepth, and then
// the member of the cycle it names is arbitrary.)
func (s *Store) RootOf(ctx context.Context, uuid string) (string, error) {
	st, err := s.prepared(ctx, `WITH RECURSIVE `+upToRoot+`
		SELECT uuid FROM up ORDER BY depth DESC LIMIT 1`)
	if err != nil {
		return "", fmt.Errorf("lineage: root of %s: %w", uuid, err)
	}
	var root string
	if err := st.QueryRowContext(ctx, uuid, maxDepth).Scan(&root); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return "", fmt.Errorf("VM %s: %w", uuid, ErrNotFound)
		}
		return "", fmt.Errorf("lineage: root of %s: %w", uuid, err)
	}
	return root, nil
}

// FamilyHistory returns the whole family of uuid (root first, then every
// descendant of the root, breadth first, each generation by first sighting)
// with each member's state history, in one query; at most limit members
// are kept (limit > 0), and more is reported as truncated. ErrNotFound when
// uuid is unknown.
func (s *Store) FamilyHistory(ctx context.Context, uuid string, limit int) (members []FamilyMember, truncated bool, err error) {
	st, err := s.prepared(ctx, `WITH RECURSIVE `+upToRoot+`,
		  root(uuid) AS (SELECT uuid FROM up ORDER BY depth DESC LIMIT 1),
		  down(uuid, depth) AS (
		    SELECT uuid, 0 FROM root
		    UNION ALL
		    SELECT v.uuid, down.depth+1 FROM down CROSS JOIN vms v ON v.parent_uuid=down.uuid WHERE down.depth<?2)
		SELECT v.uuid,v.pool_uuid,v.name,v.parent_uuid,v.parent_via,v.kind,v.power_state,v.host_uuid,v.first_seen_ms,v.last_seen_ms,v.destroyed_ms,v.xapi_ref,
		  d.depth, st.from_ms, st.to_ms, st.power_state, st.host_uuid
		FROM down d CROSS JOIN vms v ON v.uuid=d.uuid
		LEFT JOIN vm_states st ON st.vm_uuid=v.uuid
		ORDER BY d.depth, v.first_seen_ms, v.uuid, st.from_ms DESC`)
	if err != nil {
		return nil, false, fmt.Errorf("lineage: family of %s: %w", uuid, err)
	}
	rows, err := st.QueryContext(ctx, uuid, maxDepth)
	if err != nil {
		return nil, false, fmt.Errorf("lineage: family of %s: %w", uuid, err)
	}
	defer rows.Close()
	seen := map[string]bool{}
	var cur *FamilyMember
	// One set of scan targets for all rows: Scan sets every one of them,
	// and targets declared per row escape to the heap, eight allocations
	// a row.
	var m FamilyMember
	var first, lastSeen int64
	var destroyed, from, to sql.NullInt64
	var ps, host sql.NullString
	v := &m.VM
	dest := []any{&v.UUID, &v.PoolUUID, &v.Name, &v.ParentUUID, &v.ParentVia, &v.Kind, &v.PowerState, &v.HostUUID,
		&first, &lastSeen, &destroyed, &v.Ref, &m.Depth, &from, &to, &ps, &host}
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return nil, false, err
		}
		if cur == nil || cur.UUID != v.UUID {
			if seen[v.UUID] {
				continue // only a corrupt (cyclic) tree repeats a VM
			}
			if limit > 0 && len(members) >= limit {
				return members, true, nil
			}
			seen[v.UUID] = true
			v.FirstSeen, v.LastSeen, v.Destroyed = fromMS(first), fromMS(lastSeen), fromNullMS(destroyed)
			m.SpansComplete = true
			members = append(members, m)
			cur = &members[len(members)-1]
		}
		if !from.Valid {
			continue
		}
		if len(cur.Spans) == MaxSpans {
			cur.SpansComplete = false
			continue
		}
		cur.Spans = append(cur.Spans, Span{From: fromMS(from.Int64), To: fromNullMS(to), PowerState: ps.String, HostUUID: host.String})
	}
	if err := rows.Err(); err != nil {
		return nil, false, err
	}
	if len(members) == 0 {
		return nil, false, fmt.Errorf("VM %s: %w", uuid, ErrNotFound)
	}
	return members, false, nil
}
