package audit

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/record"
)

const testPool = "pool-1"

// auditLine writes a current-format line (E1 shape) with the given pieces.
func auditLine(host string, t time.Time, client, task, trackid, sid, name, decision, result, action, args string) string {
	prefix := ""
	if client != "" {
		prefix = "HTTPS " + client + "->"
	}
	return t.Format(time.Stamp) + " " + host + " xapi: [" + t.Format("20060102T15:04:05.000Z") + "|audit||4711 " + prefix +
		"|" + task + "|audit] ('trackid=" + trackid + "' '" + sid + "' '" + name + "' '" + decision + "' '" + result +
		"' 'API' '" + action + "' (" + args + "))"
}

func batchOf(t *testing.T, host string, lines ...string) *Batch {
	t.Helper()
	b := &Batch{PoolUUID: testPool}
	for _, s := range lines {
		var l Line
		if err := Parse(s, &l); err != nil {
			t.Fatalf("%v\n%s", err, s)
		}
		b.Entries = append(b.Entries, Entry{Line: l.Clone(), HostName: host, HostUUID: "uuid-" + host, Source: FromHTTP})
	}
	return b
}

var (
	t0    = time.Date(2024, 3, 15, 10, 22, 33, 0, time.UTC)
	trk1  = strings.Repeat("1", 32)
	trk2  = strings.Repeat("2", 32)
	vmArg = "('vm' 'web-01' '3f1c2d4e-5b6a-4c7d-8e9f-0a1b2c3d4e5f' 'OpaqueRef:2b3c4d5e-6f70-4182-93a4-b5c6d7e8f901')"
)

func TestAttributorPrefersTheCallerOverCopiesAndInternalCalls(t *testing.T) {
	a := NewAttributor(AttributorConfig{})
	task := "Async.VM.start R:0f3a9b2c7d1e"
	// The member's copy lands exactly at the task's end; the coordinator's
	// line half a second later; an internal sub-call under the same id.
	a.Add(batchOf(t, "xen2", auditLine("xen2", t0, "", task, trk2, "LOCAL_SUPERUSER", "", "ALLOWED", "OK", "VM.start", vmArg)))
	a.Add(batchOf(t, "xen1",
		auditLine("xen1", t0.Add(100*time.Millisecond), "", task, trk2, "LOCAL_SUPERUSER", "OpaqueRef:11111111-2222-4333-8444-555555555555", "ALLOWED", "OK", "VM.start", vmArg),
		auditLine("xen1", t0.Add(500*time.Millisecond), "10.0.0.7", task, trk1, "S-1-5-21-1-2-3-4", `EX\\\\alice`, "ALLOWED", "OK", "VM.start", vmArg)))
	act, ok := a.Actor(testPool, "0f3a9b2c7d1e", t0)
	if !ok || act.Name != `EX\alice` || act.ClientIP != "10.0.0.7" || act.TrackID != trk1 {
		t.Fatalf("actor %+v %v", act, ok)
	}
	// Only the copy known: it is what the log says (no name), not final.
	b := NewAttributor(AttributorConfig{})
	b.Add(batchOf(t, "xen2", auditLine("xen2", t0, "", task, trk2, "LOCAL_SUPERUSER", "", "ALLOWED", "OK", "VM.start", vmArg)))
	if act, ok := b.Actor(testPool, "0f3a9b2c7d1e", t0); !ok || act.Name != "" || act.SubjectID != "LOCAL_SUPERUSER" {
		t.Fatalf("copy only: %+v", act)
	}
	r := record.Record{PoolUUID: testPool, TaskID: "0f3a9b2c7d1e", Start: t0, End: t0}
	if changed, final := b.Complete(&r); !changed || final {
		t.Errorf("copy only: changed %v final %v", changed, final)
	}
	if changed, final := a.Complete(&r); !changed || !final || r.Actor.Name != `EX\alice` {
		t.Errorf("the caller's line: changed %v final %v actor %+v", changed, final, r.Actor)
	}
	if changed, final := a.Complete(&r); changed || !final {
		t.Errorf("again: changed %v final %v", changed, final)
	}
}

