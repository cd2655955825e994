package lineage

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/internal/jsonw"
)

// bulkRows is how many records one INSERT statement of PutRecords carries:
// 22 columns × 64 rows stays far below SQLite's 32,766 variables, and
// larger statements gain nothing measurable.
const bulkRows = 64

const bulkColumns = `id,pool_uuid,host_uuid,host_name,vm_uuid,vm_name,parent_vm_uuid,activity,operation,
		start_ms,end_ms,result,error,task_uuid,task_id,source,destination_host_uuid,json,chain_seq,chain_prev,chain_hash,sealed_ms`

// bulkInsert is the INSERT for n rows. PutRecords inserts only ids it found
// absent, and says OR IGNORE where PutRecord says ON CONFLICT(id) DO
// NOTHING: a multi-row statement that may abort needs a statement journal,
// which cost more than the multi-row statement saved; OR IGNORE cannot
// abort. A row ignored all the same (a constraint a later schema adds) is
// an error: the rows affected must be n.
func bulkInsert(n int) string {
	var b strings.Builder
	b.WriteString("INSERT OR IGNORE INTO records(" + bulkColumns + ") VALUES ")
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
	}
	return b.String()
}

// bulkStored selects which of bulkRows ids are stored (a shorter list
// repeats its last id).
var bulkStored = "SELECT id FROM records WHERE id IN (?" + strings.Repeat(",?", bulkRows-1) + ")"

var (
	bulkInsertFull = bulkInsert(bulkRows)
	bulkInsertOne  = bulkInsert(1)
)

// PutRecords stores recs as PutRecord would store each in turn, and is the
// bulk form for imports (`vmlineage replay`). Every record is validated
// first: if one is invalid, nothing is written and the error names it. A
// record whose id is new is inserted and, unless the store defers sealing,
// sealed into the hash chain in the order of recs (recs[i].Chain is set);
// one whose id is already stored, or appeared earlier in recs, completes
// the stored record if that one is not sealed yet (record.Merge), as
// PutRecord does. isNew[i] reports whether recs[i] was inserted. Rows,
// their json column and the chain are exactly PutRecord's. Per 64 records
// it looks the ids up once, writes one INSERT and encodes the json without
// reflection (1 µs a record instead of 9; agent/logsource/README.md,
// "Store cost", has the measurements).
func (t *Tx) PutRecords(recs []record.Record) (isNew []bool, err error) {
	for i := range recs {
		if err := recs[i].Validate(); err != nil {
			return nil, fmt.Errorf("lineage: refusing record: %w", err)
		}
	}
	isNew = make([]bool, len(recs))
	seal := !t.store.deferSeal.Load()
	sealedAt := time.Now().UnixMilli()
	seen := make(map[string]bool, len(recs))
	var js []byte
	ends := make([]int, 0, bulkRows)
	fresh := make([]int, 0, bulkRows) // indexes of recs to insert, in order
	args := make([]any, 0, 22*bulkRows)
	for lo := 0; lo < len(recs); lo += bulkRows {
		chunk := recs[lo:min(lo+bulkRows, len(recs))]
		stored, err := t.storedIDs(chunk, args[:0])
		if err != nil {
			return nil, err
		}
		fresh, js, ends, args = fresh[:0], js[:0], ends[:0], args[:0]
		for k := range chunk {
			i := lo + k
			r := &recs[i]
			if stored[r.ID] || seen[r.ID] {
				continue
			}
			seen[r.ID] = true
			plain := *r
			plain.Chain = nil
			if js, err = appendRecordJSON(js, &plain); err != nil {
				return nil, fmt.Errorf("lineage: encode record %s: %w", r.ID, err)
			}
			ends = append(ends, len(js))
			var cseq, sealed any
			var cprev, chash string
			if seal {
				link, err := t.nextLink(&plain)
				if err != nil {
					return nil, err
				}
				t.advance(link)
				r.Chain = link
				cseq, cprev, chash, sealed = link.Seq, link.Prev, link.Hash, sealedAt
			}
			fresh = append(fresh, i)
			args = append(args, r.ID, r.PoolUUID, r.HostUUID, r.HostName, r.VMUUID, r.VMName, r.ParentVMUUID,
				string(r.Activity), r.Operation, ms(r.Start), nullMS(r.End), string(r.Result), r.Error, r.TaskUUID,
				r.TaskID, string(r.Source), r.DestinationHostUUID, nil, cseq, cprev, chash, sealed)
		}
		for k := range fresh {
			start := 0
			if k > 0 {
				start = ends[k-1]
			}
			args[22*k+17] = string(js[start:ends[k]])
		}
		if err := t.insertRows(recs, fresh, args); err != nil {
			return nil, err
		}
		for _, i := range fresh {
			isNew[i] = true
		}
		// Second sightings, after the chunk's inserts (a record repeated
		// within recs completes the row its first sighting just wrote).
		for k := range chunk {
			if i := lo + k; !isNew[i] {
				if err := t.mergeUnsealed(&recs[i]); err != nil {
					return nil, err
				}
			}
		}
	}
	return isNew, nil
}

