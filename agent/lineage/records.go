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

// Filter selects records. Zero fields select everything.
type Filter struct {
	PoolUUID string
	VMUUID   string // records of this VM, or where it is the parent
	Activity record.Activity
	Since    time.Time // start >= Since
	Until    time.Time // start < Until
	AfterSeq int64     // only records stored after this sequence number
	Limit    int
	// Newest makes Limit keep the newest records rather than the oldest
	// (Records still returns them oldest first).
	Newest bool
}

// StoredRecord is a record with its storage sequence number: the order in
// which the store accepted it, which outputs use as their cursor.
type StoredRecord struct {
	Seq int64
	record.Record
}

// Records returns the records matching f ordered by start time, then id.
func (s *Store) Records(ctx context.Context, f Filter) ([]record.Record, error) {
	order := "start_ms, id"
	if f.Newest {
		order = "start_ms DESC, id DESC"
	}
	sr, err := s.records(ctx, f, order)
	if err != nil {
		return nil, err
	}
	if f.Newest {
		slices.Reverse(sr)
	}
	out := make([]record.Record, len(sr))
	for i := range sr {
		out[i] = sr[i].Record
	}
	return out, nil
}

// RecordsAfter returns up to limit records stored after seq, in storage
// order; an output reads the store this way from its committed cursor.
func (s *Store) RecordsAfter(ctx context.Context, seq int64, limit int) ([]StoredRecord, error) {
	return s.records(ctx, Filter{AfterSeq: seq, Limit: limit}, "seq")
}

// LastSeq is the sequence number of the newest record (0 when empty).
func (s *Store) LastSeq(ctx context.Context) (int64, error) {
	var n int64
	err := s.db.QueryRowContext(ctx, "SELECT COALESCE(MAX(seq),0) FROM records").Scan(&n)
	return n, err
}

// CountRecords returns how many records are stored.
func (s *Store) CountRecords(ctx context.Context) (int64, error) {
	var n int64
	err := s.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM records").Scan(&n)
	return n, err
}

func (s *Store) records(ctx context.Context, f Filter, order string) ([]StoredRecord, error) {
	var where []string
	var args []any
	if f.PoolUUID != "" {
		where, args = append(where, "pool_uuid=?"), append(args, f.PoolUUID)
	}
	if f.VMUUID != "" {
		where, args = append(where, "(vm_uuid=? OR parent_vm_uuid=?)"), append(args, f.VMUUID, f.VMUUID)
	}
	if f.Activity != "" {
		where, args = append(where, "activity=?"), append(args, string(f.Activity))
	}
	if !f.Since.IsZero() {
		where, args = append(where, "start_ms>=?"), append(args, ms(f.Since))
	}
	if !f.Until.IsZero() {
		where, args = append(where, "start_ms<?"), append(args, ms(f.Until))
	}
	if f.AfterSeq > 0 {
		where, args = append(where, "seq>?"), append(args, f.AfterSeq)
	}
	q := "SELECT seq, json, chain_seq, chain_prev, chain_hash FROM records"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY " + order
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("lineage: query records: %w", err)
	}
	defer rows.Close()
	var out []StoredRecord
	for rows.Next() {
		var sr StoredRecord
		var js string
		var cseq sql.NullInt64
		var c record.Chain
		if err := rows.Scan(&sr.Seq, &js, &cseq, &c.Prev, &c.Hash); err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(js), &sr.Record); err != nil {
			return nil, fmt.Errorf("lineage: record #%d is corrupt: %w", sr.Seq, err)
		}
		if cseq.Valid {
			c.Seq = cseq.Int64
			sr.Chain = &c
		}
		out = append(out, sr)
	}
	return out, rows.Err()
}

// LastRecord returns the newest record (by start, then storage order) whose
// subject is the VM.
func (s *Store) LastRecord(ctx context.Context, vmUUID string) (record.Record, bool, error) {
	var js string
	err := s.db.QueryRowContext(ctx, "SELECT json FROM records WHERE vm_uuid=? ORDER BY start_ms DESC, seq DESC LIMIT 1", vmUUID).Scan(&js)
	if errors.Is(err, sql.ErrNoRows) {
		return record.Record{}, false, nil
	}
	if err != nil {
		return record.Record{}, false, err
	}
	var r record.Record
	if err := json.Unmarshal([]byte(js), &r); err != nil {
		return r, false, err
	}
	return r, true, nil
}

// RecordsOfVMSince returns the records whose subject is the VM and that
// ended at or after since (an operation that explains a change seen at since
// may have begun before it), oldest first (the tracer asks whether another
// source already recorded a change it could only infer).
func (s *Store) RecordsOfVMSince(ctx context.Context, vmUUID string, since time.Time) ([]record.Record, error) {
	return s.jsonRecords(ctx, "SELECT json FROM records WHERE vm_uuid=? AND COALESCE(end_ms,start_ms)>=? ORDER BY start_ms, seq", vmUUID, ms(since))
}

// UnattributedCreations returns the creating records (clone, copy, snapshot,
// checkpoint, import, create) that ended at or after since whose new VM is
// unknown (the logs cannot name it) and whose new VM was called name.
func (s *Store) UnattributedCreations(ctx context.Context, name string, since time.Time) ([]record.Record, error) {
	return s.jsonRecords(ctx, qUnattributedCreations, ms(since), name)
}

// qUnattributedCreations reads through records_unattributed.
const qUnattributedCreations = `SELECT json FROM records WHERE vm_uuid IS '' AND COALESCE(end_ms,start_ms)>=? AND vm_name=?
		AND activity IN ('clone','copy','snapshot','checkpoint','import','create') ORDER BY start_ms, seq`

// UnattributedOf returns the records of activity a whose VM is unknown and
// whose span meets [from, to]: the tracer's own records of tasks it saw
// finish without learning their VM (after a gap), or another source's.
func (s *Store) UnattributedOf(ctx context.Context, a record.Activity, from, to time.Time) ([]record.Record, error) {
	if a.Creating() {
		// A new VM's record may be of any creating activity.
		return s.jsonRecords(ctx, `SELECT json FROM records WHERE vm_uuid IS '' AND activity IN ('clone','copy','snapshot','checkpoint','import','create','provision')
			AND COALESCE(end_ms,start_ms)>=? AND start_ms<=? ORDER BY start_ms, seq`, ms(from), ms(to))
	}
	return s.jsonRecords(ctx, `SELECT json FROM records WHERE vm_uuid IS '' AND activity=? AND COALESCE(end_ms,start_ms)>=? AND start_ms<=?
		ORDER BY start_ms, seq`, string(a), ms(from), ms(to))
}

// UnattributedReverts returns the reverts that ended at or after since whose
// VM is unknown (the logs name the snapshot, not the VM reverted).
func (s *Store) UnattributedReverts(ctx context.Context, since time.Time) ([]record.Record, error) {
	return s.jsonRecords(ctx, `SELECT json FROM records WHERE vm_uuid IS '' AND activity='revert' AND COALESCE(end_ms,start_ms)>=?
		ORDER BY start_ms, seq`, ms(since))
}

func (s *Store) jsonRecords(ctx context.Context, q string, args ...any) ([]record.Record, error) {
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("lineage: query records: %w", err)
	}
	defer rows.Close()
	var out []record.Record
	for rows.Next() {
		var js string
		if err := rows.Scan(&js); err != nil {
			return nil, err
		}
		var r record.Record
		if err := json.Unmarshal([]byte(js), &r); err != nil {
			return nil, fmt.Errorf("lineage: a record is corrupt: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}
