package syslog

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/leodido/go-syslog/v4/rfc5424"
)

// Format is the syslog header style.
type Format string

// Formats.
const (
	RFC5424 Format = "rfc5424" // <PRI>1 TIMESTAMP HOST APP PROCID MSGID [SD] MSG (default)
	RFC3164 Format = "rfc3164" // <PRI>Mmm dd hh:mm:ss HOST TAG: MSG (ArcSight legacy)
)

// RFC 5424 §6 field limits.
const (
	maxHostname = 255
	maxAppName  = 48
	maxProcID   = 128
	maxMsgID    = 32
	maxTag      = 32 // RFC 3164 §4.1.3
)

// tsLayout has at most 6 fraction digits (trailing zeros trimmed, as the
// go-syslog builder writes them): RFC 5424 §6.2.3 allows at most 6 and the
// go-syslog builder silently writes "-" for Go's 9-digit RFC3339Nano.
const tsLayout = "2006-01-02T15:04:05.999999Z07:00"

// Formatter renders items as syslog messages. The static header fields are
// cleaned and then checked with go-syslog's RFC 5424 builder once, in
// NewFormatter; per message only the timestamp, the SD id and the payload
// are appended, so formatting costs no allocation.
type Formatter struct {
	format   Format
	facility int
	severity int
	prefix   []byte // "<PRI>1 " or "<PRI>"
	middle   []byte // " HOST APP PROCID MSGID " or " HOST TAG: "
	sdID     string // "" = no SD element
	loc      *time.Location
}

// FormatConfig holds the header fields.
type FormatConfig struct {
	Format   Format
	Facility int    // 0..23 (default 13, log audit)
	Severity int    // 0..7 (default 5, notice)
	Hostname string // default os.Hostname()
	AppName  string // RFC 5424 APP-NAME (default "vmlineage")
	ProcID   string // default the process id
	MsgID    string // default "lifecycle"
	Tag      string // RFC 3164 TAG (default AppName)
	// SDID names the structured-data element carrying the record id
	// ([SDID id="..."]), so a receiver can drop duplicates. Default
	// "vmlineage@32473" (32473 is the documentation enterprise number of
	// RFC 5612; set your own). "-" disables it.
	SDID string
	// Location for RFC 3164 timestamps, which carry no zone (default UTC).
	Location *time.Location
}

// NewFormatter validates cfg and prepares the constant parts.
func NewFormatter(cfg FormatConfig) (*Formatter, error) {
	f := &Formatter{format: cfg.Format, facility: cfg.Facility, severity: cfg.Severity, loc: cfg.Location}
	if f.format == "" {
		f.format = RFC5424
	}
	if f.format != RFC5424 && f.format != RFC3164 {
		return nil, fmt.Errorf("syslog: unknown format %q (want rfc5424 or rfc3164)", cfg.Format)
	}
	if f.facility == 0 && cfg.Facility == 0 {
		f.facility = 13
	}
	if f.facility < 0 || f.facility > 23 {
		return nil, fmt.Errorf("syslog: facility %d out of range 0..23", cfg.Facility)
	}
	if cfg.Severity == 0 {
		f.severity = 5
	}
	if f.severity < 0 || f.severity > 7 {
		return nil, fmt.Errorf("syslog: severity %d out of range 0..7", cfg.Severity)
	}
	if f.loc == nil {
		f.loc = time.UTC
	}
	pri := f.facility*8 + f.severity
	host := headerField(cfg.Hostname, maxHostname)
	app := headerField(orDefault(cfg.AppName, "vmlineage"), maxAppName)
	procid := headerField(cfg.ProcID, maxProcID)
	msgid := headerField(orDefault(cfg.MsgID, "lifecycle"), maxMsgID)
	switch cfg.SDID {
	case "":
		f.sdID = "vmlineage@32473"
	case "-":
	default:
		f.sdID = sdName(cfg.SDID)
		if f.sdID != cfg.SDID {
			return nil, fmt.Errorf("syslog: SD-ID %q is not valid (1-32 printable ASCII, none of = ] \" or space)", cfg.SDID)
		}
	}
	if f.format == RFC5424 {
		// Let the library confirm the cleaned fields survive its checks.
		b := &rfc5424.SyslogMessage{}
		b.SetPriority(uint8(pri))
		b.SetVersion(1)
		b.SetTimestamp(time.Unix(0, 123456789).UTC().Format(tsLayout))
		b.SetHostname(host)
		b.SetAppname(app)
		b.SetProcID(procid)
		b.SetMsgID(msgid)
		if f.sdID != "" {
			b.SetParameter(f.sdID, "id", "x")
		}
		if _, err := b.String(); err != nil {
			return nil, fmt.Errorf("syslog: header rejected by go-syslog: %w", err)
		}
		if !kept(b.Hostname, host) || !kept(b.Appname, app) || !kept(b.ProcID, procid) || !kept(b.MsgID, msgid) || b.Timestamp == nil {
			return nil, fmt.Errorf("syslog: go-syslog dropped a header field (host %q app %q procid %q msgid %q)", host, app, procid, msgid)
		}
		f.prefix = fmt.Appendf(nil, "<%d>1 ", pri)
		f.middle = fmt.Appendf(nil, " %s %s %s %s ", host, app, procid, msgid)
	} else {
		tag := tagField(orDefault(cfg.Tag, orDefault(cfg.AppName, "vmlineage")))
		f.prefix = fmt.Appendf(nil, "<%d>", pri)
		// HOST then TAG and a colon: without a tag rsyslog would take "CEF:"
		// as the tag and the CEF text would lose its head.
		f.middle = fmt.Appendf(nil, " %s %s: ", host, tag)
	}
	return f, nil
}

