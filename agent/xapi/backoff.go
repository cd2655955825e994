package xapi

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff is exponential back-off with full jitter: the n-th wait is drawn
// uniformly from [0, min(Cap, Base·2^n)). Full jitter spreads the agents of
// many pools that lost the same master, so they do not reconnect in step.
type Backoff struct {
	Base time.Duration // default 1 s
	Cap  time.Duration // default 60 s
	n    int
	// rnd returns a float in [0,1); replaced in tests.
	rnd func() float64
}

// Next returns the next wait and advances the attempt counter.
func (b *Backoff) Next() time.Duration {
	base, cp := b.Base, b.Cap
	if base <= 0 {
		base = time.Second
	}
	if cp <= 0 {
		cp = 60 * time.Second
	}
	ceil := cp
	if b.n < 62 {
		if d := base << b.n; d > 0 && d < cp {
			ceil = d
		}
	}
	b.n++
	r := b.rnd
	if r == nil {
		r = rand.Float64
	}
	return time.Duration(r() * float64(ceil))
}

// Reset starts over after a success.
func (b *Backoff) Reset() { b.n = 0 }

// Attempts is the number of waits since the last Reset.
func (b *Backoff) Attempts() int { return b.n }

// Sleep waits d or until ctx ends.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
