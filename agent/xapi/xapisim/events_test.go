package xapisim

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func testDB() *DB { return newDB(allClasses, allRelations) }

func sub(t *testing.T, db *DB, classes ...string) *subscription {
	t.Helper()
	s, bad := parseSubscription(db, classes)
	if s == nil {
		t.Fatalf("bad subscription %q", bad)
	}
	return s
}

func mkVM(db *DB, ref, name string) {
	db.create("VM", ref, vmFields(vmSpec{uuid: "u-" + ref, name: name, powerState: "Halted"}))
}

func TestEventFromCoalescesAndOrders(t *testing.T) {
	db := testDB()
	mkVM(db, "OpaqueRef:a", "a")
	mkVM(db, "OpaqueRef:b", "b")
	mkVM(db, "OpaqueRef:c", "c")
	s := sub(t, db, "VM")
	evs, tok := db.collect(s, token{})
	if len(evs) != 3 || evs[0].op != "add" {
		t.Fatalf("initial: %+v", evs)
	}
	if tok.String() != fmt.Sprintf("%020d,%020d", db.gen, 0) {
		t.Fatalf("token %s gen %d", tok, db.gen)
	}
	// Several writes to b collapse into one mod with the latest snapshot; a
	// row created and deleted between calls is invisible; c's deletion is a
	// del without snapshot; a new row is an add. Order: add, mod, del.
	db.set("VM", "OpaqueRef:b", "name_label", "b1")
	db.set("VM", "OpaqueRef:b", "name_label", "b2")
	mkVM(db, "OpaqueRef:tmp", "tmp")
	db.remove("VM", "OpaqueRef:tmp")
	db.remove("VM", "OpaqueRef:c")
	mkVM(db, "OpaqueRef:d", "d")
	evs, tok2 := db.collect(s, tok)
	var got []string
	for _, e := range evs {
		got = append(got, e.op+" "+e.ref)
	}
	if strings.Join(got, ",") != "add OpaqueRef:d,mod OpaqueRef:b,del OpaqueRef:c" {
		t.Fatalf("got %v", got)
	}
	if evs[1].snap.Get("name_label") != "b2" || evs[2].snap != nil {
		t.Fatalf("snapshots: %v / %v", evs[1].snap.Get("name_label"), evs[2].snap)
	}
	// The token is the highest generation returned; ids are generations.
	if tok2.gen != evs[0].gen || tok2.gen <= tok.gen {
		t.Fatalf("token %s after %s, add gen %d", tok2, tok, evs[0].gen)
	}
	if evs, tok3 := db.collect(s, tok2); len(evs) != 0 || tok3 != tok2 {
		t.Fatalf("nothing new: %+v %s", evs, tok3)
	}
	// A row that lives and dies between two calls leaves no trace at all,
	// not even in the token (xapi_event.ml collect_events: deletions are
	// folded only when created <= since, and only they move "last").
	mkVM(db, "OpaqueRef:brief", "brief")
	db.remove("VM", "OpaqueRef:brief")
	if evs, tok4 := db.collect(s, tok2); len(evs) != 0 || tok4 != tok2 {
		t.Fatalf("short-lived row: %+v, token %s after %s", evs, tok4, tok2)
	}
}

func TestEventFromSubscriptions(t *testing.T) {
	db := testDB()
	mkVM(db, "OpaqueRef:a", "a")
	mkVM(db, "OpaqueRef:b", "b")
	db.create("task", "OpaqueRef:t", taskFields("tu", "VM.start", "OpaqueRef:h", "", time.Unix(0, 0)))
	for _, c := range [][]string{{"vm"}, {"Vm"}, {"VM"}} {
		if evs, _ := db.collect(sub(t, db, c...), token{}); len(evs) != 2 {
			t.Errorf("%v: %d events", c, len(evs))
		}
	}
	if evs, _ := db.collect(sub(t, db, "vm/OpaqueRef:b"), token{}); len(evs) != 1 || evs[0].ref != "OpaqueRef:b" {
		t.Errorf("class/ref: %+v", evs)
	}
	if evs, _ := db.collect(sub(t, db, "*"), token{}); len(evs) != 3 {
		t.Errorf("*: %d", len(evs))
	}
	if s, bad := parseSubscription(db, []string{"VM", "nonsense"}); s != nil || bad != "nonsense" {
		t.Errorf("bad class accepted")
	}
	if !sub(t, db, "task").onlyTask || sub(t, db, "task", "vm").onlyTask {
		t.Errorf("onlyTask")
	}
}

func TestEventFromDeletionQueueOverflow(t *testing.T) {
	db := testDB()
	for i := 0; i < 600; i++ {
		mkVM(db, fmt.Sprintf("OpaqueRef:%d", i), "x")
	}
	s := sub(t, db, "vm")
	_, tok := db.collect(s, token{})
	for i := 0; i < 600; i++ {
		db.remove("VM", fmt.Sprintf("OpaqueRef:%d", i))
	}
	evs, _ := db.collect(s, tok)
	// 512 entries, cut to the newest 256 at the 513th, then 87 more.
	if len(evs) != 343 {
		t.Fatalf("%d dels, want 343 (silent gap)", len(evs))
	}
	if evs[len(evs)-1].ref != "OpaqueRef:599" || evs[0].ref != "OpaqueRef:257" {
		t.Fatalf("kept %s..%s", evs[0].ref, evs[len(evs)-1].ref)
	}
	counts := db.counts(nil)
	if counts.Get("vm") != I4(0) {
		t.Fatalf("valid_ref_counts vm = %v", counts.Get("vm"))
	}
}

func TestTokenParse(t *testing.T) {
	for _, ok := range []string{"", "1,2", "00000000000000000012,00000000000000000000"} {
		if _, good := parseToken(ok); !good {
			t.Errorf("%q rejected", ok)
		}
	}
	for _, bad := range []string{"x", "1", "1,", "a,b", "-1,2"} {
		if _, good := parseToken(bad); good {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestRelationsMaintainInverse(t *testing.T) {
	db := testDB()
	db.create("host", "OpaqueRef:h1", hostFields("h1", "h1", "1", nullRef))
	db.create("host", "OpaqueRef:h2", hostFields("h2", "h2", "2", nullRef))
	mkVM(db, "OpaqueRef:v", "v")
	_, tok := db.collect(sub(t, db, "*"), token{})
	db.set("VM", "OpaqueRef:v", "resident_on", "OpaqueRef:h1")
	db.set("VM", "OpaqueRef:v", "resident_on", "OpaqueRef:h2")
	if r := db.field("host", "OpaqueRef:h1", "resident_VMs").([]string); len(r) != 0 {
		t.Fatalf("h1 %v", r)
	}
	if r := db.field("host", "OpaqueRef:h2", "resident_VMs").([]string); len(r) != 1 {
		t.Fatalf("h2 %v", r)
	}
	evs, _ := db.collect(sub(t, db, "host"), tok)
	if len(evs) != 2 {
		t.Fatalf("both hosts get a mod: %+v", evs)
	}
}
