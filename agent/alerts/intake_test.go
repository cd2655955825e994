package alerts

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseSyslogCEF(t *testing.T) {
	now := time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name, in string
		check    map[string]string // dotted path -> want
		time     time.Time
	}{
		{"rfc5424", `<134>1 2024-03-01T09:11:00.000Z ids1 snort - - - CEF:0|Snort|IDS|2.9|1:2001|ET TROJAN x|8|src=10.1.0.12 dst=198.51.100.7 rt=1709284260000 msg=a\=b c\\d\nline2`,
			map[string]string{"source.ip": "10.1.0.12", "destination.ip": "198.51.100.7", "message": "a=b c\\d\nline2", "rule.name": "ET TROJAN x",
				"rule.id": "1:2001", "observer.vendor": "Snort", "log.syslog.hostname": "ids1", "event.severity": "8"},
			time.UnixMilli(1709284260000).UTC()},
		{"rfc3164 without tag, header time", `<134>Mar  1 09:11:00 av1 CEF:0|Acme\|AV|Scan|1|virus|Virus found|9|dvchost=vm1 dvcmac=02:16:3E:00:00:01 cs1Label=cloud.instance.id cs1=11111111-0000-4000-8000-000000000001`,
			map[string]string{"host.name": "vm1", "host.mac": "02:16:3E:00:00:01", "cloud.instance.id": "11111111-0000-4000-8000-000000000001", "observer.vendor": "Acme|AV",
				"log.syslog.hostname": "av1"},
			time.Time{}},
		{"bare CEF, text rt", `CEF:0|V|P|1|s|n|3|rt=Mar 01 2024 09:11:00 dvc=10.1.0.13 externalId=abc`,
			map[string]string{"host.ip": "10.1.0.13", "event.id": "abc"}, time.Date(2024, 3, 1, 9, 11, 0, 0, time.UTC)},
		{"no time at all", `CEF:0|V|P|1|s|n|3|src=10.1.0.14`, map[string]string{"source.ip": "10.1.0.14"}, now},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a, err := ParseSyslogCEF([]byte(c.in), now)
			if err != nil {
				t.Fatal(err)
			}
			for path, want := range c.check {
				v, ok := lookup(a.Doc, path)
				got := fmt.Sprint(v)
				if l, isList := v.([]any); isList && len(l) == 1 {
					got = fmt.Sprint(l[0])
				}
				if !ok || got != want {
					t.Errorf("%s = %q, want %q", path, got, want)
				}
			}
			if !c.time.IsZero() && !a.Time.Equal(c.time) {
				t.Errorf("time %s, want %s", a.Time, c.time)
			}
			if c.time.IsZero() && a.Time.Month() != time.March {
				t.Errorf("header time not used: %s", a.Time)
			}
			if _, err := json.Marshal(a.Doc); err != nil {
				t.Error(err)
			}
		})
	}
	for _, bad := range []string{"<13>1 - - - - - - hello", "CEF:x|a|b", "CEF:0|V|P|1|s|n|3|rt=yesterday src=1.2.3.4", strings.Repeat("a", MaxAlertBytes+1)} {
		if _, err := ParseSyslogCEF([]byte(bad), now); err == nil {
			t.Errorf("%q: want an error", firstBytes([]byte(bad), 40))
		}
	}
}

// collector is a Handler that enriches without detectors and keeps outputs.
type collector struct {
	mu  sync.Mutex
	e   *Enricher
	out []enriched
}

func (c *collector) handle(ctx context.Context, a *Alert) ([]byte, error) {
	js, err := c.e.Enrich(ctx, a)
	if err == nil {
		var en enriched
		json.Unmarshal(js, &en)
		c.mu.Lock()
		c.out = append(c.out, en)
		c.mu.Unlock()
	}
	return js, err
}

func (c *collector) n() int { c.mu.Lock(); defer c.mu.Unlock(); return len(c.out) }

func newCollector(t *testing.T) *collector {
	return &collector{e: NewEnricher(threatModelService(t), nil, nil)}
}

