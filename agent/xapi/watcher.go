package xapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Resync reasons passed to Handler.Resync and counted in Stats.
const (
	ReasonStart      = "start"
	ReasonRelogin    = "relogin"
	ReasonEventsLost = "events_lost"
	ReasonReconnect  = "reconnect"
	ReasonRefcount   = "refcount"
)

// ErrResyncNeeded is returned by Handler.Events when the handler sees it is
// out of step with the pool (e.g. valid_ref_counts disagree with its cache).
var ErrResyncNeeded = errors.New("xapi: handler out of step, resync needed")

// Handler receives what the Watcher learns.
type Handler interface {
	// Token returns the persisted event token, "" if none.
	Token(ctx context.Context) (string, error)
	// Events applies a batch and persists batch.Token atomically with its
	// effects. An error other than ErrResyncNeeded makes the watcher ask for
	// the same batch again later (event.from is idempotent per token).
	Events(ctx context.Context, batch *EventBatch) error
	// Resync replaces the handler's state with snap, the full state of the
	// subscribed classes, valid from token on.
	Resync(ctx context.Context, snap *PoolSnapshot, token string, reason string) error
}

// Flusher is an optional extension of Handler for a handler that commits
// several batches together: while Pending, the watcher asks event.from with a
// short timeout and calls Flush when it comes back empty (and on a quiet
// pool at every timeout), so nothing waits long to be committed.
type Flusher interface {
	Pending() bool
	Flush(ctx context.Context) error
}

// Reconciler is an optional extension of Handler for a handler that keeps
// the set of live objects of some classes. event.from's deletion queue keeps
// only the newest 256 to 512 deletions per class (xen-api db_cache_types.ml
// Table.remove), so a client that falls behind a busy pool misses dels
// without any error; valid_ref_counts shows it (Xen Orchestra compares its
// task count the same way). After each applied batch the watcher asks
// Stale which classes the handler holds more objects of than the pool
// counts, re-reads only their refs (<class>.get_all, cheap next to a
// resync) and hands them to Reconcile, which treats every object it holds
// that is missing from refs as deleted.
type Reconciler interface {
	Stale() []string
	Reconcile(ctx context.Context, class string, refs []string) error
}

// PoolSnapshot is the full state fetched at a resync.
type PoolSnapshot struct {
	PoolRef string
	// Records maps the lower-case class name (as in Event.Class) to ref →
	// record.
	Records map[string]map[string]*Snapshot
}

// Class returns the records of a class, any case.
func (p *PoolSnapshot) Class(name string) map[string]*Snapshot {
	return p.Records[strings.ToLower(name)]
}

// WatcherConfig tunes a Watcher; zero values take the defaults.
type WatcherConfig struct {
	Classes        []string      // default xapi.Classes
	EventTimeout   float64       // event.from timeout in seconds; default 30
	CatchUpTimeout float64       // the catch-up event.from at login; default 0.5
	BackoffBase    time.Duration // default 1 s
	BackoffCap     time.Duration // default 60 s
	FatalAuth      bool          // wrong credentials end Run (one-shot commands)
	Logger         *slog.Logger
}

// Stats are the watcher's counters (for metrics).
type Stats struct {
	Events      uint64
	Batches     uint64
	Resyncs     map[string]uint64
	Relogins    uint64
	Reconnects  uint64
	Reconciles  uint64 // <class>.get_all calls made to find dels event.from dropped
	LastError   string
	LastErrorAt time.Time
}

// Watcher keeps event.from outstanding against one pool and feeds a Handler.
type Watcher struct {
	c   *Client
	h   Handler
	cfg WatcherConfig
	log *slog.Logger
	bo  Backoff

	events, batches, relogins, reconnects, reconciles atomic.Uint64

	mu        sync.Mutex
	resyncs   map[string]uint64
	lastErr   string
	lastErrAt time.Time
}

// NewWatcher prepares a watcher; Run starts it.
func NewWatcher(c *Client, h Handler, cfg WatcherConfig) *Watcher {
	if len(cfg.Classes) == 0 {
		cfg.Classes = Classes
	}
	if cfg.EventTimeout <= 0 {
		cfg.EventTimeout = 30
	}
	if cfg.CatchUpTimeout <= 0 {
		cfg.CatchUpTimeout = 0.5
	}
	if cfg.Logger == nil {
		cfg.Logger = c.log
	}
	return &Watcher{c: c, h: h, cfg: cfg, log: cfg.Logger,
		bo: Backoff{Base: cfg.BackoffBase, Cap: cfg.BackoffCap}, resyncs: map[string]uint64{}}
}

