package lineage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/vmlineage/vmlineage/agent/record"
)

// VM kinds.
const (
	KindVM       = "vm"
	KindSnapshot = "snapshot"
	KindTemplate = "template"
)

// Attribute kinds kept over time.
const (
	AttrIP   = "ip"
	AttrMAC  = "mac"
	AttrName = "name"
)

// ErrNotFound is returned when a VM is not in the store.
var ErrNotFound = errors.New("not found")

// VM is a node of the family tree.
type VM struct {
	UUID       string    `json:"vm_uuid"`
	PoolUUID   string    `json:"pool_uuid,omitempty"`
	Name       string    `json:"name"`
	ParentUUID string    `json:"parent_vm_uuid"`
	ParentVia  string    `json:"parent_via,omitempty"` // the activity that made the VM: clone, copy, snapshot, ...; without ParentUUID, made so from a VM never seen
	Kind       string    `json:"kind"`
	PowerState string    `json:"power_state"`
	HostUUID   string    `json:"host_uuid,omitempty"`
	FirstSeen  time.Time `json:"first_seen"`
	LastSeen   time.Time `json:"last_seen"`
	Destroyed  time.Time `json:"-"`
	// Ref is the VM's XAPI reference (OpaqueRef:…), stable for the life of
	// the pool database; the tracer rebuilds its view from it on restart.
	Ref string `json:"-"`
}

// IsDestroyed reports whether the VM no longer exists in its pool.
func (v *VM) IsDestroyed() bool { return !v.Destroyed.IsZero() }

// MarshalJSON adds the "destroyed" flag and time of the public JSON contract
// (`vmlineage tree --format json`).
func (v VM) MarshalJSON() ([]byte, error) {
	type plain VM
	return json.Marshal(struct {
		plain
		FirstSeen   string `json:"first_seen"`
		LastSeen    string `json:"last_seen"`
		Destroyed   bool   `json:"destroyed"`
		DestroyedAt string `json:"destroyed_at,omitempty"`
	}{plain(v), record.FormatTime(v.FirstSeen), record.FormatTime(v.LastSeen), v.IsDestroyed(), record.FormatTime(v.Destroyed)})
}

