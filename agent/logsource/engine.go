package logsource

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/agent/xensource"
)

// Stats are the log source's counters (for metrics and log lines).
type Stats struct {
	Lines     int64 // lines read for the first time (files and syslog)
	Replayed  int64 // lines re-read after a restart only to rebuild open tasks (not counted in Lines)
	Bytes     int64
	Overlong  int64 // lines over MaxLine, skipped
	Bad       int64 // lines that are not syslog lines at all (binary junk, truncated envelopes)
	Records   int64 // records the deriver produced
	Stored    int64 // records written to the store
	Known     int64 // records whose id the store already held (XAPI saw the operation first)
	Dropped   int64 // records left to the XAPI tracer (standby, XAPI healthy)
	Rotations int64 // renames, truncations and replacements followed
	Missing   int64 // polls that found a followed file or its directory gone
}

// Mode says what the engine does with the records it derives.
type Mode int32

const (
	// Standby: XAPI is healthy. Records are held for Hold and then stored
	// only when the tracer has not stored their id and XAPI was suspect or
	// down meanwhile; otherwise they are dropped (the XAPI record is better).
	Standby Mode = iota
	// Suspect: XAPI stopped answering but the failover delay has not passed.
	// Records are still held, but stored when released.
	Suspect
	// Active: the log source is the pool's tracer; records are stored at once.
	Active
)

func (m Mode) String() string {
	switch m {
	case Standby:
		return "standby"
	case Suspect:
		return "suspect"
	case Active:
		return "active"
	}
	return "unknown"
}

// EngineConfig configures an Engine.
type EngineConfig struct {
	Deriver xensource.Config
	// Loc is the zone of the hosts' year-less syslog stamps (dom0 local
	// time); nil means UTC.
	Loc *time.Location
	// MaxLine caps a line; longer ones are skipped and counted. Default 1 MiB.
	MaxLine int
	// Hold is how long a record derived in standby waits for the XAPI
	// tracer before the engine decides about it. It must exceed the
	// failover delay, so that operations that ended just before XAPI
	// became unreachable are not lost. Default 1 minute.
	Hold time.Duration
	// Quiet is how long no line at all must arrive before quiet tasks are
	// closed by the wall clock (default 10s).
	Quiet time.Duration
	// Now is the clock year-less stamps are anchored to when tailing
	// (default time.Now; the simulator's virtual clock in tests).
	Now func() time.Time
	// StandbyStores stores, after Hold, a record derived while XAPI is
	// healthy when the tracer has not stored its id (an operation whose
	// lines arrive after an outage, because the logs lag).
	StandbyStores bool
	// Mode to start in (Active for replay).
	Mode Mode
	Log  *slog.Logger
	// OnShadowed is called (after the commit) for each derived record the
	// store already had under its id — usually the tracer's. Until the store
	// can replace a record by a better one (see Better), this is where a
	// richer log record is seen and lost.
	OnShadowed func(*record.Record)
	// OnRecord is called for each record stored (after the commit).
	OnRecord func(*record.Record)
	// OnSession, when set, gets the message of every xapi_session
	// "Session.create" line (uname and originator of every session, root's
	// included, joined to the RBAC audit log's lines by trackid).
	OnSession func(host string, t time.Time, msg string)
}

// Engine turns lines of many hosts into records and commits them, with the
// file offsets that produced them, in one store transaction. It is shared by
// the tailer, the syslog listener and replay. Safe for concurrent use.
type Engine struct {
	cfg   EngineConfig
	store *lineage.Store
	log   *slog.Logger
	mode  atomic.Int32

	mu        sync.Mutex
	d         *xensource.Deriver
	g         xensource.Grouper
	years     map[string]*xensource.YearInferer
	line      xensource.Line
	open      map[string]*track // R: id → where its lines are
	names     map[string]string // interned task names
	pending   []pending
	newest    time.Time // newest log time fed
	given     time.Time // newest log time given to the grouper and Deriver (merge queues passed)
	newAt     time.Time // wall time it was fed
	lastLine  time.Time // wall time of the last line fed
	merge     bool      // queue lines and feed them in time order across hosts
	positions func() (map[*segment]int64, uint64)
	queues    map[string][]queued
	queued    int
	clock     map[string]time.Time // per host: newest line read
	stats     Stats
	cur       *segment // segment of the line being fed (nil: syslog, replay)
	curOff    int64
	replay    bool
	susp      bool         // XAPI was suspect or down since the oldest pending record
	settled   atomic.Int64 // Settled, unix nanoseconds (0: nothing yet)
	// noClock: the caller (Replay) sets lastLine itself now and then; a
	// clock read per line costs more than parsing it on some VMs.
	noClock bool

	// Per-line lookups that nearly always repeat the previous line's.
	lastKey  string
	lastYear *xensource.YearInferer
	lastHost string
	hostName string

	// bulk, when set (Replay), is the store connection commits go through.
	bulk *lineage.Bulk

	// Buffers reused across commits (see commit).
	spare, takeBuf, keepBuf []pending
	recBuf                  []record.Record
}

