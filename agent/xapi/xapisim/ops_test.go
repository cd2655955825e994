package xapisim

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"
)

// trace plays sc headless and renders every write batch as event.from
// would show it to a client that keeps a call outstanding.
func trace(t *testing.T, sc *Scenario) ([]string, *engine) {
	t.Helper()
	if err := sc.Validate(); err != nil {
		t.Fatal(err)
	}
	sched := newScheduler(sc.Start, 0, true)
	e := newEngine(sc, sched)
	all, _ := parseSubscription(e.db, []string{"*"})
	names := map[string]string{}
	_, tok := e.db.collect(all, token{})
	e.scheduleSteps()
	var out []string
	for sched.runOne() {
		e.db.mu.Lock()
		evs, nt := e.db.collect(all, tok)
		tok = nt
		e.db.mu.Unlock()
		for _, ev := range evs {
			out = append(out, describe(ev, names))
		}
	}
	return out, e
}

func describe(ev evt, names map[string]string) string {
	if ev.snap == nil {
		return fmt.Sprintf("%s del %s", ev.class, names[ev.ref])
	}
	name, _ := ev.snap.Get("name_label").(string)
	if name == "" {
		name, _ = ev.snap.Get("name").(string)
	}
	if name == "" {
		name, _ = ev.snap.Get("uuid").(string)
	}
	names[ev.ref] = name
	s := fmt.Sprintf("%s %s %s", ev.class, ev.op, name)
	if ops, ok := ev.snap.Get("current_operations").(map[string]string); ok {
		var vs []string
		for k, v := range ops {
			if strings.HasPrefix(k, "DummyRef:") {
				v = "dummy:" + v
			}
			vs = append(vs, v)
		}
		sort.Strings(vs)
		s += " ops=" + strings.Join(vs, "+")
	}
	for _, f := range []string{"status", "power_state", "is_a_snapshot", "error_info", "result"} {
		if v := ev.snap.Get(f); v != nil {
			s += fmt.Sprintf(" %s=%v", f, v)
		}
	}
	return s
}

func assertOrder(t *testing.T, tr []string, patterns ...string) {
	t.Helper()
	i := 0
	for _, p := range patterns {
		for i < len(tr) && !strings.Contains(tr[i], p) {
			i++
		}
		if i == len(tr) {
			t.Fatalf("pattern %q not found in order; trace:\n%s", p, strings.Join(tr, "\n"))
		}
		i++
	}
}

func assertAbsent(t *testing.T, tr []string, p string) {
	t.Helper()
	for _, l := range tr {
		if strings.Contains(l, p) {
			t.Fatalf("unexpected %q in %q", p, l)
		}
	}
}

func mini(steps ...Step) *Scenario {
	return &Scenario{Name: "mini", Start: time.Date(2024, 3, 1, 9, 0, 0, 0, time.UTC),
		Hosts: []HostSpec{{Name: "xen1", Master: true}, {Name: "xen2"}},
		VMs: []VMSpec{{Name: "halted", IP: "10.0.9.1"}, {Name: "running", PowerState: "Running", Host: "xen1", IP: "10.0.9.2"},
			{Name: "tmpl", Template: true}},
		Steps: steps}
}

func TestOpCloneAsync(t *testing.T) {
	tr, _ := trace(t, mini(Step{At: Duration(time.Second), Op: "clone", VM: "halted", NewName: "c1", Async: true}))
	assertOrder(t, tr,
		"task add Async.VM.clone ops= status=pending",
		"vm mod halted ops=clone",
		"task add VDI.clone",
		"task del VDI.clone",
		"vm add c1 ops=clone",
		"vif add",
		"vm mod c1 ops= ",
		"vm mod halted ops= ",
		"task mod Async.VM.clone ops= status=success",
		"task del Async.VM.clone")
}

func TestOpCloneSyncTaskOnlySeenAsDel(t *testing.T) {
	tr, _ := trace(t, mini(Step{At: Duration(time.Second), Op: "clone", VM: "halted", NewName: "c1"}))
	assertOrder(t, tr, "task add VM.clone", "vm add c1 ops=clone", "task del VM.clone")
	assertAbsent(t, tr, "VM.clone ops= status=success")
}

