// Package syslog is the syslog output: RFC 5424 (default) or RFC 3164 with
// a tag, over UDP, TCP with octet-counting framing (RFC 6587), or TLS
// (RFC 5425). It reconnects with jittered exponential back-off and counts
// its work. TCP and TLS give at-least-once delivery together with the spool:
// a write counts as delivered only once the connection has outlived the
// replay window (outputs.Confirmer), and what a broken connection may have
// lost is sent again from the spool, so a receiver may see messages twice
// after a connection breaks (each message carries the record id in its
// structured data for de-duplication). UDP gives no delivery guarantee.
package syslog

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/vmlineage/vmlineage/outputs"
)

// DefaultReplayWindow is Config.ReplayWindow's default: repeats after a
// failure span at most outputs.RepeatWindow of it (4 s).
const DefaultReplayWindow = 2 * time.Second

// Config of a syslog output.
type Config struct {
	Name    string // default "syslog"
	Network string // "udp", "tcp" (default) or "tls"
	Address string // host:port
	FormatConfig
	TLS TLSConfig
	// DialTimeout (default 10s) and WriteTimeout per batch (default 30s;
	// on TCP and TLS the repeat window ends a write sooner, see
	// ReplayWindow).
	DialTimeout  time.Duration
	WriteTimeout time.Duration
	// Backoff between reconnect attempts (default 100ms .. 30s, jittered).
	Backoff outputs.Backoff
	// MaxUDPBytes: longer UDP messages are truncated and counted (default
	// 65000; RFC 5426 only promises 480 and recommends 2048).
	MaxUDPBytes int
	// ReplayWindow: plain syslog has no acknowledgement, and a receiver that
	// stops loses what sat unread in its socket. So a message counts as
	// delivered only ReplayWindow (default 2s) after it was written, when
	// the connection that carried it is still up (outputs.Confirmer); the
	// spool's Shipper sends again, from the spool, whatever was not
	// confirmed — also after a SIGKILL, since the spool keeps it. This
	// bounds loss at the price of duplicates: the Shipper ends every write
	// within 2×ReplayWindow of the start of the oldest unconfirmed write,
	// so a repeat comes only of what was written in the 2×ReplayWindow (4 s)
	// before a failure (outputs/README.md, "At-least-once window"); a write
	// that cannot finish by then fails (WriteTimeout is the bound only
	// beyond it). Negative disables (TCP/TLS writes count as delivery).
	ReplayWindow time.Duration
	// ReplayBytes is not used any more: the spool holds what awaits
	// confirmation (it was the cap of an in-memory copy that a SIGKILL lost).
	ReplayBytes int
}

// TLSConfig for Network "tls".
type TLSConfig struct {
	CAFile     string // PEM bundle to verify the server (default: system roots)
	ServerName string // default: the host of Address
	// Fingerprint pins the server certificate: hex SHA-256 of its DER form
	// (colons allowed), compared with the leaf (the certificate the server
	// proves it holds the key of), never with the rest of the chain. With a
	// pin and no CAFile, chain verification is replaced by the pin
	// (self-signed receivers); with both, both must hold.
	Fingerprint string
	CertFile    string // client certificate (optional, mutual TLS)
	KeyFile     string
	// InsecureSkipVerify disables verification; tests only.
	InsecureSkipVerify bool
}

// Output is a syslog output.
type Output struct {
	outputs.Counters
	cfg      Config
	f        *Formatter
	tls      *tls.Config
	conn     net.Conn
	raw      net.Conn // the TCP connection under conn (conn itself for TCP)
	tlsCount *countConn
	written  uint64     // bytes written on raw since connect (TCP; TLS: tlsCount)
	marks    []sendMark // end of each Send on conn not yet confirmed
	connAt   time.Time  // when conn was established
	wroteAt  time.Time  // end of the last write on conn
	confAt   time.Time  // latest sentAt Confirm vouched for on conn
	fails    int
	nextDial time.Time
	buf      []byte
	msg      []byte

	Dials, Reconnects, Truncated atomic.Uint64
}

// sendMark is where the stream stood when a Send ended: bytes written on
// the TCP connection by then.
type sendMark struct {
	at  time.Time
	off uint64
}

// countConn counts the bytes TLS writes into the TCP connection, so that
// they compare with the socket's send queue (records, handshake and all).
type countConn struct {
	net.Conn
	n atomic.Uint64
}

func (c *countConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.n.Add(uint64(n))
	return n, err
}

