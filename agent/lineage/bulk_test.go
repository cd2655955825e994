package lineage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/record"
)

const bulkPool = "4a0f3b9e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"

// bulkRecords returns n varied valid records: every activity kind the log
// source stores, names that need JSON escaping, actors, zero end times.
func bulkRecords(n, seed int) []record.Record {
	base := time.Date(2026, 12, 31, 23, 59, 58, 123e6, time.UTC)
	names := []string{"web-1", "Café <prod> & \"db\"", "tab\there", "bad\xffutf8", "line\u2028sep", `back\slash`, ""}
	out := make([]record.Record, n)
	for i := range out {
		k := i + seed
		tid := fmt.Sprintf("%012x", uint64(k)*0x9e3779b97f4a7c15>>16)
		r := record.Record{ID: record.ID(bulkPool, tid, 0), PoolUUID: bulkPool, HostUUID: "11111111-1111-4111-8111-111111111111",
			HostName: "xen1", VMUUID: fmt.Sprintf("%08x-0000-4000-8000-%012x", k%97, k), VMName: names[k%len(names)],
			Activity: record.Start, Operation: "start", Start: base.Add(time.Duration(k) * 1500 * time.Millisecond),
			Result: record.Success, TaskID: tid, Source: record.SourceLog, Unknown: []string{"task_uuid"}}
		switch k % 5 {
		case 0:
			r.End = r.Start.Add(2 * time.Second)
		case 1:
			r.Activity, r.Operation, r.ParentVMUUID, r.VMUUID = record.Clone, "clone", r.VMUUID, ""
			r.Unknown = []string{"task_uuid", "vm_uuid", "end"}
		case 2:
			r.Result, r.Error = record.Failure, "VM_BAD_POWER_STATE: OpaqueRef:x, halted, running"
			r.End = r.Start.Add(time.Second)
		case 3:
			r.Activity, r.Operation, r.DestinationHostUUID = record.Migrate, "pool_migrate", "22222222-2222-4222-8222-222222222222"
			r.Actor = &record.Actor{Name: "DOMAIN\\ops", SubjectID: "S-1-5-21", ClientIP: "10.0.0.5", TrackID: "9834f5af41c964e225f24279aefe4e49"}
			r.End = r.Start.Add(30 * time.Second).In(time.FixedZone("x", 3600))
		case 4:
			r.Activity, r.Operation, r.SnapshotUUID, r.Unknown = record.Revert, "revert", r.VMUUID, nil
			r.Actor = &record.Actor{}
		}
		out[i] = r
	}
	return out
}

// TestRecordJSONSame: the bulk encoder writes exactly json.Marshal's bytes.
func TestRecordJSONSame(t *testing.T) {
	if !fastJSON {
		t.Fatal("fastJSON is off: record.Record or record.Actor changed; teach appendRecordJSON the new fields")
	}
	recs := bulkRecords(500, 0)
	recs[3].Chain = &record.Chain{Seq: 7, Prev: record.GenesisHash, Hash: strings.Repeat("ab", 32)}
	for _, r := range recs {
		want, err := json.Marshal(&r)
		if err != nil {
			t.Fatal(err)
		}
		got, err := appendRecordJSON(nil, &r)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("encoding differs (%v)\n got %s\nwant %s", err, got, want)
		}
	}
}

// TestRecordJSONFields: the field lists the fast encoder checks against are
// the record type's; a field added to record.Record fails here (and the
// encoder falls back to encoding/json meanwhile).
func TestRecordJSONFields(t *testing.T) {
	if !recordFieldsAre(reflect.TypeOf(record.Record{}), recordJSONFields) {
		t.Fatal("record.Record's json fields changed: update recordJSONFields and appendRecordJSON")
	}
	if !recordFieldsAre(reflect.TypeOf(record.Actor{}), actorJSONFields) {
		t.Fatal("record.Actor's json fields changed: update actorJSONFields and appendRecordJSON")
	}
	type grown struct {
		ID    string `json:"id"`
		Extra int    `json:"extra"`
	}
	if recordFieldsAre(reflect.TypeOf(grown{}), []string{"id", "extra"}) {
		t.Fatal("a non-string field must not pass")
	}
}

