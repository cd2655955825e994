package plugins_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/plugins"
	"github.com/vmlineage/vmlineage/plugins/plugintest"
)

func TestMain(m *testing.M) { plugintest.Main(m) }

// memLineage is a two-level family: p with children a, b, c.
type memLineage struct{ vms map[string]plugins.VM }

func newMem() *memLineage {
	m := &memLineage{vms: map[string]plugins.VM{}}
	m.vms["p"] = plugins.VM{UUID: "p", Name: "parent"}
	for _, c := range []string{"a", "b", "c"} {
		m.vms[c] = plugins.VM{UUID: c, Name: "vm-" + c, ParentUUID: "p", PowerState: "Running"}
	}
	return m
}

func (m *memLineage) VM(_ context.Context, u string) (plugins.VM, error) {
	v, ok := m.vms[u]
	if !ok {
		return v, plugins.ErrNotFound
	}
	return v, nil
}
func (m *memLineage) Ancestors(_ context.Context, u string) ([]plugins.VM, error) {
	var out []plugins.VM
	for v := m.vms[u]; v.ParentUUID != ""; v = m.vms[v.ParentUUID] {
		out = append(out, m.vms[v.ParentUUID])
	}
	return out, nil
}
func (m *memLineage) Descendants(_ context.Context, u string) ([]plugins.VM, error) {
	var out []plugins.VM
	for _, id := range []string{"a", "b", "c"} {
		if m.vms[id].ParentUUID == u {
			out = append(out, m.vms[id])
		}
	}
	return out, nil
}
func (m *memLineage) Siblings(ctx context.Context, u string) ([]plugins.VM, error) {
	all, _ := m.Descendants(ctx, m.vms[u].ParentUUID)
	var out []plugins.VM
	for _, v := range all {
		if v.UUID != u {
			out = append(out, v)
		}
	}
	return out, nil
}
func (m *memLineage) Family(ctx context.Context, u string) ([]plugins.VM, error) {
	d, _ := m.Descendants(ctx, "p")
	return append([]plugins.VM{m.vms["p"]}, d...), nil
}
func (m *memLineage) StatesAt(_ context.Context, uu []string, _ time.Time) ([]plugins.VMState, error) {
	var out []plugins.VMState
	for _, u := range uu {
		out = append(out, plugins.VMState{UUID: u, PowerState: m.vms[u].PowerState, Existed: true})
	}
	return out, nil
}
func (m *memLineage) Records(context.Context, plugins.RecordQuery) ([]record.Record, error) {
	return nil, nil
}
func (m *memLineage) AlertedVMs(context.Context, []string, time.Time, time.Time) ([]plugins.AlertedVM, error) {
	return nil, nil
}

// eachTransport runs f with Enrich calls on EnrichStream (what detectors
// built with this SDK get) and unary (older detectors, UnaryEnrich): the
// failure handling must not depend on which. with adds the transport's
// setting to a test's own.
func eachTransport(t *testing.T, f func(t *testing.T, with func(func(*plugins.Config)) func(*plugins.Config))) {
	for _, unary := range []bool{false, true} {
		name := "stream"
		if unary {
			name = "unary"
		}
		t.Run(name, func(t *testing.T) {
			f(t, func(tune func(*plugins.Config)) func(*plugins.Config) {
				return func(c *plugins.Config) {
					c.UnaryEnrich = unary
					if tune != nil {
						tune(c)
					}
				}
			})
		})
	}
}

func testDet(name, mode string) plugintest.Detector {
	return plugintest.Detector{Name: name, Pkg: plugintest.TestDetector, Mode: mode}
}

func newManager(t *testing.T, dir string, pins map[string]string, tune func(*plugins.Config)) *plugins.Manager {
	t.Helper()
	cfg := plugins.Config{Dir: dir, Pins: pins, CallTimeout: 400 * time.Millisecond, MinBackoff: 50 * time.Millisecond,
		MaxBackoff: 200 * time.Millisecond, PingInterval: 200 * time.Millisecond, StartTimeout: 20 * time.Second}
	if tune != nil {
		tune(&cfg)
	}
	m, err := plugins.NewManager(cfg, newMem())
	if err != nil {
		t.Fatal(err)
	}
	m.Start(context.Background())
	t.Cleanup(m.Close)
	return m
}

