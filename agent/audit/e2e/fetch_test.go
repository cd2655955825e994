package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/audit"
	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/xapi"
	"github.com/vmlineage/vmlineage/agent/xapi/xapisim"
)

// simPool is a played simulator scenario with a member listener per host
// and a logged-in client pinned to the master's certificate.
type simPool struct {
	srv *xapisim.Server
	sc  *xapisim.Scenario
	c   *xapi.Client
}

func newSimPool(t *testing.T, name string, tls bool) *simPool {
	t.Helper()
	sc, err := xapisim.Builtin(name)
	if err != nil {
		t.Fatal(err)
	}
	return newSimPoolFor(t, sc, tls)
}

func newSimPoolFor(t *testing.T, sc *xapisim.Scenario, tls bool) *simPool {
	t.Helper()
	srv := xapisim.New(xapisim.Config{Scenario: sc, TLS: tls, HostListeners: true})
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	cfg := xapi.Config{URL: srv.URL(), User: "root", Password: "xapisim"}
	if tls {
		cfg.Fingerprint = srv.CertFingerprint()
	} else {
		cfg.AllowHTTP = true
	}
	c, err := xapi.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Login(context.Background()); err != nil {
		t.Fatal(err)
	}
	return &simPool{srv: srv, sc: sc, c: c}
}

func (p *simPool) play(t *testing.T) {
	t.Helper()
	if err := p.srv.Play(context.Background(), p.sc, 0); err != nil {
		t.Fatal(err)
	}
}

