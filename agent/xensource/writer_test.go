package xensource

import (
	"fmt"
	"io"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/vmlineage/vmlineage/agent/record"
)

const testPool = "4a0f3b9e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"

var testHosts = map[string]string{
	"xen1": "11111111-1111-4111-8111-111111111111",
	"xen2": "22222222-2222-4222-8222-222222222222",
	"xen3": "33333333-3333-4333-8333-333333333333",
}

// scanHosts parses each host's lines (as a file per host) and returns the
// entries, owned, in per-host order.
func scanHosts(t *testing.T, lines []HostLine) map[string][]Entry {
	t.Helper()
	byHost := map[string][]string{}
	var last time.Time
	for _, hl := range lines {
		byHost[hl.Host] = append(byHost[hl.Host], hl.Line)
		if hl.Time.After(last) {
			last = hl.Time
		}
	}
	out := map[string][]Entry{}
	for h, ls := range byHost {
		sc := NewScanner(h, last.Add(time.Hour), time.UTC)
		keep := func(e *Entry) {
			c := *e
			c.Line = e.Line.Clone()
			c.Host = strings.Clone(e.Host)
			c.Backtrace = slices.Clone(e.Backtrace)
			out[h] = append(out[h], c)
		}
		if err := sc.Scan(strings.NewReader(strings.Join(ls, "\n")+"\n"), keep); err != nil {
			t.Fatal(err)
		}
		sc.Flush(keep)
		if sc.Stats.BadTotal() != 0 {
			t.Fatalf("host %s: %d bad lines: %v", h, sc.Stats.BadTotal(), sc.Stats.LastBad)
		}
	}
	return out
}