// Host is a pool member.
type Host struct {
	UUID      string    `json:"host_uuid"`
	PoolUUID  string    `json:"pool_uuid"`
	Name      string    `json:"name"`
	Address   string    `json:"address"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
}

// Pool is a XenServer pool.
type Pool struct {
	UUID       string `json:"pool_uuid"`
	Name       string `json:"name"`
	MasterUUID string `json:"master_uuid"`
}

// Attr is a value (IP, MAC, name) a VM held during [From, To); To is zero
// while it still holds it.
type Attr struct {
	VMUUID string    `json:"vm_uuid"`
	Kind   string    `json:"kind"`
	Value  string    `json:"value"`
	From   time.Time `json:"from"`
	To     time.Time `json:"to"`
}

// VMState is where a VM was and in which power state at a given time.
type VMState struct {
	VM         VM     `json:"vm"`
	PowerState string `json:"power_state"`
	HostUUID   string `json:"host_uuid"`
	HostName   string `json:"host_name"`
}

const vmCols = "uuid,pool_uuid,name,parent_uuid,parent_via,kind,power_state,host_uuid,first_seen_ms,last_seen_ms,destroyed_ms,xapi_ref"

type scanner interface{ Scan(...any) error }

func scanVM(sc scanner) (VM, error) {
	var v VM
	var first, last int64
	var destroyed sql.NullInt64
	err := sc.Scan(&v.UUID, &v.PoolUUID, &v.Name, &v.ParentUUID, &v.ParentVia, &v.Kind, &v.PowerState, &v.HostUUID, &first, &last, &destroyed, &v.Ref)
	v.FirstSeen, v.LastSeen, v.Destroyed = fromMS(first), fromMS(last), fromNullMS(destroyed)
	return v, err
}

func (s *Store) queryVMs(ctx context.Context, q string, args ...any) ([]VM, error) {
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("lineage: %w", err)
	}
	defer rows.Close()
	var out []VM
	for rows.Next() {
		v, err := scanVM(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// VM returns one VM by uuid.
func (s *Store) VM(ctx context.Context, uuid string) (VM, error) {
	// Prepared once: the tracer asks this of every VM it meets first.
	st, err := s.prepared(ctx, "SELECT "+vmCols+" FROM vms WHERE uuid=?")
	if err != nil {
		return VM{}, fmt.Errorf("lineage: %w", err)
	}
	v, err := scanVM(st.QueryRowContext(ctx, uuid))
	if errors.Is(err, sql.ErrNoRows) {
		return VM{}, fmt.Errorf("VM %s: %w", uuid, ErrNotFound)
	}
	return v, err
}

// LookupVM is VM read through the writing connection, whose page cache
// holds the pages the writer works on: for a writer's own reads between
// its transactions (the tracer asks this of every VM it meets first).
func (s *Store) LookupVM(ctx context.Context, uuid string) (VM, error) {
	if s.wconn == nil {
		return s.VM(ctx, uuid) // a reader (OpenReader) has no writing connection
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.wvm == nil {
		st, err := s.wconn.PrepareContext(ctx, "SELECT "+vmCols+" FROM vms WHERE uuid=?")
		if err != nil {
			return VM{}, fmt.Errorf("lineage: %w", err)
		}
		s.wvm = st
	}
	v, err := scanVM(s.wvm.QueryRowContext(context.WithoutCancel(ctx), uuid))
	if errors.Is(err, sql.ErrNoRows) {
		return VM{}, fmt.Errorf("VM %s: %w", uuid, ErrNotFound)
	}
	return v, err
}

// VMs returns every VM of the pool (all pools when pool is ""), ordered by
// first sighting then uuid, so a tree prints the same way every time.
func (s *Store) VMs(ctx context.Context, pool string) ([]VM, error) {
	if pool == "" {
		return s.queryVMs(ctx, "SELECT "+vmCols+" FROM vms ORDER BY first_seen_ms, uuid")
	}
	return s.queryVMs(ctx, "SELECT "+vmCols+" FROM vms WHERE pool_uuid=? ORDER BY first_seen_ms, uuid", pool)
}

// EachLiveVM calls fn for every VM of the pool that is not destroyed,
// streaming: the tracer rebuilds its view and a resync compares the pool
// with the store this way, in memory that follows the live pool only.
func (s *Store) EachLiveVM(ctx context.Context, pool string, fn func(*VM)) error {
	rows, err := s.db.QueryContext(ctx, "SELECT "+vmCols+" FROM vms WHERE pool_uuid=? AND destroyed_ms IS NULL", pool)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		v, err := scanVM(rows)
		if err != nil {
			return err
		}
		fn(&v)
	}
	return rows.Err()
}

// RecentlyDestroyed returns the n VMs of the pool destroyed last, newest first.
func (s *Store) RecentlyDestroyed(ctx context.Context, pool string, n int) ([]VM, error) {
	return s.queryVMs(ctx, "SELECT "+vmCols+" FROM vms WHERE pool_uuid=? AND destroyed_ms IS NOT NULL AND xapi_ref<>'' ORDER BY destroyed_ms DESC LIMIT ?", pool, n)
}

// maxDepth bounds the recursive walks so that a corrupted (cyclic) parent
// chain cannot loop forever.
const maxDepth = 100000

// Ancestors returns the VM's ancestors, nearest first, up to the family root.
func (s *Store) Ancestors(ctx context.Context, uuid string) ([]VM, error) {
	// path holds the uuids walked (the VM's own among them): the walk stops
	// at a VM already seen, so a cyclic chain lists each VM once.
	return s.queryVMs(ctx, `WITH RECURSIVE up(uuid, depth, path) AS (
		  SELECT parent_uuid, 1, ','||uuid||','||parent_uuid||',' FROM vms WHERE uuid=?1 AND parent_uuid<>'' AND parent_uuid<>uuid
		  UNION ALL
		  SELECT v.parent_uuid, up.depth+1, up.path||v.parent_uuid||',' FROM vms v JOIN up ON v.uuid=up.uuid
		    WHERE v.parent_uuid<>'' AND instr(up.path, ','||v.parent_uuid||',')=0 AND up.depth<?2)
		SELECT `+prefixed("v", vmCols)+` FROM up JOIN vms v ON v.uuid=up.uuid ORDER BY up.depth`, uuid, maxDepth)
}

// Descendants returns every descendant of the VM, breadth first.
func (s *Store) Descendants(ctx context.Context, uuid string) ([]VM, error) {
	// As in Ancestors, path stops the walk at a VM already on it: in a
	// cycle the VM is not its own descendant, and the walk ends.
	return s.queryVMs(ctx, `WITH RECURSIVE down(uuid, depth, path) AS (
		  SELECT uuid, 1, ','||?1||','||uuid||',' FROM vms WHERE parent_uuid=?1 AND uuid<>?1
		  UNION ALL
		  SELECT v.uuid, down.depth+1, down.path||v.uuid||',' FROM vms v JOIN down ON v.parent_uuid=down.uuid
		    WHERE instr(down.path, ','||v.uuid||',')=0 AND down.depth<?2)
		SELECT `+prefixed("v", vmCols)+` FROM (SELECT uuid, MIN(depth) AS depth FROM down GROUP BY uuid) d
		JOIN vms v ON v.uuid=d.uuid ORDER BY d.depth, v.first_seen_ms, v.uuid`, uuid, maxDepth)
}

// Siblings returns the other children of the VM's parent.
func (s *Store) Siblings(ctx context.Context, uuid string) ([]VM, error) {
	return s.queryVMs(ctx, `SELECT `+vmCols+` FROM vms WHERE parent_uuid<>'' AND uuid<>?
		AND parent_uuid=(SELECT parent_uuid FROM vms WHERE uuid=?) ORDER BY first_seen_ms, uuid`, uuid, uuid)
}

// FamilyRoot returns the oldest known ancestor (the VM itself when it has no
// parent).
func (s *Store) FamilyRoot(ctx context.Context, uuid string) (VM, error) {
	anc, err := s.Ancestors(ctx, uuid)
	if err != nil {
		return VM{}, err
	}
	if len(anc) > 0 {
		return anc[len(anc)-1], nil
	}
	return s.VM(ctx, uuid)
}

// StateAt reconstructs the pool at time at: every VM that existed then, with
// its power state and host. VMs are ordered by host then name.
func (s *Store) StateAt(ctx context.Context, pool string, at time.Time) ([]VMState, error) {
	t := ms(at)
	rows, err := s.db.QueryContext(ctx, `SELECT `+prefixed("v", vmCols)+`, COALESCE(st.power_state,''), COALESCE(st.host_uuid,''), COALESCE(h.name,'')
		FROM vms v
		LEFT JOIN vm_states st ON st.vm_uuid=v.uuid AND st.from_ms<=? AND (st.to_ms IS NULL OR st.to_ms>?)
		LEFT JOIN hosts h ON h.uuid=st.host_uuid
		WHERE v.first_seen_ms<=? AND (v.destroyed_ms IS NULL OR v.destroyed_ms>?) AND NOT `+goneAt("?")+` AND (?='' OR v.pool_uuid=?)
		ORDER BY COALESCE(h.name,'~'), v.name, v.uuid`, t, t, t, t, t, t, pool, pool)
	if err != nil {
		return nil, fmt.Errorf("lineage: state at %s: %w", record.FormatTime(at), err)
	}
	defer rows.Close()
	var out []VMState
	seen := map[string]bool{}
	for rows.Next() {
		var st VMState
		var first, last int64
		var destroyed sql.NullInt64
		v := &st.VM
		if err := rows.Scan(&v.UUID, &v.PoolUUID, &v.Name, &v.ParentUUID, &v.ParentVia, &v.Kind, &v.PowerState, &v.HostUUID, &first, &last, &destroyed, &v.Ref,
			&st.PowerState, &st.HostUUID, &st.HostName); err != nil {
			return nil, err
		}
		v.FirstSeen, v.LastSeen, v.Destroyed = fromMS(first), fromMS(last), fromNullMS(destroyed)
		if seen[v.UUID] { // overlapping spans written at the same millisecond: keep one
			continue
		}
		seen[v.UUID] = true
		if name, err := s.nameAt(ctx, v.UUID, at); err == nil && name != "" {
			v.Name = name
		}
		out = append(out, st)
	}
	return out, rows.Err()
}

// goneAt is an SQL condition: the VM v (re-created under its uuid) did not
// exist at time p (a parameter), between a destroy and its re-creation.
// The parameter appears twice.
func goneAt(p string) string {
	return "EXISTS(SELECT 1 FROM vm_gaps g WHERE g.vm_uuid=v.uuid AND g.from_ms<=" + p + " AND g.to_ms>" + p + ")"
}

func (s *Store) nameAt(ctx context.Context, uuid string, at time.Time) (string, error) {
	var name string
	err := s.db.QueryRowContext(ctx, `SELECT value FROM vm_attrs WHERE vm_uuid=? AND kind='name' AND from_ms<=? AND (to_ms IS NULL OR to_ms>?)
		ORDER BY from_ms DESC LIMIT 1`, uuid, ms(at), ms(at)).Scan(&name)
	return name, err
}

// Attrs returns every value of the given kinds a VM held, oldest first (all
// kinds when none are given).
func (s *Store) Attrs(ctx context.Context, uuid string, kinds ...string) ([]Attr, error) {
	q := "SELECT vm_uuid,kind,value,from_ms,to_ms FROM vm_attrs WHERE vm_uuid=?"
	args := []any{uuid}
	if len(kinds) > 0 {
		q += " AND kind IN (" + strings.TrimSuffix(strings.Repeat("?,", len(kinds)), ",") + ")"
		for _, k := range kinds {
			args = append(args, k)
		}
	}
	return s.queryAttrs(ctx, q+" ORDER BY from_ms, kind, value", args...)
}

func (s *Store) queryAttrs(ctx context.Context, q string, args ...any) ([]Attr, error) {
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Attr
	for rows.Next() {
		var a Attr
		var from int64
		var to sql.NullInt64
		if err := rows.Scan(&a.VMUUID, &a.Kind, &a.Value, &from, &to); err != nil {
			return nil, err
		}
		a.From, a.To = fromMS(from), fromNullMS(to)
		out = append(out, a)
	}
	return out, rows.Err()
}

// FindByAttr returns the uuids of the VMs that held value (an IP, a MAC or a
// name) at time at; the zero time means "now".
func (s *Store) FindByAttr(ctx context.Context, kind, value string, at time.Time) ([]string, error) {
	if kind == AttrMAC {
		value = normalizeMAC(value)
	}
	var rows *sql.Rows
	var err error
	if at.IsZero() {
		rows, err = s.db.QueryContext(ctx, "SELECT DISTINCT vm_uuid FROM vm_attrs WHERE kind=? AND value=? AND to_ms IS NULL ORDER BY vm_uuid", kind, value)
	} else {
		rows, err = s.db.QueryContext(ctx, `SELECT DISTINCT vm_uuid FROM vm_attrs WHERE kind=? AND value=? AND from_ms<=? AND (to_ms IS NULL OR to_ms>?)
			ORDER BY vm_uuid`, kind, value, ms(at), ms(at))
	}
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// Hosts returns the known hosts.
func (s *Store) Hosts(ctx context.Context) ([]Host, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT uuid,pool_uuid,name,address,first_seen_ms,last_seen_ms FROM hosts ORDER BY name, uuid")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Host
	for rows.Next() {
		var h Host
		var f, l int64
		if err := rows.Scan(&h.UUID, &h.PoolUUID, &h.Name, &h.Address, &f, &l); err != nil {
			return nil, err
		}
		h.FirstSeen, h.LastSeen = fromMS(f), fromMS(l)
		out = append(out, h)
	}
	return out, rows.Err()
}

// Pools returns the known pools.
func (s *Store) Pools(ctx context.Context) ([]Pool, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT uuid,name,master_uuid FROM pools ORDER BY name, uuid")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Pool
	for rows.Next() {
		var p Pool
		if err := rows.Scan(&p.UUID, &p.Name, &p.MasterUUID); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

func prefixed(alias, cols string) string {
	parts := strings.Split(cols, ",")
	for i, p := range parts {
		parts[i] = alias + "." + p
	}
	return strings.Join(parts, ",")
}

// VMsKnownAs returns the VMs that the records or the name history know by
// id, a uuid or a name (current or former): for VMs the tree does not
// hold (records replayed from logs) or no longer names so. Each comes with
// the name of its latest record. It reads the records whole (no index on
// names): for the command line, not for a hot path.
func (s *Store) VMsKnownAs(ctx context.Context, id string) ([]VM, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT r.vm_uuid, (SELECT r2.vm_name FROM records r2 WHERE r2.vm_uuid=r.vm_uuid ORDER BY r2.start_ms DESC LIMIT 1)
		FROM (SELECT DISTINCT vm_uuid FROM records WHERE vm_uuid<>'' AND (vm_uuid=?1 OR vm_name=?1)
		      UNION SELECT vm_uuid FROM vm_attrs WHERE kind=?2 AND value=?1) r ORDER BY r.vm_uuid`, id, AttrName)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []VM
	for rows.Next() {
		var v VM
		var name sql.NullString
		if err := rows.Scan(&v.UUID, &name); err != nil {
			return nil, err
		}
		v.Name = name.String
		out = append(out, v)
	}
	return out, rows.Err()
}