// kept reports whether the builder stored v ("-" is the NILVALUE: nil).
func kept(p *string, v string) bool {
	if v == "-" {
		return p == nil
	}
	return p != nil && *p == v
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// headerField makes s a valid RFC 5424 header field: printable US-ASCII
// without spaces, at most max bytes, "-" when empty. The go-syslog builder
// would otherwise silently turn the whole field into "-".
func headerField(s string, max int) string {
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= max {
			break
		}
		if r > 32 && r < 127 {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	out := b.String()
	if len(out) > max {
		out = out[:max]
	}
	if out == "" {
		return "-"
	}
	return out
}

// sdName cleans an SD-ID or PARAM-NAME (RFC 5424 §6.3.2: 1-32 PRINTUSASCII
// except = SP ] ").
func sdName(s string) string {
	var b []byte
	for i := 0; i < len(s) && len(b) < 32; i++ {
		c := s[i]
		if c > 32 && c < 127 && c != '=' && c != ']' && c != '"' {
			b = append(b, c)
		}
	}
	return string(b)
}

// tagField cleans an RFC 3164 TAG: alphanumerics (and - _ . /), at most 32.
func tagField(s string) string {
	var b []byte
	for i := 0; i < len(s) && len(b) < maxTag; i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == '/' {
			b = append(b, c)
		}
	}
	if len(b) == 0 {
		return "vmlineage"
	}
	return string(b)
}

// AppendSDValue escapes a PARAM-VALUE (RFC 5424 §6.3.3: " \ ] get a
// backslash). go-syslog's builder stores an empty value when they are raw.
// Invalid UTF-8 becomes U+FFFD since PARAM-VALUE is UTF-8.
func AppendSDValue(dst []byte, v string) []byte {
	for i := 0; i < len(v); {
		c := v[i]
		if c < utf8.RuneSelf {
			if c == '"' || c == '\\' || c == ']' {
				dst = append(dst, '\\')
			}
			dst = append(dst, c)
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(v[i:])
		if r == utf8.RuneError && n == 1 {
			dst = utf8.AppendRune(dst, utf8.RuneError)
		} else {
			dst = append(dst, v[i:i+n]...)
		}
		i += n
	}
	return dst
}

// Append renders one message (no framing) onto dst. The payload goes out as
// is, with no BOM: a BOM before "CEF:" stops rsyslog/liblognorm and
// VictoriaLogs from recognising CEF.
func (f *Formatter) Append(dst []byte, id string, t time.Time, payload []byte) []byte {
	// Never a BOM, even one the encoder put there (RFC 5424 §6.4 allows it,
	// but it hides CEF from rsyslog/liblognorm and VictoriaLogs).
	if len(payload) >= 3 && payload[0] == 0xEF && payload[1] == 0xBB && payload[2] == 0xBF {
		payload = payload[3:]
	}
	if t.IsZero() {
		t = time.Now()
	}
	dst = append(dst, f.prefix...)
	if f.format == RFC5424 {
		dst = t.UTC().AppendFormat(dst, tsLayout)
		dst = append(dst, f.middle...)
		if f.sdID != "" && id != "" {
			dst = append(dst, '[')
			dst = append(dst, f.sdID...)
			dst = append(dst, ` id="`...)
			dst = AppendSDValue(dst, id)
			dst = append(dst, `"]`...)
		} else {
			dst = append(dst, '-')
		}
		if len(payload) > 0 {
			dst = append(dst, ' ')
		}
	} else {
		// "Mmm dd hh:mm:ss" with a space-padded day (RFC 3164 §4.1.2).
		dst = t.In(f.loc).AppendFormat(dst, time.Stamp)
		dst = append(dst, f.middle...)
	}
	return append(dst, payload...)
}

// AppendOctetCounted frames msg as RFC 6587 §3.4.1 / RFC 5425: "LEN SP MSG".
func AppendOctetCounted(dst, msg []byte) []byte {
	dst = strconv.AppendInt(dst, int64(len(msg)), 10)
	dst = append(dst, ' ')
	return append(dst, msg...)
}
