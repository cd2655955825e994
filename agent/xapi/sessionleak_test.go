package xapi

import "testing"

// TestReconnectLogsTheOldSessionOut: a dropped connection leaves the
// session valid on the master; the reconnect logs it out, so one stays.
func TestReconnectLogsTheOldSessionOut(t *testing.T) {
	f := newFake()
	dropped := dropEventFrom(f, 5)
	s := newPlain(t, f)
	c := mustClient(t, Config{URL: s.URL, AllowHTTP: true})
	h := &recHandler{}
	w, _ := startWatcher(t, c, h, WatcherConfig{})
	waitFor(t, "all drops", dropped)
	waitFor(t, "resync per reconnect", func() bool { st := w.Stats(); return st.Reconnects > 0 && st.Resyncs[ReasonReconnect] == st.Reconnects })
	f.mu.Lock()
	live := len(f.sessions)
	f.mu.Unlock()
	t.Logf("logins=%d logouts=%d live=%d", f.count("session.login_with_password"), f.count("session.logout"), live)
	if live != 1 {
		t.Fatalf("%d sessions left open on the master; want 1 (the current)", live)
	}
}
