package alerts

import (
	"os"
	"runtime/debug"
)

// GCPercent is the GOGC of a process that enriches alerts (vmlineage run
// with an alert listener, alerts serve, enrich), unless GOGC is set in its
// environment. The heap then stays near 1.5 times the live heap instead
// of twice it: about 70 MiB at its peak instead of 85 in
// BenchmarkEnrich1MVMs, with more than twice the collections (about 175
// a run instead of 76) at about the same host CPU per alert.
//
// Measured 2026-12-03, alternating runs: p99 was lower with 50 than with
// the default 100 in 13 of 16 pairs (for example 17.9 against 22.4 ms,
// 30.2 against 55.0 ms), but the machine's steal time, which drives p99
// there, differed within pairs. Fitted against steal (log p99, 36 runs),
// 50 comes out at 0.81 times the p99 of 100, with a 95% interval of 0.59
// to 1.11: likely better, not proven. It is kept because it costs nothing
// measurable and lowers memory. The other way was worse: a heap goal of
// at least 128 MiB (4 collections a run) raised p99 in all 6 pairs,
// GOGC=400 in 3, and GOGC=25 cost 12% more host CPU and raised p99
// again. A smaller heap is more of it in the cache; that is the likeliest
// reason, not a measured one.
const GCPercent = 50

// TuneGC sets GCPercent unless GOGC is set in the environment (the
// operator's choice rules). restore puts back the setting it replaced.
func TuneGC() (restore func()) {
	if os.Getenv("GOGC") != "" {
		return func() {}
	}
	old := debug.SetGCPercent(GCPercent)
	return func() { debug.SetGCPercent(old) }
}
