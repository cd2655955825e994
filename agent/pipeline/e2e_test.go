package pipeline_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/config"
	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/pipeline"
	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/agent/xapi/xapisim"
)

// harness runs one simulated pool and the agents that trace it.
type harness struct {
	t      testing.TB
	sc     *xapisim.Scenario
	srv    *xapisim.Server
	dir    string
	pwFile string
	url    string
	tls    bool
}

func newHarness(t testing.TB, sc *xapisim.Scenario, tls bool, listen string) *harness {
	t.Helper()
	h := &harness{t: t, sc: sc, dir: t.TempDir(), tls: tls}
	h.pwFile = filepath.Join(h.dir, "pw")
	if err := os.WriteFile(h.pwFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h.srv = xapisim.New(xapisim.Config{Scenario: sc, TLS: tls, Password: "s3cret", Listen: listen})
	if err := h.srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.srv.Close() })
	h.url = h.srv.URL()
	return h
}

func (h *harness) config() config.Config {
	cfg := config.Default()
	cfg.DataDir = filepath.Join(h.dir, "data")
	cfg.XAPI.URL, cfg.XAPI.PasswordFile = h.url, h.pwFile
	if h.tls {
		cfg.XAPI.Fingerprint = h.srv.CertFingerprint()
	} else {
		cfg.XAPI.AllowHTTP = true
	}
	cfg.XAPI.EventTimeout = config.Duration(2 * time.Second)
	cfg.XAPI.BackoffMax = config.Duration(300 * time.Millisecond)
	return cfg
}

func quietLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startAgent runs an in-process agent until the test ends.
func (h *harness) startAgent(ctx context.Context, cfg config.Config) *pipeline.Agent {
	h.t.Helper()
	a, err := pipeline.New(cfg, pipeline.Options{Logger: quietLogger(h.t), BackoffBase: 20 * time.Millisecond})
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	h.t.Cleanup(func() {
		cancel()
		<-done
		a.Close()
	})
	waitUntil(h.t, ctx, 20*time.Second, "agent baseline", func() bool { return a.Tracer.PoolUUID() != "" })
	// Play only once the agent waits in event.from, or the first operation
	// could run before anyone watched.
	waitUntil(h.t, ctx, 20*time.Second, "agent in event.from", func() bool { return h.srv.Waiting() > 0 })
	return a
}

