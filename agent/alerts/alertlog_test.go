package alerts

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
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
// one. Rounds 0 and 1 read from the in-memory index, 2 and 3 from the log
// (the index told it covers nothing).
func TestAlertLogCountsEachAlertOnce(t *testing.T) {
	st := alertstest.ThreatModel(t)
	ctx := context.Background()
	var begun atomic.Int64
	for round := 0; round < 4; round++ {
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
	if round >= 2 {
		svc.log.mu.Lock()
		svc.log.idx.from = math.MaxInt64
		svc.log.mu.Unlock()
	}
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

// AlertedVMs gives the same answer from the in-memory index as the log
// holds, for windows it covers and (from the log) for older ones: random
// alerts over a few VMs with repeated times and re-sent ids, an index so
// small it drops its oldest entries many times, restarts in between (the
// index reloaded from the log, re-sent alerts found stored before).
func TestAlertIndexAgreesWithLog(t *testing.T) {
	st := alertstest.ThreatModel(t)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(11, 12))
	vms := []string{"vm-a", "vm-b", "vm-c", "vm-d", "vm-e"}
	type sent struct {
		at  int64
		vms []string
	}
	truth := map[string]sent{} // alert id -> first copy
	paths := map[bool]int{}
	for round := 0; round < 3; round++ {
		adb, err := openAlertDB(ctx, AlertsPath(st.Path()))
		if err != nil {
			t.Fatal(err)
		}
		var q atomic.Int64
		l, err := newAlertLogMax(ctx, adb, slogDiscard(), &q, 40)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 150; i++ {
			id := fmt.Sprintf("a%d", rng.IntN(300)) // some ids come again
			at := alertstest.At(rng.IntN(100)).UnixMilli()
			var named []plugins.AlertVM
			for _, vm := range vms {
				if rng.IntN(3) == 0 {
					named = append(named, plugins.AlertVM{UUID: vm, Field: "cloud.instance.id", Value: vm})
				}
			}
			if first, ok := truth[id]; ok {
				at = first.at // a sensor's retry: the same alert
				named = named[:0]
				for _, vm := range first.vms {
					named = append(named, plugins.AlertVM{UUID: vm, Field: "cloud.instance.id", Value: vm})
				}
			} else {
				var uu []string
				for _, v := range named {
					uu = append(uu, v.UUID)
				}
				truth[id] = sent{at, uu}
			}
			p := l.begin(id, msTime(at))
			l.admit(p)
			l.resolve(p, named)
			l.finish(p, &alertRow{id: id, timeMS: at, received: at, json: "{}", vms: named})
			if i%25 == 0 {
				l.flush()
			}
		}
		l.flush()
		for k := 0; k < 200; k++ {
			s := alertstest.At(rng.IntN(110) - 5)
			u := s.Add(time.Duration(rng.IntN(60)) * time.Second)
			ask := slices.Clone(vms[:1+rng.IntN(len(vms))])
			ask = append(ask, ask[0]) // a repeated uuid counts once
			l.mu.Lock()
			paths[l.idx.covers(s.UnixMilli())]++
			l.mu.Unlock()
			got, err := l.alertedVMs(ctx, ask, s, u)
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]*plugins.AlertedVM{}
			for _, a := range truth {
				if a.at < s.UnixMilli() || a.at > u.UnixMilli() {
					continue
				}
				for _, vm := range a.vms {
					if !slices.Contains(ask, vm) {
						continue
					}
					w := want[vm]
					if w == nil {
						w = &plugins.AlertedVM{UUID: vm, First: msTime(a.at), Last: msTime(a.at)}
						want[vm] = w
					}
					w.Count++
					if msTime(a.at).Before(w.First) {
						w.First = msTime(a.at)
					}
					if msTime(a.at).After(w.Last) {
						w.Last = msTime(a.at)
					}
				}
			}
			if len(got) != len(want) {
				t.Fatalf("round %d: [%v, %v] %v: got %+v, want %d VMs", round, s, u, ask, got, len(want))
			}
			for _, g := range got {
				w := want[g.UUID]
				if w == nil || g.Count != w.Count || !g.First.Equal(w.First) || !g.Last.Equal(w.Last) {
					t.Fatalf("round %d (index covers: %v, from %v): [%v, %v]: got %+v, want %+v", round, l.idx.covers(s.UnixMilli()), l.idx.from, s, u, g, w)
				}
			}
		}
		l.close()
		l.release()
		adb.Close()
	}
	if paths[true] == 0 || paths[false] == 0 {
		t.Fatalf("windows answered from the index %d, from the log %d: both must be tried", paths[true], paths[false])
	}
}

