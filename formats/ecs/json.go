package ecs

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// safe[b] is true for the ASCII bytes a JSON string may hold unescaped. DEL is
// escaped too so that no raw control byte ever reaches a terminal.
var safe = func() (t [256]bool) {
	for c := 0x20; c < 0x7f; c++ {
		t[c] = true
	}
	t['"'] = false
	t['\\'] = false
	return t
}()

const hexDigits = "0123456789abcdef"

// appendString writes s as a quoted JSON string.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	b = appendStringBody(b, s)
	return append(b, '"')
}

// appendStringBody writes s as the inside of a JSON string. Invalid UTF-8
// becomes U+FFFD. Controls (C0, DEL, C1), U+2028/U+2029 (line breaks to
// JavaScript), the bidirectional controls (a right-to-left override can make
// a log line read differently than it is) and U+FEFF are written as \u
// escapes: they survive decoding unchanged but never appear raw.
func appendStringBody(b []byte, s string) []byte {
	for {
		n := plainLen(s)
		b = append(b, s[:n]...)
		if n == len(s) {
			return b
		}
		s = s[n:]
		c := s[0]
		if c < utf8.RuneSelf {
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			s = s[1:]
			continue
		}
		r, size := utf8.DecodeRuneInString(s)
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, `\ufffd`...)
		case escapeRune(r):
			b = append(b, '\\', 'u', hexDigits[r>>12&0xf], hexDigits[r>>8&0xf], hexDigits[r>>4&0xf], hexDigits[r&0xf])
		default:
			// a run of plain non-ASCII characters (a name in another script)
			// is copied at once
			n := size
			for n < len(s) && s[n] >= utf8.RuneSelf {
				r, sz := utf8.DecodeRuneInString(s[n:])
				if (r == utf8.RuneError && sz == 1) || escapeRune(r) {
					break
				}
				n += sz
			}
			b = append(b, s[:n]...)
			size = n
		}
		s = s[size:]
	}
}

// plainLen returns how many leading bytes of s JSON writes as they are
// (printable ASCII but '"' and '\\'), eight at a time while it can. Kept
// small so that its loop runs in registers.
func plainLen(s string) int {
	i := 0
	for ; i+8 <= len(s); i += 8 {
		w := s[i : i+8]
		x := uint64(w[0]) | uint64(w[1])<<8 | uint64(w[2])<<16 | uint64(w[3])<<24 |
			uint64(w[4])<<32 | uint64(w[5])<<40 | uint64(w[6])<<48 | uint64(w[7])<<56
		q, bs, del := x^(lo7*'"'), x^(lo7*'\\'), x^(lo7*0x7f)
		if (x|(x-lo7*0x20)&^x|(q-lo7)&^q|(bs-lo7)&^bs|(del-lo7)&^del)&hi != 0 {
			break
		}
	}
	for ; i < len(s) && safe[s[i]]; i++ {
	}
	return i
}

const (
	lo7 = 0x0101010101010101
	hi  = 0x8080808080808080
)

// escapeRune reports whether a non-ASCII rune is written as a \u escape.
func escapeRune(r rune) bool {
	switch {
	case r >= 0x80 && r <= 0x9f: // C1 controls
		return true
	case r == 0x2028 || r == 0x2029: // JavaScript line terminators
		return true
	case r == 0x061c || r == 0x200e || r == 0x200f: // ALM, LRM, RLM
		return true
	case r >= 0x202a && r <= 0x202e: // LRE RLE PDF LRO RLO
		return true
	case r >= 0x2066 && r <= 0x2069: // LRI RLI FSI PDI
		return true
	case r == 0xfeff: // BOM / zero-width no-break space
		return true
	}
	return false
}

// appendTime writes t as an RFC 3339 UTC string with milliseconds, the
// record wire format, without time.Format's cost.
func appendTime(b []byte, t time.Time) []byte {
	t = t.UTC()
	y, mo, d := t.Date()
	h, mi, s := t.Clock()
	ms := t.Nanosecond() / 1e6
	if y < 0 || y > 9999 {
		// outside RFC 3339; let the standard library say what it can
		b = append(b, '"')
		b = t.AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
		return append(b, '"')
	}
	b = append(b, '"',
		byte('0'+y/1000), byte('0'+y/100%10), byte('0'+y/10%10), byte('0'+y%10), '-',
		byte('0'+int(mo)/10), byte('0'+int(mo)%10), '-',
		byte('0'+d/10), byte('0'+d%10), 'T',
		byte('0'+h/10), byte('0'+h%10), ':',
		byte('0'+mi/10), byte('0'+mi%10), ':',
		byte('0'+s/10), byte('0'+s%10), '.',
		byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10), 'Z', '"')
	return b
}

func appendInt(b []byte, n int64) []byte { return strconv.AppendInt(b, n, 10) }
