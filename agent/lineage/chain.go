package lineage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/vmlineage/vmlineage/agent/record"
)

// The hash chain (issue 6). Every record the store seals gets the next
// chain sequence number, the previous sealed record's hash and its own
// (record.ChainHash). The head (last sequence number and hash) is kept in
// agent_state under KeyChainHead in the same transaction, so a deleted last
// record shows as well as a deleted middle one. Checkpoints copy the head
// into the checkpoints table; the agent ships them to every output so that a
// copy kept elsewhere can vouch for the local store.

// KeyChainHead is the agent_state key of the chain head: "<seq> <hash>".
const KeyChainHead = "chain.head"

// DeferSeal makes PutRecord leave new records unsealed until Seal chains
// them (the agent does, while an audit log or a second source may still
// complete a record). The default seals at once.
func (s *Store) DeferSeal(on bool) { s.deferSeal.Store(on) }

// Merged counts records completed in place by a second sighting before
// they were sealed (see record.Merge).
func (s *Store) Merged() int64 { return s.merged.Load() }

type chainHead struct {
	seq  int64
	hash string
}

// head loads the chain head once per transaction (writers are serialised,
// so what this transaction read stays current until it commits).
func (t *Tx) head() (chainHead, error) {
	if t.chain != nil {
		return *t.chain, nil
	}
	h := chainHead{hash: record.GenesisHash}
	v, err := t.AgentState(KeyChainHead)
	if err != nil {
		return h, err
	}
	if v != "" {
		seq, hash, ok := strings.Cut(v, " ")
		n, err := strconv.ParseInt(seq, 10, 64)
		if !ok || err != nil || len(hash) != 64 {
			return h, fmt.Errorf("lineage: chain head %q is corrupt", v)
		}
		h = chainHead{n, hash}
	}
	t.chain = &h
	return h, nil
}

// saveHead persists a head this transaction moved (called before commit).
func (t *Tx) saveHead() error {
	if !t.chainDirty {
		return nil
	}
	t.chainDirty = false
	return t.SetAgentState(KeyChainHead, fmt.Sprintf("%d %s", t.chain.seq, t.chain.hash))
}

// nextLink computes r's link after the current head without moving it.
func (t *Tx) nextLink(r *record.Record) (*record.Chain, error) {
	h, err := t.head()
	if err != nil {
		return nil, err
	}
	return &record.Chain{Seq: h.seq + 1, Prev: h.hash, Hash: record.ChainHash(h.hash, r)}, nil
}

func (t *Tx) advance(c *record.Chain) {
	t.chain = &chainHead{c.Seq, c.Hash}
	t.chainDirty = true
}

// sealRow chains the stored row seq holding r.
func (t *Tx) sealRow(seq int64, r *record.Record) error {
	c, err := t.nextLink(r)
	if err != nil {
		return err
	}
	if _, err := t.exec("UPDATE records SET chain_seq=?, chain_prev=?, chain_hash=?, sealed_ms=? WHERE seq=? AND chain_seq IS NULL",
		c.Seq, c.Prev, c.Hash, time.Now().UnixMilli(), seq); err != nil {
		return fmt.Errorf("lineage: seal record %s: %w", r.ID, err)
	}
	t.advance(c)
	r.Chain = c
	return nil
}

