package cef

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Event is a parsed CEF line. Header fields and extension values are
// unescaped.
type Event struct {
	Version       int
	DeviceVendor  string
	DeviceProduct string
	DeviceVersion string
	SignatureID   string
	Name          string
	Severity      string
	Extensions    []Field // in line order; a key may repeat
}

// Field is one extension key=value pair.
type Field struct{ Key, Value string }

// Get returns the value of the first extension field named key.
func (e *Event) Get(key string) (string, bool) {
	for _, f := range e.Extensions {
		if f.Key == key {
			return f.Value, true
		}
	}
	return "", false
}

// Custom returns the value of the custom field (cs1..cs6, cn1..cn3, ...)
// whose label is label, by looking for "<key>Label=label". The label is
// compared without surrounding spaces: Parse keeps a value's spaces (the
// standard's rule), so "cs1Label=vm_uuid  cs1=…" labels "vm_uuid ".
func (e *Event) Custom(label string) (string, bool) {
	for _, f := range e.Extensions {
		if k, ok := strings.CutSuffix(f.Key, "Label"); ok && strings.TrimSpace(f.Value) == label {
			return e.Get(k)
		}
	}
	return "", false
}

// Limits of Parse: a longer line or more fields is refused, not cut.
const (
	MaxLineBytes = 1 << 20
	MaxFields    = 4096
)

// ParseError says what was wrong with a line and where.
type ParseError struct {
	Offset int // byte offset in the line
	Msg    string
}

func (e *ParseError) Error() string { return fmt.Sprintf("cef: %s (at byte %d)", e.Msg, e.Offset) }

var errNotCEF = errors.New(`cef: line does not start with "CEF:"`)

// Parse reads one CEF line: "CEF:<version>|vendor|product|version|signature
// id|name|severity|extension"; a line without extension may end after the
// severity, without the last '|'. Leading spaces and a UTF-8 byte-order mark
// before "CEF:" are skipped, as is a trailing CR/LF; a syslog header is the
// caller's to strip.
//
// Header fields unescape \| and \\. Extension values unescape \=, \\, \n, \r
// and, leniently, \|; any other backslash pair is kept as written. A value
// runs up to the last space before the next key=, so an unescaped '=' that
// does not follow a space and a key is part of the value. Keys are letters,
// digits and _ . - [ ] (standard keys are alphanumeric; producers vary).
func Parse(line string) (*Event, error) {
	if len(line) > MaxLineBytes {
		return nil, &ParseError{MaxLineBytes, fmt.Sprintf("line of %d bytes exceeds %d", len(line), MaxLineBytes)}
	}
	off := 0
	s := line
	s = strings.TrimPrefix(s, "\uFEFF")
	for len(s) > 0 && s[0] == ' ' {
		s = s[1:]
	}
	off = len(line) - len(s)
	s = strings.TrimRight(s, "\r\n")
	if !strings.HasPrefix(s, "CEF:") {
		return nil, errNotCEF
	}
	e := &Event{}
	pos := 4
	// version: digits up to the first '|'
	bar := strings.IndexByte(s[pos:], '|')
	if bar < 0 {
		return nil, &ParseError{off + pos, "no '|' after the version"}
	}
	v, err := strconv.Atoi(strings.TrimSpace(s[pos : pos+bar]))
	if err != nil || v < 0 || v > 9 {
		return nil, &ParseError{off + pos, fmt.Sprintf("version %q is not a CEF version", s[pos:pos+bar])}
	}
	e.Version = v
	pos += bar + 1
	fields := [6]*string{&e.DeviceVendor, &e.DeviceProduct, &e.DeviceVersion, &e.SignatureID, &e.Name, &e.Severity}
	for i, f := range fields {
		val, next, ok := headerField(s, pos)
		if !ok {
			// The rest of the line is field i without its closing '|'.
			rest := strings.TrimSpace(s[pos:])
			if i < len(fields)-1 || rest == "" {
				return nil, &ParseError{off + pos, fmt.Sprintf("header has %d of 7 fields (missing %s)", i+1+min(len(rest), 1), headerNames[i+min(len(rest), 1)])}
			}
			// Many producers end a line without extension after the
			// severity, with no '|'; a severity holds no '=', so a rest
			// with one is an extension whose '|' is missing.
			if strings.Contains(rest, "=") {
				return nil, &ParseError{off + pos, "no '|' between the severity and the extension"}
			}
			e.Severity = unescapeHeader(rest)
			return e, nil
		}
		*f = val
		pos = next
	}
	exts, err := parseExtension(s, pos)
	if err != nil {
		if pe, ok := err.(*ParseError); ok {
			pe.Offset += off
		}
		return nil, err
	}
	e.Extensions = exts
	return e, nil
}

