package spool

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/vmlineage/vmlineage/outputs"
)

// Shipper drives one Output from one Spool: it reads batches, sends them,
// and acknowledges them in the spool only after Send returned nil. A failed
// batch is sent again after a back-off, so delivery is at-least-once; the
// repeat window is one batch (BatchSize records) per failure.
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

// Run ships until ctx ends (returning nil) or the spool is closed.
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
	for {
		b, err := s.Spool.Read(ctx, bs, bb)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, outputs.ErrClosed) {
				return nil
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
			if s.Backoff.Sleep(ctx, attempt) != nil {
				return nil
			}
		}
		s.counters.AddSent(len(b.Items))
		s.mu.Lock()
		s.lastOK = time.Now().UTC()
		s.mu.Unlock()
		if err := s.Spool.Ack(b); err != nil {
			// Delivered but not committed: after a restart these records go
			// out again (harmless for Elasticsearch, a duplicate for syslog).
			s.counters.Fail(0, err)
		}
	}
}
