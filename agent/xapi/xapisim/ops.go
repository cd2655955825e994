package xapisim

import (
	"strings"
	"time"

	"github.com/vmlineage/vmlineage/agent/record"
)

// XenError is a XenAPI failure (ErrorDescription = Code, Params...).
type XenError struct {
	Code   string
	Params []string
}

func (e *XenError) Error() string {
	if len(e.Params) == 0 {
		return e.Code
	}
	return e.Code + ": " + strings.Join(e.Params, ", ")
}

func (e *XenError) desc() []string { return append([]string{e.Code}, e.Params...) }

// opReq is one lifecycle call, from a scenario step or an API client.
type opReq struct {
	op           string // canonical vm_operation (or create/import)
	vm, host     string // refs
	newNames     []string
	newUUIDs     []string
	ip, mac      string
	async        bool
	duration     time.Duration
	fail         string
	failParams   []string
	cancel       bool
	keepTask     bool
	destroyAfter time.Duration
	fromScenario bool
	label        string // task name_label override (HTTP handlers)
	user         *userInfo
	denied       bool // refused whatever the user's role (a scenario's "denied")

	started chan string   // async: the task ref once it exists
	done    chan opResult // sync: the reply
}

type opResult struct {
	value any
	err   *XenError
}

// canonicalOp maps scenario op names to vm_operations values.
func canonicalOp(op string) string {
	switch op {
	case "reboot":
		return "clean_reboot"
	case "convert_to_template", "set_is_a_template":
		return "make_into_template"
	case "migrate":
		return "pool_migrate"
	}
	return op
}

// defaultDuration is the virtual time an operation takes unless the step
// says otherwise.
func defaultDuration(op string) time.Duration {
	switch op {
	case "clone":
		return 3 * time.Second
	case "copy", "export", "import":
		return 10 * time.Second
	case "snapshot":
		return 2 * time.Second
	case "checkpoint", "reboot", "clean_reboot", "hard_reboot", "revert":
		return 5 * time.Second
	case "start", "start_on", "resume", "resume_on", "clean_shutdown", "shutdown", "suspend":
		return 4 * time.Second
	case "pool_migrate":
		return 8 * time.Second
	case "migrate_send":
		return 15 * time.Second
	case "provision":
		return 2 * time.Second
	case "make_into_template":
		return 200 * time.Millisecond
	}
	return time.Second
}

// activityOf maps a vm_operation to the record activity.
func activityOf(op string) record.Activity {
	switch op {
	case "create", "import", "clone", "copy", "snapshot", "checkpoint", "revert", "start", "suspend",
		"pause", "unpause", "export", "destroy":
		return record.Activity(op)
	case "start_on":
		return record.Start
	case "clean_shutdown", "hard_shutdown", "shutdown":
		return record.Shutdown
	case "clean_reboot", "hard_reboot":
		return record.Reboot
	case "resume", "resume_on":
		return record.Resume
	case "pool_migrate", "migrate_send":
		return record.Migrate
	case "make_into_template":
		return record.ConvertToTemplate
	}
	return record.Other
}

// taskLabel is the task name_label: the wire method name.
func taskLabel(op string, async bool) string {
	m := "VM." + op
	switch op {
	case "make_into_template":
		m = "VM.set_is_a_template"
	case "import", "export":
		return "VM." + op // HTTP handlers label their own task
	}
	if async {
		return "Async." + m
	}
	return m
}

// phase is one batch of writes at a fraction of the operation's duration.
// It returns false when the operation is over.
type phase struct {
	at float64
	fn func() bool
}

// opRun is one running operation.
type opRun struct {
	e        *engine
	req      *opReq
	op       string
	task     string // task ref, or the DummyRef key for setters
	taskUUID string
	vm       string // target VM ref (the snapshot for revert)
	vmUUID   string
	subject  string // VM ref the record is about (revert: the reverted VM)
	start    time.Time
	created  time.Time
	dur      time.Duration
	host     string // record host ref
	dest     string // migrate destination
	newVMs   []string
	result   string
	value    any
	phases   []phase
	finished bool
	denied   bool       // RBAC refused the call
	preArgs  []AuditArg // audit arguments taken before the call (destroy: allowed_pre_fn)
}

// launch schedules req to start at vt. Caller holds db.mu or runs inside a
// scheduler item; the first phase runs as its own item.
func (e *engine) launch(vt time.Time, req *opReq) {
	e.pending++
	e.sched.at(vt, func() { e.begin(req) })
}

