package syslog

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/outputs"
	"github.com/vmlineage/vmlineage/outputs/spool"
)

// TestStalledReceiverIsNotConfirmed: a receiver that accepts and does not
// read (its queue full, a busy collector) for longer than ReplayWindow. The
// records sit in the agent's send queue, so they must not be confirmed
// (and deleted from the spool) however long the connection stays up. Once
// the receiver reads again, everything arrives and is acknowledged.
func TestStalledReceiverIsNotConfirmed(t *testing.T) {
	for _, network := range []string{"tcp", "tls"} {
		t.Run(network, func(t *testing.T) { testStalledReceiver(t, network) })
	}
}

func testStalledReceiver(t *testing.T, network string) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 1) })
	}}
	l, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cfg := Config{Network: network, Address: l.Addr().String(), ReplayWindow: 300 * time.Millisecond, Backoff: outputs.Backoff{Min: 10 * time.Millisecond, Max: 200 * time.Millisecond}}
	var srvTLS *tls.Config
	if network == "tls" {
		der, key := pinSelfSigned(t, "receiver.example")
		srvTLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
		cfg.TLS.Fingerprint = hexPin(der)
	}
	var reading atomic.Bool // false: the receiver is stalled
	var mu sync.Mutex
	var stalled []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if srvTLS != nil {
				tc := tls.Server(c, srvTLS)
				tc.Handshake()
				c = tc
			}
			if reading.Load() {
				go drain(c)
				continue
			}
			mu.Lock()
			stalled = append(stalled, c) // accepted, not read
			mu.Unlock()
		}
	}()

	sp, err := spool.Open(t.TempDir(), spool.Options{MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	o, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	var its []outputs.Item
	for i := range 60 {
		its = append(its, outputs.Item{ID: fmt.Sprintf("r%03d", i), Payload: fmt.Appendf(nil, "CEF:0|v|l|1|start|VM started|3|externalId=r%03d msg=%0100d", i, i), Time: time.Now()})
	}
	if err := sp.Append(context.Background(), its); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { (&spool.Shipper{Spool: sp, Output: o}).Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	time.Sleep(3 * time.Second) // ten times ReplayWindow
	if st := sp.Stats(); st.Records == 0 {
		t.Fatalf("all records acknowledged while the receiver read none of them: %+v", st)
	}
	reading.Store(true)
	mu.Lock()
	for _, c := range stalled {
		go drain(c)
	}
	mu.Unlock()
	deadline := time.Now().Add(20 * time.Second)
	for sp.Stats().Records > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the receiver reads again, yet records stay unacknowledged: %+v", sp.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// drain reads c to its end, then closes it (so the output's Close, which
// waits for that, returns at once).
func drain(c net.Conn) {
	io.Copy(io.Discard, c)
	c.Close()
}
