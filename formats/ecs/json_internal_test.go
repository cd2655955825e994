package ecs

import "testing"

// TestPlainLen checks the eight-byte fast path against the byte table, for
// every byte at every position of a 17-byte string.
func TestPlainLen(t *testing.T) {
	for c := 0; c < 256; c++ {
		for pos := 0; pos < 17; pos++ {
			b := []byte("abcdefghijklmnopq")
			b[pos] = byte(c)
			want := pos
			if safe[c] {
				want = len(b)
			}
			if got := plainLen(string(b)); got != want {
				t.Fatalf("byte %#x at %d: plainLen = %d, want %d", c, pos, got, want)
			}
		}
	}
}