// track is where the lines of one task lie, so that a restart re-reads
// from before the first line of every task not yet committed.
type track struct {
	first map[*segment]int64
	start map[*segment]int64 // each live file's position when the task appeared
	born  uint64             // segments with a higher seq appeared after it
	last  time.Time
	held  bool // a pending record refers to it
}

type pending struct {
	rec     record.Record
	release time.Time
	tr      *track
	susp    bool
}

// NewEngine returns an engine writing to store.
func NewEngine(store *lineage.Store, cfg EngineConfig) *Engine {
	if cfg.MaxLine <= 0 {
		cfg.MaxLine = xensource.MaxLineBytes
	}
	if cfg.Hold <= 0 {
		cfg.Hold = time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Quiet <= 0 {
		cfg.Quiet = 10 * time.Second
	}
	if cfg.Loc == nil {
		cfg.Loc = time.UTC
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	e := &Engine{cfg: cfg, store: store, log: cfg.Log, d: xensource.NewDeriver(cfg.Deriver),
		years: map[string]*xensource.YearInferer{}, open: map[string]*track{}, names: map[string]string{}}
	e.mode.Store(int32(cfg.Mode))
	return e
}

// SetMode switches between standby, suspect and active (see Failover).
func (e *Engine) SetMode(m Mode) {
	old := Mode(e.mode.Swap(int32(m)))
	if old != m {
		e.log.Info("log source mode", "from", old.String(), "to", m.String())
	}
	if m != Standby {
		e.mu.Lock()
		e.susp = true
		for i := range e.pending {
			e.pending[i].susp = true
		}
		e.mu.Unlock()
	}
}

// Mode returns the current mode.
func (e *Engine) Mode() Mode { return Mode(e.mode.Load()) }

// Stats returns a copy of the counters.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.stats
}

// DeriveStats returns the deriver's counters.
func (e *Engine) DeriveStats() xensource.DeriveStats {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.d.Stats
}

// feedLine parses one line (without its newline) of stream key from host
// (host "" takes the line's syslog host field). Caller holds e.mu.
func (e *Engine) feedLine(key, host string, b []byte) {
	// Parsed straight into the grouper's scratch entry: a line that passes
	// through (nearly all) is not copied again.
	l := e.g.Scratch()
	if err := xensource.ParseBytes(b, l); err != nil {
		var pe *xensource.ParseError
		if !errors.As(err, &pe) || pe.Kind != xensource.ErrKindHeader {
			if !e.replay {
				e.stats.Bad++
			}
			return
		}
	}
	// The line aliases the read buffer, which is reused: the Deriver and
	// the grouper copy what they keep.
	if host == "" {
		// Per-host state is keyed by this string: memory of its own.
		if l.SyslogHost != e.lastHost || e.hostName == "" {
			e.hostName = e.intern(l.SyslogHost)
			e.lastHost = e.hostName
		}
		host = e.hostName
	}
	y := e.lastYear
	if key != e.lastKey || y == nil {
		y = e.years[key]
		if y == nil {
			y = xensource.NewYearInferer(e.cfg.Now(), e.cfg.Loc)
			e.years[key] = y
		}
		e.lastKey, e.lastYear = key, y
	}
	t := y.Infer(l.Stamp)
	e.feedParsed(host, t, l)
}

func (e *Engine) intern(s string) string {
	if v, ok := e.names[s]; ok {
		return v
	}
	v := strings.Clone(s)
	if len(e.names) < 4096 { // custom dbg names are unbounded; common ones are few
		e.names[v] = v
	}
	return v
}

// feedParsed takes a parsed line. Caller holds e.mu.
func (e *Engine) feedParsed(host string, t time.Time, l *xensource.Line) {
	if e.cfg.OnSession != nil && l.Module == "xapi_session" && strings.HasPrefix(l.Msg, "Session.create ") {
		e.cfg.OnSession(host, t, l.Message())
	}
	if !e.noClock {
		e.lastLine = time.Now()
	}
	if e.merge {
		if e.clock == nil {
			e.clock = map[string]time.Time{}
		}
		if c, ok := e.clock[host]; !ok || t.After(c) {
			e.clock[strings.Clone(host)] = t
		}
	}
	if t.After(e.newest) {
		e.newest, e.newAt = t, e.lastLine
	}
	if e.cur == nil {
		e.deliver(host, t, l)
		return
	}
	id := ""
	if l.TaskRefKind == 'R' {
		id = l.TaskShortID
	}
	// A member's first line of a task ("task … R:<id> forwarded") and
	// failure heads are logged under another task: their id is in the text.
	if l.Module == "taskhelper" || l.Module == "backtrace" {
		if m := msgTaskID(l.Msg); m != "" {
			id = m
		}
	}
	if id != "" {
		tr := e.open[id]
		if tr == nil {
			tr = &track{first: map[*segment]int64{}}
			// Lines of the task without its id (the event thread's
			// power_state) may come later in any file: remember where
			// every file stood, and which segments existed, when the task
			// was first seen.
			if e.positions != nil {
				tr.start, tr.born = e.positions()
			}
			e.open[strings.Clone(id)] = tr
		}
		if _, ok := tr.first[e.cur]; !ok {
			tr.first[e.cur] = e.curOff
		}
		tr.last = t
	}
	e.deliver(host, t, l)
}

// queued is a line waiting for the other hosts' logs to catch up.
type queued struct {
	host string
	t    time.Time
	l    xensource.Line
}

// deliver hands a line to the grouper and deriver, or, when the engine
// merges (tailing several files), queues it: xensource.Deriver's result
// depends on how the hosts' lines interleave (a task can close before a
// lagging host's lines arrive), so lines are fed in time order across
// hosts, as a merged replay would feed them.
func (e *Engine) deliver(host string, t time.Time, l *xensource.Line) {
	if !e.merge {
		if t.After(e.given) {
			e.given = t
		}
		e.g.Feed(host, t, l, e.emit)
		return
	}
	if e.queues == nil {
		e.queues = map[string][]queued{}
	}
	e.queues[host] = append(e.queues[host], queued{strings.Clone(host), t, l.Clone()})
	e.queued++
	if e.queued > maxQueued {
		e.release(false, true)
	}
}

// maxQueued bounds the merge queues (memory flat when one host's log is far
// behind the others): past it the oldest lines go on regardless.
const maxQueued = 200000

// release feeds the queued lines up to the watermark: the oldest newest-line
// time among the hosts seen. all releases everything (quiet logs, end).
func (e *Engine) release(all, overflow bool) {
	if e.queued == 0 {
		return
	}
	var wm time.Time
	first := true
	for h, c := range e.clock {
		_ = h
		if first || c.Before(wm) {
			wm, first = c, false
		}
	}
	for {
		best := ""
		for h, q := range e.queues {
			if len(q) == 0 {
				continue
			}
			if best == "" || q[0].t.Before(e.queues[best][0].t) || (q[0].t.Equal(e.queues[best][0].t) && h < best) {
				best = h
			}
		}
		if best == "" {
			return
		}
		q := e.queues[best]
		if !all && q[0].t.After(wm) && !(overflow && e.queued > maxQueued/2) {
			return
		}
		x := q[0]
		q[0] = queued{}
		e.queues[best] = q[1:]
		if len(e.queues[best]) == 0 {
			delete(e.queues, best)
		}
		e.queued--
		if x.t.After(e.given) {
			e.given = x.t
		}
		e.g.Feed(x.host, x.t, &x.l, e.emit)
	}
}

func (e *Engine) emit(en *xensource.Entry) {
	for _, r := range e.d.Feed(en) {
		e.add(r)
	}
}

func (e *Engine) add(r record.Record) {
	e.stats.Records++
	tr := e.open[r.TaskID]
	if tr != nil {
		tr.held = true
	}
	p := pending{rec: r, tr: tr, susp: e.susp}
	if Mode(e.mode.Load()) == Standby {
		p.release = time.Now().Add(e.cfg.Hold)
	}
	e.pending = append(e.pending, p)
}

// expire closes tasks whose logs went quiet: log time is advanced by the
// wall time elapsed since the newest line, since a live log's clock and
// ours move together. Caller holds e.mu.
func (e *Engine) expire(flushAll bool) {
	if flushAll {
		e.release(true, false)
		e.g.Flush(e.emit)
		for _, r := range e.d.Flush() {
			e.add(r)
		}
		return
	}
	// Only when every log has been quiet: while lines flow, the deriver's
	// own per-host clocks decide, and advancing them all would close tasks
	// whose other hosts' lines are merely behind (NFS, slower writers).
	if e.newest.IsZero() || time.Since(e.lastLine) < e.cfg.Quiet {
		e.release(false, false)
		return
	}
	e.release(true, false)
	now := e.newest.Add(time.Since(e.newAt))
	for _, r := range e.d.Expire(now) {
		e.add(r)
	}
}

// commit writes the releasable records and the files' states in one
// transaction. states returns the agent_state values to write, given the
// tracks that stay open after this commit. Caller holds e.mu.
func (e *Engine) commit(ctx context.Context, states func(open map[string]*track, gone map[*track]bool) map[string]string) error {
	now := time.Now()
	mode := Mode(e.mode.Load())
	// The pending records are split into those released now and those kept,
	// in buffers reused from one commit to the next (a replay commits
	// thousands of records at a time; growing fresh slices dominated it).
	// Callbacks get copies, so nothing outside keeps a pointer into them.
	all := true
	for i := range e.pending {
		if mode != Active && now.Before(e.pending[i].release) {
			all = false
			break
		}
	}
	var take, keep []pending
	if all {
		take = e.pending
	} else {
		take, keep = e.takeBuf[:0], e.keepBuf[:0]
		for _, p := range e.pending {
			if mode == Active || !now.Before(p.release) {
				take = append(take, p)
			} else {
				keep = append(keep, p)
			}
		}
	}
	var gone map[*track]bool
	for _, p := range take {
		if p.tr != nil {
			if gone == nil {
				gone = map[*track]bool{}
			}
			gone[p.tr] = true
		}
	}
	// Tracks of tasks that ended long ago (in log time) without a record
	// (non-VM tasks) no longer hold the restart point back. Long ago on the
	// lines the Deriver was given, not on the newest line read, and never
	// while the Deriver has the task open or a line of it may still wait in
	// a merge queue: while one host's log is silent the others' lines wait
	// there, the Deriver's clocks stand still, and a task without an end
	// marker stays open until the logs go quiet; its lines must be read
	// again after a restart, or its record is lost (found by the chaos
	// suite: the last operations of a play, agents killed every few seconds,
	// each login logged on the coordinator).
	horizon := e.cfg.Deriver.IdleTimeout
	if horizon <= 0 {
		horizon = 10 * time.Minute
	}
	var queuedFrom time.Time
	for _, q := range e.queues {
		if len(q) > 0 && (queuedFrom.IsZero() || q[0].t.Before(queuedFrom)) {
			queuedFrom = q[0].t
		}
	}
	for id, tr := range e.open {
		if !tr.held && e.given.Sub(tr.last) > horizon+time.Minute && !e.d.Open(id) &&
			(queuedFrom.IsZero() || queuedFrom.After(tr.last)) {
			if gone == nil {
				gone = map[*track]bool{}
			}
			gone[tr] = true
		}
	}
	var kv map[string]string
	if states != nil {
		if gone == nil {
			gone = map[*track]bool{}
		}
		kv = states(e.open, gone)
	}
	if len(take) == 0 && len(kv) == 0 {
		e.noteSettled()
		if !all {
			e.takeBuf, e.keepBuf = take[:0], keep[:0]
		}
		return nil
	}
	var stored, shadowed []record.Record
	var nstored, known, dropped int64
	if e.store == nil {
		// No store (benchmarks of the reading path, fuzzing): count and drop.
		dropped = int64(len(take))
	} else {
		update := e.store.Update
		if e.bulk != nil {
			update = e.bulk.Update
		}
		err := update(ctx, func(tx *lineage.Tx) error {
			stored, shadowed, nstored, known, dropped = stored[:0], shadowed[:0], 0, 0, 0
			recs := e.recBuf[:0]
			for i := range take {
				p := &take[i]
				if mode == Standby && !p.susp && !e.cfg.StandbyStores {
					dropped++
					continue
				}
				if err := p.rec.Validate(); err != nil {
					e.log.Error("log source: dropping an invalid record", "err", err)
					continue
				}
				recs = append(recs, p.rec)
			}
			defer func() { clear(recs); e.recBuf = recs[:0] }()
			debug := e.log.Enabled(ctx, slog.LevelDebug)
			// One bulk call: multi-row INSERTs (lineage/bulk.go), the same
			// rows and dedupe by id as PutRecord one by one.
			isNew, err := tx.PutRecords(recs)
			if err != nil {
				return err
			}
			for i, n := range isNew {
				r := &recs[i]
				if !n {
					known++
					if e.cfg.OnShadowed != nil {
						shadowed = append(shadowed, *r)
					}
					continue
				}
				nstored++
				if debug {
					e.log.Debug("log source: stored", "task", r.TaskID, "host", r.HostName, "end", r.End)
				}
				if e.cfg.OnRecord != nil {
					stored = append(stored, *r)
				}
			}
			for k, v := range kv {
				if err := tx.SetAgentState(k, v); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			// Nothing was committed: every pending record stays.
			if !all {
				e.takeBuf, e.keepBuf = take[:0], keep[:0]
			}
			return err
		}
	}
	clear(take)
	if all {
		e.pending, e.spare = e.spare[:0], take[:0]
	} else {
		old := e.pending
		clear(old)
		e.pending, e.keepBuf, e.takeBuf = keep, old[:0], take[:0]
	}
	for id, tr := range e.open {
		if gone[tr] {
			delete(e.open, id)
		}
	}
	if len(e.pending) == 0 && mode == Standby {
		e.susp = false
	}
	e.stats.Stored += nstored
	e.stats.Known += known
	e.stats.Dropped += dropped
	e.noteSettled()
	for i := range shadowed {
		e.cfg.OnShadowed(&shadowed[i])
	}
	for i := range stored {
		e.cfg.OnRecord(&stored[i])
	}
	return nil
}

// Settled is the log time up to which everything the logs read so far will
// ever yield is committed: no line before it waits in the merge queues, no
// task that began before it is still open in the Deriver (a task without an
// end marker stays open for its IdleTimeout), no record that began before it
// is still held. Zero until this process has read and committed anything.
// The XAPI tracer asks it before it infers a record for a change it cannot
// explain: an operation the logs reveal is recorded under its own id, never
// also as a resync record. Hosts whose log has been silent for more than the
// Deriver's IdleTimeout do not hold it back (as they do not hold tasks
// open); once every log is quiet for Quiet, log time moves with the wall
// clock (as in expire).
func (e *Engine) Settled() time.Time {
	if n := e.settled.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// noteSettled computes Settled after a commit. Caller holds e.mu.
func (e *Engine) noteSettled() {
	if e.newest.IsZero() {
		return
	}
	var wm time.Time
	switch {
	case time.Since(e.lastLine) >= e.cfg.Quiet && e.queued == 0:
		wm = e.newest.Add(time.Since(e.newAt))
	case e.merge:
		var newest time.Time
		for _, c := range e.clock {
			if c.After(newest) {
				newest = c
			}
		}
		idle := e.d.IdleTimeout()
		for _, c := range e.clock {
			if newest.Sub(c) <= idle && (wm.IsZero() || c.Before(wm)) {
				wm = c
			}
		}
	default:
		wm = e.newest
	}
	if t, ok := e.d.OldestOpen(); ok && t.Before(wm) {
		wm = t
	}
	for _, q := range e.queues {
		if len(q) > 0 && q[0].t.Before(wm) {
			wm = q[0].t
		}
	}
	for _, p := range e.pending {
		if p.rec.Start.Before(wm) {
			wm = p.rec.Start
		}
	}
	// It may go back: a lagging host's lines can still open older tasks.
	e.settled.Store(wm.UnixNano())
}

// msgTaskID finds "R:<12 hex>" in a message.
func msgTaskID(msg string) string {
	for i := 0; ; {
		j := strings.Index(msg[i:], "R:")
		if j < 0 {
			return ""
		}
		j += i + 2
		if j+12 <= len(msg) && isHex12(msg[j:j+12]) && (j+12 == len(msg) || !isHexByte(msg[j+12])) {
			return msg[j : j+12]
		}
		i = j
	}
}

func isHex12(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isHexByte(s[i]) {
			return false
		}
	}
	return true
}

func isHexByte(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' }

// Better reports whether candidate knows more about the operation than
// stored: it fills more of the fields a record of its activity can carry
// (the "upgrade" rule a store method such as Tx.UpsertRecordIfBetter would
// apply when one operation reaches the store from both sources).
func Better(stored, candidate *record.Record) bool {
	return knownFields(candidate) > knownFields(stored)
}

func knownFields(r *record.Record) int {
	n := 0
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"vm_uuid", r.VMUUID != ""}, {"vm_name", r.VMName != ""}, {"parent_vm_uuid", r.ParentVMUUID != ""},
		{"host_uuid", r.HostUUID != ""}, {"task_uuid", r.TaskUUID != ""}, {"end", !r.End.IsZero()},
		{"destination_host_uuid", r.DestinationHostUUID != ""}, {"snapshot_uuid", r.SnapshotUUID != ""},
	} {
		if f.set && !r.IsUnknown(f.name) {
			n++
		}
	}
	return n
}

// Pending returns copies of the records derived but not yet committed.
func (e *Engine) Pending() []record.Record {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]record.Record, len(e.pending))
	for i, p := range e.pending {
		out[i] = p.rec
	}
	return out
}
