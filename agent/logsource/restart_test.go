package logsource_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/logsource"
	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/agent/xensource"
)

// TestOpenTaskSurvivesARestart: a clone (no end marker) is still open in the
// Deriver when the coordinator's log goes on with lines of no task (session
// logins) while the other host's log is silent: those lines wait in the merge
// queue, so the Deriver's clocks do not move and the clone stays open. The
// restart point must stay before the clone's first line however far the
// newest line read is ahead of it: the process is killed before the logs go
// quiet, and the next one must re-read the clone and store it. It used to be
// lost (found by the chaos suite: the last operations of a play, with agents
// killed every few seconds and each login logged on the coordinator).
func TestOpenTaskSurvivesARestart(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Now().UTC().Add(-10 * time.Minute).Truncate(time.Second)
	hosts := map[string]string{"xen1": "11111111-1111-4111-8111-111111111111", "xen2": "22222222-2222-4222-8222-222222222222"}
	clone := xensource.Op{Time: t0, Duration: 3 * time.Second, Host: "xen1", Master: "xen1", Op: "clone",
		TaskRef: "OpaqueRef:0000000a-0001-4001-8000-000000000001", VMUUID: "00000001-0000-4000-8000-000000000001", VMName: "base", NewName: "web-1"}
	start := xensource.Op{Time: t0.Add(5 * time.Second), Duration: 4 * time.Second, Host: "xen2", Master: "xen1", Op: "start",
		TaskRef: "OpaqueRef:0000000b-0002-4002-8000-000000000002", VMUUID: "00000002-0000-4000-8000-000000000002", VMName: "db"}
	var lines []xensource.HostLine
	lines = append(lines, xensource.Render(clone)...)
	lines = append(lines, xensource.Render(start)...)
	logs := filepath.Join(dir, "logs")
	writeHostFiles(t, logs, lines)
	st := openStore(t, dir)
	dcfg := xensource.Config{PoolUUID: "4a0f3b9e-1c2d-4e5f-8a9b-0c1d2e3f4a5b", Hosts: hosts, Master: "xen1", IdleTimeout: 30 * time.Second}
	glob := filepath.Join(logs, "*", "xensource.log")
	ctx := context.Background()
	cloneID := record.TaskShortID(clone.TaskRef)
	stored := func() bool {
		for _, r := range storedRecords(t, st) {
			if r.TaskID == cloneID {
				return true
			}
		}
		return false
	}

	// The first process: never quiet, so only the Deriver's clocks could
	// close the clone.
	e1 := logsource.NewEngine(st, logsource.EngineConfig{Deriver: dcfg, Mode: logsource.Active, Quiet: time.Hour, Log: testLogger(t)})
	tl1, err := logsource.NewTailer(e1, logsource.TailConfig{Glob: glob})
	if err != nil {
		t.Fatal(err)
	}
	if err := tl1.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(logs, "xen1", "xensource.log"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	login := t0.Add(3*time.Minute).Format(time.Stamp) + " xen1 xapi: [ info||94239 HTTPS 127.0.0.1->|session.login_with_password D:eeae659e25af|xapi_session] " +
		"Session.create trackid=ba81467278fb861e9cb5d0a1c2b3d4e5 pool=false uname=root originator=vmlineage is_local_superuser=true auth_user_sid= parent=trackid=9834f5af41c964e225f24279aacc4048\n"
	if _, err := f.WriteString(login); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := tl1.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	if stored() {
		t.Fatal("the clone was stored before the logs went quiet: the test no longer shows what it is about")
	}
	// SIGKILL: the engine's memory is gone, the store keeps what was committed.

	e2 := logsource.NewEngine(st, logsource.EngineConfig{Deriver: dcfg, Mode: logsource.Active, Quiet: 50 * time.Millisecond, Log: testLogger(t)})
	tl2, err := logsource.NewTailer(e2, logsource.TailConfig{Glob: glob})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !stored() {
		if time.Now().After(deadline) {
			t.Fatalf("the clone open at the kill was never stored after the restart (re-read %d lines, %d records derived)",
				e2.Stats().Replayed, e2.Stats().Records)
		}
		if err := tl2.Poll(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(60 * time.Millisecond)
	}
}
