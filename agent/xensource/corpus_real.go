package xensource

import (
	"bufio"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"time"
)

// writeRealistic writes the realistic corpus minute by minute: every host's
// background lines (README.md "Generated corpus" quotes the real logs they
// are modelled on), and one lifecycle operation every OpEvery, written as
// Render writes it plus the detail lines real xapi and xenopsd add under the
// task (device plugging, xenstore writes, migration progress).
func writeRealistic(w io.Writer, size int64, cfg CorpusConfig) (int64, error) {
	if cfg.RunningVMs <= 0 {
		cfg.RunningVMs = 20
	}
	if cfg.OpEvery <= 0 {
		cfg.OpEvery = time.Minute
	}
	if cfg.Clients <= 0 {
		cfg.Clients = 2
	}
	g := newBackground(cfg)
	bw := bufio.NewWriterSize(w, 1<<20)
	var written, lines int64
	var pending []HostLine
	nextOp := 0 // operations generated so far
	for m := 0; written < size && (cfg.maxOps == 0 || nextOp < cfg.maxOps); m++ {
		t0 := cfg.Start.Add(time.Duration(m) * time.Minute)
		t1 := t0.Add(time.Minute)
		if !cfg.bare {
			pending = g.minute(pending, t0)
		}
		for ; ; nextOp++ {
			at := cfg.Start.Add(time.Duration(nextOp) * cfg.OpEvery)
			if !at.Before(t1) || cfg.maxOps > 0 && nextOp >= cfg.maxOps {
				break
			}
			op := g.op(nextOp, at)
			pending = append(pending, Render(op)...)
			if !cfg.bare && op.Result == "success" {
				vw := newWriter(op)
				vw.detail()
				pending = append(pending, vw.out...)
			}
		}
		sort.SliceStable(pending, func(i, j int) bool { return pending[i].Time.Before(pending[j].Time) })
		k := 0
		for k < len(pending) && pending[k].Time.Before(t1) {
			n, err := bw.WriteString(pending[k].Line)
			if err == nil {
				err = bw.WriteByte('\n')
			}
			if err != nil {
				return lines, err
			}
			written += int64(n + 1)
			lines++
			k++
		}
		pending = append(pending[:0], pending[k:]...)
	}
	for _, hl := range pending {
		if _, err := bw.WriteString(hl.Line + "\n"); err != nil {
			return lines, err
		}
		lines++
	}
	return lines, bw.Flush()
}

// background writes the lines a pool logs with no operation running.
type background struct {
	cfg    CorpusConfig
	rng    *rand.Rand
	vms    [][]string // per host: running VM uuids
	domid  [][]int
	events []string // per host: the xenopsd event thread's D: id (one per xapi run)
	xtask  []int    // per host: xenopsd task counter
	tid    []int    // per host: xapi thread counter
	stamps map[int64]string
}

func newBackground(cfg CorpusConfig) *background {
	g := &background{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, 0x636f72707573)), stamps: map[int64]string{}}
	for hi := range cfg.Hosts {
		var vms []string
		var dom []int
		for v := 0; v < cfg.RunningVMs; v++ {
			r := rand.New(rand.NewPCG(cfg.Seed, uint64(hi)<<32|uint64(v)))
			vms = append(vms, fmt.Sprintf("%08x-%04x-4%03x-%04x-%012x", r.Uint32(), r.Uint32()&0xffff, r.Uint32()&0xfff,
				0x8000|r.Uint32()&0x3fff, r.Uint64()&0xffffffffffff))
			dom = append(dom, 1+v)
		}
		g.vms, g.domid = append(g.vms, vms), append(g.domid, dom)
		g.events = append(g.events, g.hex(12))
		g.xtask = append(g.xtask, 1000+g.rng.IntN(9000))
		g.tid = append(g.tid, 100+g.rng.IntN(9000))
	}
	return g
}

func (g *background) hex(n int) string {
	const d = "0123456789abcdef"
	b := make([]byte, n)
	for i := range b {
		b[i] = d[g.rng.IntN(16)]
	}
	return string(b)
}

// stamp formats the syslog time once per second.
func (g *background) stamp(t time.Time) string {
	k := t.Unix()
	if s, ok := g.stamps[k]; ok {
		return s
	}
	if len(g.stamps) > 4096 {
		clear(g.stamps)
	}
	s := t.Format(time.Stamp)
	g.stamps[k] = s
	return s
}

