package xapi

import (
	"net/http"
	"sync"
	"testing"
)

// TestReconnectLogsTheOldSessionOut: a dropped connection leaves the
// session valid on the master; the reconnect logs it out, so one stays.
func TestReconnectLogsTheOldSessionOut(t *testing.T) {
	f := newFake()
	var mu sync.Mutex
	drops := 5
	f.hook = func(method string, w http.ResponseWriter, r *http.Request, _ bool) bool {
		mu.Lock()
		defer mu.Unlock()
		if method != "event.from" || drops == 0 {
			return false
		}
		drops--
		if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
			conn.Close()
		}
		return true
	}
	s := newPlain(t, f)
	c := mustClient(t, Config{URL: s.URL, AllowHTTP: true})
	h := &recHandler{}
	w, _ := startWatcher(t, c, h, WatcherConfig{})
	waitFor(t, "all drops", func() bool { mu.Lock(); defer mu.Unlock(); return drops == 0 })
	waitFor(t, "resync per reconnect", func() bool { st := w.Stats(); return st.Reconnects > 0 && st.Resyncs[ReasonReconnect] == st.Reconnects })
	f.mu.Lock()
	live := len(f.sessions)
	f.mu.Unlock()
	t.Logf("logins=%d logouts=%d live=%d", f.count("session.login_with_password"), f.count("session.logout"), live)
	if live != 1 {
		t.Fatalf("%d sessions left open on the master; want 1 (the current)", live)
	}
}
