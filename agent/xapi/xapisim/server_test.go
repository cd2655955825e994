package xapisim

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kolo/xmlrpc"
	"github.com/vmlineage/vmlineage/agent/xapi"
)

func TestLogin(t *testing.T) {
	s := startServer(t, Config{AuthFailDelay: 20 * time.Millisecond})
	u := s.URL()
	for _, ps := range [][]any{{"root", "xapisim"}, {"root", "xapisim", "1.0"}, {"root", "xapisim", "1.0", "vmlineage"}} {
		v := call(t, u, "session.login_with_password", ps...)
		if !hasPrefix(v.(string), "OpaqueRef:") {
			t.Fatalf("session %v", v)
		}
	}
	t0 := time.Now()
	_, desc := callErr(t, u, "session.login_with_password", "root", "wrong")
	if desc[0] != "SESSION_AUTHENTICATION_FAILED" || time.Since(t0) < 20*time.Millisecond {
		t.Fatalf("%v after %v", desc, time.Since(t0))
	}
	_, desc = callErr(t, u, "session.login_with_password", "root")
	if desc[0] != "MESSAGE_PARAMETER_COUNT_MISMATCH" {
		t.Fatal(desc)
	}
	sess := login(t, u)
	if _, desc := callErr(t, u, "VM.frobnicate", sess); desc[0] != "MESSAGE_METHOD_UNKNOWN" || desc[1] != "VM.frobnicate" {
		t.Fatal(desc)
	}
	call(t, u, "session.logout", sess)
	if _, desc := callErr(t, u, "VM.get_all", sess); desc[0] != "SESSION_INVALID" || desc[1] != sess {
		t.Fatal(desc)
	}
	// system.listMethods is a bare array (no envelope).
	v, _ := callErr(t, u, "system.listMethods")
	if ms, ok := v.([]any); !ok || len(ms) < 50 {
		t.Fatalf("listMethods %T", v)
	}
}

func TestMalformedRequestIsHTTP500HTML(t *testing.T) {
	s := startServer(t, Config{})
	for _, path := range []string{"", "RPC2", "jsonrpc"} {
		resp, err := http.Post(s.URL()+path, "text/xml", strings.NewReader("<methodCall><oops"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 500 || !strings.HasPrefix(string(body), "<html>") {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, body)
		}
	}
}

func TestHostIsSlave(t *testing.T) {
	s := startServer(t, Config{})
	u := s.URL()
	sess := login(t, u)
	s.SetSlave("10.9.9.9")
	for _, c := range [][]any{{"session.login_with_password", "root", "xapisim"}, {"VM.get_all_records", sess}} {
		_, desc := callErr(t, u, c[0].(string), c[1:]...)
		if len(desc) != 2 || desc[0] != "HOST_IS_SLAVE" || desc[1] != "10.9.9.9" {
			t.Fatalf("%v: %v", c[0], desc)
		}
	}
	s.SetSlave("")
	call(t, u, "VM.get_all", sess)
}

// blockedFrom starts an event.from that will block and returns its outcome.
func blockedFrom(t *testing.T, u, sess string) (<-chan []string, string) {
	t.Helper()
	_, tok := batchEvents(call(t, u, "event.from", sess, []any{"vm"}, "", 1.0))
	ch := make(chan []string, 1)
	go func() {
		body := rawCallNoFail(u, "event.from", sess, []any{"vm"}, tok, 30.0)
		if body == nil {
			ch <- []string{"<connection closed>"}
			return
		}
		v, _ := parseResponse(body)
		m := v.(map[string]any)
		if m["Status"] == "Failure" {
			var d []string
			for _, x := range m["ErrorDescription"].([]any) {
				d = append(d, x.(string))
			}
			ch <- d
			return
		}
		ch <- []string{"Success"}
	}()
	return ch, tok
}

func rawCallNoFail(url, method string, params ...any) []byte {
	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0"?><methodCall><methodName>` + method + `</methodName><params>`)
	for _, p := range params {
		b.WriteString("<param>")
		writeXMLValue(&b, p)
		b.WriteString("</param>")
	}
	b.WriteString("</params></methodCall>")
	resp, err := http.Post(url, "text/xml", &b)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil
	}
	return body
}

