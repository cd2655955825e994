package audit

import (
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/vmlineage/vmlineage/agent/record"
)

// AttributorConfig tunes an Attributor.
type AttributorConfig struct {
	// Window: a line belongs to a record when its time is within
	// [start - Window, end + Window] (default 1 min). xapi writes the
	// ALLOWED line just before the task turns success, so the line's time
	// is about task.finished (reference audit-log.md §5); the window covers
	// second-resolution task times, ends a tracer could only bound, and an
	// HTTP transfer's line at its start.
	Window time.Duration
	// Retain: lines older than the newest by more than this are forgotten
	// (default 2 h); MaxTasks bounds the tasks indexed (default 200,000).
	Retain   time.Duration
	MaxTasks int
	// MaxSessions bounds the sessions remembered (default 100,000).
	MaxSessions int
	// Hosts maps a host name to its uuid for denied records whose source
	// did not know it (files, syslog); per pool.
	Hosts map[string]map[string]string
}

// TaskKey names a task pool-wide: its pool and 12-hex-digit short id.
type TaskKey struct {
	Pool, TaskID string
}

// Update is what one Add changed: the tasks whose actor became known or
// better (re-apply to their records), and the records of refused calls.
type Update struct {
	Tasks  []TaskKey
	Denied []record.Record
}

// AttributorStats counts what the Attributor took in.
type AttributorStats struct {
	Lines     int64 // indexed
	Noise     int64 // not a lifecycle call (task.*, session.*, pool.*, our polls, …)
	Repeats   int64 // the same line again (another source, a re-delivery)
	Denied    int64 // denied records made
	Sessions  int64 // sessions known (trackid → originator/address)
	Evicted   int64
	Tasks     int64 // tasks indexed now
	Attribute int64 // Apply calls that set an actor
}

// Attributor joins RBAC audit lines to lifecycle records through the task's
// short id (the header's R:/D: id, or an HTTP call's task_id argument) and
// names each record's actor. It is safe for concurrent use; memory is
// bounded by Retain, MaxTasks and MaxSessions.
type Attributor struct {
	cfg AttributorConfig

	mu       sync.Mutex
	tasks    map[TaskKey]*taskLines
	order    []taskStamp // insertion order, for eviction
	newest   time.Time
	sessions map[string]*sessionInfo
	sessList []string
	stats    AttributorStats
}

type taskStamp struct {
	key TaskKey
	t   time.Time
}

type taskLines struct {
	lines  []lineInfo
	denied bool // a denied record was made
	last   time.Time
}

// lineInfo is what the index keeps of one line: enough for the actor and
// for a denied record, owning its memory.
type lineInfo struct {
	t                  time.Time
	hash               uint64
	rank               int
	name, sid, trackid string
	clientIP           string
	decision           Decision
	action             string
	host, hostUUID     string
	vmUUID, vmName     string
}

type sessionInfo struct {
	originator, uname, clientIP string
	seen                        time.Time
}

// NewAttributor returns an empty index.
func NewAttributor(cfg AttributorConfig) *Attributor {
	if cfg.Window <= 0 {
		cfg.Window = time.Minute
	}
	if cfg.Retain <= 0 {
		cfg.Retain = 2 * time.Hour
	}
	if cfg.MaxTasks <= 0 {
		cfg.MaxTasks = 200000
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = 100000
	}
	return &Attributor{cfg: cfg, tasks: map[TaskKey]*taskLines{}, sessions: map[string]*sessionInfo{}}
}

// SetHosts gives the host name → uuid map of a pool (denied records from
// sources that know only host names), when it is learnt after NewAttributor.
func (a *Attributor) SetHosts(pool string, hosts map[string]string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cfg.Hosts == nil {
		a.cfg.Hosts = map[string]map[string]string{}
	}
	a.cfg.Hosts[pool] = hosts
}

// Stats returns the counters.
func (a *Attributor) Stats() AttributorStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.stats
	s.Tasks = int64(len(a.tasks))
	s.Sessions = int64(len(a.sessions))
	return s
}

