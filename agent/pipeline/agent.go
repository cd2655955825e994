// Package pipeline wires the agent together: the XAPI watcher feeds the
// tracer, the tracer writes the lineage store, and committed records flow
// on to the outputs.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/vmlineage/vmlineage/agent/audit"
	"github.com/vmlineage/vmlineage/agent/config"
	"github.com/vmlineage/vmlineage/agent/lifecycle"
	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/logsource"
	"github.com/vmlineage/vmlineage/agent/metrics"
	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/agent/xapi"
)

// Options are what a caller adds to the configuration.
type Options struct {
	Logger *slog.Logger
	// Version is the agent's version, carried in ECS agent.version.
	Version string
	// Metrics receives the agent's counters (nil: made when metrics.listen is set).
	Metrics *metrics.Metrics
	// OnRecord is called for each record the tracer commits.
	OnRecord func(*record.Record)
	// FatalAuth ends Run on wrong credentials instead of retrying (demo).
	FatalAuth bool
	// BackoffBase overrides the first reconnection delay (tests).
	BackoffBase time.Duration
	// LogSource overrides the log source's timings (tests).
	LogSource LogSourceTuning
}

// LogSourceTuning overrides timings of the log source (tests; zero: the
// defaults).
type LogSourceTuning struct {
	Clock func() time.Time // anchors year-less stamps (the simulator's clock)
	Hold  time.Duration    // logsource.EngineConfig.Hold
	Quiet time.Duration    // logsource.EngineConfig.Quiet
	Idle  time.Duration    // xensource.Config.IdleTimeout
	Every time.Duration    // logsource.Failover.Every
}

// Agent is one running vmlineage agent for one pool.
type Agent struct {
	cfg        config.Config
	opts       Options
	log        *slog.Logger
	Store      *lineage.Store
	Tracer     *lifecycle.Tracer
	Client     *xapi.Client
	Watcher    *xapi.Watcher
	outs       *outputSet
	detect     *detection
	chain      *chainKeeper
	deferSeal  bool
	logEngine  atomic.Pointer[logsource.Engine]
	attributor *audit.Attributor
	metrics    *metrics.Metrics
	started    time.Time
	lastBatch  atomic.Pointer[time.Time]
}

// New opens the store and prepares the XAPI client; Run starts tracing.
func New(cfg config.Config, opts Options) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.XAPI.URL == "" {
		return nil, errors.New("xapi.url is not set (--xapi-url)")
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	pw, err := cfg.XAPI.Password()
	if err != nil {
		return nil, err
	}
	client, err := xapi.New(xapi.Config{URL: cfg.XAPI.URL, User: cfg.XAPI.User, Password: pw, Originator: cfg.XAPI.Originator,
		CAFile: cfg.XAPI.CAFile, Fingerprint: cfg.XAPI.Fingerprint, AllowHTTP: cfg.XAPI.AllowHTTP, Transport: cfg.XAPI.Transport,
		CallTimeout: cfg.XAPI.CallTimeout.D(), MaxResponseBytes: cfg.XAPI.MaxResponseBytes, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("xapi: %w", err)
	}
	store, err := lineage.Open(cfg.StorePath())
	if err != nil {
		return nil, err
	}
	store.OnRefusedParent = func(child, parent string) {
		log.Warn("lineage: parent link not made: it would make the VM its own ancestor (the record keeps the claim)", "vm", child, "claimed_parent", parent)
	}
	tr := lifecycle.New(store, log)
	a := &Agent{cfg: cfg, opts: opts, log: log, Store: store, Tracer: tr, Client: client, metrics: opts.Metrics, started: time.Now()}
	// A record another source may still complete waits unsealed (and
	// unshipped) up to chain.settle; otherwise it is sealed as stored.
	a.deferSeal = (cfg.LogSource.Enabled() || cfg.Audit.Enabled()) && cfg.Chain.Settle > 0
	tr.OtherSources = cfg.LogSource.Enabled()
	if tr.OtherSources {
		// A change the tracer cannot explain waits until the log source has
		// committed everything up to it (its record may come an idle timeout
		// and a hold late), in each process at most OtherWait.
		tr.OtherSettled = func() time.Time {
			if e := a.logEngine.Load(); e != nil {
				return e.Settled()
			}
			return time.Time{}
		}
		idle, hold := a.logTimings()
		tr.OtherWait = max(5*time.Minute, 2*(idle+hold))
	}
	store.DeferSeal(a.deferSeal)
	a.chain = &chainKeeper{st: store, log: log, settle: cfg.Chain.Settle.D(), every: cfg.Chain.CheckpointEvery.D(),
		sealed: func(int) { a.outs.notify() }, otherSettled: tr.OtherSettled, otherWait: tr.OtherWait, started: time.Now()}
	if tr.OtherSources {
		// The logs cannot name a clone's new VM; the tracer matches it when
		// it sees the VM, which may be after chain.settle (an outage, a
		// restart).
		a.chain.mayName, a.chain.nameWait = tr.MayName, 2*time.Minute
	}
	if cfg.Audit.Enabled() {
		a.attributor = audit.NewAttributor(audit.AttributorConfig{})
		a.chain.complete = a.attributor.Complete
	}
	tr.OnRecord = func(r *record.Record) {
		a.outs.notify()
		a.detect.onRecord(r)
		a.metrics.Committed()
		if lag := tr.PoolTime().Sub(r.End); lag >= 0 {
			a.metrics.Lag(lag)
		}
		if opts.OnRecord != nil {
			opts.OnRecord(r)
		}
	}
	a.Watcher = xapi.NewWatcher(client, &handler{Tracer: tr, c: client, log: log, a: a}, xapi.WatcherConfig{
		EventTimeout: cfg.XAPI.EventTimeout.D().Seconds(), BackoffBase: opts.BackoffBase, BackoffCap: cfg.XAPI.BackoffMax.D(),
		FatalAuth: opts.FatalAuth, Logger: log})
	return a, nil
}

// Outputs are the running outputs (after Run started them).
func (a *Agent) Outputs() []*Output {
	if a.outs == nil {
		return nil
	}
	return a.outs.list
}

// Run traces until ctx ends or a fatal error occurs. The outputs run beside
// the tracer; when tracing stops they get a short while to ship the shutdown
// checkpoint and what is spooled.
func (a *Agent) Run(ctx context.Context) error {
	if err := a.serveSide(ctx); err != nil {
		return err
	}
	octx, ocancel := context.WithCancel(context.WithoutCancel(ctx))
	defer ocancel()
	if len(a.cfg.Outputs) > 0 {
		outs, err := startOutputs(octx, a.cfg, a.Store, a.log, a.opts.Version)
		if err != nil {
			return err
		}
		a.outs = outs
		defer outs.close()
	}
	det, err := a.startDetection(ctx)
	if err != nil {
		return err
	}
	a.detect = det
	defer det.close()
	tctx, tcancel := context.WithCancel(ctx)
	defer tcancel()
	keeperDone := make(chan struct{})
	go func() { defer close(keeperDone); a.chain.run(tctx, a.deferSeal) }()
	lsDone, err := a.startLogSource(tctx)
	if err != nil {
		tcancel()
		<-keeperDone
		return err
	}
	auDone, err := a.startAudit(tctx)
	if err != nil {
		tcancel()
		<-lsDone
		<-keeperDone
		return err
	}
	err = a.Watcher.Run(tctx)
	tcancel()
	<-lsDone
	<-auDone
	<-keeperDone
	a.drainOutputs(5 * time.Second)
	ocancel()
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return nil
	}
	return err
}