func waitBlocked(t *testing.T, s *Server, n int) {
	waitFor(t, "blocked event.from", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.waiters) >= n
	})
}

func TestSessionExpiryWakesBlockedEventFrom(t *testing.T) {
	s := startServer(t, Config{})
	u := s.URL()
	sess := login(t, u)
	ch, _ := blockedFrom(t, u, sess)
	waitBlocked(t, s, 1)
	s.ExpireSessions()
	if d := <-ch; d[0] != "SESSION_INVALID" || d[1] != sess {
		t.Fatal(d)
	}
	if _, desc := callErr(t, u, "event.from", sess, []any{"vm"}, "", 1.0); desc[0] != "SESSION_INVALID" {
		t.Fatal(desc)
	}
}

func TestEventsLostInjection(t *testing.T) {
	s := startServer(t, Config{})
	u := s.URL()
	a, b := login(t, u), login(t, u)
	ch, _ := blockedFrom(t, u, a)
	waitBlocked(t, s, 1)
	s.InjectEventsLost()
	if d := <-ch; d[0] != "EVENTS_LOST" {
		t.Fatal(d)
	}
	if _, desc := callErr(t, u, "event.from", b, []any{"vm"}, "", 1.0); len(desc) != 1 || desc[0] != "EVENTS_LOST" {
		t.Fatal(desc)
	}
	// Once only: the session then works again.
	call(t, u, "event.from", b, []any{"vm"}, "", 1.0)
	call(t, u, "event.from", a, []any{"vm"}, "", 1.0)
}

