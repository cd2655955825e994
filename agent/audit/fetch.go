package audit

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"sort"
	"sync"
	"time"
	"unsafe"

	"github.com/vmlineage/vmlineage/agent/xapi"
)

// Host is one pool host whose audit log is fetched.
type Host struct {
	Name    string // name_label: the host the lines are filed under
	UUID    string
	Ref     string // for host.get_server_certificate (pinning members)
	Address string // management address
	Master  bool
}

// StateKeyHTTP prefixes the agent_state key of a host's /audit_log
// position ("audit.http:<host uuid>").
const StateKeyHTTP = "audit.http:"

// FetchConfig configures a Fetcher.
type FetchConfig struct {
	// Client is the logged-in XAPI client (its session, TLS settings and
	// pins are used; the watcher keeps it logged in).
	Client *xapi.Client
	// PoolUUID is set on every Batch.
	PoolUUID string
	// Hosts lists the pool's hosts at each poll (default PoolHosts). Every
	// host is polled: members keep their own HTTP lines and the copies of
	// the calls forwarded to them; a new master after failover has none of
	// the old master's history.
	Hosts func(ctx context.Context) ([]Host, error)
	// BaseURL gives a host's base URL (default: the master's scheme and
	// port with the host's address; "" for the master itself).
	BaseURL func(Host) string
	// Overlap is how far before the high-water mark each request starts
	// (default 10 s): lines reach the file slightly out of stamp order.
	Overlap time.Duration
	// MaxLine: longer lines are skipped and counted (default 64 KiB;
	// rsyslog cuts at 8 KiB by default).
	MaxLine int
	// BatchLines is how many lines go to the sink at once (default 1000).
	BatchLines int
	// MaxBytes ends one host's answer after this many bytes (default 1 GiB;
	// what was read is kept and the next poll goes on from there).
	MaxBytes int64
	// PollTimeout bounds one host's answer in time (default 5 min).
	PollTimeout time.Duration
	// State reads the positions saved by earlier runs (lineage.Store).
	State StateReader
	// Rewarm: the first poll of each host in this process asks for this
	// much history before the saved position and hands it on marked
	// Replayed, so an Attributor that a restart emptied knows the callers
	// of records the tracer has yet to finish (default: none).
	Rewarm time.Duration
	Logger *slog.Logger
}

// FetchStats counts what the fetcher did.
type FetchStats struct {
	Polls, Errors   int64
	Lines           int64 // new lines delivered
	Duplicates      int64 // lines of the overlap already delivered
	Replayed        int64 // lines delivered again for the index after a restart (Rewarm)
	Own             int64 // our own http/get_audit_log lines (dropped)
	Bad, Overlong   int64 // malformed lines, lines over MaxLine (skipped, counted)
	Bytes           int64
	LastError       string
	LastErrorByHost map[string]string
}

// Fetcher polls GET /audit_log on every host of a pool and hands new
// lines to a Sink with the position to persist beside them.
type Fetcher struct {
	cfg FetchConfig
	log *slog.Logger

	mu     sync.Mutex
	hosts  map[string]*hostPos // by host uuid (name when no uuid)
	own    map[string]bool     // trackids of our sessions
	pinned map[string]bool     // bases whose certificate was pinned
	stats  FetchStats
}

type hostPos struct {
	key    string
	loaded bool
	saved  string // the position as last persisted (JSON)
	pos    position
	warmed bool   // the Rewarm poll was done
	warmTo string // lines at or before this stamp are replayed (Rewarm)
}