// New checks cfg; it does not connect (the first Send does).
func New(cfg Config) (*Output, error) {
	if cfg.Name == "" {
		cfg.Name = "syslog"
	}
	cfg.Network = strings.ToLower(cfg.Network)
	if cfg.Network == "" {
		cfg.Network = "tcp"
	}
	if cfg.Network != "udp" && cfg.Network != "tcp" && cfg.Network != "tls" {
		return nil, fmt.Errorf("syslog output %q: network %q (want udp, tcp or tls)", cfg.Name, cfg.Network)
	}
	host, _, err := net.SplitHostPort(cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("syslog output %q: address %q: %w", cfg.Name, cfg.Address, err)
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 30 * time.Second
	}
	if cfg.ReplayWindow == 0 {
		cfg.ReplayWindow = DefaultReplayWindow
	}
	if cfg.MaxUDPBytes <= 0 || cfg.MaxUDPBytes > 65000 {
		cfg.MaxUDPBytes = 65000
	}
	if cfg.Hostname == "" {
		cfg.Hostname, _ = os.Hostname()
	}
	if cfg.ProcID == "" {
		cfg.ProcID = strconv.Itoa(os.Getpid())
	}
	f, err := NewFormatter(cfg.FormatConfig)
	if err != nil {
		return nil, err
	}
	o := &Output{cfg: cfg, f: f}
	if cfg.Network == "tls" {
		if o.tls, err = tlsConfig(cfg.TLS, host); err != nil {
			return nil, fmt.Errorf("syslog output %q: %w", cfg.Name, err)
		}
	}
	return o, nil
}

func tlsConfig(c TLSConfig, host string) (*tls.Config, error) {
	tc := &tls.Config{ServerName: c.ServerName, MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.InsecureSkipVerify}
	if tc.ServerName == "" {
		tc.ServerName = host
	}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s: no PEM certificate in it", c.CAFile)
		}
		tc.RootCAs = pool
	}
	if c.CertFile != "" || c.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	if c.Fingerprint != "" {
		want, err := ParseFingerprint(c.Fingerprint)
		if err != nil {
			return nil, err
		}
		if c.CAFile == "" {
			// The pin replaces chain verification.
			tc.InsecureSkipVerify = true
		}
		// Runs after chain verification when a CA file is given (both must
		// hold). The leaf only: see outputs.VerifyPin.
		tc.VerifyConnection = func(cs tls.ConnectionState) error {
			return outputs.VerifyPin(cs.PeerCertificates, want, false)
		}
	}
	return tc, nil
}

// ParseFingerprint reads a hex SHA-256 fingerprint, colons allowed.
func ParseFingerprint(s string) ([32]byte, error) { return outputs.ParseFingerprint(s) }

// Name implements outputs.Output.
func (o *Output) Name() string { return o.cfg.Name }

// Formatter returns the message formatter (tests, `outputs test`).
func (o *Output) Formatter() *Formatter { return o.f }

func (o *Output) connect(ctx context.Context) error {
	if o.conn != nil {
		return nil
	}
	if wait := time.Until(o.nextDial); wait > 0 {
		if err := outputs.SleepCtx(ctx, wait); err != nil {
			return err
		}
	}
	d := net.Dialer{Timeout: o.cfg.DialTimeout, KeepAlive: 30 * time.Second}
	var c net.Conn
	var err error
	o.Dials.Add(1)
	var raw net.Conn
	var cc *countConn
	switch o.cfg.Network {
	case "tls":
		// Dialled in two steps to count what TLS writes into the TCP
		// connection (Confirm compares it with the send queue).
		if raw, err = d.DialContext(ctx, "tcp", o.cfg.Address); err == nil {
			cc = &countConn{Conn: raw}
			tc := tls.Client(cc, o.tls)
			hctx, cancel := context.WithTimeout(ctx, o.cfg.DialTimeout)
			if err = tc.HandshakeContext(hctx); err != nil {
				raw.Close()
			}
			cancel()
			c = tc
		}
	default:
		c, err = d.DialContext(ctx, o.cfg.Network, o.cfg.Address)
		raw = c
	}
	if err != nil {
		o.fails++
		o.nextDial = time.Now().Add(o.cfg.Backoff.Delay(o.fails))
		return fmt.Errorf("syslog output %q: connect %s %s: %w", o.cfg.Name, o.cfg.Network, o.cfg.Address, err)
	}
	if o.fails > 0 {
		o.Reconnects.Add(1)
	}
	o.fails = 0
	o.conn, o.raw, o.tlsCount, o.connAt = c, raw, cc, time.Now()
	o.written, o.marks = 0, nil
	o.wroteAt, o.confAt = time.Time{}, time.Time{}
	return nil
}

// drop abandons a failed connection; what was written on it and not yet
// confirmed goes again (the Shipper's rewind).
func (o *Output) drop(err error) {
	if o.conn != nil {
		o.conn.Close()
		o.conn, o.raw, o.tlsCount, o.marks = nil, nil, nil, nil
	}
	o.fails++
	o.nextDial = time.Now().Add(o.cfg.Backoff.Delay(o.fails))
	_ = err
}