// sealLegacy seals, in storage order, the records of a store written before
// the chain existed (schema upgrade 1 -> 2).
func (t *Tx) sealLegacy() error {
	rows, err := t.tx.QueryContext(t.ctx, "SELECT seq, json FROM records WHERE chain_seq IS NULL ORDER BY seq")
	if err != nil {
		return err
	}
	type row struct {
		seq int64
		r   record.Record
	}
	var all []row
	for rows.Next() {
		var x row
		var js string
		if err := rows.Scan(&x.seq, &js); err != nil {
			rows.Close()
			return err
		}
		if err := json.Unmarshal([]byte(js), &x.r); err != nil {
			rows.Close()
			return fmt.Errorf("record #%d is corrupt: %w", x.seq, err)
		}
		all = append(all, x)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for i := range all {
		// The columns are set from the JSON first: it is what the chain
		// vouches for, and VerifyChain compares every column with it (a
		// store written before may hold them otherwise, e.g. end_ms 0).
		if _, err := t.UpdateUnsealed(&all[i].r); err != nil {
			return err
		}
		if err := t.sealRow(all[i].seq, &all[i].r); err != nil {
			return err
		}
	}
	// Output cursors counted storage seq; they now count chain seq, which
	// this upgrade assigned in the same order.
	crs, err := t.tx.QueryContext(t.ctx, "SELECT key, value FROM agent_state WHERE key LIKE 'output.%.seq'")
	if err != nil {
		return err
	}
	conv := map[string]string{}
	for crs.Next() {
		var k, v string
		if err := crs.Scan(&k, &v); err != nil {
			crs.Close()
			return err
		}
		conv[strings.TrimSuffix(k, ".seq")+".chain"] = v
	}
	crs.Close()
	for k, v := range conv {
		old, _ := strconv.ParseInt(v, 10, 64)
		var n int64
		if err := t.tx.QueryRowContext(t.ctx, "SELECT COALESCE(MAX(chain_seq),0) FROM records WHERE seq<=?", old).Scan(&n); err != nil {
			return err
		}
		if err := t.SetAgentState(k, strconv.FormatInt(n, 10)); err != nil {
			return err
		}
	}
	return nil
}

// SealFunc decides, for an unsealed record (and its storage seq), whether
// to seal it now; it may complete the record first (an actor joined from
// the audit log) and then reports changed, so the store rewrites it before
// it is hashed.
type SealFunc func(seq int64, r *record.Record) (seal, changed bool)

// Seal chains, in storage order, up to limit unsealed records stored at or
// before storage seq upTo (0: any) for which fn says so (nil: all of them),
// and returns them sealed. Records fn changed are rewritten in the same
// transaction, sealed or not.
func (s *Store) Seal(ctx context.Context, upTo int64, fn SealFunc, limit int) ([]record.Record, error) {
	var out []record.Record
	if upTo <= 0 {
		upTo = 1 << 62
	}
	err := s.Update(ctx, func(tx *Tx) error {
		out = out[:0]
		q := "SELECT seq, json FROM records WHERE chain_seq IS NULL AND seq<=? ORDER BY seq"
		if limit > 0 {
			q += fmt.Sprintf(" LIMIT %d", limit)
		}
		rows, err := tx.tx.QueryContext(ctx, q, upTo)
		if err != nil {
			return err
		}
		type row struct {
			seq           int64
			r             record.Record
			seal, changed bool
		}
		var todo []row
		for rows.Next() {
			var x row
			var js string
			if err := rows.Scan(&x.seq, &js); err != nil {
				rows.Close()
				return err
			}
			if err := json.Unmarshal([]byte(js), &x.r); err != nil {
				rows.Close()
				return fmt.Errorf("lineage: record #%d is corrupt: %w", x.seq, err)
			}
			x.seal = true
			if fn != nil {
				x.seal, x.changed = fn(x.seq, &x.r)
			}
			if x.seal || x.changed {
				todo = append(todo, x)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for i := range todo {
			if !todo[i].seal {
				continue
			}
			done, err := tx.completeFromTree(&todo[i].r)
			if err != nil {
				return err
			}
			todo[i].changed = todo[i].changed || done
		}
		for i := range todo {
			r := &todo[i].r
			if todo[i].changed {
				if _, err := tx.UpdateUnsealed(r); err != nil {
					return err
				}
			}
			// A creating record that names both VMs gives the new VM its
			// edge in the tree, unless the tree knew better: it may have
			// learnt them after the tracer last wrote the VM (a VM gone
			// before the logs' record of its making was completed).
			if (todo[i].changed || todo[i].seal) && r.Activity.Creating() && r.Result == record.Success && r.ParentVMUUID != "" && r.VMUUID != "" {
				if err := tx.fillParent(r.VMUUID, r.ParentVMUUID, string(r.Activity)); err != nil {
					return err
				}
			}
			if !todo[i].seal {
				continue
			}
			if err := tx.sealRow(todo[i].seq, &todo[i].r); err != nil {
				return err
			}
			out = append(out, todo[i].r)
		}
		return nil
	})
	return out, err
}

// completeFromTree fills, as the record is sealed, what it lists unknown
// and the family tree has learnt since it was made: the parent of its VM
// (a log-derived record of a VM whose creation the logs could not tie to
// it; a record made before the tracer matched that creation), and the VM a
// revert acted on (the logs name the snapshot; the VM is the snapshot's
// source). The tree only ever gains parents, so this is evidence, not a
// guess; a sealed record is never changed.
func (t *Tx) completeFromTree(r *record.Record) (bool, error) {
	changed := false
	if r.Activity == record.Revert && r.VMUUID == "" && r.IsUnknown("vm_uuid") && r.SnapshotUUID != "" {
		snap, ok, err := t.treeOf(r.SnapshotUUID)
		if err != nil || !ok {
			return false, err
		}
		if snap.parent != "" && (snap.via == string(record.Snapshot) || snap.via == string(record.Checkpoint)) {
			vm, ok, err := t.treeOf(snap.parent)
			if err != nil {
				return false, err
			}
			r.VMUUID = snap.parent
			r.Forget("vm_uuid")
			if ok && r.VMName == "" && vm.name != "" {
				r.VMName = vm.name
				r.Forget("vm_name")
			}
			changed = true
		}
	}
	if r.VMUUID != "" && r.ParentVMUUID == "" && r.IsUnknown("parent_vm_uuid") {
		vm, ok, err := t.treeOf(r.VMUUID)
		if err != nil {
			return changed, err
		}
		// A failed creation's VM is its source: the parent is the source's.
		if ok && vm.parent != "" && vm.parent != r.VMUUID {
			r.ParentVMUUID = vm.parent
			r.Forget("parent_vm_uuid")
			changed = true
		}
	}
	return changed, nil
}

type treeRow struct{ parent, via, name string }

func (t *Tx) treeOf(uuid string) (treeRow, bool, error) {
	var v treeRow
	err := t.queryRow("SELECT parent_uuid, parent_via, name FROM vms WHERE uuid=?", uuid).Scan(&v.parent, &v.via, &v.name)
	if errors.Is(err, sql.ErrNoRows) {
		return v, false, nil
	}
	if err != nil {
		return v, false, fmt.Errorf("lineage: read VM %s: %w", uuid, err)
	}
	return v, true, nil
}

// Unsealed counts records waiting to be sealed.
func (s *Store) Unsealed(ctx context.Context) (int64, error) {
	var n int64
	err := s.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM records WHERE chain_seq IS NULL").Scan(&n)
	return n, err
}

// Sealed returns up to limit sealed records after chain sequence number
// after, in chain order, with their links: what outputs ship.
func (s *Store) Sealed(ctx context.Context, after int64, limit int) ([]record.Record, error) {
	q := "SELECT json, chain_seq, chain_prev, chain_hash FROM records WHERE chain_seq>? ORDER BY chain_seq"
	if limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", limit)
	}
	rows, err := s.db.QueryContext(ctx, q, after)
	if err != nil {
		return nil, fmt.Errorf("lineage: read sealed records: %w", err)
	}
	defer rows.Close()
	var out []record.Record
	for rows.Next() {
		var js string
		var c record.Chain
		if err := rows.Scan(&js, &c.Seq, &c.Prev, &c.Hash); err != nil {
			return nil, err
		}
		var r record.Record
		if err := json.Unmarshal([]byte(js), &r); err != nil {
			return nil, fmt.Errorf("lineage: record at chain seq %d is corrupt: %w", c.Seq, err)
		}
		r.Chain = &c
		out = append(out, r)
	}
	return out, rows.Err()
}

// ChainHead returns the sequence number and hash of the last sealed record
// (0 and record.GenesisHash for an empty chain).
func (s *Store) ChainHead(ctx context.Context) (int64, string, error) {
	return chainHeadOf(ctx, s.db)
}

func chainHeadOf(ctx context.Context, db querier) (int64, string, error) {
	var v string
	err := db.QueryRowContext(ctx, "SELECT value FROM agent_state WHERE key=?", KeyChainHead).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, record.GenesisHash, nil
	}
	if err != nil {
		return 0, record.GenesisHash, fmt.Errorf("lineage: read state %q: %w", KeyChainHead, err)
	}
	if v == "" {
		return 0, record.GenesisHash, nil
	}
	seq, hash, _ := strings.Cut(v, " ")
	n, err := strconv.ParseInt(seq, 10, 64)
	return n, hash, err
}

// Checkpoint is a copy of the chain head at a moment, shipped to every
// output: a copy kept elsewhere vouches for the store up to Seq.
type Checkpoint struct {
	ID     int64     `json:"id"`
	Seq    int64     `json:"seq"`
	Hash   string    `json:"hash"`
	At     time.Time `json:"at"`
	Reason string    `json:"reason,omitempty"`
}

// AddCheckpoint records the current chain head as a checkpoint (nothing when
// the chain has not moved since the last one, unless force).
func (s *Store) AddCheckpoint(ctx context.Context, reason string, at time.Time, force bool) (Checkpoint, bool, error) {
	var cp Checkpoint
	added := false
	err := s.Update(ctx, func(tx *Tx) error {
		h, err := tx.head()
		if err != nil {
			return err
		}
		var last int64
		err = tx.queryRow("SELECT chain_seq FROM checkpoints ORDER BY seq DESC LIMIT 1").Scan(&last)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if !force && err == nil && last == h.seq {
			return nil
		}
		res, err := tx.exec("INSERT INTO checkpoints(chain_seq,chain_hash,records,at_ms,reason) VALUES(?,?,?,?,?)", h.seq, h.hash, h.seq, at.UnixMilli(), reason)
		if err != nil {
			return err
		}
		id, _ := res.LastInsertId()
		cp = Checkpoint{ID: id, Seq: h.seq, Hash: h.hash, At: at.UTC().Truncate(time.Millisecond), Reason: reason}
		added = true
		return nil
	})
	return cp, added, err
}

// Checkpoints returns the checkpoints with id > after whose chain position
// an output at cursor (chain seq) has shipped.
func (s *Store) Checkpoints(ctx context.Context, after, cursor int64) ([]Checkpoint, error) {
	return checkpoints(ctx, s.db, after, cursor)
}

// querier is what *sql.DB and *sql.Tx share: a read inside a transaction
// sees that transaction's snapshot.
type querier interface {
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

func checkpoints(ctx context.Context, db querier, after, cursor int64) ([]Checkpoint, error) {
	rows, err := db.QueryContext(ctx, "SELECT seq, chain_seq, chain_hash, at_ms, reason FROM checkpoints WHERE seq>? AND chain_seq<=? ORDER BY seq", after, cursor)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Checkpoint
	for rows.Next() {
		var c Checkpoint
		var at int64
		if err := rows.Scan(&c.ID, &c.Seq, &c.Hash, &at, &c.Reason); err != nil {
			return nil, err
		}
		c.At = fromMS(at)
		out = append(out, c)
	}
	return out, rows.Err()
}

// Break is the first place a chain does not hold.
type Break struct {
	Seq     int64  `json:"seq"`
	ID      string `json:"id,omitempty"`
	Problem string `json:"problem"`
}

func (b *Break) Error() string {
	if b.ID != "" {
		return fmt.Sprintf("chain seq %d, record %s: %s", b.Seq, b.ID, b.Problem)
	}
	return fmt.Sprintf("chain seq %d: %s", b.Seq, b.Problem)
}

// Verification is what VerifyChain found.
type Verification struct {
	Records     int64  `json:"records"`     // sealed records checked
	Unsealed    int64  `json:"unsealed"`    // not yet sealed (not covered)
	Head        int64  `json:"head"`        // chain seq of the head
	HeadHash    string `json:"head_hash"`   // its hash
	Checkpoints int    `json:"checkpoints"` // store checkpoints matched
	Break       *Break `json:"break,omitempty"`
}

// VerifyChain recomputes the chain from the stored records: sequence numbers
// must run 1, 2, ... without a gap, each record's prev must be the hash
// before it, its hash must be record.ChainHash of its JSON, its indexed
// columns must agree with its JSON, and the head and checkpoints must name
// existing links. It stops at the first break.
//
// Everything is read in one read transaction, one snapshot of the store: a
// running agent seals records and moves the head meanwhile, and reads in
// separate transactions would see a head past the records scanned.
func (s *Store) VerifyChain(ctx context.Context) (*Verification, error) {
	v := &Verification{HeadHash: record.GenesisHash}
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("lineage: read the chain: %w", err)
	}
	defer tx.Rollback()
	// The head is read first: in a deferred transaction the first read
	// fixes the snapshot, and every read after it sees the same one.
	hs, hh, err := chainHeadOf(ctx, tx)
	if err != nil {
		return nil, err
	}
	cps, err := checkpoints(ctx, tx, 0, 1<<62)
	if err != nil {
		return nil, err
	}
	if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM records WHERE chain_seq IS NULL").Scan(&v.Unsealed); err != nil {
		return nil, err
	}
	rows, err := tx.QueryContext(ctx, `SELECT chain_seq, chain_prev, chain_hash, json, `+recordCols+`
		FROM records WHERE chain_seq IS NOT NULL ORDER BY chain_seq`)
	if err != nil {
		return nil, fmt.Errorf("lineage: read the chain: %w", err)
	}
	// Only the checkpointed links are remembered: memory stays flat.
	hashes := map[int64]string{}
	for _, c := range cps {
		hashes[c.Seq] = ""
	}
	prev, want := record.GenesisHash, int64(1)
	var lastID string
	for rows.Next() {
		var seq int64
		var cprev, chash, js string
		var col recordColumns
		if err := rows.Scan(append([]any{&seq, &cprev, &chash, &js}, col.dest()...)...); err != nil {
			rows.Close()
			return nil, err
		}
		id := col.id
		brk := func(p string) { v.Break = &Break{Seq: seq, ID: id, Problem: p} }
		switch {
		case seq > want:
			v.Break = &Break{Seq: want, Problem: fmt.Sprintf("missing: no record holds chain seq %d (deleted?); the chain goes from %s to %s (seq %d)", want, orNone(lastID), id, seq)}
		case cprev != prev:
			brk(fmt.Sprintf("prev is %s, but the record before has hash %s (a record inserted or altered before it?)", cprev, prev))
		}
		if v.Break != nil {
			break
		}
		var r record.Record
		if err := json.Unmarshal([]byte(js), &r); err != nil {
			brk("its JSON does not parse: " + err.Error())
			break
		}
		if h := record.ChainHash(prev, &r); h != chash {
			brk(fmt.Sprintf("altered: its content hashes to %s, the chain says %s", h, chash))
			break
		}
		if diff := col.differ(&r); len(diff) > 0 {
			what := "its column " + diff[0] + " differs"
			if len(diff) > 1 {
				what = "its columns " + strings.Join(diff, ", ") + " differ"
			}
			brk("altered: " + what + " from its hashed content")
			break
		}
		if _, ok := hashes[seq]; ok {
			hashes[seq] = chash
		}
		prev, want, lastID = chash, seq+1, id
		v.Records++
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	v.Head, v.HeadHash = want-1, prev
	if v.Break != nil {
		return v, nil
	}
	if hs != v.Head || hh != v.HeadHash {
		v.Break = &Break{Seq: hs, Problem: fmt.Sprintf("the chain head says seq %d hash %s, but the records end at seq %d hash %s (the last records deleted?)", hs, hh, v.Head, v.HeadHash)}
		return v, nil
	}
	for _, c := range cps {
		if c.Seq == 0 {
			continue
		}
		if h := hashes[c.Seq]; h != c.Hash {
			v.Break = &Break{Seq: c.Seq, Problem: fmt.Sprintf("checkpoint %d (%s) says hash %s here", c.ID, record.FormatTime(c.At), c.Hash)}
			return v, nil
		}
		v.Checkpoints++
	}
	return v, nil
}

// recordCols are the records columns written from the record (PutRecord,
// PutRecords, mergeUnsealed, UpdateUnsealed): VerifyChain compares every
// one of them with the hashed JSON, as queries read them, not the JSON.
const recordCols = "id,pool_uuid,host_uuid,host_name,vm_uuid,vm_name,parent_vm_uuid,activity,operation,start_ms,end_ms,result,error,task_uuid,task_id,source,destination_host_uuid"

type recordColumns struct {
	id, pool, hostUUID, hostName, vm, vmName, parent, activity, operation string
	start                                                                 int64
	end                                                                   sql.NullInt64
	result, errText, taskUUID, taskID, source, destHost                   string
}

func (c *recordColumns) dest() []any {
	return []any{&c.id, &c.pool, &c.hostUUID, &c.hostName, &c.vm, &c.vmName, &c.parent, &c.activity, &c.operation,
		&c.start, &c.end, &c.result, &c.errText, &c.taskUUID, &c.taskID, &c.source, &c.destHost}
}

// differ names the columns that do not hold what r says.
func (c *recordColumns) differ(r *record.Record) []string {
	var out []string
	add := func(col string, same bool) {
		if !same {
			out = append(out, col)
		}
	}
	// JSON carries invalid UTF-8 as U+FFFD, byte by byte; the column keeps
	// the bytes given.
	str := func(col, rec string) bool {
		return col == rec || (!utf8.ValidString(col) && string([]rune(col)) == rec)
	}
	end := sql.NullInt64{}
	if !r.End.IsZero() {
		end = sql.NullInt64{Int64: r.End.UnixMilli(), Valid: true}
	}
	add("id", str(c.id, r.ID))
	add("pool_uuid", str(c.pool, r.PoolUUID))
	add("host_uuid", str(c.hostUUID, r.HostUUID))
	add("host_name", str(c.hostName, r.HostName))
	add("vm_uuid", str(c.vm, r.VMUUID))
	add("vm_name", str(c.vmName, r.VMName))
	add("parent_vm_uuid", str(c.parent, r.ParentVMUUID))
	add("activity", str(c.activity, string(r.Activity)))
	add("operation", str(c.operation, r.Operation))
	add("start_ms", c.start == ms(r.Start))
	add("end_ms", c.end == end)
	add("result", str(c.result, string(r.Result)))
	add("error", str(c.errText, r.Error))
	add("task_uuid", str(c.taskUUID, r.TaskUUID))
	add("task_id", str(c.taskID, r.TaskID))
	add("source", str(c.source, string(r.Source)))
	add("destination_host_uuid", str(c.destHost, r.DestinationHostUUID))
	return out
}

// LinkAt returns the hash at chain seq (ok false when no record holds it).
func (s *Store) LinkAt(ctx context.Context, seq int64) (id, hash string, ok bool, err error) {
	err = s.db.QueryRowContext(ctx, "SELECT id, chain_hash FROM records WHERE chain_seq=?", seq).Scan(&id, &hash)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", false, nil
	}
	return id, hash, err == nil, err
}

func orNone(id string) string {
	if id == "" {
		return "the start"
	}
	return "record " + id
}
