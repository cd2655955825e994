package xapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// recHandler records what a Watcher delivers and persists the token as a
// real handler would.
type recHandler struct {
	mu       sync.Mutex
	token    string
	batches  []*EventBatch
	resyncs  []string // reasons
	snaps    []*PoolSnapshot
	failNext error // returned once by Events
	order    []string
}

func (h *recHandler) Token(context.Context) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.token, nil
}

func (h *recHandler) Events(_ context.Context, b *EventBatch) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.failNext; err != nil {
		h.failNext = nil
		return err
	}
	h.batches = append(h.batches, b)
	h.token = b.Token
	h.order = append(h.order, "events")
	return nil
}

func (h *recHandler) Resync(_ context.Context, snap *PoolSnapshot, token, reason string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.resyncs = append(h.resyncs, reason)
	h.snaps = append(h.snaps, snap)
	h.token = token
	h.order = append(h.order, "resync:"+reason)
	return nil
}

func (h *recHandler) reasons() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.resyncs...)
}

func (h *recHandler) snapHas(class, ref string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.snaps {
		if _, ok := s.Class(class)[ref]; ok {
			return true
		}
	}
	return false
}

func (h *recHandler) sawRef(op, ref string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, b := range h.batches {
		for _, e := range b.Events {
			if e.Operation == op && e.Ref == ref {
				return true
			}
		}
	}
	return false
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func startWatcher(t *testing.T, c *Client, h Handler, cfg WatcherConfig) (*Watcher, chan error) {
	t.Helper()
	if cfg.BackoffBase == 0 {
		cfg.BackoffBase, cfg.BackoffCap = 10*time.Millisecond, 100*time.Millisecond
	}
	if cfg.EventTimeout == 0 {
		cfg.EventTimeout = 2
	}
	w := NewWatcher(c, h, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("watcher did not stop")
		}
	})
	return w, done
}

func hasReason(h *recHandler, r string) func() bool {
	return func() bool {
		for _, x := range h.reasons() {
			if x == r {
				return true
			}
		}
		return false
	}
}

func TestWatcherStartFollow(t *testing.T) {
	for _, tr := range []string{"xmlrpc", "jsonrpc"} {
		t.Run(tr, func(t *testing.T) {
			f := newFake()
			f.put("vm", "OpaqueRef:vm-1", vmRecord(1))
			s := newPlain(t, f)
			c := mustClient(t, Config{URL: s.URL, AllowHTTP: true, Transport: tr})
			h := &recHandler{}
			w, _ := startWatcher(t, c, h, WatcherConfig{})
			waitFor(t, "start resync", hasReason(h, ReasonStart))
			h.mu.Lock()
			snap, tok := h.snaps[0], h.token
			h.mu.Unlock()
			if snap.PoolRef != "OpaqueRef:pool-0" || snap.Class("VM")["OpaqueRef:vm-1"] == nil ||
				snap.Class("host")["OpaqueRef:host-0"].Address != "127.0.0.1" || len(snap.Records) != len(Classes) {
				t.Fatalf("snapshot %+v", snap)
			}
			if tok == "" {
				t.Fatal("no injected token")
			}
			// inject strictly before the fetch-all.
			log := strings.Join(f.callLog(), " ")
			if i, j := strings.Index(log, "event.inject"), strings.Index(log, "VM.get_all_records"); i < 0 || j < i {
				t.Fatalf("order: %s", log)
			}
			f.put("vm", "OpaqueRef:vm-2", vmRecord(2))
			waitFor(t, "add event", func() bool { return h.sawRef("add", "OpaqueRef:vm-2") })
			f.del("vm", "OpaqueRef:vm-1")
			waitFor(t, "del event", func() bool { return h.sawRef("del", "OpaqueRef:vm-1") })
			// The injected pool touch shows up as the first mod.
			if !h.sawRef("mod", "OpaqueRef:pool-0") {
				t.Fatal("injected pool mod not seen")
			}
			st := w.Stats()
			if st.Events < 3 || st.Batches < 2 || st.Resyncs[ReasonStart] != 1 || st.Relogins != 0 {
				t.Fatalf("stats %+v", st)
			}
			if f.count("event.from") < 2 {
				t.Fatal("event.from not re-issued")
			}
		})
	}
}

