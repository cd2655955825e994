package xensource

import (
	"bufio"
	"os"
	"strings"
	"testing"
	"time"
	"unsafe"
)

func seedLines(f *testing.F) {
	fh, err := os.Open("testdata/quoted.log")
	if err != nil {
		f.Fatal(err)
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		f.Add(sc.Text())
	}
	base := time.Date(2026, 12, 31, 23, 59, 0, 0, time.UTC)
	for i, name := range []string{"start", "pool_migrate", "clone"} {
		for _, hl := range Render(testOp(i, name, "failure", base)) {
			f.Add(hl.Line)
		}
	}
}

// within reports whether s points into base (or is empty): Parse must
// never invent text.
func within(s, base string) bool {
	if s == "" {
		return true
	}
	p := uintptr(unsafe.Pointer(unsafe.StringData(s)))
	b := uintptr(unsafe.Pointer(unsafe.StringData(base)))
	return p >= b && p+uintptr(len(s)) <= b+uintptr(len(base))
}

// FuzzParse: no panic on any input; every field is a slice of the input;
// a successful parse has a kind, a valid time and (for toolstack lines) a
// level and module; Clone is faithful.
func FuzzParse(f *testing.F) {
	seedLines(f)
	f.Fuzz(func(t *testing.T, s string) {
		var l Line
		err := Parse(s, &l)
		for _, fld := range []string{l.SyslogHost, l.Tag, l.Program, l.InnerTime, l.Level, l.Field2, l.ThreadName,
			l.Client, l.Task, l.TaskName, l.TaskShortID, l.Module, l.Msg} {
			if !within(fld, s) {
				t.Fatalf("field %q is not part of the input", fld)
			}
		}
		_ = l.Message()
		if err != nil {
			if _, ok := err.(*ParseError); !ok {
				t.Fatalf("untyped error %T", err)
			}
			return
		}
		if l.Kind == 0 || l.Stamp.Month < 1 || l.Stamp.Month > 12 || l.Stamp.Day < 1 || l.Stamp.Day > 31 {
			t.Fatalf("bad parse %+v", l)
		}
		if l.Kind == KindToolstack && (l.Level == "" || l.Module == "") {
			t.Fatalf("toolstack line without level/module: %+v", l)
		}
		if l.TaskRefKind != 0 && len(l.TaskShortID) != 12 {
			t.Fatalf("short id %q", l.TaskShortID)
		}
		c := l.Clone()
		c.raw, l.raw = "", ""
		if c != l {
			t.Fatalf("clone differs:\n%+v\n%+v", c, l)
		}
	})
}

// FuzzEscape: Unescape inverts Escape; escaped text is printable ASCII.
func FuzzEscape(f *testing.F) {
	for _, s := range []string{"", "Café", `a\b`, "\x00\n\xff", `\x41`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e := Escape(s)
		for i := 0; i < len(e); i++ {
			if e[i] < 0x20 || e[i] >= 0x7f {
				t.Fatalf("non-printable byte in %q", e)
			}
		}
		if u := Unescape(e); u != s {
			t.Fatalf("Unescape(Escape(%q)) = %q", s, u)
		}
		_ = Unescape(s)
	})
}

// FuzzDerive: arbitrary multi-line input through the scanner and deriver
// never panics, and every record it yields passes Validate.
func FuzzDerive(f *testing.F) {
	base := time.Date(2026, 12, 31, 23, 59, 0, 0, time.UTC)
	for i, name := range allOps {
		f.Add(dump(Render(testOp(i, name, []string{"success", "failure", "cancelled"}[i%3], base))))
	}
	f.Fuzz(func(t *testing.T, s string) {
		sc := NewScanner("xen1", base.Add(time.Hour), time.UTC)
		sc.MaxLine = 4096
		d := NewDeriver(Config{PoolUUID: testPool, Hosts: testHosts, Master: "xen1", IdleTimeout: time.Minute})
		var n int
		check := func(e *Entry) {
			for _, r := range d.Feed(e) {
				n++
				if err := r.Validate(); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := sc.Scan(strings.NewReader(s), check); err != nil {
			t.Fatal(err)
		}
		sc.Flush(check)
		for _, r := range d.Flush() {
			if err := r.Validate(); err != nil {
				t.Fatal(err)
			}
		}
	})
}
