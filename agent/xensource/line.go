package xensource

import (
	"strings"
	"time"
	"unsafe"
)

// Stamp is the syslog envelope's time as written. The traditional rsyslog
// file format has no year and no zone (Year 0, HasZone false); YearInferer
// turns it into a time.Time. RFC 3339 envelopes (a custom rsyslog template
// or a forwarded log) carry both.
type Stamp struct {
	Year    int // 0: not in the line
	Month   time.Month
	Day     int
	Hour    int
	Minute  int
	Second  int
	Nanos   int
	Offset  int  // seconds east of UTC, when HasZone
	HasZone bool // the line named its zone (RFC 3339)
}

// Kind says what the message part of a line turned out to be.
type Kind uint8

// Kinds of lines.
const (
	// KindToolstack: a bracket header [level|field2|thread|task|module] was parsed.
	KindToolstack Kind = iota + 1
	// KindPlain: a valid envelope whose message has no bracket header (python
	// helpers, rsyslogd, unknown daemons).
	KindPlain
	// KindLastRepeated: old rsyslog "last message repeated N times" (no text).
	KindLastRepeated
)

func (k Kind) String() string {
	switch k {
	case KindToolstack:
		return "toolstack"
	case KindPlain:
		return "plain"
	case KindLastRepeated:
		return "last-repeated"
	}
	return "invalid"
}

// Line is one parsed xensource.log line. Parse fills it without allocating:
// every string aliases the input, so a Line from ParseBytes is valid only
// until the caller reuses its buffer (Clone detaches it).
type Line struct {
	Stamp      Stamp
	SyslogHost string // rsyslog's host field: a hint only (reference §2)
	Tag        string // syslog tag as written, without ':' and "[pid]"
	Program    string // Tag's base name: xapi, xenopsd-xc, squeezed, ...
	Kind       Kind
	Repeated   int    // N of "message repeated N times: [ ... ]" (0: not repeated)
	InnerTime  string // optional YYYYMMDDTHH:MM:SS.mmmZ inside the brackets
	Level      string // debug, info, warn, error, critical (trimmed)
	Field2     string // host name (<= 2019), "" or a W3C traceparent (2026+)
	ThreadID   int
	ThreadName string // without the client prefix
	Client     string // "HTTPS 10.0.0.5" from "HTTPS 10.0.0.5->name"
	Task       string // the whole task field
	TaskName   string // Task without its ref
	// TaskRefKind is 'R' (real XenAPI task), 'D' (dummy), 'O' (other) or 0.
	TaskRefKind byte
	TaskShortID string // the 12 characters after "R:"/"D:"/"O:"
	Module      string // the Debug.Make brand: xenops, audit, backtrace, ...
	// Msg is the message as written, still escaped; Message unescapes it.
	Msg string
	raw string
}

// Message returns the message with xapi's \xHH and \\ escapes undone. It
// allocates only when the message holds a backslash.
func (l *Line) Message() string { return Unescape(l.Msg) }

// Raw returns the whole line as given to Parse (trailing newline removed).
func (l *Line) Raw() string { return l.raw }

// Clone returns a copy of l that owns its memory (one allocation).
func (l *Line) Clone() Line {
	c := *l
	own := strings.Clone(l.raw)
	re := func(s string) string {
		if s == "" {
			return ""
		}
		off := int(uintptr(unsafe.Pointer(unsafe.StringData(s))) - uintptr(unsafe.Pointer(unsafe.StringData(l.raw))))
		if off < 0 || off+len(s) > len(l.raw) {
			return strings.Clone(s)
		}
		return own[off : off+len(s)]
	}
	c.raw = own
	c.SyslogHost, c.Tag, c.Program = re(l.SyslogHost), re(l.Tag), re(l.Program)
	c.InnerTime, c.Level, c.Field2 = re(l.InnerTime), re(l.Level), re(l.Field2)
	c.ThreadName, c.Client, c.Task = re(l.ThreadName), re(l.Client), re(l.Task)
	c.TaskName, c.TaskShortID, c.Module, c.Msg = re(l.TaskName), re(l.TaskShortID), re(l.Module), re(l.Msg)
	return c
}

// ParseBytes parses b without copying it: the Line aliases b (see Line).
func ParseBytes(b []byte, l *Line) error {
	return Parse(unsafe.String(unsafe.SliceData(b), len(b)), l)
}

// toolstack lists the programs whose messages always carry the bracket
// header; a header that fails to parse on them is reported as ErrHeader.
var toolstack = map[string]bool{
	"xapi": true, "xenopsd": true, "xenopsd-xc": true, "xenopsd-xenlight": true,
	"xenopsd-simulator": true, "squeezed": true, "xcp-rrdd": true, "xcp-networkd": true,
	"v6d": true, "xapi-guard": true, "xapi-db-process": true, "block_device_io": true,
	"xapi-nbd": true, "xapi-storage-script": true, "message-switch": true,
}

