package xapisim

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/agent/xensource"
)

// AuditEntry is one RBAC audit line as xapi builds it: the debug.ml header
// (with its inner UTC timestamp) and the 8-element s-expression of
// rbac_audit.ml sexpr_of (reference audit-log.md §2).
type AuditEntry struct {
	Host       string    // syslog host of the envelope
	Time       time.Time // when xapi logged it
	ThreadID   int
	Client     string // "HTTPS 10.0.0.5", or "" (no client on the thread's task)
	ThreadName string // "INET :::80", or ""
	Task       string // "Async.VM.clone R:0f3a9b2c7d1e"
	Field2     string // "" since 2019
	TrackID    string // 32 hex (without "trackid=")
	SubjectID  string
	Subject    string // subject name
	Decision   string // ALLOWED, DENIED
	Result     string // OK, ERROR:<code>: [ p; … ], ""
	CallType   string // API, HTTP
	Action     string
	Args       []AuditArg
}

// AuditArg is one argument: (name value uuid ref), or a nested list.
type AuditArg struct {
	Name, Value, UUID, Ref string
	Args                   []AuditArg // a dictionary-valued parameter (Value unused)
}

// Line renders the entry as rsyslog writes it to audit.log: traditional
// envelope (UTC here, no year), then debug.ml's header and the
// s-expression, the whole message escaped by Astring.String.Ascii.escape.
func (a AuditEntry) Line() string {
	return a.Time.UTC().Format(time.Stamp) + " " + a.Host + " xapi: " + xensource.Escape(a.Message())
}

// Message is the line without the envelope (what xapi hands to syslog,
// before escaping).
func (a AuditEntry) Message() string {
	var b strings.Builder
	b.WriteString("[")
	b.WriteString(a.Time.UTC().Format("20060102T15:04:05.000Z"))
	b.WriteString("|audit|")
	b.WriteString(a.Field2)
	b.WriteString("|")
	fmt.Fprintf(&b, "%d ", a.ThreadID)
	if a.Client != "" {
		b.WriteString(a.Client + "->")
	}
	b.WriteString(a.ThreadName)
	b.WriteString("|")
	b.WriteString(a.Task)
	b.WriteString("|audit] ")
	var sx strings.Builder
	sx.WriteByte('(')
	for _, s := range []string{"trackid=" + a.TrackID, a.SubjectID, a.Subject, a.Decision, a.Result, a.CallType, a.Action} {
		sexprString(&sx, s)
		sx.WriteByte(' ')
	}
	sexprArgs(&sx, a.Args)
	sx.WriteByte(')')
	// rbac_audit.ml audit_line_of: no newline may reach the log.
	b.WriteString(strings.NewReplacer("\n", " ", "\r", " ").Replace(sx.String()))
	return b.String()
}

// sexprString is SExpr.string_of for a String: single quotes, \ and '
// escaped with a backslash, nothing else.
func sexprString(b *strings.Builder, s string) {
	b.WriteByte('\'')
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '\\' || c == '\'' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('\'')
}

func sexprArgs(b *strings.Builder, args []AuditArg) {
	b.WriteByte('(')
	for i, a := range args {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteByte('(')
		sexprString(b, a.Name)
		b.WriteByte(' ')
		if a.Args != nil {
			sexprArgs(b, a.Args)
		} else {
			sexprString(b, a.Value)
		}
		b.WriteByte(' ')
		sexprString(b, a.UUID)
		b.WriteByte(' ')
		sexprString(b, a.Ref)
		b.WriteByte(')')
	}
	b.WriteByte(')')
}

// auditResult is the fifth element for an outcome.
func auditResult(xe *XenError) string {
	if xe == nil {
		return "OK"
	}
	// ExnHelper.string_of_exn: "CODE: [ p1; p2 ]".
	return "ERROR:" + xe.Code + ": [ " + strings.Join(xe.Params, "; ") + " ]"
}

// auditStore keeps each host's audit.log as /audit_log serves it: rotated
// generations (audit.log.N … audit.log.1, oldest first) and the live file.
type auditStore struct {
	mu    sync.Mutex
	hosts map[string]*hostAudit
	order []string
}

