package lineage

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

// Tx is a write transaction (see Store.Update).
type Tx struct {
	tx    *sql.Tx
	ctx   context.Context
	store *Store
	stmts map[string]*sql.Stmt

	chain      *chainHead // the head as this transaction sees it
	chainDirty bool       // moved: saved before commit
	upgrading  bool       // schema upgrade: prepare on the transaction
}

// exec runs a statement prepared once per transaction: the tracer writes
// thousands of rows per batch and SQL parsing would otherwise dominate.
func (t *Tx) exec(q string, args ...any) (sql.Result, error) {
	st, err := t.stmt(q)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(t.ctx, args...)
}

func (t *Tx) stmt(q string) (*sql.Stmt, error) {
	if st, ok := t.stmts[q]; ok {
		return st, nil
	}
	if t.stmts == nil {
		t.stmts = map[string]*sql.Stmt{}
	}
	if t.upgrading {
		// The schema is changing inside this transaction: statements
		// prepared on other connections would not see it.
		st, err := t.tx.PrepareContext(t.ctx, q)
		if err == nil {
			t.stmts[q] = st
		}
		return st, err
	}
	ps, err := t.store.prepared(t.ctx, q)
	if err != nil {
		return nil, err
	}
	st := t.tx.StmtContext(t.ctx, ps)
	t.stmts[q] = st
	return st, nil
}

func (t *Tx) queryRow(q string, args ...any) *sql.Row {
	st, err := t.stmt(q)
	if err != nil {
		return t.tx.QueryRowContext(t.ctx, q, args...)
	}
	return st.QueryRowContext(t.ctx, args...)
}