func TestAttributorWindowAndPools(t *testing.T) {
	a := NewAttributor(AttributorConfig{Window: 30 * time.Second})
	task := "Async.VM.clone R:aaaaaaaaaaaa"
	a.Add(batchOf(t, "xen1", auditLine("xen1", t0, "1.2.3.4", task, trk1, "LOCAL_SUPERUSER", "root", "ALLOWED", "OK", "VM.clone", vmArg)))
	if _, ok := a.Actor(testPool, "aaaaaaaaaaaa", t0.Add(10*time.Minute)); ok {
		t.Error("a line ten minutes from the record's end is another task with the same short id")
	}
	if _, ok := a.Actor("other-pool", "aaaaaaaaaaaa", t0); ok {
		t.Error("another pool's task")
	}
	r := record.Record{PoolUUID: testPool, TaskID: "aaaaaaaaaaaa", Start: t0.Add(-3 * time.Minute), End: t0.Add(-2 * time.Minute)}
	if a.Apply(&r) {
		t.Error("applied outside the window")
	}
	r.End = t0.Add(-20 * time.Second)
	if !a.Apply(&r) || r.Actor.Name != "root" {
		t.Errorf("within the window: %+v", r.Actor)
	}
	if a.Apply(&r) {
		t.Error("a second Apply reports a change")
	}
}

func TestAttributorJoinsHTTPAndSetters(t *testing.T) {
	a := NewAttributor(AttributorConfig{})
	exp := `Mar 15 12:41:55 xcp-h1 xapi: [20240315T12:41:55.870Z|audit||7302 INET :::80|handler:http/get_export D:2a9c4e6f8b1d|audit] ('trackid=` + trk1 + `' 'LOCAL_SUPERUSER' 'root' 'ALLOWED' 'OK' 'HTTP' 'http/get_export' (('ref' 'web-01' '3f1c2d4e-5b6a-4c7d-8e9f-0a1b2c3d4e5f' 'OpaqueRef:2b3c4d5e-6f70-4182-93a4-b5c6d7e8f901') ('task_id' 'Xapi#getResource /export/' '0b1c2d3e-4f50-4617-8283-94a5b6c7d8e9' 'OpaqueRef:e1d2c3b4-a596-4877-8695-a4b3c2d1e0f9')))`
	set := auditLine("xcp-h1", t0, "10.0.0.9", "VM.set_is_a_template D:c0ffee001111", trk2, "LOCAL_SUPERUSER", "root", "ALLOWED", "OK", "VM.set_is_a_template",
		"('self' 'web-01' '3f1c2d4e-5b6a-4c7d-8e9f-0a1b2c3d4e5f' 'OpaqueRef:2b3c4d5e-6f70-4182-93a4-b5c6d7e8f901')")
	// The session's address, seen on one of its API calls.
	other := auditLine("xcp-h1", t0, "10.0.0.50", "Async.VM.start R:bbbbbbbbbbbb", trk1, "LOCAL_SUPERUSER", "root", "ALLOWED", "OK", "VM.start", vmArg)
	up := a.Add(batchOf(t, "xcp-h1", other, exp, set))
	if len(up.Tasks) != 3 {
		t.Errorf("update %+v", up)
	}
	end := time.Date(2024, 3, 15, 12, 41, 55, 0, time.UTC)
	if act, ok := a.Actor(testPool, "e1d2c3b4a596", end); !ok || act.Name != "root" || act.ClientIP != "10.0.0.50" {
		t.Errorf("export joined through task_id: %+v %v", act, ok)
	}
	if act, ok := a.Actor(testPool, "c0ffee001111", t0); !ok || act.TrackID != trk2 {
		t.Errorf("setter joined through its D: id: %+v %v", act, ok)
	}
}

func TestAttributorDeniedRecords(t *testing.T) {
	a := NewAttributor(AttributorConfig{Hosts: map[string]map[string]string{testPool: {"xen1": "host-uuid-1"}}})
	den := auditLine("xen1", t0, "10.0.8.31", "Async.VM.hard_shutdown R:b7d2e4f60a19", trk1, "S-1-5-21-1-2-3-2301", `EX\\\\auditor`,
		"DENIED", "", "VM.hard_shutdown", vmArg)
	b := batchOf(t, "xen1", den, den)
	b.Entries[0].HostUUID, b.Entries[1].HostUUID = "", ""
	up := a.Add(b)
	if len(up.Denied) != 1 || a.Stats().Repeats != 1 {
		t.Fatalf("denied %+v stats %+v", up.Denied, a.Stats())
	}
	d := up.Denied[0]
	if d.ID != record.ID(testPool, "b7d2e4f60a19", 0) || d.Activity != record.Shutdown || d.Operation != "hard_shutdown" ||
		d.VMUUID != "3f1c2d4e-5b6a-4c7d-8e9f-0a1b2c3d4e5f" || d.VMName != "web-01" || d.HostUUID != "host-uuid-1" ||
		d.Result != record.Denied || d.Source != record.SourceAudit || d.Actor.Name != `EX\auditor` || !d.Start.Equal(t0) {
		t.Errorf("denied record %+v", d)
	}
	if err := d.Validate(); err != nil {
		t.Error(err)
	}
	// The tracer's record of the same (async) task names no VM: Apply
	// fills it from the refused call.
	r := record.Record{ID: d.ID, PoolUUID: testPool, TaskID: "b7d2e4f60a19", Start: t0.Truncate(time.Second), End: t0.Truncate(time.Second),
		Result: record.Denied, Activity: record.Shutdown, Unknown: []string{"vm_uuid"}}
	if !a.Apply(&r) || r.VMUUID != d.VMUUID || r.VMName != "web-01" || r.IsUnknown("vm_uuid") {
		t.Errorf("tracer record after Apply: %+v", r)
	}
	// A refused non-lifecycle call is noise, not a record.
	up = a.Add(batchOf(t, "xen1", auditLine("xen1", t0, "", "pool.set_name_label D:aaaaaaaaaaaa", trk1, "S-1", "x", "DENIED", "", "pool.set_name_label", "")))
	if len(up.Denied) != 0 {
		t.Errorf("pool call made a record: %+v", up.Denied)
	}
}