func TestOpStartAndGuestMetrics(t *testing.T) {
	tr, _ := trace(t, mini(Step{At: Duration(time.Second), Op: "start", VM: "halted", Host: "xen2", IP: "10.0.9.9", Async: true}))
	assertOrder(t, tr,
		"task add Async.VM.start",
		"vm mod halted ops=start power_state=Halted",
		"host mod xen2 ops=vm_start",
		"vm mod halted ops=start power_state=Running",
		"host mod xen2 ops=",
		"vm mod halted ops= power_state=Running",
		"task mod Async.VM.start ops= status=success",
		"vm_guest_metrics add")
}

func TestOpStartFailures(t *testing.T) {
	tr, e := trace(t, mini(
		Step{At: Duration(time.Second), Op: "start", VM: "halted", Fail: "HOST_NOT_ENOUGH_FREE_MEMORY", Async: true, KeepTask: true},
		Step{At: Duration(10 * time.Second), Op: "start", VM: "running", Async: true, KeepTask: true},
		Step{At: Duration(20 * time.Second), Op: "start", VM: "tmpl", Async: true, KeepTask: true},
	))
	assertOrder(t, tr, "vm mod halted ops=start", "vm mod halted ops= power_state=Halted",
		"status=failure error_info=[HOST_NOT_ENOUGH_FREE_MEMORY 4294967296 1073741824]")
	running := e.vmByName["running"]
	assertOrder(t, tr, fmt.Sprintf("status=failure error_info=[VM_BAD_POWER_STATE %s halted running]", running))
	assertOrder(t, tr, fmt.Sprintf("error_info=[VM_IS_TEMPLATE %s start]", e.vmByName["tmpl"]))
	assertAbsent(t, tr, "vm mod running ops=start")
}

func TestOpPoolMigrate(t *testing.T) {
	tr, e := trace(t, mini(Step{At: Duration(time.Second), Op: "pool_migrate", VM: "running", Host: "xen2", Async: true}))
	assertOrder(t, tr, "vm mod running ops=pool_migrate", "host mod xen2 ops=vm_migrate",
		"host mod xen1", "host mod xen2 ops=", "vm mod running ops= power_state=Running", "status=success")
	if e.db.str("VM", e.vmByName["running"], "resident_on") != e.hostByName["xen2"] {
		t.Fatal("not resident on xen2")
	}
	recs := e.records()
	if recs[0].HostName != "xen1" || recs[0].DestinationHostUUID != e.db.str("host", e.hostByName["xen2"], "uuid") {
		t.Fatalf("%+v", recs[0])
	}
}

func TestOpSnapshotRevertDestroy(t *testing.T) {
	tr, e := trace(t, mini(
		Step{At: Duration(time.Second), Op: "snapshot", VM: "running", NewName: "s1", Async: true},
		Step{At: Duration(10 * time.Second), Op: "revert", VM: "s1", Async: true},
		Step{At: Duration(20 * time.Second), Op: "destroy", VM: "s1", Async: true},
	))
	assertOrder(t, tr,
		"vm mod running ops=snapshot", "task add VDI.snapshot", "vm add s1 ops=snapshot power_state=Halted is_a_snapshot=true",
		"vm mod s1 ops= ", "task mod Async.VM.snapshot ops= status=success",
		// revert of a running VM: VM.hard_shutdown sub-task
		"task add Async.VM.revert", "vm mod s1 ops=revert", "vm mod running ops=reverting", "task add VM.hard_shutdown",
		"vm mod running ops=hard_shutdown+reverting", "task del VM.hard_shutdown", "vm mod running ops= power_state=Halted",
		"task mod Async.VM.revert ops= status=success",
		// destroy: children re-parented, devices and metrics, then the VM
		"task add Async.VM.destroy", "vm mod s1 ops=destroy", "vm mod running", "vif del", "vm_metrics del", "vm del s1",
		"task mod Async.VM.destroy ops= status=success")
	if p := e.db.str("VM", e.vmByName["running"], "parent"); p != nullRef {
		t.Fatalf("parent after destroying its snapshot: %s", p)
	}
	_, tree := e.records(), e.tree()
	for _, v := range tree {
		if v.Name == "s1" && (v.Kind != "snapshot" || !v.Destroyed) {
			t.Fatalf("%+v", v)
		}
	}
}