// PutRecord stores r unless a record with the same id is already there (ids
// are deterministic, so the same operation seen twice is stored once). It
// reports whether r was new. A new record is sealed into the hash chain at
// once (r.Chain is set) unless the store defers sealing; a second sighting
// of a record not yet sealed completes it (record.Merge), one already sealed
// is never changed.
func (t *Tx) PutRecord(r *record.Record) (bool, error) {
	if err := r.Validate(); err != nil {
		return false, fmt.Errorf("lineage: refusing record: %w", err)
	}
	plain := *r
	plain.Chain = nil
	// appendRecordJSON: json.Marshal's bytes without reflection (a quarter of
	// what storing a record cost the tracer).
	js, err := appendRecordJSON(nil, &plain)
	if err != nil {
		return false, err
	}
	var link *record.Chain
	if !t.store.deferSeal.Load() {
		if link, err = t.nextLink(&plain); err != nil {
			return false, err
		}
	}
	var cseq, sealed any
	var cprev, chash string
	if link != nil {
		cseq, cprev, chash, sealed = link.Seq, link.Prev, link.Hash, time.Now().UnixMilli()
	}
	res, err := t.exec(`INSERT INTO records(id,pool_uuid,host_uuid,host_name,vm_uuid,vm_name,parent_vm_uuid,activity,operation,
		start_ms,end_ms,result,error,task_uuid,task_id,source,destination_host_uuid,json,chain_seq,chain_prev,chain_hash,sealed_ms)
		VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO NOTHING`,
		r.ID, r.PoolUUID, r.HostUUID, r.HostName, r.VMUUID, r.VMName, r.ParentVMUUID, string(r.Activity), r.Operation,
		ms(r.Start), nullMS(r.End), string(r.Result), r.Error, r.TaskUUID, r.TaskID, string(r.Source), r.DestinationHostUUID, string(js),
		cseq, cprev, chash, sealed)
	if err != nil {
		return false, fmt.Errorf("lineage: store record %s: %w", r.ID, err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		if link != nil {
			t.advance(link)
			r.Chain = link
		}
		return true, nil
	}
	return false, t.mergeUnsealed(r)
}

// mergeUnsealed completes the stored, not yet sealed record with r's id with
// what r knows (record.Merge).
func (t *Tx) mergeUnsealed(r *record.Record) error {
	var js string
	var cseq sql.NullInt64
	if err := t.queryRow("SELECT json, chain_seq FROM records WHERE id=?", r.ID).Scan(&js, &cseq); err != nil {
		return fmt.Errorf("lineage: read record %s: %w", r.ID, err)
	}
	if cseq.Valid {
		return nil // sealed: the chain vouches for it as it is
	}
	var stored record.Record
	if err := json.Unmarshal([]byte(js), &stored); err != nil {
		return fmt.Errorf("lineage: record %s is corrupt: %w", r.ID, err)
	}
	if !record.Merge(&stored, r) {
		return nil
	}
	nj, err := appendRecordJSON(nil, &stored)
	if err != nil {
		return err
	}
	// Every indexed column Merge can change (VerifyChain compares them with
	// the hashed JSON).
	if _, err := t.exec(`UPDATE records SET host_uuid=?,host_name=?,vm_uuid=?,vm_name=?,parent_vm_uuid=?,operation=?,start_ms=?,end_ms=?,
		result=?,error=?,task_uuid=?,task_id=?,destination_host_uuid=?,json=? WHERE id=? AND chain_seq IS NULL`,
		stored.HostUUID, stored.HostName, stored.VMUUID, stored.VMName, stored.ParentVMUUID, stored.Operation, ms(stored.Start), nullMS(stored.End),
		string(stored.Result), stored.Error, stored.TaskUUID, stored.TaskID, stored.DestinationHostUUID, string(nj), r.ID); err != nil {
		return fmt.Errorf("lineage: complete record %s: %w", r.ID, err)
	}
	t.store.merged.Add(1)
	return nil
}

// UpdateUnsealed rewrites the unsealed record r.ID with r (an attribution
// joined before sealing). It reports false when the record is sealed or
// unknown: a sealed record is never changed.
func (t *Tx) UpdateUnsealed(r *record.Record) (bool, error) {
	if err := r.Validate(); err != nil {
		return false, fmt.Errorf("lineage: refusing record: %w", err)
	}
	plain := *r
	plain.Chain = nil
	js, err := appendRecordJSON(nil, &plain)
	if err != nil {
		return false, err
	}
	res, err := t.exec(`UPDATE records SET host_uuid=?,host_name=?,vm_uuid=?,vm_name=?,parent_vm_uuid=?,activity=?,operation=?,start_ms=?,end_ms=?,
		result=?,error=?,task_uuid=?,task_id=?,source=?,destination_host_uuid=?,json=? WHERE id=? AND chain_seq IS NULL`,
		r.HostUUID, r.HostName, r.VMUUID, r.VMName, r.ParentVMUUID, string(r.Activity), r.Operation, ms(r.Start), nullMS(r.End),
		string(r.Result), r.Error, r.TaskUUID, r.TaskID, string(r.Source), r.DestinationHostUUID, string(js), r.ID)
	if err != nil {
		return false, fmt.Errorf("lineage: update record %s: %w", r.ID, err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// HasRecord reports whether a record with id is stored.
func (t *Tx) HasRecord(id string) (bool, error) {
	var one int
	err := t.queryRow("SELECT 1 FROM records WHERE id=?", id).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// PutVM inserts or updates a VM's current facts. An empty ParentUUID never
// erases a known parent; FirstSeen keeps the earliest value. A VM stored
// destroyed and put alive again (its uuid re-created) keeps the time it was
// gone, from its destroy to v.FirstSeen, in vm_gaps.
func (t *Tx) PutVM(v *VM) error {
	if v.UUID == "" {
		return errors.New("lineage: VM without uuid")
	}
	if v.Destroyed.IsZero() {
		back := ms(v.FirstSeen)
		if back == 0 {
			back = ms(v.LastSeen)
		}
		if _, err := t.exec(`INSERT INTO vm_gaps(vm_uuid,from_ms,to_ms) SELECT uuid, destroyed_ms, MAX(destroyed_ms,?) FROM vms
			WHERE uuid=? AND destroyed_ms IS NOT NULL`, back, v.UUID); err != nil {
			return fmt.Errorf("lineage: store VM %s: %w", v.UUID, err)
		}
	}
	kind := v.Kind
	if kind == "" {
		kind = KindVM
	}
	parent, via := v.ParentUUID, v.ParentVia
	if parent != "" {
		cyc, err := t.wouldCycle(v.UUID, parent)
		if err != nil {
			return fmt.Errorf("lineage: store VM %s: %w", v.UUID, err)
		}
		if cyc {
			// The VM keeps the parent it had; the record keeps the claim.
			t.store.refuseParent(v.UUID, parent)
			parent, via = "", ""
		}
	}
	_, err := t.exec(`INSERT INTO vms(uuid,pool_uuid,name,parent_uuid,parent_via,kind,power_state,host_uuid,first_seen_ms,last_seen_ms,destroyed_ms,xapi_ref)
		VALUES(?,?,?,?,?,?,?,?,?,?,?,?)
		ON CONFLICT(uuid) DO UPDATE SET
		  pool_uuid=CASE WHEN excluded.pool_uuid<>'' THEN excluded.pool_uuid ELSE pool_uuid END,
		  name=excluded.name,
		  parent_uuid=CASE WHEN excluded.parent_uuid<>'' THEN excluded.parent_uuid ELSE parent_uuid END,
		  parent_via=CASE WHEN excluded.parent_uuid<>'' OR (parent_uuid='' AND parent_via='') THEN excluded.parent_via ELSE parent_via END,
		  kind=excluded.kind, power_state=excluded.power_state, host_uuid=excluded.host_uuid,
		  first_seen_ms=MIN(first_seen_ms, excluded.first_seen_ms),
		  last_seen_ms=MAX(last_seen_ms, excluded.last_seen_ms),
		  destroyed_ms=excluded.destroyed_ms,
		  xapi_ref=CASE WHEN excluded.xapi_ref<>'' THEN excluded.xapi_ref ELSE xapi_ref END`,
		v.UUID, v.PoolUUID, v.Name, parent, via, kind, v.PowerState, v.HostUUID,
		ms(v.FirstSeen), ms(v.LastSeen), nullMS(v.Destroyed), v.Ref)
	if err != nil {
		return fmt.Errorf("lineage: store VM %s: %w", v.UUID, err)
	}
	return nil
}

// fillParent gives a VM the tree holds without a parent the parent a
// creating record names, unless that would close a cycle.
func (t *Tx) fillParent(child, parent, via string) error {
	var cur string
	err := t.queryRow("SELECT parent_uuid FROM vms WHERE uuid=?", child).Scan(&cur)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && cur != "") {
		return nil // no such VM, or the tree knew better
	}
	if err != nil {
		return err
	}
	cyc, err := t.wouldCycle(child, parent)
	if err != nil {
		return err
	}
	if cyc {
		t.store.refuseParent(child, parent)
		return nil
	}
	_, err = t.exec("UPDATE vms SET parent_uuid=?, parent_via=? WHERE uuid=? AND parent_uuid=''", parent, via, child)
	return err
}

// wouldCycle reports whether making parent the parent of child would make
// child its own ancestor: parent is child, or child is among parent's
// ancestors. xapi never does that, but a parent link comes from outside
// input too (replayed or forwarded logs), and one cycle in the tree would
// make every walk of that family run to maxDepth.
func (t *Tx) wouldCycle(child, parent string) (bool, error) {
	if child == parent {
		return true, nil
	}
	// UNION, not UNION ALL: a VM met again is not queued again, so a cycle
	// already in a corrupt store ends the walk instead of running it to
	// maxDepth.
	var yes bool
	err := t.queryRow(`WITH RECURSIVE up(uuid) AS (
		  SELECT parent_uuid FROM vms WHERE uuid=?1 AND parent_uuid<>''
		  UNION
		  SELECT v.parent_uuid FROM up CROSS JOIN vms v ON v.uuid=up.uuid WHERE v.parent_uuid<>'')
		SELECT EXISTS(SELECT 1 FROM up WHERE uuid=?2)`, parent, child).Scan(&yes)
	return yes, err
}

// SetPower updates the power state and host of a VM the store holds alive,
// touching nothing else (PutVM rewrites every column, and with them the
// entries of the name and parent indexes).
func (t *Tx) SetPower(vmUUID, ps, host string, at time.Time) error {
	_, err := t.exec("UPDATE vms SET power_state=?, host_uuid=?, last_seen_ms=MAX(last_seen_ms,?) WHERE uuid=?", ps, host, ms(at), vmUUID)
	if err != nil {
		return fmt.Errorf("lineage: store VM %s: %w", vmUUID, err)
	}
	return nil
}

// OpenState is SetState for a VM the store holds no state of yet (a VM the
// caller has just created): the first span is opened without a read.
func (t *Tx) OpenState(vmUUID, ps, host string, at time.Time) error {
	if ps == "" {
		return nil
	}
	_, err := t.exec("INSERT INTO vm_states(vm_uuid,from_ms,to_ms,power_state,host_uuid) VALUES(?,?,NULL,?,?)", vmUUID, ms(at), ps, host)
	return err
}

// SetState records that from time at the VM is in power state ps on host
// (empty when not resident). The open span is closed at at; nothing is
// written when the state is unchanged.
func (t *Tx) SetState(vmUUID, ps, host string, at time.Time) error {
	var curPS, curHost string
	var from int64
	err := t.queryRow("SELECT power_state,host_uuid,from_ms FROM vm_states WHERE vm_uuid=? AND to_ms IS NULL ORDER BY from_ms DESC LIMIT 1", vmUUID).Scan(&curPS, &curHost, &from)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return fmt.Errorf("lineage: read state of %s: %w", vmUUID, err)
	default:
		if curPS == ps && curHost == host {
			return nil
		}
		end := max(ms(at), from)
		if _, err := t.exec("UPDATE vm_states SET to_ms=? WHERE vm_uuid=? AND to_ms IS NULL", end, vmUUID); err != nil {
			return err
		}
		if end > ms(at) {
			at = fromMS(end)
		}
	}
	if ps == "" {
		return nil
	}
	_, err = t.exec("INSERT INTO vm_states(vm_uuid,from_ms,to_ms,power_state,host_uuid) VALUES(?,?,NULL,?,?)", vmUUID, ms(at), ps, host)
	return err
}

// MoveState is SetState for a caller that knows the state changed (the
// tracer keeps what it wrote): it closes the open span and opens the new one
// without reading first.
//
// Like SetState, a time before the open span's start is moved up to it
// (task ends in whole seconds on the master's clock, changes dated by the
// agent's): spans never overlap or invert.
func (t *Tx) MoveState(vmUUID, ps, host string, at time.Time) error {
	end, err := t.closeSpans("UPDATE vm_states SET to_ms=MAX(from_ms,?1) WHERE vm_uuid=?2 AND to_ms IS NULL RETURNING to_ms", ms(at), vmUUID)
	if err != nil {
		return err
	}
	if ps == "" {
		return nil
	}
	_, err = t.exec("INSERT INTO vm_states(vm_uuid,from_ms,to_ms,power_state,host_uuid) VALUES(?,?,NULL,?,?)", vmUUID, max(end, ms(at)), ps, host)
	return err
}

// closeSpans runs an UPDATE ... RETURNING to_ms that closes spans and
// returns the latest end it gave (0 when it closed none): the time a span
// opened in their place starts at the earliest.
func (t *Tx) closeSpans(q string, args ...any) (int64, error) {
	st, err := t.stmt(q)
	if err != nil {
		return 0, err
	}
	rows, err := st.QueryContext(t.ctx, args...)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	var end int64
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			return 0, err
		}
		end = max(end, v)
	}
	return end, rows.Err()
}

// closeAttrs closes the open spans of the values a VM no longer holds, each
// at at or at its start if later (never inverted), and returns when spans
// of new values may start: at, or the latest end given if later.
func (t *Tx) closeAttrs(vmUUID, kind string, gone []string, at time.Time) (int64, error) {
	from := ms(at)
	for _, v := range gone {
		end, err := t.closeSpans("UPDATE vm_attrs SET to_ms=MAX(from_ms,?1) WHERE vm_uuid=?2 AND kind=?3 AND value=?4 AND to_ms IS NULL RETURNING to_ms",
			ms(at), vmUUID, kind, v)
		if err != nil {
			return 0, err
		}
		from = max(from, end)
	}
	return from, nil
}

// ReplaceAttrs is SetAttrs for a caller that knows the values held before
// (old): it writes only the spans that change, without reading first.
// A time before a closed span's start is clamped as in MoveState.
func (t *Tx) ReplaceAttrs(vmUUID, kind string, old, values []string, at time.Time) error {
	var gone []string
	for _, v := range old {
		if !slices.Contains(values, v) {
			gone = append(gone, v)
		}
	}
	from, err := t.closeAttrs(vmUUID, kind, gone, at)
	if err != nil {
		return err
	}
	for _, v := range values {
		if v == "" || slices.Contains(old, v) {
			continue
		}
		if _, err := t.exec("INSERT INTO vm_attrs(vm_uuid,kind,value,from_ms,to_ms) VALUES(?,?,?,?,NULL)", vmUUID, kind, v, from); err != nil {
			return err
		}
	}
	return nil
}

// SetAttrs records the set of values of one kind (AttrIP, AttrMAC, AttrName)
// a VM holds from time at: spans of values it no longer holds are closed,
// new values open spans. Values are compared exactly. A time before a
// closed span's start is clamped as in MoveState.
func (t *Tx) SetAttrs(vmUUID, kind string, values []string, at time.Time) error {
	st, err := t.stmt("SELECT value FROM vm_attrs WHERE vm_uuid=? AND kind=? AND to_ms IS NULL")
	if err != nil {
		return err
	}
	rows, err := st.QueryContext(t.ctx, vmUUID, kind)
	if err != nil {
		return err
	}
	var open []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return err
		}
		open = append(open, v)
	}
	rows.Close()
	var gone []string
	for _, v := range open {
		if !slices.Contains(values, v) {
			gone = append(gone, v)
		}
	}
	from, err := t.closeAttrs(vmUUID, kind, gone, at)
	if err != nil {
		return err
	}
	for _, v := range values {
		if v == "" || slices.Contains(open, v) {
			continue
		}
		open = append(open, v)
		if _, err := t.exec("INSERT INTO vm_attrs(vm_uuid,kind,value,from_ms,to_ms) VALUES(?,?,?,?,NULL)", vmUUID, kind, v, from); err != nil {
			return err
		}
	}
	return nil
}

