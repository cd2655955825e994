package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	syslog "github.com/leodido/go-syslog/v4"
	"github.com/leodido/go-syslog/v4/rfc3164"
	"github.com/leodido/go-syslog/v4/rfc5424"

	"github.com/vmlineage/vmlineage/internal/syslogframe"
)

// SyslogConfig configures a SyslogSource.
type SyslogConfig struct {
	PoolUUID string
	// HostAlias maps a syslog header's hostname to the pool's host name
	// (FQDN vs name_label); Hosts maps host names to uuids.
	HostAlias map[string]string
	Hosts     map[string]string
	// MaxMessage caps a message (default 64 KiB); MaxPending bounds the
	// lines held between flushes (default 10,000; more are dropped and
	// counted: syslog has no back-pressure).
	MaxMessage int
	MaxPending int
	// FlushEvery is how often Run hands pending lines to the sink
	// (default 200 ms).
	FlushEvery time.Duration
	Logger     *slog.Logger
}

// SyslogStats counts what the listener received.
type SyslogStats struct {
	Messages, Lines, Bad, Other, Overlong, Dropped int64
	LastBad                                        string
}

// SyslogSource takes in the audit lines hosts forward over syslog (xe
// host-syslog-reconfigure: every facility, UDP; local6.info, tag xapi).
// Delivery over syslog is at most once: there is no position to keep.
type SyslogSource struct {
	cfg   SyslogConfig
	log   *slog.Logger
	p5424 syslog.Machine
	p3164 syslog.Machine

	mu      sync.Mutex
	line    Line
	pending []Entry
	stats   SyslogStats
}

// NewSyslogSource returns a listener.
func NewSyslogSource(cfg SyslogConfig) *SyslogSource {
	if cfg.MaxMessage <= 0 {
		cfg.MaxMessage = 64 << 10
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 10000
	}
	if cfg.FlushEvery <= 0 {
		cfg.FlushEvery = 200 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &SyslogSource{cfg: cfg, log: cfg.Logger,
		p5424: rfc5424.NewParser(rfc5424.WithBestEffort()),
		p3164: rfc3164.NewParser(rfc3164.WithBestEffort(), rfc3164.WithRFC3339(), rfc3164.WithSecondFractions())}
}

// Stats returns the counters.
func (s *SyslogSource) Stats() SyslogStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// ErrNotSyslog is returned for a message that is neither RFC 5424, RFC
// 3164 nor a file-format line.
var ErrNotSyslog = errors.New("neither an RFC 5424 nor an RFC 3164 message")

// Handle takes one received message (a datagram or a TCP frame).
func (s *SyslogSource) Handle(raw []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.Messages++
	if len(raw) > s.cfg.MaxMessage {
		s.stats.Overlong++
		return fmt.Errorf("message of %d bytes over the %d-byte cap", len(raw), s.cfg.MaxMessage)
	}
	raw = bytes.TrimRight(raw, "\r\n\x00")
	host, msg := "", ""
	if m, err := s.p5424.Parse(raw); m != nil && (err == nil || m.Valid()) {
		if x, ok := m.(*rfc5424.SyslogMessage); ok && x.Timestamp != nil && x.Hostname != nil && x.Message != nil {
			host, msg = *x.Hostname, *x.Message
		}
	}
	if host == "" {
		if m, err := s.p3164.Parse(raw); m != nil && (err == nil || m.Valid()) {
			if x, ok := m.(*rfc3164.SyslogMessage); ok && x.Timestamp != nil && x.Hostname != nil && x.Message != nil {
				host, msg = *x.Hostname, *x.Message
			}
		}
	}
	l := &s.line
	var err error
	if host == "" {
		// A relay may pass file-format lines on as they are.
		err = Parse(string(raw), l)
		host = l.Host
	} else {
		err = Parse(strings.TrimLeft(msg, " "), l)
	}
	if err != nil {
		if errors.Is(err, ErrNotAudit) {
			s.stats.Other++ // the hosts forward every facility
			return nil
		}
		s.stats.Bad++
		s.stats.LastBad = err.Error()
		return err
	}
	if a, ok := s.cfg.HostAlias[host]; ok {
		host = a
	}
	if host == "" {
		s.stats.Bad++
		return errors.New("audit line without a host name")
	}
	if len(s.pending) >= s.cfg.MaxPending {
		s.stats.Dropped++
		return errors.New("too many lines waiting for the sink: dropped")
	}
	c := l.Clone()
	c.Host = host
	s.pending = append(s.pending, Entry{Line: c, HostName: host, HostUUID: s.cfg.Hosts[host], Source: FromSyslog})
	s.stats.Lines++
	return nil
}

// Flush hands the pending lines to sink (kept for the next flush when it
// fails).
func (s *SyslogSource) Flush(ctx context.Context, sink Sink) error {
	s.mu.Lock()
	p := s.pending
	s.pending = nil
	s.mu.Unlock()
	if len(p) == 0 {
		return nil
	}
	if err := sink(ctx, &Batch{PoolUUID: s.cfg.PoolUUID, Entries: p}); err != nil {
		s.mu.Lock()
		s.pending = append(p, s.pending...)
		if n := len(s.pending) - s.cfg.MaxPending; n > 0 {
			s.pending = s.pending[n:]
			s.stats.Dropped += int64(n)
		}
		s.mu.Unlock()
		return err
	}
	return nil
}

// Run flushes to sink every FlushEvery until ctx ends.
func (s *SyslogSource) Run(ctx context.Context, sink Sink) error {
	t := time.NewTicker(s.cfg.FlushEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return s.Flush(context.WithoutCancel(ctx), sink)
		case <-t.C:
			if err := s.Flush(ctx, sink); err != nil {
				s.log.Warn("audit syslog: sink failed; lines kept for the next flush", "err", err)
			}
		}
	}
}

// ServeUDP reads datagrams (one message each) until ctx ends.
func (s *SyslogSource) ServeUDP(ctx context.Context, pc net.PacketConn) error {
	return syslogframe.ServeUDP(ctx, pc, func(msg []byte, from string) {
		if err := s.Handle(msg); err != nil {
			s.log.Debug("audit syslog message refused", "from", from, "err", err)
		}
	}, func(n int64) {
		s.log.Warn("audit log over syslog/UDP: the kernel dropped datagrams (receive buffer full): those audit lines are lost; send over TCP or raise net.core.rmem_max",
			"addr", pc.LocalAddr().String(), "dropped", n)
	})
}

// ServeTCP accepts connections until ctx ends (RFC 6587 octet-counted or
// LF-terminated frames, detected per frame).
func (s *SyslogSource) ServeTCP(ctx context.Context, ln net.Listener) error {
	return syslogframe.ServeTCP(ctx, ln, s.cfg.MaxMessage, func(msg []byte, overlong bool, _ string) {
		s.frame(msg, overlong)
	}, func(from string, err error) {
		s.log.Warn("audit syslog connection dropped", "from", from, "err", err)
	})
}

// ReadStream splits a TCP stream into frames and handles each.
func (s *SyslogSource) ReadStream(r io.Reader) error {
	return syslogframe.Read(r, s.cfg.MaxMessage, s.frame)
}

func (s *SyslogSource) frame(msg []byte, overlong bool) {
	if overlong {
		s.mu.Lock()
		s.stats.Overlong++
		s.mu.Unlock()
		return
	}
	if err := s.Handle(msg); err != nil {
		s.log.Debug("audit syslog message refused", "err", err)
	}
}