func waitUntil(t testing.TB, ctx context.Context, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitTraced waits until the store holds a record for every truth record (by
// id, or by VM and activity for a resync record) and then a little longer,
// so that a duplicate would have time to show.
func waitTraced(t *testing.T, st *lineage.Store, truth []record.Record, d time.Duration) []record.Record {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(d)
	for {
		got, err := st.Records(ctx, lineage.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		if missing, _ := match(truth, got); len(missing) == 0 {
			time.Sleep(300 * time.Millisecond)
			got, _ = st.Records(ctx, lineage.Filter{})
			return got
		}
		if time.Now().After(deadline) {
			return got
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// match pairs truth records with stored ones: by id (the same operation gives
// the same id), else — for an operation that began and ended while no agent
// was watching — with a resync record of the same VM and activity.
func match(truth, got []record.Record) (missing []record.Record, extra []record.Record) {
	byID := map[string]int{}
	for i, r := range got {
		byID[r.ID] = i
	}
	used := make([]bool, len(got))
	for _, w := range truth {
		if i, ok := byID[w.ID]; ok && !used[i] {
			used[i] = true
			continue
		}
		found := false
		for i, r := range got {
			if !used[i] && r.Source == record.SourceResync && r.VMUUID == w.VMUUID && r.Activity == w.Activity {
				used[i], found = true, true
				break
			}
		}
		if !found {
			missing = append(missing, w)
		}
	}
	for i, r := range got {
		if !used[i] {
			extra = append(extra, r)
		}
	}
	return missing, extra
}

// compareRecords checks every field the scenario determines, except those
// a record lists as unknown; it returns how many records have unknowns
// (operations event.from's coalescing hid in part).
func compareRecords(t *testing.T, truth, got []record.Record) (degraded int) {
	t.Helper()
	missing, extra := match(truth, got)
	for _, m := range missing {
		t.Errorf("missing record: %s %s of %s (%s) id %s", m.Activity, m.Result, m.VMName, m.VMUUID, m.ID)
	}
	for _, x := range extra {
		t.Errorf("extra (duplicated or invented) record: %+v", x)
	}
	byID := map[string]record.Record{}
	for _, r := range got {
		byID[r.ID] = r
	}
	for _, w := range truth {
		g, ok := byID[w.ID]
		if !ok {
			continue
		}
		// Synchronous tasks complete and vanish between two polls, so their
		// end time, exact result and error text are often not observable;
		// which VM they acted on always is, unless a fault hid it.
		if g.IsUnknown("vm_uuid") || g.IsUnknown("parent_vm_uuid") {
			degraded++
			t.Logf("VM unknown: %s %s of %s: %v", w.Activity, w.ID[:8], w.VMName, g.Unknown)
		}
		diff := func(field string, a, b any) {
			// An inferred result must still be right.
			if g.IsUnknown(field) && field != "result" {
				return
			}
			if fmt.Sprint(a) != fmt.Sprint(b) {
				t.Errorf("%s %s of %s: %s = %v, want %v", w.Activity, w.ID[:8], w.VMName, field, b, a)
			}
		}
		diff("activity", w.Activity, g.Activity)
		diff("vm_uuid", w.VMUUID, g.VMUUID)
		diff("vm_name", w.VMName, g.VMName)
		diff("parent_vm_uuid", w.ParentVMUUID, g.ParentVMUUID)
		diff("result", w.Result, g.Result)
		diff("error", w.Error, g.Error)
		diff("host_uuid", w.HostUUID, g.HostUUID)
		diff("destination_host_uuid", w.DestinationHostUUID, g.DestinationHostUUID)
		diff("task_id", w.TaskID, g.TaskID)
		diff("snapshot_uuid", w.SnapshotUUID, g.SnapshotUUID)
		diff("start", record.FormatTime(w.Start), record.FormatTime(g.Start))
		diff("end", record.FormatTime(w.End), record.FormatTime(g.End))
		diff("task_uuid", w.TaskUUID, g.TaskUUID)
	}
	return degraded
}

func compareTree(t *testing.T, st *lineage.Store, tree []xapisim.TreeVM) {
	t.Helper()
	compareTreeTolerant(t, st, tree, nil)
}

// compareTreeTolerant is compareTree where the VMs in unknownParent (their
// creating record lists the parent unknown: the agent did not see it) may
// have no parent; nothing else is let off.
func compareTreeTolerant(t *testing.T, st *lineage.Store, tree []xapisim.TreeVM, unknownParent map[string]bool) {
	t.Helper()
	vms, err := st.VMs(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]lineage.VM{}
	for _, v := range vms {
		got[v.UUID] = v
	}
	for _, w := range tree {
		g, ok := got[w.UUID]
		if !ok {
			t.Errorf("tree: VM %s (%s) missing", w.Name, w.UUID)
			continue
		}
		parentOK := g.ParentUUID == w.ParentUUID || (g.ParentUUID == "" && unknownParent[w.UUID])
		if unknownParent[w.UUID] && g.ParentUUID == "" && w.ParentUUID != "" {
			t.Logf("tree: VM %s: parent unknown (its creating record says so), want %s", w.Name, w.ParentUUID)
		}
		if g.Name != w.Name || !parentOK || g.Kind != w.Kind || g.IsDestroyed() != w.Destroyed ||
			(!w.Destroyed && g.PowerState != w.PowerState) {
			t.Errorf("tree: VM %s: got name=%s parent=%s kind=%s power=%s destroyed=%v, want %+v",
				w.UUID, g.Name, g.ParentUUID, g.Kind, g.PowerState, g.IsDestroyed(), w)
		}
		delete(got, w.UUID)
	}
	var extra []string
	for u, v := range got {
		extra = append(extra, v.Name+" "+u)
	}
	sort.Strings(extra)
	if len(extra) > 0 {
		t.Errorf("tree: VMs not in the scenario: %s", strings.Join(extra, ", "))
	}
}

func TestScenariosMatchGroundTruth(t *testing.T) {
	for _, name := range xapisim.BuiltinNames() {
		t.Run(name, func(t *testing.T) {
			sc, err := xapisim.Builtin(name)
			if err != nil {
				t.Fatal(err)
			}
			h := newHarness(t, sc, true, "")
			ctx := context.Background()
			a := h.startAgent(ctx, h.config())
			// Speed 0: the simulator runs as fast as the agent follows, so
			// the agent sees every write batch and must get every field.
			// Speed 0: the simulator waits for the agent after each write
			// batch, so nothing is hidden from it and every field must match.
			speed := 0.0
			if name == "faults" {
				speed = 20 // its faults last virtual seconds
			}
			if err := h.srv.Play(ctx, sc, speed); err != nil {
				t.Fatal(err)
			}
			truth, tree := h.srv.Truth()
			got := waitTraced(t, a.Store, truth, 30*time.Second)
			if n := compareRecords(t, truth, got); n > 0 && name != "faults" {
				t.Errorf("%d records have an unknown VM although nothing was hidden from the agent", n)
			}
			compareTree(t, a.Store, tree)
		})
	}
}

// TestFaultsDuringPlay plays every-activity while the simulator injects one
// kind of fault at random moments: the records and tree must still equal the
// ground truth, none lost, none doubled.
func TestFaultsDuringPlay(t *testing.T) {
	faults := map[string]func(*xapisim.Server){
		"session_expiry":   (*xapisim.Server).ExpireSessions,
		"events_lost":      (*xapisim.Server).InjectEventsLost,
		"dropped_conn":     (*xapisim.Server).DropConnections,
		"mixed_all_faults": nil,
	}
	for name, inject := range faults {
		t.Run(name, func(t *testing.T) {
			sc, err := xapisim.Builtin("every-activity")
			if err != nil {
				t.Fatal(err)
			}
			h := newHarness(t, sc, true, "")
			ctx := context.Background()
			a := h.startAgent(ctx, h.config())
			stop := make(chan struct{})
			injected := 0
			go func() {
				all := []func(*xapisim.Server){(*xapisim.Server).ExpireSessions, (*xapisim.Server).InjectEventsLost, (*xapisim.Server).DropConnections}
				tick := time.NewTicker(700 * time.Millisecond)
				defer tick.Stop()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					case <-tick.C:
						f := inject
						if f == nil {
							f = all[i%len(all)]
						}
						f(h.srv)
						injected++
					}
				}
			}()
			err = h.srv.Play(ctx, sc, 30)
			close(stop)
			if err != nil {
				t.Fatal(err)
			}
			truth, tree := h.srv.Truth()
			_, degraded := compareTolerant(t, a.Store, truth)
			compareTree(t, a.Store, tree)
			ws := a.Watcher.Stats()
			t.Logf("%d faults injected; watcher: relogins %d, reconnects %d, resyncs %v; %d of %d records with an unknown VM",
				injected, ws.Relogins, ws.Reconnects, ws.Resyncs, degraded, len(truth))
			if injected < 3 {
				t.Fatalf("only %d faults injected: the scenario ran too fast to test anything", injected)
			}
		})
	}
}

// TestMasterRedirect points the agent at a pool member, which answers every
// call with HOST_IS_SLAVE naming the master, as xapi does.
func TestMasterRedirect(t *testing.T) {
	sc, err := xapisim.Builtin("threat-model")
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, sc, false, "127.0.0.1:0")
	_, port, _ := strings.Cut(strings.TrimPrefix(strings.TrimSuffix(h.url, "/"), "http://"), ":")
	member, err := listenMember("127.0.0.2:"+port, "127.0.0.1")
	if err != nil {
		t.Fatalf("cannot listen on 127.0.0.2:%s for the member: %v", port, err)
	}
	defer member.Close()
	h.url = "http://127.0.0.2:" + port + "/"
	ctx := context.Background()
	a := h.startAgent(ctx, h.config())
	if got := a.Client.MasterURL(); !strings.Contains(got, "127.0.0.1:"+port) {
		t.Errorf("client should have followed the redirect to the master, uses %s", got)
	}
	if err := h.srv.Play(ctx, sc, 30); err != nil {
		t.Fatal(err)
	}
	truth, tree := h.srv.Truth()
	got := waitTraced(t, a.Store, truth, 30*time.Second)
	compareRecords(t, truth, got)
	compareTree(t, a.Store, tree)
	if member.calls.Load() == 0 {
		t.Error("the member was never asked")
	}
}