func TestWatcherCatchUp(t *testing.T) {
	f := newFake()
	f.put("task", "OpaqueRef:task-1", taskRecord(1, TaskPending))
	f.mu.Lock()
	old := tokenOf(f.gen)
	f.mu.Unlock()
	// While the agent was down the task finished.
	f.put("task", "OpaqueRef:task-1", taskRecord(1, TaskSuccess))
	s := newPlain(t, f)
	c := mustClient(t, Config{URL: s.URL, AllowHTTP: true})
	h := &recHandler{token: old}
	startWatcher(t, c, h, WatcherConfig{})
	waitFor(t, "start resync", hasReason(h, ReasonStart))
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.order) < 2 || h.order[0] != "events" || h.order[1] != "resync:start" {
		t.Fatalf("order %v", h.order)
	}
	e := h.batches[0].Events
	if len(e) != 1 || e[0].Ref != "OpaqueRef:task-1" || e[0].Snapshot.Status != TaskSuccess {
		t.Fatalf("catch-up %+v", h.batches[0])
	}
}

func TestWatcherCatchUpBadToken(t *testing.T) {
	f := newFake()
	s := newPlain(t, f)
	c := mustClient(t, Config{URL: s.URL, AllowHTTP: true})
	h := &recHandler{token: "garbage"}
	startWatcher(t, c, h, WatcherConfig{})
	waitFor(t, "start resync", hasReason(h, ReasonStart))
}

func TestWatcherSessionInvalid(t *testing.T) {
	f := newFake()
	s := newPlain(t, f)
	c := mustClient(t, Config{URL: s.URL, AllowHTTP: true})
	h := &recHandler{}
	w, _ := startWatcher(t, c, h, WatcherConfig{})
	waitFor(t, "start resync", hasReason(h, ReasonStart))
	waitFor(t, "event.from outstanding", func() bool { return f.count("event.from") > 0 })
	f.killSessions() // toolstack restart: the blocked event.from fails
	waitFor(t, "relogin resync", hasReason(h, ReasonRelogin))
	st := w.Stats()
	if st.Relogins != 1 || st.Resyncs[ReasonRelogin] != 1 || !strings.Contains(st.LastError, ErrSessionInvalid) {
		t.Fatalf("stats %+v", st)
	}
	if n := f.count("session.login_with_password"); n != 2 {
		t.Fatalf("%d logins", n)
	}
	// And it follows again on the new session.
	f.put("vm", "OpaqueRef:vm-9", vmRecord(9))
	waitFor(t, "event after relogin", func() bool { return h.sawRef("add", "OpaqueRef:vm-9") })
}

func TestWatcherEventsLost(t *testing.T) {
	f := newFake()
	var once sync.Once
	f.hook = func(method string, w http.ResponseWriter, r *http.Request, _ bool) bool {
		hit := false
		if method == "event.from" {
			once.Do(func() {
				hit = true
				w.Header().Set("Content-Type", "text/xml")
				w.Write(xmlFailure(ErrEventsLost))
			})
		}
		return hit
	}
	s := newPlain(t, f)
	c := mustClient(t, Config{URL: s.URL, AllowHTTP: true})
	h := &recHandler{}
	w, _ := startWatcher(t, c, h, WatcherConfig{})
	waitFor(t, "events_lost resync", hasReason(h, ReasonEventsLost))
	if st := w.Stats(); st.Relogins != 0 || st.Reconnects != 0 {
		t.Fatalf("EVENTS_LOST should resync on the same session: %+v", st)
	}
	if n := f.count("session.login_with_password"); n != 1 {
		t.Fatalf("%d logins", n)
	}
}

// dropEventFrom makes the fake drop the connection of its next n
// event.from calls mid-call; the function returned says when all have
// been dropped.
func dropEventFrom(f *fakeXAPI, n int) func() bool {
	var mu sync.Mutex
	f.hook = func(method string, w http.ResponseWriter, r *http.Request, _ bool) bool {
		mu.Lock()
		defer mu.Unlock()
		if method != "event.from" || n == 0 {
			return false
		}
		n--
		if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
			conn.Close() // connection lost mid-call
		}
		return true
	}
	return func() bool { mu.Lock(); defer mu.Unlock(); return n == 0 }
}

