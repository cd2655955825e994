package xapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func newPlain(t *testing.T, f http.Handler) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(f)
	t.Cleanup(s.Close)
	return s
}

func mustClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	if cfg.User == "" {
		cfg.User, cfg.Password = "root", "secret"
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func login(t *testing.T, c *Client) {
	t.Helper()
	if err := c.Login(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestLoginRecordsEventsXMLRPC(t *testing.T) {
	testLoginRecordsEvents(t, "xmlrpc")
}

func TestLoginRecordsEventsJSONRPC(t *testing.T) {
	testLoginRecordsEvents(t, "jsonrpc")
}

func testLoginRecordsEvents(t *testing.T, transport string) {
	f := newFake()
	f.put("vm", "OpaqueRef:vm-1", vmRecord(1))
	f.put("task", "OpaqueRef:task-1", taskRecord(1, TaskSuccess))
	s := newPlain(t, f)
	c := mustClient(t, Config{URL: s.URL, AllowHTTP: true, Transport: transport})
	ctx := context.Background()
	login(t, c)
	if got := c.Session(); got != "OpaqueRef:session-1" {
		t.Fatalf("session %q", got)
	}
	if c.Protocol() != transport {
		t.Fatalf("protocol %q, want %q", c.Protocol(), transport)
	}
	vms, err := c.GetAllRecords(ctx, "VM")
	if err != nil {
		t.Fatal(err)
	}
	vm := vms["OpaqueRef:vm-1"]
	if vm == nil || len(vms) != 1 {
		t.Fatalf("records %v", vms)
	}
	checkVM(t, vm, 1)
	tasks, err := c.GetAllRecords(ctx, "task")
	if err != nil {
		t.Fatal(err)
	}
	tk := tasks["OpaqueRef:task-1"]
	if tk.Status != TaskSuccess || tk.Progress != 1 || !TimeSet(tk.Finished) || tk.Created.Format(DateTimeLayout) != "20250319T04:16:24Z" ||
		tk.Result != "<value>OpaqueRef:vm-2</value>" || ParseResultRefs(tk.Result)[0] != "OpaqueRef:vm-2" || !IsNull(tk.SubtaskOf) {
		t.Fatalf("task %+v", tk)
	}

	pool, err := c.PoolRef(ctx)
	if err != nil || pool != "OpaqueRef:pool-0" {
		t.Fatalf("pool %q %v", pool, err)
	}
	tok, err := c.Inject(ctx, "pool", pool)
	if err != nil || len(tok) != 41 {
		t.Fatalf("inject %q %v", tok, err)
	}
	// The injected pool comes back as mod, then a new VM as add, a gone
	// one as del.
	b, err := c.EventFrom(ctx, []string{"pool"}, tok, 5)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Events) != 1 || b.Events[0].Operation != "mod" || b.Events[0].Class != "pool" || b.Events[0].Snapshot.Master != "OpaqueRef:host-0" {
		t.Fatalf("inject batch %+v", b)
	}
	if b.ValidRefCounts["vm"] != 1 || b.ValidRefCounts["session"] != 1 {
		t.Fatalf("valid_ref_counts %v", b.ValidRefCounts)
	}
	tok = b.Token
	go func() {
		time.Sleep(50 * time.Millisecond)
		f.put("vm", "OpaqueRef:vm-2", vmRecord(2))
		f.del("vm", "OpaqueRef:vm-1")
	}()
	var evs []Event
	for len(evs) < 2 {
		b, err = c.EventFrom(ctx, []string{"VM"}, tok, 5)
		if err != nil {
			t.Fatal(err)
		}
		evs, tok = append(evs, b.Events...), b.Token
	}
	if evs[0].Operation != "add" || evs[0].Ref != "OpaqueRef:vm-2" || evs[0].Snapshot == nil {
		t.Fatalf("add %+v", evs[0])
	}
	checkVM(t, evs[0].Snapshot, 2)
	last := evs[len(evs)-1]
	if last.Operation != "del" || last.Ref != "OpaqueRef:vm-1" || last.Snapshot != nil {
		t.Fatalf("del %+v", last)
	}
	// An empty wait returns the same token after the timeout.
	start := time.Now()
	b, err = c.EventFrom(ctx, []string{"VM"}, tok, 0.3)
	if err != nil || len(b.Events) != 0 || b.Token != tok || time.Since(start) < 250*time.Millisecond {
		t.Fatalf("empty wait %+v %v", b, err)
	}
	// Generic Call through kolo / encoding/json.
	var u string
	if err := c.Call(ctx, "session.get_uuid", &u, c.Session()); err != nil || u != "session-uuid" {
		t.Fatalf("get_uuid %q %v", u, err)
	}
	err = c.Call(ctx, "VM.no_such_call", nil)
	if !IsCode(err, ErrMethodUnknown) {
		t.Fatalf("unknown method: %v", err)
	}
	if err := c.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	if f.count("session.logout") != 1 {
		t.Fatal("no logout call")
	}
	if hs := c.Hosts(); len(hs) != 0 {
		t.Logf("hosts %v", hs)
	}
}

func checkVM(t *testing.T, vm *Snapshot, i int) {
	t.Helper()
	want := fmt.Sprintf("web-%d <prod> & co", i)
	if vm.NameLabel != want || vm.PowerState != Running || vm.ResidentOn != "OpaqueRef:host-0" || vm.IsATemplate ||
		vm.Domid != fmt.Sprint(i+1) || len(vm.VIFs) != 2 || vm.VIFs[1] != fmt.Sprintf("OpaqueRef:vif-%d-1", i) ||
		vm.OtherConfig["base_template_name"] != "Ubuntu Jammy Jellyfish 22.04" || vm.CurrentOperations == nil ||
		len(vm.CurrentOperations) != 0 || TimeSet(vm.SnapshotTime) || !vm.SnapshotTime.Equal(Epoch) ||
		vm.Parent != fmt.Sprintf("OpaqueRef:snap-%d", i) || !IsNull(vm.SnapshotOf) || vm.GuestMetrics != fmt.Sprintf("OpaqueRef:gm-%d", i) {
		t.Fatalf("VM decoded wrong: %+v", vm)
	}
}

func TestAutoTransport(t *testing.T) {
	for _, noJSON := range []bool{false, true} {
		f := newFake()
		f.noJSON = noJSON
		s := newPlain(t, f)
		c := mustClient(t, Config{URL: s.URL, AllowHTTP: true, Transport: "auto"})
		login(t, c)
		want := "jsonrpc"
		if noJSON {
			want = "xmlrpc"
		}
		if c.Protocol() != want {
			t.Fatalf("noJSON=%v: protocol %q", noJSON, c.Protocol())
		}
		if _, err := c.GetAllRecords(context.Background(), "host"); err != nil {
			t.Fatal(err)
		}
		if hs := c.Hosts(); len(hs) != 1 || hs[0] != "127.0.0.1" {
			t.Fatalf("hosts %v", hs)
		}
	}
}

func TestPlainHTTPRefused(t *testing.T) {
	_, err := New(Config{URL: "http://pool.example"})
	if !errors.Is(err, ErrPlainHTTP) || !strings.Contains(err.Error(), "AllowHTTP") {
		t.Fatalf("got %v", err)
	}
	if _, err := New(Config{URL: "http://pool.example", AllowHTTP: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{URL: "ftp://pool.example"}); err == nil {
		t.Fatal("ftp accepted")
	}
	if _, err := New(Config{URL: "https://pool.example", Fingerprint: "zz"}); err == nil || !strings.Contains(err.Error(), "SHA-256") {
		t.Fatalf("bad fingerprint: %v", err)
	}
}

func leafFingerprint(s *httptest.Server) [32]byte {
	return sha256.Sum256(s.Certificate().Raw)
}

func TestTLSPinningAndCA(t *testing.T) {
	f := newFake()
	s := httptest.NewTLSServer(f)
	t.Cleanup(s.Close)
	fp := leafFingerprint(s)
	ctx := context.Background()

	// Good pin, upper case with colons.
	c := mustClient(t, Config{URL: s.URL, Fingerprint: colonHex(fp[:])})
	login(t, c)
	// Good pin, lower-case bare hex.
	c = mustClient(t, Config{URL: s.URL, Fingerprint: hex.EncodeToString(fp[:])})
	login(t, c)

	// Wrong pin.
	bad := fp
	bad[0] ^= 0xff
	c = mustClient(t, Config{URL: s.URL, Fingerprint: hex.EncodeToString(bad[:])})
	err := c.Login(ctx)
	if err == nil || !strings.Contains(err.Error(), "fingerprint mismatch") {
		t.Fatalf("wrong pin: %v", err)
	}
	var te *TransportError
	if !errors.As(err, &te) {
		t.Fatalf("wrong pin should be a transport error: %T", err)
	}

	// System roots: the test certificate is unknown.
	c = mustClient(t, Config{URL: s.URL})
	if err := c.Login(ctx); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("system roots: %v", err)
	}

	// CA file holding the server's self-signed certificate.
	ca := filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw})
	if err := os.WriteFile(ca, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	c = mustClient(t, Config{URL: s.URL, CAFile: ca})
	login(t, c)
	if _, err := New(Config{URL: s.URL, CAFile: filepath.Join(t.TempDir(), "missing.pem")}); err == nil {
		t.Fatal("missing CA file accepted")
	}
	empty := filepath.Join(t.TempDir(), "empty.pem")
	os.WriteFile(empty, []byte("not pem"), 0o600)
	if _, err := New(Config{URL: s.URL, CAFile: empty}); err == nil || !strings.Contains(err.Error(), "no PEM") {
		t.Fatalf("empty CA: %v", err)
	}
}

// twoHosts starts a master on 127.0.0.1:P and a member on 127.0.0.2:P (the
// same port: HOST_IS_SLAVE names only an address).
func twoHosts(t *testing.T, master, member http.Handler, tlsOn bool) (mURL, sURL string, ms, ss *httptest.Server) {
	t.Helper()
	for try := 0; try < 20; try++ {
		l1, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l1.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", fmt.Sprintf("127.0.0.2:%d", port))
		if err != nil {
			l1.Close()
			continue
		}
		ms = &httptest.Server{Listener: l1, Config: &http.Server{Handler: master}}
		ss = &httptest.Server{Listener: l2, Config: &http.Server{Handler: member}}
		if tlsOn {
			ms.StartTLS()
			ss.StartTLS()
		} else {
			ms.Start()
			ss.Start()
		}
		t.Cleanup(ms.Close)
		t.Cleanup(ss.Close)
		return ms.URL, ss.URL, ms, ss
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("cannot bind 127.0.0.1 and 127.0.0.2 on one port (Linux loopback needed)")
	}
	t.Skip("cannot bind 127.0.0.2 (needs Linux loopback 127.0.0.0/8)")
	return
}

func TestHostIsSlaveRedirect(t *testing.T) {
	master, member := newFake(), newFake()
	member.slaveOf = "127.0.0.1"
	mURL, sURL, _, _ := twoHosts(t, master, member, false)
	c := mustClient(t, Config{URL: sURL, AllowHTTP: true})
	login(t, c)
	if c.MasterURL() != mURL {
		t.Fatalf("master %s, want %s", c.MasterURL(), mURL)
	}
	if master.count("session.login_with_password") != 1 || member.count("session.login_with_password") != 1 {
		t.Fatalf("calls: master %v member %v", master.callLog(), member.callLog())
	}
	// Calls go to the master from now on.
	if _, err := c.PoolRef(context.Background()); err != nil {
		t.Fatal(err)
	}

	// A loop of members is cut after MaxRedirects hops.
	master.demote("127.0.0.2")
	c = mustClient(t, Config{URL: sURL, AllowHTTP: true, MaxRedirects: 3})
	err := c.Login(context.Background())
	if err == nil || !strings.Contains(err.Error(), "more than 3 HOST_IS_SLAVE") {
		t.Fatalf("loop: %v", err)
	}
}

func TestHostIsSlavePinnedThumbprint(t *testing.T) {
	master, member := newFake(), newFake()
	member.slaveOf = "127.0.0.1"
	_, sURL, ms, ss := twoHosts(t, master, member, true)
	mfp := leafFingerprint(ms)
	sfp := leafFingerprint(ss)
	// httptest servers share one certificate; a distinct master cert is not
	// needed to check the header flow, but the pin of the master must come
	// from the header: without it the master host has no pin.
	c := mustClient(t, Config{URL: sURL, Fingerprint: hex.EncodeToString(sfp[:])})
	err := c.Login(context.Background())
	if err == nil || !strings.Contains(err.Error(), "no pinned fingerprint for host 127.0.0.1") {
		t.Fatalf("without thumbprint header: %v", err)
	}
	member.mu.Lock()
	member.thumbprint = colonHex(mfp[:])
	member.mu.Unlock()
	c = mustClient(t, Config{URL: sURL, Fingerprint: hex.EncodeToString(sfp[:])})
	login(t, c)
	if !strings.Contains(c.MasterURL(), "127.0.0.1") {
		t.Fatal(c.MasterURL())
	}
}

func TestMasterGoneTriesMembers(t *testing.T) {
	// The old master (127.0.0.2) dies; a pool host seen in host records
	// (127.0.0.1, same port) answers and becomes the master.
	live, old := newFake(), newFake()
	mURL, sURL, _, ss := twoHosts(t, live, old, false)
	c := mustClient(t, Config{URL: sURL, AllowHTTP: true, DialTimeout: 2 * time.Second})
	login(t, c)
	if _, err := c.GetAllRecords(context.Background(), "host"); err != nil { // learns 127.0.0.1
		t.Fatal(err)
	}
	ss.Close()
	c.ForgetSession()
	login(t, c)
	if c.MasterURL() != mURL || live.count("session.login_with_password") != 1 {
		t.Fatalf("master %s, live calls %v", c.MasterURL(), live.callLog())
	}
}

func TestAuthFailure(t *testing.T) {
	for _, tr := range []string{"xmlrpc", "jsonrpc"} {
		f := newFake()
		s := newPlain(t, f)
		c := mustClient(t, Config{URL: s.URL, AllowHTTP: true, User: "root", Password: "wrong", Transport: tr})
		err := c.Login(context.Background())
		if !IsCode(err, ErrAuthFailed) || !strings.Contains(err.Error(), "wrong user name or password") {
			t.Fatalf("%s: %v", tr, err)
		}
		if strings.Contains(err.Error(), "wrong\"") || strings.Contains(err.Error(), "secret") {
			t.Fatal("password leaked into the error")
		}
	}
}

func TestUnreachable(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	c := mustClient(t, Config{URL: "http://" + addr, AllowHTTP: true})
	start := time.Now()
	err := c.Login(context.Background())
	var te *TransportError
	if !errors.As(err, &te) || !strings.Contains(err.Error(), "refused") || time.Since(start) > 5*time.Second {
		t.Fatalf("%T %v", err, err)
	}
	if !Retryable(err) {
		t.Fatal("unreachable should be retryable")
	}
}

// badServer answers every request with the given status, type and body.
func badServer(t *testing.T, status int, ctype, body string) string {
	return newPlain(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", ctype)
		w.WriteHeader(status)
		w.Write([]byte(body))
	})).URL
}

