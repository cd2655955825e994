package cef

import "testing"

// TestPlainLen checks the eight-byte fast path against the byte tables.
func TestPlainLen(t *testing.T) {
	for _, hdr := range []bool{false, true} {
		table, special := &plainExt, byte('=')
		if hdr {
			table, special = &plainHdr, '|'
		}
		for c := 0; c < 256; c++ {
			for pos := 0; pos < 16; pos++ {
				b := []byte("abcdefghijklmnopq")
				b[pos] = byte(c)
				want := pos
				if table[c] {
					want = len(b)
				}
				if got := plainLen(string(b), special, table, 1<<20); got != want {
					t.Fatalf("header=%v byte %#x at %d: plainLen = %d, want %d", hdr, c, pos, got, want)
				}
				if got := plainLen(string(b), special, table, 5); got != min(want, 5) {
					t.Fatalf("max 5: got %d", got)
				}
			}
		}
	}
}
