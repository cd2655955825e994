package xensource

import (
	"fmt"
	"strings"
	"time"
)

// body writes the lines of a successful operation on the executing host(s);
// its last line is at the task's end (reference §5 per-activity markers).
func (w *writer) body() {
	op, m, u := w.op, w.m, w.op.VMUUID
	switch op.Op {
	case "start", "start_on", "resume", "resume_on":
		w.xapi(m, 0.1, "debug", "xenops", "Sending VM "+w.vmRef+" configuration to xenopsd")
		atom := fmt.Sprintf(`["VM_start",["%s",false]]`, u)
		if strings.HasPrefix(op.Op, "resume") {
			w.xapi(m, 0.15, "info", "xenops", "Xapi_xenops.resume: VM.resume "+u+` from ["VDI","`+w.uuid()+"/"+w.uuid()+`"]`)
			atom = fmt.Sprintf(`["VM_resume",["%s",["Disk",["VDI","%s"]]]]`, u, w.uuid())
		} else {
			w.xapi(m, 0.15, "info", "xenops", "xenops: VM.start "+u)
		}
		w.xenopsdTask(m, 0.2, 0.8, atom)
		w.xenopsd(m, 0.5, "xenops_server", fmt.Sprintf("VM.start %s (force=false)", u))
		w.xapi(m, 0.85, "info", "xenops", "xenops: Queueing VM.unpause "+u)
		w.powerState(m, "Running")
	case "clean_shutdown", "hard_shutdown", "shutdown":
		during := op.Op
		if during == "shutdown" {
			during = "clean_shutdown" // VM.shutdown runs clean_shutdown (hard on failure)
		}
		w.xapi(m, 0.1, "debug", "xapi_vm", "Setting ha_always_run on vm="+w.vmRef+" as false during VM."+during)
		w.xapi(m, 0.15, "info", "xenops", "xenops: VM.shutdown "+u)
		w.xenopsdTask(m, 0.2, 0.9, fmt.Sprintf(`["VM_poweroff",["%s",null]]`, u))
		w.xenopsd(m, 0.3, "xenops_server", "VM.poweroff "+u)
		w.powerState(m, "Halted")
	case "clean_reboot", "hard_reboot":
		w.xapi(m, 0.1, "info", "xenops", "xenops: VM.reboot "+u)
		w.xenopsd(m, 0.2, "xenops_server", "VM.reboot "+u)
		w.xenopsdTask(m, 0.25, 1, fmt.Sprintf(`["VM_reboot",["%s",null]]`, u))
	case "suspend":
		w.xapi(m, 0.1, "debug", "xapi_vm", "Setting ha_always_run on vm="+w.vmRef+" as false during VM.suspend")
		w.xapi(m, 0.15, "info", "xenops", "xenops: VM.suspend "+u+` to ["VDI","`+w.uuid()+"/"+w.uuid()+`"]`)
		w.xenopsd(m, 0.3, "xenops_server", "VM.suspend "+u)
		w.xenopsdTask(m, 0.2, 0.9, fmt.Sprintf(`["VM_suspend",["%s",["Disk",["VDI","%s"]]]]`, u, w.uuid()))
		w.powerState(m, "Suspended")
	case "pause", "unpause":
		w.xapi(m, 0.1, "debug", "xenops", "xenops: VM."+op.Op+" "+u)
		w.xenopsd(m, 0.3, "xenops_server", "VM."+op.Op+" "+u)
		if op.Op == "pause" {
			w.powerState(m, "Paused")
		} else {
			w.powerState(m, "Running")
		}
	case "pool_migrate", "migrate_send":
		w.migrate()
	case "clone", "copy":
		sub := "Async.VDI." + op.Op + " R:" + w.hex(12)
		w.emit(w.c, w.at(0.2), "xapi", "debug", w.tidC+1, "", sub, "audit", "VDI."+op.Op+": VDI = '"+w.uuid()+"'")
		w.emit(w.c, w.at(0.25), "xapi", "debug", w.tidC+1, "", sub, "message_forwarding",
			"Marking SR for VDI."+op.Op+" (task="+w.opaque()+")")
		if op.Op == "copy" {
			w.xapi(m, 0.3, "debug", "xapi_vm_clone", "Copying disks to SR: "+w.uuid())
		}
		uefi := op.UEFI && op.NewVMUUID != ""
		f := 1.0
		if uefi {
			f = 0.7
		}
		w.xapi(m, f, "debug", "xapi_vm_clone", "Finished listening for events relating to tasks "+w.opaque()+" and ")
		if uefi {
			w.xapi(m, 1, "debug", "xapi_vm_clone", "VM "+op.NewVMUUID+" was cloned: clearing certain UEFI variables")
		}
	case "snapshot", "checkpoint":
		w.xapi(m, 0.1, "debug", "xapi_vm_snapshot", "Snapshot: begin")
		w.xapi(m, 1, "debug", "xapi_vm_snapshot", "Snapshot: end")
	case "revert":
		w.xapi(m, 0.2, "debug", "xapi_vm_snapshot", "Reverting "+w.opaque()+" to "+w.vmRef)
		w.xapi(m, 1, "debug", "xapi_vm_snapshot", "VM.revert done")
	case "destroy":
		w.xapi(m, 1, "debug", "xapi_vm_helpers", "VM.destroy: deleting DB records")
	case "import":
		w.xapi(m, 0.05, "info", "import", fmt.Sprintf("VM.import: SR = '%s (Local storage)'; force = false; full_restore = false", w.uuid()))
		for i := 0; i < max(op.Count, 1); i++ {
			w.xapi(m, 0.6, "debug", "import", "Created VM: "+w.opaque()+" (was Ref:"+fmt.Sprint(i+1)+")")
		}
		w.xapi(m, 1, "debug", "import", "import successful")
	case "export":
		w.xapi(m, 0.05, "info", "export", fmt.Sprintf("VM.export: VM = '%s' ('%s'); preserve_power_state = 'false'", u, op.VMName))
		w.xapi(m, 1, "debug", "export", "export VM = "+w.vmRef+" completed successfully")
	case "create":
		// Only the audit line: the new VM is a DB write, not logged.
	default:
		// provision and any other call: the SR marking brackets the call.
		w.xapi(m, 1, "debug", "message_forwarding", "Unmarking SR after VM."+op.Op+" (task="+w.opaqueTask()+")")
	}
}