// Parse parses one line (a trailing "\n" or "\r\n" is ignored). On error the
// fields it could read are still set: an ErrHeader line keeps its envelope
// and raw message as a KindPlain line, so nothing accepted is lost.
func Parse(s string, l *Line) error {
	*l = Line{}
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == '\r') {
		s = s[:len(s)-1]
	}
	l.raw = s
	if len(s) == 0 {
		return ErrEmptyLine
	}
	rest, ok := parseStamp(s, &l.Stamp)
	if !ok {
		return ErrBadTimestamp
	}
	sp := strings.IndexByte(rest, ' ')
	if sp <= 0 {
		return ErrNoHost
	}
	l.SyslogHost = rest[:sp]
	rest = rest[sp+1:]
	// The tag is the next word when it ends in ':' (a path or "[pid]" may
	// precede it); otherwise the message starts here (rsyslog took the
	// message's first word as its tag and wrote no colon).
	tok := rest
	if sp = strings.IndexByte(rest, ' '); sp >= 0 {
		tok = rest[:sp]
	}
	if n := len(tok); n > 1 && tok[n-1] == ':' {
		tag := tok[:n-1]
		if i := strings.IndexByte(tag, '['); i > 0 && tag[len(tag)-1] == ']' {
			tag = tag[:i]
		}
		l.Tag = tag
		l.Program = tag[strings.LastIndexByte(tag, '/')+1:]
		if sp >= 0 {
			rest = rest[sp+1:]
		} else {
			rest = ""
		}
	}
	return parseMessage(rest, l)
}

// ParseMessage parses only the message part of a line — what follows
// "tag: " — for callers that received the envelope separately (a syslog
// listener fed by host.syslog_destination). It sets Kind, Repeated, the
// header fields and Msg; the caller sets Stamp, SyslogHost, Tag and Program
// (Program decides whether a bad header is an error, as in Parse).
func ParseMessage(msg string, l *Line) error {
	*l = Line{Stamp: l.Stamp, SyslogHost: l.SyslogHost, Tag: l.Tag, Program: l.Program, raw: msg}
	return parseMessage(msg, l)
}

func parseMessage(msg string, l *Line) error {
	if strings.HasPrefix(msg, "message repeated ") {
		if n, inner, ok := parseRepeated(msg[len("message repeated "):]); ok {
			l.Repeated, msg = n, inner
		}
	} else if strings.HasPrefix(msg, "last message repeated ") {
		if n, tail, ok := parseCount(msg[len("last message repeated "):]); ok && strings.HasPrefix(tail, " time") {
			l.Kind, l.Repeated, l.Msg = KindLastRepeated, n, msg
			return nil
		}
	}
	if len(msg) > 0 && msg[0] == '[' && parseHeader(msg, l) {
		l.Kind = KindToolstack
		return nil
	}
	l.Kind, l.Msg = KindPlain, msg
	if len(msg) > 0 && msg[0] == '[' && toolstack[l.Program] {
		return ErrBadHeader
	}
	return nil
}

func parseRepeated(s string) (int, string, bool) {
	n, s, ok := parseCount(s)
	if !ok || !strings.HasPrefix(s, " times: [") {
		return 0, "", false
	}
	s = strings.TrimPrefix(s[len(" times: ["):], " ")
	if len(s) > 0 && s[len(s)-1] == ']' {
		s = s[:len(s)-1]
	}
	return n, s, true
}

// parseCount reads a decimal count of up to 9 digits.
func parseCount(s string) (int, string, bool) {
	n, i := 0, 0
	for i < len(s) && i < 9 && s[i] >= '0' && s[i] <= '9' {
		n = n*10 + int(s[i]-'0')
		i++
	}
	return n, s[i:], i > 0
}

// parseHeader reads "[<time>|?<level>|<field2>|<tid>[ <name>]|<task>|<module>] msg"
// (format string of ocaml/libs/log/debug.ml, every era of reference §3).
func parseHeader(h string, l *Line) bool {
	p := 1
	if len(h) > p+9 && isDigit(h[p]) && h[p+8] == 'T' {
		i := strings.IndexByte(h[p:], '|')
		if i < 0 || i > 32 {
			return false
		}
		l.InnerTime = h[p : p+i]
		p += i + 1
	}
	for p < len(h) && h[p] == ' ' {
		p++
	}
	q := p
	for q < len(h) && h[q] >= 'a' && h[q] <= 'z' {
		q++
	}
	if q == p || q >= len(h) || h[q] != '|' {
		return false
	}
	l.Level = h[p:q]
	p = q + 1
	i := strings.IndexByte(h[p:], '|')
	if i < 0 {
		return false
	}
	l.Field2 = h[p : p+i]
	p += i + 1
	q = p
	id := 0
	for q < len(h) && isDigit(h[q]) && q-p < 18 {
		id = id*10 + int(h[q]-'0')
		q++
	}
	if q == p || q >= len(h) {
		return false
	}
	l.ThreadID = id
	p = q
	if h[p] == ' ' {
		i = strings.IndexByte(h[p:], '|')
		if i < 0 {
			return false
		}
		name := h[p+1 : p+i]
		if j := strings.Index(name, "->"); j >= 0 {
			l.Client, name = name[:j], name[j+2:]
		}
		l.ThreadName = name
		p += i
	}
	if h[p] != '|' {
		return false
	}
	p++
	// The module ends at the first ']' that is followed by a space or the
	// end and preceded by a plausible module name; the task field (a
	// client-chosen dbg string) may itself hold '|' or ']'.
	for off := p; off < len(h); {
		j := strings.IndexByte(h[off:], ']')
		if j < 0 {
			return false
		}
		e := off + j
		if e+1 == len(h) || h[e+1] == ' ' {
			seg := h[p:e]
			if k := strings.LastIndexByte(seg, '|'); k >= 0 {
				mod := seg[k+1:]
				if mod != "" && strings.IndexByte(mod, ' ') < 0 && strings.IndexByte(mod, ']') < 0 {
					l.Module = mod
					setTask(seg[:k], l)
					if e+2 <= len(h) {
						l.Msg = h[e+2:]
					}
					return true
				}
			}
		}
		off = e + 1
	}
	return false
}

