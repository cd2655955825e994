package logtail

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// Config says which file to follow and how.
type Config struct {
	Path string
	// MaxSiblings is how many rotated generations are searched (name.1,
	// name.2.gz, …; default 100, what XenServer's logrotate keeps).
	MaxSiblings int
	// RotateGrace is how long a renamed file is still read before the new
	// one: rsyslog appends to the old inode until logrotate's HUP reaches
	// it (default 2 s).
	RotateGrace time.Duration
	// MaxLine: longer lines are skipped and counted (default 1 MiB).
	MaxLine int
}

// Segment is one content stream (one file generation) of the path.
type Segment struct {
	ID    Identity `json:"id"`
	Done  int64    `json:"done"` // bytes consumed (whole lines only)
	Final bool     `json:"final,omitempty"`
}

// State is what to persist to resume without re-reading or skipping.
type State struct {
	Lines    int64     `json:"lines"` // lines consumed over the path's life
	Segments []Segment `json:"segments"`
}

// Stats counts what a Follower met.
type Stats struct {
	Lines, Bytes, Rotations, Overlong, Missing, Lost int64
}

// Follower follows one path across rename rotation (with a grace period),
// copytruncate, and gzip-compressed generations, delivering whole lines
// once. Polling, not inotify: inotify sees nothing on NFS, the usual way
// host logs are collected.
type Follower struct {
	cfg       Config
	st        State
	f         *os.File // the live segment, while it is the path's file
	loaded    bool
	renamedAt time.Time
	skipping  bool
	buf       []byte
	stats     Stats
}

// New returns a Follower resuming from st (the zero State: from the start).
func New(cfg Config, st State) *Follower {
	if cfg.MaxSiblings <= 0 {
		cfg.MaxSiblings = 100
	}
	if cfg.RotateGrace <= 0 {
		cfg.RotateGrace = 2 * time.Second
	}
	if cfg.MaxLine <= 0 {
		cfg.MaxLine = 1 << 20
	}
	st.Segments = append([]Segment(nil), st.Segments...)
	return &Follower{cfg: cfg, st: st, buf: make([]byte, 64<<10)}
}

// State returns the position to persist (a copy).
func (f *Follower) State() State {
	s := f.st
	s.Segments = append([]Segment(nil), f.st.Segments...)
	return s
}

// Stats returns the counters.
func (f *Follower) Stats() Stats { return f.stats }

// Close releases the open file; a later Poll finds it again.
func (f *Follower) Close() {
	if f.f != nil {
		f.f.Close()
		f.f = nil
	}
}

// LineFunc receives one line without its newline; the slice is valid only
// during the call. An error stops the poll before that line.
type LineFunc func(line []byte) error

func (f *Follower) current() *Segment {
	if n := len(f.st.Segments); n > 0 {
		return &f.st.Segments[n-1]
	}
	return nil
}

// Poll reads what the file gained and follows a rotation.
func (f *Follower) Poll(fn LineFunc) error {
	if !f.loaded {
		f.loaded = true
		if len(f.st.Segments) > 0 {
			return f.resume(fn)
		}
	}
	cur := f.current()
	if cur == nil {
		return f.openNew(fn, 0)
	}
	if f.f == nil {
		if cur.Final {
			_, gen := f.locate(cur.ID, false)
			return f.openNew(fn, max(gen, 0))
		}
		switch c, gen := f.locate(cur.ID, false); {
		case gen == 0:
			fh, err := os.Open(c)
			if err != nil {
				return err
			}
			f.f = fh
		case gen > 0:
			cur.Final = true
			if err := f.readFinal(fn, cur, c); err != nil {
				return err
			}
			return f.openNew(fn, gen)
		default:
			if _, err := os.Stat(f.cfg.Path); err != nil {
				f.stats.Missing++
				return nil
			}
			f.stats.Lost++ // the generation we were reading is gone
			cur.Final = true
			return f.openNew(fn, 0)
		}
	}
	if err := f.readFrom(fn, cur, f.f, false); err != nil {
		return err
	}
	fi, err := os.Stat(f.cfg.Path)
	if err != nil {
		f.stats.Missing++
		return nil
	}
	dev, ino := StatID(fi)
	switch {
	case dev != cur.ID.Dev || ino != cur.ID.Ino:
		if f.renamedAt.IsZero() {
			f.renamedAt = time.Now()
		}
		if time.Since(f.renamedAt) < f.cfg.RotateGrace {
			return nil
		}
		f.renamedAt = time.Time{}
		f.stats.Rotations++
		if err := f.readFrom(fn, cur, f.f, true); err != nil {
			return err
		}
		f.Close()
		cur.Final = true
		_, gen := f.locate(cur.ID, false)
		return f.openNew(fn, max(gen, 0))
	case fi.Size() < cur.Done || !SameContent(f.cfg.Path, cur.ID):
		// copytruncate (or rewritten in place): the copy holds the lines
		// between our offset and the truncation.
		f.stats.Rotations++
		f.Close()
		if c, gen := f.locate(cur.ID, true); gen > 0 {
			if err := f.readFinal(fn, cur, c); err != nil {
				return err
			}
		}
		cur.Final = true
		return f.openNew(fn, 0)
	}
	return nil
}