// storedIDs reports which of recs' ids are stored.
func (t *Tx) storedIDs(recs []record.Record, args []any) (map[string]bool, error) {
	for i := 0; i < bulkRows; i++ {
		args = append(args, recs[min(i, len(recs)-1)].ID)
	}
	st, err := t.stmt(bulkStored)
	if err != nil {
		return nil, err
	}
	rows, err := st.QueryContext(t.ctx, args...)
	if err != nil {
		return nil, fmt.Errorf("lineage: look up records %s…: %w", recs[0].ID, err)
	}
	defer rows.Close()
	var stored map[string]bool
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		if stored == nil {
			stored = map[string]bool{}
		}
		stored[id] = true
	}
	return stored, rows.Err()
}

// insertRows writes the rows args holds (22 values each) for recs[fresh]:
// one statement when they are a full chunk, else one each.
func (t *Tx) insertRows(recs []record.Record, fresh []int, args []any) error {
	if len(fresh) == 0 {
		return nil
	}
	q, per := bulkInsertOne, 1
	if len(fresh) == bulkRows {
		q, per = bulkInsertFull, bulkRows
	}
	st, err := t.stmt(q)
	if err != nil {
		return err
	}
	for k := 0; k < len(fresh); k += per {
		res, err := st.ExecContext(t.ctx, args[22*k:22*(k+per)]...)
		if err != nil {
			return fmt.Errorf("lineage: store record %s: %w", recs[fresh[k]].ID, err)
		}
		if n, _ := res.RowsAffected(); n != int64(per) {
			return fmt.Errorf("lineage: store record %s: refused by a constraint of the records table (%d of %d rows written)",
				recs[fresh[k]].ID, n, per)
		}
	}
	return nil
}

// appendRecordJSON appends json.Marshal(r) to b: the same bytes (a test
// compares them on many records, and a fuzz target on arbitrary strings),
// without reflection. Strings that need escaping, a record with a chain
// link (the store encodes records without theirs), and any record type this
// encoder does not know field for field (record.Record grew a field) go
// through encoding/json.
func appendRecordJSON(b []byte, r *record.Record) ([]byte, error) {
	if !fastJSON || r.Chain != nil {
		js, err := json.Marshal(r)
		return append(b, js...), err
	}
	b = append(b, `{"id":`...)
	b = jsonw.AppendString(b, r.ID)
	b = append(b, `,"pool_uuid":`...)
	b = jsonw.AppendString(b, r.PoolUUID)
	b = jsonw.AppendOmit(b, `,"host_uuid":`, r.HostUUID)
	b = jsonw.AppendOmit(b, `,"host_name":`, r.HostName)
	b = append(b, `,"vm_uuid":`...)
	b = jsonw.AppendString(b, r.VMUUID)
	b = jsonw.AppendOmit(b, `,"vm_name":`, r.VMName)
	b = jsonw.AppendOmit(b, `,"parent_vm_uuid":`, r.ParentVMUUID)
	b = append(b, `,"activity":`...)
	b = jsonw.AppendString(b, string(r.Activity))
	b = jsonw.AppendOmit(b, `,"operation":`, r.Operation)
	b = append(b, `,"result":`...)
	b = jsonw.AppendString(b, string(r.Result))
	b = jsonw.AppendOmit(b, `,"error":`, r.Error)
	b = jsonw.AppendOmit(b, `,"task_uuid":`, r.TaskUUID)
	b = jsonw.AppendOmit(b, `,"task_id":`, r.TaskID)
	b = append(b, `,"source":`...)
	b = jsonw.AppendString(b, string(r.Source))
	b = jsonw.AppendOmit(b, `,"destination_host_uuid":`, r.DestinationHostUUID)
	b = jsonw.AppendOmit(b, `,"snapshot_uuid":`, r.SnapshotUUID)
	if len(r.Unknown) > 0 {
		b = append(b, `,"unknown":[`...)
		for i, u := range r.Unknown {
			if i > 0 {
				b = append(b, ',')
			}
			b = jsonw.AppendString(b, u)
		}
		b = append(b, ']')
	}
	if a := r.Actor; a != nil {
		b = append(b, `,"actor":{`...)
		n := len(b)
		b = jsonw.AppendOmit(b, `,"name":`, a.Name)
		b = jsonw.AppendOmit(b, `,"subject_id":`, a.SubjectID)
		b = jsonw.AppendOmit(b, `,"originator":`, a.Originator)
		b = jsonw.AppendOmit(b, `,"client_ip":`, a.ClientIP)
		b = jsonw.AppendOmit(b, `,"trackid":`, a.TrackID)
		if len(b) > n {
			b = append(b[:n], b[n+1:]...) // the first field's comma
		}
		b = append(b, '}')
	}
	b = append(b, `,"start":`...)
	b = appendJSONTime(b, r.Start)
	b = append(b, `,"end":`...)
	b = appendJSONTime(b, r.End)
	return append(b, '}'), nil
}

