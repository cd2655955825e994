package plugins

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/internal/gopool"
)

// Config is the host side's view of the detectors.
type Config struct {
	// Dir holds the detector binaries; every regular executable file in it
	// is a detector named after the file. Symlinks are refused (Vault does
	// the same) so that the pinned file is the file run.
	Dir string
	// Pins maps a detector name to the hex SHA-256 of its binary. A binary
	// without a pin is refused; the digest is checked before every start.
	Pins map[string]string
	// Settings are handed to each detector's Configure, by name.
	Settings map[string]map[string]string
	// Only, when set, names the detectors to run (others are ignored).
	Only []string

	CallTimeout     time.Duration // bound of every Enrich/OnRecord call (default 2s)
	StartTimeout    time.Duration // handshake and Configure (default 20s)
	PingInterval    time.Duration // health check (default 5s)
	MinBackoff      time.Duration // first restart delay (default 250ms)
	MaxBackoff      time.Duration // (default 1m)
	CrashLoopLimit  int           // starts within CrashLoopWindow before the detector is disabled (default 5)
	CrashLoopWindow time.Duration // (default 5m)
	// HungLimit timeouts in a row make the host kill and restart a
	// detector (default 2): one slow call is tolerated, a hung process is
	// not. In a row per call kind: an answer to OnRecord does not clear
	// Enrich's timeouts, nor the reverse.
	HungLimit int
	// UnaryEnrich makes every Enrich call a unary gRPC call, as before
	// EnrichStream existed (for comparison; detectors built without
	// EnrichStream get unary calls anyway).
	UnaryEnrich bool

	// Observe, when set, is told of every call made or ruled out (the
	// agent's metrics). It runs on the calling goroutine: keep it cheap.
	Observe func(Observation)

	Logger *slog.Logger
}

// Observation is one detector call, or one call not made, for metrics.
type Observation struct {
	Detector string
	Call     string // CallEnrich or CallOnRecord
	Outcome  string // one of the Outcome constants
	// Duration is how long the call took (zero when it was not made).
	Duration time.Duration
}

// Made says the call was made (and Duration is how long it took).
func (o Observation) Made() bool { return o.Outcome != OutcomeSkipped && o.Outcome != OutcomeDown }

// Calls and outcomes of an Observation.
const (
	CallEnrich   = "enrich"
	CallOnRecord = "on_record"

	OutcomeOK      = "ok"
	OutcomeSkipped = "skipped" // the detector's declared Needs ruled the call out
	OutcomeDown    = "down"    // not running (starting, backing off, disabled, refused)
	OutcomeTimeout = "timeout" // no answer within CallTimeout
	OutcomeCrashed = "crashed" // the process died or the connection broke during the call
	OutcomeFailed  = "failed"  // an error answer, or garbage
	// OutcomeCancelled: the caller gave up first (the agent is stopping).
	OutcomeCancelled = "cancelled"
)

