package cef

import "unicode/utf8"

// Escaping is context dependent (ArcSight CEF implementation standard):
//   - header fields escape '|' and '\' and may not hold a line break;
//   - extension values escape '=' and '\', write CR and LF as \r and \n, and
//     leave '|' alone;
//   - CEF has no escape for other control characters, so they are replaced:
//     a tab by a space, every other C0/C1 control and DEL by U+FFFD, like an
//     invalid UTF-8 byte (one U+FFFD per bad byte);
//   - values are trimmed of spaces at both ends (a trailing space cannot be
//     told from the separator) and cut to the dictionary's length limit in
//     characters, never inside a UTF-8 sequence.

// plainExt[b] is true for ASCII bytes written unchanged in an extension value.
var plainExt, plainHdr = func() (e, h [256]bool) {
	for c := 0x20; c < 0x7f; c++ {
		e[c], h[c] = true, true
	}
	e['\\'], e['='] = false, false
	h['\\'], h['|'] = false, false
	return e, h
}()

const replacement = "\uFFFD"

// value writes one escaped value, possibly from several pieces, keeping the
// character budget and where the last non-space character ended.
type value struct {
	left   int  // characters still allowed
	begun  bool // a non-space character was written (leading spaces are dropped)
	lastNS int  // len(b) after the last non-space character
	header bool // header field rules instead of extension rules
}

func newValue(b []byte, limit int, header bool) value {
	return value{left: limit, lastNS: len(b), header: header}
}

// write appends the escaped s.
func (v *value) write(b []byte, s string) []byte {
	table, special := &plainExt, byte('=')
	if v.header {
		table, special = &plainHdr, '|'
	}
	for len(s) > 0 && v.left > 0 {
		// run of plain ASCII, one character per byte
		n := plainLen(s, special, table, v.left)
		if n > 0 {
			run := s[:n]
			if !v.begun {
				k := 0
				for k < len(run) && run[k] == ' ' {
					k++
				}
				run = run[k:] // leading spaces cost no budget
				if len(run) > 0 {
					v.begun = true
				}
			}
			b = append(b, run...)
			v.left -= len(run)
			if k := lastNonSpace(run); k >= 0 {
				v.lastNS = len(b) - len(run) + k + 1
			}
			s = s[n:]
			continue
		}
		c := s[0]
		if c < utf8.RuneSelf {
			s = s[1:]
			switch {
			case c == '\\':
				b = append(b, '\\', '\\')
			case c == '=' && !v.header:
				b = append(b, '\\', '=')
			case c == '|' && v.header:
				b = append(b, '\\', '|')
			case c == '\n' && !v.header:
				b = append(b, '\\', 'n')
			case c == '\r' && !v.header:
				b = append(b, '\\', 'r')
			case c == '\t' || c == '\n' || c == '\r':
				// a space: dropped if leading, counted otherwise
				if v.begun {
					b = append(b, ' ')
					v.left--
				}
				continue
			default: // other C0 controls, DEL
				b = append(b, replacement...)
			}
			v.left--
			v.begun = true
			v.lastNS = len(b)
			continue
		}
		r, size := utf8.DecodeRuneInString(s)
		if (r == utf8.RuneError && size == 1) || (r >= 0x80 && r <= 0x9f) {
			b = append(b, replacement...)
		} else {
			b = append(b, s[:size]...)
		}
		s = s[size:]
		v.left--
		v.begun = true
		v.lastNS = len(b)
	}
	return b
}

// finish drops trailing spaces and reports whether anything was written.
func (v *value) finish(b []byte, start int) ([]byte, bool) {
	b = b[:v.lastNS]
	return b, v.lastNS > start
}

const (
	lo7 = 0x0101010101010101
	hi  = 0x8080808080808080
)

// plainLen returns how many leading bytes of s (at most max) are written
// unchanged: printable ASCII other than '\\' and special. It tests eight
// bytes at a time: with no high bit set, (v - 0x01..) & ^v & 0x80.. is
// non-zero iff a byte of v is zero, (v - 0x20..) & ^v & 0x80.. iff a byte is
// below 0x20.
func plainLen(s string, special byte, table *[256]bool, max int) int {
	if max > len(s) {
		max = len(s)
	}
	i := 0
	for ; i+8 <= max; i += 8 {
		w := s[i : i+8]
		x := uint64(w[0]) | uint64(w[1])<<8 | uint64(w[2])<<16 | uint64(w[3])<<24 |
			uint64(w[4])<<32 | uint64(w[5])<<40 | uint64(w[6])<<48 | uint64(w[7])<<56
		sp, bs, del := x^(lo7*uint64(special)), x^(lo7*'\\'), x^(lo7*0x7f)
		if (x|(x-lo7*0x20)&^x|(sp-lo7)&^sp|(bs-lo7)&^bs|(del-lo7)&^del)&hi != 0 {
			break
		}
	}
	for ; i < max && table[s[i]]; i++ {
	}
	return i
}

func lastNonSpace(s string) int {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] != ' ' {
			return i
		}
	}
	return -1
}

// appendExt writes " key=value" (key given with its leading space and '='),
// or nothing when the value is empty once cleaned.
func appendExt(b []byte, key, s string, limit int) []byte {
	if s == "" {
		return b
	}
	// fast path: plain ASCII, within the limit, nothing to trim
	if len(s) <= limit && s[0] != ' ' && s[len(s)-1] != ' ' && plainLen(s, '=', &plainExt, len(s)) == len(s) {
		b = append(b, key...)
		return append(b, s...)
	}
	mark := len(b)
	b = append(b, key...)
	start := len(b)
	v := newValue(b, limit, false)
	b = v.write(b, s)
	b, ok := v.finish(b, start)
	if !ok {
		return b[:mark]
	}
	return b
}

// appendHeader writes a header field (cleaned, escaped, cut to limit).
func appendHeader(b []byte, s string, limit int) []byte {
	start := len(b)
	v := newValue(b, limit, true)
	b = v.write(b, s)
	b, _ = v.finish(b, start)
	return b
}
