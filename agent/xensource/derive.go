package xensource

import (
	"sort"
	"strings"
	"time"

	"github.com/vmlineage/vmlineage/agent/record"
)

// Config configures a Deriver.
type Config struct {
	// PoolUUID goes into every record and into its id.
	PoolUUID string
	// Hosts maps the host names the caller gives with each Entry (the origin
	// of each log: file name, syslog source) to host uuids. The logs never
	// print a member's own uuid next to its name, so without this map
	// host_uuid is reported unknown. Listing every host also tells the
	// Deriver which logs to wait for before it closes a task (see Linger).
	Hosts map[string]string
	// Master is the coordinator's host name, used for clone/copy/snapshot/
	// checkpoint records when the coordinator's own log is not read.
	Master string
	// Linger is how long (in log time, across all hosts) a task whose end was
	// seen stays open for late lines from other hosts. Default 5s.
	Linger time.Duration
	// IdleTimeout closes a task with no end marker after this much log time
	// without a line; its success is then inferred. Default 10m.
	IdleTimeout time.Duration
}

// DeriveStats counts what a Deriver did.
type DeriveStats struct {
	Entries  int64 // entries fed
	Tasks    int64 // VM-operation tasks opened
	Records  int64 // records emitted
	Late     int64 // lines of a task already emitted (dropped)
	Timeouts int64 // tasks closed by IdleTimeout instead of an end marker
}

// Deriver turns entries from one or more hosts' logs into lifecycle records
// (source "xensource.log"), one per XenAPI task, keyed by the task's R: id so
// that the record id equals the one the XAPI tracer computes
// (record.ID(pool, record.TaskShortID(taskRef), 0)). Entries must be in time
// order per host; hosts may be fed in any interleaving.
type Deriver struct {
	cfg     Config
	tasks   map[string]*task // by R: short id
	byVM    map[string]string
	done    map[string]time.Time // emitted ids → when, to drop late lines
	clocks  map[string]time.Time // per host: time of its last entry
	parents map[string]string    // child vm → parent vm, learnt from records
	checked time.Time
	pruned  time.Time
	dueQ    dueHeap // when open tasks may close (lazy: re-checked on pop)
	closing []*task // reused by expire
	Stats   DeriveStats
}

// NewDeriver returns a Deriver for cfg.
func NewDeriver(cfg Config) *Deriver {
	if cfg.Linger <= 0 {
		cfg.Linger = 5 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 10 * time.Minute
	}
	d := &Deriver{cfg: cfg, tasks: map[string]*task{}, byVM: map[string]string{},
		done: map[string]time.Time{}, clocks: map[string]time.Time{}, parents: map[string]string{}}
	for h := range cfg.Hosts {
		d.clocks[h] = time.Time{}
	}
	return d
}

// task is what the lines of one XenAPI task revealed so far.
type task struct {
	id, taskName, op string
	activity         record.Activity
	vmUUID, vmName   string
	newName          string
	hasNewName       bool
	newVM            string
	destUUID         string
	destName         string
	coordinator      string
	hosts            []hostSeen
	first, last      time.Time
	ended, closing   bool
	created          int // import: "Created VM" lines
	result           record.Result
	errCode          string
	errParams        []string
}

type hostSeen struct {
	name                        string
	audit, forwarded, xapiCall  bool
	xenopsd, migrateFrom, state bool
	xapiTask, failed            bool
	migrateTo, xenopsdFailed    bool
}

func (t *task) host(name string) *hostSeen {
	for i := range t.hosts {
		if t.hosts[i].name == name {
			return &t.hosts[i]
		}
	}
	t.hosts = append(t.hosts, hostSeen{name: strings.Clone(name)})
	return &t.hosts[len(t.hosts)-1]
}

// Feed takes one entry and returns the records it completed (usually none).
func (d *Deriver) Feed(e *Entry) []record.Record {
	d.Stats.Entries++
	if c, ok := d.clocks[e.Host]; !ok || e.Time.After(c) {
		if !ok {
			d.clocks[strings.Clone(e.Host)] = e.Time
		} else {
			d.clocks[e.Host] = e.Time
		}
	}
	d.observe(e)
	// Expiry runs at most once per second of log time, and only when a
	// task may be due.
	if len(d.dueQ) > 0 && e.Time.Sub(d.checked) >= time.Second && !e.Time.Before(d.dueQ[0].at) {
		d.checked = e.Time
		if wm := d.watermark(); !wm.Before(d.dueQ[0].at) {
			return d.expire(wm, false)
		}
	}
	return nil
}