func (c *Config) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.CallTimeout, 2*time.Second)
	def(&c.StartTimeout, 20*time.Second)
	def(&c.PingInterval, 5*time.Second)
	def(&c.MinBackoff, 250*time.Millisecond)
	def(&c.MaxBackoff, time.Minute)
	def(&c.CrashLoopWindow, 5*time.Minute)
	if c.CrashLoopLimit <= 0 {
		c.CrashLoopLimit = 5
	}
	if c.HungLimit <= 0 {
		c.HungLimit = 2
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// Detector states reported by Status.
const (
	StateStarting = "starting"
	StateRunning  = "running"
	StateBackoff  = "backoff"
	StateDisabled = "disabled"
	StateRefused  = "refused"
)

// Status is one detector's state.
type Status struct {
	Name      string    `json:"name"`
	Path      string    `json:"path"`
	State     string    `json:"state"`
	Starts    int       `json:"starts"`
	LastError string    `json:"last_error,omitempty"`
	NextStart time.Time `json:"next_start,omitempty"`
	Info      Info      `json:"info"`
	// Transport is how Enrich calls reach the running process: "stream"
	// (EnrichStream) or "unary" (a detector built before EnrichStream, or
	// Config.UnaryEnrich); empty while it is not running.
	Transport string `json:"transport,omitempty"`
}

// Result is one detector's answer to one call.
type Result struct {
	Detector   string
	Enrichment *Enrichment // nil on error
	Findings   []Finding   // OnRecord
	Err        error
	// Skipped says why the detector was not asked (its declared Needs
	// rule the call out); "" when it was.
	Skipped string
}

// Stats counts calls, for figures such as gRPC round trips per alert.
type Stats struct {
	EnrichCalls, EnrichSkipped     int64
	EnrichFailed                   int64 // calls that ended in an error (down, hung, crashed, garbage)
	OnRecordCalls, OnRecordSkipped int64
	// LineageCalls are calls detectors made to the host's Lineage service.
	LineageCalls int64
}

// Manager finds, verifies, starts, supervises and calls detectors. It never
// blocks a call on a detector for longer than CallTimeout and never waits
// for a restart: a detector that is down is reported in Result.Err.
type Manager struct {
	cfg     Config
	lineage Lineage
	runners []*runner
	stop    chan struct{}
	wg      sync.WaitGroup
	// procs counts starts and process stops under way, for Close to wait
	// for. Added to under a runner's mu while its state is not disabled
	// (or by a start or stop already counted), so never after Close has
	// disabled every runner and waits.
	procs sync.WaitGroup
	once  sync.Once
	// pool makes the calls to all detectors but one (the caller's
	// goroutine makes the last) on kept goroutines, whose stacks are grown
	// for protobuf's encoding already (see gopool).
	pool gopool.Pool

	enrichCalls, enrichSkipped, recordCalls, recordSkipped atomic.Int64
	enrichFailed                                           atomic.Int64
	lineageCalls                                           atomic.Int64
}

// Stats reports how many calls were made and skipped.
func (m *Manager) Stats() Stats {
	return Stats{EnrichCalls: m.enrichCalls.Load(), EnrichSkipped: m.enrichSkipped.Load(), EnrichFailed: m.enrichFailed.Load(),
		OnRecordCalls: m.recordCalls.Load(), OnRecordSkipped: m.recordSkipped.Load(), LineageCalls: m.lineageCalls.Load()}
}

// ErrDetectorDown is wrapped in Result.Err while a detector is not running.
var ErrDetectorDown = errors.New("detector not running")

// NewManager scans cfg.Dir and prepares one runner per detector; nothing is
// started until Start. Binaries without a pin are kept with state refused
// so that Status shows them.
func NewManager(cfg Config, lin Lineage) (*Manager, error) {
	cfg.defaults()
	if lin == nil {
		return nil, errors.New("plugins: no lineage service")
	}
	m := &Manager{cfg: cfg, stop: make(chan struct{})}
	m.lineage = countingLineage{Lineage: lin, n: &m.lineageCalls}
	if cfg.Dir == "" {
		return m, nil
	}
	ents, err := os.ReadDir(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("plugins: read detector directory: %w", err)
	}
	only := map[string]bool{}
	for _, n := range cfg.Only {
		only[n] = true
	}
	found := map[string]bool{}
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, ".") || (len(only) > 0 && !only[name]) {
			continue
		}
		path := filepath.Join(cfg.Dir, name)
		fi, err := os.Lstat(path)
		if err != nil || fi.IsDir() {
			continue
		}
		r := &runner{m: m, name: name, path: path, state: StateStarting, timeouts: map[string]int{}}
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			r.refuse("is a symlink; detectors must be regular files in the plugin directory")
		case !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0:
			continue // not an executable: README, checksum file, ...
		default:
			pin := strings.ToLower(strings.TrimSpace(cfg.Pins[name]))
			if pin == "" {
				r.refuse("no sha256 pinned for it in the configuration")
			} else if b, err := hex.DecodeString(pin); err != nil || len(b) != sha256.Size {
				r.refuse(fmt.Sprintf("pinned sha256 %q is not 64 hex digits", pin))
			} else {
				r.pin = b
			}
		}
		found[name] = true
		m.runners = append(m.runners, r)
	}
	for _, n := range cfg.Only {
		if !found[n] {
			return nil, fmt.Errorf("plugins: detector %q not found in %s", n, cfg.Dir)
		}
	}
	sort.Slice(m.runners, func(i, j int) bool { return m.runners[i].name < m.runners[j].name })
	for _, r := range m.runners {
		if r.state == StateRefused {
			cfg.Logger.Error("detector refused", "detector", r.name, "path", r.path, "error", r.lastErr)
		}
	}
	return m, nil
}

