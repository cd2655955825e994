package lineage

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/record"
)

func chainRec(i int) *record.Record {
	return &record.Record{ID: record.ID("p", fmt.Sprintf("%012x", i), 0), PoolUUID: "p", VMUUID: fmt.Sprintf("vm-%d", i), VMName: fmt.Sprintf("vm%d", i),
		Activity: record.Start, Start: at(i), End: at(i + 1), Result: record.Success, Source: record.SourceXAPI}
}

func putN(t *testing.T, s *Store, from, n int) []*record.Record {
	t.Helper()
	var out []*record.Record
	err := s.Update(context.Background(), func(tx *Tx) error {
		for i := from; i < from+n; i++ {
			r := chainRec(i)
			if _, err := tx.PutRecord(r); err != nil {
				return err
			}
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func verify(t *testing.T, s *Store) *Verification {
	t.Helper()
	v, err := s.VerifyChain(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestChainSealsAtOnceAndVerifies(t *testing.T) {
	ctx := context.Background()
	s, _ := open(t)
	recs := putN(t, s, 1, 30)
	putN(t, s, 31, 20)
	if recs[0].Chain == nil || recs[0].Chain.Seq != 1 || recs[0].Chain.Prev != record.GenesisHash || recs[1].Chain.Prev != recs[0].Chain.Hash {
		t.Fatalf("links: %+v %+v", recs[0].Chain, recs[1].Chain)
	}
	// The same operation again is not a new link.
	putN(t, s, 5, 1)
	v := verify(t, s)
	if v.Break != nil || v.Records != 50 || v.Head != 50 {
		t.Fatalf("unaltered store: %+v %v", v, v.Break)
	}
	got, _ := s.Sealed(ctx, 48, 0)
	if len(got) != 2 || got[0].Chain.Seq != 49 || got[1].Chain.Seq != 50 || got[1].Chain.Prev != got[0].Chain.Hash {
		t.Fatalf("Sealed: %+v", got)
	}
	all, _ := s.Records(ctx, Filter{})
	if all[0].Chain == nil || all[0].Chain.Hash != record.ChainHash(all[0].Chain.Prev, &all[0]) {
		t.Fatalf("Records must carry verifiable links: %+v", all[0].Chain)
	}
}

func TestChainNamesAlteredRecord(t *testing.T) {
	s, _ := open(t)
	recs := putN(t, s, 1, 40)
	target := recs[16]
	// The content an investigator reads, changed behind the store's back.
	if _, err := s.db.Exec("UPDATE records SET json=replace(json, '\"vm17\"', '\"innocent\"') WHERE id=?", target.ID); err != nil {
		t.Fatal(err)
	}
	v := verify(t, s)
	if v.Break == nil || v.Break.ID != target.ID || v.Break.Seq != 17 || !strings.Contains(v.Break.Problem, "altered") {
		t.Fatalf("want a break at seq 17 naming %s, got %+v", target.ID, v.Break)
	}
	if v.Records != 16 {
		t.Errorf("records verified before the break: %d", v.Records)
	}
}

func TestChainNamesAlteredColumn(t *testing.T) {
	s, _ := open(t)
	recs := putN(t, s, 1, 10)
	s.db.Exec("UPDATE records SET vm_uuid='other' WHERE id=?", recs[3].ID)
	if v := verify(t, s); v.Break == nil || v.Break.ID != recs[3].ID {
		t.Fatalf("want the altered column named: %+v", v.Break)
	}
}

func TestChainNamesDeletedRecord(t *testing.T) {
	s, _ := open(t)
	recs := putN(t, s, 1, 40)
	s.db.Exec("DELETE FROM records WHERE id=?", recs[9].ID)
	v := verify(t, s)
	if v.Break == nil || v.Break.Seq != 10 || !strings.Contains(v.Break.Problem, "missing") ||
		!strings.Contains(v.Break.Problem, recs[8].ID) || !strings.Contains(v.Break.Problem, recs[10].ID) {
		t.Fatalf("want seq 10 missing between %s and %s, got %+v", recs[8].ID, recs[10].ID, v.Break)
	}
}

func TestChainNamesDeletedHead(t *testing.T) {
	s, _ := open(t)
	recs := putN(t, s, 1, 5)
	s.db.Exec("DELETE FROM records WHERE id=?", recs[4].ID)
	if v := verify(t, s); v.Break == nil || v.Break.Seq != 5 || !strings.Contains(v.Break.Problem, "head") {
		t.Fatalf("a deleted last record must show: %+v", v.Break)
	}
	// Sealing goes on from the recorded head: the gap stays visible.
	putN(t, s, 100, 1)
	if v := verify(t, s); v.Break == nil || v.Break.Seq != 5 {
		t.Fatalf("after more records: %+v", v.Break)
	}
}

func TestChainCheckpointCatchesRewrite(t *testing.T) {
	ctx := context.Background()
	s, _ := open(t)
	putN(t, s, 1, 10)
	cp, added, err := s.AddCheckpoint(ctx, "periodic", at(100), false)
	if err != nil || !added || cp.Seq != 10 {
		t.Fatalf("checkpoint: %+v %v %v", cp, added, err)
	}
	if _, added, _ := s.AddCheckpoint(ctx, "periodic", at(101), false); added {
		t.Error("an unmoved head needs no second checkpoint")
	}
	if v := verify(t, s); v.Break != nil || v.Checkpoints != 1 {
		t.Fatalf("%+v", v)
	}
	// An attacker who rewrites a record and re-hashes the whole chain
	// still disagrees with the checkpoint.
	rewriteChain(t, s, 3, "vm3", "innocent")
	v := verify(t, s)
	if v.Break == nil || v.Break.Seq != 10 || !strings.Contains(v.Break.Problem, "checkpoint") {
		t.Fatalf("want the checkpoint to catch the rewrite: %+v", v.Break)
	}
}

// rewriteChain alters the record at chain seq and recomputes every link
// after it, head included, as a careful attacker with the file would.
func rewriteChain(t *testing.T, s *Store, seq int64, from, to string) {
	t.Helper()
	ctx := context.Background()
	s.db.Exec("UPDATE records SET json=replace(json, ?, ?), vm_name=? WHERE chain_seq=?", `"`+from+`"`, `"`+to+`"`, to, seq)
	recs, _ := s.Sealed(ctx, 0, 0)
	prev := record.GenesisHash
	for i := range recs {
		h := record.ChainHash(prev, &recs[i])
		s.db.Exec("UPDATE records SET chain_prev=?, chain_hash=? WHERE chain_seq=?", prev, h, recs[i].Chain.Seq)
		prev = h
	}
	s.db.Exec("UPDATE agent_state SET value=? WHERE key=?", fmt.Sprintf("%d %s", len(recs), prev), KeyChainHead)
}

func TestDeferredSealMergesThenFreezes(t *testing.T) {
	ctx := context.Background()
	s, _ := open(t)
	s.DeferSeal(true)
	// The log's record first: it cannot know the new VM.
	logRec := &record.Record{ID: record.ID("p", "0123456789ab", 0), PoolUUID: "p", VMName: "web-03", ParentVMUUID: "tpl",
		Activity: record.Clone, Start: at(1), End: at(1), Result: record.Success, Source: record.SourceLog, Unknown: []string{"vm_uuid", "task_uuid", "end"}}
	xapiRec := &record.Record{ID: logRec.ID, PoolUUID: "p", VMUUID: "new-vm", VMName: "web-03", ParentVMUUID: "tpl", Activity: record.Clone,
		Start: at(1), End: at(3), Result: record.Success, TaskUUID: "task-u", Source: record.SourceXAPI}
	err := s.Update(ctx, func(tx *Tx) error {
		if n, err := tx.PutRecord(logRec); err != nil || !n {
			return fmt.Errorf("first: %v %v", n, err)
		}
		if n, err := tx.PutRecord(xapiRec); err != nil || n {
			return fmt.Errorf("second must not be new: %v %v", n, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if logRec.Chain != nil {
		t.Fatal("deferred records carry no link yet")
	}
	if n, _ := s.Unsealed(ctx); n != 1 {
		t.Fatalf("unsealed %d", n)
	}
	got, _ := s.Records(ctx, Filter{})
	if len(got) != 1 || got[0].VMUUID != "new-vm" || got[0].TaskUUID != "task-u" || !got[0].End.Equal(at(3)) || len(got[0].Unknown) != 0 || got[0].Source != record.SourceLog {
		t.Fatalf("merged record: %+v", got[0])
	}
	if s.Merged() != 1 {
		t.Errorf("merged counter %d", s.Merged())
	}
	// Not settled: stays unsealed.
	if out, _ := s.Seal(ctx, 0, func(int64, *record.Record) (bool, bool) { return false, false }, 0); len(out) != 0 {
		t.Fatal("sealed an unsettled record")
	}
	// Completed at the seal (an actor found meanwhile): rewritten, then hashed.
	out, err := s.Seal(ctx, 0, func(_ int64, r *record.Record) (bool, bool) {
		r.Actor = &record.Actor{Name: "alice", SubjectID: "LOCAL_SUPERUSER"}
		return true, true
	}, 0)
	if err != nil || len(out) != 1 || out[0].Chain == nil || out[0].Chain.Seq != 1 {
		t.Fatalf("seal: %+v %v", out, err)
	}
	// Sealed: a later sighting changes nothing.
	late := *xapiRec
	late.Actor = &record.Actor{Name: "mallory"}
	late.ID = logRec.ID
	s.Update(ctx, func(tx *Tx) error { _, err := tx.PutRecord(&late); return err })
	if ok, _ := updateUnsealed(s, &late); ok {
		t.Error("UpdateUnsealed changed a sealed record")
	}
	if v := verify(t, s); v.Break != nil || v.Records != 1 {
		t.Fatalf("%+v %v", v, v.Break)
	}
	got, _ = s.Records(ctx, Filter{})
	if got[0].Actor == nil || got[0].Actor.Name != "alice" {
		t.Fatalf("the actor added at the seal is lost or a sealed record was changed: %+v", got[0].Actor)
	}
}

func updateUnsealed(s *Store, r *record.Record) (bool, error) {
	var ok bool
	err := s.Update(context.Background(), func(tx *Tx) error { var err error; ok, err = tx.UpdateUnsealed(r); return err })
	return ok, err
}

// TestUpgradeSealsLegacyStore opens a schema-1 store (records, an output
// cursor) and checks the upgrade chains the records in storage order and
// moves the cursor to chain positions.
func TestUpgradeSealsLegacyStore(t *testing.T) {
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite", "file:"+p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(schema); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 6; i++ {
		r := chainRec(i)
		js, _ := r.MarshalJSON()
		if _, err := db.Exec(`INSERT INTO records(id,pool_uuid,vm_uuid,parent_vm_uuid,activity,start_ms,end_ms,result,source,json) VALUES(?,?,?,?,?,?,?,?,?,?)`,
			r.ID, r.PoolUUID, r.VMUUID, r.ParentVMUUID, string(r.Activity), ms(r.Start), ms(r.End), string(r.Result), string(r.Source), string(js)); err != nil {
			t.Fatal(err)
		}
	}
	db.Exec("DELETE FROM records WHERE seq=2") // a legacy store may have gaps in seq
	db.Exec("INSERT INTO agent_state(key,value) VALUES('output.siem.seq','4')")
	db.Exec("PRAGMA user_version=1")
	db.Close()
	s, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	v := verify(t, s)
	if v.Break != nil || v.Records != 5 || v.Unsealed != 0 {
		t.Fatalf("upgraded: %+v %v", v, v.Break)
	}
	if c, _ := s.AgentState(ctx, "output.siem.chain"); c != "3" {
		t.Errorf("cursor after seq 4 (third record) should be chain seq 3, got %q", c)
	}
	recs, _ := s.Sealed(ctx, 0, 0)
	if recs[0].VMUUID != "vm-1" || recs[1].VMUUID != "vm-3" {
		t.Errorf("order: %s %s", recs[0].VMUUID, recs[1].VMUUID)
	}
}

// TestMergedResultKeepsColumns: a result the tracer guessed (listed
// unknown) is replaced by the logs' (record.Merge); the result column must
// follow the JSON, or VerifyChain reports the sealed record as altered.
func TestMergedResultKeepsColumns(t *testing.T) {
	ctx := context.Background()
	s, _ := open(t)
	s.DeferSeal(true)
	guess := &record.Record{ID: record.ID("p", "97da1a9b4e52", 0), PoolUUID: "p", VMUUID: "vm-1", VMName: "vm1", Activity: record.Start,
		Start: at(1), End: at(5), Result: record.Failure, TaskUUID: "t", Source: record.SourceXAPI, Unknown: []string{"result", "error"}}
	logged := &record.Record{ID: guess.ID, PoolUUID: "p", VMUUID: "vm-1", VMName: "vm1", Activity: record.Start,
		Start: at(1), End: at(5), Result: record.Success, Source: record.SourceLog, Unknown: []string{"task_uuid"}}
	if err := s.Update(ctx, func(tx *Tx) error {
		if _, err := tx.PutRecord(guess); err != nil {
			return err
		}
		_, err := tx.PutRecord(logged)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Seal(ctx, 0, nil, 0); err != nil {
		t.Fatal(err)
	}
	if v := verify(t, s); v.Break != nil {
		t.Fatalf("chain broken after a merged result: %+v", v.Break)
	}
	var col string
	s.DB().QueryRow("SELECT result FROM records WHERE id=?", guess.ID).Scan(&col)
	if col != string(record.Success) {
		t.Errorf("the result column says %q", col)
	}
}

// TestSealCompletesFromTheTree: records the logs made before the family
// tree knew what they lack are completed from it when sealed, never after:
// the start of a VM made while the agent was away (its parent learnt when
// the tracer matched the VM to the logs' clone), and a revert (the logs
// name the snapshot; the VM is the snapshot's source). A parent the tree
// does not know stays unknown. The chaos short form sealed 144 records with
// their parent unknown, most of them with the tree knowing it, and 42
// reverts with their VM unknown.
func TestSealCompletesFromTheTree(t *testing.T) {
	ctx := context.Background()
	s, _ := open(t)
	s.DeferSeal(true)
	snap := vm("s", "a snap", "a", 2)
	snap.ParentVia, snap.Kind = "snapshot", KindSnapshot
	c := vm("c", "gen-c", "a", 3)
	c.ParentVia = "clone"
	start := &record.Record{ID: record.ID("p", "00000000000a", 0), PoolUUID: "p", VMUUID: "c", VMName: "gen-c", Activity: record.Start,
		Start: at(4), End: at(5), Result: record.Success, Source: record.SourceLog, Unknown: []string{"task_uuid", "parent_vm_uuid"}}
	revert := &record.Record{ID: record.ID("p", "00000000000b", 0), PoolUUID: "p", SnapshotUUID: "s", Activity: record.Revert,
		Start: at(6), End: at(7), Result: record.Success, Source: record.SourceLog, Unknown: []string{"task_uuid", "vm_uuid", "vm_name", "parent_vm_uuid"}}
	orphan := &record.Record{ID: record.ID("p", "00000000000c", 0), PoolUUID: "p", VMUUID: "o", VMName: "gen-o", Activity: record.Start,
		Start: at(8), End: at(9), Result: record.Success, Source: record.SourceLog, Unknown: []string{"task_uuid", "parent_vm_uuid"}}
	err := s.Update(ctx, func(tx *Tx) error {
		for _, r := range []*record.Record{start, revert, orphan} {
			if _, err := tx.PutRecord(r); err != nil {
				return err
			}
		}
		// The tree learns c's parent after the start was stored.
		for _, v := range []*VM{vm("a", "a", "", 1), snap, c, vm("o", "gen-o", "", 3)} {
			if err := tx.PutVM(v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.Seal(ctx, 0, nil, 0)
	if err != nil || len(out) != 3 {
		t.Fatalf("sealed %d (%v)", len(out), err)
	}
	got, _ := s.Records(ctx, Filter{})
	for _, r := range got {
		switch r.ID {
		case start.ID:
			if r.ParentVMUUID != "a" || r.IsUnknown("parent_vm_uuid") {
				t.Errorf("start of c: want parent a from the tree, got %+v", r)
			}
		case revert.ID:
			if r.VMUUID != "a" || r.VMName != "a" || r.ParentVMUUID != "" || r.IsUnknown("vm_uuid") || r.IsUnknown("vm_name") || !r.IsUnknown("parent_vm_uuid") {
				t.Errorf("revert to s: want VM a (the snapshot's source), its parent still unknown, got %+v", r)
			}
		case orphan.ID:
			if r.ParentVMUUID != "" || !r.IsUnknown("parent_vm_uuid") {
				t.Errorf("start of o: the tree knows no parent, got %+v", r)
			}
		}
	}
	if v, err := s.VerifyChain(ctx); err != nil || v.Break != nil {
		t.Fatalf("chain: %+v %v", v, err)
	}
}

// VerifyChain beside a live writer (`vmlineage verify` on the agent's
// store): the records, the head, the checkpoints and the unsealed count are
// read in one snapshot, so records sealed during the scan are not a break.
func TestVerifyChainBesideLiveWriter(t *testing.T) {
	ctx := context.Background()
	s, p := open(t)
	putN(t, s, 1, 10000)
	vs, err := Open(p) // a second handle, as the command opens
	if err != nil {
		t.Fatal(err)
	}
	defer vs.Close()
	done := make(chan error, 1)
	go func() {
		for i := 0; i < 200; i++ {
			err := s.Update(ctx, func(tx *Tx) error { _, err := tx.PutRecord(chainRec(100000 + i)); return err })
			if err != nil {
				done <- err
				return
			}
			if i%50 == 0 {
				if _, _, err := s.AddCheckpoint(ctx, "periodic", at(i), false); err != nil {
					done <- err
					return
				}
			}
			time.Sleep(2 * time.Millisecond)
		}
		done <- nil
	}()
	runs := 0
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			if runs == 0 {
				t.Fatal("no verification ran beside the writer")
			}
			if v := verify(t, vs); v.Break != nil || v.Records != 10200 {
				t.Fatalf("quiet store: %+v %v", v, v.Break)
			}
			return
		default:
		}
		v, err := vs.VerifyChain(ctx)
		if err != nil {
			t.Fatal(err)
		}
		runs++
		if v.Break != nil {
			t.Fatalf("verification %d beside a writer reported a valid store broken: %v", runs, v.Break)
		}
	}
}

// Every column written from the record is compared with its hashed JSON
// (queries read the columns, not the JSON), and the break names it.
func TestChainNamesEveryAlteredColumn(t *testing.T) {
	for _, c := range []struct{ col, set string }{
		{"id", "'other-id'"}, {"pool_uuid", "'p2'"}, {"host_uuid", "'h-x'"}, {"host_name", "'other-host'"},
		{"vm_uuid", "'other'"}, {"vm_name", "'innocent'"}, {"parent_vm_uuid", "'tpl'"}, {"activity", "'destroy'"},
		{"operation", "'VM.destroy'"}, {"start_ms", "start_ms+1"}, {"end_ms", "end_ms+3600000"}, {"end_ms", "NULL"},
		{"result", "'failure'"}, {"error", "'x'"}, {"task_uuid", "'t-x'"}, {"task_id", "'000000000000'"},
		{"source", "'resync'"}, {"destination_host_uuid", "'h-y'"},
	} {
		s, _ := open(t)
		putN(t, s, 1, 5)
		if _, err := s.db.Exec("UPDATE records SET " + c.col + "=" + c.set + " WHERE chain_seq=3"); err != nil {
			t.Fatal(err)
		}
		v := verify(t, s)
		if v.Break == nil || v.Break.Seq != 3 || !strings.Contains(v.Break.Problem, "its column "+c.col+" differs") {
			t.Errorf("%s = %s: want a break at seq 3 naming the column, got %+v", c.col, c.set, v.Break)
		}
	}
	s, _ := open(t)
	putN(t, s, 1, 5)
	s.db.Exec("UPDATE records SET vm_name='innocent', host_name='other-host' WHERE chain_seq=3")
	if v := verify(t, s); v.Break == nil || !strings.Contains(v.Break.Problem, "its columns host_name, vm_name differ") {
		t.Errorf("two columns: %+v", v.Break)
	}
}
