package lineage

import (
	"context"
	"errors"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/record"
)

var t0 = time.Date(2024, 3, 1, 9, 0, 0, 0, time.UTC)

func at(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }

func open(t *testing.T) (*Store, string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "lineage.db")
	s, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, p
}

func vm(uuid, name, parent string, first int) *VM {
	return &VM{UUID: uuid, PoolUUID: "p", Name: name, ParentUUID: parent, Kind: KindVM, PowerState: "Halted", FirstSeen: at(first), LastSeen: at(first)}
}

func TestTreeQueries(t *testing.T) {
	ctx := context.Background()
	s, _ := open(t)
	err := s.Update(ctx, func(tx *Tx) error {
		for _, v := range []*VM{vm("o", "origin", "", 0), vm("a", "vm1", "o", 10), vm("b", "vm2", "o", 20), vm("c", "vm3", "b", 30)} {
			if err := tx.PutVM(v); err != nil {
				return err
			}
		}
		return tx.MarkDestroyed("o", at(40))
	})
	if err != nil {
		t.Fatal(err)
	}
	names := func(vs []VM, err error) []string {
		if err != nil {
			t.Fatal(err)
		}
		var n []string
		for _, v := range vs {
			n = append(n, v.Name)
		}
		return n
	}
	if got := names(s.Ancestors(ctx, "c")); len(got) != 2 || got[0] != "vm2" || got[1] != "origin" {
		t.Errorf("ancestors of vm3: %v", got)
	}
	if got := names(s.Descendants(ctx, "o")); len(got) != 3 || got[2] != "vm3" {
		t.Errorf("descendants of origin: %v", got)
	}
	if got := names(s.Siblings(ctx, "a")); len(got) != 1 || got[0] != "vm2" {
		t.Errorf("siblings of vm1: %v", got)
	}
	root, err := s.FamilyRoot(ctx, "c")
	if err != nil || root.UUID != "o" || !root.IsDestroyed() {
		t.Errorf("family root of vm3: %+v %v", root, err)
	}
	// A later update without a parent never erases a known one.
	s.Update(ctx, func(tx *Tx) error { return tx.PutVM(vm("a", "vm1-renamed", "", 50)) })
	if v, _ := s.VM(ctx, "a"); v.ParentUUID != "o" || v.Name != "vm1-renamed" || !v.FirstSeen.Equal(at(10)) {
		t.Errorf("update lost facts: %+v", v)
	}
	if _, err := s.VM(ctx, "zzz"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing VM: %v", err)
	}
	// A cyclic parent chain (corrupted file) must not hang the walk.
	s.Update(ctx, func(tx *Tx) error { return tx.PutVM(vm("o", "origin", "c", 0)) })
	if _, err := s.Ancestors(ctx, "c"); err != nil {
		t.Errorf("cycle: %v", err)
	}
}