// Start starts every detector (in parallel, waiting for the first start of
// each so that the first alerts are enriched) and the supervisor.
func (m *Manager) Start(ctx context.Context) {
	var wg sync.WaitGroup
	for _, r := range m.runners {
		r.mu.Lock()
		// Not a second process beside one already started or starting (a
		// call before Start starts it): r.proc would lose the first.
		if r.state == StateRefused || r.state == StateDisabled || r.starting || r.proc != nil { // disabled: closed already
			r.mu.Unlock()
			continue
		}
		r.starting = true
		m.procs.Add(1)
		r.mu.Unlock()
		wg.Add(1)
		go func() { defer wg.Done(); r.start() }()
	}
	wg.Wait()
	m.wg.Add(1)
	go m.supervise()
}

// Close stops the supervisor and kills every detector.
func (m *Manager) Close() {
	m.once.Do(func() {
		close(m.stop)
		m.wg.Wait()
		var wg sync.WaitGroup
		for _, r := range m.runners {
			r.mu.Lock()
			p := r.proc
			r.proc, r.det = nil, nil
			r.state = StateDisabled // no start begins after this
			if r.abort != nil {
				r.abort() // a start under way: SIGKILL what it started
			}
			r.mu.Unlock()
			if p != nil {
				wg.Add(1)
				go func() { defer wg.Done(); p.stop(true, m.cfg.Logger) }()
			}
		}
		// Bounded: stop SIGKILLs a process that does not exit, and an
		// aborted start ends at once. Once done, no detector process is
		// left.
		wg.Wait()
		m.procs.Wait()
		m.pool.Close()
	})
}

// Status reports every detector.
func (m *Manager) Status() []Status {
	out := make([]Status, 0, len(m.runners))
	for _, r := range m.runners {
		r.mu.Lock()
		st := Status{Name: r.name, Path: r.path, State: r.state, Starts: r.totalStarts, Info: r.info}
		if r.lastErr != nil {
			st.LastError = r.lastErr.Error()
		}
		if r.state == StateBackoff {
			st.NextStart = r.nextStart
		}
		if r.det != nil {
			st.Transport = r.det.Transport()
		}
		r.mu.Unlock()
		out = append(out, st)
	}
	return out
}

// Enrich asks every detector about the alert, in parallel, each bounded by
// CallTimeout. Results come in detector-name order; a detector that is
// down, hung, crashed or answered garbage has Err set; one whose declared
// Needs rule the call out is not asked (Skipped says why).
func (m *Manager) Enrich(ctx context.Context, a *Alert) []Result {
	res := m.each(ctx, CallEnrich, func(d *DetectorClient) string {
		n := d.Needs()
		why := n.SkipEnrich(a)
		if why != "" {
			m.enrichSkipped.Add(1)
		} else {
			m.enrichCalls.Add(1)
		}
		return why
	}, func(ctx context.Context, d *DetectorClient) Result {
		e, err := d.Enrich(ctx, a)
		return Result{Enrichment: e, Err: err}
	}, true)
	for i := range res {
		if res[i].Err != nil {
			m.enrichFailed.Add(1)
		}
	}
	return res
}