type hostAudit struct {
	archives [][]string // archives[0] is audit.log.1 (newest archive)
	gz       []bool
	live     []string
	total    int      // lines ever appended (for the file writer)
	all      []string // every line in order, for the file writer
}

// maxAuditLines bounds what a host keeps in memory (a generated pool runs
// hundreds of thousands of operations): beyond it the oldest are dropped,
// as logrotate's retention would.
const maxAuditLines = 200000

func newAuditStore() *auditStore { return &auditStore{hosts: map[string]*hostAudit{}} }

func (s *auditStore) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hosts, s.order = map[string]*hostAudit{}, nil
}

func (s *auditStore) host(name string) *hostAudit {
	h := s.hosts[name]
	if h == nil {
		h = &hostAudit{}
		s.hosts[name] = h
		s.order = append(s.order, name)
	}
	return h
}

func (s *auditStore) append(host, line string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.host(host)
	h.live = append(h.live, line)
	h.all = append(h.all, line)
	h.total++
	if len(h.all) > maxAuditLines {
		h.all = append([]string(nil), h.all[len(h.all)/2:]...)
	}
	if len(h.live) > maxAuditLines {
		h.rotate(true)
	}
}

// rotate moves the live file to audit.log.1 (gz: compressed), shifting the
// older generations up; more than 100 are dropped (xapi reads .100 at most).
func (h *hostAudit) rotate(gz bool) {
	h.archives = append([][]string{h.live}, h.archives...)
	h.gz = append([]bool{gz}, h.gz...)
	if len(h.archives) > 100 {
		h.archives, h.gz = h.archives[:100], h.gz[:100]
	}
	h.live = nil
}

// snapshot returns the lines /audit_log streams, in its order: audit.log.N
// down to audit.log.1, then audit.log (audit_log.ml transfer_all_audit_files).
func (s *auditStore) snapshot(host string) [][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.hosts[host]
	if h == nil {
		return nil
	}
	out := make([][]string, 0, len(h.archives)+1)
	for i := len(h.archives) - 1; i >= 0; i-- {
		out = append(out, h.archives[i])
	}
	return append(out, h.live[:len(h.live):len(h.live)])
}

// since returns the lines a file writer has not written yet.
func (s *auditStore) since(host string, n int) ([]string, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.hosts[host]
	if h == nil {
		return nil, n
	}
	if n >= h.total {
		return nil, n
	}
	k := h.total - n
	if k > len(h.all) {
		k = len(h.all) // dropped from memory: lost, as a rotated-away file would be
	}
	return append([]string(nil), h.all[len(h.all)-k:]...), h.total
}

func (s *auditStore) hostNames() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.order...)
}

// AuditLines returns every line host's audit.log holds now, oldest first.
func (s *Server) AuditLines(host string) []string {
	var out []string
	for _, g := range s.audit.snapshot(host) {
		out = append(out, g...)
	}
	return out
}

// RotateAudit rotates host's audit.log as logrotate would: the live file
// becomes audit.log.1 (gzip-compressed if gz), older generations move up.
// /audit_log keeps serving them all, oldest first.
func (s *Server) RotateAudit(host string, gz bool) {
	s.audit.mu.Lock()
	defer s.audit.mu.Unlock()
	s.audit.host(host).rotate(gz)
}

// AppendAuditLine writes a raw line into host's audit.log (tests: lines
// xapi's own writer would never produce, such as malformed ones).
func (s *Server) AppendAuditLine(host, line string) { s.audit.append(host, line) }

// ---- the engine side: who logs what, when ----

// auditOut writes one entry to host's log (a no-op in ground-truth runs).
func (e *engine) auditOut(hostRef string, a AuditEntry) {
	if e.auditSink == nil {
		return
	}
	a.Host = e.db.str("host", hostRef, "name_label")
	if a.Time.IsZero() {
		a.Time = e.sched.now()
	}
	e.auditSink(a.Host, a.Line())
}

// threadID is a plausible OCaml thread id for a task, stable across runs.
func threadID(key string) int { return seededInt(1000, 400000, "tid", key) }

