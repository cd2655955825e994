package alerts

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/alerts/alertstest"
	"github.com/vmlineage/vmlineage/plugins"
)

// alertedCount is the number of alerts of the VMs in [s, u].
func alertedCount(t *testing.T, l *alertLog, vms []string, s, u time.Time) int64 {
	t.Helper()
	av, err := l.alertedVMs(context.Background(), vms, s, u)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, a := range av {
		n += a.Count
	}
	return n
}

// tablePath makes AlertedVMs read the log (and overlay), as for a window
// older than the index holds.
func tablePath(l *alertLog) {
	l.mu.Lock()
	l.idx.from = math.MaxInt64 // as after eviction / a log larger than the index: read the table
	l.mu.Unlock()
}

// Two processes write one log and number their batches from the one
// stored number: A's batch, waiting for the write lock while B has
// committed three, still counts from the overlay. (Numbered from A's own
// count, it was 1 <= B's 3: taken for committed and counted nowhere.)
func TestBatchNumbersRiseAcrossProcesses(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "alerts.db")
	a, _ := openLogAt(t, path)
	b, _ := openLogAt(t, path)
	at := time.Now().Add(-time.Minute)
	for i := range 3 {
		storeAlert(b, fmt.Sprint("b-", i), at, at, "{}", "vm-b")
		b.flush()
	}
	tablePath(a)
	other, err := openAlertDB(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	tx, err := other.BeginTx(ctx, nil) // takes the write lock (a third writer, a checkpoint, ...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec("UPDATE alert_log_state SET gen=gen"); err != nil {
		t.Fatal(err)
	}
	named := []plugins.AlertVM{{UUID: "vm-a", Field: "cloud.instance.id", Value: "vm-a"}}
	p := a.begin("a-1", at)
	a.admit(p)
	a.resolve(p, named)
	a.finish(p, &alertRow{id: "a-1", timeMS: at.UnixMilli(), received: at.UnixMilli(), json: "{}", vms: named})
	signal(a.hurry) // no linger (flush would wait for the commit, which waits for tx)
	// The writer takes the batch and waits for the lock.
	for {
		a.mu.Lock()
		w := a.writing
		a.mu.Unlock()
		if w {
			break
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // into the commit, waiting for the write lock
	n := alertedCount(t, a, []string{"vm-a"}, at.Add(-time.Hour), at.Add(time.Hour))
	tx.Rollback()
	a.flush()
	after := alertedCount(t, a, []string{"vm-a"}, at.Add(-time.Hour), at.Add(time.Hour))
	if n != 1 || after != 1 {
		t.Fatalf("while a's batch waits for the write lock, a counts %d alerts of vm-a (after the commit: %d), want 1", n, after)
	}
}

// An alert re-sent after a restart (its id not in recent) counts once
// from the moment it is matched, before its batch finds the stored copy.
func TestResentAfterRestartCountsOnce(t *testing.T) {
	path, at := logFromAnEarlierRun(t)
	for _, table := range []bool{false, true} {
		l2, _ := openLogAt(t, path)
		if table {
			tablePath(l2)
		}
		named := []plugins.AlertVM{{UUID: "vm-r", Field: "cloud.instance.id", Value: "vm-r"}}
		p := l2.begin("x", at) // the sensor re-sends alert x
		l2.admit(p)
		l2.resolveMatch(context.Background(), p, named)
		during := alertedCount(t, l2, []string{"vm-r"}, at.Add(-time.Hour), at.Add(time.Hour))
		l2.finish(p, &alertRow{id: "x", timeMS: at.UnixMilli(), received: at.UnixMilli(), json: "{}", vms: named})
		l2.flush()
		after := alertedCount(t, l2, []string{"vm-r"}, at.Add(-time.Hour), at.Add(time.Hour))
		l2.close()
		l2.release()
		if during != 1 {
			t.Errorf("table path %v: one alert (x, re-sent) counted %d times before its commit (%d after)", table, during, after)
		}
	}
}

// Once retention has emptied alert_vms, rowids still go on from the
// highest given out (SQLite would start at 1 again, below the writer's
// tailRowid), so sync reads the rows another process writes.
func TestRowidsNotReusedAfterRetentionEmptied(t *testing.T) {
	path := filepath.Join(t.TempDir(), "alerts.db")
	a, adb := openLogAt(t, path)
	old := time.Now().Add(-2 * time.Hour)
	storeAlert(a, "old", old, old, "{}", "vm-1", "vm-2", "vm-3")
	a.flush()
	a.setRetention(Retention{MaxAge: time.Hour})
	deadline := time.Now().Add(5 * time.Second)
	for a.pruned.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("not pruned")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := queryInt(t, adb, "SELECT COUNT(*) FROM alert_vms"); n != 0 {
		t.Fatalf("%d rows left", n)
	}
	b, _ := openLogAt(t, path) // `vmlineage enrich` beside the agent
	now := time.Now()
	storeAlert(b, "fresh", now, now, "{}", "vm-1")
	b.flush()
	t.Logf("b's row got rowid %d; a's tailRowid is %d", queryInt(t, adb, "SELECT MAX(rowid) FROM alert_vms"), a.tailRowid)
	if err := a.syncNow(context.Background()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * syncEvery)
	if n := alertedCount(t, a, []string{"vm-1"}, now.Add(-time.Minute), now.Add(time.Minute)); n != 1 {
		t.Fatalf("a counts %d alerts of vm-1 after b stored one and a synced, want 1", n)
	}
}

// Two copies of one alert share an entry; the first copy's match failed
// (its request's context ended, a store error), the second's found vm-s:
// the index and the stored row agree on vm-s.
func TestSharedEntryStoredAsCounted(t *testing.T) {
	l, _ := openTestLog(t)
	at := time.Now().Add(-time.Minute)
	p1 := l.begin("dup", at)
	p2 := l.begin("dup", at) // re-sent while the first copy is enriched
	if p1 != p2 {
		t.Fatal("not shared")
	}
	l.admit(p1)
	l.resolve(p1, nil) // first copy: matching failed
	named := []plugins.AlertVM{{UUID: "vm-s", Field: "cloud.instance.id", Value: "vm-s"}}
	l.resolve(p2, named) // second copy matched: ignored
	l.finish(p1, &alertRow{id: "dup", timeMS: at.UnixMilli(), received: at.UnixMilli(), json: "{}"})
	l.finish(p2, &alertRow{id: "dup", timeMS: at.UnixMilli(), received: at.UnixMilli(), json: "{}", vms: named})
	l.flush()
	checkIndexAgrees(t, l, "vm-s")
}

// A uuid asked twice counts once on the log path too (overlay entries
// included).
func TestRepeatedUUIDCountsOnceOnLogPath(t *testing.T) {
	l, _ := openTestLog(t)
	tablePath(l)
	at := time.Now().Add(-time.Minute)
	named := []plugins.AlertVM{{UUID: "vm-d", Field: "cloud.instance.id", Value: "vm-d"}}
	p := l.begin("d1", at)
	l.admit(p)
	l.resolve(p, named)
	n := alertedCount(t, l, []string{"vm-d", "vm-d"}, at.Add(-time.Hour), at.Add(time.Hour))
	l.finish(p, &alertRow{id: "d1", timeMS: at.UnixMilli(), received: at.UnixMilli(), json: "{}", vms: named})
	if n != 1 {
		t.Fatalf("one uncommitted alert, vm-d asked twice: counted %d", n)
	}
}

// Re-sent alerts take no seq (a conflicting INSERT would), so the count
// bound, which cuts by seq, keeps MaxAlerts alerts.
func TestCountBoundWithResends(t *testing.T) {
	l, db := openTestLog(t)
	now := time.Now()
	for i := range 10 {
		storeAlert(l, fmt.Sprint("a", i), now, now, "{}", "vm-c")
	}
	l.flush()
	for i := range 5 { // a sensor retries five of them
		storeAlert(l, fmt.Sprint("a", i), now, now, "{}", "vm-c")
		l.flush()
	}
	storeAlert(l, "new", now, now, "{}", "vm-c") // one more alert: 11 in all
	l.flush()
	t.Logf("alerts %d, MAX(seq) %d", queryInt(t, db, "SELECT COUNT(*) FROM alerts"), queryInt(t, db, "SELECT MAX(seq) FROM alerts"))
	l.setRetention(Retention{MaxAlerts: 10})
	time.Sleep(200 * time.Millisecond) // the idle writer prunes at once
	l.flush()
	if n := queryInt(t, db, "SELECT COUNT(*) FROM alerts"); n != 10 {
		t.Fatalf("11 alerts stored, bound 10: %d kept (pruned %d)", n, l.pruned.Load())
	}
}

// alertedCapture stands for the detectors: it keeps the family alerts
// each alert was sent with.
type alertedCapture struct{ alerted []plugins.AlertedVM }

func (c *alertedCapture) Enrich(ctx context.Context, a *plugins.Alert) []plugins.Result {
	if a.Facts != nil {
		for _, xs := range a.Facts.FamilyAlerted {
			c.alerted = append(c.alerted, xs...)
		}
	}
	return nil
}

// Through the Enricher: an alert re-sent after a restart is counted once
// in its own enrichment.
func TestResentAfterRestartOwnEnrichment(t *testing.T) {
	st := alertstest.ThreatModel(t)
	ctx := context.Background()
	line := []byte(alertFor("uuid", "vm1", 0))
	svc1, err := NewService(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := ParseJSON(line, time.Now())
	if _, err := NewEnricher(svc1, nil, nil).Enrich(ctx, a); err != nil {
		t.Fatal(err)
	}
	svc1.Close() // the agent restarts
	svc2, err := NewService(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	defer svc2.Close()
	c := &alertedCapture{}
	a, _ = ParseJSON(line, time.Now()) // the sensor re-sends it
	if _, err := NewEnricher(svc2, c, nil).Enrich(ctx, a); err != nil {
		t.Fatal(err)
	}
	for _, x := range c.alerted {
		if x.UUID == alertstest.VMUUID["vm1"] && x.Count != 1 {
			t.Fatalf("the detectors are told vm1 alerted %d times; one alert (a-vm1) was sent twice", x.Count)
		}
	}
	if len(c.alerted) == 0 {
		t.Fatal("no family facts")
	}
}

// A log made before alert_log_state.vm_rowid gets the column when opened,
// and its rows' rowids go on from the table's highest.
func TestOldLogGetsRowidColumn(t *testing.T) {
	path := filepath.Join(t.TempDir(), "alerts.db")
	old, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	oldSchema := strings.Replace(alertSchema, "gen INTEGER NOT NULL,\n  vm_rowid INTEGER NOT NULL DEFAULT 0", "gen INTEGER NOT NULL", 1)
	if oldSchema == alertSchema {
		t.Fatal("schema text changed: update this test")
	}
	if _, err := old.Exec(oldSchema); err != nil {
		t.Fatal(err)
	}
	if _, err := old.Exec("INSERT INTO alert_vms(rowid,alert_seq,vm_uuid,time_ms) VALUES(7,1,'vm-o',1)"); err != nil {
		t.Fatal(err)
	}
	old.Close()
	l, db := openLogAt(t, path)
	now := time.Now()
	storeAlert(l, "n1", now, now, "{}", "vm-n")
	l.flush()
	if got := queryInt(t, db, "SELECT rowid FROM alert_vms WHERE vm_uuid='vm-n'"); got != 8 {
		t.Fatalf("new row's rowid %d, want 8 (after the old log's highest)", got)
	}
	if got := queryInt(t, db, "SELECT vm_rowid FROM alert_log_state"); got != 8 {
		t.Fatalf("vm_rowid %d, want 8", got)
	}
}

// An alert the log holds from an earlier run, re-sent twice at once after
// a restart: both copies share one entry, and the second copy's match must
// not count what the first found stored.
func TestResentTwiceAfterRestartCountsOnce(t *testing.T) {
	path, at := logFromAnEarlierRun(t)
	for _, table := range []bool{false, true} {
		l2, _ := openLogAt(t, path)
		if table {
			tablePath(l2)
		}
		named := []plugins.AlertVM{{UUID: "vm-r", Field: "cloud.instance.id", Value: "vm-r"}}
		p1, p2 := l2.begin("x", at), l2.begin("x", at)
		if p1 != p2 {
			t.Fatal("the copies do not share an entry")
		}
		var counts []int64
		for _, p := range []*pending{p1, p2} {
			l2.admit(p)
			l2.resolveMatch(context.Background(), p, named)
			counts = append(counts, alertedCount(t, l2, []string{"vm-r"}, at.Add(-time.Hour), at.Add(time.Hour)))
		}
		for _, p := range []*pending{p1, p2} {
			l2.finish(p, &alertRow{id: "x", timeMS: at.UnixMilli(), received: at.UnixMilli(), json: "{}", vms: named})
		}
		l2.flush()
		counts = append(counts, alertedCount(t, l2, []string{"vm-r"}, at.Add(-time.Hour), at.Add(time.Hour)))
		l2.close()
		l2.release()
		if !slices.Equal(counts, []int64{1, 1, 1}) {
			t.Errorf("table path %v: counts after each copy and after the commit %v, want [1 1 1]", table, counts)
		}
	}
}

// logFromAnEarlierRun is an alert log holding alert "x" of vm-r (at the
// time returned), written and closed by an earlier process.
func logFromAnEarlierRun(t *testing.T) (path string, at time.Time) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "alerts.db")
	l, _ := openLogAt(t, path)
	at = time.Now().Add(-time.Minute)
	storeAlert(l, "x", at, at, "{}", "vm-r")
	l.flush()
	l.close()
	l.release()
	return path, at
}