// Wanted says which parts of an alert's context the detectors that Enrich
// would ask read (the union of their declared Needs), so that the host
// reads only those. It evaluates SkipEnrich over a as it stands (with
// a.Facts) and counts nothing.
func (m *Manager) Wanted(a *Alert) Needs {
	var w Needs
	for _, r := range m.runners {
		r.mu.Lock()
		d := r.det
		running := r.state == StateRunning && d != nil
		r.mu.Unlock()
		if !running {
			continue
		}
		n := d.Needs()
		if n.SkipEnrich(a) != "" {
			continue
		}
		w.Enrich = true
		w.AlertFamily = w.AlertFamily || n.AlertFamily
		w.AlertRecords = w.AlertRecords || n.AlertRecords
		w.AlertAncestors = w.AlertAncestors || n.AlertAncestors
	}
	return w
}

// OnRecord passes a committed record to every detector that wants it;
// detectors that do not are left out of the results.
func (m *Manager) OnRecord(ctx context.Context, rec *record.Record) []Result {
	return m.each(ctx, CallOnRecord, func(d *DetectorClient) string {
		n := d.Needs()
		if !n.WantsRecord(rec) {
			m.recordSkipped.Add(1)
			return "not wanted"
		}
		m.recordCalls.Add(1)
		return ""
	}, func(ctx context.Context, d *DetectorClient) Result {
		fs, err := d.OnRecord(ctx, rec)
		return Result{Findings: fs, Err: err}
	}, false)
}

// each calls the running detectors that skip does not rule out, in
// parallel (the last one on this goroutine), and sets the detector names.
func (m *Manager) each(ctx context.Context, name string, skip func(*DetectorClient) string, call func(context.Context, *DetectorClient) Result, keepSkipped bool) []Result {
	out := make([]Result, 0, len(m.runners))
	type job struct {
		i int
		r *runner
		d *DetectorClient
	}
	var jobs []job
	for _, r := range m.runners {
		d, err := r.get()
		if err != nil {
			m.observe(r.name, name, OutcomeDown, 0)
			out = append(out, Result{Detector: r.name, Err: err})
			continue
		}
		if why := skip(d); why != "" {
			m.observe(r.name, name, OutcomeSkipped, 0)
			if keepSkipped {
				out = append(out, Result{Detector: r.name, Skipped: why})
			}
			continue
		}
		jobs = append(jobs, job{len(out), r, d})
		out = append(out, Result{Detector: r.name})
	}
	var wg sync.WaitGroup
	for k, j := range jobs {
		if k == len(jobs)-1 {
			out[j.i] = j.r.call(ctx, name, j.d, call)
			break
		}
		wg.Add(1)
		m.pool.Go(func() {
			defer wg.Done()
			out[j.i] = j.r.call(ctx, name, j.d, call)
		})
	}
	wg.Wait()
	for i := range out {
		if e := out[i].Enrichment; e != nil {
			for j := range e.Suspects {
				e.Suspects[j].Detector = out[i].Detector
			}
			for j := range e.Findings {
				e.Findings[j].Detector = out[i].Detector
			}
		}
		for j := range out[i].Findings {
			out[i].Findings[j].Detector = out[i].Detector
		}
	}
	return out
}

func (m *Manager) supervise() {
	defer m.wg.Done()
	t := time.NewTicker(m.cfg.PingInterval / 4)
	defer t.Stop()
	lastPing := time.Now()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
		}
		ping := time.Since(lastPing) >= m.cfg.PingInterval
		if ping {
			lastPing = time.Now()
		}
		for _, r := range m.runners {
			r.tick(ping)
		}
	}
}

// runner is one detector binary and its current process.
type runner struct {
	m    *Manager
	name string
	path string
	pin  []byte

	mu          sync.Mutex
	state       string
	proc        *proc  // the running process
	abort       func() // while starting: SIGKILLs the process being started
	det         *DetectorClient
	info        Info
	lastErr     error
	starting    bool
	starts      []time.Time // within CrashLoopWindow
	totalStarts int
	backoff     time.Duration
	nextStart   time.Time
	upSince     time.Time
	// timeouts counts the time-outs since the last answer, per call kind
	// (CallEnrich, CallOnRecord). An answer resets only its own kind's
	// count: OnRecord answering says nothing of an Enrich path that is
	// deadlocked. Each kind's count is held to HungLimit on its own.
	timeouts map[string]int
}

