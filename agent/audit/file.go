package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/vmlineage/vmlineage/internal/logtail"
)

// StateKeyFile prefixes the agent_state key of each followed audit.log
// ("audit.file:<path>").
const StateKeyFile = "audit.file:"

// FileConfig configures a FileSource.
type FileConfig struct {
	// Glob selects the files, one per host: /var/log/audit.log for the
	// agent in dom0, /var/log/hosts/*/audit.log for copies collected over
	// NFS or by a syslog server. Rotated siblings (audit.log.1,
	// audit.log.2.gz, …) are found beside each file.
	Glob string
	// HostPattern is a regular expression on the path whose first group is
	// the host name; "line" takes the host from each line's syslog
	// envelope; default: the parent directory's name.
	HostPattern string
	// Host names the host of every file (a single host's own
	// /var/log/audit.log); overrides HostPattern.
	Host string
	// PoolUUID is set on every Batch; Hosts maps host names to uuids.
	PoolUUID string
	Hosts    map[string]string
	// Poll interval (default 1 s), rotated generations searched (default
	// 100), rename grace (default 2 s), line cap (default 64 KiB), lines
	// per batch (default 1000).
	Poll        time.Duration
	MaxSiblings int
	RotateGrace time.Duration
	MaxLine     int
	BatchLines  int
	// State reads the positions saved by earlier runs.
	State  StateReader
	Logger *slog.Logger
}

// FileStats counts what the file source read.
type FileStats struct {
	Lines, Bad, Other, Overlong, Rotations, Missing, Lost int64
	LastBad                                               string
}

// FileSource follows audit.log files (the fallback when /audit_log cannot
// be fetched, or the cheaper way in dom0) and hands their lines to a Sink
// with each file's position.
type FileSource struct {
	cfg FileConfig
	re  *regexp.Regexp
	log *slog.Logger

	mu    sync.Mutex
	files map[string]*auditFile
	stats FileStats
}

type auditFile struct {
	path, key string
	fl        *logtail.Follower
	saved     string // state as last persisted
	loaded    bool
	base      logtail.Stats
}

// NewFileSource checks cfg.
func NewFileSource(cfg FileConfig) (*FileSource, error) {
	if cfg.Glob == "" {
		return nil, errors.New("audit: no audit.log glob")
	}
	if _, err := filepath.Match(cfg.Glob, ""); err != nil {
		return nil, fmt.Errorf("audit: bad glob %q: %w", cfg.Glob, err)
	}
	if cfg.Poll <= 0 {
		cfg.Poll = time.Second
	}
	if cfg.MaxLine <= 0 {
		cfg.MaxLine = 64 << 10
	}
	if cfg.BatchLines <= 0 {
		cfg.BatchLines = 1000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &FileSource{cfg: cfg, log: cfg.Logger, files: map[string]*auditFile{}}
	switch {
	case cfg.Host != "" || cfg.HostPattern == "line":
	case cfg.HostPattern == "":
		s.re = regexp.MustCompile(`([^/]+)/[^/]+$`)
	default:
		re, err := regexp.Compile(cfg.HostPattern)
		if err != nil {
			return nil, fmt.Errorf("audit: host pattern: %w", err)
		}
		if re.NumSubexp() < 1 {
			return nil, fmt.Errorf("audit: host pattern %q has no group for the host name", cfg.HostPattern)
		}
		s.re = re
	}
	return s, nil
}

// Stats returns the counters.
func (s *FileSource) Stats() FileStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	for _, f := range s.files {
		if f.fl != nil {
			fs := f.fl.Stats()
			st.Rotations += fs.Rotations
			st.Missing += fs.Missing
			st.Lost += fs.Lost
			st.Overlong += fs.Overlong
		}
	}
	return st
}

func (s *FileSource) hostOf(path string, l *Line) string {
	switch {
	case s.cfg.Host != "":
		return s.cfg.Host
	case s.re == nil:
		return l.Host
	}
	if m := s.re.FindStringSubmatch(path); len(m) > 1 {
		return m[1]
	}
	return filepath.Base(filepath.Dir(path))
}