func (f *Follower) sibling(i int) []string {
	if i == 0 {
		return []string{f.cfg.Path}
	}
	n := f.cfg.Path + "." + strconv.Itoa(i)
	return []string{n, n + ".gz"}
}

// locate finds where a segment's content lives now: the path or a rotated
// sibling, and its generation (0 = the path, -1 = nowhere).
func (f *Follower) locate(id Identity, byContent bool) (string, int) {
	if c, gen := f.locate1(id, byContent); gen >= 0 || byContent {
		return c, gen
	}
	if id.FPLen < MinFP {
		return "", -1
	}
	return f.locate1(id, true) // a copy: new inode, same first bytes
}

func (f *Follower) locate1(id Identity, byContent bool) (string, int) {
	if byContent && id.FPLen < MinFP {
		return "", -1
	}
	for i := 0; i <= f.cfg.MaxSiblings; i++ {
		for _, c := range f.sibling(i) {
			fi, err := os.Stat(c)
			if err != nil {
				continue
			}
			if filepath.Ext(c) != ".gz" && !byContent {
				if dev, ino := StatID(fi); id.Ino != 0 && (dev != id.Dev || ino != id.Ino) {
					continue
				}
			}
			if SameContent(c, id) {
				return c, i
			}
		}
	}
	return "", -1
}

// resume re-finds the saved segments after a restart and reads what each
// gained since.
func (f *Follower) resume(fn LineFunc) error {
	segs := f.st.Segments
	f.st.Segments = nil
	last := 0
	for i := range segs {
		s := segs[i]
		c, gen := f.locate(s.ID, false)
		if gen < 0 {
			f.stats.Lost++
			continue
		}
		f.st.Segments = append(f.st.Segments, s)
		cur := f.current()
		if gen == 0 && i == len(segs)-1 && !s.Final {
			fh, err := os.Open(c)
			if err != nil {
				return err
			}
			f.f = fh
			return f.readFrom(fn, cur, fh, false)
		}
		wasFinal := cur.Final
		cur.Final = true
		if err := f.readFinal(fn, cur, c); err != nil {
			cur.Final = wasFinal
			return err
		}
		last = gen
	}
	return f.openNew(fn, last)
}

// openNew reads the generations newer than gen (gen-1 … 1) as finished
// files, then opens the path as the live segment.
func (f *Follower) openNew(fn LineFunc, gen int) error {
	for g := gen - 1; g >= 1; g-- {
		for _, c := range f.sibling(g) {
			if _, err := os.Stat(c); err != nil {
				continue
			}
			s, err := newSegment(c)
			if err != nil {
				return err
			}
			s.Final = true
			f.st.Segments = append(f.st.Segments, s)
			if err := f.readFinal(fn, f.current(), c); err != nil {
				return err
			}
			break
		}
	}
	fh, err := os.Open(f.cfg.Path)
	if err != nil {
		f.stats.Missing++
		return nil
	}
	s, err := newSegment(f.cfg.Path)
	if err != nil {
		fh.Close()
		return err
	}
	f.st.Segments = append(f.st.Segments, s)
	f.f, f.skipping = fh, false
	f.trim()
	return f.readFrom(fn, f.current(), fh, false)
}

