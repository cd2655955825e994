package pipeline

import (
	"context"
	"net"
	"time"

	"github.com/vmlineage/vmlineage/agent/audit"
	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/record"
)

// Attributor is the audit log's join (nil when audit.source is off).
func (a *Agent) Attributor() *audit.Attributor { return a.attributor }

// startAudit takes the RBAC audit log in (audit.source) and joins it to
// the records: the chain keeper asks the Attributor for each unsealed
// record's actor before sealing it (records wait up to chain.settle for
// it), and a refused call becomes a denied record, stored with the
// source's position in one transaction. The returned channel closes when
// the source has stopped.
func (a *Agent) startAudit(ctx context.Context) (<-chan struct{}, error) {
	done := make(chan struct{})
	ac := a.cfg.Audit
	if a.attributor == nil {
		close(done)
		return done, nil
	}
	var udp net.PacketConn
	var tcp net.Listener
	if ac.Source == "syslog" {
		var err error
		if udp, tcp, err = listenSyslog("audit.syslog_listen", ac.SyslogListen); err != nil {
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
		att := a.attributor
		att.SetHosts(dcfg.PoolUUID, dcfg.Hosts)
		sink := a.auditSink(att)
		var run func(context.Context) error
		switch ac.Source {
		case "xapi":
			c := a.Client
			f, err := audit.NewFetcher(audit.FetchConfig{Client: c, PoolUUID: dcfg.PoolUUID, State: a.Store,
				Rewarm: 2 * time.Hour, Logger: a.log,
				BaseURL: func(h audit.Host) string {
					if u, ok := ac.HostURLs[h.Name]; ok {
						return u
					}
					if h.Master {
						return ""
					}
					return c.HostBase(h.Address)
				}})
			if err != nil {
				a.log.Error("audit log: not started", "err", err)
				return
			}
			run = func(ctx context.Context) error { return f.Run(ctx, ac.Poll.D(), sink) }
		case "files":
			fs, err := audit.NewFileSource(audit.FileConfig{Glob: ac.Glob, HostPattern: ac.HostPattern, PoolUUID: dcfg.PoolUUID,
				Hosts: dcfg.Hosts, State: a.Store, Logger: a.log})
			if err != nil {
				a.log.Error("audit log: not started", "err", err)
				return
			}
			defer fs.Close()
			run = func(ctx context.Context) error { return fs.Run(ctx, sink) }
		case "syslog":
			ss := audit.NewSyslogSource(audit.SyslogConfig{PoolUUID: dcfg.PoolUUID, HostAlias: ac.HostAlias, Hosts: dcfg.Hosts, Logger: a.log})
			go ss.ServeUDP(ctx, udp)
			go ss.ServeTCP(ctx, tcp)
			run = func(ctx context.Context) error { return ss.Run(ctx, sink) }
		}
		a.log.Info("audit log intake started", "source", ac.Source, "pool", dcfg.PoolUUID)
		if err := run(ctx); err != nil && ctx.Err() == nil {
			a.log.Error("audit log intake stopped", "err", err)
		}
	}()
	return done, nil
}

// auditSink stores what a batch of audit lines gives (the records of
// refused calls) with the source's position, in one transaction: a restart
// neither re-reads nor skips.
func (a *Agent) auditSink(att *audit.Attributor) audit.Sink {
	return func(ctx context.Context, b *audit.Batch) error {
		if b.Bad > 0 {
			a.log.Warn("audit log: malformed lines skipped", "lines", b.Bad, "example", b.BadSample)
		}
		up := att.Add(b)
		var stored []*record.Record
		err := a.Store.Update(ctx, func(tx *lineage.Tx) error {
			stored = stored[:0]
			for i := range up.Denied {
				r := &up.Denied[i]
				isNew, err := tx.PutRecord(r)
				if err != nil {
					return err
				}
				if isNew {
					stored = append(stored, r)
				}
			}
			for k, v := range b.State {
				if err := tx.SetAgentState(k, v); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, r := range stored {
			a.logRecord(r)
		}
		return nil
	}
}

// sessionFeed gives the Attributor the log source's Session.create lines:
// the user name and originator of root's sessions are in no audit line.
func sessionFeed(att *audit.Attributor) func(host string, t time.Time, msg string) {
	return func(_ string, t time.Time, msg string) {
		if s, pool, ok := audit.ParseSessionCreate(msg); ok && !pool {
			att.AddSession(s, t)
		}
	}
}
