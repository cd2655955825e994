package syslogframe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestReadBothFramings(t *testing.T) {
	in := "11 <13>1 - a b\n<13>line two\n\n" + strings.Repeat("x", 40) + "\n3 <1>"
	var got []string
	var long []bool
	err := Read(strings.NewReader(in), 20, func(m []byte, overlong bool) {
		got = append(got, string(m))
		long = append(long, overlong)
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"<13>1 - a b", "\n<13>line two", strings.Repeat("x", 20), "<1>"}
	// the octet-counted frame takes exactly 11 bytes; the LF after it starts the next frame
	if len(got) != len(want) {
		t.Fatalf("got %q", got)
	}
	if got[0] != want[0] || !strings.Contains(got[1], "<13>line two") || got[2] != want[2] || !long[2] || got[3] != want[3] || long[0] || long[3] {
		t.Errorf("got %q overlong %v", got, long)
	}
}

func TestReadBadCountEndsTheStream(t *testing.T) {
	// A count that does not fit an int cannot be skipped.
	err := Read(strings.NewReader("99999999999999999999 <13>x"), 100, func([]byte, bool) { t.Error("no message expected") })
	if !errors.Is(err, ErrBadCount) {
		t.Fatalf("want ErrBadCount, got %v", err)
	}
}

// What the kernel drops on a UDP socket whose reader falls behind is
// reported: every datagram sent was either read or counted as dropped,
// but for the few a burst can lose before it reaches any socket (the
// loopback device's backlog, netdev_max_backlog), which no socket counts.
func TestServeUDPReportsKernelDrops(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Fatal("the drop count is read from /proc/net/udp: run on Linux")
	}
	old := dropCheckEvery
	dropCheckEvery = 20 * time.Millisecond
	defer func() { dropCheckEvery = old }()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var read, dropped atomic.Int64
	hold := make(chan struct{})
	go ServeUDP(ctx, pc, func([]byte, string) {
		<-hold // the reader is busy: the burst piles up in the kernel
		read.Add(1)
	}, func(n int64) { dropped.Add(n) })
	c, err := net.Dial("udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// More than any receive buffer the kernel grants (UDPReadBuffer at most).
	const sent = 40000
	msg := make([]byte, 1024)
	failed := 0
	for i := 0; i < sent; i++ {
		if _, err := c.Write(msg); err != nil {
			failed++
		}
		if i%200 == 199 {
			time.Sleep(time.Millisecond) // let the loopback device's backlog drain
		}
	}
	if failed > 0 {
		t.Logf("%d writes failed", failed)
	}
	close(hold)
	const slack = sent / 100
	deadline := time.Now().Add(10 * time.Second)
	for read.Load()+dropped.Load() < sent-slack && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(3 * dropCheckEvery) // a late count must not overshoot
	if got := read.Load() + dropped.Load(); dropped.Load() == 0 || got > sent || got < sent-slack {
		t.Errorf("sent %d: read %d, reported dropped %d", sent, read.Load(), dropped.Load())
	}
}

// An octet-counted frame over max is refused as an overlong LF line is:
// passed as its first max bytes with overlong set, the rest of it skipped,
// and the frames after it read.
func TestReadOversizedOctetCountedIsSkipped(t *testing.T) {
	big := "<13>" + strings.Repeat("x", 100)
	in := fmt.Sprintf("%d %s5 <13>a6 <13>bc\n", len(big), big)
	var got []string
	var long []bool
	err := Read(strings.NewReader(in), 20, func(m []byte, overlong bool) {
		got = append(got, string(m))
		long = append(long, overlong)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0] != big[:20] || !long[0] || got[1] != "<13>a" || long[1] || got[2] != "<13>bc" || long[2] {
		t.Errorf("got %q overlong %v", got, long)
	}
}

// An LF-terminated message that starts with a digit is not an octet count:
// only digits, one space and the message's "<" are (RFC 6587 §3.4.1).
func TestReadLineStartingWithDigits(t *testing.T) {
	in := "2024-03-01T09:20:00Z av1 CEF:0|a\n1 2024-03-01T09:20:00Z h a - - - CEF:0|b\n12 x\n42\n4 <1>a"
	var got []string
	err := Read(strings.NewReader(in), 100, func(m []byte, overlong bool) { got = append(got, string(m)) })
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"2024-03-01T09:20:00Z av1 CEF:0|a", "1 2024-03-01T09:20:00Z h a - - - CEF:0|b", "12 x", "42", "<1>a"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

// A stream cut inside an octet-counted frame ends with a TruncatedError
// holding what came of the frame.
func TestReadTruncatedOctetCounted(t *testing.T) {
	for _, c := range []struct {
		in, partial string
		got         int
	}{
		{"4 <1>a10 <13>abc", "<13>abc", 7},
		{"10 ", "", 0},                                  // not even the "<": read as a line
		{"30 <13>abcdefghijklmnop", "<13>abcdefgh", 20}, // over max, cut while skipping
	} {
		var msgs []string
		err := Read(strings.NewReader(c.in), 12, func(m []byte, _ bool) { msgs = append(msgs, string(m)) })
		var te *TruncatedError
		if c.partial == "" && c.got == 0 {
			if err != nil || len(msgs) != 1 {
				t.Errorf("%q: %v %q", c.in, err, msgs)
			}
			continue
		}
		if !errors.As(err, &te) || !errors.Is(err, io.ErrUnexpectedEOF) || string(te.Partial) != c.partial || te.Got != c.got {
			t.Errorf("%q: got %v (%+v), msgs %q", c.in, err, te, msgs)
		}
	}
}
