package outputs

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff computes exponential delays with full jitter, so many agents that
// lost the same receiver do not reconnect in lock-step.
type Backoff struct {
	Min time.Duration // first delay (default 100ms)
	Max time.Duration // cap (default 30s)
}

// Delay returns the wait before attempt n (n = 1 after the first failure):
// a random duration in [d/2, d] with d = min(Max, Min*2^(n-1)).
func (b Backoff) Delay(n int) time.Duration {
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = 100 * time.Millisecond
	}
	if hi <= 0 {
		hi = 30 * time.Second
	}
	if n < 1 {
		n = 1
	}
	d := lo
	for i := 1; i < n && d < hi; i++ {
		d *= 2
	}
	if d > hi {
		d = hi
	}
	half := d / 2
	return half + time.Duration(rand.Int64N(int64(d-half)+1))
}

// Sleep waits Delay(n) or until ctx ends; it returns ctx.Err() in that case.
func (b Backoff) Sleep(ctx context.Context, n int) error {
	return SleepCtx(ctx, b.Delay(n))
}

// SleepCtx waits d or until ctx ends.
func SleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
