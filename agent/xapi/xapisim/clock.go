package xapisim

import (
	"container/heap"
	"context"
	"sync"
	"time"
)

// scheduler runs the simulator's writes on a virtual clock. Items are run
// one at a time, in (virtual time, insertion) order, so a scenario replays
// identically whatever the speed. With speed > 0 virtual time advances
// speed times faster than real time; with speed 0 items run back to back
// and settle (if set) is called after each, to let outstanding event.from
// calls observe every batch.
type scheduler struct {
	mu       sync.Mutex
	items    itemHeap
	seq      uint64
	vnow     time.Time
	speed    float64
	realBase time.Time
	virtBase time.Time
	wake     chan struct{}
	fast     bool // ground truth: never sleep, no settle
	settle   func()
	pace     *pacer // paced play (paced.go): items run only when a client asks
}

type item struct {
	vt  time.Time
	seq uint64
	fn  func()
}

type itemHeap []*item

func (h itemHeap) Len() int { return len(h) }
func (h itemHeap) Less(i, j int) bool {
	if !h[i].vt.Equal(h[j].vt) {
		return h[i].vt.Before(h[j].vt)
	}
	return h[i].seq < h[j].seq
}
func (h itemHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *itemHeap) Push(x any)   { *h = append(*h, x.(*item)) }
func (h *itemHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func newScheduler(start time.Time, speed float64, fast bool) *scheduler {
	return &scheduler{vnow: start, virtBase: start, realBase: time.Now(), speed: speed,
		fast: fast, wake: make(chan struct{}, 1)}
}

// now is the current virtual time.
func (s *scheduler) now() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nowLocked()
}

func (s *scheduler) nowLocked() time.Time {
	if s.fast || s.speed <= 0 {
		return s.vnow
	}
	v := s.virtBase.Add(time.Duration(float64(time.Since(s.realBase)) * s.speed))
	if v.Before(s.vnow) {
		return s.vnow
	}
	return v
}

// setSpeed changes the speed, optionally resetting the virtual clock.
func (s *scheduler) setSpeed(speed float64, restart time.Time) {
	s.mu.Lock()
	if !restart.IsZero() {
		s.vnow = restart
		s.virtBase = restart
	} else {
		s.virtBase = s.nowLocked()
	}
	s.realBase = time.Now()
	s.speed = speed
	s.mu.Unlock()
	s.signal()
}

func (s *scheduler) speedNow() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.speed
}

// at schedules fn at virtual time vt (the past means now).
func (s *scheduler) at(vt time.Time, fn func()) {
	s.mu.Lock()
	s.seq++
	heap.Push(&s.items, &item{vt: vt, seq: s.seq, fn: fn})
	s.mu.Unlock()
	s.signal()
}

func (s *scheduler) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// realDelay is how long to wait in real time before vt is due.
func (s *scheduler) realDelayLocked(vt time.Time) time.Duration {
	if s.fast || s.speed <= 0 {
		return 0
	}
	d := vt.Sub(s.nowLocked())
	if d <= 0 {
		return 0
	}
	return time.Duration(float64(d) / s.speed)
}

// runOne runs the next due item; it reports false when the queue is empty.
// Only for fast mode and tests.
func (s *scheduler) runOne() bool {
	s.mu.Lock()
	if len(s.items) == 0 {
		s.mu.Unlock()
		return false
	}
	it := heap.Pop(&s.items).(*item)
	if it.vt.After(s.vnow) {
		s.vnow = it.vt
	}
	s.mu.Unlock()
	it.fn()
	return true
}

// run executes items as they fall due until ctx ends.
func (s *scheduler) run(ctx context.Context) {
	for {
		s.mu.Lock()
		if len(s.items) == 0 || s.pace != nil {
			s.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-s.wake:
			}
			continue
		}
		next := s.items[0]
		if d := s.realDelayLocked(next.vt); d > 0 {
			s.mu.Unlock()
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-s.wake:
			case <-t.C:
			}
			t.Stop()
			continue
		}
		heap.Pop(&s.items)
		if next.vt.After(s.vnow) {
			s.vnow = next.vt
		}
		if s.speed > 0 && next.vt.After(s.nowLocked()) {
			s.virtBase, s.realBase = next.vt, time.Now()
		}
		settle := s.settle != nil && s.speed <= 0 && !s.fast
		s.mu.Unlock()
		next.fn()
		if settle {
			s.settle()
		}
	}
}
