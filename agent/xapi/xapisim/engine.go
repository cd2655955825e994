package xapisim

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/agent/xensource"
)

// engine owns the database contents: it loads a scenario's pool and runs
// lifecycle operations as timed write batches on the scheduler. Engine
// state is only touched inside scheduler items with db.mu held, or by
// readers holding db.mu.
type engine struct {
	db    *DB
	sched *scheduler
	rng   *rand.Rand
	sc    *Scenario

	poolRef, poolUUID, masterRef, networkRef string
	hostRefs                                 []string
	hostByName                               map[string]string // host name or uuid -> ref
	domids                                   map[string]int64

	vmByName map[string]string // latest VM with that name or uuid -> ref
	vms      map[string]*vmInfo
	vmOrder  []string
	ips      map[string]string // VM ref -> IP its guest reports when running

	truth   []record.Record
	denied  []record.Record // every call RBAC refused (see Server.Denied)
	pending int             // operations and deferred task destroys still to run
	stepsIn bool            // every step has been launched
	done    chan struct{}
	fault   func(Step) // server hook; nil in ground-truth runs

	// users are the scenario's callers with their sessions; auditSink
	// (nil in ground-truth runs) receives each host's audit.log lines;
	// sessionLines are xensource.log's Session.create lines.
	users        map[string]*userInfo
	userOrder    []string
	auditSink    func(host, line string)
	sessionLines []xensource.HostLine
}

// vmInfo is the ground-truth view of one VM.
type vmInfo struct {
	uuid, name, parent string
	kind               string
	power              string
	destroyed          bool
	ref                string
}

// seedFor derives the id stream of a scenario: same scenario, same refs.
func seedFor(sc *Scenario) (uint64, uint64) {
	h := sha256.Sum256([]byte(fmt.Sprintf("vmlineage-xapisim\x00%s\x00%d", sc.Name, sc.Seed)))
	return binary.LittleEndian.Uint64(h[:8]), binary.LittleEndian.Uint64(h[8:16])
}

func newEngine(sc *Scenario, sched *scheduler) *engine {
	a, b := seedFor(sc)
	e := &engine{
		db: newDB(allClasses, allRelations), sched: sched, rng: rand.New(rand.NewPCG(a, b)), sc: sc,
		hostByName: map[string]string{}, domids: map[string]int64{}, vmByName: map[string]string{},
		vms: map[string]*vmInfo{}, ips: map[string]string{}, done: make(chan struct{}),
	}
	e.users, e.userOrder = newUsers(sc)
	e.load()
	return e
}

func (e *engine) uuid() string {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], e.rng.Uint64())
	binary.LittleEndian.PutUint64(b[8:], e.rng.Uint64())
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func (e *engine) ref() string { return "OpaqueRef:" + e.uuid() }

func (e *engine) mac() string {
	b := e.rng.Uint64()
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", byte(b)&0xfe|0x02, byte(b>>8), byte(b>>16),
		byte(b>>24), byte(b>>32), byte(b>>40))
}

func orUUID(given string, e *engine) string {
	if given != "" {
		return given
	}
	return e.uuid()
}

// load writes the scenario's initial pool: hosts with their control
// domains, the pool, one network, the VMs with VIFs and metrics.
func (e *engine) load() {
	sc, db := e.sc, e.db
	now := sc.Start
	e.poolUUID = orUUID(sc.Pool.UUID, e)
	e.poolRef = e.ref()
	e.networkRef = e.ref()
	db.create("network", e.networkRef, networkFields(e.uuid(), "Pool-wide network associated with eth0", "xenbr0"))
	for i, h := range sc.Hosts {
		ref := e.ref()
		addr := h.Address
		if addr == "" {
			addr = fmt.Sprintf("10.0.0.%d", i+1)
		}
		metrics := e.ref()
		db.create("host_metrics", metrics, hostMetricsFields(e.uuid()))
		db.create("host", ref, hostFields(orUUID(h.UUID, e), h.Name, addr, metrics))
		e.hostRefs = append(e.hostRefs, ref)
		e.hostByName[h.Name] = ref
		e.hostByName[db.str("host", ref, "uuid")] = ref
		if h.Master {
			e.masterRef = ref
		}
		// One control domain per host, as on a real pool: clients filter it.
		dom0 := e.ref()
		m := e.ref()
		db.create("VM_metrics", m, vmMetricsFields(e.uuid(), 4294967296, now, now))
		f := vmFields(vmSpec{uuid: e.uuid(), name: "Control domain on host: " + h.Name, powerState: "Running",
			residentOn: ref, metrics: m, controlDomain: true, generationID: ""})
		f["domain_type"] = "pv"
		db.create("VM", dom0, f)
		db.set("host", ref, "control_domain", dom0)
		e.domids[ref] = 1
	}
	db.create("pool", e.poolRef, poolFields(e.poolUUID, sc.Pool.Name, e.masterRef))
	for _, v := range sc.VMs {
		host := ""
		if v.PowerState == "Running" || v.PowerState == "Paused" {
			host = e.hostByName[v.Host]
		}
		ref := e.newVM(v.Name, orUUID(v.UUID, e), v.PowerState, host, v.Template, v.MAC, v.IP, now)
		e.ips[ref] = v.IP
		info := e.vms[e.db.str("VM", ref, "uuid")]
		if v.Parent != "" {
			if p := e.vmByName[v.Parent]; p != "" {
				info.parent = e.db.str("VM", p, "uuid")
			} else {
				info.parent = v.Parent
			}
		}
	}
}

