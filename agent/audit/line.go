package audit

import (
	"crypto/md5"
	"encoding/hex"
	"errors"
	"strings"
	"time"
	"unsafe"

	"github.com/vmlineage/vmlineage/agent/xensource"
)

// Decision is the RBAC verdict of a line.
type Decision uint8

// Decisions.
const (
	Allowed Decision = iota + 1
	Denied
)

func (d Decision) String() string {
	switch d {
	case Allowed:
		return "ALLOWED"
	case Denied:
		return "DENIED"
	}
	return ""
}

// Outcome is the fifth s-expression element.
type Outcome uint8

// Outcomes. NoOutcome is the empty field of a DENIED line.
const (
	NoOutcome Outcome = iota + 1
	OK
	Error
)

func (o Outcome) String() string {
	switch o {
	case NoOutcome:
		return ""
	case OK:
		return "OK"
	case Error:
		return "ERROR"
	}
	return "?"
}

// CallType is API for XenAPI calls, HTTP for http/* handlers.
type CallType uint8

// Call types.
const (
	API CallType = iota + 1
	HTTP
)

func (c CallType) String() string {
	switch c {
	case API:
		return "API"
	case HTTP:
		return "HTTP"
	}
	return ""
}

// Escaping says which layers of escaping a line carried.
type Escaping uint8

// Escaping modes. Since CA-337000 (March 2020) debug.ml escapes the whole
// message (Astring.String.Ascii.escape: '\' → '\\', bytes outside printable
// ASCII → \xHH) on top of the s-expression's own \' and \\; older builds
// write the s-expression escapes only.
const (
	// EscapeAuto picks Outer unless the header's field 2 holds a host name
	// (builds before Sept 2019) or the message has a backslash sequence the
	// outer layer never writes (a lone \' or \c).
	EscapeAuto Escaping = iota
	// EscapeOuter: both layers (XenServer/XCP-ng builds since March 2020).
	EscapeOuter
	// EscapeInner: the s-expression layer only (older builds).
	EscapeInner
)

// Arg is one argument of the call: parameter name, the human value or the
// object's name_label, the object's uuid and ref (rbac_audit.ml
// get_sexpr_arg). A dictionary-valued whitelisted parameter has Args
// instead of a Value.
type Arg struct {
	Name, Value, UUID, Ref string
	Args                   []Arg
}

// Line is one parsed RBAC audit line. Parse fills it without allocating in
// the common case: strings alias the input, or a scratch buffer the Line
// reuses for values that needed unescaping, so a Line is valid only until
// the next Parse into it (and, for ParseBytes, while the input is unchanged).
// Clone detaches it.
type Line struct {
	// Host is the syslog host of the envelope ("" when the line came
	// without one; sources then set it).
	Host string
	// Time is the inner timestamp (UTC, millisecond precision) and Stamp
	// the same as written (20240315T10:22:33.456Z).
	Time  time.Time
	Stamp string
	// Field2 is "" (2019-2025 builds), the host name (older builds) or a
	// W3C traceparent (2026+).
	Field2     string
	ThreadID   int
	ThreadName string
	// ClientProto ("HTTP" or "HTTPS") and ClientIP are the caller, from the
	// thread field's "HTTPS 10.0.0.5->" prefix (builds since Nov 2020).
	ClientProto, ClientIP string
	// Task is the whole task field; TaskName without its id; TaskKind 'R'
	// (a task in the database) or 'D' (a dummy task), 0 when the field has
	// no id; TaskID its 12 hex digits (record.TaskShortID of the task ref).
	Task, TaskName string
	TaskKind       byte
	TaskID         string
	// Repeated is N of rsyslog's "message repeated N times: [ … ]".
	Repeated int
	// TrackID is the session's trackid (MD5 hex of the session ref),
	// without the "trackid=" prefix.
	TrackID     string
	SubjectID   string // LOCAL_SUPERUSER, LOCAL_SESSION, an AD SID, …
	SubjectName string // root, DOMAIN\user, __dom0__vmss, OpaqueRef:<host>, ""
	Decision    Decision
	Outcome     Outcome
	// ErrorText is what follows "ERROR:" (ExnHelper.string_of_exn:
	// "CODE: [ p1; p2 ]"); ErrorCode its code.
	ErrorText, ErrorCode string
	CallType             CallType
	Action               string // VM.clone, http/get_export, session.create, …
	Args                 []Arg
	// Escaping is the mode the line was decoded with (never EscapeAuto).
	Escaping Escaping

	raw     string
	msg     int // offset of the message ("[" of the header) in raw
	scratch []byte
}