func TestWatcherDroppedConnection(t *testing.T) {
	f := newFake()
	dropped := dropEventFrom(f, 3)
	s := newPlain(t, f)
	c := mustClient(t, Config{URL: s.URL, AllowHTTP: true})
	h := &recHandler{}
	w, _ := startWatcher(t, c, h, WatcherConfig{})
	waitFor(t, "all drops", dropped)
	f.put("vm", "OpaqueRef:vm-5", vmRecord(5))
	// The last drop may be the catch-up after a login, so the VM made now
	// may reach the handler in the next reconnect's snapshot rather than
	// as an event; either way it must not be lost.
	waitFor(t, "VM made after the drops", func() bool { return h.sawRef("add", "OpaqueRef:vm-5") || h.snapHas("vm", "OpaqueRef:vm-5") })
	waitFor(t, "resync per reconnect", func() bool { st := w.Stats(); return st.Resyncs[ReasonReconnect] == st.Reconnects })
	st := w.Stats()
	// The catch-up event.from after each login may take one of the drops.
	if st.Reconnects < 2 || st.Resyncs[ReasonReconnect] != st.Reconnects || !strings.Contains(st.LastError, "EOF") {
		t.Fatalf("stats %+v", st)
	}
	// Each reconnect is a new session (the old may be on a dead master).
	if n := f.count("session.login_with_password"); uint64(n) != st.Reconnects+1 {
		t.Fatalf("%d logins for %d reconnects", n, st.Reconnects)
	}
}

func TestWatcherRefcountResync(t *testing.T) {
	f := newFake()
	s := newPlain(t, f)
	c := mustClient(t, Config{URL: s.URL, AllowHTTP: true})
	h := &recHandler{}
	startWatcher(t, c, h, WatcherConfig{})
	waitFor(t, "start resync", hasReason(h, ReasonStart))
	h.mu.Lock()
	h.failNext = fmt.Errorf("task count 3 != 5: %w", ErrResyncNeeded)
	h.mu.Unlock()
	f.put("vm", "OpaqueRef:vm-3", vmRecord(3))
	waitFor(t, "refcount resync", hasReason(h, ReasonRefcount))
}

// reconHandler holds more tasks than the pool once: the watcher re-reads
// the task refs and hands them over, and follows on.
type reconHandler struct {
	recHandler
	stale bool
	got   [][]string
}

func (h *reconHandler) Stale() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stale && len(h.batches) > 0 {
		h.stale = false
		return []string{"task"}
	}
	return nil
}

func (h *reconHandler) Reconcile(_ context.Context, class string, refs []string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.got = append(h.got, append([]string{class}, refs...))
	return nil
}

func TestWatcherReconcilesDroppedDels(t *testing.T) {
	f := newFake()
	f.put("task", "OpaqueRef:task-1", taskRecord(1, TaskPending))
	s := newPlain(t, f)
	c := mustClient(t, Config{URL: s.URL, AllowHTTP: true})
	h := &reconHandler{stale: true}
	w, _ := startWatcher(t, c, h, WatcherConfig{})
	waitFor(t, "start resync", hasReason(&h.recHandler, ReasonStart))
	f.put("vm", "OpaqueRef:vm-1", vmRecord(1))
	waitFor(t, "task refs re-read", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.got) == 1
	})
	h.mu.Lock()
	got := strings.Join(h.got[0], " ")
	h.mu.Unlock()
	if got != "task OpaqueRef:task-1" {
		t.Fatalf("Reconcile got %q, want the pool's task refs", got)
	}
	if f.count("task.get_all") != 1 || w.Stats().Reconciles != 1 {
		t.Fatalf("task.get_all called %d times, Reconciles %d; want 1", f.count("task.get_all"), w.Stats().Reconciles)
	}
	// Following goes on from the same token.
	f.put("vm", "OpaqueRef:vm-2", vmRecord(2))
	waitFor(t, "next batch", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.batches) >= 2
	})
	if n := len(h.reasons()); n != 1 {
		t.Fatalf("%d resyncs, want only the start one: %v", n, h.reasons())
	}
}