func (d *Deriver) observe(e *Entry) {
	l := &e.Line
	if l.Kind != KindToolstack {
		return
	}
	// A failure head names the failing task in its text; its task field is
	// the enclosing context (empty, dispatch: D:…, or a parent R: task in the
	// 2019–2022 builds), so it is read before the header's task.
	if l.Module == "backtrace" {
		if f, ok := parseFailure(l.Msg); ok {
			d.onFailure(f, e)
			return
		}
	}
	if l.TaskRefKind == 'R' {
		if t := d.get(l.TaskShortID, l.TaskName, e.Time); t != nil {
			d.onTaskLine(t, e)
		}
		return
	}
	switch l.Module {
	case "taskhelper":
		// "task <name> R:<id> forwarded (trackid=…)", logged under the
		// outer dispatch: D: task of the member that executes the call.
		if rest, ok := strings.CutPrefix(l.Msg, "task "); ok {
			if i := strings.Index(rest, " forwarded"); i >= 15 && rest[i-15] == ' ' && rest[i-14] == 'R' && rest[i-13] == ':' {
				if t := d.get(rest[i-12:i], rest[:i-15], e.Time); t != nil {
					d.touch(t, e)
					t.host(e.Host).forwarded = true
				}
			}
		}
	case "xenops":
		if u, st, ok := powerState(l.Msg); ok {
			if id, ok := d.byVM[u]; ok {
				if t := d.tasks[id]; t != nil && !t.ended && expectedState(t.activity) == st {
					d.touch(t, e)
					t.host(e.Host).state = true
					if t.activity != record.Migrate {
						t.ended = true
						d.schedule(t, d.due(t))
					}
				}
			}
		}
	}
}

// onFailure records "<dbg> R:<id> failed with exception <exn>".
func (d *Deriver) onFailure(f failure, e *Entry) {
	t := d.get(f.shortID, f.taskName, e.Time)
	if t == nil {
		return
	}
	d.touch(t, e)
	t.host(e.Host).failed = true
	if t.result != record.Failure && t.result != record.Cancelled {
		t.errCode, t.errParams = strings.Clone(f.code), cloneAll(f.params)
		t.result = record.Failure
		if f.code == "TASK_CANCELLED" {
			t.result = record.Cancelled
		}
	}
	t.ended = true
	d.schedule(t, d.due(t))
}

func cloneAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strings.Clone(s)
	}
	return out
}

// get returns the open task with short id, opening it when name is a VM
// operation; nil for other tasks and for tasks already emitted.
func (d *Deriver) get(id, name string, at time.Time) *task {
	if t := d.tasks[id]; t != nil {
		return t
	}
	if _, gone := d.done[id]; gone {
		d.Stats.Late++
		return nil
	}
	if _, ok := opOfTaskName(name); !ok {
		return nil
	}
	// The task keeps its own copy: name aliases the caller's read buffer,
	// and op must be cut from the copy, not from name.
	name = strings.Clone(name)
	op, _ := opOfTaskName(name)
	a, _ := record.ActivityOf(op)
	t := &task{id: strings.Clone(id), taskName: name, op: op, activity: a, first: at, last: at}
	d.tasks[t.id] = t
	d.Stats.Tasks++
	d.schedule(t, at.Add(d.cfg.IdleTimeout))
	return t
}

// schedule queues a check of t at at. A task has one entry from its
// creation plus one when its end is seen (which can make it due earlier).
func (d *Deriver) schedule(t *task, at time.Time) { d.dueQ.push(dueItem{at, t}) }

// due is when t closes if no further line arrives.
func (d *Deriver) due(t *task) time.Time {
	if t.ended {
		return t.last.Add(d.cfg.Linger)
	}
	return t.last.Add(d.cfg.IdleTimeout)
}

func (d *Deriver) touch(t *task, e *Entry) {
	if e.Time.Before(t.first) {
		t.first = e.Time
	}
	if e.Time.After(t.last) {
		t.last = e.Time
	}
}