func clientOf(u *userInfo) string {
	if u == nil || u.spec.ClientIP == "" {
		return ""
	}
	return "HTTPS " + u.spec.ClientIP
}

// subjectOf returns the user's audit identity.
func subjectOf(u *userInfo) (trackid, id, name string) {
	if u == nil {
		return TrackID(nullRef), "LOCAL_SUPERUSER", ""
	}
	return u.trackid, u.spec.SubjectID, u.spec.Name
}

// vmArg renders a VM reference argument with the DB cache's name and uuid
// (rbac_audit.ml heuristic 2), or the bare ref when the VM is gone.
func (e *engine) vmArg(name, ref string) AuditArg {
	if ref == "" {
		ref = nullRef
	}
	if e.db.get("VM", ref) == nil {
		return AuditArg{Name: name, Ref: ref}
	}
	return AuditArg{Name: name, Value: e.db.str("VM", ref, "name_label"), UUID: e.db.str("VM", ref, "uuid"), Ref: ref}
}

func (e *engine) hostArg(name, ref string) AuditArg {
	if ref == "" || e.db.get("host", ref) == nil {
		return AuditArg{Name: name, Ref: ref}
	}
	return AuditArg{Name: name, Value: e.db.str("host", ref, "name_label"), UUID: e.db.str("host", ref, "uuid"), Ref: ref}
}

// srArg is the pool's (unmodelled) local SR, stable per pool.
func (e *engine) srArg() AuditArg {
	u := seeded(e.poolUUID, "sr")
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return AuditArg{Name: "sr", Value: "Local storage",
		UUID: fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16]),
		Ref:  seededRef(e.poolUUID, "sr-ref")}
}

// permission is the RBAC permission a call checks: the wire name without
// Async., or http/<handler> for the HTTP handlers.
func (r *opRun) permission() string {
	switch {
	case r.isHTTP() && r.op == "export":
		return "http/get_export"
	case r.isHTTP() && r.op == "import":
		return "http/put_import"
	case r.op == "make_into_template":
		return "VM.set_is_a_template"
	}
	return "VM." + r.op
}

// isHTTP: a scenario's import and export go through the HTTP handlers.
func (r *opRun) isHTTP() bool {
	return (r.op == "import" || r.op == "export") && r.req.fromScenario
}

// callArgs are the arguments rbac_audit.ml logs for the call (declared
// parameter order; session_id, non-ref values and non-descriptive
// parameters dropped).
func (r *opRun) callArgs() []AuditArg {
	e := r.e
	vm := e.vmArg("vm", r.vm)
	boolArgs := []AuditArg{{Name: "start_paused", Value: "B(false)"}, {Name: "force", Value: "B(false)"}}
	switch r.op {
	case "clone", "snapshot", "checkpoint":
		return []AuditArg{vm, {Name: "new_name", Value: r.newName(0)}}
	case "copy":
		return []AuditArg{vm, {Name: "new_name", Value: r.newName(0)}, e.srArg()}
	case "start":
		return append([]AuditArg{vm}, boolArgs...)
	case "start_on":
		return append([]AuditArg{vm, e.hostArg("host", r.req.host)}, boolArgs...)
	case "resume_on", "pool_migrate":
		return []AuditArg{vm, e.hostArg("host", r.req.host)}
	case "destroy", "make_into_template":
		if r.preArgs != nil {
			return r.preArgs
		}
		a := vm
		a.Name = "self"
		return []AuditArg{a}
	case "revert":
		a := vm
		a.Name = "snapshot"
		return []AuditArg{a}
	case "create":
		return []AuditArg{{Name: "name_label", Value: r.newName(0)}, {Name: "name_description"},
			{Name: "is_a_template", Value: "B(false)"}}
	case "import":
		if r.isHTTP() {
			return r.taskArgs()
		}
		return []AuditArg{e.srArg()}
	case "export":
		a := vm
		a.Name = "ref"
		return append([]AuditArg{a}, r.taskArgs()...)
	}
	return []AuditArg{vm}
}