func TestWatcherHandlerErrorRetriesSameBatch(t *testing.T) {
	f := newFake()
	s := newPlain(t, f)
	c := mustClient(t, Config{URL: s.URL, AllowHTTP: true})
	h := &recHandler{}
	startWatcher(t, c, h, WatcherConfig{})
	waitFor(t, "start resync", hasReason(h, ReasonStart))
	waitFor(t, "pool mod", func() bool { return h.sawRef("mod", "OpaqueRef:pool-0") })
	h.mu.Lock()
	h.failNext = errors.New("disk full")
	h.mu.Unlock()
	f.put("vm", "OpaqueRef:vm-4", vmRecord(4))
	// The failed batch is asked for again with the old token, so it is not lost.
	waitFor(t, "redelivered", func() bool { return h.sawRef("add", "OpaqueRef:vm-4") })
	if r := h.reasons(); len(r) != 1 {
		t.Fatalf("handler error should not resync: %v", r)
	}
}

func TestWatcherAuth(t *testing.T) {
	f := newFake()
	s := newPlain(t, f)
	// Fatal (one-shot commands).
	c := mustClient(t, Config{URL: s.URL, AllowHTTP: true, User: "root", Password: "nope"})
	_, done := startWatcher(t, c, &recHandler{}, WatcherConfig{FatalAuth: true})
	select {
	case err := <-done:
		if !IsCode(err, ErrAuthFailed) {
			t.Fatalf("got %v", err)
		}
		done <- err // for the cleanup
	case <-time.After(5 * time.Second):
		t.Fatal("FatalAuth did not stop Run")
	}
	// Not fatal: retried with a capped back-off, never a tight loop.
	f2 := newFake()
	s2 := newPlain(t, f2)
	c = mustClient(t, Config{URL: s2.URL, AllowHTTP: true, User: "root", Password: "nope"})
	w, _ := startWatcher(t, c, &recHandler{}, WatcherConfig{BackoffBase: 50 * time.Millisecond, BackoffCap: 200 * time.Millisecond})
	time.Sleep(time.Second)
	n := f2.count("session.login_with_password")
	// Full jitter over ≤200 ms waits: around 10 tries a second, far from a spin.
	if n < 2 || n > 60 {
		t.Fatalf("%d login attempts in 1 s", n)
	}
	if st := w.Stats(); !strings.Contains(st.LastError, "wrong user name or password") {
		t.Fatalf("last error %q", st.LastError)
	}
}

func TestWatcherMasterDemoted(t *testing.T) {
	a, b := newFake(), newFake()
	b.slaveOf = "127.0.0.1"
	// a (127.0.0.1) is master first; then b (127.0.0.2) takes over.
	aURL, bURL, _, _ := twoHosts(t, a, b, false)
	c := mustClient(t, Config{URL: aURL, AllowHTTP: true})
	h := &recHandler{}
	w, _ := startWatcher(t, c, h, WatcherConfig{})
	waitFor(t, "start resync", hasReason(h, ReasonStart))
	waitFor(t, "event.from outstanding", func() bool { return a.count("event.from") > 0 })
	b.demote("")
	a.demote("127.0.0.2")
	waitFor(t, "reconnect resync", hasReason(h, ReasonReconnect))
	if c.MasterURL() != bURL {
		t.Fatalf("master %s, want %s", c.MasterURL(), bURL)
	}
	if st := w.Stats(); st.Reconnects < 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestBackoffFullJitter(t *testing.T) {
	b := Backoff{Base: 100 * time.Millisecond, Cap: time.Second, rnd: func() float64 { return 0.999999 }}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, w := range want {
		if d := b.Next(); d < w*time.Millisecond*99/100 || d > w*time.Millisecond {
			t.Fatalf("step %d: %v, want just under %v ms", i, d, w)
		}
	}
	b.rnd = func() float64 { return 0 }
	if b.Next() != 0 {
		t.Fatal("full jitter starts at 0")
	}
	b.Reset()
	if b.Attempts() != 0 {
		t.Fatal("reset")
	}
	// Large attempt counts must not overflow.
	b.n = 200
	b.rnd = nil
	if d := b.Next(); d < 0 || d > time.Second {
		t.Fatalf("overflow: %v", d)
	}
}
