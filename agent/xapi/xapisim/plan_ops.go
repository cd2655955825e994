package xapisim

import (
	"strings"
)

// bodyDerive: clone, copy, snapshot, checkpoint (xapi_vm_clone.ml).
func (r *opRun) bodyDerive() []phase {
	e, db := r.e, r.e.db
	vm := r.vm
	snap := r.op == "snapshot" || r.op == "checkpoint"
	vdiCall := map[string]string{"clone": "VDI.clone", "copy": "VDI.copy", "snapshot": "VDI.snapshot",
		"checkpoint": "VDI.snapshot"}[r.op]
	var sub string
	return []phase{
		{0.1, func() bool {
			if r.op == "checkpoint" {
				r.forwardTask(r.host)
			} else {
				r.forwardTask(e.randomHost()) // forward_to_access_srs picks any host
			}
			db.set("task", r.task, "allowed_operations", []string{"cancel"})
			return true
		}},
		{0.2, func() bool { sub = r.subtaskStart(vdiCall); return true }},
		{0.35, func() bool { r.subtaskEnd(sub, XMLFragment(e.ref())); r.progress(0.3); return true }},
		{0.5, func() bool {
			name := r.newName(0)
			src, _ := db.record("VM", vm)
			oc := copyMap(src.Get("other_config").(map[string]string))
			delete(oc, "default_template")
			delete(oc, "xensource_internal")
			if !snap {
				oc["mac_seed"] = e.uuid()
				if db.field("VM", vm, "is_a_template") == true {
					if _, ok := oc["base_template_name"]; !ok {
						oc["base_template_name"] = db.str("VM", vm, "name_label")
					}
				}
			}
			m := e.ref()
			db.create("VM_metrics", m, vmMetricsFields(e.uuid(), 0, epoch, r.now()))
			gm := ""
			if old := db.str("VM", vm, "guest_metrics"); old != nullRef && db.get("VM_guest_metrics", old) != nil {
				gm = e.ref() // copy_guest_metrics: same addresses as the source
				nets := db.field("VM_guest_metrics", old, "networks").(map[string]string)
				db.create("VM_guest_metrics", gm, guestMetricsFields(e.uuid(), nets, r.now()))
			}
			power := db.str("VM", vm, "power_state")
			spec := vmSpec{uuid: r.newUUID(0), name: name, powerState: "Halted", metrics: m, guestMetrics: gm,
				template: db.field("VM", vm, "is_a_template") == true, otherConfig: oc, domid: -1,
				generationID: "0:0"}
			if power == "Suspended" && !snap {
				spec.powerState = "Suspended"
			}
			if snap {
				spec.snapshot, spec.snapshotOf, spec.snapshotTime = true, vm, r.now()
				spec.parent = db.str("VM", vm, "parent")
				if r.op == "checkpoint" && power != "Halted" {
					spec.powerState = "Suspended"
				}
			}
			n := e.ref()
			f := vmFields(spec)
			f["current_operations"] = map[string]string{r.task: r.op}
			if snap {
				f["snapshot_info"] = map[string]string{"power-state-at-snapshot": power,
					"disk-snapshot-type": "crash_consistent"}
			}
			db.create("VM", n, f)
			r.newVMs = append(r.newVMs, n)
			e.track(n, r.vmUUID)
			if r.req.ip != "" {
				e.ips[n] = r.req.ip
			} else {
				e.ips[n] = e.ips[vm]
			}
			r.progress(0.6)
			return true
		}},
		{0.65, func() bool {
			n := r.newVMs[0]
			for _, vif := range db.field("VM", vm, "VIFs").([]string) {
				mac := db.str("VIF", vif, "MAC")
				if !snap {
					mac = r.req.mac
					if mac == "" {
						mac = e.mac()
					}
				}
				db.create("VIF", e.ref(), vifFields(e.uuid(), db.str("VIF", vif, "device"), e.networkRef, n, mac))
			}
			return true
		}},
		{0.8, func() bool {
			n := r.newVMs[0]
			e.setOp(n, r.task, "")
			if snap {
				db.set("VM", vm, "parent", n) // V.parent := S after the row exists
			}
			e.refreshInfo(n)
			return true
		}},
	}
}

func (r *opRun) newName(i int) string {
	if i < len(r.req.newNames) && r.req.newNames[i] != "" {
		return r.req.newNames[i]
	}
	base := "VM"
	if r.vm != "" {
		base = r.e.db.str("VM", r.vm, "name_label")
	}
	return base + " (" + r.op + ")"
}

func (r *opRun) newUUID(i int) string {
	if i < len(r.req.newUUIDs) && r.req.newUUIDs[i] != "" {
		return r.req.newUUIDs[i]
	}
	return r.e.uuid()
}

func copyMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// bodyStart: start, start_on, resume, resume_on (xapi_xenops.ml start).
func (r *opRun) bodyStart() []phase {
	e, db := r.e, r.e.db
	vm := r.vm
	hostOp := "vm_start"
	if strings.HasPrefix(r.op, "resume") {
		hostOp = "vm_resume"
	}
	if r.req.ip != "" {
		e.ips[vm] = r.req.ip
	}
	return []phase{
		{0.15, func() bool {
			db.mapPut("host", r.host, "current_operations", r.task, hostOp)
			db.set("VM", vm, "scheduled_to_be_resident_on", r.host)
			return true
		}},
		{0.25, func() bool { r.forwardTask(r.host); return true }},
		{0.35, func() bool {
			if old := db.str("VM", vm, "guest_metrics"); old != nullRef {
				db.set("VM", vm, "guest_metrics", nullRef)
				db.remove("VM_guest_metrics", old)
			}
			return true
		}},
		{0.55, func() bool {
			db.set("VM", vm, "domid", Int(e.nextDomid(r.host)))
			db.set("VM", vm, "power_state", "Running")
			db.set("VM", vm, "resident_on", r.host)
			if r.op == "resume" || r.op == "resume_on" {
				db.set("VM", vm, "suspend_VDI", nullRef)
			}
			if m := db.str("VM", vm, "metrics"); db.get("VM_metrics", m) != nil {
				db.set("VM_metrics", m, "start_time", r.now())
			}
			return true
		}},
		{0.7, func() bool {
			db.mapDel("host", r.host, "current_operations", r.task)
			db.set("VM", vm, "scheduled_to_be_resident_on", nullRef)
			return true
		}},
	}
}

// bodyStop: shutdowns and suspend.
func (r *opRun) bodyStop() []phase {
	e, db := r.e, r.e.db
	vm := r.vm
	return []phase{
		{0.1, func() bool { r.forwardTask(r.host); return true }},
		{0.6, func() bool {
			if r.op == "suspend" {
				db.set("VM", vm, "suspend_VDI", e.ref())
				db.set("VM", vm, "power_state", "Suspended")
			} else {
				db.set("VM", vm, "power_state", "Halted")
			}
			db.set("VM", vm, "resident_on", nullRef)
			db.set("VM", vm, "domid", Int(-1))
			return true
		}},
	}
}

// bodyMigrate: pool_migrate, in-pool migrate_send (xapi_vm_migrate.ml).
func (r *opRun) bodyMigrate() []phase {
	e, db := r.e, r.e.db
	vm := r.vm
	running := db.str("VM", vm, "power_state") == "Running"
	return []phase{
		{0.15, func() bool {
			db.set("VM", vm, "scheduled_to_be_resident_on", r.dest)
			db.mapPut("host", r.dest, "current_operations", r.task, "vm_migrate")
			return true
		}},
		{0.2, func() bool { r.forwardTask(r.host); r.progress(0.1); return true }},
		{0.45, func() bool { r.progress(0.5); return true }},
		{0.7, func() bool {
			if running {
				db.set("VM", vm, "resident_on", r.dest)
				db.set("VM", vm, "domid", Int(e.nextDomid(r.dest)))
			}
			db.mapDel("host", r.dest, "current_operations", r.task)
			db.set("VM", vm, "scheduled_to_be_resident_on", nullRef)
			return true
		}},
	}
}

// bodyDestroy: children re-parented, devices and metrics deleted, VM del.
func (r *opRun) bodyDestroy() []phase {
	e, db := r.e, r.e.db
	vm := r.vm
	return []phase{
		{0.3, func() bool {
			parent := db.str("VM", vm, "parent")
			for _, c := range db.field("VM", vm, "children").([]string) {
				db.set("VM", c, "parent", parent)
			}
			return true
		}},
		{0.5, func() bool {
			for _, vif := range db.field("VM", vm, "VIFs").([]string) {
				db.remove("VIF", vif)
			}
			db.remove("VM_metrics", db.str("VM", vm, "metrics"))
			db.remove("VM_guest_metrics", db.str("VM", vm, "guest_metrics"))
			return true
		}},
		{0.7, func() bool {
			if info := e.vms[r.vmUUID]; info != nil {
				e.refreshInfo(vm)
				info.destroyed = true
			}
			db.remove("VM", vm)
			return true
		}},
		{1.0, func() bool { r.value = ""; return r.succeed(XMLFragment(""), "") }},
	}
}

