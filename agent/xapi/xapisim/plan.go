package xapisim

import (
	"fmt"
	"strings"
)

// plan builds the write batches of each operation, in the order of the
// reference's section 11 (xen-api message_forwarding.ml, xapi_vm*.ml).

// Default failure parameters for codes a scenario forces without params.
func defaultFailParams(code, vm string) []string {
	switch code {
	case "HOST_NOT_ENOUGH_FREE_MEMORY":
		return []string{"4294967296", "1073741824"}
	case "VM_BAD_POWER_STATE", "VM_IS_TEMPLATE", "VM_IS_SNAPSHOT":
		return []string{vm}
	case "SR_FULL":
		return []string{"107374182400", "104857600"}
	}
	return nil
}

func (r *opRun) plan() {
	e, req := r.e, r.req
	r.vm = req.vm
	if r.vm != "" {
		r.vmUUID = e.db.str("VM", r.vm, "uuid")
	}
	switch r.op {
	case "create":
		r.phases = r.planCreate()
	case "import":
		r.phases = r.planImport()
	case "make_into_template":
		r.phases = r.planConvert()
	default:
		r.phases = r.planVMOp()
	}
}

// forcedFailure returns the failure a request asks for, if any.
func (r *opRun) forcedFailure() *XenError {
	if r.req.cancel {
		return &XenError{"TASK_CANCELLED", []string{r.task}}
	}
	if r.req.fail == "" {
		return nil
	}
	p := r.req.failParams
	if p == nil {
		p = defaultFailParams(r.req.fail, r.vm)
	}
	return &XenError{r.req.fail, p}
}

// failPhase is the mid-operation failure: the VM key is removed and the
// task fails (for a cancel, the task passes through "cancelling").
func (r *opRun) failPhases(at float64, keys func()) []phase {
	var ps []phase
	if r.req.cancel {
		ps = append(ps, phase{at - 0.1, func() bool {
			r.e.db.set("task", r.task, "status", "cancelling")
			return true
		}})
	}
	return append(ps, phase{at, func() bool {
		keys()
		return r.failWith(r.forcedFailure())
	}})
}

// planVMOp covers every operation on an existing VM.
func (r *opRun) planVMOp() []phase {
	e, db := r.e, r.e.db
	vm := r.vm
	var body []phase
	start := phase{0, func() bool {
		r.beginTask()
		if vm == "" || db.get("VM", vm) == nil {
			return r.failWith(&XenError{"HANDLE_INVALID", []string{"VM", vm}})
		}
		if xe := e.check(vm, r.op); xe != nil {
			r.host = e.masterRef // refused on the master before any forwarding
			return r.failWith(xe)
		}
		r.setHosts()
		if r.op == "revert" && r.subject == "" {
			r.recreateReverted()
		}
		return true
	}}
	mark := phase{0.05, func() bool {
		e.setOp(vm, r.task, r.op)
		if r.op == "revert" {
			e.setOp(r.subject, r.task, "reverting")
		}
		return true
	}}
	unmark := func() {
		e.setOp(vm, r.task, "")
		if r.op == "revert" {
			e.setOp(r.subject, r.task, "")
		}
	}
	if r.req.fail != "" || r.req.cancel {
		at := 0.5
		if r.req.fail == "HOST_NOT_ENOUGH_FREE_MEMORY" {
			at = 0.15 // raised during host selection
		}
		return append([]phase{start, mark}, r.failPhases(at, unmark)...)
	}
	switch r.op {
	case "clone", "copy", "snapshot", "checkpoint":
		body = r.bodyDerive()
	case "start", "start_on", "resume", "resume_on":
		body = r.bodyStart()
	case "clean_shutdown", "hard_shutdown", "shutdown", "suspend":
		body = r.bodyStop()
	case "clean_reboot", "hard_reboot":
		body = []phase{{0.5, func() bool {
			db.set("VM", vm, "domid", Int(e.nextDomid(db.str("VM", vm, "resident_on"))))
			return true
		}}}
	case "pause", "unpause":
		st := map[string]string{"pause": "Paused", "unpause": "Running"}[r.op]
		body = []phase{{0.5, func() bool { db.set("VM", vm, "power_state", st); return true }}}
	case "pool_migrate", "migrate_send":
		body = r.bodyMigrate()
	case "destroy":
		return append([]phase{start, mark}, r.bodyDestroy()...)
	case "revert":
		body = r.bodyRevert()
	case "provision":
		body = []phase{{0.5, func() bool {
			db.set("VM", vm, "is_a_template", false)
			db.mapDel("VM", vm, "other_config", "disks")
			return true
		}}}
	case "export":
		body = []phase{{0.3, func() bool { r.progress(0.3); return true }},
			{0.6, func() bool { r.progress(0.7); return true }}}
	}
	end := []phase{
		{0.9, func() bool {
			unmark()
			if r.op == "revert" {
				e.setOp(vm, r.task, "")
			}
			if msg := messageFor(r.op); msg != "" {
				e.message(msg, vm, r.messageBody())
			}
			e.refreshInfo(vm)
			if r.subject != "" {
				e.refreshInfo(r.subject)
			}
			return true
		}},
		{1.0, func() bool { return r.succeed(r.resultFragment(), r.value) }},
	}
	ps := append([]phase{start, mark}, body...)
	ps = append(ps, end...)
	if r.op == "start" || r.op == "start_on" || r.op == "resume" || r.op == "resume_on" {
		// The guest agent reports its addresses after boot (VM_guest_metrics add).
		ps = append(ps, phase{1.2, func() bool {
			if db.get("VM", vm) == nil || db.str("VM", vm, "power_state") != "Running" {
				return true
			}
			gm := e.ref()
			db.create("VM_guest_metrics", gm, guestMetricsFields(e.uuid(), guestNetworks(e.ips[vm]), r.now()))
			db.set("VM", vm, "guest_metrics", gm)
			return true
		}})
	}
	return ps
}

