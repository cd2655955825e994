package logsource

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// StateKeyPrefix prefixes the agent_state key of each followed path.
const StateKeyPrefix = "logsource.file:"

// TailConfig says which files to follow.
type TailConfig struct {
	// Glob selects the files, one per host, e.g.
	// /var/log/hosts/*/xensource.log (collected over NFS or by a syslog
	// server). Rotated siblings (name.1, name.2.gz, …) are found beside
	// each file.
	Glob string
	// HostPattern is a regular expression applied to a file's path; its
	// first group is the host name. Default: the parent directory's name.
	// "line" takes the host from each line's syslog host field instead
	// (one collector file for several hosts).
	HostPattern string
	// Poll is how often files are checked. Polling, not inotify: inotify
	// sees nothing on NFS, the usual way host logs are collected. Default 1s.
	Poll time.Duration
	// MaxSiblings is how many rotated generations are searched (default
	// 100: XenServer's logrotate keeps xensource.log.1 … .100.gz).
	MaxSiblings int
	// RotateGrace is how long a renamed file is still read before the new
	// one: rsyslog appends to xensource.log.1 until logrotate's HUP reaches
	// it (default 2s).
	RotateGrace time.Duration
}

// Tailer follows the xensource.log files of a pool's hosts and feeds an
// Engine. Each file's identity, offset and restart point are committed in
// the same store transaction as the records derived from its lines.
type Tailer struct {
	cfg    TailConfig
	e      *Engine
	re     *regexp.Regexp
	files  map[string]*follower
	buf    []byte
	sinceC int64
	seq    uint64
	missed map[string]bool
	// watch is when the log source first read these files (persisted under
	// WatchKey): a path first seen later is new since then, and so are its
	// rotated generations written since (a file rotated before the tailer
	// first saw it, or while the agent was dead). first: this process is
	// the first ever, whose start is the watch.
	watch                 time.Time
	watchLoaded, watchNew bool
	first                 bool
}

// WatchKey is the agent_state key of when the tailer first read its files.
const WatchKey = "logsource.watch"

// segment is one file content stream (one inode generation) of a path.
type segment struct {
	ID    identity `json:"id"`
	Safe  int64    `json:"safe"` // restart here: before every line of a task not yet committed
	Done  int64    `json:"done"` // bytes consumed (whole lines only)
	Final bool     `json:"final,omitempty"`
	at    string   // where it was last found
	fed   int64    // lines before this offset went to the deriver in this process (never twice)
	seq   uint64   // order of appearance in this process
}

type fileState struct {
	Lines    int64      `json:"lines"` // lines consumed over the path's life
	Segments []*segment `json:"segments"`
}

type follower struct {
	path, host, key string
	st              fileState
	f               *os.File // current segment, open while it is the live file
	skipping        bool
	loaded          bool
	fresh           bool      // no saved state, and the tailer watched before
	renamedAt       time.Time // when path first named another inode
	dirty           bool
}

// NewTailer prepares a tailer; Run follows the files.
func NewTailer(e *Engine, cfg TailConfig) (*Tailer, error) {
	if cfg.Glob == "" {
		return nil, errors.New("logsource: no file glob")
	}
	if _, err := filepath.Match(cfg.Glob, ""); err != nil {
		return nil, fmt.Errorf("logsource: bad glob %q: %w", cfg.Glob, err)
	}
	if cfg.Poll <= 0 {
		cfg.Poll = time.Second
	}
	if cfg.MaxSiblings <= 0 {
		cfg.MaxSiblings = 100
	}
	if cfg.RotateGrace <= 0 {
		cfg.RotateGrace = 2 * time.Second
	}
	e.merge = true
	t := &Tailer{cfg: cfg, e: e, files: map[string]*follower{}, buf: make([]byte, 256<<10), missed: map[string]bool{}}
	e.positions = t.positions
	switch cfg.HostPattern {
	case "":
		t.re = regexp.MustCompile(`([^/]+)/[^/]+$`)
	case "line":
	default:
		re, err := regexp.Compile(cfg.HostPattern)
		if err != nil {
			return nil, fmt.Errorf("logsource: host pattern: %w", err)
		}
		if re.NumSubexp() < 1 {
			return nil, fmt.Errorf("logsource: host pattern %q has no group for the host name", cfg.HostPattern)
		}
		t.re = re
	}
	return t, nil
}