func TestSyslogListeners(t *testing.T) {
	c := newCollector(t)
	var errMu sync.Mutex
	var errs []string
	l := &SyslogListener{Handle: c.handle, OnError: func(raw []byte, err error) { errMu.Lock(); errs = append(errs, err.Error()); errMu.Unlock() }}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go l.ServeUDP(ctx, pc)
	go l.ServeTCP(ctx, ln)

	msg := func(vm string) string {
		return fmt.Sprintf(`<134>1 2024-03-01T09:20:00Z av1 av - - - CEF:0|Acme|AV|1|v|Virus|9|dvchost=%s rt=1709284800000`, vm)
	}
	u, _ := net.Dial("udp", pc.LocalAddr().String())
	u.Write([]byte(msg("vm1")))
	u.Write([]byte("not cef at all"))
	u.Close()
	tc, _ := net.Dial("tcp", ln.Addr().String())
	m2 := msg("vm2")
	fmt.Fprintf(tc, "%d %s", len(m2), m2)           // octet counting
	fmt.Fprintf(tc, "%s\n%s\n", msg("vm3"), "junk") // LF framing
	fmt.Fprintf(tc, "%d %s", len(msg("vm4")), msg("vm4"))
	tc.Close()
	waitUntil(t, func() bool { return c.n() == 4 })
	seen := map[string]bool{}
	for _, en := range c.out {
		if !en.VMLineage.Matched {
			t.Errorf("unmatched: %+v", en.VMLineage)
			continue
		}
		seen[en.VMLineage.VMs[0].Name] = true
	}
	if len(seen) != 4 {
		t.Fatalf("matched %v", seen)
	}
	waitUntil(t, func() bool { errMu.Lock(); defer errMu.Unlock(); return len(errs) == 2 })
}

// postAlerts POSTs body to the endpoint at url (with the bearer token
// unless empty) and returns the answer and its lines.
func postAlerts(t *testing.T, url, token, body string) (*http.Response, []string) {
	t.Helper()
	req, _ := http.NewRequest("POST", url+"/v1/alerts", strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	return resp, strings.Split(strings.TrimSpace(buf.String()), "\n")
}

func waitUntil(t *testing.T, f func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !f(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
	}
}

func TestHTTPEndpoint(t *testing.T) {
	c := newCollector(t)
	if _, err := HTTPHandler("", c.handle, nil); err == nil {
		t.Fatal("an empty token must be refused")
	}
	h, err := HTTPHandler("s3cret", c.handle, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	post := func(token, body string) (*http.Response, []string) { return postAlerts(t, srv.URL, token, body) }
	if r, _ := post("", alertFor("name", "vm1", 0)); r.StatusCode != 401 || r.Header.Get("WWW-Authenticate") == "" {
		t.Fatalf("no token: %d", r.StatusCode)
	}
	if r, _ := post("wrong", alertFor("name", "vm1", 0)); r.StatusCode != 401 {
		t.Fatalf("wrong token: %d", r.StatusCode)
	}
	r, lines := post("s3cret", alertFor("name", "vm1", 0))
	if r.StatusCode != 200 || len(lines) != 1 || !strings.Contains(lines[0], `"matched":true`) {
		t.Fatalf("single: %d %q", r.StatusCode, lines)
	}
	r, lines = post("s3cret", "["+alertFor("ip", "vm2", 1)+","+alertFor("uuid", "vm3", 2)+`,{"@timestamp":5}]`)
	if r.StatusCode != 200 || len(lines) != 3 || r.Header.Get("X-Vmlineage-Errors") != "1" || !strings.Contains(lines[2], "pipeline_error") {
		t.Fatalf("array: %d %s %q", r.StatusCode, r.Header.Get("X-Vmlineage-Errors"), lines)
	}
	r, lines = post("s3cret", alertFor("mac", "vm4", 3)+"\n{bad\n"+alertFor("name", "vm1", 4)+"\n")
	if r.StatusCode != 200 || len(lines) != 3 || r.Header.Get("X-Vmlineage-Errors") != "1" {
		t.Fatalf("lines: %d %q", r.StatusCode, lines)
	}
	if r, _ := post("s3cret", "hello"); r.StatusCode != 400 {
		t.Fatalf("garbage body: %d", r.StatusCode)
	}
}

// syslogSink is a SyslogListener that records the hosts of the alerts it
// is handed and the errors passed to OnError.
type syslogSink struct {
	mu    sync.Mutex
	hosts []string
	errs  []error
	raws  []string
}

func (s *syslogSink) listener() *SyslogListener {
	return &SyslogListener{
		Handle: func(_ context.Context, a *Alert) ([]byte, error) {
			h, _ := lookupString(a.Doc, "host.name")
			s.mu.Lock()
			s.hosts = append(s.hosts, h)
			s.mu.Unlock()
			return nil, nil
		},
		OnError: func(raw []byte, err error) {
			s.mu.Lock()
			s.errs = append(s.errs, err)
			s.raws = append(s.raws, string(raw))
			s.mu.Unlock()
		},
	}
}

func (s *syslogSink) counts() (int, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.hosts), len(s.errs)
}

// sendTCP serves l over TCP, writes payload on one connection, closes it,
// and waits until l has handled alerts and errors (and a little more, so
// that an extra one would be seen).
func sendTCP(t *testing.T, l *SyslogListener, s *syslogSink, payload string, alerts, errs int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.ServeTCP(ctx, ln); close(done) }()
	defer func() { cancel(); <-done }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, payload)
	c.Close()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if a, e := s.counts(); a >= alerts && e >= errs {
			break
		}
	}
	time.Sleep(50 * time.Millisecond)
}