// setTask splits "<name> R:<12 hex>" (Context.make_dbg, Ref.really_pretty_and_small).
func setTask(t string, l *Line) {
	l.Task, l.TaskName = t, t
	n := len(t)
	var ref string
	switch {
	case n >= 15 && t[n-15] == ' ':
		ref = t[n-14:]
		l.TaskName = t[:n-15]
	case n == 14:
		ref = t
		l.TaskName = ""
	default:
		return
	}
	k := ref[0]
	if ref[1] != ':' || (k != 'R' && k != 'D' && k != 'O') {
		l.TaskName = t
		return
	}
	if k != 'O' {
		for i := 2; i < 14; i++ {
			if !isHex(ref[i]) {
				l.TaskName = t
				return
			}
		}
	}
	l.TaskRefKind, l.TaskShortID = k, ref[2:]
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

var months = [...]string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}

// parseStamp reads "Mmm dd HH:MM:SS " or an RFC 3339 time and a space.
func parseStamp(s string, st *Stamp) (string, bool) {
	if len(s) >= 16 && s[3] == ' ' && s[15] == ' ' {
		m := 0
		for i, name := range months {
			if s[0] == name[0] && s[1] == name[1] && s[2] == name[2] {
				m = i + 1
				break
			}
		}
		if m == 0 {
			return "", false
		}
		d := 0
		switch {
		case s[4] == ' ' && isDigit(s[5]):
			d = int(s[5] - '0')
		case isDigit(s[4]) && isDigit(s[5]):
			d = int(s[4]-'0')*10 + int(s[5]-'0')
		default:
			return "", false
		}
		h, ok1 := two(s, 7)
		mi, ok2 := two(s, 10)
		se, ok3 := two(s, 13)
		if s[6] != ' ' || s[9] != ':' || s[12] != ':' || !ok1 || !ok2 || !ok3 ||
			d < 1 || d > 31 || h > 23 || mi > 59 || se > 60 {
			return "", false
		}
		st.Month, st.Day, st.Hour, st.Minute, st.Second = time.Month(m), d, h, mi, se
		return s[16:], true
	}
	return parseRFC3339(s, st)
}

func two(s string, i int) (int, bool) {
	if !isDigit(s[i]) || !isDigit(s[i+1]) {
		return 0, false
	}
	return int(s[i]-'0')*10 + int(s[i+1]-'0'), true
}

// parseRFC3339 reads "YYYY-MM-DDTHH:MM:SS[.frac](Z|±hh:mm) ".
func parseRFC3339(s string, st *Stamp) (string, bool) {
	if len(s) < 21 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' {
		return "", false
	}
	y1, a := two(s, 0)
	y2, b := two(s, 2)
	mo, c := two(s, 5)
	d, e := two(s, 8)
	h, f := two(s, 11)
	mi, g := two(s, 14)
	se, k := two(s, 17)
	if !(a && b && c && d > 0 && e && f && g && k) || mo < 1 || mo > 12 || d > 31 || h > 23 || mi > 59 || se > 60 {
		return "", false
	}
	p := 19
	nanos, scale := 0, 100000000
	if s[p] == '.' {
		p++
		q := p
		for p < len(s) && isDigit(s[p]) {
			if scale > 0 {
				nanos += int(s[p]-'0') * scale
				scale /= 10
			}
			p++
		}
		if p == q {
			return "", false
		}
	}
	if p >= len(s) {
		return "", false
	}
	off := 0
	switch s[p] {
	case 'Z':
		p++
	case '+', '-':
		if p+6 > len(s) || s[p+3] != ':' {
			return "", false
		}
		oh, ok1 := two(s, p+1)
		om, ok2 := two(s, p+4)
		if !ok1 || !ok2 || oh > 23 || om > 59 {
			return "", false
		}
		off = oh*3600 + om*60
		if s[p] == '-' {
			off = -off
		}
		p += 6
	default:
		return "", false
	}
	if p >= len(s) || s[p] != ' ' {
		return "", false
	}
	*st = Stamp{Year: y1*100 + y2, Month: time.Month(mo), Day: d, Hour: h, Minute: mi, Second: se,
		Nanos: nanos, Offset: off, HasZone: true}
	return s[p+1:], true
}
