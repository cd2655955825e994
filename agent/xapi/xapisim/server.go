package xapisim

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Config sets up a Server.
type Config struct {
	// Scenario provides the initial pool (nil: a one-host pool without VMs).
	Scenario *Scenario
	// Listen is the address, default "127.0.0.1:0".
	Listen string
	// TLS serves HTTPS with a self-signed certificate made at start.
	TLS bool
	// User and Password are the accepted credentials (default root / xapisim).
	User, Password string
	// AuthFailDelay is how long a wrong login waits before answering
	// (xapi: 5 s). Default 0.
	AuthFailDelay time.Duration
	// BatchDelay is event.from's batching delay in virtual time (default
	// 50 ms), so 0.5 ms of real time at speed 100 and none at speed 0.
	BatchDelay time.Duration
	// Speed before Play is called (default 1: real time).
	Speed float64
	// HostListeners gives every member host its own listener (own
	// certificate under TLS) serving GET /audit_log from that host's log,
	// as each xapi host does (HostURL names them).
	HostListeners bool
}

// Server is a running simulated pool master.
type Server struct {
	cfg    Config
	sched  *scheduler
	engine *engine
	ctx    context.Context
	cancel context.CancelFunc

	mu        sync.Mutex
	sessions  map[string]*session
	conns     map[net.Conn]struct{}
	listener  net.Listener
	addr      string
	slaveOf   string
	waiters   map[*waiter]struct{}
	listeners map[string]time.Time // sessions that called event.from recently
	// lastListen is when any session last called event.from: at speed 0 a
	// client cut off by a fault (its session expired, its connection
	// dropped, the endpoint paused) is waited for until it is back.
	lastListen time.Time
	httpSrv    *http.Server
	cert       *tls.Certificate
	certPEM    []byte
	certFP     string
	serveWG    sync.WaitGroup
	played     bool
	audit      *auditStore
	hostLn     map[string]*hostListener
	floods     map[string]flood // FloodAuditLog
}

type session struct {
	ref, user, originator string
	info                  *userInfo // the caller as the audit log names it
	gone                  chan struct{}
	eventsLost            bool
	lost                  chan struct{}
}

type waiter struct {
	sess *session
	sub  *subscription
	tok  token
}

// New builds a server; Start makes it listen.
func New(cfg Config) *Server {
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.User == "" {
		cfg.User = "root"
	}
	if cfg.Password == "" {
		cfg.Password = "xapisim"
	}
	if cfg.BatchDelay == 0 {
		cfg.BatchDelay = 50 * time.Millisecond
	}
	if cfg.Speed == 0 {
		cfg.Speed = 1
	}
	sc := cfg.Scenario
	if sc == nil {
		sc = &Scenario{Name: "empty", Hosts: []HostSpec{{Name: "xen1", Address: "127.0.0.1", Master: true}}}
		_ = sc.Validate()
	}
	s := &Server{cfg: cfg, sessions: map[string]*session{}, conns: map[net.Conn]struct{}{},
		waiters: map[*waiter]struct{}{}, listeners: map[string]time.Time{}, audit: newAuditStore()}
	s.sched = newScheduler(sc.Start, cfg.Speed, false)
	s.sched.settle = s.settle
	s.engine = s.newEngine(sc)
	return s
}

func (s *Server) newEngine(sc *Scenario) *engine {
	e := newEngine(sc, s.sched)
	e.fault = s.applyFault
	e.auditSink = s.audit.append
	return e
}

// Start listens and serves; the scheduler starts running.
func (s *Server) Start() error {
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if s.cfg.TLS {
		if err := s.makeCert(); err != nil {
			return err
		}
	}
	s.httpSrv = &http.Server{Handler: http.HandlerFunc(s.serveHTTP), ConnState: s.connState,
		ReadHeaderTimeout: 30 * time.Second}
	if err := s.listen(s.cfg.Listen); err != nil {
		return err
	}
	if s.cfg.HostListeners {
		if err := s.startHostListeners(); err != nil {
			s.httpSrv.Close()
			return err
		}
	}
	go s.sched.run(s.ctx)
	return nil
}

func (s *Server) listen(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("xapisim: listen %s: %w", addr, err)
	}
	s.mu.Lock()
	s.addr = l.Addr().String()
	if s.cfg.TLS {
		l = tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{*s.cert}, MinVersion: tls.VersionTLS12})
	}
	s.listener = l
	s.mu.Unlock()
	s.serveWG.Add(1)
	go func() {
		defer s.serveWG.Done()
		_ = s.httpSrv.Serve(l)
	}()
	return nil
}

