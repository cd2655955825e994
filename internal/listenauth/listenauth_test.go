package listenauth

import (
	"errors"
	"testing"
)

func TestCheck(t *testing.T) {
	for _, c := range []struct {
		addr, token string
		ok          bool
	}{
		{"127.0.0.1:8080", "", true},
		{"localhost:8080", "", true},
		{"[::1]:8080", "", true},
		{"0.0.0.0:8080", "", false},
		{":8080", "", false},
		{"0.0.0.0:8080", "short", false},
		{"0.0.0.0:8080", "0123456789abcdef", true},
	} {
		if err := Check(c.addr, c.token); (err == nil) != c.ok {
			t.Errorf("Check(%q, %q) = %v, want ok %v", c.addr, c.token, err, c.ok)
		}
	}
	if !errors.Is(Check("0.0.0.0:1", ""), ErrTokenRequired) {
		t.Error("no token off loopback: want ErrTokenRequired")
	}
}

func TestBearerOK(t *testing.T) {
	const tok = "0123456789abcdef"
	for h, want := range map[string]bool{
		"Bearer " + tok:          true,
		"bearer " + tok:          true,
		"  BEARER  " + tok + " ": true,
		"Bearer " + tok + "x":    false,
		"Basic " + tok:           false,
		tok:                      false,
		"":                       false,
	} {
		if got := BearerOK(h, tok); got != want {
			t.Errorf("BearerOK(%q) = %v, want %v", h, got, want)
		}
	}
}
