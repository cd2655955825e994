package ecs

import "net/netip"

// validIP reports whether s is an address Elasticsearch's ip type accepts;
// anything else in an ip field would make the whole document fail to index.
func validIP(s string) bool {
	if s == "" {
		return false
	}
	_, err := netip.ParseAddr(s)
	return err == nil
}

func hasIP(xs []string) bool {
	for _, x := range xs {
		if validIP(x) {
			return true
		}
	}
	return false
}

// ipArray writes "k":[...] with the valid, distinct addresses of xs, a and c
// (in that order), unless there are none. Invalid addresses are left out.
func ipArray(b []byte, o *object, k string, xs []string, a, c string) []byte {
	n := 0
	write := func(s string) {
		if n == 0 {
			b = o.key(b, k)
			b = append(b, '[')
		} else {
			b = append(b, ',')
		}
		n++
		b = appendString(b, s)
	}
	for i, x := range xs {
		if validIP(x) && !containsStr(xs[:i], x) {
			write(x)
		}
	}
	if validIP(a) && !containsStr(xs, a) {
		write(a)
	}
	if validIP(c) && c != a && !containsStr(xs, c) {
		write(c)
	}
	if n > 0 {
		b = append(b, ']')
	}
	return b
}

func containsStr(xs []string, s string) bool {
	for _, x := range xs {
		if x == s {
			return true
		}
	}
	return false
}

// normMAC returns the ECS form of a MAC address (upper case, hyphen
// separated: AA-BB-CC-DD-EE-FF) in buf, or false when s is not a 48-bit MAC.
func normMAC(buf *[17]byte, s string) bool {
	if len(s) != 17 {
		return false
	}
	for i := 0; i < 17; i++ {
		c := s[i]
		if i%3 == 2 {
			if c != ':' && c != '-' {
				return false
			}
			buf[i] = '-'
			continue
		}
		switch {
		case c >= '0' && c <= '9', c >= 'A' && c <= 'F':
		case c >= 'a' && c <= 'f':
			c -= 'a' - 'A'
		default:
			return false
		}
		buf[i] = c
	}
	return true
}

func hasMAC(xs []string) bool {
	var buf [17]byte
	for _, x := range xs {
		if normMAC(&buf, x) {
			return true
		}
	}
	return false
}

// macArray writes the valid MACs of xs in ECS form; others are left out.
func macArray(b []byte, o *object, k string, xs []string) []byte {
	var buf [17]byte
	n := 0
	for _, x := range xs {
		if !normMAC(&buf, x) {
			continue
		}
		if n == 0 {
			b = o.key(b, k)
			b = append(b, '[')
		} else {
			b = append(b, ',')
		}
		n++
		b = append(b, '"')
		b = append(b, buf[:]...)
		b = append(b, '"')
	}
	if n > 0 {
		b = append(b, ']')
	}
	return b
}