// Run polls until ctx ends.
func (s *FileSource) Run(ctx context.Context, sink Sink) error {
	t := time.NewTicker(s.cfg.Poll)
	defer t.Stop()
	defer s.Close()
	for {
		if err := s.Poll(ctx, sink); err != nil && ctx.Err() == nil {
			s.log.Warn("audit log files: poll failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Close releases the open files.
func (s *FileSource) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.files {
		if f.fl != nil {
			f.fl.Close()
		}
	}
}

// paths are the files the glob names, plus those renamed away and not yet
// re-created (followed by their rotated siblings).
func (s *FileSource) paths() []string {
	seen := map[string]bool{}
	paths, _ := filepath.Glob(s.cfg.Glob)
	for _, p := range paths {
		seen[p] = true
	}
	rotated, _ := filepath.Glob(s.cfg.Glob + ".*")
	for _, r := range rotated {
		b := strings.TrimSuffix(r, ".gz")
		if i := strings.LastIndexByte(b, '.'); i > 0 {
			if _, err := strconv.Atoi(b[i+1:]); err == nil {
				if ok, _ := filepath.Match(s.cfg.Glob, b[:i]); ok && !seen[b[:i]] {
					seen[b[:i]] = true
					paths = append(paths, b[:i])
				}
			}
		}
	}
	sort.Strings(paths)
	return paths
}

// Poll reads what every file gained.
func (s *FileSource) Poll(ctx context.Context, sink Sink) error {
	var errs []error
	for _, p := range s.paths() {
		if err := s.pollFile(ctx, p, sink); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

func (s *FileSource) file(ctx context.Context, path string) (*auditFile, error) {
	s.mu.Lock()
	f := s.files[path]
	if f == nil {
		f = &auditFile{path: path, key: StateKeyFile + path}
		s.files[path] = f
	}
	s.mu.Unlock()
	if f.loaded {
		return f, nil
	}
	var st logtail.State
	if s.cfg.State != nil {
		v, err := s.cfg.State.AgentState(ctx, f.key)
		if err != nil {
			return nil, fmt.Errorf("reading the saved position: %w", err)
		}
		if v != "" {
			if err := json.Unmarshal([]byte(v), &st); err != nil {
				s.log.Warn("audit log files: unreadable saved position; reading the file from its start", "path", path, "err", err)
				st, v = logtail.State{}, ""
			}
		}
		f.saved = v
	}
	f.fl = s.follower(path, st)
	f.loaded = true
	return f, nil
}

func (s *FileSource) follower(path string, st logtail.State) *logtail.Follower {
	return logtail.New(logtail.Config{Path: path, MaxSiblings: s.cfg.MaxSiblings, RotateGrace: s.cfg.RotateGrace,
		MaxLine: s.cfg.MaxLine}, st)
}

func (s *FileSource) pollFile(ctx context.Context, path string, sink Sink) error {
	f, err := s.file(ctx, path)
	if err != nil {
		return err
	}
	b := &Batch{PoolUUID: s.cfg.PoolUUID}
	var l Line
	var counts FileStats
	flush := func() error {
		js, _ := json.Marshal(f.fl.State())
		state := string(js)
		if len(b.Entries) == 0 && b.Bad == 0 && state == f.saved {
			return nil
		}
		b.State = map[string]string{f.key: state}
		if err := sink(ctx, b); err != nil {
			// Start again from what the sink last stored.
			f.fl.Close()
			var st logtail.State
			_ = json.Unmarshal([]byte(f.saved), &st)
			f.fl = s.follower(path, st)
			return fmt.Errorf("sink: %w", err)
		}
		f.saved = state
		s.mu.Lock()
		s.stats.Lines += counts.Lines
		s.stats.Bad += counts.Bad
		s.stats.Other += counts.Other
		if counts.LastBad != "" {
			s.stats.LastBad = counts.LastBad
		}
		s.mu.Unlock()
		counts = FileStats{}
		b = &Batch{PoolUUID: s.cfg.PoolUUID}
		return nil
	}
	err = f.fl.Poll(func(raw []byte) error {
		// The batch holds the lines before this one: flush it with the
		// position just before this line.
		if len(b.Entries)+b.Bad >= s.cfg.BatchLines {
			if err := flush(); err != nil {
				return err
			}
		}
		if len(raw) == 0 {
			return nil
		}
		if err := Parse(unsafe.String(unsafe.SliceData(raw), len(raw)), &l); err != nil {
			if errors.Is(err, ErrNotAudit) {
				counts.Other++ // another daemon's line in a shared file
				return nil
			}
			counts.Bad++
			b.Bad++
			if b.BadSample == nil {
				b.BadSample = fmt.Errorf("%s: %w", path, err)
				counts.LastBad = b.BadSample.Error()
			}
			return nil
		}
		host := s.hostOf(path, &l)
		counts.Lines++
		e := Entry{Line: l.Clone(), HostName: host, HostUUID: s.cfg.Hosts[host], Source: FromFile}
		if e.Line.Host == "" {
			e.Line.Host = host
		}
		b.Entries = append(b.Entries, e)
		return nil
	})
	if err != nil {
		return err
	}
	return flush()
}
