package alerts

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/plugins"
)

// openTestLog opens an alert log of its own in a temporary directory.
func openTestLog(t *testing.T) (*alertLog, *sql.DB) {
	t.Helper()
	return openLogAt(t, filepath.Join(t.TempDir(), "alerts.db"))
}

// openLogAt opens the alert log at path (another handle on it when it is
// open already, as a second process would), closed at the test's end.
func openLogAt(t *testing.T, path string) (*alertLog, *sql.DB) {
	t.Helper()
	ctx := context.Background()
	adb, err := openAlertDB(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { adb.Close() })
	var q atomic.Int64
	l, err := newAlertLog(ctx, adb, slogDiscard(), &q)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.close(); l.release() })
	return l, adb
}

// storeAlert passes one alert through the log as the enricher does.
func storeAlert(l *alertLog, id string, at, received time.Time, body string, vms ...string) {
	var named []plugins.AlertVM
	for _, vm := range vms {
		named = append(named, plugins.AlertVM{UUID: vm, Field: "cloud.instance.id", Value: vm})
	}
	p := l.begin(id, at)
	l.admit(p)
	l.resolve(p, named)
	l.finish(p, &alertRow{id: id, timeMS: at.UnixMilli(), received: received.UnixMilli(), json: body, vms: named})
}

