package ecs

import "testing"

// TestPlain8 checks the eight-byte fast path against the byte table.
func TestPlain8(t *testing.T) {
	for c := 0; c < 256; c++ {
		for pos := 0; pos < 8; pos++ {
			b := []byte("abcdefgh")
			b[pos] = byte(c)
			want := safe[c]
			if got := plain8(string(b)); got != want {
				t.Fatalf("byte %#x at %d: plain8 = %v, want %v", c, pos, got, want)
			}
		}
	}
}