// derive feeds the entries either host after host or merged by time.
func derive(cfg Config, entries map[string][]Entry, merged bool) []record.Record {
	d := NewDeriver(cfg)
	var recs []record.Record
	hosts := make([]string, 0, len(entries))
	for h := range entries {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	if merged {
		var all []Entry
		for _, h := range hosts {
			all = append(all, entries[h]...)
		}
		sort.SliceStable(all, func(i, j int) bool { return all[i].Time.Before(all[j].Time) })
		for i := range all {
			recs = append(recs, d.Feed(&all[i])...)
		}
	} else {
		for _, h := range hosts {
			for i := range entries[h] {
				recs = append(recs, d.Feed(&entries[h][i])...)
			}
		}
	}
	return append(recs, d.Flush()...)
}

// expected is the record the logs of op must yield: the XAPI ground truth
// restricted to what xensource.log carries, with the rest named unknown.
func expected(op Op) record.Record {
	short := record.TaskShortID(op.TaskRef)
	a, _ := record.ActivityOf(op.Op)
	r := record.Record{ID: record.ID(testPool, short, 0), PoolUUID: testPool, Activity: a, Operation: op.Op,
		Start: op.Time, End: op.Time.Add(op.Duration), TaskID: short, Source: record.SourceLog, Result: record.Success}
	unknown := []string{"task_uuid"}
	failed := op.Result == "failure" || op.Result == "cancelled"
	ended := failed
	switch op.Op {
	case "start", "start_on", "resume", "resume_on", "clean_shutdown", "hard_shutdown", "shutdown",
		"suspend", "pause", "unpause", "pool_migrate", "migrate_send", "snapshot", "checkpoint",
		"revert", "destroy", "import", "export":
		ended = true
	case "create":
		if !failed {
			r.End = r.Start // only the audit line is logged
		}
	}
	if !ended {
		unknown = append(unknown, "end")
	}
	if failed {
		r.Result = record.Result(op.Result)
		code, params := "INTERNAL_ERROR", []string{"unknown"}
		if len(op.ErrorInfo) > 0 {
			code, params = op.ErrorInfo[0], op.ErrorInfo[1:]
		} else if op.Result == "cancelled" {
			code, params = "TASK_CANCELLED", []string{op.TaskRef}
		}
		r.Error = FormatError(code, params)
	}
	r.HostName = op.Host
	if onCoordinator[op.Op] || op.Refused {
		r.HostName = op.Master
	}
	r.HostUUID = testHosts[r.HostName]
	switch {
	case a == record.Revert:
		r.SnapshotUUID = op.VMUUID
		unknown = append(unknown, "vm_uuid", "vm_name", "parent_vm_uuid")
	case a.Creating() && !failed:
		r.VMName = op.NewName
		if op.Op == "import" {
			r.VMName = "" // the imported VM's name is in the archive, not the log
			unknown = append(unknown, "vm_name")
		}
		if op.UEFI && op.Op == "clone" {
			r.VMUUID = op.NewVMUUID
		} else {
			unknown = append(unknown, "vm_uuid")
		}
		if a != record.Create && a != record.Import {
			r.ParentVMUUID = op.VMUUID
		}
	default:
		r.VMUUID, r.VMName = op.VMUUID, op.VMName
		if r.VMUUID == "" {
			unknown = append(unknown, "vm_uuid")
		}
		if r.VMName == "" {
			unknown = append(unknown, "vm_name")
		}
		unknown = append(unknown, "parent_vm_uuid")
	}
	if a == record.Migrate {
		// pool_migrate's audit line names the destination; otherwise only
		// the destination's xenopsd lines do, and a failed call has none.
		if op.Op == "pool_migrate" || !failed {
			r.DestinationHostUUID = testHosts[op.DestHost]
		} else {
			unknown = append(unknown, "destination_host_uuid")
		}
	}
	sort.Strings(unknown)
	r.Unknown = unknown
	return r
}

var allOps = []string{"start", "start_on", "clean_shutdown", "hard_shutdown", "shutdown", "clean_reboot",
	"hard_reboot", "suspend", "resume", "resume_on", "pause", "unpause", "pool_migrate", "migrate_send",
	"clone", "copy", "snapshot", "checkpoint", "revert", "destroy", "import", "export", "provision", "create"}

func testOp(i int, name, result string, base time.Time) Op {
	op := Op{
		Time: base.Add(time.Duration(i) * 7 * time.Second), Duration: time.Duration(2+i%5) * time.Second,
		Host: []string{"xen2", "xen1", "xen3"}[i%3], Master: "xen1", Op: name,
		TaskRef: fmt.Sprintf("OpaqueRef:%08x-%04x-4abc-8def-0123456789ab", 0x1000+i, i),
		VMUUID:  fmt.Sprintf("aaaaaaaa-bbbb-4ccc-8ddd-%012x", i), VMName: fmt.Sprintf("vm %d Café", i),
		NewName: fmt.Sprintf("child-%d", i), NewVMUUID: fmt.Sprintf("cccccccc-bbbb-4ccc-8ddd-%012x", i),
		UEFI: i%2 == 0, Result: result, Noise: true,
	}
	if name == "pool_migrate" || name == "migrate_send" {
		op.DestHost = "xen3"
		if op.Host == "xen3" {
			op.DestHost = "xen2"
		}
		if name == "pool_migrate" {
			op.DestHostUUID = testHosts[op.DestHost]
		}
	}
	if name == "import" || name == "create" {
		op.VMUUID, op.VMName = "", ""
	}
	if name == "create" {
		op.TaskName = "VM.create"
	}
	if name == "import" {
		op.Count = 1 + i%3
	}
	if result == "failure" && i%2 == 0 {
		op.Refused = true // e.g. VM_BAD_POWER_STATE, raised on the coordinator
	}
	if result == "failure" {
		op.ErrorInfo = []string{"VM_BAD_POWER_STATE", op.TaskRef, "halted", "running"}
	}
	return op
}

// expectedAll expands an import of several VMs into one record per VM.
func expectedAll(op Op) []record.Record {
	r := expected(op)
	if op.Op != "import" || op.Count < 2 || r.Result != record.Success {
		return []record.Record{r}
	}
	var out []record.Record
	for i := 0; i < op.Count; i++ {
		c := r
		c.ID = record.ID(testPool, r.TaskID, i)
		out = append(out, c)
	}
	return out
}

func normalise(rs []record.Record) []record.Record {
	out := slices.Clone(rs)
	for i := range out {
		u := slices.Clone(out[i].Unknown)
		sort.Strings(u)
		out[i].Unknown = u
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// TestRenderDeriveEveryActivity: for every activity, success, failure and
// cancellation, the records derived from the rendered logs equal the op's
// record in every field the logs carry.
func TestRenderDeriveEveryActivity(t *testing.T) {
	base := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	cfg := Config{PoolUUID: testPool, Hosts: testHosts, Master: "xen1"}
	i := 0
	for _, name := range allOps {
		for _, result := range []string{"success", "failure", "cancelled"} {
			op := testOp(i, name, result, base)
			i++
			t.Run(name+"/"+result, func(t *testing.T) {
				got := normalise(derive(cfg, scanHosts(t, Render(op)), false))
				want := normalise(expectedAll(op))
				if !reflect.DeepEqual(got, want) {
					t.Errorf("records differ\n got %+v\nwant %+v\nlog:\n%s", got, want, dump(Render(op)))
				}
				for _, r := range got {
					if err := r.Validate(); err != nil {
						t.Error(err)
					}
				}
			})
		}
	}
}

// TestRenderDeriveInterleaved renders many concurrent operations with noise
// on three hosts and derives them host-by-host and merged by time.
func TestRenderDeriveInterleaved(t *testing.T) {
	base := time.Date(2026, 12, 31, 23, 58, 0, 0, time.UTC) // across New Year
	cfg := Config{PoolUUID: testPool, Hosts: testHosts, Master: "xen1"}
	var lines []HostLine
	var want []record.Record
	for i := 0; i < 60; i++ {
		name := allOps[i%len(allOps)]
		result := []string{"success", "success", "failure", "cancelled"}[i%4]
		op := testOp(i, name, result, base)
		op.Time = base.Add(time.Duration(i) * time.Second) // overlapping tasks
		lines = append(lines, Render(op)...)
		want = append(want, expectedAll(op)...)
	}
	sort.SliceStable(lines, func(i, j int) bool { return lines[i].Time.Before(lines[j].Time) })
	entries := scanHosts(t, lines)
	for _, merged := range []bool{false, true} {
		got := normalise(derive(cfg, entries, merged))
		w := normalise(want)
		if len(got) != len(w) {
			t.Fatalf("merged=%v: %d records, want %d", merged, len(got), len(w))
		}
		for i := range got {
			if !reflect.DeepEqual(got[i], w[i]) {
				t.Errorf("merged=%v: record %d\n got %+v\nwant %+v", merged, i, got[i], w[i])
			}
		}
	}
}

func dump(ls []HostLine) string {
	var b strings.Builder
	for _, l := range ls {
		b.WriteString(l.Line)
		b.WriteByte('\n')
	}
	return b.String()
}

// TestDeriveStreamingNoCopies runs the real replay path (Scanner → Deriver
// with entries that alias the read buffer, hosts one after another) and
// checks it yields the same records: nothing kept may alias the buffer.
func TestDeriveStreamingNoCopies(t *testing.T) {
	base := time.Date(2026, 12, 31, 23, 58, 0, 0, time.UTC)
	cfg := Config{PoolUUID: testPool, Hosts: testHosts, Master: "xen1"}
	byHost := map[string][]string{}
	var want []record.Record
	for i := 0; i < 48; i++ {
		op := testOp(i, allOps[i%len(allOps)], []string{"success", "failure", "cancelled"}[i%3], base)
		op.Time = base.Add(time.Duration(i) * time.Second)
		for _, hl := range Render(op) {
			byHost[hl.Host] = append(byHost[hl.Host], hl.Line)
		}
		want = append(want, expectedAll(op)...)
	}
	d := NewDeriver(cfg)
	var got []record.Record
	for _, h := range []string{"xen1", "xen2", "xen3"} {
		sc := NewScanner(h, base.Add(time.Hour), time.UTC)
		emit := func(e *Entry) { got = append(got, d.Feed(e)...) }
		// A tiny read buffer forces the reader to reuse its memory often.
		if err := sc.Scan(iotestHalf(strings.Join(byHost[h], "\n")+"\n"), emit); err != nil {
			t.Fatal(err)
		}
		sc.Flush(emit)
	}
	got = append(got, d.Flush()...)
	g, w := normalise(got), normalise(want)
	if !reflect.DeepEqual(g, w) {
		for i := range g {
			if i < len(w) && !reflect.DeepEqual(g[i], w[i]) {
				t.Errorf("record %d\n got %+v\nwant %+v", i, g[i], w[i])
			}
		}
		t.Fatalf("%d records, want %d", len(g), len(w))
	}
}

func iotestHalf(s string) io.Reader { return iotest.HalfReader(strings.NewReader(s)) }