// bodyRevert: vm is the snapshot S, r.subject the VM V (xapi_vm_snapshot.ml).
func (r *opRun) bodyRevert() []phase {
	e, db := r.e, r.e.db
	s := r.vm
	var sub string
	return []phase{
		{0.1, func() bool {
			if r.subject == "" {
				return r.failWith(&XenError{"HANDLE_INVALID", []string{"VM", db.str("VM", s, "snapshot_of")}})
			}
			return true
		}},
		{0.15, func() bool {
			v := r.subject
			if db.str("VM", v, "power_state") == "Halted" {
				return true
			}
			sub = r.subtaskStart("VM.hard_shutdown")
			e.setOp(v, sub, "hard_shutdown")
			return true
		}},
		{0.3, func() bool {
			v := r.subject
			if sub == "" {
				return true
			}
			db.set("VM", v, "power_state", "Halted")
			db.set("VM", v, "resident_on", nullRef)
			db.set("VM", v, "domid", Int(-1))
			e.setOp(v, sub, "")
			e.message("VM_SHUTDOWN", v, "VM '"+db.str("VM", v, "name_label")+"' shutdown")
			r.subtaskEnd(sub, XMLFragment(""))
			return true
		}},
		{0.45, func() bool {
			v := r.subject
			oc := copyMap(db.field("VM", s, "other_config").(map[string]string))
			db.set("VM", v, "other_config", oc)
			db.set("VM", v, "memory_static_max", db.field("VM", s, "memory_static_max"))
			for _, vif := range db.field("VM", v, "VIFs").([]string) {
				db.remove("VIF", vif)
			}
			vdi := r.subtaskStart("VDI.clone")
			r.subtaskEnd(vdi, XMLFragment(e.ref()))
			for _, vif := range db.field("VM", s, "VIFs").([]string) {
				db.create("VIF", e.ref(), vifFields(e.uuid(), db.str("VIF", vif, "device"), e.networkRef, v,
					db.str("VIF", vif, "MAC")))
			}
			if old := db.str("VM", v, "guest_metrics"); old != nullRef {
				db.set("VM", v, "guest_metrics", nullRef)
				db.remove("VM_guest_metrics", old)
			}
			return true
		}},
		{0.65, func() bool { db.set("VM", r.subject, "parent", s); return true }},
		{0.75, func() bool {
			// force_state_reset: power from the snapshot, all operations cleared.
			v := r.subject
			st := "Halted"
			if db.field("VM", s, "power_state") == "Suspended" {
				st = "Suspended"
			}
			db.set("VM", v, "power_state", st)
			db.set("VM", v, "current_operations", emptyMap())
			db.set("VM", v, "allowed_operations", e.allowedOps(v))
			return true
		}},
	}
}

// planCreate: VM.create (bare VM, no current_operations).
func (r *opRun) planCreate() []phase {
	e := r.e
	return []phase{
		{0, func() bool {
			r.beginTask()
			r.host = e.masterRef
			if r.req.fail != "" {
				return r.failWith(r.forcedFailure())
			}
			return true
		}},
		{0.5, func() bool {
			n := e.newVM(r.newName(0), r.newUUID(0), "Halted", "", false, r.req.mac, "", r.now())
			e.ips[n] = r.req.ip
			r.newVMs = append(r.newVMs, n)
			return true
		}},
		{1.0, func() bool { r.value = r.newVMs[0]; return r.succeed(XMLFragment(r.newVMs[0]), r.newVMs[0]) }},
	}
}

// planImport: the VM.import handler; new VMs carry {task: import} and
// other_config.import_task until the import completes.
func (r *opRun) planImport() []phase {
	e, db := r.e, r.e.db
	count := len(r.req.newNames)
	if len(r.req.newUUIDs) > count {
		count = len(r.req.newUUIDs)
	}
	if count == 0 {
		count = 1
	}
	ps := []phase{
		{0, func() bool {
			r.beginTask()
			r.host = e.masterRef
			return true
		}},
	}
	if r.req.fail != "" || r.req.cancel {
		return append(ps, r.failPhases(0.5, func() {})...)
	}
	return append(ps,
		phase{0.3, func() bool {
			for i := 0; i < count; i++ {
				n := e.newVM(r.newName(i), r.newUUID(i), "Halted", "", false, "", "", r.now())
				db.mapPut("VM", n, "other_config", "import_task", r.task)
				e.setOp(n, r.task, "import")
				r.newVMs = append(r.newVMs, n)
			}
			r.progress(0.5)
			return true
		}},
		phase{0.8, func() bool {
			for _, n := range r.newVMs {
				e.setOp(n, r.task, "")
				e.refreshInfo(n)
			}
			return true
		}},
		phase{1.0, func() bool {
			refs := make([]any, len(r.newVMs))
			for i, n := range r.newVMs {
				refs[i] = n
			}
			r.value = append([]string(nil), r.newVMs...)
			return r.succeed(XMLFragment(refs), r.value)
		}},
	)
}

// planConvert: VM.set_is_a_template(vm, true) is a field setter: no task,
// a DummyRef key in current_operations while it runs.
func (r *opRun) planConvert() []phase {
	e, db := r.e, r.e.db
	vm := r.vm
	return []phase{
		{0, func() bool {
			r.task = "DummyRef:|" + e.uuid() + "|VM.set_is_a_template"
			if vm == "" || db.get("VM", vm) == nil {
				return r.failWith(&XenError{"HANDLE_INVALID", []string{"VM", vm}})
			}
			r.host = e.masterRef
			if xe := e.check(vm, r.op); xe != nil {
				return r.failWith(xe)
			}
			if r.req.fail != "" {
				return r.failWith(r.forcedFailure())
			}
			e.setOp(vm, r.task, r.op)
			return true
		}},
		{0.5, func() bool { db.set("VM", vm, "is_a_template", true); return true }},
		{1.0, func() bool {
			e.setOp(vm, r.task, "")
			e.refreshInfo(vm)
			return r.succeed("", "")
		}},
	}
}