// taskArgs is the task_id query argument of an HTTP call whose client
// passed one (the task is in the DB cache: name, uuid and ref).
func (r *opRun) taskArgs() []AuditArg {
	if !strings.HasPrefix(r.task, "OpaqueRef:") || r.e.db.get("task", r.task) == nil {
		return nil
	}
	db := r.e.db
	return []AuditArg{{Name: "task_id", Value: db.str("task", r.task, "name_label"), UUID: db.str("task", r.task, "uuid"), Ref: r.task}}
}

// memberCopy turns coordinator arguments into what a member logs for the
// same forwarded call: refs without names or uuids (members have no DB
// cache), descriptive values kept.
func memberCopy(args []AuditArg) []AuditArg {
	out := make([]AuditArg, len(args))
	for i, a := range args {
		if strings.HasPrefix(a.Ref, "OpaqueRef:") {
			a.Value, a.UUID = "", ""
		}
		out[i] = a
	}
	return out
}

// taskField is the header's task: "<task name> R:<12 hex>" (Context.make_dbg).
func (r *opRun) taskField() string {
	if strings.HasPrefix(r.task, "DummyRef:") {
		return "VM.set_is_a_template D:" + shortID(r.task)
	}
	label := r.req.label
	if label == "" {
		label = taskLabel(r.op, r.req.async)
	}
	return label + " R:" + shortID(r.task)
}

// handlerTask is the dummy task Rbac.check_with_new_task makes for an HTTP
// handler's check: "handler:http/<name> D:<12 hex>".
func handlerTask(action, key string) string {
	return "handler:" + action + " D:" + seededShort("handler", key)
}

// seededShort is the 12-hex short id of a seeded ref.
func seededShort(parts ...string) string { return record.TaskShortID(seededRef(parts...)) }

// entry fills the fields every line of this call shares.
func (r *opRun) entry() AuditEntry {
	trackid, sid, name := subjectOf(r.req.user)
	a := AuditEntry{ThreadID: threadID(r.task), Client: clientOf(r.req.user), Task: r.taskField(),
		TrackID: trackid, SubjectID: sid, Subject: name, Decision: "ALLOWED", CallType: "API",
		Action: r.permission()}
	if !r.req.async {
		a.ThreadName = "INET :::80"
	}
	return a
}

// httpEntry is a line of an HTTP handler's check (no client on its task).
func (r *opRun) httpEntry(which string) AuditEntry {
	a := r.entry()
	a.CallType, a.Client, a.ThreadName = "HTTP", "", "INET :::80"
	a.Task = handlerTask(a.Action, r.task+which)
	a.Args = r.callArgs()
	return a
}

// auditHTTPStart writes the line Export.handler / Import.handler write when
// they begin (assert_credentials_ok without fn): before the transfer.
func (r *opRun) auditHTTPStart() {
	if !r.isHTTP() || r.denied {
		return
	}
	a := r.httpEntry("start")
	a.Result = "OK"
	r.e.auditOut(r.e.masterRef, a)
}

// auditFinish writes the lines of a call that ran: the member's copy when
// the coordinator forwarded it, then the coordinator's line with the actor
// (written after the forwarded call returned).
func (r *opRun) auditFinish(xe *XenError) {
	e := r.e
	if e.auditSink == nil || r.denied {
		return
	}
	if r.isHTTP() {
		a := r.httpEntry("end")
		a.Result = auditResult(xe)
		e.auditOut(e.masterRef, a)
		return
	}
	a := r.entry()
	a.Result = auditResult(xe)
	a.Args = r.callArgs()
	// Checks and host selection fail on the coordinator: nothing forwarded.
	refused := xe != nil && (checkCodes[xe.Code] || xe.Code == "HOST_NOT_ENOUGH_FREE_MEMORY")
	if !refused && r.host != "" && r.host != e.masterRef && !xensourceOnCoordinator[r.op] {
		m := a
		m.Time = e.sched.now().Add(-3 * time.Millisecond)
		m.TrackID = TrackID(seededRef("forward", r.task))
		m.SubjectID, m.Subject, m.Client = "LOCAL_SUPERUSER", "", ""
		m.ThreadID, m.ThreadName = threadID(r.task+"member"), "INET :::443"
		m.Args = memberCopy(a.Args)
		e.auditOut(r.host, m)
	}
	e.auditOut(e.masterRef, a)
}