// Stats returns a copy of the counters.
func (w *Watcher) Stats() Stats {
	w.mu.Lock()
	defer w.mu.Unlock()
	r := make(map[string]uint64, len(w.resyncs))
	for k, v := range w.resyncs {
		r[k] = v
	}
	return Stats{Events: w.events.Load(), Batches: w.batches.Load(), Resyncs: r,
		Relogins: w.relogins.Load(), Reconnects: w.reconnects.Load(), Reconciles: w.reconciles.Load(), LastError: w.lastErr, LastErrorAt: w.lastErrAt}
}

func (w *Watcher) noteErr(err error) {
	w.mu.Lock()
	w.lastErr, w.lastErrAt = err.Error(), time.Now()
	w.mu.Unlock()
}

// Run loops until ctx ends (returning its error) or, with FatalAuth, until
// a login is refused for wrong credentials.
func (w *Watcher) Run(ctx context.Context) error {
	defer func() {
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = w.c.Logout(lctx)
	}()
	reason, needLogin := ReasonStart, true
	for ctx.Err() == nil {
		if needLogin {
			// The old session may still be valid (a dropped connection,
			// a time-out, a demoted master): log it out, briefly, or
			// each reconnect leaves one more open on the pool, which
			// keeps at most 500 per originator and evicts the oldest.
			lctx, cancel := context.WithTimeout(ctx, time.Second)
			_ = w.c.Logout(lctx) // forgets the session whatever the answer
			cancel()
			if err := w.c.Login(ctx); err != nil {
				if ctx.Err() != nil {
					break
				}
				w.noteErr(err)
				if w.cfg.FatalAuth && IsCode(err, ErrAuthFailed) {
					return err
				}
				w.pause(ctx, err, true)
				continue
			}
			needLogin = false
			w.catchUp(ctx)
		}
		token, err := w.resync(ctx, reason)
		if err == nil {
			err = w.follow(ctx, token)
		}
		if ctx.Err() != nil {
			break
		}
		w.noteErr(err)
		var immediate bool
		switch {
		case IsCode(err, ErrSessionInvalid):
			reason, needLogin, immediate = ReasonRelogin, true, true
			w.relogins.Add(1)
		case IsCode(err, ErrEventsLost):
			reason, immediate = ReasonEventsLost, true
		case errors.Is(err, ErrResyncNeeded):
			reason, immediate = ReasonRefcount, true
		case IsCode(err, ErrHostIsSlave):
			// The master was demoted: Login follows to the new one.
			reason, needLogin, immediate = ReasonReconnect, true, true
			w.reconnects.Add(1)
		case errors.Is(err, errHandler):
			// Keep the reason; ask the handler again after a pause.
		default:
			// Transport trouble, 5xx, timeouts, unexpected XenAPI errors:
			// a new session, maybe on a new master, then a resync.
			reason, needLogin = ReasonReconnect, true
			w.reconnects.Add(1)
		}
		w.pause(ctx, err, !immediate)
	}
	return ctx.Err()
}

var errHandler = errors.New("handler failed")

// pause sleeps the back-off. An "immediate" error (the normal answer to a
// known condition) skips the first wait, but repeats back off like others,
// so nothing can spin.
func (w *Watcher) pause(ctx context.Context, err error, always bool) {
	if !always && w.bo.Attempts() == 0 {
		w.bo.Next()
		w.log.Info("xapi watcher: resyncing", "err", err)
		return
	}
	d := w.bo.Next()
	w.log.Warn("xapi watcher: retrying after back-off", "err", err, "wait", d, "attempt", w.bo.Attempts())
	_ = Sleep(ctx, d)
}

