package alerts

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/alerts/alertstest"
)

// The benchmark's alert source with the syslog intake: a process of its
// own that writes the alerts as CEF lines to the intake's TCP socket, each
// at its due time, as a sensor would. Its timer wakes it late now and then
// (Go sleeps in whole milliseconds when the process is idle), so it notes
// when it wrote each alert, and latency counts from that write: how long
// vmlineage held the alert. A sender inside the host process would also be
// held up by the host's own work, which a sensor's alerts are not: they
// wait in the socket, where the intake's delay counts.

// senderEnv makes the test binary the sender: "addr|lines|stamps|start|interval"
// (start in Unix nanoseconds, interval in nanoseconds).
const senderEnv = "VMLINEAGE_BENCH_SENDER"

// senderChild writes each line of the lines file to addr at its due time
// and then, to the stamps file, when it wrote each (Unix nanoseconds, one
// per line).
func senderChild(spec string) int {
	f := strings.Split(spec, "|")
	if len(f) != 5 {
		fmt.Fprintf(os.Stderr, "%s: want addr|lines|stamps|start|interval, got %q\n", senderEnv, spec)
		return 2
	}
	start, err1 := strconv.ParseInt(f[3], 10, 64)
	interval, err2 := strconv.ParseInt(f[4], 10, 64)
	data, err3 := os.ReadFile(f[1])
	if err := cmpErr(err1, err2, err3); err != nil {
		fmt.Fprintln(os.Stderr, "sender:", err)
		return 2
	}
	lines := bytes.SplitAfter(data, []byte("\n"))
	if len(lines[len(lines)-1]) == 0 {
		lines = lines[:len(lines)-1]
	}
	conn, err := net.Dial("tcp", f[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, "sender:", err)
		return 1
	}
	defer conn.Close()
	stamps := make([]byte, 0, 20*len(lines))
	t0 := time.Unix(0, start)
	for i, l := range lines {
		if d := time.Until(t0.Add(time.Duration(i) * time.Duration(interval))); d > 0 {
			time.Sleep(d)
		}
		stamps = strconv.AppendInt(stamps, time.Now().UnixNano(), 10)
		stamps = append(stamps, '\n')
		if _, err := conn.Write(l); err != nil {
			fmt.Fprintf(os.Stderr, "sender: alert %d: %v\n", i, err)
			return 1
		}
	}
	if err := os.WriteFile(f[2], stamps, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "sender:", err)
		return 1
	}
	return 0
}

func cmpErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// alertSender is the host's side: the intake (a SyslogListener over ord on
// a loopback TCP socket) and the sender process.
type alertSender struct {
	pid    int
	cmd    *exec.Cmd
	out    bytes.Buffer
	stamps string
	n      int
	cancel context.CancelFunc

	mu      sync.Mutex
	emitted []time.Time // by alert index: when the intake emitted it
	failed  int
	left    int
	done    chan struct{}
}

// startSender starts the intake and the sender process, which sends lines
// (one CEF alert each, externalId prefix then the alert's index) one per
// interval from start.
func startSender(tb testing.TB, ctx context.Context, ord *Ordered, lines []byte, start time.Time, interval time.Duration, prefix string) *alertSender {
	n := bytes.Count(lines, []byte("\n"))
	s := &alertSender{n: n, emitted: make([]time.Time, n), left: n, done: make(chan struct{})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	lctx, cancel := context.WithCancel(ctx)
	s.cancel = cancel
	l := &SyslogListener{Ordered: ord, Emit: func(doc []byte) { s.got(doc, prefix, false) },
		OnError: func(raw []byte, err error) { s.got(raw, prefix, true) }}
	go l.ServeTCP(lctx, ln)
	dir := tb.TempDir()
	path := filepath.Join(dir, "alerts.cef")
	if err := os.WriteFile(path, lines, 0o644); err != nil {
		tb.Fatal(err)
	}
	s.stamps = filepath.Join(dir, "stamps")
	s.cmd = exec.Command(os.Args[0], "-test.run=^$")
	s.cmd.Env = append(os.Environ(), senderEnv+"="+strings.Join([]string{ln.Addr().String(), path, s.stamps,
		strconv.FormatInt(start.UnixNano(), 10), strconv.FormatInt(int64(interval), 10)}, "|"))
	s.cmd.Stdout, s.cmd.Stderr = &s.out, &s.out
	if err := s.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	s.pid = s.cmd.Process.Pid
	// A run that fails before collect leaves neither the sender nor the
	// listener behind.
	tb.Cleanup(func() {
		cancel()
		if s.cmd.ProcessState == nil {
			s.cmd.Process.Kill()
			s.cmd.Wait()
		}
	})
	return s
}

// got takes an emitted document (or a refused message) and marks its alert.
func (s *alertSender) got(doc []byte, prefix string, refused bool) {
	t := time.Now()
	i := -1
	if k := bytes.Index(doc, []byte(prefix)); k >= 0 {
		rest := doc[k+len(prefix):]
		j := 0
		for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
			j++
		}
		i, _ = strconv.Atoi(string(rest[:j]))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if i < 0 || i >= s.n || !s.emitted[i].IsZero() {
		s.failed++ // not one of ours, or twice: counted, never waited for
		return
	}
	s.emitted[i] = t
	if refused {
		s.failed++
	}
	if s.left--; s.left == 0 {
		close(s.done)
	}
}

// awaitOut waits until every alert has come out of the intake, or fails
// the run at deadline (the sender killed: it may be blocked writing to an
// intake that stopped reading).
func (s *alertSender) awaitOut(tb testing.TB, deadline time.Time) {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-s.done:
	case <-t.C:
		s.cmd.Process.Kill()
		s.mu.Lock()
		left, failed := s.left, s.failed
		s.mu.Unlock()
		tb.Fatalf("%d of %d alerts never came out of the intake (%d documents not of the run, twice or refused)", left, s.n, failed)
	}
}