func (r *runner) refuse(why string) {
	r.state = StateRefused
	r.lastErr = fmt.Errorf("detector %s (%s) refused: %s", r.name, r.path, why)
}

// get returns the running detector, or an error saying why there is none
// (and kicks off a due restart without waiting for it).
func (r *runner) get() (*DetectorClient, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state == StateRunning && r.proc != nil && !r.proc.client.Exited() {
		return r.det, nil
	}
	if r.state == StateRunning { // exited between pings
		r.failLocked(errors.New("process exited"))
	}
	r.maybeRestartLocked()
	return nil, fmt.Errorf("%w: %s (%s)", ErrDetectorDown, r.state, errString(r.lastErr))
}

func errString(err error) string {
	if err == nil {
		return "no error recorded"
	}
	return err.Error()
}

func (r *runner) maybeRestartLocked() {
	if r.starting || r.state == StateDisabled || r.state == StateRefused || time.Now().Before(r.nextStart) {
		return
	}
	r.starting = true
	r.state = StateStarting
	r.m.procs.Add(1)
	go r.start()
}

func (r *runner) call(ctx context.Context, name string, d *DetectorClient, call func(context.Context, *DetectorClient) Result) Result {
	cctx, cancel := context.WithTimeout(ctx, r.m.cfg.CallTimeout)
	defer cancel()
	// No watchdog goroutine: the call is local work plus one gRPC round
	// trip, and gRPC's client ends that at the deadline whatever the peer
	// does (the hang and kill-mid-call tests hold it to that).
	start := time.Now()
	res := call(cctx, d)
	outcome := OutcomeFailed
	defer func() { r.m.observe(r.name, name, outcome, time.Since(start)) }()
	res.Detector = r.name
	if res.Err == nil {
		outcome = OutcomeOK
		r.mu.Lock()
		// Only the process called counts: d may have been replaced
		// during the call, and its answer says nothing of the new one.
		if r.det == d {
			r.timeouts[name] = 0
		}
		r.mu.Unlock()
		return res
	}
	code := status.Code(res.Err)
	switch {
	case ctx.Err() != nil:
		// The caller gave up; not the detector's fault.
		outcome = OutcomeCancelled
	case errors.Is(res.Err, context.DeadlineExceeded) || code == codes.DeadlineExceeded:
		outcome = OutcomeTimeout
		res.Err = fmt.Errorf("no answer within %s (hung?)", r.m.cfg.CallTimeout)
		r.mu.Lock()
		if r.det == d { // a call to a process since replaced does not count against the new one
			r.timeouts[name]++
			// Per kind, not summed: one slow OnRecord after an old
			// Enrich time-out (answers of the other kind between) is
			// one slow call, which is tolerated.
			if n := r.timeouts[name]; n >= r.m.cfg.HungLimit {
				r.failLocked(fmt.Errorf("%d %s calls timed out with no answer of that kind between; killing it", n, name))
			}
		}
		r.mu.Unlock()
	case code == codes.Unavailable || code == codes.Canceled || r.exited(d):
		outcome = OutcomeCrashed
		r.mu.Lock()
		if r.det == d {
			r.failLocked(fmt.Errorf("crashed: %v", res.Err))
		}
		r.mu.Unlock()
		res.Err = fmt.Errorf("crashed during the call: %v", status.Convert(res.Err).Message())
	case errors.Is(res.Err, ErrGarbage):
		r.m.cfg.Logger.Warn("detector answered garbage", "detector", r.name, "error", res.Err)
	default:
		res.Err = fmt.Errorf("failed: %v", status.Convert(res.Err).Message())
	}
	return res
}

// observe hands an observation to Config.Observe.
func (m *Manager) observe(detector, call, outcome string, d time.Duration) {
	if m.cfg.Observe != nil {
		m.cfg.Observe(Observation{Detector: detector, Call: call, Outcome: outcome, Duration: d})
	}
}

func (r *runner) exited(d *DetectorClient) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.det == d && r.proc != nil && r.proc.client.Exited()
}