// Close stops everything.
func (s *Server) Close() error {
	if s.cancel != nil {
		s.cancel()
	}
	if s.httpSrv != nil {
		s.httpSrv.Close()
	}
	s.closeHostListeners()
	s.serveWG.Wait()
	return nil
}

// Addr is the host:port served.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// URL is the base URL (http:// or https://).
func (s *Server) URL() string {
	scheme := "http"
	if s.cfg.TLS {
		scheme = "https"
	}
	return scheme + "://" + s.Addr() + "/"
}

// CertPEM is the self-signed certificate (nil without TLS).
func (s *Server) CertPEM() []byte { return s.certPEM }

// CertFingerprint is the SHA-256 of the certificate's DER, lowercase hex
// without separators ("" without TLS).
func (s *Server) CertFingerprint() string { return s.certFP }

func (s *Server) makeCert() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "xapisim"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{"localhost", "xapisim"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
	}
	if h, _, err := net.SplitHostPort(s.cfg.Listen); err == nil && h != "" {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(der)
	s.certFP = hex.EncodeToString(sum[:])
	s.certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	s.cert = &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	return nil
}

func (s *Server) connState(c net.Conn, st http.ConnState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch st {
	case http.StateNew:
		s.conns[c] = struct{}{}
	case http.StateClosed, http.StateHijacked:
		delete(s.conns, c)
	}
}

