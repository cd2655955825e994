package xapisim

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/agent/xensource"
)

// HostLogLines returns the xensource.log lines every host of the pool would
// have written for the operations the server has finished so far, sorted by
// host then time (xensource.Render of each operation, rebuilt from the
// ground truth).
func (s *Server) HostLogLines() []xensource.HostLine {
	var out []xensource.HostLine
	for _, op := range s.logOps(nil) {
		out = append(out, xensource.Render(op)...)
	}
	out = append(out, s.sessionLines(0)...)
	sortHostLines(out)
	return out
}

// sessionLines returns the Session.create lines logged since the first n.
func (s *Server) sessionLines(n int) []xensource.HostLine {
	e := s.eng()
	e.db.mu.Lock()
	defer e.db.mu.Unlock()
	if n >= len(e.sessionLines) {
		return nil
	}
	return append([]xensource.HostLine(nil), e.sessionLines[n:]...)
}

func sortHostLines(ls []xensource.HostLine) {
	sort.SliceStable(ls, func(i, j int) bool {
		if ls[i].Host != ls[j].Host {
			return ls[i].Host < ls[j].Host
		}
		return ls[i].Time.Before(ls[j].Time)
	})
}

// checkCodes are the errors xapi raises on the coordinator before it
// forwards a call (xapi_vm_lifecycle.ml): no member logs those calls.
var checkCodes = map[string]bool{"VM_BAD_POWER_STATE": true, "VM_IS_TEMPLATE": true, "VM_IS_SNAPSHOT": true,
	"ONLY_REVERT_SNAPSHOT": true, "ONLY_PROVISION_TEMPLATE": true, "OTHER_OPERATION_IN_PROGRESS": true}

// logOps rebuilds a Render op for each finished task not in seen (which it
// updates when non-nil), in ground-truth order.
func (s *Server) logOps(seen map[string]bool) []xensource.Op {
	e := s.eng()
	e.db.mu.Lock()
	defer e.db.mu.Unlock()
	hostName := map[string]string{}
	hostAddr := map[string]string{}
	for _, h := range e.hostRefs {
		u := e.db.str("host", h, "uuid")
		hostName[u] = e.db.str("host", h, "name_label")
		hostAddr[u] = e.db.str("host", h, "address")
	}
	master := e.db.str("host", e.masterRef, "name_label")
	groups := map[string][]record.Record{}
	var order []string
	for _, r := range e.truth {
		// Setters run under a dummy task: nothing is logged with an R: id.
		// A call RBAC refused never reached message_forwarding.ml.
		if r.TaskUUID == "" || r.TaskID == "" || r.Result == record.Denied || (seen != nil && seen[r.TaskID]) {
			continue
		}
		if _, ok := groups[r.TaskID]; !ok {
			order = append(order, r.TaskID)
		}
		groups[r.TaskID] = append(groups[r.TaskID], r)
	}
	var ops []xensource.Op
	for _, id := range order {
		g := groups[id]
		if seen != nil {
			seen[id] = true
		}
		r := g[0]
		op := xensource.Op{Time: r.Start, Duration: r.End.Sub(r.Start), Host: r.HostName, Op: r.Operation,
			TaskRef: "OpaqueRef:" + id[:8] + "-" + id[8:12] + "-4000-8000-" + id, Result: string(r.Result),
			Master: master, Noise: true, Count: len(g)}
		if r.Error != "" {
			code, params, _ := strings.Cut(r.Error, ": ")
			op.ErrorInfo = []string{code}
			if params != "" {
				op.ErrorInfo = append(op.ErrorInfo, strings.Split(params, ", ")...)
			}
			op.Refused = checkCodes[code]
		}
		if d := r.DestinationHostUUID; d != "" {
			op.DestHostUUID, op.DestHost, op.DestAddress = d, hostName[d], hostAddr[d]
		}
		act := r.Activity
		switch {
		case act == record.Revert:
			op.VMUUID = r.SnapshotUUID
			if v := e.vms[r.SnapshotUUID]; v != nil {
				op.VMName = v.name
			}
		case act.Creating() && r.Result == record.Success:
			op.VMUUID, op.NewName, op.NewVMUUID = r.ParentVMUUID, r.VMName, r.VMUUID
			if v := e.vms[r.ParentVMUUID]; v != nil {
				op.VMName = v.name
			}
		default:
			op.VMUUID, op.VMName = r.VMUUID, r.VMName
		}
		ops = append(ops, op)
	}
	return ops
}

// HostLogWriter appends, while a scenario plays, the lines each host would
// log to <dir>/<host>/xensource.log, and each host's RBAC audit lines to
// <dir>/<host>/audit.log. xensource.log lines are written once every
// operation that could still log before them has finished (Lag of virtual
// time), so each file is in time order, as xapi writes it; audit lines are
// written as they are logged.
type HostLogWriter struct {
	s        *Server
	dir      string
	lag      time.Duration
	seen     map[string]bool
	sessions int // Session.create lines taken
	pending  []xensource.HostLine
	files    map[string]*bufio.Writer
	fds      map[string]*os.File
	audited  map[string]int // audit lines written per host
	mu       sync.Mutex
	stepMu   sync.Mutex
	stop     chan struct{}
	done     chan struct{}
	Lines    int64 // xensource.log lines written so far
	Audit    int64 // audit.log lines written so far
}