func cefSyslog(vm string) string {
	return fmt.Sprintf(`<134>1 2024-03-01T09:20:00Z av1 av - - - CEF:0|Acme|AV|1|v|Virus|9|dvchost=%s rt=1709284800000`, vm)
}

// An octet-counted alert over MaxAlertBytes is refused (OnError, so an
// error document) and the alerts after it on the connection are kept.
func TestSyslogTCPOversizedOctetCountedAlertIsRefusedAlone(t *testing.T) {
	var s syslogSink
	big := cefSyslog("vm1") + " msg=" + strings.Repeat("x", MaxAlertBytes)
	good := cefSyslog("vm2")
	sendTCP(t, s.listener(), &s, fmt.Sprintf("%d %s%d %s", len(big), big, len(good), good), 1, 1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.errs) != 1 || !errors.Is(s.errs[0], ErrTooLarge) {
		t.Errorf("want one OnError(ErrTooLarge), got %v", s.errs)
	}
	if len(s.hosts) != 1 || s.hosts[0] != "vm2" {
		t.Errorf("handled %q, want [vm2]", s.hosts)
	}
}

// A PRI-less LF-framed alert that starts with a digit is read as a line,
// not taken for an octet count that closes the connection.
func TestSyslogTCPLineStartingWithDigit(t *testing.T) {
	var s syslogSink
	sendTCP(t, s.listener(), &s, "2024-03-01T09:20:00Z av1 CEF:0|Acme|AV|1|v|Virus|9|dvchost=vm1\n"+cefSyslog("vm2")+"\n", 2, 0)
	s.mu.Lock()
	defer s.mu.Unlock()
	if fmt.Sprint(s.hosts) != "[vm1 vm2]" || len(s.errs) != 0 {
		t.Errorf("handled %q, errors %v; want [vm1 vm2] and none", s.hosts, s.errs)
	}
}

// An octet-counted alert cut short by the connection's close is refused
// (OnError with what came of it), not lost without a trace.
func TestSyslogTCPTruncatedOctetCountedAlertIsRefused(t *testing.T) {
	var s syslogSink
	m := cefSyslog("vm3")
	sendTCP(t, s.listener(), &s, fmt.Sprintf("%d %s%d %s", len(m), m, len(m)+10, m), 1, 1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.hosts) != 1 || len(s.errs) != 1 || !errors.Is(s.errs[0], io.ErrUnexpectedEOF) || s.raws[0] != m {
		t.Errorf("handled %q, errors %v (%q); want [vm3] and one truncation error with the partial alert", s.hosts, s.errs, s.raws)
	}
}

