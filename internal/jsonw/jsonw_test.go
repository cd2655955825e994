package jsonw

import (
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
)

var parts = []string{"a", "vm-1", "<", ">", "&", `"`, `\`, "\n", "\r", "\t", "\b", "\f", "\x00", "\x1f", "\x7f", "é", "🙂",
	"\u2028", "\u2029", "\xff", "\xe2\x80", "\xed\xa0\x80", " "}

// AppendString writes what encoding/json writes for every string: random
// joins of the characters it escapes, control bytes, U+2028/9 and invalid
// UTF-8 (a lone continuation byte, a cut sequence, a surrogate).
func TestAppendStringLikeMarshal(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 20000; i++ {
		var sb strings.Builder
		for n := rng.IntN(6); n > 0; n-- {
			sb.WriteString(parts[rng.IntN(len(parts))])
		}
		checkString(t, sb.String())
	}
}

func checkString(t *testing.T, s string) {
	t.Helper()
	want, _ := json.Marshal(s)
	if got := AppendString([]byte("x"), s); string(got) != "x"+string(want) {
		t.Fatalf("%q: got %s, want %s", s, got[1:], want)
	}
}

func TestAppendOmit(t *testing.T) {
	if got := string(AppendOmit([]byte("{"), `"k":`, "")); got != "{" {
		t.Fatalf("empty: %s", got)
	}
	if got := string(AppendOmit([]byte("{"), `"k":`, "<v>")); got != `{"k":"\u003cv\u003e"` {
		t.Fatalf("set: %s", got)
	}
}

// FuzzAppendString: any string is written as encoding/json writes it.
func FuzzAppendString(f *testing.F) {
	for _, p := range parts {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, s string) { checkString(t, s) })
}