// ConfirmAfter implements outputs.Confirmer: TCP and TLS writes are
// confirmed ReplayWindow after they were made; UDP is never confirmed
// (no guarantee), nor is anything with a negative ReplayWindow.
func (o *Output) ConfirmAfter() time.Duration {
	if o.cfg.Network == "udp" || o.cfg.ReplayWindow < 0 {
		return 0
	}
	return o.cfg.ReplayWindow
}

// Confirm implements outputs.Confirmer: what was written at sentAt reached
// a receiver that is still reading when the connection it went out on is
// the current one, the peer has not closed it, and the peer's TCP has
// acknowledged every byte of it (waiting up to ReplayWindow more for that).
func (o *Output) Confirm(sentAt time.Time) error {
	switch {
	case o.conn == nil:
		return fmt.Errorf("syslog output %q: the connection that carried the messages sent at %s is gone", o.cfg.Name, sentAt.Format(time.RFC3339Nano))
	case o.connAt.After(sentAt):
		return fmt.Errorf("syslog output %q: reconnected since the messages sent at %s", o.cfg.Name, sentAt.Format(time.RFC3339Nano))
	case o.peerClosed():
		o.drop(nil)
		o.nextDial = time.Time{} // a clean close: reconnect at once
		return fmt.Errorf("syslog output %q: %s closed the connection; messages sent since %s may be lost", o.cfg.Name, o.cfg.Address, sentAt.Format(time.RFC3339Nano))
	}
	if err := o.waitAcked(sentAt); err != nil {
		// A receiver that does not read (or a host gone without a RST):
		// the records may still sit in our send queue, lost with the
		// connection. Send them again, first, on a new connection.
		o.drop(err)
		return err
	}
	if sentAt.After(o.confAt) {
		o.confAt = sentAt
	}
	return nil
}

// sentBytes is what was written into the TCP connection so far.
func (o *Output) sentBytes() uint64 {
	if o.tlsCount != nil {
		return o.tlsCount.n.Load()
	}
	return o.written
}

// waitAcked waits until the peer's TCP acknowledged the bytes of every Send
// that ended by sentAt (the socket's unsent/unacknowledged queue no longer
// reaches back to them), for at most ReplayWindow.
func (o *Output) waitAcked(sentAt time.Time) error {
	var need uint64
	i := 0
	for ; i < len(o.marks) && !o.marks[i].at.After(sentAt); i++ {
		need = o.marks[i].off
	}
	deadline := time.Now().Add(o.cfg.ReplayWindow)
	for pause := time.Millisecond; ; pause = min(2*pause, 50*time.Millisecond) {
		q, ok := unsentBytes(o.raw)
		if !ok {
			break // cannot tell here: vouch for what the kernel took, as before
		}
		sent := o.sentBytes()
		if sent < uint64(q) || sent-uint64(q) >= need {
			break // the send queue begins after these bytes
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("syslog output %q: %s has not acknowledged the messages sent at %s (%d bytes still in the send queue): the receiver is not reading",
				o.cfg.Name, o.cfg.Address, sentAt.Format(time.RFC3339Nano), q)
		}
		time.Sleep(pause)
	}
	o.marks = o.marks[i:]
	return nil
}

// peerClosed notices a receiver that closed the stream since the last
// Send: writing into a half-closed TCP connection "succeeds" and the data
// is lost, so look for the FIN (or RST) first.
//
// It peeks at the socket without waiting (peekSocket) rather than reading
// under a short deadline: a deadline can expire before the read is even
// tried (the thread descheduled between setting it and reading, or a timer
// fired by another P), and the closed peer then looked open. Measured: 85
// of 200,000 checks of a closed connection on a busy machine; one such miss
// at Confirm acknowledged records rsyslog never took (the chaos long form,
// two records missing over TLS after rsyslog's stop). TestPeerClosedNeverMissed.
func (o *Output) peerClosed() bool {
	if o.cfg.Network == "udp" || o.conn == nil {
		return false
	}
	raw := o.raw
	for range 4 {
		switch peekSocket(raw) {
		case peekOpen:
			return false
		case peekClosed:
			return true
		case peekUnknown:
			return o.readClosed(time.Millisecond)
		}
		// Bytes wait: TLS records (session tickets, or the close_notify
		// alert), or a receiver that talks. Read them through the stream
		// (tls.Conn handles post-handshake messages and alerts); they are
		// there, so the read does not wait, and the deadline is only a
		// bound. Then look again.
		if o.readClosed(50 * time.Millisecond) {
			return true
		}
	}
	return false
}