func TestNotXAPI(t *testing.T) {
	cases := []struct {
		name, ctype, body string
		status            int
		want              string
	}{
		{"html page", "text/html", "<!DOCTYPE html><html><head><title>Welcome to XCP-ng</title></head></html>", 200, "HTML page"},
		{"404", "text/plain", "404 page not found", 404, "HTTP 404"},
		{"json garbage", "application/json", `{"hello": "world"}`, 200, "not a valid XenAPI answer"},
		{"malformed xml", "text/xml", `<?xml version="1.0"?><methodResponse><params><param><value><struct><member><name>Status</name><value>Success</value></member><member><name>Value</name><value>OpaqueRef:x</value>`, 200, "malformed XML-RPC"},
		{"no envelope", "text/xml", `<?xml version="1.0"?><methodResponse><params><param><value>OpaqueRef:x</value></param></params></methodResponse>`, 200, "not the Status/Value envelope"},
		{"fault", "text/xml", `<?xml version="1.0"?><methodResponse><fault><value><struct><member><name>faultCode</name><value><int>4</int></value></member><member><name>faultString</name><value><string>Too many parameters.</string></value></member></struct></value></fault></methodResponse>`, 200, "XML-RPC fault 4"},
		{"500 html", "text/html", "<html><body>Xmlrpc.Parse_error</body></html>", 500, "HTTP 500"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := badServer(t, tc.status, tc.ctype, tc.body)
			c := mustClient(t, Config{URL: u, AllowHTTP: true})
			err := c.Login(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

// hugeBody streams n bytes of a never-ending string value.
func hugeBody(w http.ResponseWriter, n int) {
	w.Header().Set("Content-Type", "text/xml")
	w.Write([]byte(`<?xml version="1.0"?><methodResponse><params><param><value><struct><member><name>Status</name><value>Success</value></member><member><name>Value</name><value>`))
	chunk := []byte(strings.Repeat("A", 64<<10))
	for sent := 0; sent < n; sent += len(chunk) {
		if _, err := w.Write(chunk); err != nil {
			return
		}
	}
}

// peakHeap samples the live heap while fn runs.
func peakHeap(fn func()) (peak uint64) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return peak
		case <-tick.C:
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > base && ms.HeapAlloc-base > peak {
				peak = ms.HeapAlloc - base
			}
		}
	}
}

func TestHugeResponseBounded(t *testing.T) {
	const size = 300 << 20
	f := newFake()
	f.hook = func(method string, w http.ResponseWriter, r *http.Request, _ bool) bool {
		if method == "pool.get_all" || method == "VM.get_all_records" {
			if method == "VM.get_all_records" {
				// One endless record inside a valid get_all_records.
				w.Header().Set("Content-Type", "text/xml")
				w.Write([]byte(`<?xml version="1.0"?><methodResponse><params><param><value><struct><member><name>Status</name><value>Success</value></member><member><name>Value</name><value><struct><member><name>OpaqueRef:a</name><value><struct><member><name>name_label</name><value>`))
				chunk := []byte(strings.Repeat("B", 64<<10))
				for sent := 0; sent < size; sent += len(chunk) {
					if _, err := w.Write(chunk); err != nil {
						return true
					}
				}
				return true
			}
			hugeBody(w, size)
			return true
		}
		return false
	}
	s := newPlain(t, f)
	c := mustClient(t, Config{URL: s.URL, AllowHTTP: true, MaxResponseBytes: 8 << 20, MaxRecordBytes: 4 << 20})
	login(t, c)
	var err error
	peak := peakHeap(func() { _, err = c.PoolRef(context.Background()) })
	var tl *TooLargeError
	if !errors.As(err, &tl) || !strings.Contains(err.Error(), "larger than the limit of 8388608 bytes") {
		t.Fatalf("buffered call: %v", err)
	}
	t.Logf("buffered 300 MB answer: %v; peak heap +%d MiB", err, peak>>20)
	if peak > 64<<20 {
		t.Fatalf("heap grew by %d MiB for an 8 MiB cap", peak>>20)
	}
	peak = peakHeap(func() { _, err = c.GetAllRecords(context.Background(), "VM") })
	if !errors.As(err, &tl) || tl.What != "record" {
		t.Fatalf("streamed call: %v", err)
	}
	t.Logf("streamed 300 MB record: %v; peak heap +%d MiB", err, peak>>20)
	if peak > 64<<20 {
		t.Fatalf("heap grew by %d MiB for a 4 MiB record cap", peak>>20)
	}
}

// TestBigPoolResyncBounded streams get_all_records of 20,000 realistic VMs
// (~150 MB of XML) and checks the decoder never holds the document.
func TestBigPoolResyncBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("big pool test skipped in -short mode")
	}
	const n = 20000
	f := newFake()
	f.hook = func(method string, w http.ResponseWriter, r *http.Request, _ bool) bool {
		if method != "VM.get_all_records" {
			return false
		}
		w.Header().Set("Content-Type", "text/xml")
		w.Write([]byte(`<?xml version="1.0"?><methodResponse><params><param><value><struct><member><name>Status</name><value>Success</value></member><member><name>Value</name><value><struct>`))
		var sent int
		for i := 0; i < n; i++ {
			var b strings.Builder
			b.WriteString(fmt.Sprintf("<member><name>OpaqueRef:vm-%d</name>", i))
			var vb bytes.Buffer
			encXML(&vb, vmRecord(i))
			b.Write(vb.Bytes())
			b.WriteString("</member>")
			sent += b.Len()
			if _, err := w.Write([]byte(b.String())); err != nil {
				return true
			}
		}
		w.Write([]byte(`</struct></value></member></struct></value></param></params></methodResponse>`))
		t.Logf("served %d VMs, %d MB", n, sent>>20)
		return true
	}
	s := newPlain(t, f)
	c := mustClient(t, Config{URL: s.URL, AllowHTTP: true})
	login(t, c)
	var got int
	var err error
	peak := peakHeap(func() {
		err = c.GetAllRecordsFunc(context.Background(), "VM", func(ref string, s *Snapshot) error {
			if s.PowerState != Running {
				return fmt.Errorf("%s: bad record", ref)
			}
			got++
			return nil
		})
	})
	if err != nil || got != n {
		t.Fatalf("got %d records, err %v", got, err)
	}
	t.Logf("streamed %d VM records, peak heap +%d MiB", n, peak>>20)
	if peak > 96<<20 { // the answer is 190 MB: growth must stay well below it
		t.Fatalf("heap grew by %d MiB", peak>>20)
	}
}