// appendJSONTime writes record.FormatTime(t) quoted: RFC 3339 in UTC with
// milliseconds, "" for the zero time.
func appendJSONTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(b, `""`...)
	}
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, record.TimeLayout)
	return append(b, '"')
}

// fastJSON is false when record.Record or record.Actor no longer have
// exactly the fields appendRecordJSON writes: a new field must never be
// dropped silently, so the encoder then falls back to encoding/json (and
// TestRecordJSONFields fails until it is taught the new field).
var fastJSON = recordFieldsAre(reflect.TypeOf(record.Record{}), recordJSONFields) &&
	recordFieldsAre(reflect.TypeOf(record.Actor{}), actorJSONFields)

var recordJSONFields = []string{"id", "pool_uuid", "host_uuid,omitempty", "host_name,omitempty", "vm_uuid",
	"vm_name,omitempty", "parent_vm_uuid,omitempty", "activity", "operation,omitempty", "start", "end", "result",
	"error,omitempty", "task_uuid,omitempty", "task_id,omitempty", "source", "destination_host_uuid,omitempty",
	"snapshot_uuid,omitempty", "unknown,omitempty", "actor,omitempty", "chain,omitempty"}

var actorJSONFields = []string{"name,omitempty", "subject_id,omitempty", "originator,omitempty",
	"client_ip,omitempty", "trackid,omitempty"}

// recordFieldsAre reports whether t's fields carry exactly these json tags,
// in order, with the kinds appendRecordJSON expects.
func recordFieldsAre(t reflect.Type, tags []string) bool {
	if t.NumField() != len(tags) {
		return false
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Tag.Get("json") != tags[i] {
			return false
		}
		switch f.Type.Kind() {
		case reflect.String:
		case reflect.Struct:
			if f.Type != reflect.TypeOf(time.Time{}) {
				return false
			}
		case reflect.Slice:
			if f.Type.Elem().Kind() != reflect.String {
				return false
			}
		case reflect.Pointer:
			if f.Type.Elem() != reflect.TypeOf(record.Actor{}) && f.Type.Elem() != reflect.TypeOf(record.Chain{}) {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// Bulk is one connection reserved for a bulk import (`vmlineage replay`),
// with a larger SQLite page cache than the store's default (2 MiB). A
// transaction of thousands of records dirties more pages than 2 MiB hold:
// SQLite then spills them to the WAL mid-transaction and reads them back
// (a sixth of a dense replay's time; agent/logsource/README.md, "Store
// cost"). The cache is bounded: memory stays flat whatever the import's
// size.
type Bulk struct {
	s    *Store
	conn *sql.Conn
}

// BeginBulk reserves a connection and gives it a page cache of cacheKiB
// KiB (at least the store's default) until Close.
func (s *Store) BeginBulk(ctx context.Context, cacheKiB int) (*Bulk, error) {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("lineage: bulk connection: %w", err)
	}
	if _, err := conn.ExecContext(ctx, fmt.Sprintf("PRAGMA cache_size=-%d", max(cacheKiB, defaultCacheKiB))); err != nil {
		conn.Close()
		return nil, fmt.Errorf("lineage: bulk cache size: %w", err)
	}
	return &Bulk{s: s, conn: conn}, nil
}

// defaultCacheKiB is the cache_size the store opens its connections with.
const defaultCacheKiB = 2000

// Update is Store.Update on the bulk connection (it mirrors it step for
// step: fn, the chain head, commit; TestBulkChain checks the chain).
func (b *Bulk) Update(ctx context.Context, fn func(*Tx) error) error {
	sqlTx, err := b.conn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("lineage: begin: %w", err)
	}
	tx := &Tx{tx: sqlTx, ctx: ctx, store: b.s}
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

// Close gives the connection the store's default cache back (SQLite frees
// the pages above it) and returns it to the pool.
func (b *Bulk) Close() error {
	_, err := b.conn.ExecContext(context.Background(), fmt.Sprintf("PRAGMA cache_size=-%d", defaultCacheKiB))
	if err1 := b.conn.Close(); err == nil {
		err = err1
	}
	return err
}