// WriteHostLogs starts a HostLogWriter polling every interval of real time.
// lag (virtual) must exceed the longest operation; 0 means one minute.
func (s *Server) WriteHostLogs(dir string, every, lag time.Duration) *HostLogWriter {
	if lag <= 0 {
		lag = time.Minute
	}
	if every <= 0 {
		every = 50 * time.Millisecond
	}
	w := &HostLogWriter{s: s, dir: dir, lag: lag, seen: map[string]bool{}, files: map[string]*bufio.Writer{},
		fds: map[string]*os.File{}, audited: map[string]int{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-t.C:
				w.step(false)
			}
		}
	}()
	return w
}

// Path is the log file of host.
func (w *HostLogWriter) Path(host string) string {
	return filepath.Join(w.dir, host, "xensource.log")
}

// AuditWritten is how many audit lines the writer has written so far (safe
// while it runs; the Audit field is only for after Close).
func (w *HostLogWriter) AuditWritten() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.Audit
}

// AuditPath is the audit log file of host.
func (w *HostLogWriter) AuditPath(host string) string {
	return filepath.Join(w.dir, host, "audit.log")
}

// Reopen closes the files so that the next write creates them anew (after
// a test renamed them: rsyslog's reopen on HUP).
func (w *HostLogWriter) Reopen() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closeFiles()
}

// Hold runs fn while no line is written: a rotation that must not race the
// writer (copytruncate would lose lines appended between its copy and its
// truncation, as logrotate documents).
func (w *HostLogWriter) Hold(fn func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, b := range w.files {
		b.Flush()
	}
	fn()
}

func (w *HostLogWriter) closeFiles() {
	for h, b := range w.files {
		b.Flush()
		w.fds[h].Close()
	}
	w.files, w.fds = map[string]*bufio.Writer{}, map[string]*os.File{}
}

// Close writes everything still held and closes the files.
func (w *HostLogWriter) Close(context.Context) error {
	close(w.stop)
	<-w.done
	w.step(true)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closeFiles()
	return nil
}

// Flush writes every line held back by the lag now: the end of a play
// whose clock stops (speed 0), after which the last lag of log time would
// otherwise never be written.
func (w *HostLogWriter) Flush() { w.step(true) }

func (w *HostLogWriter) step(all bool) {
	w.stepMu.Lock() // the ticker's steps and Flush
	defer w.stepMu.Unlock()
	ops := w.s.logOps(w.seen)
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, op := range ops {
		w.pending = append(w.pending, xensource.Render(op)...)
	}
	sess := w.s.sessionLines(w.sessions)
	w.sessions += len(sess)
	w.pending = append(w.pending, sess...)
	for _, h := range w.s.audit.hostNames() {
		lines, n := w.s.audit.since(h, w.audited[h])
		if len(lines) == 0 {
			continue
		}
		b := w.open(h + "\x00audit")
		if b == nil {
			continue
		}
		for _, l := range lines {
			b.WriteString(l)
			b.WriteByte('\n')
			w.Audit++
		}
		w.audited[h] = n
	}
	sort.SliceStable(w.pending, func(i, j int) bool { return w.pending[i].Time.Before(w.pending[j].Time) })
	cut := w.s.eng().sched.now().Add(-w.lag)
	k := 0
	for k < len(w.pending) && (all || w.pending[k].Time.Before(cut)) {
		hl := w.pending[k]
		b := w.open(hl.Host)
		if b == nil {
			break
		}
		b.WriteString(hl.Line)
		b.WriteByte('\n')
		w.Lines++
		k++
	}
	w.pending = w.pending[k:]
	for _, b := range w.files {
		b.Flush()
	}
}

// open returns the writer of a file: key is a host name (its
// xensource.log) or "<host>\x00audit" (its audit.log). Caller holds w.mu.
func (w *HostLogWriter) open(key string) *bufio.Writer {
	if b := w.files[key]; b != nil {
		return b
	}
	p := w.Path(key)
	if h, ok := strings.CutSuffix(key, "\x00audit"); ok {
		p = w.AuditPath(h)
	}
	_ = os.MkdirAll(filepath.Dir(p), 0o755)
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil
	}
	b := bufio.NewWriter(f)
	w.files[key], w.fds[key] = b, f
	return b
}

// HostNames returns each host's name_label → uuid, and the master's name
// (what a log reader's xensource.Config needs).
func (s *Server) HostNames() (map[string]string, string) {
	e := s.eng()
	e.db.mu.Lock()
	defer e.db.mu.Unlock()
	m := map[string]string{}
	for _, h := range e.hostRefs {
		m[e.db.str("host", h, "name_label")] = e.db.str("host", h, "uuid")
	}
	return m, e.db.str("host", e.masterRef, "name_label")
}

// Now is the simulated pool's clock (virtual time): what a log reader
// tailing the simulator's host logs must take as "now".
func (s *Server) Now() time.Time { return s.eng().sched.now() }
