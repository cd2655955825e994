package xapisim

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"
)

// GET /audit_log, as xapi's audit_log.ml serves it on every host from that
// host's own files (reference audit-log.md §4).

const unauthorisedHTML = "<html><body><h1>HTTP 401 unauthorised</h1>Please check your credentials " +
	"and retry.</body></html>"

// hostListener serves one pool member's own HTTP endpoint (Config.HostListeners).
type hostListener struct {
	name    string
	srv     *http.Server
	addr    string
	cert    *tls.Certificate
	certPEM []byte
	certFP  string
}

// flood makes a host's next answers carry synthetic lines after the real
// ones (tests of a client's memory bounds): n lines (< 0: without end).
type flood struct {
	n       int64
	lineLen int
}

// FloodAuditLog makes host's /audit_log answers stream lines synthetic
// audit lines of about lineLen bytes after the real ones; lines < 0 streams
// without end (until the client goes away). 0 turns it off.
func (s *Server) FloodAuditLog(host string, lines int64, lineLen int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.floods == nil {
		s.floods = map[string]flood{}
	}
	if lines == 0 {
		delete(s.floods, host)
		return
	}
	s.floods[host] = flood{n: lines, lineLen: lineLen}
}

// startHostListeners gives every member its own listener (and certificate
// under TLS), serving /audit_log from that member's log.
func (s *Server) startHostListeners() error {
	e := s.eng()
	e.db.mu.Lock()
	var names []string
	for _, h := range e.hostRefs {
		if h != e.masterRef {
			names = append(names, e.db.str("host", h, "name_label"))
		}
	}
	e.db.mu.Unlock()
	for _, name := range names {
		hl := &hostListener{name: name}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("xapisim: listen for host %s: %w", name, err)
		}
		hl.addr = l.Addr().String()
		if s.cfg.TLS {
			cert, certPEM, fp, err := makeCert(s.cfg.Listen)
			if err != nil {
				l.Close()
				return err
			}
			hl.cert, hl.certPEM, hl.certFP = cert, certPEM, fp
			l = tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12})
		}
		name := name
		hl.srv = &http.Server{ReadHeaderTimeout: 30 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && r.URL.Path == "/audit_log" {
				s.serveAuditLog(w, r, name)
				return
			}
			// A member answers every API call with HOST_IS_SLAVE.
			w.Header().Set("Content-Type", "text/xml")
			host, _, _ := net.SplitHostPort(s.Addr())
			_, _ = w.Write(XMLFailure("HOST_IS_SLAVE", host))
		})}
		s.mu.Lock()
		if s.hostLn == nil {
			s.hostLn = map[string]*hostListener{}
		}
		s.hostLn[name] = hl
		s.mu.Unlock()
		s.serveWG.Add(1)
		go func() {
			defer s.serveWG.Done()
			_ = hl.srv.Serve(l)
		}()
	}
	return nil
}

