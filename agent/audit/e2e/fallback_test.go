package e2e

import (
	"compress/gzip"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/audit"
	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/agent/xapi/xapisim"
	"github.com/vmlineage/vmlineage/internal/receivers"
)

// waitWritten waits until the simulator's writer has put every audit line
// in the files.
func waitWritten(t *testing.T, p *simPool, w *xapisim.HostLogWriter) {
	t.Helper()
	wait(t, "audit.log files written", func() bool {
		n := 0
		for _, h := range []string{"fin1", "fin2"} {
			n += len(p.srv.AuditLines(h))
		}
		return w.AuditWritten() >= int64(n)
	})
}

func extraLine(host string, i int) string {
	return xapisim.AuditEntry{Host: host, Time: time.Date(2024, 3, 4, 9, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Millisecond),
		ThreadID: 9, Task: fmt.Sprintf("Async.VM.start R:%012x", 0xe0000+i), TrackID: strings.Repeat("c", 32),
		SubjectID: "LOCAL_SUPERUSER", Subject: "root", Decision: "ALLOWED", Result: "OK", CallType: "API", Action: "VM.start",
		Args: []xapisim.AuditArg{{Name: "vm", Ref: "OpaqueRef:00000000-0000-4000-8000-000000000000"}}}.Line()
}

func gzipFile(t *testing.T, p string) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(p + ".gz")
	if err != nil {
		t.Fatal(err)
	}
	zw := gzip.NewWriter(f)
	zw.Write(b)
	zw.Close()
	f.Close()
	os.Remove(p)
}

// TestFileSourceRotationAndRestart follows the simulator's audit.log files
// through a rename rotation (the old file then gzipped), a copytruncate and
// restarts from the positions stored with the batches: every line of every
// host once, and the actors those lines give equal those from /audit_log.
func TestFileSourceRotationAndRestart(t *testing.T) {
	p := newSimPool(t, "insider", false)
	dir := t.TempDir()
	w := p.srv.WriteHostLogs(dir, 5*time.Millisecond, 0)
	defer w.Close(context.Background())
	p.play(t)
	waitWritten(t, p, w)
	st := openStore(t, t.TempDir())
	col := newCollector(t, st)
	att := audit.NewAttributor(audit.AttributorConfig{})
	sink := func(ctx context.Context, b *audit.Batch) error {
		if err := col.sink(ctx, b); err != nil {
			return err
		}
		att.Add(b)
		return nil
	}
	newSource := func() *audit.FileSource {
		s, err := audit.NewFileSource(audit.FileConfig{Glob: filepath.Join(dir, "*", "audit.log"), PoolUUID: p.srv.PoolUUID(),
			Hosts:       map[string]string{"fin1": "d1d1d1d1-0000-4000-8000-000000000001", "fin2": "d2d2d2d2-0000-4000-8000-000000000002"},
			RotateGrace: time.Millisecond, State: st, BatchLines: 16})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		return s
	}
	poll := func(s *audit.FileSource) {
		t.Helper()
		time.Sleep(5 * time.Millisecond) // past the rename grace
		if err := s.Poll(context.Background(), sink); err != nil {
			t.Fatal(err)
		}
	}
	s := newSource()
	poll(s)
	// Rename rotation of fin1: the writer appends to the renamed file until
	// its HUP (Reopen), then to a new file; logrotate gzips the old one.
	fin1 := w.AuditPath("fin1")
	if err := os.Rename(fin1, fin1+".1"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		p.srv.AppendAuditLine("fin1", extraLine("fin1", i))
	}
	waitWritten(t, p, w)
	w.Reopen()
	for i := 5; i < 12; i++ {
		p.srv.AppendAuditLine("fin1", extraLine("fin1", i))
	}
	waitWritten(t, p, w)
	poll(s)
	poll(s)
	gzipFile(t, fin1+".1")
	// A restart, then a copytruncate of fin2 with lines on both sides.
	s.Close()
	s = newSource()
	for i := 12; i < 20; i++ {
		p.srv.AppendAuditLine("fin2", extraLine("fin2", i))
	}
	waitWritten(t, p, w)
	poll(s)
	for i := 20; i < 23; i++ {
		p.srv.AppendAuditLine("fin2", extraLine("fin2", i))
	}
	waitWritten(t, p, w)
	fin2 := w.AuditPath("fin2")
	b, _ := os.ReadFile(fin2)
	os.WriteFile(fin2+".1", b, 0o644)
	os.Truncate(fin2, 0)
	for i := 23; i < 30; i++ {
		p.srv.AppendAuditLine("fin2", extraLine("fin2", i))
	}
	waitWritten(t, p, w)
	s.Close()
	s = newSource()
	poll(s)
	poll(s)
	for _, h := range []string{"fin1", "fin2"} {
		sameLines(t, h, col.lines[h], p.srv.AuditLines(h))
	}
	if st := s.Stats(); st.Bad != 0 || col.bad != 0 {
		t.Errorf("stats %+v", st)
	}
	// The files give every record the actor /audit_log gives.
	truth, _ := p.srv.Truth()
	for _, r := range truth {
		r := r
		att.Apply(&r)
		if r.Actor == nil || r.Actor.Name != truthActor(p, r).Name || r.Actor.TrackID != truthActor(p, r).TrackID {
			t.Errorf("%s of %s from files: actor %+v", r.Activity, r.VMName, r.Actor)
		}
	}
}