func (d *Deriver) onTaskLine(t *task, e *Entry) {
	d.touch(t, e)
	l := &e.Line
	h := t.host(e.Host)
	if strings.HasPrefix(l.Program, "xenopsd") {
		d.onXenopsd(t, h, l)
		return
	}
	if l.Program != "xapi" {
		return
	}
	h.xapiTask = true
	msg := l.Msg
	switch l.Module {
	case "audit":
		a, ok := parseAudit(msg)
		if !ok || a.op != t.op {
			return
		}
		h.audit = true
		t.coordinator = h.name
		// Clone: the entry's strings alias the caller's read buffer.
		if a.vmUUID != "" {
			t.vmUUID, t.vmName = strings.Clone(a.vmUUID), strings.Clone(Unescape(a.vmName))
			d.byVM[t.vmUUID] = t.id
		}
		if a.hasNewName {
			t.newName, t.hasNewName = strings.Clone(Unescape(a.newName)), true
		}
		if a.hostUUID != "" && t.activity == record.Migrate {
			t.destUUID, t.destName = strings.Clone(a.hostUUID), strings.Clone(Unescape(a.hostName))
		}
		return
	case "xenops", "xapi_vm_migrate":
		if u, migrate, ok := xapiCallVM(msg); ok {
			h.xapiCall = true
			h.migrateFrom = h.migrateFrom || migrate
			if t.vmUUID == "" && !t.activity.Creating() {
				t.vmUUID = strings.Clone(u)
				d.byVM[t.vmUUID] = t.id
			}
			return
		}
	}
	switch {
	case strings.HasPrefix(msg, "VM ") && strings.HasSuffix(msg, " was cloned: clearing certain UEFI variables"):
		if u, ok := uuidAfter(msg, "VM "); ok {
			t.newVM = strings.Clone(u)
		}
	case l.Module == "import" && strings.HasPrefix(msg, "Created VM: OpaqueRef:"):
		t.created++
	case msg == "VM.destroy: deleting DB records", msg == "VM.revert done", msg == "import successful",
		msg == "Snapshot: end",
		strings.HasPrefix(msg, "VM OpaqueRef:") && strings.Contains(msg, " migrated from "),
		strings.HasPrefix(msg, "export VM = ") && strings.HasSuffix(msg, " completed successfully"):
		t.ended = true
		d.schedule(t, d.due(t))
	case l.Module == "export" && strings.HasPrefix(msg, "VM.export: VM = '"):
		if u, ok := uuidAfter(msg, "VM.export: VM = '"); ok && t.vmUUID == "" {
			t.vmUUID = strings.Clone(u)
			// export.ml string_of_vm: "'<uuid>' ('<name>')".
			if _, n, ok := strings.Cut(msg, "' ('"); ok {
				if i := strings.LastIndex(n, "'); preserve_power_state"); i >= 0 {
					t.vmName = strings.Clone(Unescape(n[:i]))
				}
			}
		}
	}
}

// onXenopsd reads a xenopsd line run under the task's dbg: xenopsd reuses
// xapi's dbg verbatim, on the destination of a migration too (reference §5).
func (d *Deriver) onXenopsd(t *task, h *hostSeen, l *Line) {
	h.xenopsd = true
	msg := l.Msg
	switch {
	case strings.HasPrefix(msg, "VM.migrate "), strings.HasPrefix(msg, "cannot transmit vm to host"):
		h.migrateFrom = true
	case strings.HasPrefix(msg, "VM.receive_memory"):
		h.migrateTo = true
	}
	if l.Level == "error" && (strings.HasPrefix(msg, "cannot transmit vm to host") ||
		strings.HasPrefix(msg, "Task ") && strings.Contains(msg, " failed; ")) {
		h.xenopsdFailed = true
	}
	// "VM.<step> <uuid>" (xenops_server.ml perform_atomic/perform_exn).
	if t.vmUUID == "" && !t.activity.Creating() && strings.HasPrefix(msg, "VM.") {
		if sp := strings.IndexByte(msg, ' '); sp > 3 {
			if u, ok := uuidAfter(msg[sp:], " "); ok {
				t.vmUUID = strings.Clone(u)
				d.byVM[t.vmUUID] = t.id
			}
		}
	}
}