// TestViaWithoutParent: a VM made by a clone from a VM never learnt keeps
// how it was made (the tracer lists its records' parent unknown from it);
// an update knowing neither keeps it, a parent learnt later replaces it,
// and the parent's edge is never undone by an update without one.
func TestViaWithoutParent(t *testing.T) {
	ctx := context.Background()
	s, _ := open(t)
	put := func(parent, via string) VM {
		t.Helper()
		v := vm("n", "n", parent, 0)
		v.ParentVia = via
		if err := s.Update(ctx, func(tx *Tx) error { return tx.PutVM(v) }); err != nil {
			t.Fatal(err)
		}
		got, err := s.VM(ctx, "n")
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	for i, step := range []struct{ parent, via, wantParent, wantVia string }{
		{"", "", "", ""},
		{"", "clone", "", "clone"},
		{"", "", "", "clone"},
		{"", "copy", "", "clone"},
		{"o", "copy", "o", "copy"},
		{"", "clone", "o", "copy"},
		{"", "", "o", "copy"},
	} {
		if got := put(step.parent, step.via); got.ParentUUID != step.wantParent || got.ParentVia != step.wantVia {
			t.Errorf("step %d: put parent %q via %q: got parent %q via %q, want %q via %q",
				i, step.parent, step.via, got.ParentUUID, got.ParentVia, step.wantParent, step.wantVia)
		}
	}
}

func TestStateAtAndAttributesOverTime(t *testing.T) {
	ctx := context.Background()
	s, _ := open(t)
	s.Update(ctx, func(tx *Tx) error {
		tx.PutHost(&Host{UUID: "h1", PoolUUID: "p", Name: "xen1", FirstSeen: at(0), LastSeen: at(0)})
		tx.PutHost(&Host{UUID: "h2", PoolUUID: "p", Name: "xen2", FirstSeen: at(0), LastSeen: at(0)})
		tx.PutVM(vm("a", "web", "", 0))
		tx.SetState("a", "Running", "h1", at(0))
		tx.SetAttrs("a", AttrIP, []string{"10.0.0.5"}, at(0))
		tx.SetAttrs("a", AttrMAC, []string{"aa:bb:cc:00:00:01"}, at(0))
		return nil
	})
	s.Update(ctx, func(tx *Tx) error {
		tx.SetState("a", "Running", "h2", at(100)) // migrated
		tx.SetState("a", "Running", "h2", at(110)) // unchanged: no new span
		tx.SetAttrs("a", AttrIP, []string{"10.0.0.9"}, at(100))
		tx.PutVM(vm("b", "db", "", 200))
		tx.SetAttrs("b", AttrIP, []string{"10.0.0.5"}, at(200)) // the old address, reused
		return nil
	})
	st, err := s.StateAt(ctx, "p", at(50))
	if err != nil || len(st) != 1 || st[0].HostName != "xen1" || st[0].PowerState != "Running" {
		t.Fatalf("state at 50: %+v %v", st, err)
	}
	st, _ = s.StateAt(ctx, "p", at(150))
	if len(st) != 1 || st[0].HostName != "xen2" {
		t.Fatalf("state at 150 (b not yet created): %+v", st)
	}
	for _, c := range []struct {
		at   int
		want string
	}{{50, "a"}, {150, ""}, {250, "b"}} {
		got, err := s.FindByAttr(ctx, AttrIP, "10.0.0.5", at(c.at))
		if err != nil {
			t.Fatal(err)
		}
		if (c.want == "" && len(got) != 0) || (c.want != "" && (len(got) != 1 || got[0] != c.want)) {
			t.Errorf("10.0.0.5 at %d: %v, want %q", c.at, got, c.want)
		}
	}
	if got, _ := s.FindByAttr(ctx, AttrMAC, "AA:BB:CC:00:00:01", time.Time{}); len(got) != 1 {
		t.Errorf("MAC lookup must ignore case: %v", got)
	}
	attrs, _ := s.Attrs(ctx, "a", AttrIP)
	if len(attrs) != 2 || !attrs[0].To.Equal(at(100)) || !attrs[1].To.IsZero() {
		t.Errorf("IP spans of a: %+v", attrs)
	}
}

func TestRecordsIdempotentAndAtomic(t *testing.T) {
	ctx := context.Background()
	s, path := open(t)
	r := record.Record{ID: record.ID("p", "8b8a1b914f63", 0), PoolUUID: "p", VMUUID: "a", Activity: record.Start,
		Start: at(1), End: at(2), Result: record.Success, Source: record.SourceXAPI}
	var first, second bool
	s.Update(ctx, func(tx *Tx) error { first, _ = tx.PutRecord(&r); return nil })
	s.Update(ctx, func(tx *Tx) error { second, _ = tx.PutRecord(&r); return nil })
	if !first || second {
		t.Fatalf("first insert %v, second %v: the same id must be stored once", first, second)
	}
	// A failing batch leaves neither its records nor its token.
	r2 := r
	r2.ID = record.ID("p", "000000000001", 0)
	boom := errors.New("boom")
	err := s.Update(ctx, func(tx *Tx) error {
		tx.PutRecord(&r2)
		tx.SetAgentState("xapi.token", "42")
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatal(err)
	}
	if n, _ := s.CountRecords(ctx); n != 1 {
		t.Errorf("records after rollback: %d", n)
	}
	if tok, _ := s.AgentState(ctx, "xapi.token"); tok != "" {
		t.Errorf("token after rollback: %q", tok)
	}
	bad := r
	bad.ID, bad.Activity = "x", "teleport"
	if err := s.Update(ctx, func(tx *Tx) error { _, err := tx.PutRecord(&bad); return err }); err == nil {
		t.Error("an invalid record must be refused")
	}
	// Reopening keeps everything (the store survives restarts).
	s.Close()
	s2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	recs, err := s2.Records(ctx, Filter{VMUUID: "a"})
	if err != nil || len(recs) != 1 || recs[0].ID != r.ID || !recs[0].End.Equal(at(2)) {
		t.Fatalf("after reopen: %+v %v", recs, err)
	}
	after, _ := s2.RecordsAfter(ctx, 0, 10)
	if len(after) != 1 || after[0].Seq != 1 {
		t.Errorf("RecordsAfter: %+v", after)
	}
}

func TestOpenRefusesNewerSchemaAndJunk(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "x.db")
	s, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	s.db.Exec("PRAGMA user_version=99")
	s.Close()
	if _, err := Open(p); err == nil {
		t.Error("a store from a newer vmlineage must be refused")
	}
	junk := filepath.Join(dir, "junk.db")
	if err := writeFile(junk, []byte("this is not sqlite at all, just text padding padding padding padding padding padding padding padding padding padding padding")); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(junk); err == nil {
		t.Error("a file that is not a store must be refused")
	}
}

// TestConcurrentOpenOfAFreshStore: the agent creating its store while a
// command (status, records, a test) opens it too. Both used to read the
// schema version outside the upgrade's transaction, and the second to
// upgrade failed on a column the first had added ("duplicate column name").
func TestConcurrentOpenOfAFreshStore(t *testing.T) {
	for round := 0; round < 5; round++ {
		path := filepath.Join(t.TempDir(), "lineage.db")
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				st, err := Open(path)
				if err != nil {
					errs <- err
					return
				}
				st.Close()
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("round %d: %v", round, err)
		}
	}
}

