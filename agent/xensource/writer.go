package xensource

import (
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	"github.com/vmlineage/vmlineage/agent/record"
)

// Op is one VM operation as the simulator plays it; Render writes the
// xensource.log lines each host of the pool would log for it.
type Op struct {
	Time     time.Time     // task created
	Duration time.Duration // until the task finished
	Host     string        // host that runs the operation (the VM's host; for migrate the source)
	DestHost string        // migrate: destination host name
	// DestHostUUID is printed in the coordinator's pool_migrate audit line.
	DestHostUUID string
	DestAddress  string // migrate: destination management address (for the xenopsd URL)
	Op           string // vm_operations name: "clone", "start", "pool_migrate", ...
	TaskName     string // "Async.VM.start" or "VM.start"; derived from Op when empty
	TaskRef      string // OpaqueRef:… of the task
	VMUUID       string // the VM acted on (revert: the snapshot; clone: the source)
	VMName       string
	NewName      string // clone/copy/snapshot/checkpoint/create: the new VM's name
	NewVMUUID    string // the new VM (logged only for UEFI clones, see UEFI)
	UEFI         bool   // the source VM boots UEFI: clone logs the new uuid
	Result       string // "success" (default), "failure", "cancelled"
	ErrorInfo    []string
	Master       string // coordinator host name
	Noise        bool   // add unrelated lines of other daemons
	// Refused: the call failed on the coordinator before it was forwarded
	// (allowed-operation and power-state checks run there), so no member
	// logs it.
	Refused bool
	Count   int // import: VMs created (default 1)
}

// HostLine is one line of one host's xensource.log.
type HostLine struct {
	Host string
	Time time.Time
	Line string
}

// onCoordinator lists the operations xapi runs on the coordinator
// (message_forwarding.ml: clone/copy/snapshot forward to a host that sees
// the SRs, usually the coordinator; destroy, revert, create, provision are
// not forwarded). Checkpoint is forwarded to the VM's host.
var onCoordinator = map[string]bool{
	"clone": true, "copy": true, "snapshot": true, "destroy": true,
	"revert": true, "create": true, "provision": true, "import": true, "export": true,
	"make_into_template": true,
}

// Render returns the lines the pool's hosts log for op, in the current
// (XCP-ng 8.2/8.3) format: traditional rsyslog envelope, empty field2,
// client prefix on API threads, xapi's escaping. Lines are sorted by host
// then time. Thread ids, trackids and OpaqueRefs are derived from the task
// ref, so the output is deterministic. An op without an OpaqueRef task (a
// setter such as VM.set_is_a_template) writes nothing: no R: id, no record.
func Render(op Op) []HostLine {
	if record.TaskShortID(op.TaskRef) == "" {
		return nil
	}
	w := newWriter(op)
	w.render()
	sort.SliceStable(w.out, func(i, j int) bool {
		if w.out[i].Host != w.out[j].Host {
			return w.out[i].Host < w.out[j].Host
		}
		return w.out[i].Time.Before(w.out[j].Time)
	})
	return w.out
}

type writer struct {
	op          Op
	rng         *rand.Rand
	dbg, short  string
	c, m        string // coordinator, executing host
	t0, t1      time.Time
	out         []HostLine
	tidC, tidM  int
	client      string
	vmRef       string
	opaqueCount int
}

func newWriter(op Op) *writer {
	h := fnv.New64a()
	h.Write([]byte(op.TaskRef))
	w := &writer{op: op, rng: rand.New(rand.NewPCG(h.Sum64(), 0x766d6c696e656167))}
	w.short = record.TaskShortID(op.TaskRef)
	if op.TaskName == "" {
		op.TaskName = "Async.VM." + op.Op
		switch op.Op {
		case "import", "export":
			op.TaskName = "VM." + op.Op
		}
		w.op.TaskName = op.TaskName
	}
	w.dbg = op.TaskName + " R:" + w.short
	w.c = op.Master
	if w.c == "" {
		w.c = op.Host
	}
	w.m = op.Host
	if onCoordinator[op.Op] || w.m == "" || op.Refused {
		w.m = w.c
	}
	w.t0, w.t1 = op.Time, op.Time.Add(op.Duration)
	w.tidC, w.tidM = 1000+w.rng.IntN(400000), 1000+w.rng.IntN(400000)
	w.client = fmt.Sprintf("HTTPS 10.%d.%d.%d", w.rng.IntN(256), w.rng.IntN(256), 1+w.rng.IntN(254))
	w.vmRef = w.opaque()
	return w
}