// Raw returns the line as given (trailing newline removed).
func (l *Line) Raw() string { return l.raw }

// Message returns the line from the header's "[" on, as written: the part
// every copy of the line shares whatever envelope (file, syslog, none) it
// came with.
func (l *Line) Message() string { return l.raw[l.msg:] }

// Arg returns the first argument called name.
func (l *Line) Arg(name string) (Arg, bool) {
	for _, a := range l.Args {
		if a.Name == name {
			return a, true
		}
	}
	return Arg{}, false
}

// ErrorParams splits ErrorText's "[ p1; p2 ]" (allocates).
func (l *Line) ErrorParams() []string {
	_, rest, ok := strings.Cut(l.ErrorText, ": [")
	if !ok {
		return nil
	}
	rest = strings.TrimSuffix(strings.TrimSpace(rest), "]")
	rest = strings.TrimSpace(rest)
	if rest == "" {
		return nil
	}
	return strings.Split(rest, "; ")
}

// Clone returns a copy of l that owns its memory.
func (l *Line) Clone() Line {
	c := *l
	c.scratch = nil
	c.raw = strings.Clone(l.raw)
	cl := strings.Clone
	c.Host, c.Stamp, c.Field2, c.ThreadName = cl(l.Host), cl(l.Stamp), cl(l.Field2), cl(l.ThreadName)
	c.ClientProto, c.ClientIP, c.Task, c.TaskName, c.TaskID = cl(l.ClientProto), cl(l.ClientIP), cl(l.Task), cl(l.TaskName), cl(l.TaskID)
	c.TrackID, c.SubjectID, c.SubjectName = cl(l.TrackID), cl(l.SubjectID), cl(l.SubjectName)
	c.ErrorText, c.ErrorCode, c.Action = cl(l.ErrorText), cl(l.ErrorCode), cl(l.Action)
	c.Args = cloneArgs(l.Args)
	return c
}

func cloneArgs(as []Arg) []Arg {
	if as == nil {
		return nil
	}
	out := make([]Arg, len(as))
	for i, a := range as {
		out[i] = Arg{Name: strings.Clone(a.Name), Value: strings.Clone(a.Value), UUID: strings.Clone(a.UUID),
			Ref: strings.Clone(a.Ref), Args: cloneArgs(a.Args)}
	}
	return out
}

// TrackIDOf is the trackid xapi prints for a session ref: the MD5 hex of
// the ref string (context.ml trackid_of_session).
func TrackIDOf(sessionRef string) string {
	sum := md5.Sum([]byte(sessionRef))
	return hex.EncodeToString(sum[:])
}

// ErrNotAudit is wrapped by the error for a well-formed log line that is not
// an RBAC audit line (another brand or level, e.g. a xensource.log line).
var ErrNotAudit = errors.New("not an RBAC audit line")

// ParseError says what is wrong with a line and where.
type ParseError struct {
	Part   string // envelope, header, timestamp, sexpr, trackid, decision, outcome, calltype, args, …
	Offset int    // byte offset in the line, -1 when not meaningful
	Reason string
	err    error
}

func (e *ParseError) Error() string {
	if e.Offset >= 0 {
		return "audit line: " + e.Part + ": " + e.Reason + " (at byte " + itoa(e.Offset) + ")"
	}
	return "audit line: " + e.Part + ": " + e.Reason
}

func (e *ParseError) Unwrap() error { return e.err }

func perr(part string, off int, reason string) *ParseError {
	return &ParseError{Part: part, Offset: off, Reason: reason}
}

// Parser parses lines with a chosen escaping mode.
type Parser struct {
	Escaping Escaping
}

// Parse parses one line of audit.log, of /audit_log's answer, or a
// forwarded syslog message: with or without the syslog envelope, with or
// without rsyslog's "message repeated" wrapper (reference audit-log.md §2).
func Parse(s string, l *Line) error { return Parser{}.Parse(s, l) }

// ParseBytes is Parse on a byte slice, without copying it (see Line).
func ParseBytes(b []byte, l *Line) error { return Parser{}.ParseBytes(b, l) }