// TestRecordsOfVMSinceOverlap: an operation that explains a change the
// tracer saw at since may have begun before since (a migration seen moving
// the VM halfway): it counts when it ended at or after since. It used to
// count only when it began after, and the tracer inferred a second record.
func TestRecordsOfVMSinceOverlap(t *testing.T) {
	ctx := context.Background()
	s, _ := open(t)
	mig := record.Record{ID: record.ID("p", "a89c00ad22f2", 0), PoolUUID: "p", VMUUID: "vm", Activity: record.Migrate,
		Start: at(42), End: at(50), Result: record.Success, Source: record.SourceXAPI}
	old := record.Record{ID: record.ID("p", "a89c00ad22f1", 0), PoolUUID: "p", VMUUID: "vm", Activity: record.Start,
		Start: at(1), End: at(5), Result: record.Success, Source: record.SourceXAPI}
	clone := record.Record{ID: record.ID("p", "a89c00ad22f3", 0), PoolUUID: "p", VMName: "gen-1", ParentVMUUID: "vm",
		Activity: record.Clone, Start: at(30), End: at(48), Result: record.Success, Source: record.SourceLog, Unknown: []string{"vm_uuid"}}
	if err := s.Update(ctx, func(tx *Tx) error {
		for _, r := range []*record.Record{&old, &mig, &clone} {
			if _, err := tx.PutRecord(r); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	got, err := s.RecordsOfVMSince(ctx, "vm", at(44))
	if err != nil || len(got) != 1 || got[0].ID != mig.ID {
		t.Errorf("RecordsOfVMSince: %+v %v (want the migration, which ended after since)", got, err)
	}
	cr, err := s.UnattributedCreations(ctx, "gen-1", at(44))
	if err != nil || len(cr) != 1 || cr[0].ID != clone.ID {
		t.Errorf("UnattributedCreations: %+v %v (want the clone, which ended after since)", cr, err)
	}
}

// The logs' records of unnamed VMs are found by name through their own
// index, not by reading every unattributed record: a restart's catch-up
// asks once per change it weighs, and on a store with thousands of such
// records the scan kept the agent busy past its shutdown (chaos long form).
func TestUnattributedCreationsUseTheirIndex(t *testing.T) {
	s, _ := open(t)
	if p := queryPlan(t, s, qUnattributedCreations, int64(0), "gen-1"); !strings.Contains(p, "records_unattributed") {
		t.Errorf("UnattributedCreations does not use records_unattributed: %s", p)
	}
}

// queryPlan is SQLite's plan for q, its steps joined by "; ".
func queryPlan(t *testing.T, s *Store, q string, args ...any) string {
	t.Helper()
	rows, err := s.db.Query("EXPLAIN QUERY PLAN "+q, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	return strings.Join(plan, "; ")
}

// No partial index may be conditioned on "column = constant": SQLite then
// weighs it against every "column = ?" of a query and prepares that
// statement again each time a new value is bound (sqlite3ExprCompare's
// exprCompareVariable), which cost every vm_uuid=? lookup about 30 us.
// "column IS constant" says the same of a NOT NULL column without that.
func TestNoPartialIndexOnEquality(t *testing.T) {
	s, _ := open(t)
	rows, err := s.db.Query(`SELECT name, sql FROM sqlite_master WHERE type='index' AND sql IS NOT NULL`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	eq := regexp.MustCompile(`(?is)\bWHERE\b.*[^!<>=]=\s*('|-?[0-9])`)
	n := 0
	for rows.Next() {
		var name, q string
		if err := rows.Scan(&name, &q); err != nil {
			t.Fatal(err)
		}
		n++
		if eq.MatchString(q) {
			t.Errorf("index %s is conditioned on an equality with a constant: %s", name, q)
		}
	}
	if n == 0 {
		t.Fatal("no index read")
	}
}

// A store made before schema 3 gets records_unattributed's new condition,
// and its unattributed lookups still go through it.
func TestUpgradeRecreatesUnattributedIndex(t *testing.T) {
	ctx := context.Background()
	s, p := open(t)
	rec := &record.Record{ID: record.ID("p", "t1", 0), PoolUUID: "p", VMName: "gen-1", Activity: record.Clone,
		Start: at(1), End: at(2), Result: record.Success, Source: record.SourceLog, Unknown: []string{"vm_uuid"}}
	if err := s.Update(ctx, func(tx *Tx) error { _, err := tx.PutRecord(rec); return err }); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`DROP INDEX records_unattributed`,
		`CREATE INDEX records_unattributed ON records(vm_name, start_ms) WHERE vm_uuid=''`, `PRAGMA user_version=2`} {
		if _, err := s.db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	s, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var q string
	var v int
	s.db.QueryRow(`SELECT sql FROM sqlite_master WHERE name='records_unattributed'`).Scan(&q)
	s.db.QueryRow(`PRAGMA user_version`).Scan(&v)
	if !strings.Contains(q, "vm_uuid IS ''") || v != schemaVersion {
		t.Errorf("after the upgrade: version %d, index %q", v, q)
	}
	got, err := s.UnattributedCreations(ctx, "gen-1", at(0))
	if err != nil || len(got) != 1 || got[0].ID != rec.ID {
		t.Errorf("UnattributedCreations after the upgrade: %+v %v", got, err)
	}
}

// A store made before schema 4 lacks parent_via on VMs made from a VM never
// seen: the upgrade takes it from their creating record (a clone whose
// parent is empty), and leaves alone VMs with a parent, plain roots, and a
// VM whose creation failed.
func TestUpgradeGivesViaWithoutParent(t *testing.T) {
	ctx := context.Background()
	s, p := open(t)
	rec := func(vmUUID, parent string, a record.Activity, res record.Result, task string) *record.Record {
		r := &record.Record{ID: record.ID("p", task, 0), PoolUUID: "p", VMUUID: vmUUID, VMName: vmUUID, ParentVMUUID: parent, Activity: a,
			Start: at(1), End: at(2), Result: res, Source: record.SourceXAPI}
		if parent == "" && a != record.Create {
			r.Unknown = []string{"parent_vm_uuid"}
		}
		return r
	}
	err := s.Update(ctx, func(tx *Tx) error {
		for _, v := range []*VM{vm("o", "o", "", 0), vm("n", "n", "", 1), vm("c", "c", "o", 1), vm("r", "r", "", 1), vm("f", "f", "", 1)} {
			if err := tx.PutVM(v); err != nil {
				return err
			}
		}
		for _, r := range []*record.Record{rec("n", "", record.Clone, record.Success, "t1"), rec("c", "o", record.Copy, record.Success, "t2"),
			rec("r", "", record.Create, record.Success, "t3"), rec("f", "", record.Clone, record.Failure, "t4")} {
			if _, err := tx.PutRecord(r); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.Exec(`UPDATE vms SET parent_via=''`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.Exec(`PRAGMA user_version=3`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Each root VM is looked up by records_vm, never through the records
	// of every VM without a parent.
	if p := queryPlan(t, s, upgrades[3][0]); strings.Contains(p, "records_parent") || strings.Count(p, "records_vm") != 2 {
		t.Errorf("the upgrade's plan: %s", p)
	}
	for uuid, want := range map[string]string{"o": "", "n": "clone", "c": "", "r": "", "f": ""} {
		v, err := s.VM(ctx, uuid)
		if err != nil || v.ParentVia != want {
			t.Errorf("VM %s after the upgrade: via %q, want %q (%v)", uuid, v.ParentVia, want, err)
		}
	}
}

// A VM destroyed and re-created later under the same uuid (the tracer's
// revert of a destroyed VM) did not exist in between: StateAt, FamilyAt,
// StatesAtOf and AncestryAt say so, and say it existed before and after.
func TestReusedUUIDGap(t *testing.T) {
	ctx := context.Background()
	s, _ := open(t)
	err := s.Update(ctx, func(tx *Tx) error {
		tx.PutHost(&Host{UUID: "h1", PoolUUID: "p", Name: "xen1", FirstSeen: at(0), LastSeen: at(0)})
		v := vm("a", "web", "", 0)
		v.PowerState, v.HostUUID = "Running", "h1"
		if err := tx.PutVM(v); err != nil {
			return err
		}
		tx.OpenState("a", "Running", "h1", at(0))
		return tx.MarkDestroyed("a", at(100))
	})
	if err != nil {
		t.Fatal(err)
	}
	// Re-created at 200 (writeVM: PutVM alive, then SetState).
	err = s.Update(ctx, func(tx *Tx) error {
		v := vm("a", "web", "", 200)
		v.PowerState, v.HostUUID = "Running", "h1"
		if err := tx.PutVM(v); err != nil {
			return err
		}
		if err := tx.SetState("a", "Running", "h1", at(200)); err != nil {
			return err
		}
		return tx.PutVM(v) // written again later: no second gap
	})
	if err != nil {
		t.Fatal(err)
	}
	var gaps int
	s.db.QueryRow("SELECT COUNT(*) FROM vm_gaps WHERE vm_uuid='a' AND from_ms=? AND to_ms=?", ms(at(100)), ms(at(200))).Scan(&gaps)
	if gaps != 1 {
		t.Errorf("vm_gaps rows for [100, 200): %d", gaps)
	}
	for _, c := range []struct {
		sec   int
		alive bool
	}{{50, true}, {99, true}, {100, false}, {150, false}, {199, false}, {200, true}, {250, true}} {
		st, err := s.StateAt(ctx, "p", at(c.sec))
		if err != nil {
			t.Fatal(err)
		}
		if (len(st) == 1) != c.alive {
			t.Errorf("StateAt(%d): %d VMs, want alive=%v", c.sec, len(st), c.alive)
		}
		fa, err := s.FamilyAt(ctx, "a", at(c.sec), 0)
		if err != nil || fa[0].ExistedAt != c.alive {
			t.Errorf("FamilyAt(%d).ExistedAt = %v, want %v (%v)", c.sec, fa[0].ExistedAt, c.alive, err)
		}
		so, err := s.StatesAtOf(ctx, []string{"a"}, at(c.sec))
		if err != nil || so[0].ExistedAt != c.alive {
			t.Errorf("StatesAtOf(%d).ExistedAt = %v, want %v (%v)", c.sec, so[0].ExistedAt, c.alive, err)
		}
		an, err := s.AncestryAt(ctx, "a", at(c.sec))
		if err != nil || an[0].ExistedAt != c.alive {
			t.Errorf("AncestryAt(%d).ExistedAt = %v, want %v (%v)", c.sec, an[0].ExistedAt, c.alive, err)
		}
	}
}

// A store made before schema 5 gets vm_gaps, and a re-creation after the
// upgrade keeps its gap.
func TestUpgradeAddsVMGaps(t *testing.T) {
	ctx := context.Background()
	s, p := open(t)
	for _, q := range []string{`DROP TABLE vm_gaps`, `PRAGMA user_version=4`} {
		if _, err := s.db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	s, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var v int
	s.db.QueryRow(`PRAGMA user_version`).Scan(&v)
	if v != schemaVersion || schemaVersion != 5 {
		t.Fatalf("after the upgrade: version %d", v)
	}
	err = s.Update(ctx, func(tx *Tx) error {
		if err := tx.PutVM(vm("a", "web", "", 0)); err != nil {
			return err
		}
		if err := tx.MarkDestroyed("a", at(100)); err != nil {
			return err
		}
		return tx.PutVM(vm("a", "web", "", 200))
	})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := s.StateAt(ctx, "p", at(150)); err != nil || len(st) != 0 {
		t.Errorf("StateAt in the gap after the upgrade: %d VMs, %v", len(st), err)
	}
}

// A change dated before the open span's start (a task end in whole seconds
// after a change dated by the agent's clock) is clamped by MoveState,
// ReplaceAttrs and SetAttrs as by SetState: spans never overlap or invert,
// and StateAt and FamilyAt agree.
func TestBackdatedChangesAreClamped(t *testing.T) {
	ctx := context.Background()
	t105 := at(10).Add(500 * time.Millisecond)
	t102 := at(10).Add(200 * time.Millisecond)
	for _, blind := range []bool{false, true} {
		s, _ := open(t)
		err := s.Update(ctx, func(tx *Tx) error {
			tx.PutHost(&Host{UUID: "h1", PoolUUID: "p", Name: "xen1", FirstSeen: at(0), LastSeen: at(0)})
			tx.PutHost(&Host{UUID: "h2", PoolUUID: "p", Name: "xen2", FirstSeen: at(0), LastSeen: at(0)})
			tx.PutVM(vm("a", "web", "", 0))
			tx.OpenState("a", "Running", "h1", at(0))
			return tx.ReplaceAttrs("a", AttrIP, nil, []string{"10.0.0.1"}, at(0))
		})
		if err != nil {
			t.Fatal(err)
		}
		move := func(ps, host string, when time.Time) {
			err := s.Update(ctx, func(tx *Tx) error {
				if blind {
					return tx.MoveState("a", ps, host, when)
				}
				return tx.SetState("a", ps, host, when)
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		move("Running", "h2", t105)
		move("Halted", "", at(10))
		var overlapping, inverted int
		s.db.QueryRow("SELECT COUNT(*) FROM vm_states WHERE vm_uuid='a' AND from_ms<=? AND (to_ms IS NULL OR to_ms>?)", ms(t102), ms(t102)).Scan(&overlapping)
		s.db.QueryRow("SELECT COUNT(*) FROM vm_states WHERE to_ms<from_ms").Scan(&inverted)
		if overlapping != 1 || inverted != 0 {
			t.Errorf("blind=%v: %d state spans cover 10.2 s (want 1), %d inverted", blind, overlapping, inverted)
		}
		st, _ := s.StateAt(ctx, "p", t102)
		fa, _ := s.FamilyAt(ctx, "a", t102, 0)
		if len(st) != 1 || st[0].PowerState != fa[0].PowerStateAt || st[0].PowerState != "Running" {
			t.Errorf("blind=%v: at 10.2 s StateAt says %+v, FamilyAt %q", blind, st, fa[0].PowerStateAt)
		}

		// Addresses: 10.0.0.2 from 10.5 s, then 10.0.0.3 dated 10 s.
		err = s.Update(ctx, func(tx *Tx) error {
			if blind {
				if err := tx.ReplaceAttrs("a", AttrIP, []string{"10.0.0.1"}, []string{"10.0.0.2"}, t105); err != nil {
					return err
				}
				return tx.ReplaceAttrs("a", AttrIP, []string{"10.0.0.2"}, []string{"10.0.0.3"}, at(10))
			}
			if err := tx.SetAttrs("a", AttrIP, []string{"10.0.0.2"}, t105); err != nil {
				return err
			}
			return tx.SetAttrs("a", AttrIP, []string{"10.0.0.3"}, at(10))
		})
		if err != nil {
			t.Fatal(err)
		}
		s.db.QueryRow("SELECT COUNT(*) FROM vm_attrs WHERE to_ms<from_ms").Scan(&inverted)
		s.db.QueryRow("SELECT COUNT(*) FROM vm_attrs WHERE vm_uuid='a' AND kind='ip' AND from_ms<=? AND (to_ms IS NULL OR to_ms>?)", ms(t102), ms(t102)).Scan(&overlapping)
		if inverted != 0 || overlapping != 1 {
			t.Errorf("blind=%v: %d inverted address spans, %d cover 10.2 s (want 1)", blind, inverted, overlapping)
		}
	}
}

// A cyclic parent chain (a corrupt store): the walks stop at a VM already
// seen, so each VM is listed once and none is its own relative.
func TestCyclicParentsListedOnce(t *testing.T) {
	ctx := context.Background()
	s, _ := open(t)
	s.Update(ctx, func(tx *Tx) error {
		tx.PutVM(vm("a", "A", "b", 0))
		tx.PutVM(vm("b", "B", "", 1))
		tx.PutVM(vm("c", "C", "a", 2))
		return tx.PutVM(vm("d", "D", "c", 3))
	})
	// PutVM refuses the link that closes the cycle (TestParentCycleRefused);
	// a corrupt file can still hold one.
	if _, err := s.DB().Exec("UPDATE vms SET parent_uuid='a' WHERE uuid='b'"); err != nil {
		t.Fatal(err)
	}
	uuids := func(vs []VM) string {
		var out []string
		for _, v := range vs {
			out = append(out, v.UUID)
		}
		return strings.Join(out, ",")
	}
	if anc, err := s.Ancestors(ctx, "d"); err != nil || uuids(anc) != "c,a,b" {
		t.Errorf("Ancestors(d) = %s, want c,a,b (%v)", uuids(anc), err)
	}
	if anc, _ := s.Ancestors(ctx, "a"); uuids(anc) != "b" {
		t.Errorf("Ancestors(a) = %s, want b", uuids(anc))
	}
	if d, _ := s.Descendants(ctx, "a"); uuids(d) != "b,c,d" {
		t.Errorf("Descendants(a) = %s, want b,c,d", uuids(d))
	}
	if r, err := s.FamilyRoot(ctx, "d"); err != nil || r.UUID != "b" {
		t.Errorf("FamilyRoot(d) = %s (%v)", r.UUID, err)
	}
}

// TestParentCycleRefused: a parent link that would make a VM its own
// ancestor (itself, or a descendant of it, named as its parent by a
// replayed or forged log) is not made, by PutVM or by sealing a creating
// record; the VM keeps the parent it had, the record keeps its claim, and
// the refusal is counted and heard.
func TestParentCycleRefused(t *testing.T) {
	ctx := context.Background()
	s, _ := open(t)
	var heard []string
	s.OnRefusedParent = func(child, parent string) { heard = append(heard, child+"<-"+parent) }
	s.DeferSeal(true)
	err := s.Update(ctx, func(tx *Tx) error {
		for _, v := range []*VM{vm("o", "origin", "", 0), vm("a", "A", "o", 1), vm("b", "B", "a", 2), vm("c", "C", "b", 3)} {
			if err := tx.PutVM(v); err != nil {
				return err
			}
		}
		for range 2 { // the same claim again (a rename): counted and heard once
			if err := tx.PutVM(vm("a", "A", "c", 4)); err != nil { // a's grandchild as its parent
				return err
			}
		}
		if err := tx.PutVM(vm("b", "B", "b", 5)); err != nil { // itself
			return err
		}
		if err := tx.PutVM(vm("d", "D", "", 6)); err != nil {
			return err
		}
		// A clone record naming d's child as d's parent: refused at seal.
		if err := tx.PutVM(vm("e", "E", "d", 7)); err != nil {
			return err
		}
		_, err := tx.PutRecord(&record.Record{ID: record.ID("p", "0000000000c1", 0), PoolUUID: "p", VMUUID: "d", VMName: "D", ParentVMUUID: "e",
			Activity: record.Clone, Start: at(8), End: at(9), Result: record.Success, Source: record.SourceLog})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Seal(ctx, 0, nil, 0); err != nil {
		t.Fatal(err)
	}
	for uuid, want := range map[string]string{"a": "o", "b": "a", "c": "b", "d": "", "e": "d"} {
		v, err := s.VM(ctx, uuid)
		if err != nil || v.ParentUUID != want {
			t.Errorf("%s: parent %q (%v), want %q", uuid, v.ParentUUID, err, want)
		}
	}
	if s.RefusedParents() != 3 || strings.Join(heard, " ") != "a<-c b<-b d<-e" {
		t.Errorf("refused %d: %v", s.RefusedParents(), heard)
	}
	recs, _ := s.Records(ctx, Filter{VMUUID: "d"})
	if len(recs) != 1 || recs[0].ParentVMUUID != "e" {
		t.Errorf("the record lost its claim: %+v", recs)
	}
	// A legitimate link is still made.
	if err := s.Update(ctx, func(tx *Tx) error { return tx.PutVM(vm("d", "D", "o", 10)) }); err != nil {
		t.Fatal(err)
	}
	if v, _ := s.VM(ctx, "d"); v.ParentUUID != "o" {
		t.Errorf("d: parent %q, want o", v.ParentUUID)
	}
}
