package xensource

import (
	"strings"
	"testing"
	"time"
)

// TestGrouperAttachesBacktrace: a failure block interleaved with other
// threads' lines becomes one entry with its frames; other lines pass
// through untouched, and the explicit log_backtrace block of another
// thread is a separate entry.
func TestGrouperAttachesBacktrace(t *testing.T) {
	log := `Feb 14 23:59:59 xcp83 xapi: [error||0 |Xapi.watchdog|backtrace] 13/14 xapi Called from file ocaml/libs/log/debug.ml, line 250
Feb 14 23:59:59 xcp83 xapi: [error||0 ||backtrace] Xapi.watchdog failed with exception Xmlm.Error(1:1, "expected root element")
Feb 14 23:59:59 xcp83 xapi: [error||0 ||backtrace] Raised Xmlm.Error(1:1, "expected root element")
Feb 14 23:59:59 xcp83 xapi: [debug||77 |Async.VM.start R:0a1b2c3d4e5f|xenops] xenops: VM.start 2c6f6a55-0d1e-4f0a-9c6e-3f5e7a9b1c2d
Feb 14 23:59:59 xcp83 xenopsd-xc: [error||0 ||backtrace] Raised Not_found
Feb 14 23:59:59 xcp83 xapi: [error||0 ||backtrace] 1/11 xapi Raised at file ocaml/libs/log/debug.ml, line 279
Feb 14 23:59:59 xcp83 xapi: [error||0 ||backtrace] 2/11 xapi Called from file ocaml/libs/xapi-stdext/lib/xapi-stdext-pervasives/pervasiveext.ml, line 24
Feb 14 23:59:59 xcp83 xapi: [error||0 ||backtrace] 
Feb 14 23:59:59 xcp83 xenopsd-xc: [error||0 ||backtrace] 1/1 xenopsd-xc Raised at file a.ml, line 1
Feb 15 00:00:30 xcp83 xapi: [debug||77 |Async.VM.start R:0a1b2c3d4e5f|xenops] later
`
	sc := NewScanner("xcp83", time.Date(2027, 2, 15, 0, 0, 0, 0, time.UTC), time.UTC)
	var got []string
	emit := func(e *Entry) {
		got = append(got, e.Line.Program+"|"+e.Line.Msg+"|"+strings.Join(e.Backtrace, "/"))
	}
	if err := sc.Scan(strings.NewReader(log), emit); err != nil {
		t.Fatal(err)
	}
	sc.Flush(emit)
	want := []string{
		"xapi|xenops: VM.start 2c6f6a55-0d1e-4f0a-9c6e-3f5e7a9b1c2d|",
		"xapi|13/14 xapi Called from file ocaml/libs/log/debug.ml, line 250|", // closed by the new head
		`xapi|Xapi.watchdog failed with exception Xmlm.Error(1:1, "expected root element")|Raised Xmlm.Error(1:1, "expected root element")/1/11 xapi Raised at file ocaml/libs/log/debug.ml, line 279/2/11 xapi Called from file ocaml/libs/xapi-stdext/lib/xapi-stdext-pervasives/pervasiveext.ml, line 24`,
		"xenopsd-xc|Raised Not_found|1/1 xenopsd-xc Raised at file a.ml, line 1", // closed by MaxWait
		"xapi|later|",
	}
	// The first block (thread 0, no trailing empty line) is closed when the
	// "failed with exception" head of the same thread arrives.
	if strings.Join(got, "\n") != strings.Join(reorder(want), "\n") {
		t.Fatalf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(reorder(want), "\n"))
	}
	if sc.Stats.Entries != 5 || sc.Stats.Lines != 10 {
		t.Fatalf("stats %+v", sc.Stats)
	}
}

// reorder puts want in emission order: a pass-through line is emitted at
// once, blocks when they close.
func reorder(w []string) []string { return []string{w[1], w[0], w[2], w[3], w[4]} }

func TestGrouperMaxLines(t *testing.T) {
	g := Grouper{MaxLines: 3}
	var n, frames int
	emit := func(e *Entry) { n++; frames += len(e.Backtrace) }
	var l Line
	for i := 0; i < 10; i++ {
		if err := Parse("Jan  1 00:00:00 h xapi: [error||5 ||backtrace] frame", &l); err != nil {
			t.Fatal(err)
		}
		g.Feed("h", time.Unix(0, 0), &l, emit)
	}
	g.Flush(emit)
	if n != 3 || frames != 7 {
		t.Fatalf("entries %d frames %d: a block must be capped at MaxLines", n, frames)
	}
}

func TestScannerOverlongAndJunk(t *testing.T) {
	in := "Jan  1 00:00:00 h xapi: [debug||1 ||x] ok\n" + strings.Repeat("A", 5000) + "\n\x00\xff\xfe junk\n\nJan  1 00:00:01 h xapi: [debug||1 ||x] ok2"
	sc := NewScanner("h", time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC), time.UTC)
	sc.MaxLine = 1024
	var msgs []string
	if err := sc.Scan(strings.NewReader(in), func(e *Entry) { msgs = append(msgs, e.Line.Msg) }); err != nil {
		t.Fatal(err)
	}
	if strings.Join(msgs, ",") != "ok,ok2" {
		t.Fatalf("got %v", msgs)
	}
	if sc.Stats.Overlong != 1 || sc.Stats.Bad[ErrKindTimestamp] != 1 || sc.Stats.Bad[ErrKindEmpty] != 1 || sc.Stats.Lines != 5 {
		t.Fatalf("stats %+v", sc.Stats)
	}
}