// fetcher builds a Fetcher on the pool, reaching members through their
// simulator listeners (their scenario addresses are not routable here).
func (p *simPool) fetcher(t *testing.T, mod func(*audit.FetchConfig)) *audit.Fetcher {
	t.Helper()
	cfg := audit.FetchConfig{Client: p.c, PoolUUID: p.srv.PoolUUID(),
		BaseURL: func(h audit.Host) string {
			if h.Master {
				return ""
			}
			return p.srv.HostURL(h.Name)
		}}
	if mod != nil {
		mod(&cfg)
	}
	f, err := audit.NewFetcher(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// collector is a sink that stores batches and their positions in a real
// lineage store, in one transaction, as the agent will.
type collector struct {
	mu    sync.Mutex
	st    *lineage.Store
	lines map[string][]string // host → raw lines in delivery order
	bad   int
	fail  bool
}

func newCollector(t *testing.T, st *lineage.Store) *collector {
	return &collector{st: st, lines: map[string][]string{}}
}

func (c *collector) sink(ctx context.Context, b *audit.Batch) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fail {
		return fmt.Errorf("store unavailable")
	}
	err := c.st.Update(ctx, func(tx *lineage.Tx) error {
		for k, v := range b.State {
			if err := tx.SetAgentState(k, v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, e := range b.Entries {
		if !e.Replayed {
			c.lines[e.HostName] = append(c.lines[e.HostName], e.Line.Raw())
		}
	}
	c.bad += b.Bad
	return nil
}

func openStore(t *testing.T, dir string) *lineage.Store {
	t.Helper()
	st, err := lineage.Open(filepath.Join(dir, "lineage.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// expected is what a host's log holds minus our own polls' lines.
// awaitPollLines waits until the poll lines of session sess are in every
// host's log: xapi (and the simulator) write them after the answer ended,
// so a test that wants them fetched by the next fetcher must wait for them.
func (p *simPool) awaitPollLines(t *testing.T, sess string, hosts ...string) {
	t.Helper()
	track := audit.TrackIDOf(sess)
	deadline := time.Now().Add(10 * time.Second)
	for _, h := range hosts {
		for {
			found := false
			for _, s := range p.srv.AuditLines(h) {
				var l audit.Line
				if audit.Parse(s, &l) == nil && l.Action == "http/get_audit_log" && l.TrackID == track {
					found = true
					break
				}
			}
			if found {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the poll line of session %s never came", h, track)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

func expected(p *simPool, host string, own map[string]bool) []string {
	var out []string
	for _, s := range p.srv.AuditLines(host) {
		var l audit.Line
		if audit.Parse(s, &l) == nil && l.Action == "http/get_audit_log" && own[l.TrackID] {
			continue
		}
		out = append(out, s)
	}
	return out
}

func sameLines(t *testing.T, what string, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d lines, want %d", what, len(got), len(want))
	}
	seen := map[string]int{}
	for _, s := range got {
		seen[s]++
		if seen[s] > 1 {
			t.Errorf("%s: line delivered twice: %.120s", what, s)
		}
	}
	for _, s := range want {
		if seen[s] == 0 {
			t.Errorf("%s: line never delivered: %.120s", what, s)
		}
	}
}

func TestFetchEveryHostOnceAcrossRestarts(t *testing.T) {
	p := newSimPool(t, "insider", true)
	p.play(t)
	dir := t.TempDir()
	st := openStore(t, dir)
	col := newCollector(t, st)
	f := p.fetcher(t, func(c *audit.FetchConfig) { c.State = st })
	if err := f.Poll(context.Background(), col.sink); err != nil {
		t.Fatal(err)
	}
	p.awaitPollLines(t, p.c.Session(), "fin1", "fin2")
	// New lines after the first poll: hand-driven calls on both hosts.
	vm := ""
	if err := p.c.Call(context.Background(), "VM.get_by_uuid", &vm, "fdb00000-0000-4000-8000-000000000003"); err != nil {
		t.Fatal(err)
	}
	var host string
	if err := p.c.Call(context.Background(), "host.get_by_uuid", &host, "d2d2d2d2-0000-4000-8000-000000000002"); err != nil {
		t.Fatal(err)
	}
	if err := p.c.Call(context.Background(), "VM.start_on", nil, vm, host, false, false); err != nil {
		t.Fatal(err)
	}
	// A restart: a new fetcher on the same store, a new session. (The
	// first fetcher's own poll lines, written after its answers ended,
	// come to the second as anybody's.)
	f2 := p.fetcher(t, func(c *audit.FetchConfig) { c.State = st })
	if err := p.c.Login(context.Background()); err != nil {
		t.Fatal(err)
	}
	own := map[string]bool{audit.TrackIDOf(p.c.Session()): true}
	if err := f2.Poll(context.Background(), col.sink); err != nil {
		t.Fatal(err)
	}
	p.awaitPollLines(t, p.c.Session(), "fin1", "fin2")
	if err := f2.Poll(context.Background(), col.sink); err != nil { // nothing new but our poll lines
		t.Fatal(err)
	}
	for _, h := range []string{"fin1", "fin2"} {
		sameLines(t, h, col.lines[h], expected(p, h, own))
	}
	s := f2.Stats()
	if s.Own == 0 || s.Duplicates == 0 || col.bad != 0 {
		t.Errorf("stats %+v bad %d: want own polls dropped and the overlap deduplicated", s, col.bad)
	}
	// The member's copy of the hand-driven start_on is there.
	found := false
	for _, s := range col.lines["fin2"] {
		found = found || strings.Contains(s, "'VM.start_on'")
	}
	if !found {
		t.Error("the member's copy of VM.start_on was not fetched")
	}
}

// TestFetchRewarmAfterRestart: after a restart the Attributor is empty; a
// fetcher with Rewarm hands the recent history again, marked Replayed, so
// records the tracer finishes after the restart still get their actor, and
// no line counts as new twice.
func TestFetchRewarmAfterRestart(t *testing.T) {
	p := newSimPool(t, "insider", false)
	p.play(t)
	st := openStore(t, t.TempDir())
	col := newCollector(t, st)
	f := p.fetcher(t, func(c *audit.FetchConfig) { c.State = st })
	if err := f.Poll(context.Background(), col.sink); err != nil {
		t.Fatal(err)
	}
	p.awaitPollLines(t, p.c.Session(), "fin1", "fin2")
	// The restart: a new session, an empty index.
	if err := p.c.Login(context.Background()); err != nil {
		t.Fatal(err)
	}
	att := audit.NewAttributor(audit.AttributorConfig{})
	f2 := p.fetcher(t, func(c *audit.FetchConfig) { c.State = st; c.Rewarm = time.Hour })
	sink := func(ctx context.Context, b *audit.Batch) error {
		att.Add(b)
		return col.sink(ctx, b)
	}
	if err := f2.Poll(context.Background(), sink); err != nil {
		t.Fatal(err)
	}
	if err := f2.Poll(context.Background(), sink); err != nil {
		t.Fatal(err)
	}
	truth, _ := p.srv.Truth()
	for _, r := range truth {
		r := r
		r.Actor = nil
		if !att.Apply(&r) || r.Actor.Name != truthActor(p, r).Name {
			t.Errorf("%s of %s after the restart: actor %+v", r.Activity, r.VMName, r.Actor)
		}
	}
	s := f2.Stats()
	if s.Replayed == 0 || s.Lines > 4 { // new: the first fetcher's own poll lines (one per host) and ours
		t.Errorf("stats %+v", s)
	}
	own := map[string]bool{audit.TrackIDOf(p.c.Session()): true}
	for _, h := range []string{"fin1", "fin2"} {
		sameLines(t, h, col.lines[h], expected(p, h, own))
	}
}

// TestFetchUnvouchedMemberRefused: under certificate pinning a member is
// reached only with the certificate the master gave for it.
func TestFetchUnvouchedMemberRefused(t *testing.T) {
	p := newSimPool(t, "insider", true)
	p.play(t)
	hosts, err := audit.PoolHosts(context.Background(), p.c)
	if err != nil {
		t.Fatal(err)
	}
	for i := range hosts {
		hosts[i].Ref = "" // no way to ask the pool for the member's certificate
	}
	col := newCollector(t, openStore(t, t.TempDir()))
	f := p.fetcher(t, func(c *audit.FetchConfig) {
		c.Hosts = func(context.Context) ([]audit.Host, error) { return hosts, nil }
	})
	err = f.Poll(context.Background(), col.sink)
	if err == nil || !strings.Contains(err.Error(), "fin2") || !strings.Contains(err.Error(), "fingerprint") {
		t.Fatalf("unpinned member: %v", err)
	}
	if len(col.lines["fin1"]) == 0 || len(col.lines["fin2"]) != 0 {
		t.Errorf("fin1 %d lines, fin2 %d: the master must still be read, the member not", len(col.lines["fin1"]), len(col.lines["fin2"]))
	}
}

// TestFetchOverlapSameMillisecond: lines that arrive after a poll with the
// very stamp of the high-water mark (since is inclusive), or a little
// earlier (written out of order), are delivered, once.
func TestFetchOverlapSameMillisecond(t *testing.T) {
	p := newSimPool(t, "threat-model", false)
	p.play(t)
	st := openStore(t, t.TempDir())
	col := newCollector(t, st)
	f := p.fetcher(t, func(c *audit.FetchConfig) { c.State = st; c.Overlap = 5 * time.Second })
	own := map[string]bool{audit.TrackIDOf(p.c.Session()): true}
	if err := f.Poll(context.Background(), col.sink); err != nil {
		t.Fatal(err)
	}
	// The high-water mark: the latest stamp delivered.
	var hwm time.Time
	for _, s := range col.lines["xen1"] {
		var l audit.Line
		if audit.Parse(s, &l) == nil && l.Time.After(hwm) {
			hwm = l.Time
		}
	}
	mk := func(ts time.Time, task string) string {
		return xapisim.AuditEntry{Host: "xen1", Time: ts, ThreadID: 7, Task: "Async.VM.start R:" + task, TrackID: strings.Repeat("ab", 16),
			SubjectID: "LOCAL_SUPERUSER", Subject: "root", Decision: "ALLOWED", Result: "OK", CallType: "API", Action: "VM.start"}.Line()
	}
	p.srv.AppendAuditLine("xen1", mk(hwm, "aaaaaaaaaaa1"))                     // same millisecond as the mark
	p.srv.AppendAuditLine("xen1", mk(hwm.Add(-3*time.Second), "aaaaaaaaaaa2")) // late, inside the overlap
	p.srv.AppendAuditLine("xen1", mk(hwm.Add(time.Second), "aaaaaaaaaaa3"))
	if err := f.Poll(context.Background(), col.sink); err != nil {
		t.Fatal(err)
	}
	if err := f.Poll(context.Background(), col.sink); err != nil {
		t.Fatal(err)
	}
	sameLines(t, "xen1", col.lines["xen1"], expected(p, "xen1", own))
}

func TestFetchSinkFailureKeepsPosition(t *testing.T) {
	p := newSimPool(t, "threat-model", false)
	p.play(t)
	st := openStore(t, t.TempDir())
	col := newCollector(t, st)
	f := p.fetcher(t, func(c *audit.FetchConfig) { c.State = st; c.BatchLines = 7 })
	col.fail = true
	if err := f.Poll(context.Background(), col.sink); err == nil || !strings.Contains(err.Error(), "store unavailable") {
		t.Fatalf("poll with a failing sink: %v", err)
	}
	col.fail = false
	own := map[string]bool{audit.TrackIDOf(p.c.Session()): true}
	if err := f.Poll(context.Background(), col.sink); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"xen1", "xen2", "xen3"} {
		sameLines(t, h, col.lines[h], expected(p, h, own))
	}
}

// TestFetchAuthErrors: a session xapi no longer knows gets 401, named in
// the error; the next poll after a new login goes on.
func TestFetchAuthErrors(t *testing.T) {
	p := newSimPool(t, "threat-model", false)
	p.play(t)
	col := newCollector(t, openStore(t, t.TempDir()))
	hosts, err := audit.PoolHosts(context.Background(), p.c)
	if err != nil {
		t.Fatal(err)
	}
	f := p.fetcher(t, func(c *audit.FetchConfig) {
		c.Hosts = func(context.Context) ([]audit.Host, error) { return hosts, nil }
	})
	p.srv.ExpireSessions()
	err = f.Poll(context.Background(), col.sink)
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("poll with an expired session: %v", err)
	}
	if err := p.c.Login(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := f.Poll(context.Background(), col.sink); err != nil {
		t.Fatal(err)
	}
	if len(col.lines["xen1"]) == 0 {
		t.Fatal("nothing fetched after the new login")
	}
}

// TestFetchEndlessAnswerBounded: a host that streams without end (or a
// line far over the cap) costs bounded memory; the poll stops at MaxBytes
// and keeps what it read.
func TestFetchEndlessAnswerBounded(t *testing.T) {
	p := newSimPool(t, "threat-model", false)
	p.play(t)
	p.srv.FloodAuditLog("xen2", -1, 1024)
	p.srv.AppendAuditLine("xen3", "Mar  1 09:00:00 xen3 xapi: "+strings.Repeat("y", 200<<10))
	var mu sync.Mutex
	delivered := 0
	sink := func(_ context.Context, b *audit.Batch) error {
		mu.Lock()
		delivered += len(b.Entries)
		mu.Unlock()
		return nil
	}
	const limit = 64 << 20
	f := p.fetcher(t, func(c *audit.FetchConfig) { c.MaxBytes = limit; c.MaxLine = 64 << 10 })
	base := liveHeap()
	// The live heap (marked by a collection), sampled while the answer
	// streams: what the client retains, not the garbage it makes. Not
	// HeapAlloc after runtime.GC: that adds whatever the stream allocated
	// since the collection ended, which on a stalled machine was 36 MiB.
	var peak uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if l := liveHeap(); l > peak {
				peak = l
			}
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	err := f.Poll(context.Background(), sink)
	close(stop)
	<-done
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("over %d bytes", limit)) {
		t.Fatalf("endless answer: %v", err)
	}
	s := f.Stats()
	if s.Overlong != 1 || s.Bytes < limit {
		t.Errorf("stats %+v", s)
	}
	grow := int64(peak) - int64(base)
	t.Logf("streamed %d MiB, %d lines delivered, live heap %d MiB before, peak %+d MiB", s.Bytes>>20, delivered, base>>20, grow>>20)
	if grow > 32<<20 { // retaining the lines would be about twice the stream
		t.Errorf("live heap grew by %d MiB while streaming %d MiB: not bounded", grow>>20, s.Bytes>>20)
	}
}

// liveHeap collects and returns the heap that collection found live.
func liveHeap() uint64 {
	runtime.GC()
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}
