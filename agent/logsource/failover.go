package logsource

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"
)

// Tick closes quiet tasks and commits what is due (for an engine fed only
// by the syslog listener; the Tailer does this on each poll).
func (e *Engine) Tick(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.expire(false)
	return e.commit(ctx, nil)
}

// Flush closes every open task and commits everything, whatever the mode
// (end of a replay).
func (e *Engine) Flush(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.expire(true)
	for i := range e.pending {
		e.pending[i].release = time.Time{}
	}
	return e.commit(ctx, nil)
}

// Failover runs the log source beside the XAPI tracer. The tailer and the
// syslog listener run all the time, so the log side is caught up when it
// is needed and its offsets stay current; what happens to the records
// they derive depends on XAPI's health, which Probe measures:
//
//   - XAPI answers (standby): log records wait Engine.Hold and are dropped
//     unless XAPI became suspect meanwhile — the tracer's records are richer
//     (task uuid, new VM uuids) and, with the same ids, would otherwise race.
//   - Probe fails (suspect): records are still held, but will be stored
//     (unless the store already has the id), so an operation that ended
//     while the tracer was losing its connection is not lost.
//   - Probe has failed for After (active): records are stored at once.
//   - Probe succeeds again: back to standby; the XAPI watcher resyncs on its
//     own when it reconnects, and an operation seen by both sources is one
//     record (same id; the store keeps the first).
type Failover struct {
	Engine *Engine
	Tailer *Tailer // optional
	Syslog *Syslog // optional; with UDP and/or TCP
	UDP    net.PacketConn
	TCP    net.Listener
	// Probe asks the pool master something cheap (e.g. pool.get_all); an
	// error means unreachable.
	Probe func(ctx context.Context) error
	// Every is the probe and commit interval (default 2s); After the time
	// XAPI must stay unreachable before the log source takes over
	// (default 30s).
	Every, After time.Duration
}

// Run runs until ctx ends.
func (f *Failover) Run(ctx context.Context) error {
	if f.Engine == nil || f.Probe == nil {
		return errors.New("logsource: Failover needs an Engine and a Probe")
	}
	every, after := f.Every, f.After
	if every <= 0 {
		every = 2 * time.Second
	}
	if after <= 0 {
		after = 30 * time.Second
	}
	var wg sync.WaitGroup
	if f.Tailer != nil {
		wg.Add(1)
		go func() { defer wg.Done(); f.Tailer.Run(ctx) }()
	}
	if f.Syslog != nil && f.UDP != nil {
		wg.Add(1)
		go func() { defer wg.Done(); f.Syslog.ServeUDP(ctx, f.UDP) }()
	}
	if f.Syslog != nil && f.TCP != nil {
		wg.Add(1)
		go func() { defer wg.Done(); f.Syslog.ServeTCP(ctx, f.TCP) }()
	}
	defer wg.Wait()
	var downSince time.Time
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, every)
		err := f.Probe(pctx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case err == nil:
			downSince = time.Time{}
			f.Engine.SetMode(Standby)
		case downSince.IsZero():
			downSince = time.Now()
			f.Engine.SetMode(Suspect)
			f.Engine.log.Warn("XAPI unreachable", "err", err)
		case time.Since(downSince) >= after:
			f.Engine.SetMode(Active)
		}
		if f.Tailer == nil {
			if err := f.Engine.Tick(ctx); err != nil && ctx.Err() == nil {
				f.Engine.log.Warn("log source: commit failed", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}