func TestDropConnectionsAndPause(t *testing.T) {
	s := startServer(t, Config{})
	u := s.URL()
	sess := login(t, u)
	ch, _ := blockedFrom(t, u, sess)
	waitBlocked(t, s, 1)
	s.DropConnections()
	select {
	case d := <-ch:
		if d[0] != "<connection closed>" {
			t.Fatal(d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("blocked event.from survived DropConnections")
	}
	s.Pause()
	if _, err := http.Post(u, "text/xml", strings.NewReader("x")); err == nil {
		t.Fatal("paused server answered")
	}
	if err := s.Resume(); err != nil {
		t.Fatal(err)
	}
	call(t, u, "VM.get_all", sess) // state kept: the session survived
}

func TestEventFromBlocksBatchesAndTimesOut(t *testing.T) {
	s := startServer(t, Config{BatchDelay: 300 * time.Millisecond})
	u := s.URL()
	sess := login(t, u)
	_, tok := batchEvents(call(t, u, "event.from", sess, []any{"vm"}, "", 1.0))
	t0 := time.Now()
	v := call(t, u, "event.from", sess, []any{"vm"}, tok, 0.2)
	if evs, tok2 := batchEvents(v); len(evs) != 0 || tok2 != tok || time.Since(t0) < 200*time.Millisecond {
		t.Fatalf("timeout: %d events, token %s, after %v", len(evs), tok2, time.Since(t0))
	}
	// Two writes 20 ms apart land in one batch thanks to the batching delay.
	e := s.eng()
	go func() {
		time.Sleep(50 * time.Millisecond)
		e.db.mu.Lock()
		mkVM(e.db, "OpaqueRef:n1", "n1")
		e.db.mu.Unlock()
		e.db.notify()
		time.Sleep(20 * time.Millisecond)
		e.db.mu.Lock()
		mkVM(e.db, "OpaqueRef:n2", "n2")
		e.db.mu.Unlock()
		e.db.notify()
	}()
	evs, _ := batchEvents(call(t, u, "event.from", sess, []any{"vm"}, tok, 10.0))
	if len(evs) != 2 {
		t.Fatalf("%d events, want both writes in one batch", len(evs))
	}
	// Bad token.
	if _, desc := callErr(t, u, "event.from", sess, []any{"vm"}, "garbage", 1.0); desc[0] != "EVENT_FROM_TOKEN_PARSE_FAILURE" || desc[1] != "garbage" {
		t.Fatal(desc)
	}
}

func TestInjectAndValidRefCountsOnTheWire(t *testing.T) {
	sc, _ := Builtin("threat-model")
	s := startServer(t, Config{Scenario: sc})
	u := s.URL()
	sess := login(t, u)
	pools := call(t, u, "pool.get_all", sess).([]any)
	tok := call(t, u, "event.inject", sess, "pool", pools[0]).(string)
	evs, _ := batchEvents(call(t, u, "event.from", sess, []any{"pool", "vm"}, tok, 1.0))
	if len(evs) != 1 || evs[0].op != "mod" || evs[0].ref != pools[0] {
		t.Fatalf("inject: %+v", evs)
	}
	body := rawCall(t, u, "event.from", sess, []any{"task"}, tok, 0.05)
	for _, want := range []string{"<member><name>vm</name><value><i4>4</i4></value></member>",
		"<member><name>session</name><value><i4>1</i4></value></member>", "<name>timestamp</name>"} {
		if want == "<name>timestamp</name>" {
			continue // no events in this batch
		}
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("missing %s in %s", want, body)
		}
	}
}

// TestKoloDecodesIntoAgentTypes proves the agent's typed-struct path works
// against the simulator's untyped values.
func TestKoloDecodesIntoAgentTypes(t *testing.T) {
	sc, _ := Builtin("threat-model")
	s := startServer(t, Config{Scenario: sc})
	c, err := xmlrpc.NewClient(s.URL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var login struct {
		Status string `xmlrpc:"Status"`
		Value  string `xmlrpc:"Value"`
	}
	if err := c.Call("session.login_with_password", []any{"root", "xapisim", "1.0", "kolo"}, &login); err != nil || login.Status != "Success" {
		t.Fatalf("%v %+v", err, login)
	}
	var batch struct {
		Status string          `xmlrpc:"Status"`
		Value  xapi.EventBatch `xmlrpc:"Value"`
	}
	if err := c.Call("event.from", []any{login.Value, xapi.Classes, "", 5.0}, &batch); err != nil {
		t.Fatal(err)
	}
	b := batch.Value
	if b.Token == "" || b.ValidRefCounts["vm"] != 4 || b.ValidRefCounts["host"] != 3 {
		t.Fatalf("batch token %q counts %v", b.Token, b.ValidRefCounts)
	}
	var origin, dom0 *xapi.Snapshot
	for _, e := range b.Events {
		if e.Class == "vm" && e.Snapshot.NameLabel == "origin" {
			origin = e.Snapshot
		}
		if e.Class == "vm" && e.Snapshot.IsControlDomain && dom0 == nil {
			dom0 = e.Snapshot
		}
	}
	if origin == nil || dom0 == nil {
		t.Fatal("origin or a control domain missing")
	}
	if origin.UUID != "0e1e2e3e-0000-4000-8000-00000000000a" || origin.PowerState != "Halted" || len(origin.VIFs) != 1 ||
		origin.OtherConfig["mac_seed"] == "" || origin.Domid != "-1" || !origin.SnapshotTime.Equal(xapi.Epoch) {
		t.Fatalf("origin %+v", origin)
	}
	var rec struct {
		Status string        `xmlrpc:"Status"`
		Value  xapi.Snapshot `xmlrpc:"Value"`
	}
	var vifs struct {
		Value map[string]xapi.Snapshot `xmlrpc:"Value"`
	}
	if err := c.Call("VIF.get_all_records", []any{login.Value}, &vifs); err != nil || len(vifs.Value) != 1 {
		t.Fatalf("%v %d", err, len(vifs.Value))
	}
	for ref, v := range vifs.Value {
		if v.MAC != "02:16:3e:00:00:0a" || v.Device != "0" {
			t.Fatalf("VIF %s %+v", ref, v)
		}
		if err := c.Call("VM.get_record", []any{login.Value, v.VM}, &rec); err != nil || rec.Value.NameLabel != "origin" {
			t.Fatalf("%v %+v", err, rec)
		}
	}
	// A task, with datetimes and a float, after a hand-driven async clone.
	var ref struct {
		Status string `xmlrpc:"Status"`
		Value  string `xmlrpc:"Value"`
	}
	var vmRef struct {
		Value string `xmlrpc:"Value"`
	}
	_ = c.Call("VM.get_by_uuid", []any{login.Value, origin.UUID}, &vmRef)
	if err := c.Call("Async.VM.clone", []any{login.Value, vmRef.Value, "by-hand"}, &ref); err != nil || ref.Status != "Success" {
		t.Fatalf("%v %+v", err, ref)
	}
	var task struct {
		Value xapi.Snapshot `xmlrpc:"Value"`
	}
	_ = c.Call("task.get_record", []any{login.Value, ref.Value}, &task)
	if task.Value.NameLabel != "Async.VM.clone" || task.Value.Created.IsZero() {
		t.Fatalf("task %+v", task.Value)
	}
}

func TestJSONRPC(t *testing.T) {
	sc, _ := Builtin("threat-model")
	s := startServer(t, Config{Scenario: sc})
	post := func(body string) map[string]any {
		resp, err := http.Post(s.URL()+"jsonrpc", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Fatalf("content type %s", ct)
		}
		var m map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	m := post(`{"jsonrpc":"2.0","method":"session.login_with_password","params":["root","xapisim"],"id":1}`)
	sess, _ := m["result"].(string)
	if !hasPrefix(sess, "OpaqueRef:") || m["jsonrpc"] != "2.0" {
		t.Fatal(m)
	}
	m = post(`{"jsonrpc":"2.0","method":"event.from","params":["` + sess + `",["vm"],"",1.0],"id":2}`)
	res := m["result"].(map[string]any)
	if n := res["valid_ref_counts"].(map[string]any)["vm"]; n != 4.0 {
		t.Fatalf("vm count %v", n)
	}
	for _, e := range res["events"].([]any) {
		snap := e.(map[string]any)["snapshot"].(map[string]any)
		if _, ok := snap["domid"].(float64); !ok {
			t.Fatalf("int not a JSON number: %T", snap["domid"])
		}
		if st := snap["snapshot_time"].(string); st != "19700101T00:00:00Z" {
			t.Fatalf("datetime %q", st)
		}
	}
	m = post(`{"jsonrpc":"2.0","method":"VM.get_record","params":["` + sess + `","OpaqueRef:nope"],"id":3}`)
	if e := m["error"].(map[string]any); e["message"] != "HANDLE_INVALID" {
		t.Fatal(m)
	}
	m = post(`{"method":"VM.get_record","params":["` + sess + `","OpaqueRef:nope"],"id":4}`)
	if e := m["error"].([]any); e[0] != "HANDLE_INVALID" || m["result"] != nil {
		t.Fatal(m)
	}
	// Sessions are shared between the two protocols.
	call(t, s.URL(), "VM.get_all", sess)
}

func TestTLSPinnedFingerprint(t *testing.T) {
	s := startServer(t, Config{TLS: true})
	if !hasPrefix(s.URL(), "https://") || len(s.CertFingerprint()) != 64 || !bytes.HasPrefix(s.CertPEM(), []byte("-----BEGIN CERTIFICATE")) {
		t.Fatalf("%s %s", s.URL(), s.CertFingerprint())
	}
	pinned := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		InsecureSkipVerify: true, // verified below by pin
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			sum := sha256.Sum256(raw[0])
			if hex.EncodeToString(sum[:]) != s.CertFingerprint() {
				return errors.New("fingerprint mismatch")
			}
			return nil
		},
	}}}
	body := `<?xml version="1.0"?><methodCall><methodName>session.login_with_password</methodName><params><param><value>root</value></param><param><value>xapisim</value></param></params></methodCall>`
	resp, err := pinned.Post(s.URL(), "text/xml", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(b, []byte("<value>Success</value>")) {
		t.Fatal(string(b))
	}
}

func TestPlayContextCancel(t *testing.T) {
	sc, _ := Builtin("threat-model")
	s := startServer(t, Config{Scenario: sc})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Play(ctx, sc, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Play at real speed should not finish in 50 ms: %v", err)
	}
}