func (g *background) line(out []HostLine, host string, t time.Time, prog, level string, tid int, thread, task, module, msg string) []HostLine {
	var b strings.Builder
	b.Grow(64 + len(thread) + len(task) + len(module) + len(msg))
	b.WriteString(g.stamp(t))
	b.WriteByte(' ')
	b.WriteString(host)
	b.WriteByte(' ')
	b.WriteString(prog)
	b.WriteString(": [")
	for i := len(level); i < 5; i++ {
		b.WriteByte(' ')
	}
	b.WriteString(level)
	b.WriteString("||")
	b.WriteString(strconv.Itoa(tid))
	b.WriteByte(' ')
	b.WriteString(thread)
	b.WriteByte('|')
	b.WriteString(task)
	b.WriteByte('|')
	b.WriteString(module)
	b.WriteString("] ")
	b.WriteString(msg)
	return append(out, HostLine{Host: host, Time: t, Line: b.String()})
}

// minute appends one minute of background lines of every host.
func (g *background) minute(out []HostLine, t0 time.Time) []HostLine {
	for hi, h := range g.cfg.Hosts {
		ev := "org.xen.xapi.xenops.classic events D:" + g.events[hi]
		for v, u := range g.vms[hi] {
			// Each running VM's guest agent updates xenstore about once a
			// minute: rrdd notices, squeezed's watch fires, xenopsd checks the
			// VM and xapi's event thread refreshes its guest metrics (the
			// cycle quoted in lnav's XenServer test logs and xcp-ng/xcp#561).
			t := t0.Add(time.Duration((v*7919+hi*104729)%59000) * time.Millisecond)
			dom := strconv.Itoa(g.domid[hi][v])
			g.xtask[hi]++
			n := strconv.Itoa(g.xtask[hi])
			worker := 20 + g.rng.IntN(30)
			check := `["VM_check_state","` + u + `"]`
			out = g.line(out, h, t, "xcp-rrdd", "info", 9, "", "", "rrdd_main", "memfree has changed to "+strconv.Itoa(100000+g.rng.IntN(900000))+" in domain "+dom)
			out = g.line(out, h, t, "squeezed", "debug", 3, "", "xenstore", "xenops", "watch /data/updated <- "+t.Format("Mon Jan _2 15:04:05 UTC 2006"))
			out = g.line(out, h, t, "xenopsd-xc", "debug", 5, "", "", "xenops_server", "Received an event on managed VM "+u)
			out = g.line(out, h, t, "xenopsd-xc", "debug", 5, "", "queue", "xenops_server", "Queue.push "+check+" onto "+u+":[  ]")
			out = g.line(out, h, t, "xenopsd-xc", "debug", worker, "", "", "xenops_server", "Queue.pop returned "+check)
			out = g.line(out, h, t, "xenopsd-xc", "debug", worker, "", "events", "xenops_server", "Task "+n+" reference events: "+check)
			out = g.line(out, h, t, "xenopsd-xc", "debug", worker, "", "events", "xenops_server", "VM "+u+" is not requesting any attention")
			out = g.line(out, h, t, "xenopsd-xc", "debug", worker, "", "events", "xenops_server", "VM_DB.signal "+u)
			out = g.line(out, h, t, "xenopsd-xc", "debug", worker, "", "events", "task_server", "Task "+n+" completed; duration = 0")
			out = g.line(out, h, t, "xenopsd-xc", "debug", worker, "", "", "xenops_server", "TASK.signal "+n+" (object deleted)")
			out = g.line(out, h, t, "xapi", "debug", 453, "", ev, "xenops", `Processing event: ["Vm","`+u+`"]`)
			out = g.line(out, h, t, "xapi", "debug", 453, "", ev, "xenops", "xenops event on VM "+u)
			out = g.line(out, h, t, "xenopsd-xc", "debug", 3800+g.rng.IntN(400), "", ev, "xenops_server", "VM.stat "+u)
			out = g.line(out, h, t, "xapi", "debug", 453, "", ev, "xenops", "xenopsd event: processing event for VM "+u)
			out = g.line(out, h, t, "xapi", "debug", 453, "", ev, "xenops", "Supressing VM.allowed_operations update because guest_agent data is largely the same")
			out = g.line(out, h, t, "xapi", "debug", 453, "", ev, "xenops", "xenopsd event: Updating VM "+u+" domid "+dom+" guest_agent")
		}
		for c := 0; c < g.cfg.Clients; c++ {
			// event.from long-polls return at least once a minute per client.
			t := t0.Add(time.Duration(10+c*17+hi) * time.Second)
			g.tid[hi]++
			out = g.line(out, h, t, "xapi", "debug", g.tid[hi], "/var/lib/xcp/xapi", "", "dummytaskhelper",
				"task dispatch:event.from D:"+g.hex(12)+" created by task D:"+g.hex(12))
		}
		if hi == 0 {
			// The coordinator hands graph updates to rrdd and flushes its
			// database every few minutes.
			t := t0.Add(44 * time.Second)
			g.tid[hi]++
			out = g.line(out, h, t, "xapi", "debug", g.tid[hi], "INET :::80", "Get RRD updates. D:"+g.hex(12), "xapi",
				"hand_over_connection GET /rrd_updates to /var/lib/xcp/xcp-rrdd.forwarded")
			if t0.Minute()%5 == 0 {
				out = g.line(out, h, t0.Add(50*time.Second), "xapi", "debug", 33, "dbflush [/var/lib/xcp/state.db]", "", "sql",
					"XML backend [/var/lib/xcp/state.db] -- Write buffer flushed. Time: 0.0"+strconv.Itoa(40000+g.rng.IntN(50000)))
			}
		}
		if t0.Minute()%30 == 0 {
			out = g.line(out, h, t0.Add(3*time.Second), "xapi", "debug", 85, "", "session_revalidation_func D:"+g.hex(12), "xapi",
				"revalidating all external sessions in the local host")
		}
	}
	return out
}

