package ecs

import (
	"net/netip"

	"github.com/vmlineage/vmlineage/formats"
)

// validIP reports whether s is an address Elasticsearch's ip type accepts;
// anything else in an ip field would make the whole document fail to index.
func validIP(s string) bool {
	if s == "" {
		return false
	}
	_, err := netip.ParseAddr(s)
	return err == nil
}

// ipMask returns a bit per entry of xs (the first 64) that is a valid
// address not seen earlier in xs, so each address is parsed once per record.
func ipMask(xs []string) uint64 {
	var m uint64
	for i, x := range xs {
		if i == 64 {
			break
		}
		if validIP(x) && !containsStr(xs[:i], x) {
			m |= 1 << i
		}
	}
	return m
}

// ipArray writes "k":[...] with the addresses of xs marked in mask, then a
// and c when their ok flags are set and they are not repeats, unless there
// are none.
func ipArray(b []byte, o *object, k string, xs []string, mask uint64, a string, aok bool, c string, cok bool) []byte {
	n := 0
	for i := 0; mask != 0 && i < len(xs) && i < 64; i++ {
		if mask&(1<<i) == 0 {
			continue
		}
		b, n = ipItem(b, o, k, n, xs[i])
	}
	if aok && !containsStr(xs, a) {
		b, n = ipItem(b, o, k, n, a)
	}
	if cok && c != a && !containsStr(xs, c) {
		b, n = ipItem(b, o, k, n, c)
	}
	if n > 0 {
		b = append(b, ']')
	}
	return b
}

func ipItem(b []byte, o *object, k string, n int, s string) ([]byte, int) {
	if n == 0 {
		b = o.key(b, k)
		b = append(b, '[')
	} else {
		b = append(b, ',')
	}
	return appendString(b, s), n + 1
}

func containsStr(xs []string, s string) bool {
	for _, x := range xs {
		if x == s {
			return true
		}
	}
	return false
}

// normMAC is formats.NormMAC with this format's separator.
func normMAC(buf *[17]byte, s string) bool { return formats.NormMAC(buf, s, '-') }

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