// rank orders the lines of one task by how well they name the caller: the
// coordinator's line with the session's subject first, then a member's copy
// of a forwarded call (LOCAL_SUPERUSER with no name), then xapi's own
// internal calls (named after a host ref).
func rank(l *Line) int {
	switch {
	case strings.HasPrefix(l.SubjectName, "OpaqueRef:"):
		return rankInternal
	case l.SubjectName == "" && l.SubjectID == "LOCAL_SUPERUSER":
		return rankCopy
	}
	return rankCaller
}

const (
	rankInternal = 1 // xapi's own sub-call (slave_login, named after a host ref)
	rankCopy     = 2 // a member's copy of a forwarded call
	rankCaller   = 4 // the session's subject: the caller
)

// lifecycleAction reports whether action can be a lifecycle record's call
// and returns its vm_operation: VM.<message>, or the export and import
// handlers.
func lifecycleAction(action string) (string, bool) {
	if msg, ok := strings.CutPrefix(action, "VM."); ok {
		if msg == "" || strings.HasPrefix(msg, "get_") || strings.HasPrefix(msg, "set_") && msg != "set_is_a_template" ||
			strings.HasPrefix(msg, "add_") || strings.HasPrefix(msg, "remove_") {
			return "", false
		}
		return msg, true
	}
	switch action {
	case "http/get_export", "http/get_export_metadata":
		return "export", true
	case "http/put_import", "http/put_import_metadata":
		return "import", true
	}
	return "", false
}

// taskKey is the pool-wide key of a line's task: an HTTP call names its
// task in the task_id argument (its header has only the handler's dummy
// task); any other line in its header.
func taskKey(l *Line) string {
	if l.CallType == HTTP {
		if a, ok := l.Arg("task_id"); ok {
			if id := record.TaskShortID(a.Ref); id != "" {
				return id
			}
		}
	}
	return l.TaskID
}

// vmOf returns the VM a call named: the vm, self, snapshot or (HTTP) ref
// argument, with the name and uuid xapi's DB cache gave it.
func vmOf(l *Line) (uuid, name string) {
	for _, k := range []string{"vm", "self", "snapshot", "ref", "VM"} {
		if a, ok := l.Arg(k); ok && strings.HasPrefix(a.Ref, "OpaqueRef:") {
			return a.UUID, a.Value
		}
	}
	return "", ""
}

// Add indexes a batch (from any source) and returns what changed.
func (a *Attributor) Add(b *Batch) Update {
	a.mu.Lock()
	defer a.mu.Unlock()
	var up Update
	seenTask := map[TaskKey]bool{}
	for i := range b.Entries {
		e := &b.Entries[i]
		l := &e.Line
		if l.Time.After(a.newest) {
			a.newest = l.Time
		}
		a.noteSession(l)
		op, ok := lifecycleAction(l.Action)
		key := taskKey(l)
		if !ok || key == "" {
			a.stats.Noise++
			continue
		}
		k := TaskKey{Pool: b.PoolUUID, TaskID: key}
		tl := a.tasks[k]
		if tl == nil {
			tl = &taskLines{}
			a.tasks[k] = tl
			a.order = append(a.order, taskStamp{k, l.Time})
		}
		h := lineHash(e.HostName + "\x00" + l.Message())
		dup := false
		for _, x := range tl.lines {
			if x.hash == h {
				dup = true
				break
			}
		}
		if dup {
			a.stats.Repeats++
			continue
		}
		li := lineInfo{t: l.Time, hash: h, rank: rank(l), name: strings.Clone(l.SubjectName),
			sid: strings.Clone(l.SubjectID), trackid: strings.Clone(l.TrackID), clientIP: strings.Clone(l.ClientIP),
			decision: l.Decision, action: strings.Clone(l.Action), host: e.HostName, hostUUID: e.HostUUID}
		li.vmUUID, li.vmName = vmOf(l)
		li.vmUUID, li.vmName = strings.Clone(li.vmUUID), strings.Clone(li.vmName)
		tl.lines = append(tl.lines, li)
		if l.Time.After(tl.last) {
			tl.last = l.Time
		}
		a.stats.Lines++
		if !seenTask[k] {
			seenTask[k] = true
			up.Tasks = append(up.Tasks, k)
		}
		if l.Decision == Denied && !tl.denied {
			tl.denied = true
			a.stats.Denied++
			up.Denied = append(up.Denied, a.deniedRecord(b.PoolUUID, key, op, &li))
		}
	}
	a.evict()
	return up
}