func (w *writer) opaque() string {
	var b [16]byte
	for i := range b {
		b[i] = byte(w.rng.Uint32())
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("OpaqueRef:%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func (w *writer) hex(n int) string {
	const d = "0123456789abcdef"
	b := make([]byte, n)
	for i := range b {
		b[i] = d[w.rng.IntN(16)]
	}
	return string(b)
}

// at returns the time a fraction f of the way through the operation.
func (w *writer) at(f float64) time.Time {
	return w.t0.Add(time.Duration(f * float64(w.op.Duration)))
}

// emit writes one toolstack line: "[%5s||%d %s|%s|%s] %s" escaped as a
// whole (debug.ml format + escape), behind the rsyslog envelope.
func (w *writer) emit(host string, t time.Time, prog, level string, tid int, thread, task, module, msg string) {
	hdr := fmt.Sprintf("[%5s||%d %s|%s|%s] %s", level, tid, thread, task, module, msg)
	w.out = append(w.out, HostLine{Host: host, Time: t,
		Line: t.Format(time.Stamp) + " " + host + " " + prog + ": " + Escape(hdr)})
}

func (w *writer) failed() bool { return w.op.Result == "failure" || w.op.Result == "cancelled" }

func vmLabel(uuid, name string) string {
	if name == "" {
		return uuid
	}
	return uuid + " (" + name + ")"
}

func (w *writer) render() {
	op := w.op
	async := strings.HasPrefix(op.TaskName, "Async.")
	// Coordinator: the dispatcher accepts the call, the audit line records it.
	if async {
		w.emit(w.c, w.t0, "xapi", "info", w.tidC, w.client+"->", w.dbg, "dispatcher",
			"spawning a new thread to handle the current task (trackid="+w.hex(32)+")")
	}
	if a := w.auditLine(); a != "" {
		w.emit(w.c, w.t0, "xapi", "debug", w.tidC, w.client+"->", w.dbg, "audit", a)
	}
	if w.m != w.c {
		w.emit(w.m, w.at(0.05), "xapi", "info", w.tidM, "INET :::443", "dispatch:VM."+op.Op+" D:"+w.hex(12), "taskhelper",
			"task "+w.dbg+" forwarded (trackid="+w.hex(32)+")")
	}
	if op.Noise {
		w.noise()
	}
	if w.failed() {
		w.failure()
		return
	}
	w.body()
}

func (w *writer) auditLine() string {
	op := w.op
	vm := vmLabel(op.VMUUID, op.VMName)
	switch op.Op {
	case "clone", "snapshot":
		return fmt.Sprintf("VM.%s: VM = '%s'; new_name = '%s'", op.Op, vm, op.NewName)
	case "checkpoint":
		return fmt.Sprintf("VM.checkpoint: VM = '%s'; new_name=' %s'", vm, op.NewName)
	case "copy":
		return fmt.Sprintf("VM.copy: VM = '%s'; new_name = '%s'; SR = '%s'", vm, op.NewName, w.uuid())
	case "revert":
		return fmt.Sprintf("VM.revert: snapshot = '%s'", vm)
	case "pool_migrate":
		return fmt.Sprintf("VM.pool_migrate: VM = '%s'; host = '%s'", vm, vmLabel(op.DestHostUUID, op.DestHost))
	case "start_on", "resume_on":
		return fmt.Sprintf("VM.%s: VM = '%s'; host '%s'", op.Op, vm, vmLabel(w.uuid(), op.Host))
	case "create":
		return fmt.Sprintf("VM.create: name_label = '%s' name_description = ''", op.NewName)
	case "import", "export":
		return "" // HTTP handlers: logged by import.ml / export.ml instead
	}
	return fmt.Sprintf("VM.%s: VM = '%s'", op.Op, vm)
}

func (w *writer) uuid() string {
	return w.hex(8) + "-" + w.hex(4) + "-4" + w.hex(3) + "-a" + w.hex(3) + "-" + w.hex(12)
}

// xapi and xenopsd lines on host under the task.
func (w *writer) xapi(host string, f float64, level, module, msg string) {
	tid := w.tidM
	if host == w.c && w.m != w.c {
		tid = w.tidC
	}
	w.emit(host, w.at(f), "xapi", level, tid, "", w.dbg, module, msg)
}

func (w *writer) xenopsd(host string, f float64, module, msg string) {
	w.emit(host, w.at(f), "xenopsd-xc", "debug", 20+w.rng.IntN(40), "", w.dbg, module, msg)
}

func (w *writer) powerState(host, state string) {
	w.emit(host, w.t1, "xapi", "debug", 300+w.rng.IntN(100), "",
		"org.xen.xapi.xenops.classic events D:"+w.hex(12), "xenops",
		"xenopsd event: Updating VM "+w.op.VMUUID+" power_state <- "+state)
}

func (w *writer) xenopsdTask(host string, f0, f1 float64, atom string) {
	n := 1 + w.rng.IntN(9000)
	w.xenopsd(host, f0, "xenops_server", fmt.Sprintf("Task %d reference %s: %s", n, w.dbg, atom))
	w.xenopsd(host, f1, "task_server", fmt.Sprintf("Task %d completed; duration = %.0f", n, w.op.Duration.Seconds()*(f1-f0)))
}