// HostURL is the base URL of host's own endpoint: the master's is URL();
// a member's exists with Config.HostListeners ("" otherwise).
func (s *Server) HostURL(host string) string {
	if host == s.masterName() {
		return s.URL()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	hl := s.hostLn[host]
	if hl == nil {
		return ""
	}
	scheme := "http"
	if s.cfg.TLS {
		scheme = "https"
	}
	return scheme + "://" + hl.addr + "/"
}

// HostCertPEM is the certificate host serves (host.get_server_certificate).
func (s *Server) HostCertPEM(host string) []byte {
	if host == s.masterName() {
		return s.certPEM
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if hl := s.hostLn[host]; hl != nil {
		return hl.certPEM
	}
	return nil
}

func (s *Server) masterName() string {
	e := s.eng()
	e.db.mu.Lock()
	defer e.db.mu.Unlock()
	return e.db.str("host", e.masterRef, "name_label")
}

func (s *Server) closeHostListeners() {
	s.mu.Lock()
	ls := s.hostLn
	s.mu.Unlock()
	for _, hl := range ls {
		hl.srv.Close()
	}
}

// param reads a request parameter as xapi does: cookie first, then query
// (xapi_http.ml lookup_param_of_req).
func param(r *http.Request, name string) (string, bool) {
	if c, err := r.Cookie(name); err == nil {
		return c.Value, true
	}
	if v, ok := r.URL.Query()[name]; ok && len(v) > 0 {
		return v[0], true
	}
	return "", false
}

// serveAuditLog is audit_log.ml handler under xapi_http.ml's checks: a
// session is required (401 otherwise); the answer is 200, text/plain, no
// Content-Length, the connection closed at its end; every archive, then
// the live file, line by line, keeping lines whose 21-character header
// stamp is >= since as strings; then the poll's own audit line.
func (s *Server) serveAuditLog(w http.ResponseWriter, r *http.Request, host string) {
	sref, _ := param(r, "session_id")
	s.mu.Lock()
	sess := s.sessions[sref]
	s.mu.Unlock()
	if sess == nil {
		w.Header().Set("Content-Type", "text/html")
		w.Header().Set("Connection", "close")
		w.Header().Set("Cache-Control", "no-cache, no-store")
		w.Header().Set("WWW-Authenticate", `Basic realm="get_audit_log"`)
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(unauthorisedHTML))
		return
	}
	since, _ := param(r, "since")
	// log_timestamp_of_iso8601: every '-' and 'Z' removed, nothing else.
	since = strings.NewReplacer("-", "", "Z", "").Replace(since)
	taskID, hasTask := param(r, "task_id")
	e := s.eng()
	task := s.auditTaskStart(host, taskID, hasTask)
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "xapisim: cannot stream", http.StatusInternalServerError)
		return
	}
	conn, bw, err := hj.Hijack()
	if err != nil {
		return
	}
	// Http_svr.headers with http_200_ok: no Content-Length; the body ends
	// when the connection closes.
	bw.WriteString("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nCache-Control: no-cache, no-store\r\n" +
		"Content-Type: text/plain\r\n\r\n")
	out := bufio.NewWriterSize(conn, 64<<10)
	_ = bw.Flush()
	write := func(line string) bool {
		// audit_log.ml write_line: the line (with its "\n") must be longer
		// than 21 + the index after its first '['.
		idx := strings.IndexByte(line, '[') + 1
		if len(line)+1 <= 21+idx {
			return true
		}
		if since != "" && line[idx:idx+21] < since {
			return true
		}
		_, _ = out.WriteString(line)
		return out.WriteByte('\n') == nil
	}
	alive := true
	for _, gen := range s.audit.snapshot(host) {
		for _, line := range gen {
			if alive = write(line); !alive {
				break
			}
		}
		if !alive {
			break
		}
	}
	s.mu.Lock()
	fl, flooding := s.floods[host]
	s.mu.Unlock()
	if flooding && alive {
		pad := strings.Repeat("x", max(fl.lineLen-200, 1))
		t := s.sched.now()
		for i := int64(0); fl.n < 0 || i < fl.n; i++ {
			line := AuditEntry{Host: host, Time: t, ThreadID: 1, Task: "flood D:000000000000", TrackID: TrackID(nullRef),
				SubjectID: "LOCAL_SUPERUSER", Subject: "root", Decision: "ALLOWED", Result: "OK", CallType: "API",
				Action: "pool.set_other_config", Args: []AuditArg{{Name: "name", Value: fmt.Sprintf("%d %s", i, pad)}}}.Line()
			if _, err := out.WriteString(line + "\n"); err != nil {
				break
			}
		}
	}
	_ = out.Flush()
	_ = conn.Close()
	// The Rbac.check wrapper writes the poll's line after the handler ran.
	e.db.mu.Lock()
	ref := s.hostRef(e, host)
	args := []AuditArg{}
	if hasTask && e.db.get("task", taskID) != nil {
		args = append(args, AuditArg{Name: "task_id", Value: e.db.str("task", taskID, "name_label"),
			UUID: e.db.str("task", taskID, "uuid"), Ref: taskID})
	}
	trackid, sid, name := subjectOf(sess.info)
	e.auditOut(ref, AuditEntry{ThreadID: threadID(randomRef()), ThreadName: "INET :::80",
		Task: "handler:http/get_audit_log D:" + shortID(randomRef()), TrackID: trackid, SubjectID: sid, Subject: name,
		Decision: "ALLOWED", Result: "OK", CallType: "HTTP", Action: "http/get_audit_log", Args: args})
	s.auditTaskEnd(task)
	e.db.mu.Unlock()
	e.db.notify()
}

func (s *Server) hostRef(e *engine, name string) string {
	if r := e.hostByName[name]; r != "" {
		return r
	}
	return e.masterRef
}

// auditTaskStart makes the DB task Xapi_http.with_context creates for a
// request without task_id ("audit_log_get request", visible in event.from);
// refs come from crypto/rand, never from the scenario's id stream.
func (s *Server) auditTaskStart(host, taskID string, hasTask bool) string {
	if hasTask {
		return ""
	}
	e := s.eng()
	e.db.mu.Lock()
	ref := randomRef()
	uuid := strings.TrimPrefix(randomRef(), "OpaqueRef:")
	e.db.create("task", ref, taskFields(uuid, "audit_log_get request", s.hostRef(e, host), "",
		s.sched.now().Truncate(time.Second)))
	e.db.mu.Unlock()
	e.db.notify()
	return ref
}

// auditTaskEnd completes and destroys that task. Caller holds db.mu.
func (s *Server) auditTaskEnd(task string) {
	e := s.eng()
	if task == "" || e.db.get("task", task) == nil {
		return
	}
	e.db.set("task", task, "finished", s.sched.now().Truncate(time.Second))
	e.db.set("task", task, "progress", 1.0)
	e.db.set("task", task, "status", "success")
	e.db.remove("task", task)
}

// makeCert makes a self-signed certificate for 127.0.0.1 (and listen's
// host), returning it, its PEM and its SHA-256 fingerprint.
func makeCert(listen string) (*tls.Certificate, []byte, string, error) {
	s := &Server{cfg: Config{Listen: listen}}
	if err := s.makeCert(); err != nil {
		return nil, nil, "", err
	}
	return s.cert, s.certPEM, s.certFP, nil
}