// watermark is the time up to which every host's log has been read: the
// minimum of the host clocks, ignoring hosts silent for longer than
// IdleTimeout behind the newest (a host that stopped logging must not hold
// everything back).
func (d *Deriver) watermark() time.Time {
	var max, min time.Time
	set := false
	for _, c := range d.clocks {
		if c.After(max) {
			max = c
		}
	}
	for _, c := range d.clocks {
		// A configured host not read yet (zero clock) holds everything
		// back; one that went quiet does not.
		if !c.IsZero() && max.Sub(c) > d.cfg.IdleTimeout {
			continue
		}
		if !set || c.Before(min) {
			min, set = c, true
		}
	}
	return min
}

// OldestOpen returns the first-line time of the oldest task still open (a
// record the Deriver may yet return starts no earlier), and false when none
// is open.
func (d *Deriver) OldestOpen() (time.Time, bool) {
	var oldest time.Time
	for _, t := range d.tasks {
		if oldest.IsZero() || t.first.Before(oldest) {
			oldest = t.first
		}
	}
	return oldest, !oldest.IsZero()
}

// Open reports whether the task with short id is open: a record for it may
// still come.
func (d *Deriver) Open(id string) bool {
	_, ok := d.tasks[id]
	return ok
}

// IdleTimeout is the configured (or default) idle timeout.
func (d *Deriver) IdleTimeout() time.Duration { return d.cfg.IdleTimeout }

// Flush closes every open task (end of input) and returns their records.
func (d *Deriver) Flush() []record.Record { return d.expire(time.Time{}, true) }

// Expire closes tasks as if every host's log had reached now (a live
// tailer calls it on a timer so that quiet logs still flush).
func (d *Deriver) Expire(now time.Time) []record.Record { return d.expire(now, false) }

func (d *Deriver) expire(wm time.Time, all bool) []record.Record {
	var out []record.Record
	closing := d.closing[:0]
	if all {
		for _, t := range d.tasks {
			closing = append(closing, t)
		}
		d.dueQ = d.dueQ[:0]
	}
	for !all && len(d.dueQ) > 0 && !d.dueQ[0].at.After(wm) {
		t := d.dueQ.pop().t
		if d.tasks[t.id] != t || t.closing {
			continue
		}
		if due := d.due(t); due.After(wm) {
			d.schedule(t, due) // touched since it was queued
			continue
		}
		t.closing = true
		closing = append(closing, t)
		if !t.ended {
			d.Stats.Timeouts++
		}
	}
	sort.Slice(closing, func(i, j int) bool {
		a, b := closing[i], closing[j]
		if !a.first.Equal(b.first) {
			return a.first.Before(b.first)
		}
		return a.id < b.id
	})
	for _, t := range closing {
		id := t.id
		delete(d.tasks, id)
		if d.byVM[t.vmUUID] == id {
			delete(d.byVM, t.vmUUID)
		}
		d.done[id] = t.last
		out = d.appendRecords(out, t)
	}
	clear(closing)
	d.closing = closing[:0]
	// Forget emitted ids once no late line can plausibly arrive.
	if len(d.done) > 0 && !wm.IsZero() && wm.Sub(d.pruned) > d.cfg.IdleTimeout {
		d.pruned = wm
		for id, at := range d.done {
			if wm.Sub(at) > 2*d.cfg.IdleTimeout {
				delete(d.done, id)
			}
		}
	}
	d.Stats.Records += int64(len(out))
	return out
}

type dueItem struct {
	at time.Time
	t  *task
}

// dueHeap is a binary min-heap of dueItem by time, written out rather than
// through container/heap, whose interface boxing allocates per operation.
type dueHeap []dueItem

func (h *dueHeap) push(it dueItem) {
	*h = append(*h, it)
	q := *h
	for i := len(q) - 1; i > 0; {
		p := (i - 1) / 2
		if !q[i].at.Before(q[p].at) {
			break
		}
		q[i], q[p] = q[p], q[i]
		i = p
	}
}

func (h *dueHeap) pop() dueItem {
	q := *h
	top := q[0]
	n := len(q) - 1
	q[0] = q[n]
	q[n] = dueItem{}
	q = q[:n]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < n && q[l].at.Before(q[m].at) {
			m = l
		}
		if r < n && q[r].at.Before(q[m].at) {
			m = r
		}
		if m == i {
			break
		}
		q[i], q[m] = q[m], q[i]
		i = m
	}
	*h = q
	return top
}
