package xensource

// ErrKind names what was wrong with a line.
type ErrKind uint8

// Error kinds, one per way a line can be rejected.
const (
	KindEmpty     ErrKind = iota + 1 // blank line
	KindTimestamp                    // no "Mmm dd HH:MM:SS" or RFC 3339 time at the start
	KindHost                         // no host field (or nothing after the time)
	KindHeader                       // a toolstack daemon's "[...]" header that does not parse
)

func (k ErrKind) String() string {
	switch k {
	case KindEmpty:
		return "empty"
	case KindTimestamp:
		return "timestamp"
	case KindHost:
		return "host"
	case KindHeader:
		return "header"
	}
	return "unknown"
}

// ParseError is the typed error Parse returns. The values are shared
// sentinels (no allocation on the error path): compare with errors.Is or
// read Kind through errors.As.
type ParseError struct {
	Kind   ErrKind
	Detail string
}

func (e *ParseError) Error() string { return "xensource: bad line: " + e.Detail }

// Sentinel parse errors.
var (
	ErrEmptyLine    = &ParseError{KindEmpty, "empty line"}
	ErrBadTimestamp = &ParseError{KindTimestamp, `no syslog time ("Mmm dd HH:MM:SS" or RFC 3339) at the start`}
	ErrNoHost       = &ParseError{KindHost, "no host and message after the time"}
	ErrBadHeader    = &ParseError{KindHeader, "toolstack line whose [level|field2|thread|task|module] header does not parse"}
)