// MarkDestroyed marks the VM destroyed at at and closes its open state and
// attribute spans. The VM stays in the tree.
func (t *Tx) MarkDestroyed(vmUUID string, at time.Time) error {
	if _, err := t.exec("UPDATE vms SET destroyed_ms=?, power_state='Halted', host_uuid='', last_seen_ms=MAX(last_seen_ms,?) WHERE uuid=?", ms(at), ms(at), vmUUID); err != nil {
		return err
	}
	if err := t.SetState(vmUUID, "", "", at); err != nil {
		return err
	}
	_, err := t.exec("UPDATE vm_attrs SET to_ms=MAX(from_ms,?) WHERE vm_uuid=? AND to_ms IS NULL", ms(at), vmUUID)
	return err
}

// PutHost inserts or updates a host.
func (t *Tx) PutHost(h *Host) error {
	_, err := t.exec(`INSERT INTO hosts(uuid,pool_uuid,name,address,first_seen_ms,last_seen_ms) VALUES(?,?,?,?,?,?)
		ON CONFLICT(uuid) DO UPDATE SET pool_uuid=excluded.pool_uuid, name=excluded.name, address=excluded.address,
		first_seen_ms=MIN(first_seen_ms,excluded.first_seen_ms), last_seen_ms=MAX(last_seen_ms,excluded.last_seen_ms)`,
		h.UUID, h.PoolUUID, h.Name, h.Address, ms(h.FirstSeen), ms(h.LastSeen))
	return err
}

// PutPool inserts or updates the pool.
func (t *Tx) PutPool(p *Pool) error {
	_, err := t.exec(`INSERT INTO pools(uuid,name,master_uuid) VALUES(?,?,?)
		ON CONFLICT(uuid) DO UPDATE SET name=excluded.name, master_uuid=excluded.master_uuid`, p.UUID, p.Name, p.MasterUUID)
	return err
}

// SetAgentState stores value under key.
func (t *Tx) SetAgentState(key, value string) error {
	_, err := t.exec("INSERT INTO agent_state(key,value) VALUES(?,?) ON CONFLICT(key) DO UPDATE SET value=excluded.value", key, value)
	return err
}

// DeleteAgentState removes key (nothing happens when it is absent).
func (t *Tx) DeleteAgentState(key string) error {
	_, err := t.exec("DELETE FROM agent_state WHERE key=?", key)
	return err
}

// AgentState reads key inside the transaction.
func (t *Tx) AgentState(key string) (string, error) {
	var v string
	err := t.queryRow("SELECT value FROM agent_state WHERE key=?", key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return v, err
}

// normalizeMAC lower-cases a MAC so alerts match whatever case a sensor uses.
func normalizeMAC(m string) string { return strings.ToLower(strings.TrimSpace(m)) }