func (e *engine) begin(req *opReq) {
	e.db.mu.Lock()
	r := &opRun{e: e, req: req, op: req.op, start: e.sched.now(), dur: req.duration}
	if r.dur <= 0 {
		r.dur = defaultDuration(r.op)
	}
	r.created = r.start.Truncate(time.Second)
	r.plan()
	if u := req.user; u != nil && (req.denied || !u.permitted(r.permission())) {
		r.phases = []phase{{0, r.deny}}
	} else if r.op == "destroy" || r.op == "make_into_template" {
		r.preArgs = r.callArgs() // Rbac_audit.allowed_pre_fn: while the VM exists
	}
	e.db.mu.Unlock()
	r.next(0)
}

// next runs phase i now and schedules phase i+1.
func (r *opRun) next(i int) {
	e := r.e
	e.db.mu.Lock()
	cont := r.runPhase(i)
	e.db.mu.Unlock()
	e.db.notify()
	if !cont || i+1 >= len(r.phases) {
		if !r.finished {
			panic("xapisim: operation " + r.op + " ended without finishing its task")
		}
		e.db.mu.Lock()
		e.pending--
		e.checkDone()
		e.db.mu.Unlock()
		return
	}
	at := r.start.Add(time.Duration(r.phases[i+1].at * float64(r.dur)))
	e.sched.at(at, func() { r.next(i + 1) })
}

// runPhase runs one phase. Generated pools run many operations at once, and a
// concurrent destroy can remove a row a phase still reads: the operation then
// fails as xapi's would, with HANDLE_INVALID, instead of taking the
// simulator down. Caller holds db.mu.
func (r *opRun) runPhase(i int) (cont bool) {
	defer func() {
		if p := recover(); p != nil {
			cont = false
			if r.finished {
				return
			}
			xe := errf("HANDLE_INVALID", "VM", r.vm)
			func() {
				defer func() {
					if recover() != nil && !r.finished {
						r.finish(record.Failure, xe)
					}
				}()
				if r.e.db.get("task", r.task) != nil || !strings.HasPrefix(r.task, "OpaqueRef:") {
					r.failWith(xe)
				} else {
					r.finish(record.Failure, xe)
				}
			}()
		}
	}()
	return r.phases[i].fn()
}

func (e *engine) checkDone() {
	if e.stepsIn && e.pending == 0 {
		select {
		case <-e.done:
		default:
			close(e.done)
		}
	}
}

// now is the virtual time at second resolution, as xapi's datetimes.
func (r *opRun) now() time.Time { return r.e.sched.now().Truncate(time.Second) }

// beginTask creates the task row (status pending, resident on the master).
func (r *opRun) beginTask() {
	e := r.e
	r.task = e.ref()
	r.taskUUID = e.uuid()
	label := r.req.label
	if label == "" {
		label = taskLabel(r.op, r.req.async)
	}
	e.db.create("task", r.task, taskFields(r.taskUUID, label, e.masterRef, "", r.created))
	if r.req.started != nil {
		r.req.started <- r.task
		r.req.started = nil
	}
	r.auditHTTPStart()
}

// progress writes task.progress.
func (r *opRun) progress(p float64) { r.e.db.set("task", r.task, "progress", p) }

// succeed completes the task (taskHelper.complete: five writes).
func (r *opRun) succeed(result string, value any) bool {
	r.result, r.value = result, value
	if !strings.HasPrefix(r.task, "DummyRef:") {
		db := r.e.db
		db.set("task", r.task, "allowed_operations", []string{})
		db.set("task", r.task, "finished", r.now())
		db.set("task", r.task, "progress", 1.0)
		db.set("task", r.task, "result", result)
		db.set("task", r.task, "status", "success")
	}
	r.finish(record.Success, nil)
	return true
}

// failWith completes the task as failed (or cancelled for TASK_CANCELLED).
func (r *opRun) failWith(xe *XenError) bool {
	status, res := "failure", record.Failure
	switch xe.Code {
	case "TASK_CANCELLED":
		status, res = "cancelled", record.Cancelled
	case "RBAC_PERMISSION_DENIED":
		res = record.Denied
	}
	if !strings.HasPrefix(r.task, "DummyRef:") {
		db := r.e.db
		db.set("task", r.task, "progress", 1.0)
		db.set("task", r.task, "error_info", xe.desc())
		db.set("task", r.task, "backtrace", "((process xapi)(filename ocaml/xapi/message_forwarding.ml)(line 140))")
		db.set("task", r.task, "finished", r.now())
		db.set("task", r.task, "allowed_operations", []string{})
		db.set("task", r.task, "status", status)
	}
	r.finish(res, xe)
	return false
}

