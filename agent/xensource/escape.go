package xensource

import "strings"

// Unescape reverses the escaping xapi's logger applies to every syslog
// message since CA-337000 (Astring.String.Ascii.escape in
// ocaml/libs/log/debug.ml): bytes outside printable ASCII become \xHH and a
// backslash becomes \\. Other sequences are kept verbatim, so text from
// writers that do not escape (python helpers, old builds) survives. It
// returns s itself, without allocating, when s holds no backslash.
func Unescape(s string) string {
	i := strings.IndexByte(s, '\\')
	if i < 0 {
		return s
	}
	b := make([]byte, 0, len(s))
	b = append(b, s[:i]...)
	for ; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 >= len(s) {
			b = append(b, c)
			continue
		}
		switch n := s[i+1]; {
		case n == '\\':
			b = append(b, '\\')
			i++
		case n == 'x' && i+3 < len(s) && isHex(s[i+2]) && isHex(s[i+3]):
			b = append(b, unhex(s[i+2])<<4|unhex(s[i+3]))
			i += 3
		default:
			b = append(b, c)
		}
	}
	return string(b)
}

// Escape applies xapi's escaping (see Unescape); the log writer uses it so
// simulated lines are byte-identical to what xapi hands to syslog.
func Escape(s string) string {
	need := false
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '\\' {
			need = true
			break
		}
	}
	if !need {
		return s
	}
	const hexdig = "0123456789ABCDEF"
	b := make([]byte, 0, len(s)+8)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\':
			b = append(b, '\\', '\\')
		case c < 0x20 || c >= 0x7f:
			b = append(b, '\\', 'x', hexdig[c>>4], hexdig[c&15])
		default:
			b = append(b, c)
		}
	}
	return string(b)
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