// collect reaps the sender and returns, by alert, the latency from its
// write, the sender's lateness (from the due time to the write), the
// latency from the due time and when it was written, and how many alerts
// failed. Call it after awaitOut.
func (s *alertSender) collect(tb testing.TB, start time.Time, interval time.Duration) (lat, late, fromDue []time.Duration, sent []time.Time, failed int) {
	if err := s.cmd.Wait(); err != nil {
		tb.Fatalf("alert sender: %v: %s", err, s.out.String())
	}
	raw, err := os.ReadFile(s.stamps)
	if err != nil {
		tb.Fatal(err)
	}
	f := strings.Fields(string(raw))
	if len(f) != s.n {
		tb.Fatalf("sender wrote %d stamps for %d alerts", len(f), s.n)
	}
	lat, late, fromDue, sent = make([]time.Duration, s.n), make([]time.Duration, s.n), make([]time.Duration, s.n), make([]time.Time, s.n)
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, v := range f {
		ns, _ := strconv.ParseInt(v, 10, 64)
		// All on the wall clock: the stamps come from another process.
		due, out := start.Round(0).Add(time.Duration(i)*interval), s.emitted[i].Round(0)
		sent[i] = time.Unix(0, ns)
		lat[i], late[i], fromDue[i] = out.Sub(sent[i]), sent[i].Sub(due), out.Sub(due)
	}
	return lat, late, fromDue, sent, s.failed
}

// The benchmark's sender and intake, end to end on a small store: every
// alert comes out once, after it was written, and the sender writes each
// at or after its due time, in order.
func TestAlertSender(t *testing.T) {
	ctx := context.Background()
	svc, err := NewService(ctx, alertstest.ThreatModel(t))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	ord := NewOrdered(NewEnricher(svc, nil, nil), 0)
	defer ord.Close()
	const n, interval = 40, 2 * time.Millisecond
	var lines []byte
	for i := 0; i < n; i++ {
		lines = fmt.Appendf(lines, "CEF:0|vmlineage|test|1.0|100|beacon|5|rt=%d src=%s externalId=sendtest-%d\n",
			alertstest.At(200).UnixMilli(), alertstest.VMIP["vm1"], i)
	}
	start := time.Now().Add(200 * time.Millisecond)
	s := startSender(t, ctx, ord, lines, start, interval, "sendtest-")
	s.awaitOut(t, start.Add(time.Minute))
	lat, late, fromDue, sent, failed := s.collect(t, start, interval)
	if failed != 0 {
		t.Fatalf("%d failed", failed)
	}
	for i := range lat {
		// Out after it was written, written no sooner than due (and not
		// absurdly later), one write after the other.
		if lat[i] <= 0 || late[i] < 0 || late[i] > time.Second || fromDue[i] < lat[i] || (i > 0 && sent[i].Before(sent[i-1])) {
			t.Fatalf("alert %d: latency %s, sender late %s, from due %s", i, lat[i], late[i], fromDue[i])
		}
	}
	// Its own bookkeeping: a document twice, or one not from the run, is
	// counted as failed and never waited for.
	s2 := &alertSender{n: 2, emitted: make([]time.Time, 2), left: 2, done: make(chan struct{})}
	s2.got([]byte(`{"event":{"id":"sendtest-1"}}`), "sendtest-", false)
	s2.got([]byte(`{"event":{"id":"sendtest-1"}}`), "sendtest-", false)
	s2.got([]byte(`{"event":{"id":"other-0"}}`), "sendtest-", false)
	s2.got([]byte(`CEF:0|x|y|1|1|bad|5|externalId=sendtest-0`), "sendtest-", true)
	select {
	case <-s2.done:
	default:
		t.Fatal("both alerts came out, but the sender still waits")
	}
	if s2.failed != 3 {
		t.Fatalf("failed %d, want 3 (a duplicate, a stranger, a refused one)", s2.failed)
	}
}
