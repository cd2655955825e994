package alerts

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// stealEvery is how often traceSteal reads /proc/stat: each read costs
// about 30 µs here (0.6% of a core), and the kernel counts steal in 10 ms
// units, so a finer sampling would not place it better.
const stealEvery = 5 * time.Millisecond

// stealTrace records when the hypervisor took CPU from this VM (steal
// time, /proc/stat) while a benchmark runs, so that its figures can be
// read apart from the machine's stalls.
type stealTrace struct {
	stop, done chan struct{}
	once       sync.Once
	spans      []Span // in time order, merged where they touch
}

// traceSteal samples the machine's steal counter every stealEvery until
// stopped. The counter grows in 10 ms units and only at a scheduler tick,
// so a growth seen between two samples may come from steal up to 10 ms
// before the earlier one: each span starts that much earlier, erring
// towards too much steal rather than too little.
func traceSteal() *stealTrace {
	s := &stealTrace{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(stealEvery)
		defer tick.Stop()
		prev, prevAt := machineCPU().steal, time.Now()
		for {
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
			cur, now := machineCPU().steal, time.Now()
			if cur > prev {
				s.add(Span{At: prevAt.Add(-10 * time.Millisecond), Took: now.Sub(prevAt) + 10*time.Millisecond})
			}
			prev, prevAt = cur, now
		}
	}()
	return s
}

func (s *stealTrace) add(sp Span) {
	if n := len(s.spans); n > 0 {
		last := &s.spans[n-1]
		if end := last.At.Add(last.Took); !sp.At.After(end) {
			last.Took = max(last.Took, sp.At.Add(sp.Took).Sub(last.At))
			return
		}
	}
	s.spans = append(s.spans, sp)
}

// Stop ends the sampling and returns the spans with steal; it may be
// called again (a deferred Stop after a failed run).
func (s *stealTrace) Stop() []Span {
	s.once.Do(func() { close(s.stop) })
	<-s.done
	return s.spans
}

// clearOfSteal gives the latencies of the alerts (lat, with when each was
// sent, in sending order) that no steal span overlapped from their sending
// to their hand-over: what the software did on the CPUs it had. An alert
// that arrived just after a stall and queued behind its backlog still
// counts, so the figure leans slow.
func clearOfSteal(lat []time.Duration, sent []time.Time, steal []Span) []time.Duration {
	var out []time.Duration
	k := 0 // steal spans before k end before every later alert was sent
	for i, l := range lat {
		from := sent[i]
		for k < len(steal) && !steal[k].At.Add(steal[k].Took).After(from) {
			k++
		}
		hit := false
		end := from.Add(l)
		for j := k; j < len(steal) && steal[j].At.Before(end); j++ {
			if steal[j].At.Add(steal[j].Took).After(from) {
				hit = true
				break
			}
		}
		if !hit {
			out = append(out, l)
		}
	}
	return out
}

// dueTimes are n alerts' due times, one per interval from start.
func dueTimes(start time.Time, interval time.Duration, n int) []time.Time {
	out := make([]time.Time, n)
	for i := range out {
		out[i] = start.Add(time.Duration(i) * interval)
	}
	return out
}

// clearFigures renders what clearOfSteal leaves: how many alerts, and
// their p50 and p99.
func clearFigures(lat []time.Duration, sent []time.Time, steal []Span) (string, float64) {
	clear := clearOfSteal(lat, sent, steal)
	var stolen time.Duration
	for _, s := range steal {
		stolen += s.Took
	}
	if len(clear) < 100 {
		return fmt.Sprintf("clear of steal: only %d alerts (steal seen in %d spans over %s)", len(clear), len(steal), stolen.Round(time.Millisecond)), 0
	}
	slices.Sort(clear)
	p99 := ms(clear[len(clear)*99/100])
	return fmt.Sprintf("clear of steal: %d of %d alerts were in flight while the hypervisor took no CPU (steal seen in %d spans covering %s of the run): p50 %.2f p99 %.2f ms",
		len(clear), len(lat), len(steal), stolen.Round(time.Millisecond), ms(clear[len(clear)/2]), p99), p99
}

func TestClearOfSteal(t *testing.T) {
	start := time.Unix(1000, 0)
	lat := make([]time.Duration, 1000)
	for i := range lat {
		lat[i] = time.Millisecond
	}
	for i := 500; i < 520; i++ { // a stall: alerts due 500..519 ms wait
		lat[i] = 30 * time.Millisecond
	}
	lat[900] = 50 * time.Millisecond // slow without steal: it must count
	steal := []Span{{At: start.Add(505 * time.Millisecond), Took: 10 * time.Millisecond}, {At: start.Add(2 * time.Second), Took: time.Second}}
	clear := clearOfSteal(lat, dueTimes(start, time.Millisecond, len(lat)), steal)
	// Of the alerts due 500..519 (30 ms each), 500..514 were in flight
	// during the span (505..515 ms) and go; 515..519 came after it and
	// stay, slow as they are (the backlog counts). Those due before 505
	// with 1 ms were done before the span began.
	if want := 1000 - 15; len(clear) != want {
		t.Fatalf("clear: %d alerts, want %d", len(clear), want)
	}
	if !slices.Contains(clear, 50*time.Millisecond) {
		t.Fatal("the slow alert that no steal touched was left out")
	}
	stalled := 0
	for _, l := range clear {
		if l == 30*time.Millisecond {
			stalled++
		}
	}
	if stalled != 5 {
		t.Fatalf("%d of the stalled alerts kept, want the 5 due after the span", stalled)
	}
	s, p99 := clearFigures(lat, dueTimes(start, time.Millisecond, len(lat)), steal)
	if p99 != 1 || !strings.Contains(s, "985 of 1000") {
		t.Fatalf("figures: %q, p99 %v", s, p99)
	}
	var st stealTrace
	st.add(Span{At: start, Took: 15 * time.Millisecond})
	st.add(Span{At: start.Add(10 * time.Millisecond), Took: 15 * time.Millisecond})
	st.add(Span{At: start.Add(40 * time.Millisecond), Took: 5 * time.Millisecond})
	if len(st.spans) != 2 || st.spans[0].Took != 25*time.Millisecond {
		t.Fatalf("merged spans: %+v", st.spans)
	}
}