// opDuration is how long each operation runs in the realistic corpus
// (well under the Deriver's IdleTimeout).
var opDuration = map[string]time.Duration{
	"start": 9 * time.Second, "start_on": 9 * time.Second, "clean_shutdown": 6 * time.Second,
	"hard_shutdown": 3 * time.Second, "hard_reboot": 11 * time.Second, "suspend": 14 * time.Second,
	"resume": 8 * time.Second, "pool_migrate": 25 * time.Second, "clone": 4 * time.Second,
	"copy": 40 * time.Second, "snapshot": 3 * time.Second, "checkpoint": 12 * time.Second,
	"revert": 5 * time.Second, "import": 45 * time.Second, "export": 45 * time.Second,
}

// op is the i-th operation of the realistic corpus, on a VM running on its
// host.
func (g *background) op(i int, at time.Time) Op {
	cfg := g.cfg
	hosts := cfg.Hosts
	name := corpusOps[i%len(corpusOps)]
	hi := (i / 3) % len(hosts)
	v := (i * 7) % cfg.RunningVMs
	d := opDuration[name]
	if d == 0 {
		d = time.Second + time.Duration(i%3)*time.Second
	}
	op := Op{
		Time: at.Add(time.Duration(i%40) * time.Second), Duration: d,
		Host: hosts[hi], Master: hosts[0], Op: name,
		TaskRef: fmt.Sprintf("OpaqueRef:%08x-%04x-4%03x-9%03x-%012x", uint32(cfg.Seed)^uint32(0x9e3779b9+i*2654435761), i&0xffff, i&0xfff, (i>>12)&0xfff, cfg.Seed),
		VMUUID:  g.vms[hi][v], VMName: "vm-" + strconv.Itoa(hi) + "-" + strconv.Itoa(v),
		NewName: "vm-" + strconv.Itoa(i) + "-copy", Noise: i%4 == 0, Result: "success",
	}
	if name == "pool_migrate" && len(hosts) > 1 {
		op.DestHost = hosts[(hi+1)%len(hosts)]
	}
	if cfg.Failed > 0 && i%cfg.Failed == cfg.Failed-1 {
		op.Result, op.ErrorInfo = "failure", []string{"VM_BAD_POWER_STATE", op.TaskRef, "halted", "running"}
	}
	return op
}

