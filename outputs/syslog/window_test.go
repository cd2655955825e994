package syslog

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/outputs"
)

// TestWriteEndsAtTheContextDeadline: a receiver that takes the connection
// and stops reading makes writes block. A Send must give up at its
// context's deadline (the Shipper's repeat window), not at WriteTimeout,
// and drop the connection (a message may be half written). The old Send
// looked at the context only between chunks, so it blocked for
// WriteTimeout (30 s by default) while earlier records awaited their
// confirmation.
func TestWriteEndsAtTheContextDeadline(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		<-t.Context().Done() // takes the connection, never reads
	}()
	o, err := New(Config{Network: "tcp", Address: l.Addr().String(), WriteTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	// Far more than the sockets' buffers hold.
	big := make([]outputs.Item, 400)
	for i := range big {
		big[i] = outputs.Item{ID: "big", Payload: []byte(strings.Repeat("x", 64<<10)), Time: time.Now()}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- o.Send(ctx, big) }()
	select {
	case err = <-done:
	case <-time.After(time.Minute): // a watchdog, not a measurement
		t.Fatal("Send was still writing a minute after its context's deadline (300ms)")
	}
	var ne net.Error
	if err == nil || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Send into a receiver that does not read: %v, want a timeout", err)
	}
	if o.conn != nil {
		t.Fatal("the connection a write timed out on was kept (it may end in half a message)")
	}
}

// TestPeerCloseBeforeConfirmation: when the receiver closes a connection
// whose messages are not yet confirmed, they may be lost, and the Shipper
// must send them again before anything else: so Send fails instead of
// carrying new items on a new connection ahead of them. Once everything
// the connection carried is confirmed, a close is only a reconnect.
func TestPeerCloseBeforeConfirmation(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	conns := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
			conns <- c
		}
	}()
	o, err := New(Config{Network: "tcp", Address: l.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	closeServerSide := func() {
		t.Helper()
		(<-conns).Close()
		deadline := time.Now().Add(time.Minute) // by state: the FIN arrived
		for !o.peerClosed() {
			if time.Now().After(deadline) {
				t.Fatal("the receiver's close never showed")
			}
			time.Sleep(time.Millisecond)
		}
	}
	ctx := context.Background()

	if err := o.Send(ctx, testItems("a", 3)); err != nil {
		t.Fatal(err)
	}
	closeServerSide()
	if err := o.Send(ctx, testItems("b", 3)); err == nil {
		t.Fatal("Send carried new items on a new connection while what the closed one carried was unconfirmed")
	}
	if d := o.Dials.Load(); d != 1 {
		t.Fatalf("%d dials, want 1: Send reconnected", d)
	}
	// The Shipper's rewind: the next Send connects at once.
	if err := o.Send(ctx, testItems("a", 3)); err != nil {
		t.Fatal(err)
	}
	sentAt := time.Now()
	if err := o.Confirm(sentAt); err != nil {
		t.Fatal(err)
	}
	closeServerSide()
	if err := o.Send(ctx, testItems("c", 3)); err != nil {
		t.Fatalf("after everything was confirmed, a receiver's close must only mean a reconnect: %v", err)
	}
	if d := o.Dials.Load(); d != 3 {
		t.Fatalf("%d dials, want 3", d)
	}
}