// The auth scheme is case-insensitive (RFC 7235 §2.1); the token is not.
func TestHTTPBearerSchemeCaseInsensitive(t *testing.T) {
	h, _ := HTTPHandler("s3cret", func(context.Context, *Alert) ([]byte, error) { return []byte("{}"), nil }, nil)
	srv := httptest.NewServer(h)
	defer srv.Close()
	for auth, want := range map[string]int{"bearer s3cret": 200, "BEARER s3cret": 200, "Bearer  s3cret": 200,
		"bearer S3CRET": 401, "Basic s3cret": 401, "Bearers3cret": 401, "s3cret": 401} {
		req, _ := http.NewRequest("POST", srv.URL+"/v1/alerts", strings.NewReader(`{"a":1}`))
		req.Header.Set("Authorization", auth)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("Authorization: %s: status %d, want %d", auth, resp.StatusCode, want)
		}
	}
}

// TestHTTPErrorDocsReachTheOutputs: through the agent's and `alerts serve`'s
// handler an item that is not an alert gets an error document in the HTTP
// answer and, as a syslog one does, in the outputs (onError).
func TestHTTPErrorDocsReachTheOutputs(t *testing.T) {
	e := NewEnricher(threatModelService(t), nil, nil)
	o := NewOrdered(e, 0)
	defer o.Close()
	var mu sync.Mutex
	var emitted []string
	emit := func(doc []byte) { mu.Lock(); emitted = append(emitted, string(doc)); mu.Unlock() }
	onErr := func(raw []byte, err error) { emit(ErrorDoc(raw, err, time.Now())) }
	h, err := HTTPHandlerOrderedErrors("s3cret", o, emit, onErr, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	r, lines := postAlerts(t, srv.URL, "s3cret", alertFor("name", "vm1", 0)+"\n{bad\n")
	mu.Lock()
	defer mu.Unlock()
	if r.Header.Get("X-Vmlineage-Errors") != "1" || len(lines) != 2 || len(emitted) != 2 {
		t.Fatalf("status %d, X-Vmlineage-Errors %q, %d answer lines, %d emitted; want 1 error, 2 and 2", r.StatusCode, r.Header.Get("X-Vmlineage-Errors"), len(lines), len(emitted))
	}
	if !strings.Contains(emitted[1], `"vmlineage"`) || !strings.Contains(emitted[1], "{bad") {
		t.Errorf("second document emitted is not the error document of {bad: %s", emitted[1])
	}
}

// TestShutdownHTTPWaitsForRequests: a request under way when the intake
// stops is answered (its alert enriched and emitted) before ShutdownHTTP
// returns, so the enricher can stop after it.
func TestShutdownHTTPWaitsForRequests(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	var emitted atomic.Int32
	h, err := HTTPHandler("s3cret", func(context.Context, *Alert) ([]byte, error) {
		close(started)
		<-release
		emitted.Add(1)
		return []byte("{}"), nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	answered := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, "http://"+ln.Addr().String()+"/v1/alerts", strings.NewReader(alertFor("name", "vm1", 0)))
		req.Header.Set("Authorization", "Bearer s3cret")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			answered <- -1
			return
		}
		resp.Body.Close()
		answered <- resp.StatusCode
	}()
	<-started
	done := make(chan error, 1)
	go func() { done <- ShutdownHTTP(srv, nil) }()
	select {
	case <-done:
		t.Fatal("ShutdownHTTP returned while a request was being enriched")
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("ShutdownHTTP: %v", err)
	}
	if emitted.Load() != 1 {
		t.Fatal("the request's alert was not enriched before ShutdownHTTP returned")
	}
	if code := <-answered; code != http.StatusOK {
		t.Fatalf("the request under way got %d, want 200", code)
	}
}