// noteSession learns a session's originator (session.create lines of
// external users) and address (any line that shows one).
func (a *Attributor) noteSession(l *Line) {
	if l.TrackID == "" {
		return
	}
	var orig, uname string
	if l.Action == "session.create" {
		o, _ := l.Arg("originator")
		u, _ := l.Arg("uname")
		orig, uname = o.Value, u.Value
	} else if l.ClientIP == "" {
		return
	}
	a.session(Session{TrackID: l.TrackID, Originator: orig, Uname: uname, ClientIP: l.ClientIP}, l.Time)
}

// Session is what xensource.log's Session.create line (or an audit
// session.create line) tells about a session.
type Session struct {
	TrackID, Uname, Originator string
	ClientIP                   string
	LocalSuperuser             bool
	SubjectID                  string
}

// AddSession records what a xensource.log Session.create line says (see
// ParseSessionCreate): the originator of root sessions is nowhere else.
func (a *Attributor) AddSession(s Session, at time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.session(s, at)
}

func (a *Attributor) session(s Session, at time.Time) {
	si := a.sessions[s.TrackID]
	if si == nil {
		si = &sessionInfo{}
		a.sessions[strings.Clone(s.TrackID)] = si
		a.sessList = append(a.sessList, strings.Clone(s.TrackID))
		if len(a.sessList) > a.cfg.MaxSessions {
			drop := len(a.sessList) - a.cfg.MaxSessions
			for _, t := range a.sessList[:drop] {
				delete(a.sessions, t)
			}
			a.sessList = append([]string(nil), a.sessList[drop:]...)
		}
	}
	if s.Originator != "" {
		si.originator = strings.Clone(s.Originator)
	}
	if s.Uname != "" {
		si.uname = strings.Clone(s.Uname)
	}
	if s.ClientIP != "" {
		si.clientIP = strings.Clone(s.ClientIP)
	}
	if at.After(si.seen) {
		si.seen = at
	}
}

// evict forgets tasks beyond Retain or MaxTasks, oldest first (order is
// the order tasks were first seen: about time order).
func (a *Attributor) evict() {
	cut := a.newest.Add(-a.cfg.Retain)
	n := 0
	for n < len(a.order) {
		k := a.order[n].key
		tl := a.tasks[k]
		if tl != nil && len(a.tasks) <= a.cfg.MaxTasks && !tl.last.Before(cut) {
			break
		}
		if tl != nil {
			delete(a.tasks, k)
			a.stats.Evicted++
		}
		n++
	}
	if n > 0 {
		a.order = append(a.order[:0:0], a.order[n:]...)
	}
}

// best picks the line that names the actor of a record running from start
// to end: the highest rank, then the closest in time to the end.
func (a *Attributor) best(k TaskKey, start, end time.Time) (*lineInfo, bool) {
	tl := a.tasks[k]
	if tl == nil {
		return nil, false
	}
	if start.IsZero() || start.After(end) {
		start = end
	}
	lo, hi := start.Add(-a.cfg.Window), end.Add(a.cfg.Window)
	var out *lineInfo
	dist := func(t time.Time) time.Duration {
		d := t.Sub(end)
		if d < 0 {
			d = -d
		}
		return d
	}
	for i := range tl.lines {
		li := &tl.lines[i]
		if li.t.Before(lo) || li.t.After(hi) {
			continue // the same short id, another task (48 bits collide in time)
		}
		if out == nil || li.rank > out.rank || li.rank == out.rank && dist(li.t) < dist(out.t) {
			out = li
		}
	}
	return out, out != nil
}

// actor builds the actor of a line, completed from what its session told.
func (a *Attributor) actor(li *lineInfo) *record.Actor {
	act := &record.Actor{Name: li.name, SubjectID: li.sid, ClientIP: li.clientIP, TrackID: li.trackid}
	if si := a.sessions[li.trackid]; si != nil {
		act.Originator = si.originator
		if act.ClientIP == "" {
			act.ClientIP = si.clientIP // an HTTP handler's check runs under a task without the client
		}
	}
	return act
}