// setHosts decides where the task runs and which host the record names.
func (r *opRun) setHosts() {
	e, db := r.e, r.e.db
	vm := r.vm
	resident := db.str("VM", vm, "resident_on")
	if resident == nullRef {
		resident = ""
	}
	switch r.op {
	case "start", "resume":
		r.host = r.req.host
		if r.host == "" {
			if a := db.str("VM", vm, "affinity"); a != nullRef && a != "" {
				r.host = a
			} else {
				r.host = e.pickHost()
			}
		}
	case "start_on", "resume_on":
		r.host = r.req.host
	case "pool_migrate", "migrate_send":
		r.host, r.dest = resident, r.req.host
		if r.host == "" {
			r.host = e.masterRef
		}
		if r.dest == "" {
			for _, h := range e.hostRefs {
				if h != r.host {
					r.dest = h
					break
				}
			}
			if r.dest == "" {
				r.dest = r.host
			}
		}
	case "revert":
		r.subject = db.str("VM", vm, "snapshot_of")
		r.host = e.masterRef
	case "clone", "copy", "snapshot":
		r.host = e.masterRef // task.resident_on is random: see README
	default:
		r.host = resident
		if r.host == "" {
			r.host = e.masterRef
		}
	}
	if r.op == "revert" && db.get("VM", r.subject) == nil {
		r.subject = ""
	}
}

func messageFor(op string) string {
	switch op {
	case "start", "start_on":
		return "VM_STARTED"
	case "clean_shutdown", "hard_shutdown", "shutdown":
		return "VM_SHUTDOWN"
	case "clean_reboot", "hard_reboot":
		return "VM_REBOOTED"
	case "suspend":
		return "VM_SUSPENDED"
	case "resume", "resume_on":
		return "VM_RESUMED"
	case "pause":
		return "VM_PAUSED"
	case "unpause":
		return "VM_UNPAUSED"
	case "snapshot":
		return "VM_SNAPSHOTTED"
	case "checkpoint":
		return "VM_CHECKPOINTED"
	case "pool_migrate", "migrate_send":
		return "VM_MIGRATED"
	}
	return ""
}

func (r *opRun) messageBody() string {
	db := r.e.db
	name := db.str("VM", r.vm, "name_label")
	switch r.op {
	case "pool_migrate", "migrate_send":
		return fmt.Sprintf("VM '%s' migrated from host '%s' to host '%s'", name,
			db.str("host", r.host, "name_label"), db.str("host", r.dest, "name_label"))
	case "start", "start_on", "resume", "resume_on":
		return fmt.Sprintf("VM '%s' started on host: %s (uuid: %s)", name,
			db.str("host", r.host, "name_label"), db.str("host", r.host, "uuid"))
	}
	return fmt.Sprintf("VM '%s' %s", name, strings.ReplaceAll(r.op, "_", " "))
}

func (r *opRun) resultFragment() string {
	switch r.op {
	case "clone", "copy", "snapshot", "checkpoint":
		r.value = r.newVMs[0]
		return XMLFragment(r.newVMs[0])
	case "migrate_send":
		r.value = r.vm
		return XMLFragment(r.vm)
	case "export":
		r.value = ""
		return ""
	}
	r.value = ""
	return XMLFragment("")
}

// forwardTask sets task.resident_on when the work runs on another host.
func (r *opRun) forwardTask(h string) {
	if h != "" && h != r.e.masterRef {
		r.e.db.set("task", r.task, "resident_on", h)
	}
}

// subtaskStart creates an internal synchronous call's sub-task
// (subtask_of = the operation's task); subtaskEnd completes and destroys it.
func (r *opRun) subtaskStart(name string) string {
	e, db := r.e, r.e.db
	st := e.ref()
	db.create("task", st, taskFields(e.uuid(), name, db.str("task", r.task, "resident_on"), r.task, r.now()))
	return st
}

func (r *opRun) subtaskEnd(st, result string) {
	db := r.e.db
	r.auditSubtask(st, db.str("task", st, "name_label"), db.str("task", st, "resident_on"))
	db.set("task", st, "allowed_operations", []string{})
	db.set("task", st, "finished", r.now())
	db.set("task", st, "progress", 1.0)
	db.set("task", st, "result", result)
	db.set("task", st, "status", "success")
	db.remove("task", st)
}

// recreateReverted brings back the destroyed VM of a snapshot being
// reverted: same uuid and name, a new ref, every snapshot of it re-pointed
// (xapi_vm_snapshot.ml create_vm_from_snapshot).
func (r *opRun) recreateReverted() {
	e, db := r.e, r.e.db
	old := db.str("VM", r.vm, "snapshot_of")
	var info *vmInfo
	for _, u := range e.vmOrder {
		if v := e.vms[u]; v.ref == old && v.destroyed {
			info = v
		}
	}
	if info == nil {
		return // unknown VM: the revert fails with HANDLE_INVALID
	}
	n := e.newVM(info.name, info.uuid, "Halted", "", false, "", "", r.now())
	e.vmOrder = e.vmOrder[:len(e.vmOrder)-1] // newVM tracked it as new: it is not
	e.vms[info.uuid] = info
	info.ref, info.destroyed = n, false
	e.vmByName[info.name] = n
	for _, ref := range db.refs("VM") {
		if db.str("VM", ref, "snapshot_of") == old {
			db.set("VM", ref, "snapshot_of", n)
		}
	}
	r.subject = n
}