// FuzzRecordJSON: for any strings in any field, the bulk encoder agrees
// with encoding/json byte for byte.
func FuzzRecordJSON(f *testing.F) {
	f.Add("web-1", "Café <prod>", "VM_BAD: x", "root", int64(0))
	f.Add("bad\xff\xfe", "\u2028\u2029", "\x00\x1f\x7f", "DOMAIN\\u", int64(1700000000123))
	f.Fuzz(func(t *testing.T, name, other, errText, actor string, startMS int64) {
		r := bulkRecords(1, 3)[0]
		r.VMName, r.HostName, r.Error, r.Operation = name, other, errText, other
		r.Unknown = []string{name, other}
		r.Actor = &record.Actor{Name: actor, Originator: other}
		r.Start = time.UnixMilli(startMS % (1 << 45)).UTC()
		want, err := json.Marshal(&r)
		if err != nil {
			t.Skip() // times json cannot write
		}
		got, err := appendRecordJSON(nil, &r)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("encoding differs (%v)\n got %s\nwant %s", err, got, want)
		}
	})
}

// recordRows dumps the records table in storage order, every column but
// seq (PutRecord's conflicting inserts use up AUTOINCREMENT numbers, so
// only the order compares) and sealed_ms (whether it is set: a wall time).
func recordRows(t *testing.T, s *Store) []string {
	t.Helper()
	cols := strings.ReplaceAll(strings.ReplaceAll(bulkColumns, "\n\t\t", ""), ",sealed_ms", ",sealed_ms IS NOT NULL")
	rows, err := s.db.Query(`SELECT ` + cols + ` FROM records ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	names, _ := rows.Columns()
	var out []string
	for rows.Next() {
		vals := make([]any, len(names))
		ptrs := make([]any, len(names))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprint(vals...))
	}
	return out
}

// TestPutRecordsLikePutRecord: PutRecords leaves the table, the chain and
// the records it was given exactly as PutRecord called on each record in
// turn would, and reports the same "new" flags: ids already stored and ids
// repeated within one call (inside one 64-row chunk and across chunks) are
// not inserted again but complete a stored record not yet sealed — with
// sealing at once (the default) and deferred (the agent), then sealed.
func TestPutRecordsLikePutRecord(t *testing.T) {
	for _, deferred := range []bool{false, true} {
		t.Run(map[bool]string{false: "sealed", true: "deferred"}[deferred], func(t *testing.T) {
			ctx := context.Background()
			recs := bulkRecords(300, 0)
			// A second sighting that knows more: the first lacks the VM.
			more := recs[40]
			recs[40].VMUUID, recs[40].Unknown = "", append([]string{"vm_uuid"}, recs[40].Unknown...)
			batches := [][]record.Record{
				recs[:10],
				append(append([]record.Record{}, recs[5:150]...), recs[20], recs[149], recs[7], more), // stored before, repeated
				append(append([]record.Record{}, recs[150:300]...), recs[200:203]...),
				{recs[299], more},
			}
			batches[2][3] = batches[2][1] // a repeat inside one 64-row chunk
			one, _ := open(t)
			bulk, _ := open(t)
			one.DeferSeal(deferred)
			bulk.DeferSeal(deferred)
			for bi, b := range batches {
				var want []bool
				wantRecs := append([]record.Record{}, b...)
				if err := one.Update(ctx, func(tx *Tx) error {
					for i := range wantRecs {
						n, err := tx.PutRecord(&wantRecs[i])
						if err != nil {
							return err
						}
						want = append(want, n)
					}
					return nil
				}); err != nil {
					t.Fatal(err)
				}
				gotRecs := append([]record.Record{}, b...)
				var got []bool
				if err := bulk.Update(ctx, func(tx *Tx) error {
					var err error
					got, err = tx.PutRecords(gotRecs)
					return err
				}); err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("batch %d: new flags\n got %v\nwant %v", bi, got, want)
				}
				if !reflect.DeepEqual(gotRecs, wantRecs) {
					t.Fatalf("batch %d: the records given back differ (chain links)", bi)
				}
			}
			if deferred {
				for _, s := range []*Store{one, bulk} {
					if _, err := s.Seal(ctx, 0, nil, 0); err != nil {
						t.Fatal(err)
					}
				}
			}
			a, b := recordRows(t, one), recordRows(t, bulk)
			if len(a) != 299 || !reflect.DeepEqual(a, b) {
				for i := range a {
					if i < len(b) && a[i] != b[i] {
						t.Errorf("row %d differs:\n PutRecord  %s\n PutRecords %s", i, a[i], b[i])
						break
					}
				}
				t.Fatalf("tables differ: %d rows by PutRecord, %d by PutRecords", len(a), len(b))
			}
			for _, s := range []*Store{one, bulk} {
				v, err := s.VerifyChain(ctx)
				if err != nil || v.Break != nil || v.Records != 299 {
					t.Fatalf("chain: %+v, %v", v, err)
				}
			}
			back, err := bulk.Records(ctx, Filter{})
			if err != nil || len(back) != 299 {
				t.Fatalf("%d records read back: %v", len(back), err)
			}
			for _, r := range back {
				if r.ID == more.ID && (r.VMUUID != more.VMUUID) != !deferred {
					t.Fatalf("second sighting: stored %q (deferred %v)", r.VMUUID, deferred)
				}
			}
		})
	}
}

// TestPutRecordsRefusesInvalid: one invalid record, and nothing is written.
func TestPutRecordsRefusesInvalid(t *testing.T) {
	ctx := context.Background()
	s, _ := open(t)
	recs := bulkRecords(100, 0)
	recs[70].Start = time.Time{}
	err := s.Update(ctx, func(tx *Tx) error {
		_, err := tx.PutRecords(recs)
		return err
	})
	if err == nil || !strings.Contains(err.Error(), recs[70].ID) || !strings.Contains(err.Error(), "start") {
		t.Fatalf("want an error naming record %s and its missing start, got %v", recs[70].ID, err)
	}
	if n, _ := s.CountRecords(ctx); n != 0 {
		t.Fatalf("%d records stored", n)
	}
	// In a transaction that goes on, nothing of the refused call is written.
	err = s.Update(ctx, func(tx *Tx) error {
		if _, err := tx.PutRecords(recs); err == nil {
			return fmt.Errorf("no error")
		}
		_, err := tx.PutRecords(recs[:5])
		return err
	})
	if n, _ := s.CountRecords(ctx); err != nil || n != 5 {
		t.Fatalf("%d records stored, %v", n, err)
	}
}

// BenchmarkStoreRecords measures what storing one record costs, part by
// part: VMLINEAGE_BENCH_RECORDS records (default 200,000; a dense 1 GB
// replay stores 650,000) into a fresh store in transactions of 5,000, as a
// replay does. Figures are CPU time per record (the machine is shared).
// Dropping an index here only measures its upkeep: the schema keeps them.
func BenchmarkStoreRecords(b *testing.B) {
	n := 200000
	if v := os.Getenv("VMLINEAGE_BENCH_RECORDS"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	recs := bulkRecords(n, 0)
	for i := range recs {
		recs[i].VMUUID = fmt.Sprintf("%08x-0000-4000-8000-%012x", i%5000, 7) // 5,000 VMs, as the corpus
	}
	perRecord := func(b *testing.B, cpu time.Duration) {
		b.ReportMetric(float64(cpu.Microseconds())/float64(n), "us/record")
		b.ReportMetric(float64(n)/cpu.Seconds(), "records/cpu-s")
	}
	b.Run("json=encoding-json", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			c0 := benchCPU()
			for j := range recs {
				if _, err := json.Marshal(&recs[j]); err != nil {
					b.Fatal(err)
				}
			}
			perRecord(b, benchCPU()-c0)
		}
	})
	b.Run("json=bulk-encoder", func(b *testing.B) {
		var buf []byte
		for i := 0; i < b.N; i++ {
			c0 := benchCPU()
			for j := range recs {
				buf, _ = appendRecordJSON(buf[:0], &recs[j])
			}
			perRecord(b, benchCPU()-c0)
		}
	})
	type variant struct {
		name     string
		bulk     bool     // PutRecords rather than PutRecord
		cacheKiB int      // 0: the store's connections (2 MiB cache)
		drop     []string // indexes dropped before the run
	}
	vs := []variant{
		{name: "PutRecord"},
		{name: "PutRecords", bulk: true},
		{name: "PutRecords+cache16M", bulk: true, cacheKiB: 16 << 10},
		{name: "PutRecords+cache64M", bulk: true, cacheKiB: 64 << 10},
	}
	for _, ix := range []string{"records_vm", "records_task", "records_parent", "records_start"} {
		vs = append(vs, variant{name: "PutRecords+cache16M-without-" + ix, bulk: true, cacheKiB: 16 << 10, drop: []string{ix}})
	}
	vs = append(vs, variant{name: "PutRecords+cache16M-without-secondary-indexes", bulk: true, cacheKiB: 16 << 10,
		drop: []string{"records_vm", "records_task", "records_parent", "records_start"}})
	for _, v := range vs {
		b.Run(v.name, func(b *testing.B) {
			ctx := context.Background()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				s, err := Open(filepath.Join(b.TempDir(), "lineage.db"))
				if err != nil {
					b.Fatal(err)
				}
				for _, ix := range v.drop {
					if _, err := s.db.Exec("DROP INDEX " + ix); err != nil {
						b.Fatal(err)
					}
				}
				update := s.Update
				if v.cacheKiB > 0 {
					bk, err := s.BeginBulk(ctx, v.cacheKiB)
					if err != nil {
						b.Fatal(err)
					}
					defer bk.Close()
					update = bk.Update
				}
				b.StartTimer()
				c0 := benchCPU()
				var inTx time.Duration
				for lo := 0; lo < n; lo += 5000 {
					batch := recs[lo:min(lo+5000, n)]
					err := update(ctx, func(tx *Tx) error {
						t0 := benchCPU()
						defer func() { inTx += benchCPU() - t0 }()
						if v.bulk {
							_, err := tx.PutRecords(batch)
							return err
						}
						for j := range batch {
							if _, err := tx.PutRecord(&batch[j]); err != nil {
								return err
							}
						}
						return nil
					})
					if err != nil {
						b.Fatal(err)
					}
				}
				cpu := benchCPU() - c0
				b.StopTimer()
				perRecord(b, cpu)
				b.ReportMetric(float64((cpu-inTx).Microseconds())/float64(n), "commit-us/record")
				s.Close()
				b.StartTimer()
			}
		})
	}
}

func benchCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestPutRecordsIgnoredRowIsAnError: a row the table ignores for another
// reason than a stored id (here a trigger; a constraint a later schema adds)
// is an error naming it, never a record silently reported as known.
func TestPutRecordsIgnoredRowIsAnError(t *testing.T) {
	ctx := context.Background()
	s, _ := open(t)
	recs := bulkRecords(100, 0)
	recs[80].VMName = "poison"
	if _, err := s.db.Exec(`CREATE TRIGGER poison BEFORE INSERT ON records WHEN NEW.vm_name='poison' BEGIN SELECT RAISE(IGNORE); END`); err != nil {
		t.Fatal(err)
	}
	err := s.Update(ctx, func(tx *Tx) error {
		_, err := tx.PutRecords(recs)
		return err
	})
	if err == nil || !strings.Contains(err.Error(), recs[80].ID) || !strings.Contains(err.Error(), "refused by a constraint") {
		t.Fatalf("want an error naming %s, got %v", recs[80].ID, err)
	}
	if n, _ := s.CountRecords(ctx); n != 0 {
		t.Fatalf("%d records stored by a failed transaction", n)
	}
}

// TestBulkConnection: a bulk connection has the larger cache, stores
// through the same Tx (the chain head saved with each commit: TestBulkChain
// below), and the store works as before after Close.
func TestBulkConnection(t *testing.T) {
	ctx := context.Background()
	s, _ := open(t)
	bk, err := s.BeginBulk(ctx, 16<<10)
	if err != nil {
		t.Fatal(err)
	}
	var cache int
	if err := bk.conn.QueryRowContext(ctx, "PRAGMA cache_size").Scan(&cache); err != nil || cache != -16384 {
		t.Fatalf("cache_size %d, %v", cache, err)
	}
	recs := bulkRecords(200, 0)
	if err := bk.Update(ctx, func(tx *Tx) error { _, err := tx.PutRecords(recs[:100]); return err }); err != nil {
		t.Fatal(err)
	}
	if err := bk.Update(ctx, func(tx *Tx) error { return errors.New("rolled back") }); err == nil {
		t.Fatal("want the callback's error")
	}
	if err := bk.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(ctx, func(tx *Tx) error { _, err := tx.PutRecords(recs[50:]); return err }); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.CountRecords(ctx); n != 200 {
		t.Fatalf("%d records", n)
	}
}

// TestBulkChain: records stored through a bulk connection and then through
// the store's own connections form one unbroken chain.
func TestBulkChain(t *testing.T) {
	ctx := context.Background()
	s, _ := open(t)
	recs := bulkRecords(500, 0)
	bk, err := s.BeginBulk(ctx, 16<<10)
	if err != nil {
		t.Fatal(err)
	}
	for lo := 0; lo < 300; lo += 100 {
		if err := bk.Update(ctx, func(tx *Tx) error { _, err := tx.PutRecords(recs[lo : lo+100]); return err }); err != nil {
			t.Fatal(err)
		}
	}
	bk.Close()
	if err := s.Update(ctx, func(tx *Tx) error {
		for i := 300; i < 500; i++ {
			if _, err := tx.PutRecord(&recs[i]); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	v, err := s.VerifyChain(ctx)
	if err != nil || v.Break != nil || v.Records != 500 || v.Head != 500 {
		t.Fatalf("chain: %+v, %v", v, err)
	}
}
