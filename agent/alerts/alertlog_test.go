package alerts

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/alerts/alertstest"
	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/plugins"
)

// Alerts written in batches while being read: every read counts each
// alert begun before it exactly once, whichever side of a commit it falls
// (reads take no lock against commits: the batch number stored with each
// commit says which overlay entries the rows already hold). A second
// round after a restart checks that batch numbers go on from the stored
// one.
func TestAlertLogCountsEachAlertOnce(t *testing.T) {
	st := alertstest.ThreatModel(t)
	ctx := context.Background()
	var begun atomic.Int64
	for round := 0; round < 2; round++ {
		countEachOnce(t, st, round, &begun)
	}
	var n int64
	adb, err := openAlertDB(ctx, AlertsPath(st.Path()))
	if err != nil {
		t.Fatal(err)
	}
	defer adb.Close()
	if err := adb.QueryRow("SELECT COUNT(*) FROM alert_vms").Scan(&n); err != nil || n != begun.Load() {
		t.Fatalf("%d rows stored for %d alerts (%v)", n, begun.Load(), err)
	}
}

func countEachOnce(t *testing.T, st *lineage.Store, round int, begun *atomic.Int64) {
	svc, err := NewService(context.Background(), st)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	ctx := context.Background()
	vm := alertstest.VMUUID["vm1"]
	at := alertstest.At(600)
	stop := make(chan struct{})
	// starting counts alerts whose begin has been called (begun: returned):
	// a read may see one whose writer has not counted it in begun yet.
	var starting atomic.Int64
	starting.Store(begun.Load())
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("r%d-w%d-%d", round, w, i)
				vms := []plugins.AlertVM{{UUID: vm, Field: "cloud.instance.id", Value: vm}}
				starting.Add(1)
				p := svc.log.begin(id, at)
				svc.log.admit(p)
				svc.log.resolve(p, vms)
				begun.Add(1)
				time.Sleep(time.Duration(i%3) * 100 * time.Microsecond) // "enrichment"
				svc.log.finish(p, &alertRow{id: id, timeMS: at.UnixMilli(), received: at.UnixMilli(), json: "{}", vms: vms})
			}
		}()
	}
	deadline := time.Now().Add(time.Second)
	reads := 0
	for time.Now().Before(deadline) {
		lo := begun.Load() // begun before the read started
		av, err := svc.AlertedVMs(ctx, []string{vm}, at.Add(-time.Hour), at)
		hi := starting.Load() // whose begin started before it ended
		if err != nil {
			t.Fatal(err)
		}
		var got int64
		if len(av) == 1 {
			got = av[0].Count
		}
		if got < lo || got > hi {
			t.Fatalf("read %d counted %d alerts; %d..%d were begun", reads, got, lo, hi)
		}
		reads++
	}
	close(stop)
	wg.Wait()
	t.Logf("round %d: %d reads, %d alerts begun so far", round, reads, begun.Load())
}

// A new alert log has 16 KiB pages; one created by an earlier version
// (4 KiB) keeps its pages, its alerts and its use.
func TestAlertLogPageSize(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	pageSize := func(db *sql.DB) int {
		var n int
		if err := db.QueryRow("PRAGMA page_size").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	db, err := openAlertDB(ctx, filepath.Join(dir, "new.db"))
	if err != nil {
		t.Fatal(err)
	}
	var mode string
	if err := db.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal mode %q %v", mode, err)
	}
	if n := pageSize(db); n != alertPageSize {
		t.Fatalf("new log: page size %d", n)
	}
	db.Close()

	old := filepath.Join(dir, "old.db")
	odb, err := sql.Open("sqlite", "file:"+old+"?_pragma=journal_mode(WAL)")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := odb.Exec(alertSchema + "INSERT INTO alerts(id,time_ms,received_ms,matched,json) VALUES('a1',1,1,0,'{}')"); err != nil {
		t.Fatal(err)
	}
	odb.Close()
	db, err = openAlertDB(ctx, old)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var id string
	if err := db.QueryRow("SELECT id FROM alerts").Scan(&id); err != nil || id != "a1" {
		t.Fatalf("old log's alert: %q %v", id, err)
	}
	if n := pageSize(db); n != 4096 {
		t.Fatalf("old log: page size %d, want 4096 kept", n)
	}
}

// Alerts an earlier version stored inside the lineage store move to the
// alert log once, and still count.
func TestAlertsMoveOutOfTheStore(t *testing.T) {
	st := alertstest.ThreatModel(t)
	ctx := context.Background()
	vm := alertstest.VMUUID["vm2"]
	// The old version's tables (it had no alert_log_state).
	if _, err := st.DB().Exec(alertSchema + "DROP TABLE alert_log_state;"); err != nil {
		t.Fatal(err)
	}
	for i, ms := range []int64{alertstest.At(100).UnixMilli(), alertstest.At(200).UnixMilli()} {
		res, err := st.DB().Exec("INSERT INTO alerts(id,time_ms,received_ms,source,matched,json,enriched) VALUES(?,?,?,?,1,'{}',NULL)", fmt.Sprint("old-", i), ms, ms, "stdin")
		if err != nil {
			t.Fatal(err)
		}
		seq, _ := res.LastInsertId()
		if _, err := st.DB().Exec("INSERT INTO alert_vms(alert_seq,vm_uuid,time_ms,field,value) VALUES(?,?,?,'host.name','vm2')", seq, vm, ms); err != nil {
			t.Fatal(err)
		}
	}
	for round := 0; round < 2; round++ {
		svc, err := NewService(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		av, err := svc.AlertedVMs(ctx, []string{vm}, alertstest.T0, alertstest.At(1000))
		svc.Close()
		if err != nil || len(av) != 1 || av[0].Count != 2 || !av[0].First.Equal(alertstest.At(100)) {
			t.Fatalf("round %d: %+v %v", round, av, err)
		}
		var n int
		if err := st.DB().QueryRow("SELECT COUNT(*) FROM sqlite_master WHERE name IN ('alerts','alert_vms')").Scan(&n); err != nil || n != 0 {
			t.Fatalf("round %d: old tables left: %d %v", round, n, err)
		}
	}
}