// detail adds the lines real xapi and xenopsd write under a successful
// operation's task beside the markers Render writes: work queue, atoms,
// device plugging, xenstore writes, migration and suspend progress, disk
// subtasks (shapes from xcp-ng/xcp#269, #270, #561 and rposudnevskiy/RBDSR#39).
// Every line lies strictly inside the task, so the record does not change.
func (w *writer) detail() {
	op, m, u := w.op, w.m, w.op.VMUUID
	h := fnv.New32a()
	h.Write([]byte(u))
	dom := 1 + int(h.Sum32()%200)
	switch op.Op {
	case "start", "start_on", "resume", "resume_on":
		w.xapi(m, 0.05, "debug", "xenops", "suppressing xenops events on VM: "+u)
		w.xapi(m, 0.06, "debug", "mscgen", `xapi=>xenops [label="VM.`+strings.TrimSuffix(op.Op, "_on")+`"];`)
		w.queue(m, 0.2, fmt.Sprintf(`["VM_start",["%s",false]]`, u))
		w.plug(m, 0.25, 0.75, u, dom)
	case "clean_shutdown", "hard_shutdown", "shutdown":
		w.xapi(m, 0.05, "debug", "mscgen", `xapi=>xenops [label="VM.shutdown"];`)
		w.queue(m, 0.2, fmt.Sprintf(`["VM_poweroff",["%s",null]]`, u))
		w.unplug(m, 0.35, 0.85, u, dom)
	case "clean_reboot", "hard_reboot":
		w.queue(m, 0.15, fmt.Sprintf(`["VM_reboot",["%s",null]]`, u))
		w.unplug(m, 0.3, 0.5, u, dom)
		w.plug(m, 0.55, 0.95, u, dom+1)
	case "suspend", "checkpoint":
		w.queue(m, 0.2, fmt.Sprintf(`["VM_suspend",["%s",["Disk",["VDI","%s"]]]]`, u, w.uuid()))
		w.progress(m, 0.3, 0.8, u, dom)
		w.unplug(m, 0.82, 0.95, u, dom)
	case "pool_migrate", "migrate_send":
		w.xapi(m, 0.05, "debug", "xenops", "suppressing xenops events on VM: "+u)
		w.xapi(m, 0.06, "debug", "mscgen", `xapi=>xapi [label="network.attach_for_vm"];`)
		w.xapi(m, 0.07, "debug", "xmlrpc_client", "stunnel pid: "+strconv.Itoa(2000+w.rng.IntN(9000))+" (cached = true) connected to 10.0.0."+strconv.Itoa(2+w.rng.IntN(250))+":443")
		w.xapi(m, 0.08, "debug", "xmlrpc_client", "with_recorded_stunnelpid task_opt=None s_pid="+strconv.Itoa(2000+w.rng.IntN(9000)))
		w.queue(m, 0.12, fmt.Sprintf(`["VM_migrate",{"vmm_id":"%s","vmm_tmp_src_id":"%s"}]`, u, u))
		w.progress(m, 0.2, 0.8, u, dom)
		w.unplug(m, 0.86, 0.95, u, dom)
		if op.DestHost != "" {
			w.plug(op.DestHost, 0.32, 0.78, u, dom+1)
		}
	case "clone", "copy", "snapshot":
		for d := 0; d < 2; d++ {
			sub := "Async.VDI." + op.Op + " R:" + w.hex(12)
			f := 0.3 + 0.3*float64(d)
			w.xapi(w.c, f, "info", "taskhelper", "task "+sub+" (uuid:"+w.uuid()+") created (trackid="+w.hex(32)+") by task R:"+w.short)
			w.emit(w.c, w.at(f+0.01), "xapi", "debug", w.tidC+2, "", sub, "mscgen", `xapi=>xapi [label="VDI.`+op.Op+`"];`)
			w.emit(w.c, w.at(f+0.02), "xapi", "debug", w.tidC+2, "", sub, "sm", "SM lvm vdi_"+op.Op+" sr="+w.opaque()+" vdi="+w.opaque())
			w.emit(w.c, w.at(f+0.2), "xapi", "debug", w.tidC+2, "", sub, "xapi_vdi", "Unmarking SR after VDI."+op.Op+" (task="+w.opaque()+")")
		}
	case "import", "export":
		for k := 0; k < 12; k++ {
			w.xapi(m, 0.1+0.06*float64(k), "debug", "stream_vdi", fmt.Sprintf("%s VDI %s: %d of %d MiB", op.Op, w.uuid(), (k+1)*512, 6144))
		}
	}
}

// queue writes xenopsd's work-queue lines for an operation.
func (w *writer) queue(host string, f float64, atom string) {
	u := w.op.VMUUID
	w.xenopsd(host, f, "xenops_server", "Queue.push "+atom+" onto "+u+":[  ]")
	w.xenopsd(host, f+0.01, "xenops_server", "Queue.pop returned "+atom)
	w.xenopsd(host, f+0.02, "xenops_server", "Performing: "+atom)
}