// trim forgets finished segments before the live one.
func (f *Follower) trim() {
	if n := len(f.st.Segments); n > 1 {
		f.st.Segments = append(f.st.Segments[:0:0], f.st.Segments[n-1])
	}
}

func newSegment(path string) (Segment, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return Segment{}, err
	}
	var s Segment
	if filepath.Ext(path) != ".gz" {
		s.ID.Dev, s.ID.Ino = StatID(fi)
	}
	rc, err := OpenContent(path)
	if err != nil {
		return Segment{}, err
	}
	defer rc.Close()
	s.ID.FPLen, s.ID.FP = Fingerprint(rc, FPBytes)
	return s, nil
}

// readFinal reads a finished generation (plain or gzip) from the segment's
// offset to its end, the last partial line included.
func (f *Follower) readFinal(fn LineFunc, s *Segment, path string) error {
	if filepath.Ext(path) != ".gz" {
		fh, err := os.Open(path)
		if err != nil {
			return err
		}
		defer fh.Close()
		return f.readFrom(fn, s, fh, true)
	}
	rc, err := OpenContent(path)
	if err != nil {
		return err
	}
	defer rc.Close()
	br := bufio.NewReaderSize(rc, max(64<<10, f.cfg.MaxLine+1))
	if _, err := io.CopyN(io.Discard, br, s.Done); err != nil {
		return fmt.Errorf("%s: shorter than the saved offset: %w", path, err)
	}
	pos := s.Done
	skipping := false
	for {
		b, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) || len(bytes.TrimSuffix(b, []byte("\n"))) > f.cfg.MaxLine {
			if !skipping {
				f.stats.Overlong++
			}
			skipping = len(b) == 0 || b[len(b)-1] != '\n'
			pos += int64(len(b))
			s.Done = pos
			continue
		}
		if len(b) > 0 {
			end := pos + int64(len(b))
			if skipping {
				skipping = false
			} else if ferr := f.deliver(fn, s, bytes.TrimSuffix(b, []byte("\n")), end); ferr != nil {
				return ferr
			}
			pos = end
			s.Done = pos
		}
		if err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}

// readFrom reads a plain file from the segment's offset: whole lines only
// unless final (the writer is gone: its last partial line is all there is).
func (f *Follower) readFrom(fn LineFunc, s *Segment, fh *os.File, final bool) error {
	buf := f.buf
	pos := s.Done
	for {
		n, err := fh.ReadAt(buf, pos)
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
			if f.skipping {
				f.skipping = false
				s.Done = end
			} else if i > f.cfg.MaxLine {
				f.stats.Overlong++
				s.Done = end
			} else if ferr := f.deliver(fn, s, data[used:used+i], end); ferr != nil {
				return ferr
			}
			used += i + 1
		}
		if used == 0 && n == len(buf) {
			if len(buf) <= f.cfg.MaxLine {
				buf = make([]byte, min(2*len(buf), f.cfg.MaxLine+1)) // a long line: grow, bounded
				continue
			}
			if !f.skipping {
				f.stats.Overlong++
				f.skipping = true
			}
			pos += int64(n)
			s.Done = pos
			continue
		}
		pos += int64(used)
		if !final && s.ID.FPLen < FPBytes && pos > int64(s.ID.FPLen) {
			// A young file: widen its fingerprint as it grows, so that it
			// can be told apart once rotated.
			if k, fp := Fingerprint(io.NewSectionReader(fh, 0, FPBytes), FPBytes); k > s.ID.FPLen {
				s.ID.FPLen, s.ID.FP = k, fp
			}
		}
		if n < len(buf) || n == 0 {
			if final && used < n && !f.skipping {
				if ferr := f.deliver(fn, s, data[used:n], pos+int64(n-used)); ferr != nil {
					return ferr
				}
			}
			f.skipping = false
			return nil
		}
	}
}

func (f *Follower) deliver(fn LineFunc, s *Segment, line []byte, end int64) error {
	if err := fn(line); err != nil {
		return err
	}
	f.stats.Lines++
	f.stats.Bytes += end - s.Done
	f.st.Lines++
	s.Done = end
	return nil
}