// xensourceOnCoordinator lists the operations xapi runs on the coordinator
// (the same rule as xensource.Render's log writer).
var xensourceOnCoordinator = map[string]bool{
	"clone": true, "copy": true, "snapshot": true, "destroy": true, "revert": true, "create": true,
	"provision": true, "import": true, "export": true, "make_into_template": true,
}

// auditSubtask writes the internal call xapi makes itself (Async.VDI.clone
// during VM.clone): a slave_login session named after the host.
func (r *opRun) auditSubtask(sub, name, host string) {
	e := r.e
	if e.auditSink == nil {
		return
	}
	if host == "" || host == nullRef {
		host = e.masterRef
	}
	label := name
	if !strings.HasPrefix(label, "Async.") {
		label = "Async." + label
	}
	arg := AuditArg{Name: "vdi", Ref: seededRef("vdi", sub)}
	if strings.HasPrefix(name, "VM.") {
		arg = e.vmArg("vm", r.subject)
	}
	e.auditOut(host, AuditEntry{ThreadID: threadID(sub), Task: label + " R:" + shortID(sub),
		TrackID: TrackID(seededRef("slave_login", sub)), SubjectID: "LOCAL_SUPERUSER", Subject: host,
		Decision: "ALLOWED", Result: "OK", CallType: "API", Action: name, Args: []AuditArg{arg}})
}

// auditTaskDestroy writes the scenario client's task.destroy.
func (e *engine) auditTaskDestroy(u *userInfo, task string) {
	if e.auditSink == nil || e.db.get("task", task) == nil {
		return
	}
	trackid, sid, name := subjectOf(u)
	d := "task.destroy D:" + seededShort("destroy", task)
	e.auditOut(e.masterRef, AuditEntry{ThreadID: threadID(task + "destroy"), Client: clientOf(u), ThreadName: "INET :::80",
		Task: d, TrackID: trackid, SubjectID: sid, Subject: name, Decision: "ALLOWED", Result: "OK",
		CallType: "API", Action: "task.destroy",
		Args: []AuditArg{{Name: "self", Value: e.db.str("task", task, "name_label"), UUID: e.db.str("task", task, "uuid"), Ref: task}}})
}

// deny refuses the call as Rbac.check does: the DENIED line, then
// RBAC_PERMISSION_DENIED. An async call (or an HTTP call given a task_id)
// has a task, which fails with that error; a sync call's task never
// reaches anyone, so only the audit line tells.
func (r *opRun) deny() bool {
	e := r.e
	perm := r.permission()
	xe := deniedError(perm)
	r.host = e.masterRef
	r.denied = true
	withTask := r.req.async
	if withTask {
		r.beginTask()
	} else if r.isHTTP() {
		// The handler's own dummy task is all there is.
		r.task = "DummyRef:|" + e.uuid() + "|" + perm
	} else {
		r.task = e.ref() // the task xapi made and dropped at once
		r.taskUUID = ""
	}
	a := r.entry()
	if r.isHTTP() {
		a = r.httpEntry("denied")
		if !withTask {
			a.Task = "handler:" + perm + " D:" + shortID(r.task)
		}
	} else {
		a.Args = r.callArgs()
	}
	a.Decision, a.Result = "DENIED", ""
	e.auditOut(e.masterRef, a)
	if withTask {
		return r.failWith(xe)
	}
	r.finished = true
	rec := r.deniedRecord(xe)
	rec.Source = record.SourceAudit
	rec.Start, rec.End = e.sched.now().Truncate(time.Millisecond), e.sched.now().Truncate(time.Millisecond)
	e.denied = append(e.denied, rec)
	if r.req.done != nil {
		r.req.done <- opResult{err: xe}
		r.req.done = nil
	}
	return false
}