// NewFetcher checks cfg and fills defaults.
func NewFetcher(cfg FetchConfig) (*Fetcher, error) {
	if cfg.Client == nil {
		return nil, errors.New("audit: fetcher needs an XAPI client")
	}
	if cfg.Hosts == nil {
		c := cfg.Client
		cfg.Hosts = func(ctx context.Context) ([]Host, error) { return PoolHosts(ctx, c) }
	}
	if cfg.BaseURL == nil {
		c := cfg.Client
		cfg.BaseURL = func(h Host) string {
			if h.Master {
				return ""
			}
			return c.HostBase(h.Address)
		}
	}
	if cfg.Overlap <= 0 {
		cfg.Overlap = 10 * time.Second
	}
	if cfg.MaxLine <= 0 {
		cfg.MaxLine = 64 << 10
	}
	if cfg.BatchLines <= 0 {
		cfg.BatchLines = 1000
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = 1 << 30
	}
	if cfg.PollTimeout <= 0 {
		cfg.PollTimeout = 5 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Fetcher{cfg: cfg, log: cfg.Logger, hosts: map[string]*hostPos{}, own: map[string]bool{},
		pinned: map[string]bool{}}, nil
}

// PoolHosts reads the pool's hosts and which one is the master.
func PoolHosts(ctx context.Context, c *xapi.Client) ([]Host, error) {
	hosts, err := c.GetAllRecords(ctx, "host")
	if err != nil {
		return nil, err
	}
	pools, err := c.GetAllRecords(ctx, "pool")
	if err != nil {
		return nil, err
	}
	master := ""
	for _, p := range pools {
		master = p.Master
	}
	out := make([]Host, 0, len(hosts))
	for ref, h := range hosts {
		out = append(out, Host{Name: h.NameLabel, UUID: h.UUID, Ref: ref, Address: h.Address, Master: ref == master})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Stats returns a copy of the counters.
func (f *Fetcher) Stats() FetchStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.stats
	s.LastErrorByHost = map[string]string{}
	for k, v := range f.stats.LastErrorByHost {
		s.LastErrorByHost[k] = v
	}
	return s
}

// Run polls every interval until ctx ends.
func (f *Fetcher) Run(ctx context.Context, every time.Duration, sink Sink) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := f.Poll(ctx, sink); err != nil && ctx.Err() == nil {
			f.log.Warn("audit log: poll failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Poll fetches what every host's audit log gained. Hosts are independent:
// one failing (unreachable, 401) does not stop the others; the errors are
// joined.
func (f *Fetcher) Poll(ctx context.Context, sink Sink) error {
	hosts, err := f.cfg.Hosts(ctx)
	if err != nil {
		f.fail("", err)
		return fmt.Errorf("audit: listing the pool's hosts: %w", err)
	}
	var errs []error
	for _, h := range hosts {
		if err := f.pollHost(ctx, h, sink); err != nil {
			f.fail(h.Name, err)
			errs = append(errs, fmt.Errorf("host %s: %w", h.Name, err))
		}
		if ctx.Err() != nil {
			break
		}
	}
	return errors.Join(errs...)
}

func (f *Fetcher) fail(host string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stats.Errors++
	f.stats.LastError = err.Error()
	if f.stats.LastErrorByHost == nil {
		f.stats.LastErrorByHost = map[string]string{}
	}
	f.stats.LastErrorByHost[host] = err.Error()
}

func (f *Fetcher) host(ctx context.Context, h Host) (*hostPos, error) {
	id := h.UUID
	if id == "" {
		id = h.Name
	}
	f.mu.Lock()
	hp := f.hosts[id]
	if hp == nil {
		hp = &hostPos{key: StateKeyHTTP + id}
		f.hosts[id] = hp
	}
	f.mu.Unlock()
	if !hp.loaded && f.cfg.State != nil {
		v, err := f.cfg.State.AgentState(ctx, hp.key)
		if err != nil {
			return nil, fmt.Errorf("reading the saved position: %w", err)
		}
		p, err := decodePosition(v)
		if err != nil {
			f.log.Warn("audit log: unreadable saved position; reading the whole log again (duplicates are dropped by id downstream)",
				"host", h.Name, "err", err)
			p, v = position{}, ""
		}
		hp.pos, hp.saved = p, v
	}
	hp.loaded = true
	return hp, nil
}

// pin makes a member reachable under certificate pinning: the master
// (already verified) tells its certificate.
func (f *Fetcher) pin(ctx context.Context, h Host, base string) {
	if base == "" || h.Ref == "" {
		return
	}
	f.mu.Lock()
	done := f.pinned[base]
	f.mu.Unlock()
	if done {
		return
	}
	pem, err := f.cfg.Client.HostCertificate(ctx, h.Ref)
	if err == nil {
		err = f.cfg.Client.PinHost(base, pem)
	}
	if err != nil {
		f.log.Warn("audit log: cannot pin the host's certificate", "host", h.Name, "err", err)
		return
	}
	f.mu.Lock()
	f.pinned[base] = true
	f.mu.Unlock()
}

func (f *Fetcher) pollHost(ctx context.Context, h Host, sink Sink) error {
	hp, err := f.host(ctx, h)
	if err != nil {
		return err
	}
	base := f.cfg.BaseURL(h)
	f.pin(ctx, h, base)
	sess := f.cfg.Client.Session()
	f.mu.Lock()
	f.stats.Polls++
	if sess != "" {
		f.own[TrackIDOf(sess)] = true
	}
	f.mu.Unlock()
	q := url.Values{}
	since := hp.pos.sinceFor(f.cfg.Overlap)
	hp.warmTo = ""
	if !hp.warmed && f.cfg.Rewarm > 0 && hp.pos.HWM != "" {
		since, hp.warmTo = hp.pos.sinceFor(f.cfg.Rewarm+f.cfg.Overlap), hp.pos.sinceFor(f.cfg.Overlap)
	}
	hp.warmed = true
	if since != "" {
		q.Set("since", since)
	}
	ctx, cancel := context.WithTimeout(ctx, f.cfg.PollTimeout)
	defer cancel()
	resp, err := f.cfg.Client.Get(ctx, base, "/audit_log", q)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return f.read(ctx, h, hp, resp.Body, sink)
}

// read streams one answer: one line at a time (bounded by MaxLine), handed
// on in batches of BatchLines, the position moving with each batch the sink
// accepts.
func (f *Fetcher) read(ctx context.Context, h Host, hp *hostPos, body io.Reader, sink Sink) error {
	br := bufio.NewReaderSize(body, max(64<<10, f.cfg.MaxLine+1))
	var (
		n        int64
		skipping bool
		l        Line
		b        = &Batch{PoolUUID: f.cfg.PoolUUID}
		counts   FetchStats
	)
	flush := func() error {
		hp.pos.prune(f.cfg.Overlap)
		state := hp.pos.encode()
		if len(b.Entries) == 0 && b.Bad == 0 && state == hp.saved {
			return nil
		}
		b.State = map[string]string{hp.key: state}
		if err := sink(ctx, b); err != nil {
			// Keep the position the sink last stored: these lines come again.
			hp.pos, _ = decodePosition(hp.saved)
			return fmt.Errorf("sink: %w", err)
		}
		hp.saved = state
		f.mu.Lock()
		f.stats.Lines += counts.Lines
		f.stats.Duplicates += counts.Duplicates
		f.stats.Replayed += counts.Replayed
		f.stats.Own += counts.Own
		f.stats.Bad += counts.Bad
		f.stats.Overlong += counts.Overlong
		f.stats.Bytes += counts.Bytes
		f.mu.Unlock()
		counts = FetchStats{}
		b = &Batch{PoolUUID: f.cfg.PoolUUID}
		return nil
	}
	for {
		chunk, err := br.ReadSlice('\n')
		n += int64(len(chunk))
		counts.Bytes += int64(len(chunk))
		switch {
		case errors.Is(err, bufio.ErrBufferFull) || (len(trimEOL(chunk)) > f.cfg.MaxLine && !skipping):
			if !skipping {
				counts.Overlong++
			}
			skipping = !(len(chunk) > 0 && chunk[len(chunk)-1] == '\n')
		case skipping:
			skipping = false // the end of an overlong line
		case len(chunk) > 0:
			f.line(h, hp, chunk, &l, b, &counts)
		}
		if len(b.Entries)+b.Bad >= f.cfg.BatchLines {
			if ferr := flush(); ferr != nil {
				return ferr
			}
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			if ferr := flush(); ferr != nil {
				return ferr
			}
			if errors.Is(err, io.EOF) {
				return nil
			}
			if ctx.Err() != nil {
				return fmt.Errorf("answer cut after %d bytes: %w", n, ctx.Err())
			}
			return fmt.Errorf("reading the answer after %d bytes: %w", n, err)
		}
		if n > f.cfg.MaxBytes {
			if ferr := flush(); ferr != nil {
				return ferr
			}
			return fmt.Errorf("answer over %d bytes: stopped (what was read is kept; the next poll goes on from there)", f.cfg.MaxBytes)
		}
	}
}

// line takes one raw line (newline included) into the batch.
func (f *Fetcher) line(h Host, hp *hostPos, chunk []byte, l *Line, b *Batch, counts *FetchStats) {
	raw := trimEOL(chunk)
	if len(raw) == 0 {
		return
	}
	// Aliases the read buffer until the Clone below.
	s := unsafe.String(unsafe.SliceData(raw), len(raw))
	replayed := false
	if st, ok := serverStamp(s); ok && st < hp.warmTo {
		replayed = true // delivered before the restart: for the index only
	} else if !hp.pos.admit(s) {
		if hp.warmTo == "" {
			counts.Duplicates++
			return
		}
		replayed = true
	}
	if err := Parse(s, l); err != nil {
		counts.Bad++
		b.Bad++
		if b.BadSample == nil {
			b.BadSample = fmt.Errorf("host %s: %w", h.Name, err)
		}
		return
	}
	if l.Action == "http/get_audit_log" && f.isOwn(l.TrackID) {
		counts.Own++
		return
	}
	if replayed {
		counts.Replayed++
	} else {
		counts.Lines++
	}
	b.Entries = append(b.Entries, Entry{Line: l.Clone(), HostName: h.Name, HostUUID: h.UUID, Source: FromHTTP, Replayed: replayed})
}

func (f *Fetcher) isOwn(trackid string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.own[trackid]
}

func trimEOL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