func TestAttributorBoundsMemory(t *testing.T) {
	a := NewAttributor(AttributorConfig{Retain: time.Hour, MaxTasks: 100})
	for i := 0; i < 1000; i++ {
		ts := t0.Add(time.Duration(i) * time.Second)
		a.Add(batchOf(t, "xen1", auditLine("xen1", ts, "", fmt.Sprintf("Async.VM.start R:%012x", i), trk1, "LOCAL_SUPERUSER", "root", "ALLOWED", "OK", "VM.start", vmArg)))
	}
	s := a.Stats()
	if s.Tasks > 100 || s.Evicted != 900 {
		t.Errorf("stats %+v", s)
	}
	if _, ok := a.Actor(testPool, fmt.Sprintf("%012x", 999), t0.Add(999*time.Second)); !ok {
		t.Error("newest task forgotten")
	}
	if _, ok := a.Actor(testPool, fmt.Sprintf("%012x", 0), t0); ok {
		t.Error("oldest task kept")
	}
	b := NewAttributor(AttributorConfig{Retain: time.Minute})
	for i := 0; i < 600; i++ {
		ts := t0.Add(time.Duration(i) * time.Second)
		b.Add(batchOf(t, "xen1", auditLine("xen1", ts, "", fmt.Sprintf("Async.VM.start R:%012x", i), trk1, "LOCAL_SUPERUSER", "root", "ALLOWED", "OK", "VM.start", vmArg)))
	}
	if s := b.Stats(); s.Tasks > 61 {
		t.Errorf("retain one minute: %d tasks kept", s.Tasks)
	}
}

func TestParseSessionCreate(t *testing.T) {
	for msg, want := range map[string]Session{
		"Session.create trackid=9be672f1a72fb158013dce44c1df30fc pool=false uname= is_local_superuser=true auth_user_sid= parent=trackid=9834f5af41c964e225f24279aefe4e49": {
			TrackID: "9be672f1a72fb158013dce44c1df30fc", LocalSuperuser: true},
		"Session.create trackid=9be672f1a72fb158013dce44c1df30fc pool=false uname=root originator=HTTPS 10.0.0.5 using Basic auth is_local_superuser=true auth_user_sid= parent=trackid=9834f5af41c964e225f24279aefe4e49": {
			TrackID: "9be672f1a72fb158013dce44c1df30fc", Uname: "root", Originator: "HTTPS 10.0.0.5 using Basic auth", LocalSuperuser: true},
		"Session.create trackid=9be672f1a72fb158013dce44c1df30fc pool=false uname=EXAMPLE01\\alice originator=XenCenter is_local_superuser=false auth_user_sid=S-1-5-21-1-2-3 parent=trackid=9834f5af41c964e225f24279aefe4e49": {
			TrackID: "9be672f1a72fb158013dce44c1df30fc", Uname: `EXAMPLE01\alice`, Originator: "XenCenter", SubjectID: "S-1-5-21-1-2-3"},
	} {
		got, pool, ok := ParseSessionCreate(msg)
		if !ok || pool || got != want {
			t.Errorf("%q:\n got %+v %v %v\nwant %+v", msg, got, pool, ok, want)
		}
	}
	if _, _, ok := ParseSessionCreate("Session.destroy trackid=9be672f1a72fb158013dce44c1df30fc"); ok {
		t.Error("Session.destroy accepted")
	}
}