// newVM creates a VM with metrics, one VIF and (when it has an IP) guest
// metrics. Caller holds db.mu.
func (e *engine) newVM(name, uuid, power, host string, template bool, mac, ip string, now time.Time) string {
	db := e.db
	ref := e.ref()
	m := e.ref()
	db.create("VM_metrics", m, vmMetricsFields(e.uuid(), 0, epoch, now))
	gm := ""
	if ip != "" && power != "Halted" {
		gm = e.ref()
		db.create("VM_guest_metrics", gm, guestMetricsFields(e.uuid(), guestNetworks(ip), now))
	}
	spec := vmSpec{uuid: uuid, name: name, powerState: power, residentOn: host, metrics: m, guestMetrics: gm,
		template: template, domid: -1, generationID: "0:0",
		otherConfig: map[string]string{"mac_seed": e.uuid()}}
	if host != "" {
		spec.domid = e.nextDomid(host)
	}
	db.create("VM", ref, vmFields(spec))
	if mac == "" {
		mac = e.mac()
	}
	db.create("VIF", e.ref(), vifFields(e.uuid(), "0", e.networkRef, ref, mac))
	e.track(ref, "")
	db.set("VM", ref, "allowed_operations", e.allowedOps(ref))
	return ref
}

func (e *engine) nextDomid(host string) int64 {
	e.domids[host]++
	return e.domids[host]
}

// track registers a VM in the ground-truth tree.
func (e *engine) track(ref, parentUUID string) {
	uuid := e.db.str("VM", ref, "uuid")
	info := &vmInfo{uuid: uuid, name: e.db.str("VM", ref, "name_label"), parent: parentUUID, ref: ref}
	e.vms[uuid] = info
	e.vmOrder = append(e.vmOrder, uuid)
	e.vmByName[info.name] = ref
	e.vmByName[uuid] = ref
	e.refreshInfo(ref)
}

func (e *engine) refreshInfo(ref string) {
	uuid := e.db.str("VM", ref, "uuid")
	info := e.vms[uuid]
	if info == nil {
		return
	}
	info.power = e.db.str("VM", ref, "power_state")
	info.name = e.db.str("VM", ref, "name_label")
	switch {
	case e.db.field("VM", ref, "is_a_snapshot") == true:
		info.kind = "snapshot"
	case e.db.field("VM", ref, "is_a_template") == true:
		info.kind = "template"
	default:
		info.kind = "vm"
	}
}

// resolveVM finds a VM by scenario name, uuid or ref. Caller holds db.mu.
func (e *engine) resolveVM(s string) string {
	if strings.HasPrefix(s, "OpaqueRef:") {
		if e.db.get("VM", s) != nil {
			return s
		}
		return ""
	}
	if ref := e.vmByName[s]; ref != "" && e.db.get("VM", ref) != nil {
		return ref
	}
	return e.db.byUUID("VM", s)
}

func (e *engine) resolveHost(s string) string {
	if strings.HasPrefix(s, "OpaqueRef:") {
		if e.db.get("host", s) != nil {
			return s
		}
		return ""
	}
	return e.hostByName[s]
}

// pickHost chooses where to start a VM: the least loaded host, ties to the
// first in scenario order, so runs are deterministic.
func (e *engine) pickHost() string {
	best, n := "", -1
	for _, h := range e.hostRefs {
		c := len(e.db.field("host", h, "resident_VMs").([]string))
		if n < 0 || c < n {
			best, n = h, c
		}
	}
	return best
}

// randomHost mimics forward_to_access_srs: any host that sees the storage.
func (e *engine) randomHost() string { return e.hostRefs[e.rng.IntN(len(e.hostRefs))] }

// Power states allowed per operation (xapi_vm_lifecycle.ml allowed_power_states).
var allowedPower = map[string][]string{
	"start": {"Halted"}, "start_on": {"Halted"}, "provision": {"Halted"}, "make_into_template": {"Halted"},
	"clone": {"Halted"}, "copy": {"Halted"},
	"clean_shutdown": {"Running"}, "clean_reboot": {"Running"}, "suspend": {"Running"}, "pause": {"Running"},
	"pool_migrate":  {"Running"},
	"hard_shutdown": {"Paused", "Suspended", "Running"}, "shutdown": {"Paused", "Suspended", "Running"},
	"checkpoint":  {"Paused", "Suspended", "Running"},
	"hard_reboot": {"Paused", "Running"}, "resume": {"Suspended"}, "resume_on": {"Suspended"},
	"unpause": {"Paused"}, "destroy": {"Halted", "Suspended"}, "export": {"Halted", "Suspended"},
	"migrate_send": {"Halted", "Suspended", "Running"},
}

