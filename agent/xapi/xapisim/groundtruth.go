package xapisim

import (
	"time"

	"github.com/vmlineage/vmlineage/agent/record"
)

// GroundTruth plays the scenario headless, as fast as possible, and
// returns the lifecycle records a correct tracer derives (sorted by start)
// and the final family tree. The server runs the very same engine with the
// same seeded id stream, so task refs, uuids and record ids match a live
// run exactly (as long as no client drives extra operations by hand).
func (sc *Scenario) GroundTruth() ([]record.Record, []TreeVM) {
	sched := newScheduler(sc.Start, 0, true)
	e := newEngine(sc, sched)
	e.scheduleSteps()
	for sched.runOne() {
	}
	e.db.mu.Lock()
	defer e.db.mu.Unlock()
	return e.records(), e.tree()
}

// scheduleSteps puts every step on the scheduler. VM names are resolved
// when the step runs, so steps can use VMs created by earlier steps.
func (e *engine) scheduleSteps() {
	// Every user logs in when the scenario starts (their Session.create
	// lines come before any step).
	e.sched.at(e.sc.Start, e.loginUsers)
	var last time.Time
	for _, st := range e.sc.Steps {
		st := st
		vt := e.sc.Start.Add(time.Duration(st.At))
		if vt.After(last) {
			last = vt
		}
		e.pending++
		e.sched.at(vt, func() { e.runStep(st) })
	}
	e.sched.at(last, func() {
		e.db.mu.Lock()
		e.stepsIn = true
		e.checkDone()
		e.db.mu.Unlock()
	})
}

// runStep starts one step: an operation, or a fault through the hook.
func (e *engine) runStep(st Step) {
	if st.Fault != "" {
		if e.fault != nil {
			e.fault(st)
		}
		e.db.mu.Lock()
		e.pending--
		e.checkDone()
		e.db.mu.Unlock()
		return
	}
	e.db.mu.Lock()
	req := &opReq{op: canonicalOp(st.Op), newNames: st.NewNames, newUUIDs: st.NewUUIDs, ip: st.IP, mac: st.MAC,
		async: st.Async, duration: time.Duration(st.Duration), fail: st.Fail, failParams: st.FailParams,
		cancel: st.Cancel, keepTask: st.KeepTask, destroyAfter: time.Duration(st.DestroyAfter), fromScenario: true,
		user: e.users[e.sc.stepUser(st).Name], denied: st.Denied}
	if st.NewName != "" {
		req.newNames = append([]string{st.NewName}, req.newNames...)
	}
	if st.NewUUID != "" {
		req.newUUIDs = append([]string{st.NewUUID}, req.newUUIDs...)
	}
	if st.VM != "" {
		req.vm = e.resolveVM(st.VM)
	}
	if st.Host != "" {
		req.host = e.resolveHost(st.Host)
	}
	e.db.mu.Unlock() // the step's pending count now belongs to the operation
	e.begin(req)
}