func TestOpImportConvertExportCreate(t *testing.T) {
	tr, e := trace(t, mini(
		Step{At: Duration(time.Second), Op: "import", NewNames: []string{"i1", "i2"}, Async: true},
		Step{At: Duration(20 * time.Second), Op: "convert_to_template", VM: "halted"},
		Step{At: Duration(30 * time.Second), Op: "export", VM: "tmpl"},
		Step{At: Duration(50 * time.Second), Op: "create", NewName: "bare", Async: true},
	))
	assertOrder(t, tr, "task add VM.import", "vm add i1 ops=import", "vm mod i2 ops= ",
		"task mod VM.import ops= status=success")
	assertOrder(t, tr, "vm mod halted ops=dummy:make_into_template", "vm mod halted ops= ")
	assertOrder(t, tr, "task add VM.export", "vm mod tmpl ops=export", "vm mod tmpl ops= ", "task del VM.export")
	assertOrder(t, tr, "task add Async.VM.create", "vm add bare ops= ", "status=success error_info=[] result=<value>OpaqueRef:")
	for _, l := range tr {
		if strings.Contains(l, "VM.import") && strings.Contains(l, "success") &&
			!strings.Contains(l, "result=<value><array><data><value>OpaqueRef:") {
			t.Fatalf("import result: %s", l)
		}
	}
	recs := e.records()
	if len(recs) != 5 || recs[0].ID == recs[1].ID || recs[0].TaskID != recs[1].TaskID {
		t.Fatalf("import gives one record per VM with the same task: %+v", recs)
	}
	if recs[2].Activity != "convert_to_template" || recs[2].TaskID == "" || recs[2].TaskUUID != "" {
		t.Fatalf("convert record %+v", recs[2])
	}
}

func TestOpCancelled(t *testing.T) {
	tr, e := trace(t, mini(Step{At: Duration(time.Second), Op: "clone", VM: "halted", NewName: "x", Cancel: true, Async: true}))
	assertOrder(t, tr, "vm mod halted ops=clone", "status=cancelling", "vm mod halted ops= ", "status=cancelled error_info=[TASK_CANCELLED")
	assertAbsent(t, tr, "vm add x")
	r := e.records()[0]
	if r.Result != "cancelled" || r.VMName != "halted" || !strings.HasPrefix(r.Error, "TASK_CANCELLED: OpaqueRef:") {
		t.Fatalf("%+v", r)
	}
}

func TestOpRevertRecreatesDestroyedVM(t *testing.T) {
	tr, e := trace(t, mini(
		Step{At: Duration(time.Second), Op: "snapshot", VM: "halted", NewName: "s1"},
		Step{At: Duration(10 * time.Second), Op: "destroy", VM: "halted"},
		Step{At: Duration(20 * time.Second), Op: "revert", VM: "s1", Async: true},
	))
	assertOrder(t, tr, "vm del halted", "task add Async.VM.revert", "vm add halted", "vm mod s1", "vm mod halted ops=reverting",
		"task mod Async.VM.revert ops= status=success")
	v := e.vmByName["halted"]
	s1 := e.vmByName["s1"]
	if e.db.str("VM", s1, "snapshot_of") != v || e.db.str("VM", v, "parent") != s1 {
		t.Fatalf("snapshot_of %s parent %s, VM %s", e.db.str("VM", s1, "snapshot_of"), e.db.str("VM", v, "parent"), v)
	}
	recs, tree := e.records(), e.tree()
	last := recs[len(recs)-1]
	if last.Activity != "revert" || last.Result != "success" || last.VMName != "halted" || last.VMUUID != e.db.str("VM", v, "uuid") {
		t.Fatalf("%+v", last)
	}
	for _, x := range tree {
		if x.Name == "halted" && x.Destroyed {
			t.Fatal("re-created VM still marked destroyed")
		}
	}
}
