package logsource

import (
	"context"
	"errors"
	"log/slog"
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
	// Mode to start in (Active for replay).
	Mode Mode
	Log  *slog.Logger
	// OnRecord is called for each record stored (after the commit).
	OnRecord func(*record.Record)
}

// Engine turns lines of many hosts into records and commits them, with the
// file offsets that produced them, in one store transaction. It is shared by
// the tailer, the syslog listener and replay. Safe for concurrent use.
type Engine struct {
	cfg   EngineConfig
	store *lineage.Store
	log   *slog.Logger
	mode  atomic.Int32

	mu      sync.Mutex
	d       *xensource.Deriver
	g       xensource.Grouper
	years   map[string]*xensource.YearInferer
	line    xensource.Line
	open    map[string]*track // R: id → where its lines are
	pending []pending
	newest  time.Time // newest log time fed
	newAt   time.Time // wall time it was fed
	stats   Stats
	cur     *segment // segment of the line being fed (nil: syslog, replay)
	curOff  int64
	replay  bool
	susp    bool // XAPI was suspect or down since the oldest pending record
}

// track is where the lines of one task lie, so that a restart re-reads
// from before the first line of every task not yet committed.
type track struct {
	first map[*segment]int64
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
	if cfg.Loc == nil {
		cfg.Loc = time.UTC
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	e := &Engine{cfg: cfg, store: store, log: cfg.Log, d: xensource.NewDeriver(cfg.Deriver),
		years: map[string]*xensource.YearInferer{}, open: map[string]*track{}}
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
	l := &e.line
	if err := xensource.ParseBytes(b, l); err != nil {
		var pe *xensource.ParseError
		if !errors.As(err, &pe) || pe.Kind != xensource.ErrKindHeader {
			if !e.replay {
				e.stats.Bad++
			}
			return
		}
	}
	if host == "" {
		host = l.SyslogHost
	}
	y := e.years[key]
	if y == nil {
		y = xensource.NewYearInferer(time.Now(), e.cfg.Loc)
		e.years[key] = y
	}
	t := y.Infer(l.Stamp)
	e.feedParsed(host, t, l)
}

// feedParsed takes a parsed line. Caller holds e.mu.
func (e *Engine) feedParsed(host string, t time.Time, l *xensource.Line) {
	if t.After(e.newest) {
		e.newest, e.newAt = t, time.Now()
	}
	if e.cur != nil && l.TaskRefKind == 'R' && l.TaskShortID != "" {
		tr := e.open[l.TaskShortID]
		if tr == nil {
			tr = &track{first: map[*segment]int64{}}
			e.open[string([]byte(l.TaskShortID))] = tr
		}
		if _, ok := tr.first[e.cur]; !ok {
			tr.first[e.cur] = e.curOff
		}
		tr.last = t
	}
	e.g.Feed(host, t, l, e.emit)
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
		e.g.Flush(e.emit)
		for _, r := range e.d.Flush() {
			e.add(r)
		}
		return
	}
	if e.newest.IsZero() {
		return
	}
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
	var take []pending
	var keep []pending
	for _, p := range e.pending {
		if mode == Active || !now.Before(p.release) {
			take = append(take, p)
		} else {
			keep = append(keep, p)
		}
	}
	gone := map[*track]bool{}
	for _, p := range take {
		if p.tr != nil {
			gone[p.tr] = true
		}
	}
	// Tracks of tasks that ended long ago (in log time) without a record
	// (non-VM tasks) no longer hold the restart point back.
	horizon := e.cfg.Deriver.IdleTimeout
	if horizon <= 0 {
		horizon = 10 * time.Minute
	}
	for _, tr := range e.open {
		if !tr.held && e.newest.Sub(tr.last) > horizon+time.Minute {
			gone[tr] = true
		}
	}
	var kv map[string]string
	if states != nil {
		kv = states(e.open, gone)
	}
	if len(take) == 0 && len(kv) == 0 {
		return nil
	}
	var stored []*record.Record
	var known, dropped int64
	err := e.store.Update(ctx, func(tx *lineage.Tx) error {
		stored, known, dropped = stored[:0], 0, 0
		for i := range take {
			p := &take[i]
			if mode == Standby && !p.susp {
				dropped++
				continue
			}
			if err := p.rec.Validate(); err != nil {
				e.log.Error("log source: dropping an invalid record", "err", err)
				continue
			}
			isNew, err := tx.PutRecord(&p.rec)
			if err != nil {
				return err
			}
			if isNew {
				stored = append(stored, &p.rec)
			} else {
				known++
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
		return err
	}
	e.pending = keep
	for id, tr := range e.open {
		if gone[tr] {
			delete(e.open, id)
		}
	}
	if len(keep) == 0 && mode == Standby {
		e.susp = false
	}
	e.stats.Stored += int64(len(stored))
	e.stats.Known += known
	e.stats.Dropped += dropped
	if e.cfg.OnRecord != nil {
		for _, r := range stored {
			e.cfg.OnRecord(r)
		}
	}
	return nil
}
