package alerts

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// A process that enriches alerts (vmlineage run with an alert listener,
// alerts serve, enrich) lets its heap grow by GCHeadroom over the live
// heap between collections, unless GOGC is set in its environment: GOGC
// is set after every collection to 100*GCHeadroom/live, kept between
// GCMinPercent and GCMaxPercent.
//
// Why a headroom and not a percentage: the enrichment path's live heap is
// small (about 13 MiB in BenchmarkEnrich1MVMs; the stores' pages are
// SQLite's, outside Go's heap), so any fixed GOGC collects every few MiB
// allocated. At GOGC=50 (this package's setting until 2026-12-04) that
// was 121 collections in the 10 s of alerts, each stopping the world
// twice; the first stop took more than 1.6 ms in one collection in ten
// and up to 7.4 ms, every thread having to reach a safe point on two
// busy CPUs. Enrich1MVMs, 2026-12-04 (no steal), alternating runs against
// GOGC=50: GOGC=400 (12 collections) gave p99 0.78 times (95% interval
// 0.62-1.00, four pairs) and host CPU 0.91 times, and in a second set
// GOGC=200 (26 collections) and 400 gave p99 medians of 5.7 and 6.4 ms
// against 7.0 ms; peak RSS 94 and 143 MiB against 79 MiB. A headroom keeps
// the gain where the live heap is small without letting a large one (a
// tracer of a big pool in the same process) grow by a multiple: at 55 MiB
// live the goal is 87 MiB, below Go's default of 110. A memory limit
// still rules over the goal (the agent's memory_limit, GOMEMLIMIT: 100 MiB
// by default): near it the runtime collects sooner whatever GOGC says.
const (
	GCHeadroom   = 32 << 20
	GCMinPercent = 50
	GCMaxPercent = 400
)

// gcTuning is the process's one tuner; TuneGC calls nest. All under mu.
var gcTuning struct {
	mu      sync.Mutex
	users   int
	old     int   // GOGC before the first TuneGC
	gen     int64 // bumped on stop: a stale cleanup chain ends
	percent int   // the last GOGC set
}

// TuneGC starts the headroom tuning above unless GOGC is set in the
// environment (the operator's choice rules). restore stops it and puts
// back the GOGC it found, once every caller has restored.
func TuneGC() (restore func()) {
	if os.Getenv("GOGC") != "" {
		return func() {}
	}
	g := &gcTuning
	g.mu.Lock()
	defer g.mu.Unlock()
	g.users++
	if g.users == 1 {
		p := gcPercentFor(liveHeap())
		g.old = debug.SetGCPercent(p)
		g.percent = p
		armGCTuner(g.gen)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			defer g.mu.Unlock()
			if g.users--; g.users == 0 {
				g.gen++
				debug.SetGCPercent(g.old)
			}
		})
	}
}

// gcPercentFor is the GOGC that gives a heap goal of live+GCHeadroom.
func gcPercentFor(live uint64) int {
	if live == 0 {
		return GCMaxPercent // no collection yet
	}
	return int(min(max(uint64(GCHeadroom)*100/live, GCMinPercent), GCMaxPercent))
}

// liveHeap is the heap the last collection marked live (0 before any).
func liveHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// armGCTuner leaves an object for the next collection to free; its
// cleanup, which runs after that collection, sets GOGC for the live heap
// it measured and arms the next one. A chain whose generation has ended
// (restore) stops.
func armGCTuner(gen int64) {
	// 64 bytes without pointers: not a tiny allocation, which may share a
	// block with others and outlive its collection.
	runtime.AddCleanup(new([64]byte), func(gen int64) {
		g := &gcTuning
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.gen != gen {
			return
		}
		if p := gcPercentFor(liveHeap()); p != g.percent {
			debug.SetGCPercent(p)
			g.percent = p
		}
		armGCTuner(gen)
	}, gen)
}
