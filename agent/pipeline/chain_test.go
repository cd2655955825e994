package pipeline

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/record"
)

// TestCreationWaitsForTheTracerToNameIt: the logs' record of a clone
// cannot name the new VM; while the tracer may still name it (it has not
// seen the pool since, or a VM of that name waits to be matched) the
// record stays unsealed past chain.settle, then is sealed, at the latest
// nameWait after it was first held. Other records are sealed as settled.
// The chaos short form sealed such records before the tracer matched them
// (after an outage of XAPI, or at the race between the logs' completion of
// the tracer's own record and the tracer's match).
func TestCreationWaitsForTheTracerToNameIt(t *testing.T) {
	ctx := context.Background()
	st, err := lineage.Open(filepath.Join(t.TempDir(), "lineage.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	st.DeferSeal(true)
	at := time.Date(2024, 3, 1, 9, 0, 0, 0, time.UTC)
	clone := record.Record{ID: record.ID("p", "00000000000a", 0), PoolUUID: "p", VMName: "gen-1", ParentVMUUID: "a", Activity: record.Clone,
		Start: at, End: at, Result: record.Success, Source: record.SourceLog, Unknown: []string{"vm_uuid", "task_uuid"}}
	start := record.Record{ID: record.ID("p", "00000000000b", 0), PoolUUID: "p", VMUUID: "a", VMName: "a", Activity: record.Start,
		Start: at, End: at, Result: record.Success, Source: record.SourceLog, Unknown: []string{"task_uuid"}}
	if err := st.Update(ctx, func(tx *lineage.Tx) error {
		for _, r := range []*record.Record{&clone, &start} {
			if _, err := tx.PutRecord(r); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	k := &chainKeeper{st: st, log: slog.Default(), settle: 0, started: time.Now(), nameWait: time.Hour,
		mayName: func(r *record.Record) bool { return r.VMName == "gen-1" }}
	if n, err := k.sealPass(ctx, false); err != nil || n != 1 {
		t.Fatalf("first pass sealed %d (%v), want the start alone", n, err)
	}
	if n, _ := st.Unsealed(ctx); n != 1 {
		t.Fatalf("%d unsealed, want the clone", n)
	}
	k.nameWait = 0 // held long enough
	if n, err := k.sealPass(ctx, false); err != nil || n != 1 {
		t.Fatalf("the clone held past nameWait: sealed %d (%v)", n, err)
	}
	if len(k.held) != 0 {
		t.Errorf("held ids left behind: %v", k.held)
	}
}

// TestActorWaitsForItsOriginator: a record whose actor the audit line made
// final but whose session's originator is not known yet (a root session's
// is only in xensource.log's Session.create line, which comes later) stays
// unsealed until the log source has settled past it, and is then sealed
// with the originator the attributor has learnt meanwhile. Without a log
// source it is sealed at once. audit/e2e's TestAgentAttributesActors failed
// once when the audit line won that race.
func TestActorWaitsForItsOriginator(t *testing.T) {
	ctx := context.Background()
	at := time.Date(2024, 3, 1, 9, 0, 0, 0, time.UTC)
	for _, logs := range []bool{true, false} {
		st, err := lineage.Open(filepath.Join(t.TempDir(), "lineage.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		st.DeferSeal(true)
		r := record.Record{ID: record.ID("p", "00000000000c", 0), PoolUUID: "p", VMUUID: "a", VMName: "a", Activity: record.Start,
			Start: at, End: at, Result: record.Success, Source: record.SourceXAPI, TaskID: "00000000000c"}
		if err := st.Update(ctx, func(tx *lineage.Tx) error { _, err := tx.PutRecord(&r); return err }); err != nil {
			t.Fatal(err)
		}
		originator := "" // what the attributor knows of the session
		settled := at.Add(-time.Minute)
		k := &chainKeeper{st: st, log: slog.Default(), settle: time.Hour, started: time.Now(), otherWait: time.Hour,
			complete: func(r *record.Record) (bool, bool) {
				act := &record.Actor{Name: "root", SubjectID: "LOCAL_SUPERUSER", Originator: originator}
				changed := r.Actor == nil || *r.Actor != *act
				r.Actor = act
				return changed, true
			}}
		if logs {
			k.otherSettled = func() time.Time { return settled }
		}
		n, err := k.sealPass(ctx, false)
		if err != nil {
			t.Fatal(err)
		}
		if !logs {
			if n != 1 {
				t.Errorf("without a log source: sealed %d, want the record at once", n)
			}
			continue
		}
		if n != 0 {
			t.Fatalf("sealed %d before the logs settled past the record, want 0", n)
		}
		originator, settled = "cli", at.Add(time.Minute) // the Session.create line read
		if n, err := k.sealPass(ctx, false); err != nil || n != 1 {
			t.Fatalf("after the logs settled: sealed %d (%v), want 1", n, err)
		}
		got, err := st.Records(ctx, lineage.Filter{})
		if err != nil || len(got) != 1 || got[0].Actor == nil || got[0].Actor.Originator != "cli" || got[0].Chain == nil {
			t.Errorf("sealed record: %+v %v", got, err)
		}
	}
}
