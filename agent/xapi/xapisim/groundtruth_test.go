package xapisim

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/record"
)

func TestGroundTruthThreatModel(t *testing.T) {
	sc, err := Builtin("threat-model")
	if err != nil {
		t.Fatal(err)
	}
	recs, tree := sc.GroundTruth()
	const origin = "0e1e2e3e-0000-4000-8000-00000000000a"
	count := map[record.Activity]int{}
	ids := map[string]bool{}
	for _, r := range recs {
		if err := r.Validate(); err != nil {
			t.Fatal(err)
		}
		if ids[r.ID] {
			t.Fatalf("duplicate id %s", r.ID)
		}
		ids[r.ID] = true
		if r.ID != record.ID(sc.Pool.UUID, r.TaskID, 0) || r.Source != record.SourceXAPI || r.Result != record.Success {
			t.Fatalf("%+v", r)
		}
		count[r.Activity]++
		switch r.Activity {
		case record.Clone:
			if r.ParentVMUUID != origin || r.HostName != "xen1" || r.End.Sub(r.Start) != 3*time.Second {
				t.Fatalf("clone %+v", r)
			}
		case record.Start:
			want := map[string]string{"vm1": "xen1", "vm2": "xen2", "vm3": "xen3", "vm4": "xen2", "vm5": "xen3"}[r.VMName]
			if r.HostName != want || r.ParentVMUUID != origin {
				t.Fatalf("start %+v", r)
			}
		case record.Destroy:
			if r.VMUUID != origin || r.ParentVMUUID != "" {
				t.Fatalf("destroy %+v", r)
			}
		}
	}
	if count[record.Clone] != 5 || count[record.Start] != 5 || count[record.Destroy] != 1 || count[record.Shutdown] != 1 {
		t.Fatalf("activities %v", count)
	}
	if recs[0].Start != time.Date(2024, 3, 1, 9, 0, 10, 0, time.UTC) {
		t.Fatalf("first start %v", recs[0].Start)
	}
	power := map[string]string{}
	for _, v := range tree {
		power[v.Name] = v.PowerState
		if v.Name != "origin" && v.ParentUUID != origin {
			t.Fatalf("%+v", v)
		}
		if v.Destroyed != (v.Name == "origin") {
			t.Fatalf("%+v", v)
		}
	}
	for _, n := range []string{"vm1", "vm2", "vm3", "vm4"} {
		if power[n] != "Running" {
			t.Fatalf("%s is %s", n, power[n])
		}
	}
	if power["vm5"] != "Halted" || len(tree) != 6 {
		t.Fatalf("tree %+v", tree)
	}
	// Deterministic: same ids every time.
	again, _ := sc.GroundTruth()
	for i := range recs {
		if recs[i].ID != again[i].ID || recs[i].TaskUUID != again[i].TaskUUID {
			t.Fatal("ground truth not deterministic")
		}
	}
}

