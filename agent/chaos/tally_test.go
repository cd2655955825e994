package chaos

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/record"
)

func rec(id, vm string, a record.Activity, src record.Source, task string) record.Record {
	return record.Record{ID: id, VMUUID: vm, VMName: "n-" + vm, Activity: a, Source: src, TaskUUID: task,
		Start: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

// TestClassify checks every category the suite reports: a checker that
// cannot fail proves nothing.
func TestClassify(t *testing.T) {
	truth := []record.Record{
		rec("a", "vm1", record.Start, record.SourceXAPI, "t-a"),          // by id
		rec("b", "vm2", record.ConvertToTemplate, record.SourceXAPI, ""), // setter, stood for by a resync
		rec("c", "vm3", record.ConvertToTemplate, record.SourceXAPI, ""), // setter, unseen
		rec("d", "vm4", record.Shutdown, record.SourceXAPI, "t-d"),       // resync instead of the record
		rec("e", "vm5", record.Destroy, record.SourceXAPI, "t-e"),        // missing
		rec("f", "vm6", record.Suspend, record.SourceXAPI, "t-f"),        // by id, and doubled by a resync
	}
	stored := []record.Record{
		rec("a", "vm1", record.Start, record.SourceXAPI, "t-a"),
		rec("r-b", "vm2", record.ConvertToTemplate, record.SourceResync, ""),
		rec("r-d", "vm4", record.Shutdown, record.SourceResync, ""),
		rec("f", "vm6", record.Suspend, record.SourceLog, ""),
		rec("r-f", "vm6", record.Suspend, record.SourceResync, ""),
		rec("x", "vm9", record.Reboot, record.SourceXAPI, "t-x"),
	}
	c := Classify(truth, stored)
	if c.ByID != 2 || len(c.StoodFor) != 1 || len(c.Unseen) != 1 || len(c.ResyncInstead) != 1 ||
		len(c.Missing) != 2 || len(c.Doubled) != 1 || len(c.Invented) != 1 || c.Resync != 3 {
		t.Fatalf("classification: by id %d, stood %d, unseen %d, instead %d, missing %d, doubled %d, invented %d, resync %d",
			c.ByID, len(c.StoodFor), len(c.Unseen), len(c.ResyncInstead), len(c.Missing), len(c.Doubled), len(c.Invented), c.Resync)
	}
	want := map[string]bool{"a": true, "r-b": true, "d": true, "e": true, "f": true}
	if len(c.Expected) != len(want) {
		t.Errorf("expected ids %v, want %v", c.Expected, want)
	}
	for id := range want {
		if !c.Expected[id] {
			t.Errorf("id %s not expected", id)
		}
	}
	if n := len(c.Defects()); n != 5 { // 2 missing, 1 instead, 1 doubled, 1 invented
		t.Errorf("%d defects: %v", n, c.Defects())
	}
}

func TestCount(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	exp := map[string]bool{"a": true, "b": true, "c": true, "d": true}
	copies := []Copy{
		{ID: "chain-0-x", Link: "0:x", At: t0},
		{ID: "a", Link: "1:h1", At: t0, Size: 100},
		{ID: "b", Link: "2:h2", At: t0.Add(time.Second), Size: 10},
		{ID: "c", Link: "3:h3", At: t0.Add(2 * time.Second), Size: 1},
		{ID: "a", Link: "1:h1", At: t0.Add(3 * time.Second)}, // re-send, 3 records later
		{ID: "b", Link: "9:zz", At: t0.Add(4 * time.Second)}, // same id, another record
		{ID: "z", Link: "7:h7", At: t0.Add(5 * time.Second)}, // not expected
		// Again, after an outage: measured from the previous copy (t0+3s:
		// 3 records, 0 bytes, z 2 s later), not from the first (t0).
		{ID: "a", Link: "1:h1", At: t0.Add(6 * time.Second)},
	}
	s := Count("siem", "rsyslog", exp, copies, false)
	if s.Delivered != 3 || len(s.Missing) != 1 || s.Missing[0] != "d" || s.Duplicated != 2 || s.ReSends != 3 ||
		s.WindowRecords != 3 || s.WindowBytes != 111 || s.WindowTime != 3*time.Second || s.WindowSpan != 2*time.Second || s.WindowSpanID != "a" || !s.WindowSpanFrom.Equal(t0) || len(s.Conflicts) != 1 || s.Conflicts[0] != "b" ||
		len(s.Unexpected) != 1 || s.Checkpoints != 1 || s.DuplicatesCounted() != 2 {
		t.Fatalf("syslog tally: %+v", s)
	}
	e := Count("es", "victorialogs", exp, copies, true)
	if e.DuplicatesCounted() != 1 {
		t.Errorf("by _id, only the conflicting id is a duplicate: %+v", e)
	}
	var b strings.Builder
	WriteTable(&b, Classify(nil, nil), []Tally{s, e}, Faults{Kills: 21, SpoolFull: map[string]int{"siem": 1}})
	for _, w := range []string{"siem", "rsyslog", "1 by _id", "21 SIGKILLs", "siem 1"} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("table lacks %q:\n%s", w, b.String())
		}
	}
}

func TestCountFields(t *testing.T) {
	truth := []record.Record{
		{ID: "a", VMUUID: "v1", ParentVMUUID: "p1"},
		{ID: "b", VMUUID: "v2", ParentVMUUID: "p2"},
		{ID: "c", VMUUID: "v3", ParentVMUUID: "p3"},
		{ID: "d", VMUUID: "v4"},
		{ID: "e", VMUUID: "v5"}, // not stored
	}
	stored := []record.Record{
		{ID: "a", VMUUID: "v1", ParentVMUUID: "p1"},
		{ID: "b", VMUUID: "", ParentVMUUID: ""},
		{ID: "c", VMUUID: "v9", ParentVMUUID: "p9"},
		{ID: "d", VMUUID: "v4", ParentVMUUID: "p8"},
	}
	f := CountFields(truth, stored)
	want := Fields{ByID: 4, VMUnknown: 1, VMWrong: 1, ParentUnknown: 1, ParentWrong: 2}
	if f.ByID != want.ByID || f.VMUnknown != want.VMUnknown || f.VMWrong != want.VMWrong || f.ParentUnknown != want.ParentUnknown ||
		f.ParentWrong != want.ParentWrong || len(f.Wrong) != 2 {
		t.Errorf("CountFields = %+v, want %+v and two records described wrong", f, want)
	}
	// c and d name another VM or parent; b leaves both unknown, one in
	// four records, beyond UnknownBound.
	if d := f.Defects(); len(d) != 4 {
		t.Errorf("Defects = %q, want c, d and the two unknowns", d)
	}
	// Within the bound: two unknowns in a hundred, nothing wrong.
	var big []record.Record
	for i := range 100 {
		big = append(big, record.Record{ID: fmt.Sprint(i), VMUUID: fmt.Sprint("v", i)})
	}
	got := append([]record.Record(nil), big...)
	got[7].VMUUID, got[8].VMUUID = "", ""
	if d := CountFields(big, got).Defects(); len(d) != 0 {
		t.Errorf("two VMs unknown in 100 records: Defects = %q, want none", d)
	}
	got[9].VMUUID = ""
	if d := CountFields(big, got).Defects(); len(d) != 1 {
		t.Errorf("three VMs unknown in 100 records: Defects = %q, want one", d)
	}
}