var alert = &plugins.Alert{ID: "x", Time: time.Unix(1700000000, 0), VMs: []plugins.AlertVM{{UUID: "a", Field: "host.name", Value: "vm-a"}}}

func results(rs []plugins.Result) map[string]plugins.Result {
	out := map[string]plugins.Result{}
	for _, r := range rs {
		out[r.Detector] = r
	}
	return out
}

func requireOK(t *testing.T, r plugins.Result) {
	t.Helper()
	if r.Err != nil {
		t.Fatalf("%s: %v", r.Detector, r.Err)
	}
	if r.Enrichment == nil || len(r.Enrichment.Suspects) != 1 || r.Enrichment.Suspects[0].VMUUID != "b" || r.Enrichment.Suspects[0].Detector != r.Detector {
		t.Fatalf("%s: want suspect b through the broker's lineage service, got %+v", r.Detector, r.Enrichment)
	}
}

func status(m *plugins.Manager, name string) plugins.Status {
	for _, s := range m.Status() {
		if s.Name == name {
			return s
		}
	}
	return plugins.Status{}
}

func waitFor(t *testing.T, what string, d time.Duration, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestEnrichThroughPlugin(t *testing.T) {
	dir, pins := plugintest.Setup(t, testDet("ok", "ok"))
	eachTransport(t, func(t *testing.T, with func(func(*plugins.Config)) func(*plugins.Config)) {
		m := newManager(t, dir, pins, with(nil))
		want := "stream"
		if t.Name() == "TestEnrichThroughPlugin/unary" {
			want = "unary"
		}
		if st := status(m, "ok"); st.State != plugins.StateRunning || st.Info.Name != "test-ok" || st.Transport != want {
			t.Fatalf("status %+v, want transport %s", st, want)
		}
		enrichThroughPlugin(t, m)
	})
}

func enrichThroughPlugin(t *testing.T, m *plugins.Manager) {
	requireOK(t, results(m.Enrich(context.Background(), alert))["ok"])
	rs := m.OnRecord(context.Background(), &record.Record{VMUUID: "a", Activity: record.Start, Start: time.Unix(1, 0)})
	if len(rs) != 1 || rs[0].Err != nil || len(rs[0].Findings) != 1 || rs[0].Findings[0].Summary != "saw start" {
		t.Fatalf("OnRecord: %+v", rs)
	}
}

func TestHungDetectorDoesNotStall(t *testing.T) {
	dir, pins := plugintest.Setup(t, testDet("hang", "hang"), testDet("ok", "ok"))
	eachTransport(t, func(t *testing.T, with func(func(*plugins.Config)) func(*plugins.Config)) {
		hungDetector(t, newManager(t, dir, pins, with(nil)))
	})
}

func hungDetector(t *testing.T, m *plugins.Manager) {
	for i := 0; i < 2; i++ {
		start := time.Now()
		rs := results(m.Enrich(context.Background(), alert))
		if el := time.Since(start); el > 2*time.Second {
			t.Fatalf("Enrich took %s with a hung detector", el)
		}
		requireOK(t, rs["ok"])
		if rs["hang"].Err == nil || !strings.Contains(rs["hang"].Err.Error(), "no answer within") {
			t.Fatalf("hang: want a timeout, got %v", rs["hang"].Err)
		}
	}
	// Two timeouts in a row: killed and started again.
	waitFor(t, "restart of the hung detector", 10*time.Second, func() bool {
		st := status(m, "hang")
		return st.Starts >= 2 && st.State == plugins.StateRunning
	})
}

// A detector whose Enrich hangs while its OnRecord answers is restarted
// after HungLimit Enrich time-outs: an OnRecord answer between them says
// nothing of the enrich path.
func TestHungEnrichRestartedDespiteOnRecord(t *testing.T) {
	dir, pins := plugintest.Setup(t, testDet("half", "hangenrich"))
	m := newManager(t, dir, pins, nil) // HungLimit 2
	for i := 0; i < 2; i++ {
		if err := results(m.Enrich(context.Background(), alert))["half"].Err; err == nil || !strings.Contains(err.Error(), "no answer within") {
			t.Fatalf("Enrich %d: want a timeout, got %v", i, err)
		}
		if i == 0 {
			rs := m.OnRecord(context.Background(), &record.Record{VMUUID: "a", Activity: record.Start, Start: time.Unix(1, 0)})
			if len(rs) != 1 || rs[0].Err != nil {
				t.Fatalf("OnRecord: %+v", rs)
			}
		}
	}
	waitFor(t, "restart of the detector whose Enrich hangs", 10*time.Second, func() bool {
		st := status(m, "half")
		return st.Starts >= 2 && st.State == plugins.StateRunning
	})
}

// A call before Start starts the detector; Start then starts no second
// process beside it (one that nothing would ever stop).
func TestStartAfterCallStartsOnce(t *testing.T) {
	dir, pins := plugintest.Setup(t, testDet("ok", "ok"))
	m, err := plugins.NewManager(plugins.Config{Dir: dir, Pins: pins}, newMem())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := results(m.Enrich(context.Background(), alert))["ok"].Err; !errors.Is(err, plugins.ErrDetectorDown) {
		t.Fatalf("before Start: %v", err)
	}
	m.Start(context.Background())
	waitFor(t, "the start", 10*time.Second, func() bool { return status(m, "ok").State == plugins.StateRunning })
	time.Sleep(200 * time.Millisecond)
	if st := status(m, "ok"); st.Starts != 1 {
		t.Fatalf("%d starts, want 1: %+v", st.Starts, st)
	}
}

func TestCrashAndRestart(t *testing.T) {
	dir, pins := plugintest.Setup(t, testDet("crash", "crash"), testDet("ok", "ok"))
	m := newManager(t, dir, pins, func(c *plugins.Config) { c.CrashLoopLimit = 3 })
	rs := results(m.Enrich(context.Background(), alert))
	requireOK(t, rs["ok"])
	if rs["crash"].Err == nil {
		t.Fatal("crash: want an error")
	}
	t.Logf("crash: %v", rs["crash"].Err)
	waitFor(t, "restart after the crash", 10*time.Second, func() bool {
		st := status(m, "crash")
		return st.Starts >= 2 && st.State == plugins.StateRunning
	})
	// Keep crashing it: after CrashLoopLimit starts it is disabled, and
	// alerts still go out through the others.
	waitFor(t, "crash-loop limit", 20*time.Second, func() bool {
		rs := results(m.Enrich(context.Background(), alert))
		requireOK(t, rs["ok"])
		return status(m, "crash").State == plugins.StateDisabled
	})
	rs = results(m.Enrich(context.Background(), alert))
	if !errors.Is(rs["crash"].Err, plugins.ErrDetectorDown) || !strings.Contains(rs["crash"].Err.Error(), "crash loop") {
		t.Fatalf("disabled detector: %v", rs["crash"].Err)
	}
}

func TestKillMidCall(t *testing.T) {
	dir, pins := plugintest.Setup(t, testDet("slow", "slow"), testDet("ok", "ok"))
	eachTransport(t, func(t *testing.T, with func(func(*plugins.Config)) func(*plugins.Config)) {
		killMidCall(t, dir, pins, with)
	})
}

func killMidCall(t *testing.T, dir string, pins map[string]string, with func(func(*plugins.Config)) func(*plugins.Config)) {
	pidDir := t.TempDir()
	t.Setenv("VMLINEAGE_TESTDETECTOR_PIDDIR", pidDir)
	m := newManager(t, dir, pins, with(func(c *plugins.Config) { c.CallTimeout = 5 * time.Second }))
	b, err := os.ReadFile(filepath.Join(pidDir, "slow.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(string(b))
	go func() {
		time.Sleep(300 * time.Millisecond)
		syscall.Kill(pid, syscall.SIGKILL)
	}()
	start := time.Now()
	rs := results(m.Enrich(context.Background(), alert))
	if el := time.Since(start); el > 1500*time.Millisecond {
		t.Fatalf("Enrich waited %s for a killed detector", el)
	}
	requireOK(t, rs["ok"])
	if rs["slow"].Err == nil || !strings.Contains(rs["slow"].Err.Error(), "crashed") {
		t.Fatalf("slow: want crashed, got %v", rs["slow"].Err)
	}
	waitFor(t, "restart of the killed detector", 10*time.Second, func() bool {
		st := status(m, "slow")
		return st.Starts >= 2 && st.State == plugins.StateRunning
	})
	rs = results(m.Enrich(context.Background(), alert))
	requireOK(t, rs["slow"])
}

func TestWrongChecksumRefused(t *testing.T) {
	dir, pins := plugintest.Setup(t, testDet("ok", "ok"), testDet("pinned-wrong", "ok"), testDet("unpinned", "ok"))
	pins["pinned-wrong"] = strings.Repeat("0", 64)
	delete(pins, "unpinned")
	m := newManager(t, dir, pins, nil)
	rs := results(m.Enrich(context.Background(), alert))
	requireOK(t, rs["ok"])
	if err := rs["pinned-wrong"].Err; err == nil || !strings.Contains(err.Error(), "sha256 does not match") {
		t.Fatalf("pinned-wrong: %v", err)
	}
	if st := status(m, "unpinned"); st.State != plugins.StateRefused || !strings.Contains(st.LastError, "no sha256 pinned") {
		t.Fatalf("unpinned: %+v", st)
	}
	if st := status(m, "pinned-wrong"); st.Starts == 0 || st.State == plugins.StateRunning {
		t.Fatalf("pinned-wrong: %+v", st)
	}

	// A binary swapped after it was pinned is refused at its next start.
	b, _ := os.ReadFile(plugintest.Build(t, plugintest.TestDetector, "-X main.mode=crash"))
	if err := os.WriteFile(filepath.Join(dir, ".swap"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, ".swap"), filepath.Join(dir, "ok")); err != nil {
		t.Fatal(err)
	}
	requireOK(t, results(m.Enrich(context.Background(), alert))["ok"]) // still the verified process
	m2 := newManager(t, dir, pins, nil)
	if st := status(m2, "ok"); st.State == plugins.StateRunning || !strings.Contains(st.LastError, "sha256") {
		t.Fatalf("swapped binary: %+v", st)
	}
}

func TestGarbageAndBadAnswers(t *testing.T) {
	dir, pins := plugintest.Setup(t, testDet("garbage", "garbage"), testDet("bad", "badanswer"), testDet("cfg", "configfail"), testDet("ok", "ok"))
	eachTransport(t, func(t *testing.T, with func(func(*plugins.Config)) func(*plugins.Config)) {
		garbageAndBadAnswers(t, newManager(t, dir, pins, with(nil)))
	})
}

func garbageAndBadAnswers(t *testing.T, m *plugins.Manager) {
	rs := results(m.Enrich(context.Background(), alert))
	requireOK(t, rs["ok"])
	if err := rs["garbage"].Err; err == nil {
		t.Fatal("garbage: want an error")
	} else {
		t.Logf("garbage: %v", err)
	}
	if err := rs["bad"].Err; !errors.Is(err, plugins.ErrGarbage) {
		t.Fatalf("bad: want ErrGarbage, got %v", err)
	}
	if err := rs["cfg"].Err; err == nil || !strings.Contains(err.Error(), "refusing to configure") {
		t.Fatalf("cfg: %v", err)
	}
}

func TestSymlinkRefused(t *testing.T) {
	dir, pins := plugintest.Setup(t, testDet("ok", "ok"))
	if err := os.Symlink(filepath.Join(dir, "ok"), filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	pins["link"] = pins["ok"]
	m, err := plugins.NewManager(plugins.Config{Dir: dir, Pins: pins}, newMem())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if st := status(m, "link"); st.State != plugins.StateRefused || !strings.Contains(st.LastError, "symlink") {
		t.Fatalf("%+v", st)
	}
}

// A detector that declares its Needs is asked only when its condition can
// hold and is sent only what it reads; one that declares nothing (test-ok,
// like every detector built before Needs) gets every call and everything.
func TestNeedsSkipAndTrim(t *testing.T) {
	dir, pins := plugintest.Setup(t, testDet("picky", "picky"), testDet("ok", "ok"))
	m := newManager(t, dir, pins, nil)
	at := time.Date(2024, 3, 1, 9, 10, 0, 0, time.UTC)
	p := plugins.VM{UUID: "p", Name: "parent"}
	a := plugins.VM{UUID: "a", Name: "vm-a", ParentUUID: "p"}
	al := &plugins.Alert{ID: "y", Time: at, VMs: []plugins.AlertVM{{UUID: "a", Field: "host.name", Value: "vm-a"}},
		Family: []plugins.VM{p, a}, FamilyStates: []plugins.VMState{{UUID: "p", Existed: true}, {UUID: "a", Existed: true, PowerState: "Running"}},
		Ancestors: []plugins.VM{a, p}, ContextWindow: time.Hour,
		Records: []record.Record{{ID: "r", VMUUID: "a", Activity: record.Start, Start: at.Add(-time.Minute)}}}
	if w := m.Wanted(al); !w.Enrich || !w.AlertFamily || !w.AlertRecords {
		t.Errorf("wanted (test-ok declares nothing: everything): %+v", w)
	}
	rs := results(m.Enrich(context.Background(), al))
	if r := rs["picky"]; r.Skipped != "no ancestor of the alerted VM was destroyed" || r.Enrichment != nil {
		t.Errorf("picky with no destroyed ancestor: %+v", r)
	}
	requireOK(t, rs["ok"])
	// Once the parent is gone, picky is asked, with the ancestors alone.
	al.Family[0].Destroyed, al.Ancestors[1].Destroyed = at.Add(-time.Hour), at.Add(-time.Hour)
	rs = results(m.Enrich(context.Background(), al))
	r := rs["picky"]
	if r.Skipped != "" || r.Err != nil || r.Enrichment == nil || len(r.Enrichment.Notes) != 1 || r.Enrichment.Notes[0] != "family=0 ancestors=2 records=0 window=0s" {
		t.Errorf("picky with a destroyed parent: %+v", r)
	}
	st := m.Stats()
	if st.EnrichSkipped != 1 || st.EnrichCalls != 3 {
		t.Errorf("stats: %+v", st)
	}
	// Records: picky handles none; test-ok every one.
	rr := m.OnRecord(context.Background(), &record.Record{VMUUID: "a", Activity: record.Start, Start: at})
	if len(rr) != 1 || rr[0].Detector != "ok" {
		t.Errorf("OnRecord went to %+v", rr)
	}
}

func TestSkipEnrichConditions(t *testing.T) {
	at := time.Date(2024, 3, 1, 9, 10, 0, 0, time.UTC)
	base := func() *plugins.Alert {
		return &plugins.Alert{Time: at, VMs: []plugins.AlertVM{{UUID: "a"}},
			Ancestors: []plugins.VM{{UUID: "a", ParentUUID: "r"}, {UUID: "r"}},
			Facts: &plugins.AlertFacts{Window: 24 * time.Hour, RecordsOK: true,
				FamilyAlerted: map[string][]plugins.AlertedVM{"r": {{UUID: "a", First: at, Last: at, Count: 1}}}}}
	}
	k2 := plugins.Needs{Enrich: true, EnrichWhen: &plugins.EnrichWhen{Window: 24 * time.Hour, MinFamilyAlerted: 2}}
	if why := k2.SkipEnrich(base()); !strings.Contains(why, "fewer than 2 VMs") {
		t.Errorf("one alerted of k=2: %q", why)
	}
	a := base()
	a.Facts.FamilyAlerted["r"] = append(a.Facts.FamilyAlerted["r"], plugins.AlertedVM{UUID: "b", First: at.Add(-time.Hour), Last: at.Add(-time.Hour), Count: 1})
	if why := k2.SkipEnrich(a); why != "" {
		t.Errorf("two alerted of k=2: %q", why)
	}
	// b alerted 25 h ago: outside a 24 h window.
	a.Facts.FamilyAlerted["r"][1].Last = at.Add(-25 * time.Hour)
	if why := k2.SkipEnrich(a); why == "" {
		t.Error("an alert outside the window counted")
	}
	// A window longer than the host's facts cover: cannot tell, so call.
	k2w := k2
	k2w.EnrichWhen = &plugins.EnrichWhen{Window: 48 * time.Hour, MinFamilyAlerted: 2}
	if why := k2w.SkipEnrich(base()); why != "" {
		t.Errorf("window beyond the facts: %q", why)
	}
	rev := plugins.Needs{Enrich: true, EnrichWhen: &plugins.EnrichWhen{Window: time.Hour, RecordActivities: []record.Activity{record.Revert}}}
	a = base()
	a.Facts.Records = []plugins.RecordFact{{VMUUID: "a", Activity: record.Start, Start: at.Add(-time.Minute)}, {VMUUID: "a", Activity: record.Revert, Start: at.Add(-2 * time.Hour)}}
	if why := rev.SkipEnrich(a); !strings.Contains(why, "no revert") {
		t.Errorf("revert outside the window: %q", why)
	}
	a.Facts.Records[1].Start = at.Add(-time.Minute)
	if why := rev.SkipEnrich(a); why != "" {
		t.Errorf("revert inside the window: %q", why)
	}
	a.Facts.RecordsOK = false
	a.Facts.Records = nil
	if why := rev.SkipEnrich(a); why != "" {
		t.Errorf("records unknown: %q", why)
	}
	// A matched VM the host knows nothing of: call.
	a = base()
	a.Ancestors = nil
	if why := k2.SkipEnrich(a); why != "" {
		t.Errorf("no ancestry: %q", why)
	}
	if why := (&plugins.Needs{}).SkipEnrich(base()); why != "it does not enrich alerts" {
		t.Errorf("no Enrich: %q", why)
	}
}

// TestObserveEveryCall: Config.Observe hears of every call with its
// outcome and duration, and of every call not made (ruled out by Needs,
// or the detector not running), as the agent's metrics count them.
func TestObserveEveryCall(t *testing.T) {
	dir, pins := plugintest.Setup(t, testDet("ok", "ok"), testDet("hang", "hang"), testDet("picky", "picky"), testDet("unpinned", "ok"))
	delete(pins, "unpinned")
	var mu sync.Mutex
	var obs []plugins.Observation
	m := newManager(t, dir, pins, func(c *plugins.Config) {
		c.Observe = func(o plugins.Observation) { mu.Lock(); obs = append(obs, o); mu.Unlock() }
	})
	// Family and ancestry sent, no ancestor destroyed: picky can find
	// nothing and is not asked.
	p, a := plugins.VM{UUID: "p", Name: "parent"}, plugins.VM{UUID: "a", Name: "vm-a", ParentUUID: "p"}
	al := &plugins.Alert{ID: "y", Time: alert.Time, VMs: alert.VMs, Family: []plugins.VM{p, a},
		FamilyStates: []plugins.VMState{{UUID: "p", Existed: true}, {UUID: "a", Existed: true, PowerState: "Running"}}, Ancestors: []plugins.VM{a, p}}
	m.Enrich(context.Background(), al)
	m.OnRecord(context.Background(), &record.Record{VMUUID: "a", Activity: record.Start, Start: time.Unix(1, 0)})
	mu.Lock()
	defer mu.Unlock()
	got := map[string]plugins.Observation{}
	for _, o := range obs {
		k := o.Detector + " " + o.Call
		if _, dup := got[k]; dup {
			t.Errorf("%s observed twice", k)
		}
		got[k] = o
	}
	want := map[string]string{
		"ok enrich": plugins.OutcomeOK, "hang enrich": plugins.OutcomeTimeout, "picky enrich": plugins.OutcomeSkipped, "unpinned enrich": plugins.OutcomeDown,
		"ok on_record": plugins.OutcomeOK, "hang on_record": plugins.OutcomeTimeout, "picky on_record": plugins.OutcomeSkipped, "unpinned on_record": plugins.OutcomeDown,
	}
	for k, outcome := range want {
		o, ok := got[k]
		if !ok || o.Outcome != outcome {
			t.Errorf("%s: observed %+v, want outcome %s", k, o, outcome)
			continue
		}
		called := outcome == plugins.OutcomeOK || outcome == plugins.OutcomeTimeout
		if called != (o.Duration > 0) {
			t.Errorf("%s: duration %s", k, o.Duration)
		}
		if outcome == plugins.OutcomeTimeout && o.Duration < 400*time.Millisecond {
			t.Errorf("%s: a timeout after %s, before CallTimeout", k, o.Duration)
		}
	}
	if len(got) != len(want) {
		t.Errorf("observed %d calls, want %d: %+v", len(got), len(want), obs)
	}
}

// Calls in flight together on one EnrichStream are answered out of order
// (echo waits its alert's ID in milliseconds); each caller must get its
// own answer.
func TestEnrichStreamMatchesReplies(t *testing.T) {
	dir, pins := plugintest.Setup(t, testDet("echo", "echo"))
	m := newManager(t, dir, pins, func(c *plugins.Config) { c.CallTimeout = 10 * time.Second })
	if st := status(m, "echo"); st.Transport != "stream" {
		t.Fatalf("transport %q, want stream", st.Transport)
	}
	const calls = 200
	var wg sync.WaitGroup
	errs := make(chan string, calls)
	for i := calls - 1; i >= 0; i-- { // the slow ones first
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			a := *alert
			a.ID = strconv.Itoa(i % 60)
			if i >= 60 {
				a.ID += "-" + strconv.Itoa(i) // Atoi fails: no wait
			}
			rs := m.Enrich(context.Background(), &a)
			switch {
			case len(rs) != 1 || rs[0].Err != nil || rs[0].Enrichment == nil:
				errs <- fmt.Sprintf("alert %s: %+v", a.ID, rs)
			case len(rs[0].Enrichment.Notes) != 1 || rs[0].Enrichment.Notes[0] != "id "+a.ID:
				errs <- fmt.Sprintf("alert %s got the answer %q", a.ID, rs[0].Enrichment.Notes)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// A stopped detector process (SIGSTOP: its connection open, nothing read
// or answered) holds no call beyond CallTimeout, however many wait to be
// written to it, and is killed and started again after HungLimit
// timeouts, as a hung one is: the old process is gone (a graceful kill
// would wait for good for its answer to the Shutdown RPC).
func TestStoppedDetector(t *testing.T) {
	dir, pins := plugintest.Setup(t, testDet("ok", "ok"))
	eachTransport(t, func(t *testing.T, with func(func(*plugins.Config)) func(*plugins.Config)) {
		pidDir := t.TempDir()
		t.Setenv("VMLINEAGE_TESTDETECTOR_PIDDIR", pidDir)
		m := newManager(t, dir, pins, with(nil))
		requireOK(t, results(m.Enrich(context.Background(), alert))["ok"])
		b, err := os.ReadFile(filepath.Join(pidDir, "ok.pid"))
		if err != nil {
			t.Fatal(err)
		}
		pid, _ := strconv.Atoi(string(b))
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
		// More calls at once than EnrichStream queues, each with a large
		// ECS document, so that writes to the stopped process block.
		big := *alert
		big.ECS = []byte(`{"message":"` + strings.Repeat("x", 64<<10) + `"}`)
		start := time.Now()
		var wg sync.WaitGroup
		var mu sync.Mutex
		outcomes := map[string]int{}
		for i := 0; i < 300; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := results(m.Enrich(context.Background(), &big))["ok"]
				mu.Lock()
				defer mu.Unlock()
				switch {
				case r.Err == nil:
					outcomes["answered"]++
				case strings.Contains(r.Err.Error(), "no answer within"):
					outcomes["timeout"]++
				default:
					outcomes[r.Err.Error()]++
				}
			}()
		}
		wg.Wait()
		if el := time.Since(start); el > 3*time.Second {
			t.Fatalf("300 calls to a stopped detector took %s (CallTimeout 400ms)", el)
		}
		if outcomes["answered"] > 0 || outcomes["timeout"] == 0 {
			t.Fatalf("outcomes %v", outcomes)
		}
		t.Logf("outcomes: %v", outcomes)
		waitFor(t, "restart of the stopped detector", 15*time.Second, func() bool {
			st := status(m, "ok")
			return st.Starts >= 2 && st.State == plugins.StateRunning
		})
		requireOK(t, results(m.Enrich(context.Background(), alert))["ok"])
		waitFor(t, fmt.Sprintf("the stopped process %d to be gone", pid), 5*time.Second, func() bool { return procState(pid) == "" })
	})
}

// Close returns in bounded time with a detector process stopped, and the
// process is gone when it does.
func TestCloseWithStoppedDetector(t *testing.T) {
	dir, pins := plugintest.Setup(t, testDet("ok", "ok"))
	pidDir := t.TempDir()
	t.Setenv("VMLINEAGE_TESTDETECTOR_PIDDIR", pidDir)
	m := newManager(t, dir, pins, nil)
	requireOK(t, results(m.Enrich(context.Background(), alert))["ok"])
	pid := readPid(t, pidDir, "ok")
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	done := make(chan struct{})
	start := time.Now()
	go func() { m.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		syscall.Kill(pid, syscall.SIGKILL) // lets Close return
		<-done
		t.Fatalf("Close did not return within 15s with detector %d stopped", pid)
	}
	t.Logf("Close took %s", time.Since(start))
	if s := procState(pid); s != "" && s != "Z" {
		t.Fatalf("detector %d still there after Close (state %s)", pid, s)
	}
}

// Close during a restart: the start under way is ended, and no detector
// process is left once Close returns (an agent exiting right after Close
// would leave it running: a detector does not notice its host is gone).
func TestCloseDuringRestart(t *testing.T) {
	dir, pins := plugintest.Setup(t, testDet("slowstart", "slowstart"))
	pidDir := t.TempDir()
	t.Setenv("VMLINEAGE_TESTDETECTOR_PIDDIR", pidDir)
	m := newManager(t, dir, pins, nil)
	pid1 := readPid(t, pidDir, "slowstart")
	syscall.Kill(pid1, syscall.SIGKILL)
	var pid2 int
	waitFor(t, "the restart's process", 10*time.Second, func() bool {
		b, _ := os.ReadFile(filepath.Join(pidDir, "slowstart.pid"))
		pid2, _ = strconv.Atoi(string(b))
		return pid2 != pid1 && pid2 != 0
	})
	t.Cleanup(func() { syscall.Kill(pid2, syscall.SIGKILL) })
	if st := status(m, "slowstart"); st.State != plugins.StateStarting {
		t.Fatalf("want the restart under way: %+v", st)
	}
	start := time.Now()
	m.Close()
	t.Logf("Close took %s", time.Since(start))
	if s := procState(pid2); s != "" && s != "Z" {
		t.Fatalf("detector %d, being started, still there after Close (state %s)", pid2, s)
	}
	time.Sleep(3 * time.Second) // the start would be complete by now
	if pid := readPid(t, pidDir, "slowstart"); pid != pid2 {
		syscall.Kill(pid, syscall.SIGKILL)
		t.Fatalf("a detector process %d started after Close", pid)
	}
}

// procState returns the state letter in /proc/<pid>/stat ("" once the
// process is gone).
func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// A slow detector that honours its deadline answers DeadlineExceeded at
// about the moment the host gives up: a timeout on either transport (it
// counts towards HungLimit), not a failure.
func TestSlowDetectorTimesOut(t *testing.T) {
	dir, pins := plugintest.Setup(t, testDet("slow", "slow"))
	eachTransport(t, func(t *testing.T, with func(func(*plugins.Config)) func(*plugins.Config)) {
		m := newManager(t, dir, pins, with(nil))
		for i := 0; i < 2; i++ {
			if err := results(m.Enrich(context.Background(), alert))["slow"].Err; err == nil || !strings.Contains(err.Error(), "no answer within") {
				t.Fatalf("call %d: want a timeout, got %v", i, err)
			}
		}
		waitFor(t, "restart after two timeouts", 10*time.Second, func() bool {
			st := status(m, "slow")
			return st.Starts >= 2 && st.State == plugins.StateRunning
		})
	})
}

// A call or an answer that cannot be encoded (protobuf refuses strings
// that are not UTF-8) fails alone, as a unary call does: the calls in
// flight beside it are answered and the stream stays up.
func TestEnrichStreamBadMessageFailsAlone(t *testing.T) {
	dir, pins := plugintest.Setup(t, testDet("echo", "echo"))
	m := newManager(t, dir, pins, func(c *plugins.Config) { c.CallTimeout = 5 * time.Second })
	for _, bad := range []string{"\xfe-call", "invalid-utf8"} {
		var wg sync.WaitGroup
		good := make([][]plugins.Result, 20)
		for i := range good {
			wg.Add(1)
			go func() {
				defer wg.Done()
				a := *alert
				a.ID = strconv.Itoa(20 + i) // in flight while the bad one fails
				good[i] = m.Enrich(context.Background(), &a)
			}()
		}
		time.Sleep(5 * time.Millisecond)
		a := *alert
		a.ID = bad
		r := results(m.Enrich(context.Background(), &a))["echo"]
		if r.Err == nil || !strings.Contains(r.Err.Error(), "UTF-8") {
			t.Errorf("%q: want an encoding error, got %v %+v", bad, r.Err, r.Enrichment)
		}
		wg.Wait()
		for i, rs := range good {
			if len(rs) != 1 || rs[0].Err != nil || rs[0].Enrichment == nil || rs[0].Enrichment.Notes[0] != "id "+strconv.Itoa(20+i) {
				t.Errorf("%q: the call beside it: %+v", bad, rs)
			}
		}
		if st := status(m, "echo"); st.Starts != 1 || st.Transport != "stream" {
			t.Errorf("%q: %+v, want the first process still running on its stream", bad, st)
		}
	}
}
