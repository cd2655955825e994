package logsource_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/logsource"
	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/agent/xapi/xapisim"
	"github.com/vmlineage/vmlineage/agent/xensource"
)

// splitLine returns a file line's tag and message (what a forwarding
// rsyslog puts after its own header).
func splitLine(t testing.TB, s string) (tag, msg string) {
	var l xensource.Line
	if err := xensource.Parse(s, &l); err != nil {
		t.Fatalf("%v: %s", err, s)
	}
	i := strings.Index(s, " "+l.Tag+": ")
	return l.Tag, s[i+len(l.Tag)+3:]
}

// TestSyslogScenario forwards the every-activity scenario's host logs over
// TCP — xen1 as RFC 5424 octet-counted frames, the others as RFC 3164
// LF-terminated lines — and a noise line per host over UDP, and requires
// the records the replay test gets.
func TestSyslogScenario(t *testing.T) {
	sc, err := xapisim.Builtin("every-activity")
	if err != nil {
		t.Fatal(err)
	}
	srv := xapisim.New(xapisim.Config{Scenario: sc})
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := srv.Play(ctx, sc, 0); err != nil {
		t.Fatal(err)
	}
	truth, _ := srv.Truth()
	lines := srv.HostLogLines()
	// One stream in time order, as one forwarding relay would send it.
	sortByTime(lines)
	st := openStore(t, t.TempDir())
	e := logsource.NewEngine(st, logsource.EngineConfig{Deriver: deriverConfig(srv), Mode: logsource.Active, Now: srv.Now, Log: testLogger(t)})
	sl := logsource.NewSyslog(e, logsource.SyslogConfig{HostAlias: map[string]string{"xen1.example.org": "xen1"}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go sl.ServeTCP(ctx, ln)
	go sl.ServeUDP(ctx, pc)
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	for _, hl := range lines {
		tag, msg := splitLine(t, hl.Line)
		if hl.Host == "xen1" {
			m := fmt.Sprintf("<134>1 %s xen1.example.org %s - - - %s", hl.Time.UTC().Truncate(time.Second).Format(time.RFC3339), tag, msg)
			fmt.Fprintf(&buf, "%d %s", len(m), m)
		} else {
			fmt.Fprintf(&buf, "<134>%s\n", hl.Line)
		}
	}
	if _, err := c.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	c.Close()
	// The datagram only after the stream: a line far ahead in one host's
	// time would let the deriver close that host's tasks early.
	waitFor(t, 20*time.Second, "the TCP stream", func() bool { return sl.Stats().Messages >= int64(len(lines)) })
	u, err := net.Dial("udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(u, "<30>Mar  1 10:30:00 xen2 squeezed: [debug||4 ||squeeze_xen] total_range = 0")
	u.Write([]byte("\x00\x01binary junk\xff"))
	u.Close()
	want := int64(len(lines)) + 1
	waitFor(t, 20*time.Second, "every message", func() bool { s := sl.Stats(); return s.Messages >= want && s.Bad >= 1 })
	if err := e.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	s := sl.Stats()
	t.Logf("syslog: %+v", s)
	if s.Messages != want || s.Bad != 1 {
		t.Errorf("messages %d (want %d), bad %d (want 1: the junk datagram)", s.Messages, want, s.Bad)
	}
	compare(t, logTruth(truth), storedRecords(t, st))
}

func sortByTime(ls []xensource.HostLine) {
	// Stable: each host's own order is kept for equal times.
	for i := 1; i < len(ls); i++ {
		for j := i; j > 0 && ls[j].Time.Before(ls[j-1].Time); j-- {
			ls[j], ls[j-1] = ls[j-1], ls[j]
		}
	}
}

// FuzzSyslog feeds arbitrary bytes as one datagram and as a TCP stream:
// no panic, and a message is either counted or refused.
func FuzzSyslog(f *testing.F) {
	for _, s := range []string{
		"<134>Mar  1 10:00:00 xen1 xapi: [ info||1 |VM.start R:0123456789ab|audit] VM.start: VM = 'x (y)'",
		"<134>1 2024-03-01T10:00:00Z xen1 xapi - - - [debug||2 |Async.VM.clone R:0123456789ab|dispatcher] spawning",
		"52 <134>1 2024-03-01T10:00:00Z xen1 xapi - - - hello\n12 <13>Mar  1 1",
		"Mar  1 10:00:00 xen1 xapi: [ info||1 ||x] plain file line",
		"<13>Mar  1 10:00:00 xen1 xapi: [ info||1 |Async.VM.start R:0123456789ab|backtrace] Async.VM.start R:0123456789ab failed with exception Server_error(X, [ ])",
		"\xff\xfe\x00junk", "<999>", "99999999999 x", "<134>Feb 30 25:61:61 h t: m",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e := logsource.NewEngine(nil, logsource.EngineConfig{Mode: logsource.Active,
			Deriver: xensource.Config{PoolUUID: "p", Hosts: map[string]string{"xen1": "u1"}}})
		sl := logsource.NewSyslog(e, logsource.SyslogConfig{})
		_ = sl.Handle(b)
		_ = sl.ReadStream(bytes.NewReader(b))
		s := sl.Stats()
		if s.Messages < 0 || s.Bad < 0 {
			t.Fatal("negative counters")
		}
		for _, r := range e.Pending() {
			if r.Source != record.SourceLog {
				t.Fatalf("record with source %q", r.Source)
			}
		}
	})
}
