package xensource

// ErrKind names what was wrong with a line.
type ErrKind uint8

// Error kinds, one per way a line can be rejected.
const (
	ErrKindEmpty     ErrKind = iota + 1 // blank line
	ErrKindTimestamp                    // no "Mmm dd HH:MM:SS" or RFC 3339 time at the start
	ErrKindHost                         // no host field (or nothing after the time)
	ErrKindHeader                       // a toolstack daemon's "[...]" header that does not parse
)

func (k ErrKind) String() string {
	switch k {
	case ErrKindEmpty:
		return "empty"
	case ErrKindTimestamp:
		return "timestamp"
	case ErrKindHost:
		return "host"
	case ErrKindHeader:
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
	ErrEmptyLine    = &ParseError{ErrKindEmpty, "empty line"}
	ErrBadTimestamp = &ParseError{ErrKindTimestamp, `no syslog time ("Mmm dd HH:MM:SS" or RFC 3339) at the start`}
	ErrNoHost       = &ParseError{ErrKindHost, "no host and message after the time"}
	ErrBadHeader    = &ParseError{ErrKindHeader, "toolstack line whose [level|field2|thread|task|module] header does not parse"}
)