// drainOutputs waits, up to d, until every output has spooled the whole
// chain and its shipper has delivered what is spooled.
func (a *Agent) drainOutputs(d time.Duration) {
	if a.outs == nil {
		return
	}
	ctx := context.Background()
	head, _, err := a.Store.ChainHead(ctx)
	if err != nil {
		return
	}
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		done := true
		for _, o := range a.outs.list {
			if o.fed.Load() < head || o.spool.Stats().Records > 0 {
				done = false
			}
		}
		if done {
			return
		}
		a.outs.notify()
		time.Sleep(50 * time.Millisecond)
	}
	a.log.Info("outputs not drained at shutdown; the spools keep the rest for the next start")
}

// Close releases the store and logs out.
func (a *Agent) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a.Client.Logout(ctx)
	return a.Store.Close()
}

// handler adds the pool's clock to each resync: XAPI events carry no time,
// and what a resync finds is dated by the master's clock, not ours.
type handler struct {
	*lifecycle.Tracer
	c         *xapi.Client
	log       *slog.Logger
	a         *Agent
	clockRead bool // the pool's clock was read in this process
}

func (h *handler) Events(ctx context.Context, b *xapi.EventBatch) error {
	h.a.metrics.Event(len(b.Events))
	now := time.Now()
	h.a.lastBatch.Store(&now)
	if !h.clockRead {
		// The first batch of a process is the catch-up of what happened
		// while the agent was away: date it by the pool's clock, not by
		// the last time the dead process saw it.
		h.clockRead = true
		h.readPoolClock(ctx)
	}
	return h.Tracer.Events(ctx, b)
}

// readPoolClock gives the tracer the pool master's clock.
func (h *handler) readPoolClock(ctx context.Context) {
	var pools []string
	var master string
	var at time.Time
	err := h.c.Call(ctx, "pool.get_all", &pools)
	if err == nil && len(pools) > 0 {
		if err = h.c.Call(ctx, "pool.get_master", &master, pools[0]); err == nil {
			err = h.c.Call(ctx, "host.get_servertime", &at, master)
		}
	}
	if err != nil || at.IsZero() {
		h.log.Debug("reading the pool's clock failed; the catch-up is dated by the newest pool time seen", "err", err)
		return
	}
	h.SetServerTime(at)
}

func (h *handler) Resync(ctx context.Context, snap *xapi.PoolSnapshot, token, reason string) error {
	if reason != xapi.ReasonStart {
		h.a.metrics.Reconnect()
	}
	if pool := snap.Class("pool")[snap.PoolRef]; pool != nil && !xapi.IsNull(pool.Master) {
		var now time.Time
		if err := h.c.Call(ctx, "host.get_servertime", &now, pool.Master); err == nil && !now.IsZero() {
			h.SetServerTime(now)
		} else if err != nil {
			h.log.Debug("host.get_servertime failed; dating resync by the newest pool time seen", "err", err)
		}
	}
	return h.Tracer.Resync(ctx, snap, token, reason)
}
