package xapi_test

import (
	"context"
	"net/http/httptrace"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/xapi"
	"github.com/vmlineage/vmlineage/agent/xapi/xapisim"
)

// stateHandler keeps the live VM table the way a tracer would: replaced at
// each resync, then patched by events.
type stateHandler struct {
	mu      sync.Mutex
	token   string
	vms     map[string]*xapi.Snapshot // ref → record
	reasons []string
}

func (h *stateHandler) Token(context.Context) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.token, nil
}

func (h *stateHandler) Events(_ context.Context, b *xapi.EventBatch) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range b.Events {
		if e.Class != "vm" || h.vms == nil {
			continue
		}
		switch e.Operation {
		case "del":
			delete(h.vms, e.Ref)
		default:
			if e.Snapshot != nil {
				h.vms[e.Ref] = e.Snapshot
			}
		}
	}
	h.token = b.Token
	return nil
}

func (h *stateHandler) Resync(_ context.Context, snap *xapi.PoolSnapshot, token, reason string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.vms = map[string]*xapi.Snapshot{}
	for ref, s := range snap.Class("VM") {
		h.vms[ref] = s
	}
	h.token = token
	h.reasons = append(h.reasons, reason)
	return nil
}

func (h *stateHandler) has(reason string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.reasons {
		if r == reason {
			return true
		}
	}
	return false
}

// view is "uuid power" per live guest VM, sorted.
func (h *stateHandler) view() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, s := range h.vms {
		if !s.IsControlDomain {
			out = append(out, s.UUID+" "+s.PowerState)
		}
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

func truthView(srv *xapisim.Server) string {
	_, tree := srv.Truth()
	var out []string
	for _, v := range tree {
		if !v.Destroyed {
			out = append(out, v.UUID+" "+v.PowerState)
		}
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

func waitUntil(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAgainstSimulator runs the watcher against xapisim over HTTPS with a
// pinned certificate, through a dropped connection, expired sessions and
// EVENTS_LOST, then plays the threat-model scenario and checks the VM table
// the handler ends with is the simulator's ground truth.
func TestAgainstSimulator(t *testing.T) {
	for _, tr := range []string{"xmlrpc", "jsonrpc", "auto"} {
		t.Run(tr, func(t *testing.T) {
			sc, err := xapisim.Builtin("threat-model")
			if err != nil {
				t.Fatal(err)
			}
			srv := xapisim.New(xapisim.Config{Scenario: sc, TLS: true})
			if err := srv.Start(); err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			c, err := xapi.New(xapi.Config{URL: srv.URL(), User: "root", Password: "xapisim",
				Fingerprint: srv.CertFingerprint(), Transport: tr})
			if err != nil {
				t.Fatal(err)
			}
			h := &stateHandler{}
			w := xapi.NewWatcher(c, h, xapi.WatcherConfig{EventTimeout: 5, BackoffBase: 10 * time.Millisecond, BackoffCap: 100 * time.Millisecond})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- w.Run(ctx) }()
			defer func() {
				cancel()
				<-done
			}()
			waitUntil(t, "start resync", 10*time.Second, func() bool { return h.has(xapi.ReasonStart) })
			if got, want := h.view(), truthView(srv); got != want {
				t.Fatalf("initial state\n got %s\nwant %s", got, want)
			}
			srv.DropConnections()
			waitUntil(t, "reconnect resync", 10*time.Second, func() bool { return h.has(xapi.ReasonReconnect) })
			srv.ExpireSessions()
			waitUntil(t, "relogin resync", 10*time.Second, func() bool { return h.has(xapi.ReasonRelogin) })
			srv.InjectEventsLost()
			waitUntil(t, "events_lost resync", 10*time.Second, func() bool { return h.has(xapi.ReasonEventsLost) })

			if err := srv.Play(ctx, nil, 0); err != nil {
				t.Fatal(err)
			}
			want := truthView(srv)
			waitUntil(t, "final state", 10*time.Second, func() bool { return h.view() == want })
			if n := strings.Count(want, "\n") + 1; n < 5 {
				t.Fatalf("scenario left only %d VMs:\n%s", n, want)
			}
			st := w.Stats()
			t.Logf("protocol %s, stats %+v", c.Protocol(), st)
			if st.Events == 0 || st.Resyncs[xapi.ReasonStart] != 1 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

// TestCallsReuseTheConnection: event.from and get_all_records answers are
// read to their end, so the next call goes over the same TLS connection
// instead of a new handshake (which cost the agent more than decoding).
func TestCallsReuseTheConnection(t *testing.T) {
	sc, err := xapisim.Builtin("threat-model")
	if err != nil {
		t.Fatal(err)
	}
	srv := xapisim.New(xapisim.Config{Scenario: sc, TLS: true})
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	c, err := xapi.New(xapi.Config{URL: srv.URL(), User: "root", Password: "xapisim", Fingerprint: srv.CertFingerprint()})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var fresh, reused int
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		mu.Lock()
		defer mu.Unlock()
		if i.Reused {
			reused++
		} else {
			fresh++
		}
	}})
	if err := c.Login(ctx); err != nil {
		t.Fatal(err)
	}
	token := ""
	for i := 0; i < 5; i++ {
		b, err := c.EventFrom(ctx, xapi.Classes, token, 0.01)
		if err != nil {
			t.Fatal(err)
		}
		token = b.Token
		if _, err := c.GetAllRecords(ctx, "VM"); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if fresh != 1 || reused < 10 {
		t.Fatalf("%d new connections, %d reused; want 1 new, every later call reusing it", fresh, reused)
	}
}
