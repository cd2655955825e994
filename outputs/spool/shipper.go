package spool

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/vmlineage/vmlineage/outputs"
)

// Shipper drives one Output from one Spool: it reads batches, sends them,
// and acknowledges them in the spool only after Send returned nil — and, for
// an outputs.Confirmer (syslog over TCP/TLS), only once Confirm vouches for
// them ConfirmAfter later. A failed batch is sent again after a back-off,
// and a failed confirmation sends again everything not acknowledged, so
// delivery is at-least-once; outputs/README.md states the repeat window.
type Shipper struct {
	Spool  *Spool
	Output outputs.Output
	// BatchSize caps records per Send (default 500).
	BatchSize int
	// BatchBytes caps payload bytes per Send (default 5 MiB).
	BatchBytes int
	// Backoff between failed Sends (default 100ms .. 30s, jittered).
	Backoff outputs.Backoff
	// SendTimeout bounds one Send (default 60s).
	SendTimeout time.Duration

	mu       sync.Mutex
	counters outputs.Counters
	lastOK   time.Time
}

// ShipperHealth combines the output's and the spool's view.
type ShipperHealth struct {
	Output   string         `json:"output"`
	Health   outputs.Health `json:"health"`
	Spool    Stats          `json:"spool"`
	LastSent time.Time      `json:"last_sent,omitempty"`
}

// Health reports the counters; when the Output counts for itself its own
// figures are used (they see per-item detail), else the shipper's.
func (s *Shipper) Health() ShipperHealth {
	h := s.counters.Health()
	if hr, ok := s.Output.(outputs.HealthReporter); ok {
		oh := hr.Health()
		if oh.LastErrorTime.Before(h.LastErrorTime) {
			oh.LastError, oh.LastErrorTime = h.LastError, h.LastErrorTime
		}
		oh.Retried = max(oh.Retried, h.Retried)
		h = oh
	}
	s.mu.Lock()
	last := s.lastOK
	s.mu.Unlock()
	return ShipperHealth{Output: s.Output.Name(), Health: h, Spool: s.Spool.Stats(), LastSent: last}
}

// Run ships until ctx ends (returning nil) or the spool is closed. For an
// outputs.Confirmer the spool is acknowledged only once Confirm vouches for
// what was sent, ConfirmAfter later; a failed confirmation, or a failed
// Send while items await one, sends everything not acknowledged again.
func (s *Shipper) Run(ctx context.Context) error {
	bs := s.BatchSize
	if bs <= 0 {
		bs = 500
	}
	bb := s.BatchBytes
	if bb <= 0 {
		bb = 5 << 20
	}
	to := s.SendTimeout
	if to <= 0 {
		to = 60 * time.Second
	}
	conf, _ := s.Output.(outputs.Confirmer)
	var delay time.Duration
	if conf != nil {
		delay = conf.ConfirmAfter()
	}
	type sent struct {
		b  Batch
		at time.Time
	}
	var waiting []sent // sent, not yet confirmed, in spool order
	rewind := func() {
		n := 0
		for _, w := range waiting {
			n += len(w.b.Items)
		}
		s.counters.AddRetried(n)
		waiting = nil
		s.Spool.Rewind()
	}
	for {
		// Acknowledge what has waited long enough on a live connection.
		for len(waiting) > 0 && time.Since(waiting[0].at) >= delay {
			if err := conf.Confirm(waiting[0].at); err != nil {
				s.counters.Fail(0, err)
				rewind()
				break
			}
			if err := s.Spool.Ack(waiting[0].b); err != nil {
				s.counters.Fail(0, err)
			}
			waiting = waiting[1:]
		}
		rctx, cancel := ctx, context.CancelFunc(func() {})
		if len(waiting) > 0 {
			rctx, cancel = context.WithDeadline(ctx, waiting[0].at.Add(delay))
		}
		b, err := s.Spool.Read(rctx, bs, bb)
		cancel()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, outputs.ErrClosed) {
				return nil
			}
			if rctx.Err() != nil {
				continue // a confirmation is due
			}
			s.counters.Fail(0, err)
			if outputs.SleepCtx(ctx, time.Second) != nil {
				return nil
			}
			continue
		}
		if len(b.Items) == 0 {
			continue
		}
		resent := false
		for attempt := 1; ; attempt++ {
			sctx, cancel := context.WithTimeout(ctx, to)
			err := s.Output.Send(sctx, b.Items)
			cancel()
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return nil
			}
			s.counters.Fail(len(b.Items), err)
			s.counters.AddRetried(len(b.Items))
			if len(waiting) > 0 {
				// The connection broke: what it carried before may be lost
				// too. Everything not acknowledged goes again, in order.
				rewind()
				resent = true
				break
			}
			if s.Backoff.Sleep(ctx, attempt) != nil {
				return nil
			}
		}
		if resent {
			continue
		}
		s.counters.AddSent(len(b.Items))
		s.mu.Lock()
		s.lastOK = time.Now().UTC()
		s.mu.Unlock()
		if conf != nil && delay > 0 {
			waiting = append(waiting, sent{b, time.Now()})
			continue
		}
		if err := s.Spool.Ack(b); err != nil {
			// Delivered but not committed: after a restart these records go
			// out again (harmless for Elasticsearch, a duplicate for syslog).
			s.counters.Fail(0, err)
		}
	}
}
