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

// Run ships until ctx ends (returning nil) or the spool is closed.
//
// For an outputs.Confirmer with a confirmation delay D (ConfirmAfter), a
// batch is acknowledged in the spool only when Confirm vouches for it D
// after its Send returned; a failed confirmation, or a failed Send while
// batches await one, rewinds to the last acknowledgement and sends
// everything from there again. What such a repeat can span is enforced
// here: every write ends within 2×D (outputs.RepeatWindow) of the start of
// the Send of the oldest batch not yet acknowledged (outputs/README.md,
// "At-least-once window").
// A record is repeated only if its batch was never acknowledged, so the
// records a receiver takes between a copy and its repeat were all written
// within 2×D after that copy. To keep it:
//   - a Send starts only before the oldest waiting batch's start + D;
//     past that, the shipper waits for that batch's confirmation instead
//     (due D after its Send returned), so each Send has at least D to write;
//   - each Send has a deadline at that start + 2×D (its own start + 2×D when
//     nothing awaits confirmation); an output that misses it fails the Send
//     (syslog drops the connection: the receiver may hold half a message),
//     everything unacknowledged goes again, and the next batches are halved
//     until Sends fit again (a slow receiver still gets everything);
//   - a batch leaves the waiting list only once its acknowledgement is on
//     disk: a SIGKILL re-sends it, so nothing may be written past its bound.
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
	window := outputs.RepeatWindow(delay) // 0: Send returning nil is delivery, no bound needed
	type sent struct {
		b     Batch
		start time.Time // the Send began: its first item may have reached the receiver then
		end   time.Time // the Send returned: what Confirm is asked about
	}
	var waiting []sent // sent, not yet acknowledged, in spool order
	var held *Batch    // read, but its turn came after the oldest waiting batch's start + D
	shrink := 0        // batches are cut to 1/2^shrink after Sends that missed the window
	rewind := func() {
		n := 0
		for _, w := range waiting {
			n += len(w.b.Items)
		}
		s.counters.AddRetried(n)
		waiting, held = nil, nil
		s.Spool.Rewind()
	}
	for {
		// Acknowledge what has waited long enough on a live connection.
		for len(waiting) > 0 && time.Since(waiting[0].end) >= delay {
			if err := conf.Confirm(waiting[0].end); err != nil {
				s.counters.Fail(0, err)
				rewind()
				break
			}
			if err := s.Spool.Ack(waiting[0].b); err != nil {
				if errors.Is(err, outputs.ErrClosed) {
					return nil
				}
				// Not on disk: a restart would send it again, so it keeps
				// bounding the writes until an Ack holds.
				s.counters.Fail(0, err)
				if outputs.SleepCtx(ctx, time.Second) != nil {
					return nil
				}
				continue
			}
			waiting = waiting[1:]
		}
		if len(waiting) > 0 && !time.Now().Before(waiting[0].start.Add(delay)) {
			// No Send may start now: wait for the oldest batch's confirmation.
			if outputs.SleepCtx(ctx, time.Until(waiting[0].end.Add(delay))) != nil {
				return nil
			}
			continue
		}
		var b Batch
		if held != nil {
			b, held = *held, nil
		} else {
			rctx, cancel := ctx, context.CancelFunc(func() {})
			if len(waiting) > 0 {
				rctx, cancel = context.WithDeadline(ctx, waiting[0].start.Add(delay))
			}
			var err error
			b, err = s.Spool.Read(rctx, max(1, bs>>shrink), max(1, bb>>shrink))
			cancel()
			if err != nil {
				if ctx.Err() != nil || errors.Is(err, outputs.ErrClosed) {
					return nil
				}
				if rctx.Err() != nil {
					continue // the oldest batch's turn to be confirmed
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
			if len(waiting) > 0 && !time.Now().Before(waiting[0].start.Add(delay)) {
				held = &b // the read took its time; confirm first
				continue
			}
		}
		resent := false
		var start time.Time
		for attempt := 1; ; attempt++ {
			start = time.Now()
			deadline := start.Add(to)
			if window > 0 {
				base := start
				if len(waiting) > 0 {
					base = waiting[0].start
				}
				if d := base.Add(window); d.Before(deadline) {
					deadline = d
				}
			}
			sctx, cancel := context.WithDeadline(ctx, deadline)
			err := s.Output.Send(sctx, b.Items)
			missed := err != nil && window > 0 && errors.Is(sctx.Err(), context.DeadlineExceeded)
			cancel()
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return nil
			}
			s.counters.Fail(len(b.Items), err)
			s.counters.AddRetried(len(b.Items))
			if missed {
				// The receiver takes less than a batch within the window:
				// smaller batches, from the last acknowledgement.
				shrink = min(shrink+1, 16)
				rewind()
				resent = true
				if s.Backoff.Sleep(ctx, shrink) != nil {
					return nil
				}
				break
			}
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
		shrink = max(shrink-1, 0)
		s.counters.AddSent(len(b.Items))
		s.mu.Lock()
		s.lastOK = time.Now().UTC()
		s.mu.Unlock()
		if window > 0 {
			waiting = append(waiting, sent{b, start, time.Now()})
			continue
		}
		if err := s.Spool.Ack(b); err != nil {
			// Delivered but not committed: after a restart these records go
			// out again (harmless for Elasticsearch, a duplicate for syslog).
			s.counters.Fail(0, err)
		}
	}
}
