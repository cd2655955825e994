package logsource_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/logsource"
	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/agent/xensource"
)

// TestSettled: Engine.Settled, which the XAPI tracer waits for before it
// infers a record the logs may still give, stays before a clone whose task
// is open (no end marker: it closes after the idle timeout) and before a
// record held in standby, and passes both once they are committed.
func TestSettled(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Now().UTC().Add(-time.Minute).Truncate(time.Second)
	hosts := map[string]string{"xen1": "11111111-1111-4111-8111-111111111111"}
	var lines []xensource.HostLine
	clone := xensource.Op{Time: t0, Duration: 3 * time.Second, Host: "xen1", Master: "xen1", Op: "clone",
		TaskRef: "OpaqueRef:0000000a-0001-4001-8000-000000000001", VMUUID: "00000001-0000-4000-8000-000000000001", VMName: "base", NewName: "web-1"}
	start := xensource.Op{Time: t0.Add(10 * time.Second), Duration: 4 * time.Second, Host: "xen1", Master: "xen1", Op: "start",
		TaskRef: "OpaqueRef:0000000b-0002-4002-8000-000000000002", VMUUID: "00000002-0000-4000-8000-000000000002", VMName: "db"}
	lines = append(lines, xensource.Render(clone)...)
	lines = append(lines, xensource.Render(start)...)
	writeHostFiles(t, filepath.Join(dir, "logs"), lines)
	st := openStore(t, dir)
	e := logsource.NewEngine(st, logsource.EngineConfig{
		Deriver: xensource.Config{PoolUUID: "4a0f3b9e-1c2d-4e5f-8a9b-0c1d2e3f4a5b", Hosts: hosts, Master: "xen1", IdleTimeout: 3 * time.Second},
		Hold:    700 * time.Millisecond, Quiet: 300 * time.Millisecond, StandbyStores: true, Log: testLogger(t)})
	if !e.Settled().IsZero() {
		t.Fatal("settled before reading anything")
	}
	tl, err := logsource.NewTailer(e, logsource.TailConfig{Glob: filepath.Join(dir, "logs", "*", "xensource.log"), Poll: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := tl.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	// The start ended (end marker); the clone is open: nothing is settled
	// past the clone's first line, though lines up to the start's end were read.
	if s := e.Settled(); s.After(t0) {
		t.Fatalf("settled at %v while the clone that began at %v is open", s, t0)
	}
	deadline := time.Now().Add(20 * time.Second)
	var recs []record.Record
	for {
		time.Sleep(50 * time.Millisecond)
		if err := tl.Poll(ctx); err != nil {
			t.Fatal(err)
		}
		recs = storedRecords(t, st)
		if s := e.Settled(); !s.Before(start.Time.Add(start.Duration)) {
			if len(recs) != 2 {
				t.Fatalf("settled at %v with %d of 2 records committed", s, len(recs))
			}
			break
		}
		// Never past the start of a record not yet committed.
		have := map[string]bool{}
		for _, r := range recs {
			have[r.TaskID] = true
		}
		for _, op := range []xensource.Op{clone, start} {
			if !have[record.TaskShortID(op.TaskRef)] && e.Settled().After(op.Time) {
				t.Fatalf("settled at %v, past the start of the %s at %v, whose record is not committed (pending %d)", e.Settled(), op.Op, op.Time, len(e.Pending()))
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("never settled: %v, %d records, pending %d", e.Settled(), len(recs), len(e.Pending()))
		}
	}
}
