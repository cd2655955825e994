package alerts

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/plugins"
)

// alertSchema lives beside the lineage tables in the same SQLite file: the
// alerts as received and as sent out, and which VMs each named when, which
// is what lineage-suspects counts ("k VMs of one family within a window").
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
`

// Service is the host side of the detectors' Lineage (served to them over
// go-plugin's broker) and the alert storage.
type Service struct {
	st *lineage.Store
	db *sql.DB
	// wmu serialises this service's writes: concurrent write transactions
	// would meet in SQLite's busy handler, which sleeps, instead of queueing.
	wmu sync.Mutex
	// stmts caches prepared statements: parsing SQL was a third of the
	// enrichment path's CPU.
	stmts sync.Map // query -> *sql.Stmt

	enriched chan enrichedRow // stored in batches by storeEnriched
	done     chan struct{}
	closeMu  sync.Once
}

type enrichedRow struct {
	seq  int64
	json []byte
}

// stmt returns the prepared statement for q.
func (s *Service) stmt(ctx context.Context, q string) (*sql.Stmt, error) {
	if st, ok := s.stmts.Load(q); ok {
		return st.(*sql.Stmt), nil
	}
	st, err := s.db.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	if prev, loaded := s.stmts.LoadOrStore(q, st); loaded {
		st.Close()
		return prev.(*sql.Stmt), nil
	}
	return st, nil
}

// inList is "?,?,…" for n parameters. Lists are padded to a power of two
// (repeating the last value) so that few distinct statements are prepared.
func inList(vals []string) (string, []any) {
	n := 1
	for n < len(vals) {
		n *= 2
	}
	args := make([]any, n)
	for i := range args {
		args[i] = vals[min(i, len(vals)-1)]
	}
	return strings.TrimSuffix(strings.Repeat("?,", n), ","), args
}

var _ plugins.Lineage = (*Service)(nil)

// NewService creates the alert tables in the store when missing.
func NewService(ctx context.Context, st *lineage.Store) (*Service, error) {
	if _, err := st.DB().ExecContext(ctx, alertSchema); err != nil {
		return nil, fmt.Errorf("alerts: create tables: %w", err)
	}
	s := &Service{st: st, db: st.DB(), enriched: make(chan enrichedRow, 4096), done: make(chan struct{})}
	go s.storeEnriched()
	return s, nil
}

// Close stores the enriched alerts still queued; the store stays open.
func (s *Service) Close() {
	s.closeMu.Do(func() {
		close(s.enriched)
		<-s.done
		s.stmts.Range(func(_, v any) bool { v.(*sql.Stmt).Close(); return true })
	})
}

// Store is the lineage store.
func (s *Service) Store() *lineage.Store { return s.st }

func toVM(v *lineage.VM) plugins.VM {
	return plugins.VM{UUID: v.UUID, PoolUUID: v.PoolUUID, Name: v.Name, ParentUUID: v.ParentUUID, ParentVia: v.ParentVia,
		Kind: v.Kind, PowerState: v.PowerState, HostUUID: v.HostUUID, FirstSeen: v.FirstSeen, LastSeen: v.LastSeen, Destroyed: v.Destroyed}
}

func toVMs(vs []lineage.VM, err error) ([]plugins.VM, error) {
	if err != nil {
		return nil, err
	}
	out := make([]plugins.VM, len(vs))
	for i := range vs {
		out[i] = toVM(&vs[i])
	}
	return out, nil
}

// VM implements plugins.Lineage.
func (s *Service) VM(ctx context.Context, uuid string) (plugins.VM, error) {
	v, err := s.st.VM(ctx, uuid)
	if errors.Is(err, lineage.ErrNotFound) {
		return plugins.VM{}, fmt.Errorf("VM %s: %w", uuid, plugins.ErrNotFound)
	}
	if err != nil {
		return plugins.VM{}, err
	}
	return toVM(&v), nil
}

// Ancestors implements plugins.Lineage.
func (s *Service) Ancestors(ctx context.Context, uuid string) ([]plugins.VM, error) {
	return toVMs(s.st.Ancestors(ctx, uuid))
}

// Descendants implements plugins.Lineage.
func (s *Service) Descendants(ctx context.Context, uuid string) ([]plugins.VM, error) {
	return toVMs(s.st.Descendants(ctx, uuid))
}

// Siblings implements plugins.Lineage.
func (s *Service) Siblings(ctx context.Context, uuid string) ([]plugins.VM, error) {
	return toVMs(s.st.Siblings(ctx, uuid))
}

// Family implements plugins.Lineage in one prepared query over the vms
// table: up to the root, then down from it (the same walks as
// lineage.Store's FamilyRoot and Descendants, depth-bounded the same way).
func (s *Service) Family(ctx context.Context, uuid string) ([]plugins.VM, error) {
	st, err := s.stmt(ctx, `WITH RECURSIVE
		  up(uuid, parent, depth) AS (
		    SELECT uuid, parent_uuid, 0 FROM vms WHERE uuid=?1
		    UNION ALL
		    SELECT v.uuid, v.parent_uuid, up.depth+1 FROM vms v JOIN up ON v.uuid=up.parent WHERE up.parent<>'' AND up.depth<100000),
		  root(uuid) AS (SELECT uuid FROM up ORDER BY depth DESC LIMIT 1),
		  down(uuid, depth) AS (
		    SELECT uuid, 0 FROM root
		    UNION
		    SELECT v.uuid, down.depth+1 FROM vms v JOIN down ON v.parent_uuid=down.uuid WHERE down.depth<100000)
		SELECT v.uuid,v.pool_uuid,v.name,v.parent_uuid,v.parent_via,v.kind,v.power_state,v.host_uuid,v.first_seen_ms,v.last_seen_ms,v.destroyed_ms
		FROM (SELECT uuid, MIN(depth) AS depth FROM down GROUP BY uuid) d JOIN vms v ON v.uuid=d.uuid
		ORDER BY d.depth, v.first_seen_ms, v.uuid`)
	if err != nil {
		return nil, fmt.Errorf("family of %s: %w", uuid, err)
	}
	rows, err := st.QueryContext(ctx, uuid)
	if err != nil {
		return nil, fmt.Errorf("family of %s: %w", uuid, err)
	}
	defer rows.Close()
	var out []plugins.VM
	for rows.Next() {
		var v plugins.VM
		var first, last int64
		var destroyed sql.NullInt64
		if err := rows.Scan(&v.UUID, &v.PoolUUID, &v.Name, &v.ParentUUID, &v.ParentVia, &v.Kind, &v.PowerState, &v.HostUUID, &first, &last, &destroyed); err != nil {
			return nil, err
		}
		v.FirstSeen, v.LastSeen = msTime(first), msTime(last)
		if destroyed.Valid {
			v.Destroyed = msTime(destroyed.Int64)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("VM %s: %w", uuid, plugins.ErrNotFound)
	}
	return out, nil
}

// StatesAt implements plugins.Lineage. lineage.Store.StateAt reconstructs a
// whole pool, far too slow per alert with a million VMs, so this reads the
// vms and vm_states tables (documented in agent/lineage/README.md) for the
// VMs asked for, in one query per 500.
func (s *Service) StatesAt(ctx context.Context, uuids []string, at time.Time) ([]plugins.VMState, error) {
	rows, err := s.statesAt(ctx, uuids, at)
	if err != nil {
		return nil, err
	}
	out := make([]plugins.VMState, len(rows))
	for i, r := range rows {
		out[i] = r.VMState
	}
	return out, nil
}

type stateRow struct {
	plugins.VMState
	name string
}

func (s *Service) statesAt(ctx context.Context, uuids []string, at time.Time) ([]stateRow, error) {
	t := at.UnixMilli()
	found := make(map[string]stateRow, len(uuids))
	const chunk = 500
	for rest := uuids; len(rest) > 0; {
		n := min(chunk, len(rest))
		part := rest[:n]
		rest = rest[n:]
		list, in := inList(part)
		args := append([]any{t, t}, in...)
		// Spans are newest first per VM so the first row of a VM wins.
		st, err := s.stmt(ctx, `SELECT v.uuid, v.name, v.first_seen_ms, v.destroyed_ms, COALESCE(st.power_state,''), COALESCE(st.host_uuid,'')
			FROM vms v LEFT JOIN vm_states st ON st.vm_uuid=v.uuid AND st.from_ms<=?1 AND (st.to_ms IS NULL OR st.to_ms>?2)
			WHERE v.uuid IN (`+list+`) ORDER BY v.uuid, st.from_ms DESC`)
		if err != nil {
			return nil, fmt.Errorf("states: %w", err)
		}
		rows, err := st.QueryContext(ctx, args...)
		if err != nil {
			return nil, fmt.Errorf("states: %w", err)
		}
		for rows.Next() {
			var r stateRow
			var first int64
			var destroyed sql.NullInt64
			if err := rows.Scan(&r.UUID, &r.name, &first, &destroyed, &r.PowerState, &r.HostUUID); err != nil {
				rows.Close()
				return nil, err
			}
			if _, dup := found[r.UUID]; dup {
				continue
			}
			r.Existed = first <= t && (!destroyed.Valid || destroyed.Int64 > t)
			found[r.UUID] = r
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	out := make([]stateRow, len(uuids))
	for i, u := range uuids {
		if r, ok := found[u]; ok {
			out[i] = r
		} else {
			out[i].UUID = u
		}
	}
	return out, nil
}

// Records implements plugins.Lineage.
func (s *Service) Records(ctx context.Context, q plugins.RecordQuery) ([]record.Record, error) {
	return s.st.Records(ctx, lineage.Filter{VMUUID: q.VMUUID, Activity: q.Activity, Since: q.Since, Until: q.Until, Limit: q.Limit})
}

// AlertedVMs implements plugins.Lineage.
func (s *Service) AlertedVMs(ctx context.Context, uuids []string, since, until time.Time) ([]plugins.AlertedVM, error) {
	var out []plugins.AlertedVM
	const chunk = 500 // SQLite's bound-parameter limit is far above; keeps statements small
	for len(uuids) > 0 {
		n := min(chunk, len(uuids))
		part := uuids[:n]
		uuids = uuids[n:]
		list, in := inList(part)
		args := append([]any{since.UnixMilli(), until.UnixMilli()}, in...)
		st, err := s.stmt(ctx, `SELECT vm_uuid, MIN(time_ms), MAX(time_ms), COUNT(*) FROM alert_vms
			WHERE time_ms>=?1 AND time_ms<=?2 AND vm_uuid IN (`+list+`)
			GROUP BY vm_uuid ORDER BY MIN(time_ms)`)
		if err != nil {
			return nil, fmt.Errorf("alerted VMs: %w", err)
		}
		rows, err := st.QueryContext(ctx, args...)
		if err != nil {
			return nil, fmt.Errorf("alerted VMs: %w", err)
		}
		for rows.Next() {
			var a plugins.AlertedVM
			var f, l int64
			if err := rows.Scan(&a.UUID, &f, &l, &a.Count); err != nil {
				rows.Close()
				return nil, err
			}
			a.First, a.Last = time.UnixMilli(f).UTC(), time.UnixMilli(l).UTC()
			out = append(out, a)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// saveAlert stores the alert and the VMs it was tied to; an alert already
// stored (same id) is not stored or counted twice. It returns the alert's seq.
func (s *Service) saveAlert(ctx context.Context, a *Alert, raw []byte, vms []plugins.AlertVM, received time.Time) (int64, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	var seq int64
	ins, err := s.stmt(ctx, `INSERT INTO alerts(id,time_ms,received_ms,source,matched,json) VALUES(?,?,?,?,?,?)
		ON CONFLICT(id) DO NOTHING RETURNING seq`)
	if err != nil {
		return 0, err
	}
	err = tx.StmtContext(ctx, ins).QueryRowContext(ctx, a.ID, a.Time.UnixMilli(), received.UnixMilli(), a.Source, len(vms) > 0, string(raw)).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) {
		err = tx.QueryRowContext(ctx, "SELECT seq FROM alerts WHERE id=?", a.ID).Scan(&seq)
		if err != nil {
			return 0, err
		}
		return seq, tx.Commit()
	}
	if err != nil {
		return 0, err
	}
	insVM, err := s.stmt(ctx, "INSERT INTO alert_vms(alert_seq,vm_uuid,time_ms,field,value) VALUES(?,?,?,?,?)")
	if err != nil {
		return 0, err
	}
	txIns := tx.StmtContext(ctx, insVM)
	for _, v := range vms {
		if _, err := txIns.ExecContext(ctx, seq, v.UUID, a.Time.UnixMilli(), v.Field, v.Value); err != nil {
			return 0, err
		}
	}
	return seq, tx.Commit()
}

// saveEnriched queues the enriched alert for storage. Only the stored copy
// waits (up to 200 ms, in batches): the alert itself has gone out.
func (s *Service) saveEnriched(ctx context.Context, seq int64, out []byte) {
	select {
	case s.enriched <- enrichedRow{seq, out}:
	case <-ctx.Done():
	}
}

func (s *Service) storeEnriched() {
	defer close(s.done)
	var batch []enrichedRow
	flush := func() {
		if len(batch) == 0 {
			return
		}
		if err := s.writeEnriched(batch); err != nil {
			// The alerts went out; only their stored copies are missing.
			fmt.Fprintf(os.Stderr, "vmlineage alerts: storing %d enriched alerts: %v\n", len(batch), err)
		}
		batch = batch[:0]
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case r, ok := <-s.enriched:
			if !ok {
				flush()
				return
			}
			if batch = append(batch, r); len(batch) >= 512 {
				flush()
			}
		case <-tick.C:
			flush()
		}
	}
}

func (s *Service) writeEnriched(batch []enrichedRow) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	ctx := context.Background()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	up, err := s.stmt(ctx, "UPDATE alerts SET enriched=? WHERE seq=?")
	if err != nil {
		return err
	}
	txUp := tx.StmtContext(ctx, up)
	for _, r := range batch {
		if _, err := txUp.ExecContext(ctx, string(r.json), r.seq); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// findByAttr is lineage.Store.FindByAttr at a given time, with a prepared
// statement (the same query over the vm_attrs table).
func (s *Service) findByAttr(ctx context.Context, kind, value string, at time.Time) ([]string, error) {
	st, err := s.stmt(ctx, `SELECT DISTINCT vm_uuid FROM vm_attrs WHERE kind=?1 AND value=?2 AND from_ms<=?3 AND (to_ms IS NULL OR to_ms>?3) ORDER BY vm_uuid`)
	if err != nil {
		return nil, err
	}
	rows, err := st.QueryContext(ctx, kind, value, at.UnixMilli())
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

// match ties the alert to VMs as they were at its time.
func (s *Service) match(ctx context.Context, a *Alert) ([]plugins.AlertVM, []string, error) {
	var out []plugins.AlertVM
	var notes []string
	seen := map[string]bool{}
	add := func(uuid, field, value string) {
		if seen[uuid] {
			return
		}
		seen[uuid] = true
		out = append(out, plugins.AlertVM{UUID: uuid, Field: field, Value: value})
	}
	for _, u := range lookupStrings(a.Doc, "cloud.instance.id") {
		v, err := s.st.VM(ctx, strings.ToLower(strings.TrimSpace(u)))
		if errors.Is(err, lineage.ErrNotFound) {
			notes = append(notes, fmt.Sprintf("cloud.instance.id %s is not a VM in the lineage store", u))
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		add(v.UUID, "cloud.instance.id", u)
	}
	find := func(kind, field string, norm func(string) string) error {
		for _, val := range lookupStrings(a.Doc, field) {
			uu, err := s.findByAttr(ctx, kind, norm(val), a.Time)
			if err != nil {
				return err
			}
			if len(uu) > 1 {
				notes = append(notes, fmt.Sprintf("%s %s was held by %d VMs at the alert's time; all are taken", field, val, len(uu)))
			}
			for _, u := range uu {
				add(u, field, val)
			}
		}
		return nil
	}
	same := strings.TrimSpace
	for _, f := range []struct{ kind, field string }{
		{lineage.AttrName, "host.name"}, {lineage.AttrIP, "host.ip"}, {lineage.AttrIP, "source.ip"},
		{lineage.AttrIP, "destination.ip"}, {lineage.AttrMAC, "host.mac"},
	} {
		norm := same
		if f.kind == lineage.AttrMAC {
			norm = normalizeMAC
		}
		if err := find(f.kind, f.field, norm); err != nil {
			return nil, nil, fmt.Errorf("match %s: %w", f.field, err)
		}
	}
	return out, notes, nil
}

// msTime reads the store's Unix milliseconds; 0 is the zero time, as in
// package lineage.
func msTime(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v).UTC()
}