// failLocked kills the current process and schedules a restart with
// exponential back-off. r.mu is held.
func (r *runner) failLocked(err error) {
	r.lastErr = err
	if p := r.proc; p != nil {
		// Not gracefully: the process failed (crashed, hung, stopped), and
		// never on the call path.
		r.m.stopLater(p)
	}
	r.proc, r.det = nil, nil
	if r.state == StateDisabled || r.state == StateRefused {
		return
	}
	switch {
	case r.backoff == 0, !r.upSince.IsZero() && time.Since(r.upSince) > r.m.cfg.CrashLoopWindow:
		// The first failure, or one after a long run (judged by uptime, not
		// by a successful call: a detector may rarely be called, or its
		// Needs skip every call): restart quickly again.
		r.backoff = r.m.cfg.MinBackoff
	default:
		r.backoff = min(2*r.backoff, r.m.cfg.MaxBackoff)
	}
	r.upSince = time.Time{} // a failed start next did not run at all
	r.nextStart = time.Now().Add(r.backoff)
	r.state = StateBackoff
	clear(r.timeouts)
	r.m.cfg.Logger.Error("detector failed", "detector", r.name, "error", err, "restart_in", r.backoff)
}

func (r *runner) tick(ping bool) {
	r.mu.Lock()
	p, state := r.proc, r.state
	if state == StateRunning && p != nil && p.client.Exited() {
		r.failLocked(errors.New("process exited"))
		state = r.state
	}
	if state == StateBackoff {
		r.maybeRestartLocked()
	}
	r.mu.Unlock()
	if !ping || state != StateRunning || p == nil {
		return
	}
	err := pingWithin(p.client, r.m.cfg.CallTimeout)
	if err != nil {
		r.mu.Lock()
		if r.proc == p {
			r.failLocked(fmt.Errorf("health check failed: %w", err))
		}
		r.mu.Unlock()
	}
}

func pingWithin(c *goplugin.Client, d time.Duration) error {
	done := make(chan error, 1)
	go func() {
		cp, err := c.Client()
		if err == nil {
			err = cp.Ping()
		}
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		return fmt.Errorf("no answer to ping within %s", d)
	}
}

// start verifies the binary and launches it. It runs without r.mu held
// (a start takes tens of milliseconds) and r.starting guards against two.
// The caller has counted it in m.procs.
func (r *runner) start() {
	defer r.m.procs.Done()
	cfg := r.m.cfg
	r.mu.Lock()
	if r.state == StateDisabled { // closed before it began
		r.starting = false
		r.mu.Unlock()
		return
	}
	now := time.Now()
	keep := r.starts[:0]
	for _, t := range r.starts {
		if now.Sub(t) < cfg.CrashLoopWindow {
			keep = append(keep, t)
		}
	}
	r.starts = keep
	if len(r.starts) >= cfg.CrashLoopLimit {
		r.state = StateDisabled
		r.starting = false
		r.lastErr = fmt.Errorf("crash loop: %d starts within %s, disabled (last error: %s)", len(r.starts), cfg.CrashLoopWindow, errString(r.lastErr))
		r.mu.Unlock()
		cfg.Logger.Error("detector disabled", "detector", r.name, "error", r.lastErr)
		return
	}
	r.starts = append(r.starts, now)
	r.totalStarts++
	ctx, kill := context.WithCancel(context.Background())
	r.abort = kill
	r.mu.Unlock()

	p, det, info, err := r.launch(ctx, kill)

	r.mu.Lock()
	r.abort = nil
	r.starting = false
	if r.state == StateDisabled { // closed meanwhile: Close waits for this stop
		r.mu.Unlock()
		kill()
		if p != nil {
			p.stop(false, cfg.Logger)
		}
		return
	}
	defer r.mu.Unlock()
	if err != nil {
		kill()
		if p != nil {
			r.m.stopLater(p)
		}
		r.state = StateStarting
		r.failLocked(err)
		return
	}
	r.proc, r.det, r.info = p, det, info
	r.state, r.lastErr, r.upSince = StateRunning, nil, time.Now()
	clear(r.timeouts)
	cfg.Logger.Info("detector started", "detector", r.name, "version", info.Version, "transport", det.Transport())
}