// HostOf returns the host name the pattern gives path ("" for "line").
func (t *Tailer) HostOf(path string) string {
	if t.re == nil {
		return ""
	}
	m := t.re.FindStringSubmatch(path)
	if len(m) < 2 {
		return filepath.Base(filepath.Dir(path))
	}
	return m[1]
}

// Run polls until ctx ends.
func (t *Tailer) Run(ctx context.Context) error {
	tick := time.NewTicker(t.cfg.Poll)
	defer tick.Stop()
	defer t.close()
	for {
		if err := t.Poll(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			t.e.log.Warn("log source: poll failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func (t *Tailer) close() {
	for _, fl := range t.files {
		if fl.f != nil {
			fl.f.Close()
			fl.f = nil
		}
	}
}

// Poll reads what the files gained since the last call and commits.
func (t *Tailer) Poll(ctx context.Context) error {
	paths, _ := filepath.Glob(t.cfg.Glob)
	// A log renamed away and not yet re-created still has unread lines and
	// open tasks in its rotated generations: follow it by its siblings too.
	rotated, _ := filepath.Glob(t.cfg.Glob + ".*")
	for _, r := range rotated {
		b := strings.TrimSuffix(r, ".gz")
		if i := strings.LastIndexByte(b, '.'); i > 0 {
			if _, err := strconv.Atoi(b[i+1:]); err == nil {
				if ok, _ := filepath.Match(t.cfg.Glob, b[:i]); ok {
					paths = append(paths, b[:i])
				}
			}
		}
	}
	for _, p := range paths {
		if _, ok := t.files[p]; !ok {
			t.files[p] = &follower{path: p, host: t.HostOf(p), key: StateKeyPrefix + p}
		}
	}
	keys := make([]string, 0, len(t.files))
	for p := range t.files {
		keys = append(keys, p)
	}
	sort.Strings(keys)
	e := t.e
	e.mu.Lock()
	defer e.mu.Unlock()
	if !t.watchLoaded && e.store != nil {
		if err := t.loadWatch(ctx); err != nil {
			return err
		}
	}
	for _, p := range keys {
		if err := t.pollFile(ctx, t.files[p]); err != nil {
			e.log.Warn("log source: file", "path", p, "err", err)
		}
	}
	e.expire(false)
	return t.commitLocked(ctx)
}

func (t *Tailer) commitLocked(ctx context.Context) error {
	t.sinceC = 0
	err := t.e.commit(ctx, func(open map[string]*track, gone map[*track]bool) map[string]string {
		kv := t.states(open, gone)
		if t.watchNew {
			if kv == nil {
				kv = map[string]string{}
			}
			kv[WatchKey] = t.watch.UTC().Format(time.RFC3339Nano)
		}
		return kv
	})
	if err == nil {
		t.watchNew = false
	}
	return err
}

// loadWatch reads when the tailer first watched, or makes this the first.
func (t *Tailer) loadWatch(ctx context.Context) error {
	v, err := t.e.store.AgentState(ctx, WatchKey)
	if err != nil {
		return err
	}
	t.watchLoaded = true
	if w, perr := time.Parse(time.RFC3339Nano, v); v != "" && perr == nil {
		t.watch = w
		return nil
	}
	t.watch, t.watchNew, t.first = time.Now(), true, true
	return nil
}

// newGenerations is the oldest rotated generation of a path first seen
// that was written since the tailer began watching (0: none): those lines
// are new to it, as the live file's are.
func (t *Tailer) newGenerations(fl *follower) int {
	oldest := 0
	for i := 1; i <= t.cfg.MaxSiblings; i++ {
		found := false
		for _, c := range t.sibling(fl.path, i) {
			if fi, err := os.Stat(c); err == nil {
				found = true
				if fi.ModTime().Before(t.watch) {
					return oldest
				}
				oldest = i
				break
			}
		}
		if !found {
			return oldest
		}
	}
	return oldest
}

// states computes each dirty file's persisted state: restart points are
// pulled back to the first line of every task still open.
func (t *Tailer) states(open map[string]*track, gone map[*track]bool) map[string]string {
	kv := map[string]string{}
	for _, fl := range t.files {
		changed := fl.dirty
		var segs []*segment
		for i, s := range fl.st.Segments {
			safe := s.Done
			for _, tr := range open {
				if gone[tr] {
					continue
				}
				off, ok := tr.first[s]
				if !ok {
					off, ok = tr.start[s]
				}
				if !ok && s.seq > tr.born {
					off, ok = 0, true
				}
				if ok && off < safe {
					safe = off
				}
			}
			if safe != s.Safe {
				s.Safe, changed = safe, true
			}
			// A finished older generation with nothing open is forgotten.
			if i < len(fl.st.Segments)-1 && s.Final && s.Safe == s.Done {
				changed = true
				continue
			}
			segs = append(segs, s)
		}
		fl.st.Segments = segs
		if changed {
			js, _ := json.Marshal(fl.st)
			kv[fl.key] = string(js)
			fl.dirty = false
		}
	}
	return kv
}

func (t *Tailer) sibling(path string, i int) []string {
	if i == 0 {
		return []string{path}
	}
	n := path + "." + strconv.Itoa(i)
	return []string{n, n + ".gz"}
}

// locate finds where a segment's content lives now: the path itself or a
// rotated sibling. It returns the file and its generation (0 = path).
func (t *Tailer) locate(fl *follower, id identity, byContent bool) (string, int) {
	if c, gen := t.locate1(fl, id, byContent); gen >= 0 || byContent {
		return c, gen
	}
	if id.FPLen < minFP {
		return "", -1
	}
	// A copytruncate copy has a new inode but the same first bytes.
	return t.locate1(fl, id, true)
}

func (t *Tailer) locate1(fl *follower, id identity, byContent bool) (string, int) {
	if byContent && id.FPLen < minFP {
		// Too few bytes to tell files apart (every line starts alike).
		return "", -1
	}
	for i := 0; i <= t.cfg.MaxSiblings; i++ {
		for _, c := range t.sibling(fl.path, i) {
			fi, err := os.Stat(c)
			if err != nil {
				continue
			}
			if filepath.Ext(c) != ".gz" && !byContent {
				if dev, ino := statID(fi); id.Ino != 0 && (dev != id.Dev || ino != id.Ino) {
					continue
				}
			}
			if sameContent(c, id) {
				return c, i
			}
		}
	}
	return "", -1
}

func (t *Tailer) pollFile(ctx context.Context, fl *follower) error {
	e := t.e
	if !fl.loaded {
		v, err := e.store.AgentState(ctx, fl.key)
		if err != nil {
			return err
		}
		if v != "" {
			if err := json.Unmarshal([]byte(v), &fl.st); err != nil {
				e.log.Warn("log source: unreadable saved state; reading the file from its start", "path", fl.path, "err", err)
				fl.st = fileState{}
			}
		}
		fl.loaded = true
		fl.fresh = v == "" && !t.first && !t.watch.IsZero()
		for _, s := range fl.st.Segments {
			t.number(s)
		}
		if err := t.resume(ctx, fl); err != nil {
			return err
		}
	}
	cur := fl.current()
	if cur != nil && !cur.Final && fl.f == nil {
		// The live file was closed (Run ended, or it could not be opened):
		// find it again rather than start over.
		switch c, gen := t.locate(fl, cur.ID, false); {
		case gen == 0:
			f, err := os.Open(c)
			if err != nil {
				return err
			}
			fl.f = f
		case gen > 0:
			cur.Final = true
			if err := t.readFinal(ctx, fl, cur, c); err != nil {
				return err
			}
			return t.openNew(ctx, fl, gen)
		default:
			if _, err := os.Stat(fl.path); err != nil {
				t.e.stats.Missing++
				return nil
			}
			t.e.log.Warn("log source: the file followed is gone; its unread lines are lost", "path", fl.path, "offset", cur.Done)
			cur.Final = true
		}
	}
	if cur == nil {
		gen := 0
		if fl.fresh {
			// First seen after the tailer began watching: its rotated
			// generations written since are new lines too.
			gen = t.newGenerations(fl) + 1
			fl.fresh = false
		}
		return t.openNew(ctx, fl, gen)
	}
	if fl.f == nil {
		// The last file read is finished (rotated away): read the
		// generations that came after it, then the live file.
		_, gen := t.locate(fl, cur.ID, false)
		return t.openNew(ctx, fl, max(gen, 0))
	}
	// Read what the live file gained, then look at what path names now.
	if err := t.readPlain(ctx, fl, cur, fl.f, false); err != nil {
		return err
	}
	fi, err := os.Stat(fl.path)
	if err != nil {
		if !t.missed[fl.path] {
			e.log.Warn("log source: file or directory gone; waiting for it", "path", fl.path, "err", err)
			t.missed[fl.path] = true
		}
		e.stats.Missing++
		return nil
	}
	if t.missed[fl.path] {
		e.log.Info("log source: file is back", "path", fl.path)
		delete(t.missed, fl.path)
	}
	dev, ino := statID(fi)
	switch {
	case dev != cur.ID.Dev || ino != cur.ID.Ino:
		// Renamed away (rotation) or replaced: finish the old inode, then
		// every generation between it and the new file — after a grace
		// period in which the writer may still append to the old inode.
		if fl.renamedAt.IsZero() {
			fl.renamedAt = time.Now()
		}
		if time.Since(fl.renamedAt) < t.cfg.RotateGrace {
			return nil
		}
		fl.renamedAt = time.Time{}
		e.stats.Rotations++
		e.log.Info("log source: rotation", "path", fl.path)
		if err := t.readPlain(ctx, fl, cur, fl.f, true); err != nil {
			return err
		}
		fl.f.Close()
		fl.f = nil
		cur.Final = true
		_, gen := t.locate(fl, cur.ID, false)
		return t.openNew(ctx, fl, gen)
	case fi.Size() < cur.Done || !sameContent(fl.path, cur.ID):
		// copytruncate (or rewritten in place): the copy holds the lines
		// between our offset and the truncation.
		e.stats.Rotations++
		e.log.Info("log source: truncated or rewritten in place", "path", fl.path, "size", fi.Size(), "offset", cur.Done)
		fl.f.Close()
		fl.f = nil
		if c, gen := t.locate(fl, cur.ID, true); gen > 0 {
			if err := t.readFinal(ctx, fl, cur, c); err != nil {
				e.log.Warn("log source: reading the truncated file's copy", "path", c, "err", err)
			}
		}
		cur.Final = true
		return t.openNew(ctx, fl, 0)
	case cur.ID.FPLen < fpBytes && fi.Size() > int64(cur.ID.FPLen):
		// A young file: widen its fingerprint as it grows.
		if n, fp := fingerprint(io.NewSectionReader(fl.f, 0, fpBytes), fpBytes); n > cur.ID.FPLen {
			cur.ID.FPLen, cur.ID.FP, fl.dirty = n, fp, true
		}
	}
	return nil
}

func (fl *follower) current() *segment {
	if n := len(fl.st.Segments); n > 0 {
		return fl.st.Segments[n-1]
	}
	return nil
}

// resume re-finds the saved segments after a restart, re-reads each from its
// restart point (rebuilding open tasks; those lines are not counted again)
// and reads what was not read before.
func (t *Tailer) resume(ctx context.Context, fl *follower) error {
	if len(fl.st.Segments) == 0 {
		return nil
	}
	last := -1
	var keep []*segment
	for i, s := range fl.st.Segments {
		c, gen := t.locate(fl, s.ID, false)
		t.e.log.Debug("log source: resume", "path", fl.path, "segment", i, "found", c, "gen", gen, "safe", s.Safe, "done", s.Done, "fp_len", s.ID.FPLen, "ino", s.ID.Ino)
		if gen < 0 {
			t.e.log.Warn("log source: a saved file generation is gone; its unread lines are lost", "path", fl.path, "offset", s.Done)
			continue
		}
		s.at = c
		keep = append(keep, s)
		if gen == 0 && i == len(fl.st.Segments)-1 {
			fl.st.Segments = keep
			f, err := os.Open(c)
			if err != nil {
				return err
			}
			fl.f = f
			if err := t.readFrom(ctx, fl, s, f, s.Safe, false); err != nil {
				return err
			}
			return nil
		}
		s.Final = true
		if err := t.readFinal(ctx, fl, s, c); err != nil {
			return err
		}
		last = gen
	}
	fl.st.Segments = keep
	fl.dirty = true
	if last < 0 {
		last = 0
	}
	return t.openNew(ctx, fl, last)
}

// openNew reads the generations newer than gen (gen-1 … 1) as finished
// files and opens path itself as the live segment.
func (t *Tailer) openNew(ctx context.Context, fl *follower, gen int) error {
	for g := gen - 1; g >= 1; g-- {
		for _, c := range t.sibling(fl.path, g) {
			if _, err := os.Stat(c); err != nil {
				continue
			}
			s, err := newSegment(c)
			if err != nil {
				return err
			}
			s.Final = true
			t.number(s)
			fl.st.Segments = append(fl.st.Segments, s)
			fl.dirty = true
			if err := t.readFinal(ctx, fl, s, c); err != nil {
				return err
			}
			break
		}
	}
	f, err := os.Open(fl.path)
	if err != nil {
		if !t.missed[fl.path] {
			t.e.log.Warn("log source: cannot open", "path", fl.path, "err", err)
			t.missed[fl.path] = true
		}
		t.e.stats.Missing++
		return nil
	}
	s, err := newSegment(fl.path)
	if err != nil {
		f.Close()
		return err
	}
	t.number(s)
	fl.st.Segments = append(fl.st.Segments, s)
	fl.f, fl.skipping, fl.dirty = f, false, true
	return t.readPlain(ctx, fl, s, f, false)
}

func newSegment(path string) (*segment, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	s := &segment{at: path}
	if filepath.Ext(path) != ".gz" {
		s.ID.Dev, s.ID.Ino = statID(fi)
	}
	rc, err := openContent(path)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	s.ID.FPLen, s.ID.FP = fingerprint(rc, fpBytes)
	return s, nil
}

// readFinal reads a finished file (a rotated generation, plain or gzip)
// from the segment's restart point to its end, last partial line included.
func (t *Tailer) readFinal(ctx context.Context, fl *follower, s *segment, path string) error {
	if filepath.Ext(path) != ".gz" {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		return t.readFrom(ctx, fl, s, f, s.Safe, true)
	}
	rc, err := openContent(path)
	if err != nil {
		return err
	}
	defer rc.Close()
	br := bufio.NewReaderSize(rc, t.e.cfg.MaxLine)
	if _, err := io.CopyN(io.Discard, br, s.Safe); err != nil {
		return fmt.Errorf("%s: shorter than the saved offset: %w", path, err)
	}
	pos := s.Safe
	skipping := false
	for {
		b, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			if !skipping {
				t.overlong(s, pos)
			}
			skipping = true
			pos += int64(len(b))
			t.advance(fl, s, pos)
			continue
		}
		if len(b) > 0 {
			end := pos + int64(len(b))
			if skipping {
				skipping = false
				t.advance(fl, s, end)
			} else {
				t.line(ctx, fl, s, bytes.TrimSuffix(b, []byte("\n")), pos, end)
			}
			pos = end
		}
		if err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}

func (t *Tailer) readPlain(ctx context.Context, fl *follower, s *segment, f *os.File, final bool) error {
	return t.readFrom(ctx, fl, s, f, s.Done, final)
}

// readFrom reads f from pos: lines before s.Done only rebuild state, later
// ones are new. Only whole lines are consumed unless final.
func (t *Tailer) readFrom(ctx context.Context, fl *follower, s *segment, f *os.File, pos int64, final bool) error {
	buf := t.buf
	max := t.e.cfg.MaxLine
	for {
		n, err := f.ReadAt(buf, pos)
		if err != nil && err != io.EOF {
			return err
		}
		data := buf[:n]
		used := 0
		for {
			i := bytes.IndexByte(data[used:], '\n')
			if i < 0 {
				break
			}
			end := pos + int64(used+i+1)
			if fl.skipping {
				fl.skipping = false
				t.advance(fl, s, end)
			} else {
				t.line(ctx, fl, s, data[used:used+i], pos+int64(used), end)
			}
			used += i + 1
		}
		if used == 0 && n == len(buf) {
			if len(buf) <= max {
				// A long line: grow the buffer up to the cap (bounded memory).
				nb := min(2*len(buf), max+1)
				buf = make([]byte, nb)
				continue
			}
			if !fl.skipping {
				t.overlong(s, pos)
				fl.skipping = true
			}
			pos += int64(n)
			t.advance(fl, s, pos)
			continue
		}
		if fl.skipping && used == 0 && n > 0 {
			pos += int64(n)
			t.advance(fl, s, pos)
			continue
		}
		pos += int64(used)
		if !final && s.ID.FPLen < fpBytes && pos > int64(s.ID.FPLen) {
			// A young file: widen its fingerprint as it grows, so that it
			// can be told apart once rotated.
			if k, fp := fingerprint(io.NewSectionReader(f, 0, fpBytes), fpBytes); k > s.ID.FPLen {
				s.ID.FPLen, s.ID.FP, fl.dirty = k, fp, true
			}
		}
		if n < len(buf) || n == 0 {
			if final && used < n && !fl.skipping {
				// The writer is gone: its last partial line is all there is.
				t.line(ctx, fl, s, data[used:n], pos, pos+int64(n-used))
			}
			fl.skipping = false
			if len(buf) > len(t.buf) {
				buf = t.buf
			}
			return nil
		}
		if t.sinceC > 20000 {
			if err := t.commitLocked(ctx); err != nil {
				return err
			}
		}
	}
}

func (t *Tailer) overlong(s *segment, pos int64) {
	if pos >= s.Done {
		t.e.stats.Overlong++
		t.e.log.Warn("log source: line over the size cap skipped", "file", s.at, "offset", pos, "cap", t.e.cfg.MaxLine)
	}
}

// advance moves the offset over skipped bytes.
func (t *Tailer) advance(fl *follower, s *segment, end int64) {
	if end > s.Done {
		s.Done, fl.dirty = end, true
	}
}

// line feeds one line that starts at off and ends (newline included) at end.
func (t *Tailer) line(ctx context.Context, fl *follower, s *segment, b []byte, off, end int64) {
	e := t.e
	if end <= s.fed {
		return // re-read (a copytruncate copy) of lines this process already fed
	}
	s.fed = end
	e.cur, e.curOff = s, off
	if end <= s.Done {
		e.replay = true
		e.stats.Replayed++
		e.feedLine(fl.path, fl.host, b)
		e.replay = false
	} else {
		e.stats.Lines++
		e.stats.Bytes += end - off
		fl.st.Lines++
		s.Done, fl.dirty = end, true
		t.sinceC++
		e.feedLine(fl.path, fl.host, b)
	}
	e.cur = nil
}

// FileLines returns how many lines the tailer consumed from path over its
// life (persisted; for tests and status).
func FileLines(ctx context.Context, st interface {
	AgentState(context.Context, string) (string, error)
}, path string) (int64, error) {
	v, err := st.AgentState(ctx, StateKeyPrefix+path)
	if err != nil || v == "" {
		return 0, err
	}
	var fs fileState
	if err := json.Unmarshal([]byte(v), &fs); err != nil {
		return 0, err
	}
	return fs.Lines, nil
}

// positions is where each live file stands (for a new track).
func (t *Tailer) positions() (map[*segment]int64, uint64) {
	m := make(map[*segment]int64, len(t.files))
	for _, fl := range t.files {
		if s := fl.current(); s != nil && !s.Final {
			m[s] = s.fed
		}
	}
	return m, t.seq
}

func (t *Tailer) number(s *segment) {
	t.seq++
	s.seq = t.seq
}