// opaqueTask rebuilds a plausible full ref for the task (only its short id
// matters to readers).
func (w *writer) opaqueTask() string { return w.op.TaskRef }

func (w *writer) migrate() {
	op, src, dst, u := w.op, w.m, w.op.DestHost, w.op.VMUUID
	addr := op.DestAddress
	if addr == "" {
		addr = fmt.Sprintf("10.0.0.%d", 2+w.rng.IntN(250))
	}
	url := "https://" + addr + "/services/xenops?session_id=" + w.opaque()
	w.emit(src, w.at(0.1), "xapi", "info", w.tidM, "", w.dbg, "xapi_vm_migrate", "xenops: VM.migrate "+u+" to "+url)
	w.xenopsd(src, 0.15, "xenops_server", "VM.migrate "+u+" -> "+url)
	if dst != "" {
		w.xenopsd(dst, 0.3, "xenops_server", "VM.receive_memory: "+u+" (compressed=false)")
		w.xenopsd(dst, 0.6, "xenops_server", fmt.Sprintf(`Performing: ["VM_create_device_model",["%s",true]]`, u))
		w.xenopsd(dst, 0.8, "xenops_server", "VM.unpause "+u)
		done := "VM.pool_migrate_complete R:" + w.hex(12)
		w.emit(dst, w.at(0.85), "xapi", "debug", 500+w.rng.IntN(100), "", done, "xapi_vm_migrate", "VM.pool_migrate_complete "+u)
		if w.c != "" {
			w.emit(w.c, w.at(0.85), "xapi", "debug", 600+w.rng.IntN(100), "", done, "audit",
				fmt.Sprintf("VM.pool_migrate_complete: VM = '%s'; host = '%s'", vmLabel(u, op.VMName), vmLabel(op.DestHostUUID, dst)))
		}
	}
	w.xenopsd(src, 0.9, "xenops_server", "VM.migrate: Synchronisation point 4")
	w.emit(src, w.t1, "xapi", "info", w.tidM, "", w.dbg, "xapi_vm_migrate",
		"VM "+w.vmRef+" migrated from "+w.opaque()+" to "+w.opaque()+" - detaching VM's network at source")
}