// finish writes the ground-truth record, destroys sync tasks, answers the
// caller and schedules the scenario client's task.destroy.
func (r *opRun) finish(res record.Result, xe *XenError) {
	e := r.e
	r.finished = true
	r.auditFinish(xe)
	r.emit(res, xe)
	isTask := strings.HasPrefix(r.task, "OpaqueRef:")
	if isTask && !r.req.async {
		e.db.remove("task", r.task)
	}
	if r.req.done != nil {
		if r.req.async {
			r.req.done <- opResult{value: r.task}
		} else {
			r.req.done <- opResult{value: r.value, err: xe}
		}
		r.req.done = nil
	}
	if isTask && r.req.async && r.req.fromScenario && !r.req.keepTask {
		after := r.req.destroyAfter
		if after <= 0 {
			after = time.Second
		}
		task, user := r.task, r.req.user
		e.pending++
		e.sched.at(e.sched.now().Add(after), func() {
			e.db.mu.Lock()
			e.auditTaskDestroy(user, task)
			e.db.remove("task", task)
			e.pending--
			e.checkDone()
			e.db.mu.Unlock()
			e.db.notify()
		})
	}
}

// shortID is the record task_id: TaskShortID of the task ref, or for a
// setter's DummyRef:|uuid|name key the same digits of the uuid inside.
func shortID(task string) string {
	if s := record.TaskShortID(task); s != "" {
		return s
	}
	if rest, ok := strings.CutPrefix(task, "DummyRef:|"); ok {
		return record.TaskShortID("OpaqueRef:" + rest)
	}
	return ""
}

// emit appends the ground-truth record(s) of the finished operation.
func (r *opRun) emit(res record.Result, xe *XenError) {
	e := r.e
	act := activityOf(r.op)
	base := record.Record{
		PoolUUID: e.poolUUID, Activity: act, Operation: r.op, Start: r.created, End: r.now(),
		Result: res, TaskID: shortID(r.task), Source: record.SourceXAPI,
	}
	if strings.HasPrefix(r.task, "OpaqueRef:") {
		base.TaskUUID = r.taskUUID
	}
	if xe != nil {
		base.Error = xe.Error()
	}
	if r.req.user != nil {
		base.Actor = r.req.user.actor()
	}
	if r.host != "" {
		base.HostUUID = e.db.str("host", r.host, "uuid")
		base.HostName = e.db.str("host", r.host, "name_label")
	}
	if r.dest != "" {
		base.DestinationHostUUID = e.db.str("host", r.dest, "uuid")
	}
	if act == record.Revert {
		base.SnapshotUUID = r.vmUUIDOf(r.vm) // the snapshot reverted to (record.Record.SnapshotUUID)
	}
	if act.Creating() && res == record.Success {
		for i, n := range r.newVMs {
			rec := base
			rec.ID = record.ID(e.poolUUID, base.TaskID, i)
			info := e.vms[e.db.str("VM", n, "uuid")]
			rec.VMUUID, rec.VMName, rec.ParentVMUUID = info.uuid, info.name, info.parent
			e.truth = append(e.truth, rec)
		}
		return
	}
	if res == record.Denied {
		e.truth = append(e.truth, r.deniedRecord(xe))
		e.denied = append(e.denied, r.deniedRecord(xe))
		return
	}
	rec := base
	rec.ID = record.ID(e.poolUUID, base.TaskID, 0)
	subject := r.subject
	if subject == "" {
		subject = r.vm
	}
	if info := e.vms[r.vmUUIDOf(subject)]; info != nil {
		rec.VMUUID, rec.VMName, rec.ParentVMUUID = info.uuid, info.name, info.parent
	} else {
		rec.Unknown = []string{"vm_uuid"}
	}
	e.truth = append(e.truth, rec)
}

func (r *opRun) vmUUIDOf(ref string) string {
	if ref == "" {
		return ""
	}
	if ref == r.vm && r.vmUUID != "" {
		return r.vmUUID
	}
	return r.e.db.str("VM", ref, "uuid")
}