var headerNames = [6]string{"device vendor", "device product", "device version", "signature id", "name", "severity"}

// headerField reads an escaped header field from pos to the next unescaped
// '|' and returns it unescaped with the position after the '|'.
func headerField(s string, pos int) (string, int, bool) {
	esc := false
	for i := pos; i < len(s); i++ {
		switch s[i] {
		case '\\':
			esc = true
			i++
		case '|':
			raw := s[pos:i]
			if !esc {
				return raw, i + 1, true
			}
			return unescapeHeader(raw), i + 1, true
		}
	}
	return "", 0, false
}

func unescapeHeader(raw string) string {
	var sb strings.Builder
	sb.Grow(len(raw))
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c == '\\' && i+1 < len(raw) && (raw[i+1] == '|' || raw[i+1] == '\\') {
			sb.WriteByte(raw[i+1])
			i++
			continue
		}
		sb.WriteByte(c)
	}
	return sb.String()
}

func isKeyByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '_' || c == '.' || c == '-' || c == '[' || c == ']'
}

// parseExtension reads "k=v k=v ..." from s[pos:].
func parseExtension(s string, pos int) ([]Field, error) {
	for pos < len(s) && s[pos] == ' ' {
		pos++
	}
	if pos >= len(s) {
		return nil, nil
	}
	var out []Field
	// first key
	k := pos
	for k < len(s) && isKeyByte(s[k]) {
		k++
	}
	if k == pos || k >= len(s) || s[k] != '=' {
		return nil, &ParseError{pos, "extension does not start with key="}
	}
	key := s[pos:k]
	vstart := k + 1
	for {
		// find where this value ends: the next unescaped '=' preceded by
		// " key"
		end, nextKey := len(s), -1
		for j := vstart; j < len(s); j++ {
			c := s[j]
			if c == '\\' {
				j++
				continue
			}
			if c != '=' {
				continue
			}
			ks := j
			for ks > vstart && isKeyByte(s[ks-1]) {
				ks--
			}
			if ks < j && ks > vstart && s[ks-1] == ' ' {
				end, nextKey = ks-1, ks
				break
			}
		}
		if len(out) == MaxFields {
			return nil, &ParseError{vstart, fmt.Sprintf("more than %d extension fields", MaxFields)}
		}
		out = append(out, Field{key, unescapeValue(s[vstart:end])})
		if nextKey < 0 {
			return out, nil
		}
		j := nextKey
		for s[j] != '=' {
			j++
		}
		key = s[nextKey:j]
		vstart = j + 1
	}
}

func unescapeValue(raw string) string {
	if strings.IndexByte(raw, '\\') < 0 {
		return raw
	}
	var sb strings.Builder
	sb.Grow(len(raw))
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c != '\\' || i+1 == len(raw) {
			sb.WriteByte(c)
			continue
		}
		switch raw[i+1] {
		case '\\', '=', '|':
			sb.WriteByte(raw[i+1])
		case 'n':
			sb.WriteByte('\n')
		case 'r':
			sb.WriteByte('\r')
		default:
			sb.WriteByte('\\')
			sb.WriteByte(raw[i+1])
		}
		i++
	}
	return sb.String()
}

// ValidKey reports whether k is a key AppendEvent writes: letters and digits
// only, as syslog-ng and the CEF standard require.
func ValidKey(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// AppendEvent writes e as a CEF line: header and values cleaned and escaped
// as AppendRecord does (without length limits, which are the producer's
// business). A key that is not alphanumeric is an error.
func AppendEvent(dst []byte, e *Event) ([]byte, error) {
	for _, f := range e.Extensions {
		if !ValidKey(f.Key) {
			return dst, fmt.Errorf("cef: extension key %q is not alphanumeric", f.Key)
		}
	}
	b := append(dst, "CEF:"...)
	b = strconv.AppendInt(b, int64(e.Version), 10)
	for _, h := range [...]string{e.DeviceVendor, e.DeviceProduct, e.DeviceVersion, e.SignatureID, e.Name, e.Severity} {
		b = append(b, '|')
		b = appendHeader(b, h, MaxLineBytes)
	}
	b = append(b, '|')
	first := true
	for _, f := range e.Extensions {
		sep := " "
		if first {
			sep = ""
		}
		b = append(b, sep...)
		b = append(b, f.Key...)
		b = append(b, '=')
		start := len(b)
		v := newValue(b, MaxLineBytes, false)
		b = v.write(b, f.Value)
		b, _ = v.finish(b, start) // an empty value stays: "key=" is legal
		first = false
	}
	return b, nil
}
