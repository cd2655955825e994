package xensource

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files")

// golden is the comparable view of a parsed line.
type golden struct {
	Raw         string `json:"raw"`
	Err         string `json:"err,omitempty"`
	Kind        string `json:"kind,omitempty"`
	Stamp       string `json:"stamp,omitempty"`
	SyslogHost  string `json:"syslog_host,omitempty"`
	Tag         string `json:"tag,omitempty"`
	Program     string `json:"program,omitempty"`
	Repeated    int    `json:"repeated,omitempty"`
	InnerTime   string `json:"inner_time,omitempty"`
	Level       string `json:"level,omitempty"`
	Field2      string `json:"field2,omitempty"`
	ThreadID    int    `json:"thread_id,omitempty"`
	ThreadName  string `json:"thread_name,omitempty"`
	Client      string `json:"client,omitempty"`
	TaskName    string `json:"task_name,omitempty"`
	TaskRefKind string `json:"task_ref_kind,omitempty"`
	TaskShortID string `json:"task_short_id,omitempty"`
	Module      string `json:"module,omitempty"`
	Message     string `json:"message,omitempty"`
}

func toGolden(raw string, l *Line, err error) golden {
	g := golden{Raw: raw}
	if err != nil {
		var pe *ParseError
		if !errors.As(err, &pe) {
			g.Err = "untyped: " + err.Error()
		} else {
			g.Err = pe.Kind.String()
		}
		if pe == nil || pe.Kind != ErrKindHeader {
			return g
		}
	}
	st := l.Stamp
	g.Stamp = time.Date(st.Year, st.Month, st.Day, st.Hour, st.Minute, st.Second, st.Nanos, time.FixedZone("", st.Offset)).Format("2006-01-02T15:04:05.999999999Z07:00")
	g.Kind, g.SyslogHost, g.Tag, g.Program, g.Repeated = l.Kind.String(), l.SyslogHost, l.Tag, l.Program, l.Repeated
	g.InnerTime, g.Level, g.Field2, g.ThreadID, g.ThreadName, g.Client = l.InnerTime, l.Level, l.Field2, l.ThreadID, l.ThreadName, l.Client
	g.TaskName, g.TaskShortID, g.Module, g.Message = l.TaskName, l.TaskShortID, l.Module, l.Message()
	if l.TaskRefKind != 0 {
		g.TaskRefKind = string(l.TaskRefKind)
	}
	return g
}

// TestGoldenQuoted parses real lines quoted in the reference (bug reports,
// blogs, lnav test data, xapi's own test) and compares every field.
func TestGoldenQuoted(t *testing.T) {
	f, err := os.Open("testdata/quoted.log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var got []golden
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l Line
		err := Parse(sc.Text(), &l)
		got = append(got, toGolden(sc.Text(), &l, err))
	}
	b, _ := json.MarshalIndent(got, "", "  ")
	if *update {
		if err := os.WriteFile("testdata/quoted.golden.json", append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile("testdata/quoted.golden.json")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(want)) != strings.TrimSpace(string(b)) {
		var w []golden
		_ = json.Unmarshal(want, &w)
		for i := range got {
			if i >= len(w) || got[i] != w[i] {
				gj, _ := json.Marshal(got[i])
				var wj []byte
				if i < len(w) {
					wj, _ = json.Marshal(w[i])
				}
				t.Errorf("line %d:\n got %s\nwant %s", i+1, gj, wj)
			}
		}
		if len(w) != len(got) {
			t.Errorf("got %d lines, golden has %d", len(got), len(w))
		}
	}
}

func TestParseZeroAlloc(t *testing.T) {
	line := []byte("Feb 14 23:59:59 xcp83 xapi: [ info||1234 HTTPS 10.0.0.5->|Async.VM.start R:0a1b2c3d4e5f|dispatcher] spawning a new thread to handle the current task (trackid=d41d8cd98f00b204e9800998ecf8427e)\n")
	var l Line
	n := testing.AllocsPerRun(1000, func() {
		if err := ParseBytes(line, &l); err != nil {
			t.Fatal(err)
		}
	})
	if n != 0 {
		t.Fatalf("Parse allocates %.1f times per line, want 0", n)
	}
	if l.TaskShortID != "0a1b2c3d4e5f" || l.Client != "HTTPS 10.0.0.5" || l.Module != "dispatcher" {
		t.Fatalf("bad parse: %+v", l)
	}
}

func TestCloneOwnsMemory(t *testing.T) {
	buf := []byte("Jul  9 17:20:00 xcp83 xapi: [debug||77 |Async.VM.clone R:8b8a1b914f63|audit] VM.clone: VM = 'x'")
	var l Line
	if err := ParseBytes(buf, &l); err != nil {
		t.Fatal(err)
	}
	c := l.Clone()
	for i := range buf {
		buf[i] = 'Z'
	}
	if c.TaskShortID != "8b8a1b914f63" || c.Module != "audit" || c.Msg != "VM.clone: VM = 'x'" || c.Program != "xapi" {
		t.Fatalf("clone changed with the buffer: %+v", c)
	}
}

func TestEscapeRoundTrip(t *testing.T) {
	for _, s := range []string{"plain", "Café", "a\\b", "tab\there\nnl", "\x00\xff\x7f", `\x41 literal`} {
		e := Escape(s)
		for i := 0; i < len(e); i++ {
			if e[i] < 0x20 || e[i] >= 0x7f {
				t.Fatalf("Escape(%q) = %q holds a non-printable byte", s, e)
			}
		}
		if u := Unescape(e); u != s {
			t.Fatalf("Unescape(Escape(%q)) = %q", s, u)
		}
	}
	if got := Escape("Café"); got != `Caf\xC3\xA9` {
		t.Fatalf("Escape(Café) = %q, want Caf\\xC3\\xA9 (capital hex, as xapi)", got)
	}
	// Unknown escapes and truncated ones are kept verbatim.
	if got := Unescape(`a\qb\x4`); got != `a\qb\x4` {
		t.Fatalf("got %q", got)
	}
}

func TestParseMessageOnly(t *testing.T) {
	l := Line{Program: "xapi", SyslogHost: "xen1"}
	if err := ParseMessage("[ info||12 |Async.VM.start R:0a1b2c3d4e5f|xenops] xenops: VM.start 2c6f6a55-0d1e-4f0a-9c6e-3f5e7a9b1c2d", &l); err != nil {
		t.Fatal(err)
	}
	if l.Kind != KindToolstack || l.TaskShortID != "0a1b2c3d4e5f" || l.Module != "xenops" || l.Program != "xapi" {
		t.Fatalf("%+v", l)
	}
	l = Line{Program: "xapi"}
	if err := ParseMessage("[broken", &l); err != ErrBadHeader || l.Kind != KindPlain || l.Msg != "[broken" {
		t.Fatalf("%v %+v", err, l)
	}
}