// stopLater stops a failed process in the background, counted in m.procs
// for Close. Called under a runner's mu, or from a start.
func (m *Manager) stopLater(p *proc) {
	m.procs.Add(1)
	go func() { defer m.procs.Done(); p.stop(false, m.cfg.Logger) }()
}

// ErrChecksum is returned when a binary's SHA-256 differs from its pin.
var ErrChecksum = errors.New("sha256 does not match the pinned value")

// launch starts the process under ctx: kill (ctx's cancel) SIGKILLs it,
// and ends a start under way.
func (r *runner) launch(ctx context.Context, kill context.CancelFunc) (*proc, *DetectorClient, Info, error) {
	cfg := r.m.cfg
	// The file is opened once, hashed from that descriptor, and the
	// process is exec'd from the same descriptor: a file renamed over the
	// path after the check is not what runs. (go-plugin's SecureConfig is
	// not used: it would hash the same descriptor again.)
	f, sum, err := openVerify(r.path)
	if err != nil {
		return nil, nil, Info{}, err
	}
	defer f.Close() // once started, the process holds the file itself
	if subtle.ConstantTimeCompare(sum, r.pin) != 1 {
		return nil, nil, Info{}, fmt.Errorf("%s: %w (pinned %x, file has %x)", r.path, ErrChecksum, r.pin, sum)
	}
	// /proc/self/fd/N resolves in the child, which has inherited f up to
	// its execve (close-on-exec closes it only once exec has opened the
	// file), as fexecve(3) does. argv[0] stays the path, for ps and logs.
	cmd := exec.CommandContext(ctx, fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
	cmd.Args = []string{r.path}
	p := &proc{kill: kill}
	p.client = goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig:  Handshake,
		Plugins:          goplugin.PluginSet{PluginName: &DetectorPlugin{Lineage: r.m.lineage, UnaryEnrich: cfg.UnaryEnrich}},
		Cmd:              cmd,
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
		AutoMTLS:         true,
		GRPCDialOptions:  dialOptions,
		Managed:          true,
		StartTimeout:     cfg.StartTimeout,
		Logger: hclog.New(&hclog.LoggerOptions{Name: "detector." + r.name, Level: hclog.Warn,
			Output: &logWriter{l: cfg.Logger, name: r.name}}),
	})
	cp, err := p.client.Client()
	if err != nil {
		return p, nil, Info{}, fmt.Errorf("start: %w", err)
	}
	raw, err := cp.Dispense(PluginName)
	if err != nil {
		return p, nil, Info{}, fmt.Errorf("dispense: %w", err)
	}
	det, ok := raw.(*DetectorClient)
	if !ok {
		return p, nil, Info{}, fmt.Errorf("dispense: unexpected %T", raw)
	}
	cctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()
	info, err := det.Info(cctx)
	if err != nil {
		return p, nil, Info{}, fmt.Errorf("info: %w", err)
	}
	if err := det.Configure(cctx, cfg.Settings[r.name]); err != nil {
		return p, nil, Info{}, fmt.Errorf("configure: %v", status.Convert(err).Message())
	}
	return p, det, info, nil
}

// proc is one detector process.
type proc struct {
	client *goplugin.Client
	// kill cancels the context of the process's exec.Cmd: os/exec then
	// SIGKILLs it. It may be called at any time, more than once.
	kill context.CancelFunc
}

// killGrace bounds each wait of stop: longer than the 2 s go-plugin's Kill
// gives a process to exit after its Shutdown RPC, so that its own
// SIGKILL comes first when the process answers.
const killGrace = 3 * time.Second