// readClosed reads (and drops) what the receiver sent, for at most d, and
// reports whether the stream ended or failed.
func (o *Output) readClosed(d time.Duration) bool {
	// Through tls.Conn for TLS: it consumes post-handshake messages (session
	// tickets), and a read timeout does not poison its state.
	o.conn.SetReadDeadline(time.Now().Add(d))
	var b [512]byte
	_, err := o.conn.Read(b[:])
	o.conn.SetReadDeadline(time.Time{})
	if err == nil {
		return false // receivers do not talk; TLS records are not expected either
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return true
}

// Send implements outputs.Output: every item is written before it returns
// nil. On a broken connection it returns the error; the caller re-sends.
func (o *Output) Send(ctx context.Context, items []outputs.Item) error {
	if len(items) == 0 {
		return nil
	}
	if o.peerClosed() {
		unconfirmed := o.ConfirmAfter() > 0 && o.wroteAt.After(o.confAt)
		o.drop(nil)
		o.nextDial = time.Time{} // a clean close: reconnect at once
		if unconfirmed {
			// What the closed connection carried may be lost: the Shipper
			// sends it again first, from the spool. Writing these items on
			// a new connection before that would put them ahead of records
			// the receiver never took (and outside the repeat window).
			err := fmt.Errorf("syslog output %q: %s closed the connection; messages not yet confirmed may be lost", o.cfg.Name, o.cfg.Address)
			o.Fail(len(items), err)
			return err
		}
	}
	if err := o.connect(ctx); err != nil {
		o.Fail(len(items), err)
		return err
	}
	if o.cfg.Network == "udp" {
		return o.sendUDP(items)
	}
	// Write in chunks of about 256 KiB, each under a deadline: WriteTimeout,
	// or ctx's deadline when sooner (the Shipper's repeat window).
	ctxDeadline, hasDeadline := ctx.Deadline()
	i := 0
	for i < len(items) {
		o.buf = o.buf[:0]
		j := i
		for ; j < len(items) && len(o.buf) < 256<<10; j++ {
			o.msg = o.f.Append(o.msg[:0], items[j].ID, items[j].Time, items[j].Payload)
			o.buf = AppendOctetCounted(o.buf, o.msg)
		}
		wd := time.Now().Add(o.cfg.WriteTimeout)
		if hasDeadline && ctxDeadline.Before(wd) {
			wd = ctxDeadline
		}
		o.conn.SetWriteDeadline(wd)
		n, err := o.conn.Write(o.buf)
		o.written += uint64(n)
		if err != nil {
			err = fmt.Errorf("syslog output %q: write to %s: %w", o.cfg.Name, o.cfg.Address, err)
			o.drop(err)
			o.Fail(len(items)-i, err)
			return err
		}
		o.wroteAt = time.Now()
		if err := ctx.Err(); err != nil {
			o.Fail(len(items)-j, err)
			return err
		}
		i = j
	}
	if o.ConfirmAfter() > 0 {
		o.marks = append(o.marks, sendMark{at: time.Now(), off: o.sentBytes()})
	}
	o.AddSent(len(items))
	return nil
}

func (o *Output) sendUDP(items []outputs.Item) error {
	for i, it := range items {
		o.msg = o.f.Append(o.msg[:0], it.ID, it.Time, it.Payload)
		if len(o.msg) > o.cfg.MaxUDPBytes {
			o.msg = o.msg[:o.cfg.MaxUDPBytes]
			o.Truncated.Add(1)
		}
		o.conn.SetWriteDeadline(time.Now().Add(o.cfg.WriteTimeout))
		if _, err := o.conn.Write(o.msg); err != nil {
			// ECONNREFUSED from an earlier ICMP unreachable lands here.
			err = fmt.Errorf("syslog output %q: udp write to %s: %w", o.cfg.Name, o.cfg.Address, err)
			o.drop(err)
			o.Fail(len(items)-i, err)
			return err
		}
	}
	o.AddSent(len(items))
	return nil
}

// Close implements outputs.Output. On TCP and TLS it half-closes and waits
// (up to 5s) for the receiver to close its side, which it does only after
// reading everything: closing at once can lose the last messages (seen with
// rsyslog's ossl driver).
func (o *Output) Close() error {
	if o.conn == nil {
		return nil
	}
	c := o.conn
	o.conn, o.raw, o.tlsCount, o.marks = nil, nil, nil, nil
	type closeWriter interface{ CloseWrite() error }
	if cw, ok := c.(closeWriter); ok && o.cfg.Network != "udp" {
		if cw.CloseWrite() == nil {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			io.Copy(io.Discard, c)
		}
	}
	return c.Close()
}
