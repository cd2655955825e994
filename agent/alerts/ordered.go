package alerts

import (
	"context"
	"sync"

	"github.com/vmlineage/vmlineage/internal/gopool"
)

// DefaultWorkers is how many alerts an Ordered enriches at once when not
// told. An alert spends most of its time waiting: on the detectors (other
// processes) and on the store's readers. Run one at a time, an intake
// could take only about 1/(that time) alerts a second, and a syslog sender
// over UDP would lose the rest when the socket's buffer fills.
const DefaultWorkers = 32

// orderedBacklog bounds the results that wait for an earlier one to be
// handed over: one slow alert (a detector at its call timeout) must not
// stop the others from being worked on.
const orderedBacklog = 1024

// Ordered enriches alerts with up to its workers at once and hands each
// result over in the order the alerts were submitted. Start (matching the
// alert to VMs, and entering it in the alert log so that it counts for the
// alerts after it, as when they run one by one) runs in Submit, in the
// caller's goroutine; Finish (lineage context, detectors, encoding) runs
// on a worker. Submit blocks while all the workers are busy, or while
// orderedBacklog results wait for an earlier one: the reader slows down
// rather than memory growing without bound.
type Ordered struct {
	e     *Enricher
	sem   chan struct{}
	queue chan *orderedItem
	done  chan struct{}
	gos   sync.WaitGroup // Go's alerts under way
	// pool runs Finish on kept goroutines: a new goroutine per alert grew
	// its stack for SQLite's code on every alert (see gopool).
	pool gopool.Pool
	// mu guards closed; Submit holds it shared while it enqueues, so that
	// Close never closes the queue under a sender.
	mu     sync.RWMutex
	closed bool
}

type orderedItem struct {
	js    []byte
	err   error
	then  func(js []byte, err error)
	ready chan struct{}
}

var closedReady = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// NewOrdered returns an Ordered over e with workers at once (DefaultWorkers
// when workers <= 0). Close it to wait for the results still due.
func NewOrdered(e *Enricher, workers int) *Ordered {
	if workers <= 0 {
		workers = DefaultWorkers
	}
	o := &Ordered{e: e, sem: make(chan struct{}, workers), queue: make(chan *orderedItem, orderedBacklog), done: make(chan struct{})}
	go o.emit()
	return o
}

// Submit enriches a; then is called with the result (as Enrich returns
// it) after the results of everything submitted before, on the goroutine
// that hands results over (it should not block for long). After Close,
// Submit enriches a at once and calls then before it returns.
func (o *Ordered) Submit(ctx context.Context, a *Alert, then func(js []byte, err error)) {
	o.mu.RLock()
	if o.closed {
		o.mu.RUnlock()
		then(o.e.Enrich(ctx, a))
		return
	}
	it := &orderedItem{then: then, ready: make(chan struct{})}
	j := o.e.Start(ctx, a)
	o.queue <- it
	o.sem <- struct{}{}
	j.Admit() // in arrival order, as Start (see alertLog.begin)
	o.mu.RUnlock()
	o.pool.Go(func() {
		defer func() {
			<-o.sem
			close(it.ready)
		}()
		it.js, it.err = j.Finish(ctx)
	})
}

// Go is Submit for an intake whose results need no order (the syslog
// listeners, an HTTP request that puts its answers in place): Start runs
// here in arrival order as with Submit, but then is called on the worker
// as soon as a's result is ready, so one slow alert (a detector at its call
// timeout) holds up no other.
func (o *Ordered) Go(ctx context.Context, a *Alert, then func(js []byte, err error)) {
	o.mu.RLock()
	if o.closed {
		o.mu.RUnlock()
		then(o.e.Enrich(ctx, a))
		return
	}
	j := o.e.Start(ctx, a)
	o.sem <- struct{}{}
	j.Admit() // in arrival order, as Start (see alertLog.begin)
	o.gos.Add(1)
	o.mu.RUnlock()
	o.pool.Go(func() {
		defer o.gos.Done()
		js, err := j.Finish(ctx)
		<-o.sem
		then(js, err)
	})
}

// Busy is how many alerts are being enriched right now (at most the
// workers): the agent's in-flight gauge.
func (o *Ordered) Busy() int { return len(o.sem) }

// After calls fn in turn: once everything submitted before is handed over
// (for an input that is not an alert, whose error document takes its place).
func (o *Ordered) After(fn func()) {
	o.mu.RLock()
	if o.closed {
		o.mu.RUnlock()
		fn()
		return
	}
	o.queue <- &orderedItem{then: func([]byte, error) { fn() }, ready: closedReady}
	o.mu.RUnlock()
}

// Close waits until every result submitted so far is handed over.
func (o *Ordered) Close() {
	o.mu.Lock()
	if !o.closed {
		o.closed = true
		close(o.queue)
	}
	o.mu.Unlock()
	<-o.done
	o.gos.Wait()
	o.pool.Close()
}

func (o *Ordered) emit() {
	defer close(o.done)
	for it := range o.queue {
		<-it.ready
		it.then(it.js, it.err)
	}
}