// catchUp reports what changed while the agent was away (tasks that
// finished, VMs that went) before the resync replaces everything.
func (w *Watcher) catchUp(ctx context.Context) {
	old, err := w.h.Token(ctx)
	if err != nil || old == "" {
		return
	}
	b, err := w.c.EventFrom(ctx, w.cfg.Classes, old, w.cfg.CatchUpTimeout)
	if err != nil {
		if !IsCode(err, ErrTokenParse) {
			w.log.Warn("xapi watcher: catch-up event.from failed", "err", err)
		}
		return
	}
	w.count(b)
	if err := w.h.Events(ctx, b); err != nil && !errors.Is(err, ErrResyncNeeded) {
		w.log.Warn("xapi watcher: catch-up batch not applied", "err", err)
	}
}

func (w *Watcher) count(b *EventBatch) {
	w.batches.Add(1)
	w.events.Add(uint64(len(b.Events)))
}

// resync: inject first, then fetch, so no change between the fetch and the
// first event.from is lost (Xen Orchestra's order).
func (w *Watcher) resync(ctx context.Context, reason string) (string, error) {
	poolRef, err := w.c.PoolRef(ctx)
	if err != nil {
		return "", err
	}
	token, err := w.c.Inject(ctx, "pool", poolRef)
	if IsCode(err, ErrMethodUnknown) {
		token, err = "", nil // pre-6.1 host: start from the beginning
	}
	if err != nil {
		return "", err
	}
	snap := &PoolSnapshot{PoolRef: poolRef, Records: map[string]map[string]*Snapshot{}}
	for _, class := range w.cfg.Classes {
		m, err := w.c.GetAllRecords(ctx, class)
		if err != nil {
			return "", fmt.Errorf("resync: %w", err)
		}
		snap.Records[strings.ToLower(class)] = m
	}
	if err := w.h.Resync(ctx, snap, token, reason); err != nil {
		return "", fmt.Errorf("%w: resync: %w", errHandler, err)
	}
	w.mu.Lock()
	w.resyncs[reason]++
	w.mu.Unlock()
	w.log.Info("xapi watcher: resynced", "reason", reason, "token", token)
	return token, nil
}

// follow keeps one event.from outstanding until an error.
func (w *Watcher) follow(ctx context.Context, token string) error {
	fl, _ := w.h.(Flusher)
	for {
		timeout := w.cfg.EventTimeout
		if fl != nil && fl.Pending() {
			timeout = 0.05 // something waits to be committed: ask briefly, flush if the pool is quiet
		}
		b, err := w.c.EventFrom(ctx, w.cfg.Classes, token, timeout)
		if err != nil {
			if fl != nil && fl.Pending() {
				if ferr := fl.Flush(context.WithoutCancel(ctx)); ferr != nil {
					w.log.Warn("xapi watcher: flushing before reconnecting failed", "err", ferr)
				}
			}
			return err
		}
		w.count(b)
		if len(b.Events) == 0 && b.Token == token {
			w.bo.Reset() // the pool answers: earlier trouble is over
			if fl != nil {
				if err := fl.Flush(ctx); err != nil {
					w.noteErr(err)
					w.log.Warn("xapi watcher: handler flush failed", "err", err)
				}
			}
			continue // timeout with nothing new
		}
		if err := w.h.Events(ctx, b); err != nil {
			if errors.Is(err, ErrResyncNeeded) {
				return err
			}
			w.noteErr(err)
			d := w.bo.Next()
			w.log.Warn("xapi watcher: handler failed, re-asking the same batch", "err", err, "wait", d)
			if Sleep(ctx, d) != nil {
				return ctx.Err()
			}
			continue
		}
		token = b.Token
		w.bo.Reset()
		if err := w.reconcile(ctx); err != nil {
			return err
		}
	}
}

// reconcile re-reads the refs of the classes the handler finds stale (see
// Reconciler). A failed call ends follow like a failed event.from.
func (w *Watcher) reconcile(ctx context.Context) error {
	rc, ok := w.h.(Reconciler)
	if !ok {
		return nil
	}
	for _, class := range rc.Stale() {
		var refs []string
		if err := w.c.Call(ctx, class+".get_all", &refs); err != nil {
			return fmt.Errorf("reconcile %s: %w", class, err)
		}
		w.reconciles.Add(1)
		if err := rc.Reconcile(ctx, class, refs); err != nil {
			if errors.Is(err, ErrResyncNeeded) {
				return err
			}
			return fmt.Errorf("%w: reconcile %s: %w", errHandler, class, err)
		}
	}
	return nil
}
