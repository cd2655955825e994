package syslogframe

import (
	"errors"
	"strings"
	"testing"
)

func TestReadBothFramings(t *testing.T) {
	in := "11 <13>1 - a b\n<13>line two\n\n" + strings.Repeat("x", 40) + "\n3 abc"
	var got []string
	var long []bool
	err := Read(strings.NewReader(in), 20, func(m []byte, overlong bool) {
		got = append(got, string(m))
		long = append(long, overlong)
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"<13>1 - a b", "\n<13>line two", strings.Repeat("x", 20), "abc"}
	// the octet-counted frame takes exactly 11 bytes; the LF after it starts the next frame
	if len(got) != len(want) {
		t.Fatalf("got %q", got)
	}
	if got[0] != want[0] || !strings.Contains(got[1], "<13>line two") || got[2] != want[2] || !long[2] || got[3] != "abc" || long[0] || long[3] {
		t.Errorf("got %q overlong %v", got, long)
	}
}

func TestReadBadCountEndsTheStream(t *testing.T) {
	err := Read(strings.NewReader("99999999 x"), 100, func([]byte, bool) { t.Error("no message expected") })
	if !errors.Is(err, ErrBadCount) {
		t.Fatalf("want ErrBadCount, got %v", err)
	}
}