// stop ends the process and waits, within bounds, until it is gone.
// Graceful, it goes through go-plugin's Kill (a Shutdown RPC, 2 s for the
// process to exit, then SIGKILL). That RPC has no deadline: a process that
// cannot answer (stopped, frozen) would hold Kill, and the process, for
// good; so after killGrace the process is SIGKILLed here. A failed process
// is SIGKILLed at once, and Kill only cleans up.
func (p *proc) stop(graceful bool, log *slog.Logger) {
	defer p.kill() // releases the context whatever happened
	pid := p.client.ID()
	if !graceful {
		p.kill()
	}
	done := make(chan struct{})
	go func() { p.client.Kill(); close(done) }()
	select {
	case <-done:
		return
	case <-time.After(killGrace):
	}
	p.kill()
	select {
	case <-done:
	case <-time.After(killGrace):
		// SIGKILLed, but not reaped yet (say, stuck in the kernel, or a
		// child of it holds its output open); its clean-up goes on alone.
		log.Warn("detector process not gone after SIGKILL", "pid", pid)
	}
}

// openVerify opens a detector file for its start and hashes it. The file
// must be a regular file, and a symlink in its place is refused (as in
// NewManager, checked again since the directory may have changed): a FIFO,
// or a link to a device, would block the start for good.
func openVerify(path string) (*os.File, []byte, error) {
	// O_NONBLOCK: opening a FIFO must not wait for a writer.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, syscall.ELOOP) {
		return nil, nil, fmt.Errorf("%s is a symlink; detectors must be regular files in the plugin directory", path)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("open %s: %w", path, err)
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s is not a regular file (%s)", path, fi.Mode().Type())
	}
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("read %s: %w", path, err)
	}
	return f, h.Sum(nil), nil
}

func fileSHA256(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

// FileSHA256 returns the hex SHA-256 of a file, the form Config.Pins takes.
func FileSHA256(path string) (string, error) {
	b, err := fileSHA256(path)
	return hex.EncodeToString(b), err
}

// ReadPins reads a sha256sum-style file ("<hex>  <name>" per line) into a
// pin map; names are file base names.
func ReadPins(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pins := map[string]string{}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			return nil, fmt.Errorf("%s:%d: want \"<sha256>  <name>\", got %q", path, i+1, line)
		}
		pins[filepath.Base(strings.TrimPrefix(f[1], "*"))] = strings.ToLower(f[0])
	}
	return pins, nil
}

// logWriter turns go-plugin's log lines (including the detector's stderr)
// into our structured log.
type logWriter struct {
	l    *slog.Logger
	name string
}

func (w *logWriter) Write(p []byte) (int, error) {
	if s := strings.TrimSpace(string(p)); s != "" {
		w.l.Warn("detector log", "detector", w.name, "line", s)
	}
	return len(p), nil
}

// countingLineage counts the calls detectors make over the broker.
type countingLineage struct {
	Lineage
	n *atomic.Int64
}

func (c countingLineage) VM(ctx context.Context, uuid string) (VM, error) {
	c.n.Add(1)
	return c.Lineage.VM(ctx, uuid)
}

func (c countingLineage) Ancestors(ctx context.Context, uuid string) ([]VM, error) {
	c.n.Add(1)
	return c.Lineage.Ancestors(ctx, uuid)
}

func (c countingLineage) Descendants(ctx context.Context, uuid string) ([]VM, error) {
	c.n.Add(1)
	return c.Lineage.Descendants(ctx, uuid)
}

func (c countingLineage) Siblings(ctx context.Context, uuid string) ([]VM, error) {
	c.n.Add(1)
	return c.Lineage.Siblings(ctx, uuid)
}

func (c countingLineage) Family(ctx context.Context, uuid string) ([]VM, error) {
	c.n.Add(1)
	return c.Lineage.Family(ctx, uuid)
}

func (c countingLineage) StatesAt(ctx context.Context, uuids []string, at time.Time) ([]VMState, error) {
	c.n.Add(1)
	return c.Lineage.StatesAt(ctx, uuids, at)
}

func (c countingLineage) Records(ctx context.Context, q RecordQuery) ([]record.Record, error) {
	c.n.Add(1)
	return c.Lineage.Records(ctx, q)
}

func (c countingLineage) AlertedVMs(ctx context.Context, uuids []string, since, until time.Time) ([]AlertedVM, error) {
	c.n.Add(1)
	return c.Lineage.AlertedVMs(ctx, uuids, since, until)
}
