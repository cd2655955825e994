// Package syslogframe receives syslog messages over UDP and TCP for the two
// listeners that take them in (alert intake, forwarded xensource.log): one
// datagram is one message; a TCP stream is split per RFC 6587, octet-counted
// when a frame starts with a count, a space and the message's "<" ("<len>
// <PRI>…") and LF-terminated otherwise, detected frame by frame.
package syslogframe

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"
)

// ErrBadCount ends a stream whose octet count does not fit an int: the
// framing is lost, so nothing after it can be trusted.
var ErrBadCount = errors.New("bad octet count (framing lost, closing)")

// TruncatedError ends a stream that ended inside an octet-counted frame
// (the sender died or closed mid-message). Partial holds what came of it
// (at most max bytes), so that the caller can report it rather than lose
// it silently.
type TruncatedError struct {
	Want, Got int // octets announced and received
	Partial   []byte
}

func (e *TruncatedError) Error() string {
	return fmt.Sprintf("connection closed inside an octet-counted message: %d of %d octets received", e.Got, e.Want)
}

func (e *TruncatedError) Unwrap() error { return io.ErrUnexpectedEOF }

// Read splits r into messages and calls fn with each (a fresh slice fn may
// keep). A message longer than max, LF-terminated or octet-counted, is
// passed as its first max bytes with overlong set; empty lines are skipped.
// A stream cut inside an octet-counted message ends with a *TruncatedError.
func Read(r io.Reader, max int, fn func(msg []byte, overlong bool)) error {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		_, err := br.Peek(1)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if d := octetCount(br); d > 0 {
			lenStr := make([]byte, d)
			io.ReadFull(br, lenStr) // peeked: cannot fail
			br.Discard(1)           // the space
			n, err := strconv.Atoi(string(lenStr))
			if err != nil {
				return fmt.Errorf("%w: %q", ErrBadCount, lenStr)
			}
			// A frame over max is passed as its first max bytes with
			// overlong set, as an LF-terminated one is: its length is
			// known, so the rest is skipped and the frames after it kept.
			msg := make([]byte, min(n, max))
			got, err := io.ReadFull(br, msg)
			if err == nil && n > max {
				var skipped int
				skipped, err = br.Discard(n - max)
				got += skipped
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return &TruncatedError{Want: n, Got: got, Partial: msg[:min(got, len(msg))]}
			}
			if err != nil {
				return fmt.Errorf("message of %d octets: %w", n, err)
			}
			fn(msg, n > max)
			continue
		}
		line, overlong, err := readLine(br, max)
		if overlong || len(bytes.TrimSpace(line)) > 0 {
			fn(line, overlong)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// maxCountDigits bounds the octet count looked for: longer digit runs
// start an LF-terminated message.
const maxCountDigits = 20

// octetCount returns how many digits start the next frame when it is
// octet-counted, else 0. RFC 6587 §3.4.1 frames are MSG-LEN SP SYSLOG-MSG
// and a syslog message starts with "<" PRI, so only a count followed by a
// single space and "<" is taken for one: an LF-terminated message that
// merely starts with a digit (a PRI-less "2024-03-01T…" or "1 2024-…")
// is read as a line. It peeks byte by byte, so that it never waits for
// more than the frame's own first bytes.
func octetCount(br *bufio.Reader) int {
	for d := 0; d <= maxCountDigits; d++ {
		b, err := br.Peek(d + 1)
		if err != nil {
			return 0
		}
		c := b[d]
		if c >= '0' && c <= '9' && (d > 0 || c != '0') {
			continue
		}
		if d == 0 || c != ' ' {
			return 0
		}
		if b, err := br.Peek(d + 2); err != nil || b[d+1] != '<' {
			return 0
		}
		return d
	}
	return 0
}

// readLine reads up to LF (dropped), keeping at most max bytes; overlong
// says the line was longer.
func readLine(br *bufio.Reader, max int) ([]byte, bool, error) {
	var buf []byte
	n := 0
	for {
		chunk, err := br.ReadSlice('\n')
		body := chunk
		if len(body) > 0 && body[len(body)-1] == '\n' {
			body = body[:len(body)-1]
		}
		if room := max - len(buf); room > 0 {
			buf = append(buf, body[:min(room, len(body))]...)
		}
		n += len(body)
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		return buf, n > max, err
	}
}

// ServeTCP accepts connections on ln until ctx ends and reads each with
// Read; dropped is told why a connection ended early.
func ServeTCP(ctx context.Context, ln net.Listener, max int, fn func(msg []byte, overlong bool, from string), dropped func(from string, err error)) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			stop := context.AfterFunc(ctx, func() { c.Close() })
			defer stop()
			from := c.RemoteAddr().String()
			err := Read(c, max, func(msg []byte, overlong bool) { fn(msg, overlong, from) })
			if err != nil && ctx.Err() == nil && dropped != nil {
				dropped(from, err)
			}
		}()
	}
}

// UDPReadBuffer is the receive buffer ServeUDP asks the kernel for: a
// burst waits there while the reader is busy. The kernel caps it at
// net.core.rmem_max (208 KiB on a default Debian); what overflows it is
// dropped before anyone can read it, which ServeUDP reports.
const UDPReadBuffer = 8 << 20

// dropCheckEvery is how often ServeUDP reads the kernel's drop count.
var dropCheckEvery = 10 * time.Second

// ServeUDP reads datagrams from pc until ctx ends; each is one message (a
// fresh slice fn may keep). When lost is not nil, it is told every 10 s how
// many more datagrams the kernel dropped on the socket because its receive
// buffer was full: messages lost before they could be read, which only the
// kernel can count (Linux; elsewhere lost is never called).
func ServeUDP(ctx context.Context, pc net.PacketConn, fn func(msg []byte, from string), lost func(n int64)) error {
	stop := context.AfterFunc(ctx, func() { pc.Close() })
	defer stop()
	if uc, ok := pc.(*net.UDPConn); ok {
		uc.SetReadBuffer(UDPReadBuffer) // best effort: capped by the kernel
	}
	if lost != nil {
		if inode, ok := socketInode(pc); ok {
			if base, ok := udpDrops(inode); ok {
				done := make(chan struct{})
				defer close(done)
				go func() {
					t := time.NewTicker(dropCheckEvery)
					defer t.Stop()
					for {
						select {
						case <-done:
							return
						case <-t.C:
						}
						if n, ok := udpDrops(inode); ok && n > base {
							lost(n - base)
							base = n
						}
					}
				}()
			}
		}
	}
	buf := make([]byte, 64<<10) // the largest UDP payload
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		fn(append([]byte(nil), buf[:n]...), addr.String())
	}
}
