package xapisim

import (
	"errors"
	"time"

	"github.com/vmlineage/vmlineage/agent/record"
)

// captureBatchDelay is xapi's event.from batching delay (Xapi_globs.event_from_delay).
const captureBatchDelay = 50 * time.Millisecond

// Capture plays sc headless, as GroundTruth does, and hands fn what a client
// that polls event.from on classes every poll of virtual time would be
// answered: XML-RPC <methodResponse> bodies, the first being the answer to
// the token "" (the whole pool, every object an add). What a client sees
// depends on how often it asks: an object created and deleted between two
// polls never shows (see events.go), so a replay at a chosen cadence shows
// exactly what a tracer keeping that cadence against xapi would see, with
// none of the simulator's or the network's cost. It returns the ground
// truth of the play.
func Capture(sc *Scenario, classes []string, poll time.Duration, fn func(body []byte) error) ([]record.Record, error) {
	if poll <= 0 {
		return nil, errors.New("xapisim: capture needs a positive poll interval")
	}
	if err := sc.Validate(); err != nil {
		return nil, err
	}
	sched := newScheduler(sc.Start, 0, true)
	e := newEngine(sc, sched)
	sub, bad := parseSubscription(e.db, classes)
	if sub == nil {
		return nil, errors.New("xapisim: capture: unknown class " + bad)
	}
	var tok token
	quiet := false // the last answer was empty
	emit := func() error {
		e.db.mu.Lock()
		changed := e.db.hasChanges(sub, tok)
		if !changed && quiet {
			e.db.mu.Unlock()
			return nil
		}
		evs, nt := e.db.collect(sub, tok)
		body := XMLSuccess(batchStruct(evs, e.db.counts(map[string]int{"session": 1}), nt))
		e.db.mu.Unlock()
		tok, quiet = nt, !changed
		return fn(body)
	}
	if err := emit(); err != nil {
		return nil, err
	}
	quiet = false
	e.scheduleSteps()
	// The client asks again poll after each answer. When nothing changed by
	// then it is answered empty once (the agent asks with a short timeout
	// while it holds uncommitted batches, and flushes on the empty answer),
	// then it blocks until the next write, answered a batching delay later.
	next := sc.Start.Add(poll)
	for {
		sched.mu.Lock()
		more := len(sched.items) > 0
		var due time.Time
		if more {
			due = sched.items[0].vt
		}
		sched.mu.Unlock()
		if more && !due.After(next) {
			sched.runOne()
			continue
		}
		if err := emit(); err != nil {
			return nil, err
		}
		if !more {
			break
		}
		next = next.Add(poll)
		if quiet && due.After(next) {
			next = due.Add(captureBatchDelay)
		}
	}
	if err := emit(); err != nil {
		return nil, err
	}
	e.db.mu.Lock()
	defer e.db.mu.Unlock()
	return e.records(), nil
}
