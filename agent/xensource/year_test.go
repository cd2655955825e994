package xensource

import (
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // zone tests must not depend on the host having tzdata
)

func stampOf(t *testing.T, line string) Stamp {
	t.Helper()
	var l Line
	if err := Parse(line+" h xapi: x", &l); err != nil {
		t.Fatalf("%q: %v", line, err)
	}
	return l.Stamp
}

// TestYearRollover reads a file written across New Year, with the file's
// mtime (the reference) in January: December lines belong to the year
// before, January lines to the reference year.
func TestYearRollover(t *testing.T) {
	ref := time.Date(2027, 1, 1, 0, 10, 0, 0, time.UTC)
	y := NewYearInferer(ref, time.UTC)
	for _, c := range []struct{ stamp, want string }{
		{"Dec 31 23:59:58", "2026-12-31T23:59:58Z"},
		{"Dec 31 23:59:59", "2026-12-31T23:59:59Z"},
		{"Dec 31 23:59:57", "2026-12-31T23:59:57Z"}, // small clock step back: same year
		{"Jan  1 00:00:00", "2027-01-01T00:00:00Z"},
		{"Jan  1 00:00:01", "2027-01-01T00:00:01Z"},
	} {
		if got := y.Infer(stampOf(t, c.stamp)).Format(time.RFC3339); got != c.want {
			t.Errorf("%s: got %s, want %s", c.stamp, got, c.want)
		}
	}
}

// TestYearRolloverLive: a live tail whose reference is "now" in December
// keeps December in the current year and moves to the next on January.
func TestYearRolloverLive(t *testing.T) {
	y := NewYearInferer(time.Date(2026, 12, 31, 23, 0, 0, 0, time.UTC), time.UTC)
	got := []string{}
	for _, s := range []string{"Dec 30 10:00:00", "Dec 31 23:59:59", "Jan  1 00:00:05", "Feb  3 01:00:00"} {
		got = append(got, y.Infer(stampOf(t, s)).Format(time.DateOnly))
	}
	want := "2026-12-30 2026-12-31 2027-01-01 2027-02-03"
	if strings.Join(got, " ") != want {
		t.Fatalf("got %v, want %s", got, want)
	}
}

// TestYearMonthWrapWithinFile: a long file (a year of logs) wraps once per
// December → January and never otherwise.
func TestYearMonthWrapWithinFile(t *testing.T) {
	y := NewYearInferer(time.Date(2028, 3, 1, 0, 0, 0, 0, time.UTC), time.UTC)
	var got []int
	for _, s := range []string{"Nov 20 00:00:00", "Dec 31 12:00:00", "Jan  2 00:00:00", "Jun  1 00:00:00",
		"Dec 25 00:00:00", "Jan  1 00:00:00", "Feb 29 12:00:00"} {
		got = append(got, y.Infer(stampOf(t, s)).Year())
	}
	// The first line takes the reference year (2028) unless that puts it
	// after the reference: Nov 2028 > Mar 2028, so 2027.
	want := []int{2027, 2027, 2028, 2028, 2028, 2029, 2029}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
}

func TestYearZoneAndExplicitYear(t *testing.T) {
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal("Europe/Paris:", err) // time/tzdata is embedded in this test binary
	}
	y := NewYearInferer(time.Date(2026, 7, 1, 0, 0, 0, 0, time.UTC), paris)
	got := y.Infer(stampOf(t, "Jun 30 12:00:00"))
	if got.UTC().Format(time.RFC3339) != "2026-06-30T10:00:00Z" {
		t.Fatalf("local stamp: got %s", got.UTC())
	}
	var l Line
	if err := Parse("2019-01-02T03:04:05.5-02:00 h xapi: x", &l); err != nil {
		t.Fatal(err)
	}
	if got := y.Infer(l.Stamp).UTC().Format(time.RFC3339Nano); got != "2019-01-02T05:04:05.5Z" {
		t.Fatalf("RFC 3339 stamp: got %s", got)
	}
}
