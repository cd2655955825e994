package xapisim

import (
	"context"
	"errors"

	"github.com/vmlineage/vmlineage/agent/record"
)

// Play runs the steps of sc on the server's virtual clock at the given speed
// (virtual seconds per real second; 0 = as fast as possible while every
// client with an outstanding event.from still observes each write batch).
// If sc is not the scenario the server was built with, the database is
// replaced by sc's initial pool first. The virtual clock restarts at
// sc.Start. Play returns when every step, and every task destroy the
// scenario's client does, has run, or when ctx ends. A scenario plays once.
func (s *Server) Play(ctx context.Context, sc *Scenario, speed float64) error {
	if speed < 0 {
		return errors.New("xapisim: negative speed")
	}
	s.mu.Lock()
	e := s.engine
	if sc != nil && sc != e.sc {
		s.mu.Unlock()
		ne := s.newEngine(sc)
		s.mu.Lock()
		s.engine = ne
		e = ne
		s.audit.reset() // the new pool's hosts start with empty logs
		// Every client must start over: old refs and tokens mean nothing now.
		for ref, ss := range s.sessions {
			close(ss.gone)
			delete(s.sessions, ref)
		}
	}
	if s.played {
		s.mu.Unlock()
		return errors.New("xapisim: scenario already played")
	}
	s.played = true
	s.mu.Unlock()
	s.sched.setSpeed(speed, e.sc.Start)
	e.db.mu.Lock()
	e.scheduleSteps()
	e.db.mu.Unlock()
	select {
	case <-e.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Done is closed when the current scenario has been fully played.
func (s *Server) Done() <-chan struct{} { return s.eng().done }

// Wait blocks until the scenario has been fully played.
func (s *Server) Wait() { <-s.Done() }

// Truth returns the records and tree of what the server has run so far
// (scenario steps and hand-driven calls alike).
func (s *Server) Truth() ([]record.Record, []TreeVM) {
	e := s.eng()
	e.db.mu.Lock()
	defer e.db.mu.Unlock()
	return e.records(), e.tree()
}

// PoolUUID is the uuid of the simulated pool.
func (s *Server) PoolUUID() string { return s.eng().poolUUID }

// MasterAddress is the address of the master host.
func (s *Server) MasterAddress() string {
	e := s.eng()
	e.db.mu.Lock()
	defer e.db.mu.Unlock()
	return e.db.str("host", e.masterRef, "address")
}