func queryInt(t *testing.T, db *sql.DB, q string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := db.QueryRow(q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// checkIndexAgrees compares the in-memory index's counts with the log's
// for each VM over all time.
func checkIndexAgrees(t *testing.T, l *alertLog, vms ...string) {
	t.Helper()
	ctx := context.Background()
	since, until := time.Unix(0, 0), time.Now().Add(time.Hour)
	fromIdx, err := l.alertedVMs(ctx, vms, since, until)
	if err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	saved := l.idx.from
	l.idx.from = math.MaxInt64 // the index covers nothing: read the log
	l.mu.Unlock()
	fromLog, err := l.alertedVMs(ctx, vms, since, until)
	l.mu.Lock()
	l.idx.from = saved
	l.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(fromIdx) != fmt.Sprint(fromLog) {
		t.Fatalf("index says %v, log says %v", fromIdx, fromLog)
	}
}

// Alerts received longer ago than MaxAge go at the next commit, with
// their VM rows, and stop counting; the others stay.
func TestRetentionByAge(t *testing.T) {
	l, db := openTestLog(t)
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	for i := range 100 {
		at := base.Add(time.Duration(i) * time.Second)
		vms := []string{"vm-a"}
		if i%3 == 0 {
			vms = append(vms, "vm-b") // some alerts name two VMs
		}
		storeAlert(l, fmt.Sprintf("old-%d", i), at, at, "{}", vms...)
	}
	l.flush()
	if n := queryInt(t, db, "SELECT COUNT(*) FROM alert_vms"); n != 134 {
		t.Fatalf("%d VM rows stored, want 134", n)
	}
	// Alerts 0..39 were received before the cut, 40..99 after.
	l.setRetention(Retention{MaxAge: time.Since(base.Add(39500 * time.Millisecond))})
	storeAlert(l, "new", time.Now(), time.Now(), "{}", "vm-a")
	l.flush()
	if n := queryInt(t, db, "SELECT COUNT(*) FROM alerts"); n != 61 {
		t.Fatalf("%d alerts kept, want 61 (60 younger than the bound and the new one)", n)
	}
	if n := queryInt(t, db, "SELECT COUNT(*) FROM alerts WHERE id LIKE 'old-%' AND CAST(substr(id, 5) AS INTEGER) < 40"); n != 0 {
		t.Fatalf("%d alerts older than the bound kept", n)
	}
	// 60 kept old ones name vm-a, 20 of them (i%3 == 0, 42..99) vm-b too, and the new one.
	if n := queryInt(t, db, "SELECT COUNT(*) FROM alert_vms"); n != 81 {
		t.Fatalf("%d VM rows kept, want 81", n)
	}
	if n := queryInt(t, db, "SELECT COUNT(*) FROM alert_vms WHERE alert_seq NOT IN (SELECT seq FROM alerts)"); n != 0 {
		t.Fatalf("%d VM rows of deleted alerts kept", n)
	}
	if got := l.pruned.Load(); got != 40 {
		t.Fatalf("pruned %d, want 40", got)
	}
	checkIndexAgrees(t, l, "vm-a", "vm-b")
	av, err := l.alertedVMs(context.Background(), []string{"vm-a", "vm-b"}, base, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(av) != 2 || av[0].UUID != "vm-a" || av[0].Count != 61 || av[1].Count != 20 {
		t.Fatalf("alerted VMs after pruning: %+v, want vm-a 61, vm-b 20", av)
	}
}

// With MaxAlerts the log holds that many alerts after every commit, and
// its file stops growing: the pages of the deleted alerts are reused.
// (Without the bound this log grows sixfold.)
func TestRetentionByCountReusesPages(t *testing.T) {
	l, db := openTestLog(t)
	l.pruneEvery = 0 // at every commit: the bound holds after each
	const bound = 600
	l.setRetention(Retention{MaxAlerts: bound})
	body := `{"message":"` + strings.Repeat("x", 3000) + `"}` // an enriched alert's size
	pages := make([]int64, 6)
	for round := range pages {
		for i := range bound {
			now := time.Now()
			storeAlert(l, fmt.Sprintf("r%d-%d", round, i), now, now, body, fmt.Sprintf("vm-%d", i%50))
			if i%100 == 99 {
				l.flush() // batches of 100
			}
		}
		l.flush()
		if n := queryInt(t, db, "SELECT COUNT(*) FROM alerts"); n != bound {
			t.Fatalf("round %d: %d alerts kept, want %d", round, n, bound)
		}
		if _, err := db.Exec("PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
			t.Fatal(err)
		}
		pages[round] = queryInt(t, db, "PRAGMA page_count")
	}
	t.Logf("pages after each round of %d alerts: %v", bound, pages)
	if pages[5] > pages[1]+pages[1]/10 {
		t.Fatalf("the log grew from %d to %d pages at its bound", pages[1], pages[5])
	}
	if n := queryInt(t, db, "SELECT MIN(seq) FROM alerts"); n != 5*bound+1 {
		t.Fatalf("oldest seq kept %d, want %d (the newest %d)", n, 5*bound+1, bound)
	}
	if n := queryInt(t, db, "SELECT COUNT(*) FROM alert_vms"); n != bound {
		t.Fatalf("%d VM rows kept, want %d", n, bound)
	}
	checkIndexAgrees(t, l, "vm-0", "vm-1", "vm-49")
}

// A bound set on a large log is reached by the idle writer, in
// transactions of pruneChunk alerts; it does not wait for new alerts.
func TestRetentionPrunesBacklogWhenIdle(t *testing.T) {
	l, db := openTestLog(t)
	at := time.Now()
	for i := range 10000 {
		storeAlert(l, fmt.Sprintf("a-%d", i), at, at, "{}", fmt.Sprintf("vm-%d", i%7), "vm-all")
	}
	l.flush()
	l.setRetention(Retention{MaxAlerts: 1000})
	deadline := time.Now().Add(10 * time.Second)
	for queryInt(t, db, "SELECT COUNT(*) FROM alerts") != 1000 {
		if time.Now().After(deadline) {
			t.Fatalf("%d alerts left after 10 s, want 1000", queryInt(t, db, "SELECT COUNT(*) FROM alerts"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	for l.pruned.Load() != 9000 { // the index is trimmed after the commit
		if time.Now().After(deadline) {
			t.Fatalf("pruned %d, want 9000", l.pruned.Load())
		}
		time.Sleep(time.Millisecond)
	}
	if n := queryInt(t, db, "SELECT COUNT(*) FROM alert_vms"); n != 2000 {
		t.Fatalf("%d VM rows kept, want 2000", n)
	}
	if n := queryInt(t, db, "SELECT MIN(CAST(substr(id, 3) AS INTEGER)) FROM alerts"); n != 9000 {
		t.Fatalf("oldest alert kept is a-%d, want a-9000", n)
	}
	l.writeMu.Lock() // the idle writer is done with the index
	l.writeMu.Unlock()
	checkIndexAgrees(t, l, "vm-0", "vm-3", "vm-6", "vm-all")
}

// While alerts come in, the writer prunes once per pruneEvery, not at
// every commit: the log may exceed its bound meanwhile.
func TestRetentionPrunesSeldom(t *testing.T) {
	l, db := openTestLog(t)
	l.writeMu.Lock()
	l.pruneEvery = time.Hour
	l.writeMu.Unlock()
	l.setRetention(Retention{MaxAlerts: 10})
	send := func(prefix string) {
		for i := range 40 {
			storeAlert(l, fmt.Sprintf("%s-%d", prefix, i), time.Now(), time.Now(), "{}", "vm-a")
			if i%10 == 9 {
				l.flush()
			}
		}
	}
	send("a") // the first commit prunes (a new bound), the next three do not
	if n := queryInt(t, db, "SELECT COUNT(*) FROM alerts"); n != 40 {
		t.Fatalf("%d alerts after four commits, want 40 (10 kept by the first, 30 after it)", n)
	}
	l.writeMu.Lock()
	l.lastPrune = time.Now().Add(-2 * time.Hour)
	l.writeMu.Unlock()
	// Due again: the idle writer prunes to 10 before the next alerts
	// (then 50 are left), or the first commit does (then 40).
	send("b")
	if n := queryInt(t, db, "SELECT COUNT(*) FROM alerts"); n != 40 && n != 50 {
		t.Fatalf("%d alerts, want 40 or 50", n)
	}
	if n := queryInt(t, db, "SELECT COUNT(*) FROM alerts WHERE id LIKE 'a-%' AND CAST(substr(id, 3) AS INTEGER) < 30"); n != 0 {
		t.Fatalf("%d alerts of the first round before a-30 kept, want 0", n)
	}
	checkIndexAgrees(t, l, "vm-a")
}

// Without a bound nothing is deleted, however old.
func TestNoRetentionKeepsAll(t *testing.T) {
	l, db := openTestLog(t)
	old := time.Now().AddDate(-5, 0, 0)
	for i := range 50 {
		storeAlert(l, fmt.Sprintf("a-%d", i), old, old, "{}", "vm-a")
	}
	l.flush()
	l.setRetention(Retention{})
	storeAlert(l, "new", time.Now(), time.Now(), "{}", "vm-a")
	l.flush()
	time.Sleep(2 * syncEvery) // an idle pass
	if n := queryInt(t, db, "SELECT COUNT(*) FROM alerts"); n != 51 {
		t.Fatalf("%d alerts kept without a bound, want 51", n)
	}
}

// The cut is found by a binary search over seq: right across gaps in seq,
// at the age boundary, and within limit alerts of the head.
func TestPruneCutAcrossSeqGaps(t *testing.T) {
	l, db := openTestLog(t)
	ctx := context.Background()
	for seq := 1; seq <= 49; seq += 3 { // 1, 4, 7, ... 49: 17 alerts
		if _, err := db.Exec("INSERT INTO alerts(seq,id,time_ms,received_ms,matched,json) VALUES(?,?,?,?,1,'{}')",
			seq, fmt.Sprintf("g-%d", seq), seq*1000, seq*1000); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec("INSERT INTO alert_vms(alert_seq,vm_uuid,time_ms) VALUES(?,'vm-g',?)", seq, seq*1000); err != nil {
			t.Fatal(err)
		}
	}
	r := Retention{MaxAge: time.Hour}
	now := time.UnixMilli(31*1000 + 1).Add(time.Hour) // received before 31.001 s: seqs 1 … 31 (11 alerts)
	for _, c := range []struct {
		limit     int
		deleted   int
		remaining int64 // lowest seq left
	}{
		{limit: 10, deleted: 4, remaining: 13},       // seqs 1, 4, 7, 10 are within 10 of the head
		{limit: pruneMax, deleted: 7, remaining: 34}, // then the rest of the aged run, 13 … 31
		{limit: pruneMax, deleted: 0, remaining: 34}, // nothing left to go
	} {
		l.writeMu.Lock()
		tx, err := l.wconn.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		n, gone, err := l.prune(ctx, tx, r, now, 0, c.limit)
		if err == nil {
			err = tx.Commit()
		}
		l.writeMu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		if n != c.deleted || len(gone) != c.deleted {
			t.Fatalf("limit %d: %d alerts and %d VM rows deleted, want %d", c.limit, n, len(gone), c.deleted)
		}
		if got := queryInt(t, db, "SELECT MIN(seq) FROM alerts"); got != c.remaining {
			t.Fatalf("limit %d: lowest seq left %d, want %d", c.limit, got, c.remaining)
		}
		if got := queryInt(t, db, "SELECT MIN(alert_seq) FROM alert_vms"); got != c.remaining {
			t.Fatalf("limit %d: lowest VM row's seq left %d, want %d", c.limit, got, c.remaining)
		}
	}
}
