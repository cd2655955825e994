package pipeline

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/vmlineage/vmlineage/agent/logsource"
	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/agent/xensource"
)

// LogSource is the running xensource.log fallback (nil when none is
// configured): its engine's mode and counters, for tests and status.
func (a *Agent) LogSource() *logsource.Engine { return a.logEngine.Load() }

// startLogSource runs the xensource.log fallback beside the XAPI tracer
// (paper section 3.2): the tailer and the syslog listener read all the time,
// and logsource.Failover stores their records when the pool master has been
// unreachable for logsource.failover_after. The log records need the pool's
// uuid (it is part of every record id) and the host map, which only XAPI
// tells: the source waits until the store knows the pool. The returned
// channel closes when everything has stopped.
func (a *Agent) startLogSource(ctx context.Context) (<-chan struct{}, error) {
	done := make(chan struct{})
	ls := a.cfg.LogSource
	if !ls.Enabled() {
		close(done)
		return done, nil
	}
	loc := time.UTC
	if ls.Timezone != "" {
		l, err := time.LoadLocation(ls.Timezone)
		if err != nil {
			close(done)
			return done, fmt.Errorf("logsource.timezone: %w", err)
		}
		loc = l
	}
	// Bind the listeners now, so that a wrong address fails the start.
	var udp net.PacketConn
	var tcp net.Listener
	if ls.SyslogListen != "" {
		var err error
		if udp, tcp, err = listenSyslog("logsource.syslog_listen", ls.SyslogListen); err != nil {
			close(done)
			return done, err
		}
	}
	go func() {
		defer close(done)
		defer func() {
			if udp != nil {
				udp.Close()
				tcp.Close()
			}
		}()
		dcfg, err := a.waitDeriverConfig(ctx)
		if err != nil {
			return
		}
		after := ls.FailoverAfter.D()
		tune := a.opts.LogSource
		idle, hold := a.logTimings()
		dcfg.IdleTimeout = idle
		var onSession func(string, time.Time, string)
		if a.attributor != nil {
			onSession = sessionFeed(a.attributor)
		}
		e := logsource.NewEngine(a.Store, logsource.EngineConfig{OnSession: onSession,
			Deriver: dcfg, Loc: loc, Log: a.log, Now: tune.Clock, Quiet: tune.Quiet,
			Hold: hold,
			// Lines that arrive after an outage (the logs lag) still give
			// their record when the tracer has none of that id.
			StandbyStores: true,
			OnRecord:      a.logRecord,
		})
		var tl *logsource.Tailer
		if ls.Glob != "" {
			tl, err = logsource.NewTailer(e, logsource.TailConfig{Glob: ls.Glob, HostPattern: ls.HostPattern, Poll: ls.Poll.D()})
			if err != nil {
				a.log.Error("log source: not started", "err", err)
				return
			}
		}
		var sl *logsource.Syslog
		if udp != nil {
			sl = logsource.NewSyslog(e, logsource.SyslogConfig{HostAlias: ls.HostAlias})
		}
		a.logEngine.Store(e)
		every := tune.Every
		if every <= 0 {
			every = min(2*time.Second, max(after/4, 100*time.Millisecond))
		}
		fo := &logsource.Failover{Engine: e, Tailer: tl, Syslog: sl, UDP: udp, TCP: tcp, After: after, Every: every,
			Probe: func(ctx context.Context) error {
				var refs []string
				return a.Client.Call(ctx, "pool.get_all", &refs)
			}}
		a.log.Info("log source started", "glob", ls.Glob, "syslog", ls.SyslogListen, "pool", dcfg.PoolUUID, "hosts", len(dcfg.Hosts))
		if err := fo.Run(ctx); err != nil && ctx.Err() == nil {
			a.log.Error("log source stopped", "err", err)
		}
	}()
	return done, nil
}

// logTimings are the log source's idle timeout and hold (configuration,
// test tuning, defaults).
func (a *Agent) logTimings() (idle, hold time.Duration) {
	ls, tune := a.cfg.LogSource, a.opts.LogSource
	idle = tune.Idle
	if idle <= 0 {
		idle = ls.IdleTimeout.D()
	}
	if idle <= 0 {
		idle = 10 * time.Minute
	}
	hold = tune.Hold
	if hold <= 0 {
		hold = ls.Hold.D()
	}
	if hold <= 0 {
		// Hold outlasts the failover delay: an operation that ended as
		// XAPI became unreachable is stored, not dropped.
		hold = max(2*ls.FailoverAfter.D(), time.Minute)
	}
	return idle, hold
}

// waitDeriverConfig waits until the store knows the pool (the tracer's
// first sync, or an earlier run).
func (a *Agent) waitDeriverConfig(ctx context.Context) (cfg xensource.Config, err error) {
	warned := false
	for {
		cfg, err = logsource.DeriverConfig(ctx, a.Store, "", "", nil)
		if err == nil {
			return cfg, nil
		}
		if !errors.Is(err, logsource.ErrNoPool) {
			a.log.Error("log source: not started", "err", err)
			return cfg, err
		}
		if !warned {
			a.log.Warn("log source waits for XAPI to name the pool (record ids need its uuid)")
			warned = true
		}
		select {
		case <-ctx.Done():
			return cfg, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// logRecord is what the tracer's OnRecord does, for a record the log source
// stored.
func (a *Agent) logRecord(r *record.Record) {
	a.outs.notify()
	a.detect.onRecord(r)
	a.metrics.Committed()
	if a.opts.OnRecord != nil {
		a.opts.OnRecord(r)
	}
}

// listenSyslog opens the UDP and TCP listeners a syslog intake (the log
// source's, the audit log's) takes on addr; key names the setting in errors.
func listenSyslog(key, addr string) (net.PacketConn, net.Listener, error) {
	udp, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", key, err)
	}
	tcp, err := net.Listen("tcp", addr)
	if err != nil {
		udp.Close()
		return nil, nil, fmt.Errorf("%s: %w", key, err)
	}
	return udp, tcp, nil
}