// failure writes the backtrace block on the executing host and, when the
// call was forwarded, again on the coordinator that re-raises it
// (debug.ml with_thread_associated: task field empty, dbg in the text).
func (w *writer) failure() {
	op := w.op
	code, params := "INTERNAL_ERROR", []string{"unknown"}
	if len(op.ErrorInfo) > 0 {
		code, params = op.ErrorInfo[0], op.ErrorInfo[1:]
	}
	if op.Result == "cancelled" && len(op.ErrorInfo) == 0 {
		code, params = "TASK_CANCELLED", []string{op.TaskRef}
	}
	exn := "Server_error(" + code + ", [ " + strings.Join(params, "; ") + " ])"
	switch op.Op {
	case "import":
		w.xapi(w.m, 0.05, "info", "import", fmt.Sprintf("VM.import: SR = '%s (Local storage)'; force = false; full_restore = false", w.uuid()))
	case "export":
		w.xapi(w.m, 0.05, "info", "export", fmt.Sprintf("VM.export: VM = '%s' ('%s'); preserve_power_state = 'false'", op.VMUUID, op.VMName))
	}
	if op.Op == "start" || op.Op == "start_on" {
		w.xapi(w.m, 0.1, "debug", "xenops", "Sending VM "+w.vmRef+" configuration to xenopsd")
		w.xapi(w.m, 0.15, "info", "xenops", "xenops: VM.start "+op.VMUUID)
		w.xapi(w.m, 0.9, "error", "xenops", "Caught exception starting VM: "+exn)
	}
	hosts := []string{w.m}
	if w.c != w.m {
		hosts = append(hosts, w.c)
	}
	for _, h := range hosts {
		tid := w.tidM
		if h != w.m {
			tid = w.tidC
		}
		bt := func(msg string) { w.emit(h, w.t1, "xapi", "error", tid, "", "", "backtrace", msg) }
		bt(w.dbg + " failed with exception " + exn)
		bt("Raised " + exn)
		bt("1/4 xapi Raised at file ocaml/xapi-client/client.ml, line 7")
		bt("2/4 xapi Called from file ocaml/xapi/rbac.ml, line 205")
		bt("3/4 xapi Called from file ocaml/xapi/server_helpers.ml, line 74")
		bt("4/4 xapi Called from file ocaml/libs/log/debug.ml, line 250")
		bt("")
	}
}

// noise adds lines of other daemons and threads around the operation.
func (w *writer) noise() {
	seen := map[string]bool{}
	for _, h := range []string{w.c, w.m, w.op.DestHost} {
		if h == "" || seen[h] {
			continue
		}
		seen[h] = true
		t := w.at(0.4)
		w.emit(h, t, "xcp-rrdd", "info", 7, "", "", "rrdd_main", "Creating fresh RRD for VM uuid="+w.uuid())
		w.emit(h, t, "squeezed", "debug", 4, "", "", "squeeze_xen", "Adding watches for domid: "+fmt.Sprint(w.rng.IntN(90)))
		w.emit(h, t, "xapi", "debug", 5435, "/var/lib/xcp/xapi", "", "dummytaskhelper",
			"task dispatch:event.from D:"+w.hex(12)+" created by task D:"+w.hex(12))
		w.out = append(w.out, HostLine{Host: h, Time: t, Line: t.Format(time.Stamp) + " " + h +
			" xenopsd-xc: message repeated 3 times: [ [debug||0 ||xenops_server] Adding a new worker to the thread pool]"})
		w.out = append(w.out, HostLine{Host: h, Time: t, Line: t.Format(time.Stamp) + " " + h +
			" observer.py: Observer config not found"})
		w.emit(h, t, "xapi", "error", 0, "", "", "backtrace", "Raised Xmlm.Error(1:1, \"expected root element\")")
		w.emit(h, t, "xapi", "error", 0, "", "", "backtrace", "1/1 xapi Raised at file ocaml/libs/log/debug.ml, line 279")
		w.emit(h, t, "xapi", "error", 0, "", "", "backtrace", "")
	}
}
