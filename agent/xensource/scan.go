package xensource

import (
	"bufio"
	"errors"
	"io"
	"time"
)

// MaxLineBytes is the default cap on a line's length. rsyslog truncates
// messages at 8 KiB by default; anything far longer is corruption.
const MaxLineBytes = 1 << 20

// Stats counts what a Scanner read.
type Stats struct {
	Lines    int64     // lines read (including bad and overlong ones)
	Bytes    int64     // bytes read
	Entries  int64     // entries emitted
	Overlong int64     // lines longer than MaxLine, skipped
	Bad      [5]int64  // rejected lines by ErrKind (index = kind)
	LastBad  error     // the last rejection, for a log line
	LastTime time.Time // time of the last good line
	_        [0]func() // not comparable
}

// BadTotal is the number of lines rejected for any reason (not counting
// overlong lines, and not ErrKindHeader lines, which are still emitted).
func (s *Stats) BadTotal() int64 {
	return s.Bad[ErrKindEmpty] + s.Bad[ErrKindTimestamp] + s.Bad[ErrKindHost]
}

// Scanner reads one host's log: it splits lines, parses them, infers the
// year and groups backtraces. It keeps no line after emitting it, so memory
// stays flat whatever the input size.
type Scanner struct {
	Host    string       // the host the log belongs to
	Year    *YearInferer // required
	MaxLine int          // default MaxLineBytes
	Grouper Grouper
	Stats   Stats
}

// NewScanner returns a Scanner for host's log with year inference anchored
// at ref (file mtime or now) in loc.
func NewScanner(host string, ref time.Time, loc *time.Location) *Scanner {
	return &Scanner{Host: host, Year: NewYearInferer(ref, loc)}
}

// Scan reads r to its end and calls emit for every entry (see Grouper.Feed
// for the lifetime of the Entry). A final line without a newline is parsed
// too. Open backtrace blocks are kept for the next Scan; call Flush at the
// very end of input.
func (s *Scanner) Scan(r io.Reader, emit func(*Entry)) error {
	max := s.MaxLine
	if max <= 0 {
		max = MaxLineBytes
	}
	// A line that does not fit the buffer is overlong: skipped and counted.
	br := bufio.NewReaderSize(r, max)
	counted := func(e *Entry) { s.Stats.Entries++; emit(e) }
	skipping := false
	for {
		b, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) || (skipping && len(b) > 0) {
			s.Stats.Bytes += int64(len(b))
			if !skipping {
				skipping = true
				s.Stats.Lines++
				s.Stats.Overlong++
			}
			if err == nil {
				skipping = false
			}
			continue
		}
		if len(b) > 0 {
			s.Stats.Bytes += int64(len(b))
			s.feed(b, counted)
		}
		if err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}

func (s *Scanner) feed(b []byte, emit func(*Entry)) {
	s.Stats.Lines++
	l := s.Grouper.Scratch()
	if err := ParseBytes(b, l); err != nil {
		var pe *ParseError
		if errors.As(err, &pe) {
			s.Stats.Bad[pe.Kind]++
		}
		s.Stats.LastBad = err
		if pe == nil || pe.Kind != ErrKindHeader {
			return
		}
	}
	t := s.Year.Infer(l.Stamp)
	s.Stats.LastTime = t
	s.Grouper.Feed(s.Host, t, l, emit)
}

// Flush emits the backtrace blocks still open.
func (s *Scanner) Flush(emit func(*Entry)) { s.Grouper.Flush(emit) }
