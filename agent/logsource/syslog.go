package logsource

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/vmlineage/vmlineage/internal/syslogframe"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	syslog "github.com/leodido/go-syslog/v4"
	"github.com/leodido/go-syslog/v4/rfc3164"
	"github.com/leodido/go-syslog/v4/rfc5424"

	"github.com/vmlineage/vmlineage/agent/xensource"
)

// SyslogConfig configures the forwarded-syslog listener.
type SyslogConfig struct {
	// HostAlias maps a syslog header's hostname to the host name the
	// Deriver knows (its Config.Hosts key) when they differ (FQDN vs
	// name_label). Unmapped names are used as they are.
	HostAlias map[string]string
}

// SyslogStats counts what the listener received.
type SyslogStats struct {
	Messages int64 // messages fed to the deriver
	Bad      int64 // messages neither RFC 5424 nor RFC 3164 nor a log line
	Overlong int64 // messages over MaxLine (TCP frames, UDP datagrams)
	NoHeader int64 // toolstack messages whose [..] header did not parse (kept as plain lines)
}

// Syslog receives the hosts' logs forwarded by their rsyslog
// (host.syslog_destination) and feeds the engine. Delivery over syslog is
// at most once: there is no offset to keep.
type Syslog struct {
	e     *Engine
	cfg   SyslogConfig
	p5424 syslog.Machine
	p3164 syslog.Machine
	line  xensource.Line
	mu    sync.Mutex
	stats SyslogStats
}

// NewSyslog returns a listener feeding e.
func NewSyslog(e *Engine, cfg SyslogConfig) *Syslog {
	e.mu.Lock()
	e.merge = true // hosts' messages fed in time order across hosts (see deliver)
	e.mu.Unlock()
	return &Syslog{e: e, cfg: cfg,
		p5424: rfc5424.NewParser(rfc5424.WithBestEffort()),
		p3164: rfc3164.NewParser(rfc3164.WithBestEffort(), rfc3164.WithRFC3339(), rfc3164.WithSecondFractions())}
}

// Stats returns a copy of the counters.
func (s *Syslog) Stats() SyslogStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// ErrNotSyslog is returned for a message no parser accepts.
var ErrNotSyslog = errors.New("neither an RFC 5424 nor an RFC 3164 message")

// Handle takes one received message (one datagram or one TCP frame).
func (s *Syslog) Handle(raw []byte) error {
	s.e.mu.Lock()
	defer s.e.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(raw) > s.e.cfg.MaxLine {
		s.stats.Overlong++
		return fmt.Errorf("message of %d bytes over the %d-byte cap", len(raw), s.e.cfg.MaxLine)
	}
	raw = bytes.TrimRight(raw, "\r\n\x00")
	var base *syslog.Base
	rfc5424msg := false
	if m, err := s.p5424.Parse(raw); m != nil && (err == nil || m.Valid()) {
		if x, ok := m.(*rfc5424.SyslogMessage); ok && x.Timestamp != nil && x.Hostname != nil {
			base, rfc5424msg = &x.Base, true
		}
	}
	if base == nil {
		if m, err := s.p3164.Parse(raw); m != nil && (err == nil || m.Valid()) {
			if x, ok := m.(*rfc3164.SyslogMessage); ok && x.Timestamp != nil && x.Hostname != nil && x.Message != nil {
				base = &x.Base
			}
		}
	}
	l := &s.line
	if base == nil {
		// A relay may pass file-format lines on as they are.
		if err := xensource.ParseBytes(raw, l); err != nil {
			var pe *xensource.ParseError
			if !errors.As(err, &pe) || pe.Kind != xensource.ErrKindHeader {
				s.stats.Bad++
				return ErrNotSyslog
			}
			s.stats.NoHeader++
		}
		return s.feed(l, l.SyslogHost, time.Time{}, false)
	}
	msg := ""
	if base.Message != nil {
		msg = *base.Message
	}
	*l = xensource.Line{}
	ts := *base.Timestamp
	l.Stamp = xensource.Stamp{Month: ts.Month(), Day: ts.Day(), Hour: ts.Hour(), Minute: ts.Minute(), Second: ts.Second(), Nanos: ts.Nanosecond()}
	if rfc5424msg {
		_, off := ts.Zone()
		l.Stamp.Year, l.Stamp.Offset, l.Stamp.HasZone = ts.Year(), off, true
	}
	l.SyslogHost = *base.Hostname
	if base.Appname != nil {
		l.Tag = *base.Appname
		l.Program = l.Tag[strings.LastIndexByte(l.Tag, '/')+1:]
	}
	if err := xensource.ParseMessage(msg, l); err != nil {
		var pe *xensource.ParseError
		if !errors.As(err, &pe) || pe.Kind != xensource.ErrKindHeader {
			s.stats.Bad++
			return err
		}
		s.stats.NoHeader++
	}
	return s.feed(l, l.SyslogHost, ts, rfc5424msg)
}

func (s *Syslog) feed(l *xensource.Line, host string, _ time.Time, _ bool) error {
	if a, ok := s.cfg.HostAlias[host]; ok {
		host = a
	}
	if host == "" {
		s.stats.Bad++
		return errors.New("no hostname in the message")
	}
	e := s.e
	if l.TaskRefKind == 'R' {
		l.TaskName = e.intern(l.TaskName)
	}
	key := "syslog:" + host
	y := e.years[key]
	if y == nil {
		y = xensource.NewYearInferer(e.cfg.Now(), e.cfg.Loc)
		e.years[key] = y
	}
	t := y.Infer(l.Stamp)
	s.stats.Messages++
	e.stats.Lines++
	e.feedParsed(host, t, l)
	return nil
}

// ServeUDP reads datagrams (one message each) until ctx ends.
func (s *Syslog) ServeUDP(ctx context.Context, pc net.PacketConn) error {
	return syslogframe.ServeUDP(ctx, pc, func(msg []byte, from string) {
		if err := s.Handle(msg); err != nil {
			s.e.log.Debug("syslog message refused", "from", from, "err", err)
		}
	}, func(n int64) {
		s.e.log.Warn("xensource.log over syslog/UDP: the kernel dropped datagrams (receive buffer full): those log lines are lost; send over TCP or raise net.core.rmem_max",
			"addr", pc.LocalAddr().String(), "dropped", n)
	})
}

// ServeTCP accepts connections until ctx ends. Each connection carries
// octet-counted (RFC 6587 3.4.1) or LF-terminated (3.4.2) frames, detected
// per frame.
func (s *Syslog) ServeTCP(ctx context.Context, ln net.Listener) error {
	return syslogframe.ServeTCP(ctx, ln, s.e.cfg.MaxLine, func(msg []byte, overlong bool, _ string) {
		s.frame(msg, overlong)
	}, func(from string, err error) {
		s.countBad(err)
		s.e.log.Warn("syslog connection dropped", "from", from, "err", err)
	})
}

// ReadStream splits a TCP stream into frames and handles each.
func (s *Syslog) ReadStream(r io.Reader) error {
	err := syslogframe.Read(r, s.e.cfg.MaxLine, s.frame)
	s.countBad(err)
	return err
}

func (s *Syslog) frame(msg []byte, overlong bool) {
	if overlong {
		s.mu.Lock()
		s.stats.Overlong++
		s.mu.Unlock()
		return
	}
	if err := s.Handle(msg); err != nil {
		s.e.log.Debug("syslog message refused", "err", err)
	}
}

func (s *Syslog) countBad(err error) {
	if errors.Is(err, syslogframe.ErrBadCount) {
		s.mu.Lock()
		s.stats.Bad++
		s.mu.Unlock()
	}
}