// ParseBytes is Parse on a byte slice, without copying it (see Line).
func (p Parser) ParseBytes(b []byte, l *Line) error {
	return p.Parse(unsafe.String(unsafe.SliceData(b), len(b)), l)
}

// Parse parses one line (see the package function).
func (p Parser) Parse(s string, l *Line) error {
	scratch := l.scratch[:0]
	args := l.Args[:0]
	*l = Line{scratch: scratch, Args: args}
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == '\r') {
		s = s[:len(s)-1]
	}
	l.raw = s
	if s == "" {
		return perr("line", -1, "empty")
	}
	var xl xensource.Line
	var err error
	if s[0] == '[' || strings.HasPrefix(s, "message repeated ") {
		err = xensource.ParseMessage(s, &xl)
	} else {
		err = xensource.Parse(s, &xl)
	}
	if err != nil {
		var xe *xensource.ParseError
		if errors.As(err, &xe) && xe.Kind != xensource.ErrKindHeader {
			return &ParseError{Part: "envelope", Offset: 0, Reason: xe.Detail, err: err}
		}
		return perr("header", len(s)-len(xl.Msg), "the [time|audit||thread|task|audit] header does not parse")
	}
	if xl.Kind != xensource.KindToolstack {
		return perr("header", -1, "no [time|audit||thread|task|audit] header")
	}
	if xl.Level != "audit" || xl.Module != "audit" {
		return &ParseError{Part: "header", Offset: -1, err: ErrNotAudit,
			Reason: "level " + quote(xl.Level) + " brand " + quote(xl.Module) + ": not an RBAC audit line (want audit|…|audit)"}
	}
	if xl.InnerTime == "" {
		return perr("timestamp", -1, "audit header without its inner UTC timestamp")
	}
	t, ok := parseStamp(xl.InnerTime)
	if !ok {
		return perr("timestamp", -1, "inner timestamp "+quote(xl.InnerTime)+" is not YYYYMMDDTHH:MM:SS.mmmZ")
	}
	l.Time, l.Stamp = t, xl.InnerTime
	l.Host, l.Field2, l.ThreadID, l.ThreadName = xl.SyslogHost, xl.Field2, xl.ThreadID, xl.ThreadName
	if xl.Client != "" {
		if proto, ip, ok := strings.Cut(xl.Client, " "); ok {
			l.ClientProto, l.ClientIP = proto, ip
		} else {
			l.ClientIP = xl.Client
		}
	}
	l.Task, l.TaskName, l.Repeated = xl.Task, xl.TaskName, xl.Repeated
	if xl.TaskRefKind == 'R' || xl.TaskRefKind == 'D' {
		l.TaskKind, l.TaskID = xl.TaskRefKind, xl.TaskShortID
	}
	// The message, as written: the header starts at the first '[' after the
	// envelope (and the repeated wrapper).
	msg := xl.Msg
	l.msg = strings.IndexByte(s, '[')
	mode := p.Escaping
	if mode == EscapeAuto {
		mode = EscapeOuter
		if l.Field2 != "" && !isTraceparent(l.Field2) {
			mode = EscapeInner // host in field 2: a build from before 2019
		} else if !outerValid(msg) {
			mode = EscapeInner
		}
	}
	l.Escaping = mode
	// Decoded text is never longer than the line: with this much room the
	// scratch buffer never moves, so strings can point into it at once.
	if cap(l.scratch) < len(s) {
		l.scratch = make([]byte, 0, len(s)+64)
	}
	if mode == EscapeOuter {
		// The header was escaped with the message (custom task names,
		// thread names).
		l.Field2, l.ThreadName = l.unescapeOuter(l.Field2), l.unescapeOuter(l.ThreadName)
		l.Task, l.TaskName = l.unescapeOuter(l.Task), l.unescapeOuter(l.TaskName)
		l.ClientProto, l.ClientIP = l.unescapeOuter(l.ClientProto), l.unescapeOuter(l.ClientIP)
	}
	off := len(s) - len(msg)
	if l.Repeated > 0 && len(msg) > 0 {
		// xensource strips the wrapper's closing ']' from Msg; the offsets
		// are then relative to the unwrapped message.
		off = strings.LastIndex(s, msg)
	}
	sp := sexprParser{s: msg, mode: mode, base: off, l: l}
	return sp.line()
}

func quote(s string) string { return "\"" + s + "\"" }

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	neg := n < 0
	if neg {
		n = -n
	}
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	if neg {
		i--
		b[i] = '-'
	}
	return string(b[i:])
}

