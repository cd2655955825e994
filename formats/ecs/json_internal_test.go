package ecs

import (
	"math/rand/v2"
	"testing"
	"time"
)

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

// TestAppendTime compares the hand-written date arithmetic with the standard
// library across leap years, centuries and the epoch.
func TestAppendTime(t *testing.T) {
	check := func(tm time.Time) {
		want := `"` + tm.UTC().Format("2006-01-02T15:04:05.000Z07:00") + `"`
		if got := string(appendTime(nil, tm)); got != want {
			t.Fatalf("appendTime(%v) = %s, want %s", tm, got, want)
		}
	}
	for _, tm := range []time.Time{{}, time.Unix(0, 0), time.Unix(-1, 0), time.Date(2000, 2, 29, 23, 59, 59, 999_999_999, time.UTC),
		time.Date(1900, 3, 1, 0, 0, 0, 0, time.UTC), time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC),
		time.Date(2026, 11, 25, 10, 0, 0, 123_000_000, time.FixedZone("x", 5*3600+1800))} {
		check(tm)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 200000; i++ {
		check(time.Unix(r.Int64N(253402300799+62135596800)-62135596800, r.Int64N(1e9)))
	}
}