// Alerts another process writes to the same log count in AlertedVMs once
// the writer has looked (after its next commit, or syncEvery when idle),
// and each alert once: this process's own rows are not read back as
// others'.
func TestAlertLogSeesOtherProcess(t *testing.T) {
	st := alertstest.ThreatModel(t)
	ctx := context.Background()
	a, _ := openLogAt(t, AlertsPath(st.Path()))
	b, _ := openLogAt(t, AlertsPath(st.Path()))
	vm := "vm-x"
	at := alertstest.At(50)
	send := func(l *alertLog, id string) {
		named := []plugins.AlertVM{{UUID: vm, Field: "cloud.instance.id", Value: vm}}
		p := l.begin(id, at)
		l.admit(p)
		l.resolve(p, named)
		l.finish(p, &alertRow{id: id, timeMS: at.UnixMilli(), received: at.UnixMilli(), json: "{}", vms: named})
		l.flush()
	}
	count := func(l *alertLog) int64 {
		av, err := l.alertedVMs(ctx, []string{vm}, alertstest.T0, alertstest.At(100))
		if err != nil {
			t.Fatal(err)
		}
		if len(av) == 0 {
			return 0
		}
		return av[0].Count
	}
	send(a, "from-a-1")
	send(b, "from-b-1")
	send(b, "from-b-2")
	send(a, "from-a-2") // a's commit makes it look
	if n := count(a); n != 4 {
		t.Fatalf("a counts %d alerts after its commit, want 4", n)
	}
	send(b, "from-b-3")
	deadline := time.Now().Add(5 * time.Second)
	for count(a) != 5 { // a is idle: it looks every syncEvery
		if time.Now().After(deadline) {
			t.Fatalf("a counts %d alerts, want 5", count(a))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := count(b); n != 5 {
		t.Fatalf("b counts %d alerts, want 5", n)
	}
	send(b, "from-a-1") // b is sent a's alert again: stored once
	if err := a.syncNow(ctx); err != nil {
		t.Fatal(err)
	}
	if na, nb := count(a), count(b); na != 5 || nb != 5 {
		t.Fatalf("after a re-sent alert: a counts %d, b %d, want 5", na, nb)
	}
}

// An alert whose enrichment ends after the log was closed (the agent
// shutting down) is still stored, alone.
func TestAlertLogStoresAlertFinishedAfterClose(t *testing.T) {
	st := alertstest.ThreatModel(t)
	ctx := context.Background()
	adb, err := openAlertDB(ctx, AlertsPath(st.Path()))
	if err != nil {
		t.Fatal(err)
	}
	defer adb.Close()
	var q atomic.Int64
	l, err := newAlertLog(ctx, adb, slogDiscard(), &q)
	if err != nil {
		t.Fatal(err)
	}
	at := alertstest.At(10)
	named := []plugins.AlertVM{{UUID: "vm-late", Field: "cloud.instance.id", Value: "vm-late"}}
	p := l.begin("late", at)
	l.admit(p)
	l.resolve(p, named)
	l.close()
	l.finish(p, &alertRow{id: "late", timeMS: at.UnixMilli(), received: at.UnixMilli(), json: "{}", vms: named})
	l.release()
	var n int
	if err := adb.QueryRow("SELECT COUNT(*) FROM alert_vms WHERE vm_uuid='vm-late'").Scan(&n); err != nil || n != 1 {
		t.Fatalf("%d rows of the late alert (%v), want 1", n, err)
	}
}

func slogDiscard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// A new alert log has alertPageSize pages; one created by an earlier
// version (16 KiB) keeps its pages, its alerts and its use.
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
	odb, err := sql.Open("sqlite", "file:"+old)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := odb.Exec("PRAGMA page_size=16384; PRAGMA journal_mode=WAL;" + alertSchema + "INSERT INTO alerts(id,time_ms,received_ms,matched,json) VALUES('a1',1,1,0,'{}')"); err != nil {
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
	if n := pageSize(db); n != 16384 {
		t.Fatalf("old log: page size %d, want 16384 kept", n)
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

// A commit held up 60 ms (another process holding the log's write lock)
// is remembered as slow.
func TestAlertLogRemembersSlowCommits(t *testing.T) {
	st := alertstest.ThreatModel(t)
	ctx := context.Background()
	svc, err := NewService(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	at := alertstest.At(10)
	store := func(id string) {
		named := []plugins.AlertVM{{UUID: "vm-" + id, Field: "cloud.instance.id", Value: "vm-" + id}}
		p := svc.log.begin(id, at)
		svc.log.admit(p)
		svc.log.resolve(p, named)
		svc.log.finish(p, &alertRow{id: id, timeMS: at.UnixMilli(), received: at.UnixMilli(), json: "{}", vms: named})
		svc.Flush()
	}
	store("first")
	n0 := len(svc.SlowCommits()) // none unless the machine is very slow
	other, err := openAlertDB(ctx, AlertsPath(st.Path()))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	tx, err := other.BeginTx(ctx, nil) // _txlock=immediate: takes the write lock
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec("UPDATE alert_log_state SET gen=gen"); err != nil {
		t.Fatal(err)
	}
	held := time.Now()
	go func() { time.Sleep(60 * time.Millisecond); tx.Rollback() }()
	store("held")
	s := svc.SlowCommits()
	if len(s) != n0+1 || s[n0].Took < 50*time.Millisecond || s[n0].At.Before(held) {
		t.Fatalf("slow commits after one held 60 ms: %v", s)
	}
}