// The operations listed in allowed_operations.
var listedOps = []string{"snapshot", "clone", "copy", "revert", "checkpoint", "provision", "start",
	"start_on", "pause", "unpause", "clean_shutdown", "clean_reboot", "hard_shutdown", "hard_reboot",
	"suspend", "resume", "resume_on", "pool_migrate", "migrate_send", "shutdown", "export", "destroy",
	"make_into_template"}

// check is xapi's check_operation_error, reduced to what a lifecycle tracer
// meets. Caller holds db.mu.
func (e *engine) check(vm, op string) *XenError {
	db := e.db
	snap := db.field("VM", vm, "is_a_snapshot") == true
	tmpl := db.field("VM", vm, "is_a_template") == true
	if op == "revert" && !snap {
		return &XenError{"ONLY_REVERT_SNAPSHOT", nil}
	}
	if op == "provision" && !tmpl {
		return &XenError{"ONLY_PROVISION_TEMPLATE", nil}
	}
	switch {
	case snap:
		if !contains([]string{"revert", "clone", "copy", "export", "destroy", "hard_shutdown"}, op) {
			return &XenError{"VM_IS_SNAPSHOT", []string{vm, op}}
		}
	case tmpl:
		ok := []string{"clone", "copy", "export", "provision"}
		if db.field("VM", vm, "is_default_template") != true {
			ok = append(ok, "destroy", "migrate_send")
		}
		if !contains(ok, op) {
			return &XenError{"VM_IS_TEMPLATE", []string{vm, op}}
		}
	}
	power := db.str("VM", vm, "power_state")
	if allowed, ok := allowedPower[op]; ok {
		if snap && (op == "clone" || op == "copy") {
			allowed = []string{"Halted", "Suspended"}
		}
		if !contains(allowed, power) {
			low := make([]string, len(allowed))
			for i, s := range allowed {
				low[i] = strings.ToLower(s)
			}
			return &XenError{"VM_BAD_POWER_STATE", []string{vm, strings.Join(low, ", "), strings.ToLower(power)}}
		}
	}
	cur, _ := db.field("VM", vm, "current_operations").(map[string]string)
	for _, task := range sortedKeys(cur) {
		if !concurrent(op, cur[task]) {
			return &XenError{"OTHER_OPERATION_IN_PROGRESS", []string{"VM", vm, cur[task], task}}
		}
	}
	return nil
}

// concurrent is xapi's is_allowed_concurrently.
func concurrent(op, running string) bool {
	in := func(set ...string) bool { return contains(set, op) && contains(set, running) }
	switch {
	case in("clone", "copy", "export"), in("snapshot", "checkpoint"):
		return true
	case op == "hard_shutdown":
		return running != "hard_shutdown"
	case op == "hard_reboot":
		return running != "hard_shutdown" && running != "hard_reboot"
	case running == "migrate_send":
		return op == "clean_shutdown" || op == "clean_reboot"
	}
	return false
}

func (e *engine) allowedOps(vm string) []string {
	out := []string{}
	for _, op := range listedOps {
		if e.check(vm, op) == nil {
			out = append(out, op)
		}
	}
	return out
}

// setOp adds (val != "") or removes a current_operations key and
// recomputes allowed_operations, as with_vm_operation does.
func (e *engine) setOp(vm, key, val string) {
	if e.db.get("VM", vm) == nil {
		return
	}
	if val == "" {
		e.db.mapDel("VM", vm, "current_operations", key)
	} else {
		e.db.mapPut("VM", vm, "current_operations", key, val)
	}
	e.db.set("VM", vm, "allowed_operations", e.allowedOps(vm))
}

// message creates a message object as create_vm_message does.
func (e *engine) message(name string, vm string, body string) {
	ref := e.ref()
	e.db.addMessage(ref, Struct{{"uuid", e.uuid()}, {"name", name}, {"priority", Int(5)}, {"cls", "VM"},
		{"obj_uuid", e.db.str("VM", vm, "uuid")}, {"timestamp", e.sched.now()}, {"body", body}})
}

// TreeVM is one node of the expected family tree.
type TreeVM struct {
	UUID       string `json:"uuid"`
	Name       string `json:"name"`
	ParentUUID string `json:"parent_uuid,omitempty"`
	Kind       string `json:"kind"` // vm, snapshot, template
	PowerState string `json:"power_state"`
	Destroyed  bool   `json:"destroyed"`
}

// tree returns the ground-truth tree, in creation order. Caller holds db.mu.
func (e *engine) tree() []TreeVM {
	out := make([]TreeVM, 0, len(e.vmOrder))
	for _, u := range e.vmOrder {
		v := e.vms[u]
		out = append(out, TreeVM{UUID: v.uuid, Name: v.name, ParentUUID: v.parent, Kind: v.kind,
			PowerState: v.power, Destroyed: v.destroyed})
	}
	return out
}

// records returns the ground-truth records sorted by start, then id.
func (e *engine) records() []record.Record {
	out := append([]record.Record(nil), e.truth...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Start.Before(out[j].Start) })
	return out
}