// plug writes the atoms and xenstore writes of building and plugging a
// domain (VM start, resume, the destination of a migration).
func (w *writer) plug(host string, f0, f1 float64, u string, dom int) {
	d := strconv.Itoa(dom)
	steps := []string{
		`Performing: ["VM_create",["` + u + `",null,null,false]]`,
		"VM.create " + u + " memory_upper_bound = 2147483648",
		`Performing: ["VM_build",["` + u + `",false]]`,
		"VM.build " + u,
		`Performing: ["VBD_set_active",[["` + u + `","xvda"],true]]`,
		`Performing: ["VBD_plug",["` + u + `","xvda"]]`,
		"begin_Parallel:task=" + strconv.Itoa(w.rng.IntN(90000)) + ".atoms=2.(VBD.plug RW vm=" + u + ")",
		"VBD.plug " + u + ".xvda",
		`Performing: ["VBD_plug",["` + u + `","xvdd"]]`,
		"VBD.plug " + u + ".xvdd",
		"end_Parallel:task=" + strconv.Itoa(w.rng.IntN(90000)) + ".atoms=2.(VBD.plug RW vm=" + u + ")",
		`Performing: ["VIF_plug",["` + u + `","0"]]`,
		"VIF.plug " + u + ".0",
		`Performing: ["VM_create_device_model",["` + u + `",false]]`,
		"VM.create_device_model " + u,
		`Performing: ["VM_unpause","` + u + `"]`,
		"VM_DB.signal " + u,
	}
	n := len(steps) + 10
	for i, s := range steps {
		w.xenopsd(host, f0+(f1-f0)*float64(i)/float64(n), "xenops_server", s)
	}
	for i, p := range []string{"", "/domains", "/domains/" + d, "/domains/" + d + "/create-time", "/devices", "/devices/vbd",
		"/devices/vbd/51712", "/devices/vif", "/devices/vif/0", "/vcpus"} {
		w.xenopsd(host, f0+(f1-f0)*float64(len(steps)+i)/float64(n), "xenops", "About to write to /vm/"+u+p+" ()")
	}
	w.xenopsd(host, f1, "xenops", "Device.Vif.add domid="+d+" devid=0 mac=de:ad:"+w.hex(2)+":"+w.hex(2)+":"+w.hex(2)+":"+w.hex(2)+
		" carrier=false rate=none other_config=[] extra_private_keys=[vif-id=0; vif-uuid="+w.uuid()+"; network-uuid="+w.uuid()+
		"; locking-mode=disabled; xenopsd-backend=classic]")
}

// unplug writes the atoms of shutting a domain down and destroying it.
func (w *writer) unplug(host string, f0, f1 float64, u string, dom int) {
	steps := []string{
		`Performing: ["VM_hook_script",["` + u + `","VM_pre_destroy","clean-shutdown"]]`,
		`Performing: ["VM_shutdown_domain",["` + u + `","Halt",1200.0]]`,
		`Performing: ["VBD_unplug",["` + u + `","xvda"],true]]`,
		"VBD.unplug " + u + ".xvda",
		`Performing: ["VBD_unplug",["` + u + `","xvdd"],true]]`,
		"VBD.unplug " + u + ".xvdd",
		`Performing: ["VIF_unplug",["` + u + `","0"],true]]`,
		"VIF.unplug " + u + ".0",
		`Performing: ["VM_destroy_device_model","` + u + `"]`,
		`Performing: ["VM_destroy","` + u + `"]`,
		"VM.destroy " + u,
		"Removing /vm/" + u + "/domains/" + strconv.Itoa(dom),
		"VM_DB.signal " + u,
	}
	for i, s := range steps {
		w.xenopsd(host, f0+(f1-f0)*float64(i)/float64(len(steps)), "xenops_server", s)
	}
}

// progress writes emu-manager's hand-shake and the per-percent progress of
// a migration or suspend (xcp-ng/xcp#269 quotes 0 to 100 / 100).
func (w *writer) progress(host string, f0, f1 float64, u string, dom int) {
	pre := "VM = " + u + "; domid = " + strconv.Itoa(dom) + "; "
	w.xenopsd(host, f0, "xenops", pre+"message from emu-manager: prepare:xenguest")
	w.xenopsd(host, f0, "xenops", pre+"waiting for emu-manager...")
	for p := 0; p <= 100; p++ {
		w.xenopsd(host, f0+(f1-f0)*float64(p)/101, "xenops", pre+"progress = "+strconv.Itoa(p)+" / 100")
	}
	w.xenopsd(host, f1, "xenops", pre+"message from emu-manager: result:xenguest 0 0")
}
