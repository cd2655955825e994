package alerts

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

func TestGCPercentFor(t *testing.T) {
	for _, c := range []struct {
		live uint64
		want int
	}{
		{0, GCMaxPercent},
		{1 << 20, GCMaxPercent},
		{16 << 20, 200},
		{32 << 20, 100},
		{55 << 20, 58},
		{1 << 30, GCMinPercent},
	} {
		if got := gcPercentFor(c.live); got != c.want {
			t.Errorf("gcPercentFor(%d MiB) = %d, want %d", c.live>>20, got, c.want)
		}
	}
}

// gcPercent reads GOGC without setting it (setting it, even back, could
// undo a change the tuner makes in between).
func gcPercent() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int(s[0].Value.Uint64())
}

// TestTuneGC: the tuner follows the live heap from one collection to the
// next, stops on restore and leaves an operator's GOGC alone.
func TestTuneGC(t *testing.T) {
	t.Setenv("GOGC", "")
	before := debug.SetGCPercent(100)
	defer debug.SetGCPercent(before)
	restore := TuneGC()
	inner := TuneGC() // nested: the tuning goes on until both restore
	// A live heap of 128 MiB: the goal is live+headroom, GOGC 25, kept at
	// the floor.
	ballast := make([]byte, 128<<20)
	for i := range ballast {
		ballast[i] = 1 // touched, so it is not elided
	}
	waitGCPercent(t, GCMinPercent)
	runtime.KeepAlive(ballast)
	ballast = nil
	// A small live heap: GOGC rises towards the ceiling.
	waitGCPercent(t, -1)
	if p, live := gcPercent(), liveHeap(); live < 12<<20 && p <= 200 {
		t.Errorf("GOGC %d with a live heap of %d MiB, want above 200", p, live>>20)
	}
	inner()
	inner() // a second call is a no-op
	if p := gcPercent(); p == 100 {
		t.Errorf("GOGC back to 100 while a caller still tunes")
	}
	restore()
	if p := gcPercent(); p != 100 {
		t.Errorf("GOGC %d after restore, want 100 back", p)
	}
	// Stopped: collections no longer change it.
	runtime.GC()
	runtime.GC()
	time.Sleep(20 * time.Millisecond)
	if p := gcPercent(); p != 100 {
		t.Errorf("GOGC %d after restore and two collections, want 100", p)
	}

	t.Setenv("GOGC", "200") // the operator's choice
	debug.SetGCPercent(200)
	restore = TuneGC()
	runtime.GC()
	runtime.GC()
	time.Sleep(20 * time.Millisecond)
	if p := gcPercent(); p != 200 {
		t.Errorf("GOGC %d with GOGC=200 in the environment, want it left alone", p)
	}
	restore()
}

// waitGCPercent collects until the tuner has set GOGC to want (-1: until
// it is above GCMinPercent).
func waitGCPercent(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		time.Sleep(5 * time.Millisecond) // the cleanup runs after the collection
		p := gcPercent()
		if p == want || (want < 0 && p > GCMinPercent) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GOGC %d after collections, want %d (live heap %d MiB)", p, want, liveHeap()>>20)
		}
	}
}