// DropConnections closes every open connection, including those with a
// blocked event.from.
func (s *Server) DropConnections() {
	s.mu.Lock()
	conns := make([]net.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// ExpireSessions destroys every session; blocked event.from calls answer
// SESSION_INVALID.
func (s *Server) ExpireSessions() {
	s.mu.Lock()
	for ref, ss := range s.sessions {
		close(ss.gone)
		delete(s.sessions, ref)
	}
	s.mu.Unlock()
}

// InjectEventsLost makes the next (or the blocked) event.from of every
// session answer EVENTS_LOST.
func (s *Server) InjectEventsLost() {
	s.mu.Lock()
	for _, ss := range s.sessions {
		if !ss.eventsLost {
			ss.eventsLost = true
			close(ss.lost)
		}
	}
	s.mu.Unlock()
}

// SetSlave makes every call, login included, answer HOST_IS_SLAVE
// [masterAddr]; "" turns it off.
func (s *Server) SetSlave(masterAddr string) {
	s.mu.Lock()
	s.slaveOf = masterAddr
	s.mu.Unlock()
}

// paused reports (s.mu held) whether clients cannot get in: the endpoint is
// paused or answers HOST_IS_SLAVE.
func (s *Server) paused() bool { return s.listener == nil || s.slaveOf != "" }

// Pause closes the listener and every connection; the database is kept.
func (s *Server) Pause() {
	s.mu.Lock()
	l := s.listener
	s.listener = nil
	s.mu.Unlock()
	if l != nil {
		_ = l.Close()
	}
	s.DropConnections()
}

// Resume listens again on the same address.
func (s *Server) Resume() error {
	s.mu.Lock()
	l, addr := s.listener, s.addr
	s.mu.Unlock()
	if l != nil {
		return nil
	}
	var err error
	for i := 0; i < 50; i++ { // the port may take a moment to free
		if err = s.listen(addr); err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return err
}

// applyFault runs a scenario fault step.
func (s *Server) applyFault(st Step) {
	dur := time.Duration(st.Duration)
	if dur <= 0 {
		dur = 5 * time.Second
	}
	switch st.Fault {
	case "session_expire":
		s.ExpireSessions()
	case "events_lost":
		s.InjectEventsLost()
	case "drop_connection":
		s.DropConnections()
	case "host_is_slave":
		master := st.Master
		if master == "" { // redirect to ourselves: a client that follows it retries here
			master, _, _ = net.SplitHostPort(s.Addr())
		}
		s.SetSlave(master)
		s.engine.pending++
		s.sched.at(s.sched.now().Add(dur), func() { s.SetSlave(""); s.endFault() })
	case "pause":
		s.Pause()
		s.engine.pending++
		s.sched.at(s.sched.now().Add(dur), func() { _ = s.Resume(); s.endFault() })
	}
}

func (s *Server) endFault() {
	e := s.engine
	e.db.mu.Lock()
	e.pending--
	e.checkDone()
	e.db.mu.Unlock()
}

// batchDelay is event.from's batching delay in real time.
func (s *Server) batchDelay() time.Duration {
	sp := s.sched.speedNow()
	if sp <= 0 {
		return 0
	}
	return time.Duration(float64(s.cfg.BatchDelay) / sp)
}

// settle (speed 0) waits until every recent event.from client is blocked
// again with nothing pending, so each write batch is observed; capped at
// lockstepWait per batch so a client that went away cannot stall the player.
// lockstepWait is how long, at speed 0, the play waits for a client to come
// back to event.from before it goes on without it.
const lockstepWait = 15 * time.Second

func (s *Server) settle() {
	// Long enough for a client on a heavily loaded machine (a CI runner
	// building in parallel); it only bounds how long a dead client (one that
	// stopped calling event.from) holds the play up.
	deadline := time.Now().Add(lockstepWait)
	for time.Now().Before(deadline) {
		if s.settled() {
			return
		}
		time.Sleep(200 * time.Microsecond)
	}
}

func (s *Server) settled() bool {
	s.mu.Lock()
	ws := make([]*waiter, 0, len(s.waiters))
	waiting := map[string]bool{}
	for w := range s.waiters {
		ws = append(ws, w)
		waiting[w.sess.ref] = true
	}
	if s.paused() {
		// No client can get in until the fault's end, which is the next
		// thing to play: waiting for one would only hold it up.
		s.mu.Unlock()
		return true
	}
	live := 0
	for ref, t := range s.listeners {
		if time.Since(t) > lockstepWait || s.sessions[ref] == nil {
			delete(s.listeners, ref)
			continue
		}
		live++
		if !waiting[ref] {
			s.mu.Unlock()
			return false
		}
	}
	if live == 0 && !s.lastListen.IsZero() && time.Since(s.lastListen) < lockstepWait {
		// The client lost its session or connection: wait for it to log in
		// again and catch up, as a real pool goes on only in wall time.
		s.mu.Unlock()
		return false
	}
	db := s.engine.db
	s.mu.Unlock()
	db.mu.Lock()
	defer db.mu.Unlock()
	for _, w := range ws {
		if db.hasChanges(w.sub, w.tok) {
			return false
		}
	}
	return true
}

const internalErrorHTML = `<html><body><h1>HTTP 500 internal server error</h1>An unexpected error occurred; ` +
	`please wait a while and try again. If the problem persists, please contact your support representative.` +
	`<h1> Additional information </h1>%s</body></html>`

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodOptions {
		w.Header().Set("Access-Control-Allow-Origin", "*")
		w.Header().Set("Access-Control-Allow-Headers", "content-type")
		w.WriteHeader(http.StatusOK)
		return
	}
	if r.Method == http.MethodGet && r.URL.Path == "/audit_log" {
		s.serveAuditLog(w, r, s.masterName())
		return
	}
	if r.Method != http.MethodPost {
		http.Error(w, "xapisim: only POST is served", http.StatusNotFound)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<20))
	if err != nil {
		return
	}
	jsonRPC := r.URL.Path == "/jsonrpc"
	var req *Request
	if jsonRPC {
		req, err = ParseJSONRequest(bytes.NewReader(body))
	} else {
		req, err = ParseXMLRequest(bytes.NewReader(body))
	}
	if err != nil {
		kind := "Xmlrpc.Parse_error"
		if jsonRPC {
			kind = "Jsonrpc.Malformed_method_request"
		}
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintf(w, internalErrorHTML, kind+"("+htmlEscape(err.Error())+")")
		return
	}
	remote, _, _ := net.SplitHostPort(r.RemoteAddr)
	value, xe, bare := s.call(r.Context(), req, remote)
	if errors.Is(r.Context().Err(), context.Canceled) && xe == nil && value == nil {
		return // connection dropped while blocked
	}
	if jsonRPC {
		w.Header().Set("Content-Type", "application/json")
		var desc []string
		if xe != nil {
			desc = xe.desc()
		}
		_, _ = w.Write(JSONReply(req, value, desc))
		return
	}
	w.Header().Set("Content-Type", "text/xml")
	switch {
	case xe != nil:
		_, _ = w.Write(XMLFailure(xe.Code, xe.Params...))
	case bare:
		_, _ = w.Write(XMLBare(value))
	default:
		_, _ = w.Write(XMLSuccess(value))
	}
}

func htmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
