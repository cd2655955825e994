package xapisim

import (
	"context"
	"errors"
	"sync"
	"time"
)

// PlayPaced plays sc at its client's pace. The virtual clock stands still
// between calls; each event.from call first moves it on by poll, running
// every write due by then, and is then answered. The client thus sees the
// pool exactly as a client polling xapi every poll of virtual time would
// (the answers Capture records), however fast or slow the client and this
// machine are: what a benchmark measures then depends on the agent alone,
// not on how much CPU the simulator got or how far it fell behind. When
// nothing changed by then the call is answered empty at once (a client
// holding uncommitted batches asks with a short timeout and flushes on
// that); the next call moves on to the next write plus xapi's batching
// delay. The next answer is worked out while the client digests the last
// one, so the two work side by side as a client and xapi do. Once every
// step has run, event.from waits as usual. One client at a time: two would
// each move the clock.
func (s *Server) PlayPaced(ctx context.Context, sc *Scenario, poll time.Duration) error {
	if poll <= 0 {
		return errors.New("xapisim: paced play needs a positive poll interval")
	}
	s.mu.Lock()
	e := s.engine
	if sc != nil && sc != e.sc {
		s.mu.Unlock()
		return errors.New("xapisim: paced play plays the scenario the server was built with")
	}
	if s.played {
		s.mu.Unlock()
		return errors.New("xapisim: scenario already played")
	}
	s.played = true
	s.mu.Unlock()
	s.sched.mu.Lock()
	s.sched.pace = &pacer{poll: poll, next: e.sc.Start.Add(poll)}
	s.sched.mu.Unlock()
	s.sched.setSpeed(0, e.sc.Start)
	e.db.mu.Lock()
	e.scheduleSteps()
	e.db.mu.Unlock()
	e.db.notify() // a client already waiting in event.from moves the play on
	select {
	case <-e.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// pacer is the state of a paced play.
type pacer struct {
	mu    sync.Mutex
	poll  time.Duration
	next  time.Time // virtual time of the next answer
	quiet bool      // the last answer was empty
	ready *prefetch // the next answer, worked out ahead
}

// prefetch is an answer worked out while the client digests the last one,
// so that client and simulator work side by side, as a client and xapi do.
type prefetch struct {
	key  string // subscription
	tok  token  // the token it answers
	done chan struct{}
	out  Struct
	ok   bool
	next token
}

// answer returns the answer to a paced call at tok, ok false when the call
// is to wait as usual (every step has run and nothing changed).
func (p *pacer) answer(s *Server, e *engine, sub *subscription, key string, tok token) (Struct, bool) {
	p.mu.Lock()
	r := p.ready
	p.ready = nil
	p.mu.Unlock()
	if r != nil {
		<-r.done
	}
	var out Struct
	var ok bool
	var next token
	if r != nil && r.key == key && r.tok == tok {
		out, ok, next = r.out, r.ok, r.next
	} else {
		out, ok, next = p.work(s, e, sub, tok)
	}
	if ok {
		nr := &prefetch{key: key, tok: next, done: make(chan struct{})}
		p.mu.Lock()
		p.ready = nr
		p.mu.Unlock()
		go func() {
			nr.out, nr.ok, nr.next = p.work(s, e, sub, next)
			close(nr.done)
		}()
	}
	return out, ok
}

// work moves the play on for a call at tok and builds its answer.
func (p *pacer) work(s *Server, e *engine, sub *subscription, tok token) (Struct, bool, token) {
	if answer, _ := p.advance(e, sub, tok); !answer {
		return nil, false, tok
	}
	e.db.mu.Lock()
	defer e.db.mu.Unlock()
	events, nt := e.db.collect(sub, tok)
	return batchStruct(events, e.db.counts(map[string]int{"session": s.sessionCount()}), nt), true, nt
}

func (s *scheduler) pacer() *pacer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pace
}

// advance moves a paced play on for one event.from call of a client at
// tok, as Capture does between two answers. It reports whether the call
// is to be answered now, and whether with nothing (emptyNow); otherwise
// (every step has run and nothing changed) the call waits as usual.
// Only one runs at a time (p.mu).
func (p *pacer) advance(e *engine, sub *subscription, tok token) (answer, emptyNow bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	sched := e.sched
	for {
		for {
			sched.mu.Lock()
			due := len(sched.items) > 0 && !sched.items[0].vt.After(p.next)
			sched.mu.Unlock()
			if !due {
				break
			}
			sched.runOne()
		}
		sched.mu.Lock()
		more := len(sched.items) > 0
		var due time.Time
		if more {
			due = sched.items[0].vt
		}
		sched.mu.Unlock()
		e.db.mu.Lock()
		changed := e.db.hasChanges(sub, tok)
		e.db.mu.Unlock()
		answer = changed || (!p.quiet && more)
		if answer {
			p.quiet = !changed
		}
		p.next = p.next.Add(p.poll)
		if p.quiet && more && due.After(p.next) {
			p.next = due.Add(captureBatchDelay)
		}
		if answer || !more {
			return answer, answer && !changed
		}
	}
}

func (s *Server) sessionCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}
