package xensource

import (
	"sort"
	"strings"
	"time"
)

// Entry is one logical log entry: a line, with the backtrace lines that
// belong to it when it opens a backtrace block. Host is the host whose log
// the line came from (the file's origin, not the unreliable syslog host
// field) and Time the line's full time (see YearInferer).
type Entry struct {
	Host string
	Time time.Time
	Line Line
	// Backtrace holds the messages (still escaped) of the "backtrace"-module
	// lines that followed the head line on the same host, program and
	// thread: "Raised <exn>", "1/N xapi Raised at file …", …, without the
	// empty line that closes the block.
	Backtrace []string
}

// Grouper attaches multi-line backtraces to the entry they belong to.
// xapi writes a failure as one line per frame, each with the full header
// and module "backtrace" (debug.ml with_thread_associated and
// log_backtrace_exn): "<dbg> failed with exception <exn>", "Raised <exn>",
// "i/N <proc> Raised at|Called from …", then an empty message. Lines of
// other threads interleave freely, so blocks are keyed by (host, program,
// thread id). A block ends at its empty line, at a non-backtrace line of the
// same thread, at a new "failed with exception" head, after MaxLines lines or
// when its thread stays silent for MaxWait of log time.
type Grouper struct {
	MaxLines int           // default 256
	MaxWait  time.Duration // default 10s

	pending map[groupKey]*group
	hosts   map[string]string // interned host names
	scratch Entry
}

type groupKey struct {
	host, program string
	tid           int
}

type group struct {
	e    Entry
	last time.Time
}

// Feed takes one parsed line of host at time t. It calls emit for every
// entry that is complete, in order; an Entry passed to emit (and its Line)
// is valid only during the call unless the callee copies it.
func (g *Grouper) Feed(host string, t time.Time, l *Line, emit func(*Entry)) {
	if len(g.pending) > 0 {
		g.expire(t, emit)
	}
	if l.Kind == KindToolstack && l.Module == "backtrace" {
		key := groupKey{host, l.Program, l.ThreadID}
		p := g.pending[key]
		empty := strings.TrimSpace(l.Msg) == ""
		if p != nil && !empty && strings.Contains(l.Msg, failedWithException) {
			g.close(key, p, emit)
			p = nil
		}
		if p != nil {
			if empty {
				g.close(key, p, emit)
				return
			}
			p.e.Backtrace = append(p.e.Backtrace, strings.Clone(l.Msg))
			p.last = t
			if max := g.maxLines(); len(p.e.Backtrace) >= max {
				g.close(key, p, emit)
			}
			return
		}
		if !empty {
			if g.pending == nil {
				g.pending = make(map[groupKey]*group)
			}
			// Key and entry own their strings: the caller's buffer is reused.
			c, h := l.Clone(), g.intern(host)
			g.pending[groupKey{h, c.Program, c.ThreadID}] = &group{e: Entry{Host: h, Time: t, Line: c}, last: t}
			return
		}
	} else if len(g.pending) > 0 && l.Kind == KindToolstack {
		if p := g.pending[groupKey{host, l.Program, l.ThreadID}]; p != nil {
			g.close(groupKey{host, l.Program, l.ThreadID}, p, emit)
		}
	}
	// Pass-through: no copy when the caller parsed into Scratch().
	if l != &g.scratch.Line {
		g.scratch.Line = *l
	}
	g.scratch.Host, g.scratch.Time, g.scratch.Backtrace = host, t, nil
	emit(&g.scratch)
}

// Scratch returns the Line the Grouper emits pass-through entries from;
// parsing into it saves a copy of every line.
func (g *Grouper) Scratch() *Line { return &g.scratch.Line }

func (g *Grouper) maxLines() int {
	if g.MaxLines > 0 {
		return g.MaxLines
	}
	return 256
}

func (g *Grouper) close(k groupKey, p *group, emit func(*Entry)) {
	delete(g.pending, k)
	emit(&p.e)
}

func (g *Grouper) intern(host string) string {
	if h, ok := g.hosts[host]; ok {
		return h
	}
	if g.hosts == nil {
		g.hosts = make(map[string]string)
	}
	h := strings.Clone(host)
	g.hosts[h] = h
	return h
}

func (g *Grouper) expire(now time.Time, emit func(*Entry)) {
	wait := g.MaxWait
	if wait <= 0 {
		wait = 10 * time.Second
	}
	g.closeWhere(emit, func(p *group) bool { return now.Sub(p.last) > wait })
}

// Flush emits every open block (end of input).
func (g *Grouper) Flush(emit func(*Entry)) {
	g.closeWhere(emit, func(*group) bool { return true })
}

// closeWhere closes the matching blocks in time order, so output does not
// depend on map iteration order.
func (g *Grouper) closeWhere(emit func(*Entry), match func(*group) bool) {
	var keys []groupKey
	for k, p := range g.pending {
		if match(p) {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := g.pending[keys[i]], g.pending[keys[j]]
		if !a.e.Time.Equal(b.e.Time) {
			return a.e.Time.Before(b.e.Time)
		}
		return keys[i].tid < keys[j].tid
	})
	for _, k := range keys {
		g.close(k, g.pending[k], emit)
	}
}

const failedWithException = " failed with exception "