func TestSlowlorisBounded(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	u := newPlain(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/xml")
		w.WriteHeader(200)
		w.Write([]byte(`<?xml version="1.0"?><methodResponse>`))
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})).URL
	c := mustClient(t, Config{URL: u, AllowHTTP: true, CallTimeout: time.Second})
	start := time.Now()
	err := c.Login(context.Background())
	el := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "timed out") || el > 5*time.Second {
		t.Fatalf("after %v: %v", el, err)
	}
	if !Retryable(err) {
		t.Fatal("a stalled server should be retryable")
	}
}

func TestEventFromDeadline(t *testing.T) {
	// event.from's HTTP deadline is timeout×1.1+5 s: a server that sits on
	// the call past that is cut.
	f := newFake()
	f.hook = func(method string, w http.ResponseWriter, r *http.Request, _ bool) bool {
		if method != "event.from" {
			return false
		}
		<-r.Context().Done()
		return true
	}
	s := newPlain(t, f)
	c := mustClient(t, Config{URL: s.URL, AllowHTTP: true})
	login(t, c)
	start := time.Now()
	_, err := c.EventFrom(context.Background(), Classes, "", 0.1)
	if err == nil || time.Since(start) > 8*time.Second || time.Since(start) < 5*time.Second {
		t.Fatalf("after %v: %v", time.Since(start), err)
	}
}

func TestCallTimeBothTransports(t *testing.T) {
	for _, tr := range []string{"xmlrpc", "jsonrpc"} {
		f := newFake()
		f.hook = func(method string, w http.ResponseWriter, r *http.Request, isJSON bool) bool {
			if method != "host.get_servertime" {
				return false
			}
			if isJSON {
				w.Header().Set("Content-Type", "application/json")
				w.Write([]byte(`{"jsonrpc":"2.0","result":"20250319T04:16:24Z","id":1}`))
			} else {
				w.Header().Set("Content-Type", "text/xml")
				w.Write(xmlSuccess(xtime(time.Date(2025, 3, 19, 4, 16, 24, 0, time.UTC))))
			}
			return true
		}
		s := newPlain(t, f)
		c := mustClient(t, Config{URL: s.URL, AllowHTTP: true, Transport: tr})
		login(t, c)
		var now time.Time
		if err := c.Call(context.Background(), "host.get_servertime", &now, "OpaqueRef:host-0"); err != nil || now.Format(DateTimeLayout) != "20250319T04:16:24Z" {
			t.Fatalf("%s: %v %v", tr, now, err)
		}
	}
}