func TestEveryActivityCoversEverything(t *testing.T) {
	sc, err := Builtin("every-activity")
	if err != nil {
		t.Fatal(err)
	}
	recs, tree := sc.GroundTruth()
	seen := map[record.Activity]bool{}
	results := map[record.Result]int{}
	for _, r := range recs {
		if err := r.Validate(); err != nil {
			t.Fatal(err)
		}
		seen[r.Activity] = true
		results[r.Result]++
	}
	for _, a := range record.Activities {
		if !seen[a] {
			t.Errorf("activity %s never happens", a)
		}
	}
	if results[record.Failure] != 3 || results[record.Cancelled] != 1 {
		t.Errorf("results %v", results)
	}
	kinds := map[string]string{}
	for _, v := range tree {
		kinds[v.Name] = v.Kind
	}
	if kinds["web-snap1"] != "snapshot" || kinds["db-copy"] != "template" || kinds["app1"] != "vm" || kinds["debian-12"] != "template" {
		t.Errorf("kinds %v", kinds)
	}
	for _, name := range BuiltinNames() {
		if _, err := Builtin(name); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// watcher is a minimal tracer client: it keeps event.from outstanding,
// survives every fault the simulator injects and remembers the tasks seen.
type watcher struct {
	url    string
	mu     sync.Mutex
	tasks  map[string]string // task ref -> last status
	errors map[string]int
}

func (w *watcher) run(ctx context.Context, t *testing.T) {
	sess, tok := "", ""
	for ctx.Err() == nil {
		if sess == "" {
			body := rawCallNoFail(w.url, "session.login_with_password", "root", "xapisim", "1.0", "watcher")
			v, err := parseResponse(body)
			if body == nil || err != nil {
				w.count("transport")
				time.Sleep(5 * time.Millisecond)
				continue
			}
			m := v.(map[string]any)
			if m["Status"] != "Success" {
				w.count(m["ErrorDescription"].([]any)[0].(string))
				time.Sleep(5 * time.Millisecond)
				continue
			}
			sess, tok = m["Value"].(string), ""
		}
		if debugWatch {
			t.Logf("event.from %s %q", sess, tok)
		}
		body := rawCallNoFail(w.url, "event.from", sess, []any{"vm", "task"}, tok, 0.5)
		v, err := parseResponse(body)
		if body == nil || err != nil {
			w.count("transport")
			continue
		}
		m := v.(map[string]any)
		if m["Status"] != "Success" {
			code := m["ErrorDescription"].([]any)[0].(string)
			w.count(code)
			if code == "SESSION_INVALID" || code == "HOST_IS_SLAVE" {
				sess = ""
			}
			tok = "" // resync
			continue
		}
		evs, nt := batchEvents(m["Value"])
		tok = nt
		w.mu.Lock()
		for _, e := range evs {
			if e.class == "task" && e.snap != nil {
				w.tasks[e.ref] = e.snap["status"].(string)
			}
		}
		w.mu.Unlock()
	}
}

func (w *watcher) count(code string) {
	w.mu.Lock()
	w.errors[code]++
	w.mu.Unlock()
}

// playWatched plays sc with a watcher attached and checks that
// every task of the ground truth was seen live with the same ref.
func playWatched(t *testing.T, sc *Scenario, speed float64, allTasks bool) *watcher {
	s := startServer(t, Config{Scenario: sc})
	w := &watcher{url: s.URL(), tasks: map[string]string{}, errors: map[string]int{}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.run(ctx, t)
	waitBlocked(t, s, 1)
	pctx, pcancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer pcancel()
	if err := s.Play(pctx, sc, speed); err != nil {
		t.Fatal(err)
	}
	recs, _ := sc.GroundTruth()
	live, _ := s.Truth()
	if len(live) != len(recs) {
		t.Fatalf("live run made %d records, ground truth %d", len(live), len(recs))
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	short := map[string]bool{}
	for ref := range w.tasks {
		short[record.TaskShortID(ref)] = true
	}
	for i, r := range recs {
		if live[i].ID != r.ID {
			t.Fatalf("record %d: live id %s, ground truth %s", i, live[i].ID, r.ID)
		}
		if allTasks && r.TaskUUID != "" && !short[r.TaskID] {
			t.Errorf("task %s (%s %s) never seen by the watcher", r.TaskID, r.Operation, r.VMName)
		}
	}
	return w
}

func TestLivePlayMatchesGroundTruth(t *testing.T) {
	for _, name := range []string{"threat-model", "every-activity"} {
		sc, _ := Builtin(name)
		playWatched(t, sc, 0, true)
	}
}

func TestFaultsScenario(t *testing.T) {
	sc, _ := Builtin("faults")
	// Real time matters here: the watcher must live through each fault.
	w := playWatched(t, sc, 30, false)
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, code := range []string{"EVENTS_LOST", "SESSION_INVALID", "HOST_IS_SLAVE", "transport"} {
		if w.errors[code] == 0 {
			t.Errorf("watcher never saw %s (saw %v)", code, w.errors)
		}
	}
	if !strings.Contains(sc.Description, "HOST_IS_SLAVE") {
		t.Fatal("description")
	}
}

var debugWatch = false
