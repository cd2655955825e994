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
// delay. Once every step has run, event.from waits as usual. One client
// at a time: two would each move the clock.
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
