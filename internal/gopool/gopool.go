// Package gopool runs short jobs on goroutines that are kept for the next
// job, most recently used first (github.com/panjf2000/ants).
//
// Why: a job on the alert path (an alert's enrichment, a detector call)
// runs deep code, SQLite's and protobuf's, on a stack that a new goroutine
// grows from a few KiB by copying it each time it doubles. With a
// goroutine per job, Enrich1MVMs spent 7% of the host's CPU in
// runtime.newstack and copystack (2026-12-03 profile; 0.45% with this
// pool). A kept goroutine has its grown stack ready (until the collector
// shrinks an idle one).
//
// ants over a hand-written pool: it hands a job to the goroutine that
// finished last (a stack, not a queue: the warmest stack), lets goroutines
// idle for idleExpiry go, and is widely used.
package gopool

import (
	"io"
	"log"
	"sync"
	"time"

	"github.com/panjf2000/ants/v2"
)

// idleExpiry is how long a goroutine waits for a job before it ends.
const idleExpiry = 10 * time.Second

// Pool runs jobs on kept goroutines, any number at once: it never makes a
// caller wait (callers bound their own concurrency). The zero Pool is
// ready; its goroutines (and ants's two housekeeping ones) start with the
// first job. Close ends them.
type Pool struct {
	once   sync.Once
	p      *ants.Pool
	mu     sync.Mutex
	closed bool
}

// Go runs fn on a kept goroutine, or on a new one. After Close it still
// runs fn, on a goroutine of its own.
func (p *Pool) Go(fn func()) {
	p.once.Do(p.start)
	if p.p == nil || p.p.Submit(fn) != nil {
		go fn()
	}
}

func (p *Pool) start() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	// ants recovers a job's panic; panicking again from its handler
	// crashes the process as a goroutine of its own would, and the report
	// still shows the job's frames (the handler runs before they unwind).
	ap, err := ants.NewPool(-1, ants.WithExpiryDuration(idleExpiry),
		ants.WithPanicHandler(func(v any) { panic(v) }),
		ants.WithLogger(log.New(io.Discard, "", 0)))
	if err != nil {
		return // only for options out of range; Go then starts goroutines itself
	}
	p.p = ap
}

// Close lets the idle goroutines go; jobs running finish on theirs. Jobs
// given after it run on goroutines of their own.
func (p *Pool) Close() {
	p.mu.Lock()
	p.closed = true
	ap := p.p
	p.mu.Unlock()
	if ap != nil {
		ap.Release()
	}
}