// Actor returns who made the call of task taskID (its short id) in pool,
// for a record ending at end.
func (a *Attributor) Actor(pool, taskID string, end time.Time) (*record.Actor, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	li, ok := a.best(TaskKey{pool, taskID}, end, end)
	if !ok {
		return nil, false
	}
	return a.actor(li), true
}

// Apply sets r.Actor from the index (true when it changed r). A denied
// record whose VM the event stream could not name (a refused async call
// touches no VM) gets the VM the refused call named.
func (a *Attributor) Apply(r *record.Record) bool {
	changed, _ := a.Complete(r)
	return changed
}

// Complete is Apply for a keeper that waits to seal a record until its
// actor is known (agent/pipeline's chain keeper): changed as Apply; final
// when the actor comes from the caller's own line, which nothing that can
// still arrive would better (a member's copy or xapi's internal call is
// not final: the coordinator's line may follow).
func (a *Attributor) Complete(r *record.Record) (changed, final bool) {
	if r == nil || r.TaskID == "" {
		return false, false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	li, ok := a.best(TaskKey{r.PoolUUID, r.TaskID}, r.Start, r.End)
	if !ok {
		return false, false
	}
	final = li.rank == rankCaller
	act := a.actor(li)
	if r.Actor == nil || *r.Actor != *act {
		r.Actor = act
		changed = true
	}
	if r.Activity.Creating() && r.Activity != record.Import && r.Activity != record.Create && r.Result == record.Success &&
		r.ParentVMUUID == "" && li.vmUUID != "" && li.vmUUID != r.VMUUID {
		// The call's vm argument is the VM the new one came from: what the
		// event stream could not show when the source's current_operations
		// came and went between two polls.
		r.ParentVMUUID = li.vmUUID
		r.Unknown = without(r.Unknown, "parent_vm_uuid")
		changed = true
	}
	if r.Result == record.Denied && r.IsUnknown("vm_uuid") {
		for i := range a.tasks[TaskKey{r.PoolUUID, r.TaskID}].lines {
			d := &a.tasks[TaskKey{r.PoolUUID, r.TaskID}].lines[i]
			if d.decision == Denied && d.vmUUID != "" {
				r.VMUUID, r.VMName = d.vmUUID, d.vmName
				r.Unknown = without(r.Unknown, "vm_uuid", "vm_name")
				changed = true
				break
			}
		}
	}
	if changed {
		a.stats.Attribute++
	}
	return changed, final
}

func without(list []string, drop ...string) []string {
	var out []string
	for _, s := range list {
		keep := true
		for _, d := range drop {
			keep = keep && s != d
		}
		if keep {
			out = append(out, s)
		}
	}
	return out
}

// deniedRecord is the record of a refused call: id record.ID(pool, short
// id, 0), so it is the same record as the tracer's when the call had a task
// in the database (an async call). The error's message, the task's uuid and
// the VM's lineage parent are not in the line.
func (a *Attributor) deniedRecord(pool, key, op string, li *lineInfo) record.Record {
	act, _ := record.ActivityOf(op)
	r := record.Record{ID: record.ID(pool, key, 0), PoolUUID: pool, HostUUID: li.hostUUID, HostName: li.host,
		VMUUID: li.vmUUID, VMName: li.vmName, Activity: act, Operation: op, Start: li.t, End: li.t,
		Result: record.Denied, Error: "RBAC_PERMISSION_DENIED: " + li.action, TaskID: key, Source: record.SourceAudit,
		Actor: a.actor(li)}
	if r.HostUUID == "" {
		r.HostUUID = a.cfg.Hosts[pool][li.host]
	}
	r.Unknown = []string{"task_uuid", "error", "parent_vm_uuid"}
	if r.VMUUID == "" {
		r.Unknown = append(r.Unknown, "vm_uuid")
	}
	if r.HostUUID == "" {
		r.Unknown = append(r.Unknown, "host_uuid")
	}
	sort.Strings(r.Unknown)
	return r
}