// parseStamp reads YYYYMMDDTHH:MM:SS.mmmZ (debug.ml gettimestring: UTC,
// milliseconds truncated). A stamp without milliseconds is accepted.
func parseStamp(s string) (time.Time, bool) {
	if len(s) < 17 || s[8] != 'T' || s[11] != ':' || s[14] != ':' {
		return time.Time{}, false
	}
	num := func(i, n int) (int, bool) {
		v := 0
		for k := i; k < i+n; k++ {
			c := s[k]
			if c < '0' || c > '9' {
				return 0, false
			}
			v = v*10 + int(c-'0')
		}
		return v, true
	}
	y, ok1 := num(0, 4)
	mo, ok2 := num(4, 2)
	d, ok3 := num(6, 2)
	h, ok4 := num(9, 2)
	mi, ok5 := num(12, 2)
	se, ok6 := num(15, 2)
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60 {
		return time.Time{}, false
	}
	rest := s[17:]
	ms := 0
	if len(rest) > 0 && rest[0] == '.' {
		k := 1
		scale := 100
		for k < len(rest) && rest[k] >= '0' && rest[k] <= '9' {
			if scale > 0 {
				ms += int(rest[k]-'0') * scale
				scale /= 10
			}
			k++
		}
		if k == 1 {
			return time.Time{}, false
		}
		rest = rest[k:]
	}
	if rest != "Z" && rest != "" {
		return time.Time{}, false
	}
	return time.Date(y, time.Month(mo), d, h, mi, se, ms*int(time.Millisecond), time.UTC), true
}

// FormatSince renders t the way /audit_log's since parameter and the
// header stamps compare: YYYYMMDDTHH:MM:SS.mmm (21 characters, UTC).
func FormatSince(t time.Time) string {
	t = t.UTC()
	b := make([]byte, 0, 21)
	b = appendInt(b, t.Year(), 4)
	b = appendInt(b, int(t.Month()), 2)
	b = appendInt(b, t.Day(), 2)
	b = append(b, 'T')
	b = appendInt(b, t.Hour(), 2)
	b = append(b, ':')
	b = appendInt(b, t.Minute(), 2)
	b = append(b, ':')
	b = appendInt(b, t.Second(), 2)
	b = append(b, '.')
	b = appendInt(b, t.Nanosecond()/int(time.Millisecond), 3)
	return string(b)
}

func appendInt(b []byte, v, width int) []byte {
	var d [10]byte
	i := len(d)
	for v > 0 || i == len(d) {
		i--
		d[i] = byte('0' + v%10)
		v /= 10
	}
	for n := len(d) - i; n < width; n++ {
		b = append(b, '0')
	}
	return append(b, d[i:]...)
}

// isTraceparent reports whether s is a W3C traceparent
// (00-<32 hex>-<16 hex>-<2 hex>), which 2026 builds put in field 2.
func isTraceparent(s string) bool {
	if len(s) != 55 || s[2] != '-' || s[35] != '-' || s[52] != '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if i == 2 || i == 35 || i == 52 {
			continue
		}
		if !isHex(s[i]) {
			return false
		}
	}
	return true
}

// unescapeOuter undoes debug.ml's escaping of s into the scratch buffer
// (s itself when it has no backslash).
func (l *Line) unescapeOuter(s string) string {
	if strings.IndexByte(s, '\\') < 0 {
		return s
	}
	from := len(l.scratch)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\\' && i+1 < len(s) {
			switch {
			case s[i+1] == '\\':
				i++
			case s[i+1] == 'x' && i+3 < len(s) && isHex(s[i+2]) && isHex(s[i+3]):
				c = unhex(s[i+2])<<4 | unhex(s[i+3])
				i += 3
			}
		}
		l.scratch = append(l.scratch, c)
	}
	return unsafe.String(&l.scratch[from], len(l.scratch)-from)
}

// outerValid reports whether every backslash of s starts a sequence the
// outer escape writes (\\ or \xHH).
func outerValid(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			continue
		}
		if i+1 >= len(s) {
			return false
		}
		switch s[i+1] {
		case '\\':
			i++
		case 'x':
			if i+3 >= len(s) || !isHex(s[i+2]) || !isHex(s[i+3]) {
				return false
			}
			i += 3
		default:
			return false
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}