// deniedRecord is the record of a refused call: the VM it was aimed at
// (for a creating activity the source, as for any failure).
func (r *opRun) deniedRecord(xe *XenError) record.Record {
	e := r.e
	rec := record.Record{PoolUUID: e.poolUUID, Activity: activityOf(r.op), Operation: r.op, Start: r.created,
		End: r.created, Result: record.Denied, Error: xe.Error(), TaskID: shortID(r.task), Source: record.SourceXAPI,
		HostUUID: e.db.str("host", e.masterRef, "uuid"), HostName: e.db.str("host", e.masterRef, "name_label")}
	rec.ID = record.ID(e.poolUUID, rec.TaskID, 0)
	if strings.HasPrefix(r.task, "OpaqueRef:") && e.db.get("task", r.task) != nil {
		rec.TaskUUID = r.taskUUID
	}
	if info := e.vms[r.vmUUID]; info != nil {
		rec.VMUUID, rec.VMName, rec.ParentVMUUID = info.uuid, info.name, info.parent
	} else {
		rec.Unknown = []string{"vm_uuid"}
	}
	if r.req.user != nil {
		rec.Actor = r.req.user.actor()
	}
	return rec
}

// ---- sessions ----

// sessionLine is xapi_session.ml's Session.create info line in
// xensource.log (CP-982: it ties a trackid to a user name and originator).
func (e *engine) sessionLine(u *userInfo, t time.Time) {
	tid := threadID(u.session)
	client := ""
	if u.spec.ClientIP != "" {
		client = "HTTPS " + u.spec.ClientIP + "->"
	}
	sid := ""
	if !u.superuser() {
		sid = u.spec.SubjectID
	}
	dbg := "session.login_with_password D:" + seededShort("login", u.session)
	msg := fmt.Sprintf("Session.create trackid=%s pool=false uname=%s originator=%s is_local_superuser=%t auth_user_sid=%s parent=trackid=%s",
		u.trackid, u.spec.Uname, u.spec.Originator, u.superuser(), sid, TrackID(nullRef))
	host := e.db.str("host", e.masterRef, "name_label")
	hdr := fmt.Sprintf("[%5s||%d %s|%s|%s] %s", "info", tid, client, dbg, "xapi_session", msg)
	e.sessionLines = append(e.sessionLines, xensource.HostLine{Host: host, Time: t,
		Line: t.UTC().Format(time.Stamp) + " " + host + " xapi: " + xensource.Escape(hdr)})
	if !u.superuser() {
		// Rbac_audit.session_create: only sessions that are neither
		// intra-pool nor the local superuser's.
		e.auditOut(e.masterRef, AuditEntry{Time: t, ThreadID: tid, Client: clientOf(u), Task: dbg,
			TrackID: u.trackid, SubjectID: u.spec.SubjectID, Subject: u.spec.Name, Decision: "ALLOWED",
			Result: "OK", CallType: "API", Action: "session.create",
			Args: []AuditArg{{Name: "uname", Value: u.spec.Uname}, {Name: "originator", Value: u.spec.Originator}}})
	}
}

// loginUsers opens each scenario user's session when the scenario starts.
func (e *engine) loginUsers() {
	e.db.mu.Lock()
	defer e.db.mu.Unlock()
	for _, name := range e.userOrder {
		e.sessionLine(e.users[name], e.sched.now())
	}
}

// newUsers builds the scenario's users and their deterministic sessions.
func newUsers(sc *Scenario) (map[string]*userInfo, []string) {
	specs := sc.Users
	if len(specs) == 0 {
		specs = []UserSpec{defaultUser}
	}
	m := map[string]*userInfo{}
	var order []string
	for _, s := range specs {
		ref := seededRef("session", sc.Name, fmt.Sprint(sc.Seed), s.Name)
		m[s.Name] = &userInfo{spec: s, session: ref, trackid: TrackID(ref)}
		order = append(order, s.Name)
	}
	return m, order
}

// Denied returns the records of every call RBAC refused so far. Those that
// left no task behind (synchronous calls, HTTP requests without a task_id)
// have source audit.log: only the audit log knows them. A refused async
// call's task fails with RBAC_PERMISSION_DENIED: its record (source xapi,
// same id) is also in Truth's records.
func (s *Server) Denied() []record.Record {
	e := s.eng()
	e.db.mu.Lock()
	defer e.db.mu.Unlock()
	return append([]record.Record(nil), e.denied...)
}