func truthActor(p *simPool, r record.Record) record.Actor {
	truth, _ := p.srv.Truth()
	for _, w := range truth {
		if w.ID == r.ID && w.Actor != nil {
			return *w.Actor
		}
	}
	return record.Actor{}
}

// TestFileSourceMalformedLinesCounted: bad lines are counted and reported,
// other daemons' lines in a shared file are skipped, good lines still come.
func TestFileSourceMalformedLinesCounted(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "xen1", "audit.log")
	os.MkdirAll(filepath.Dir(p), 0o755)
	good := extraLine("xen1", 1)
	content := strings.Join([]string{
		good,
		"Mar  4 09:00:00 xen1 xapi: [20240304T09:00:00.001Z|audit||9 |x R:000000000001|audit] ('trackid=x' 'cut short",
		"Mar  4 09:00:00 xen1 xapi: [debug||9 |x R:000000000001|xenops] another brand",
		"not a syslog line at all",
		extraLine("xen1", 2),
	}, "\n") + "\n"
	os.WriteFile(p, []byte(content), 0o644)
	s, err := audit.NewFileSource(audit.FileConfig{Glob: filepath.Join(dir, "*", "audit.log")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var got []audit.Entry
	var bad int
	var sample error
	if err := s.Poll(context.Background(), func(_ context.Context, b *audit.Batch) error {
		got = append(got, b.Entries...)
		bad += b.Bad
		if b.BadSample != nil {
			sample = b.BadSample
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	if len(got) != 2 || bad != 2 || st.Bad != 2 || st.Other != 1 || sample == nil || !strings.Contains(sample.Error(), "audit.log") {
		t.Errorf("entries %d bad %d stats %+v sample %v", len(got), bad, st, sample)
	}
	if got[0].HostName != "xen1" || got[0].Source != audit.FromFile {
		t.Errorf("entry %+v", got[0])
	}
}

// TestSyslogThroughRsyslog: each host's audit lines go through a real
// rsyslog relay configured as xe host-syslog-reconfigure configures a host
// (UDP, traditional forward format), then TCP, into the SyslogSource.
func TestSyslogThroughRsyslog(t *testing.T) {
	p := newSimPool(t, "insider", false)
	p.play(t)
	for _, tcp := range []bool{false, true} {
		t.Run(map[bool]string{false: "udp", true: "tcp"}[tcp], func(t *testing.T) {
			src := audit.NewSyslogSource(audit.SyslogConfig{PoolUUID: p.srv.PoolUUID()})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var dest string
			if tcp {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				dest = ln.Addr().String()
				go src.ServeTCP(ctx, ln)
			} else {
				pc, err := net.ListenPacket("udp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				dest = pc.LocalAddr().String()
				go src.ServeUDP(ctx, pc)
			}
			relay := receivers.StartRsyslogRelay(t, dest, tcp)
			conn, err := net.Dial("udp", relay.InAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			var mu sync.Mutex
			got := map[string][]string{}
			sink := func(_ context.Context, b *audit.Batch) error {
				mu.Lock()
				defer mu.Unlock()
				for _, e := range b.Entries {
					got[e.HostName] = append(got[e.HostName], e.Line.Message())
				}
				return nil
			}
			// Noise from another facility, forwarded too (*.*).
			fmt.Fprintf(conn, "<30>Mar  4 08:00:00 fin1 squeezed: [debug||3 ||squeeze] balancing")
			want := map[string][]string{}
			n := 0
			for _, h := range []string{"fin1", "fin2"} {
				for _, line := range p.srv.AuditLines(h) {
					// What xapi's syslog(3) call hands the local rsyslog:
					// local6.info, tag xapi, the escaped message.
					i := strings.Index(line, " xapi: ")
					msg := line[i+len(" xapi: "):]
					if _, err := fmt.Fprintf(conn, "<182>%s %s xapi: %s", line[:15], h, msg); err != nil {
						t.Fatal(err)
					}
					want[h] = append(want[h], msg)
					n++
					time.Sleep(time.Millisecond) // UDP: no flood of a local relay
				}
			}
			wait(t, "every line relayed", func() bool {
				src.Flush(ctx, sink)
				return src.Stats().Lines >= int64(n)
			})
			for _, h := range []string{"fin1", "fin2"} {
				sameLines(t, h+" via rsyslog", got[h], want[h])
			}
			if st := src.Stats(); st.Bad != 0 || st.Other < 1 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}
