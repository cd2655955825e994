package alerts

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/alerts/alertstest"
	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/internal/procstat"
	"github.com/vmlineage/vmlineage/internal/schedslice"
	"github.com/vmlineage/vmlineage/plugins"
	"github.com/vmlineage/vmlineage/plugins/plugintest"
)

// BenchmarkEnrich1MVMs: enrichment latency through the plugin path with
// 1,000,000 VMs in the store (and their 1.3 million records) and alerts
// arriving at 1,000/s. Each alert comes in as a CEF line over TCP to the
// syslog intake (SyslogListener, Ordered.Go: up to DefaultWorkers at once,
// each handed over when ready) from a sender process of its own, is
// matched to a VM by source.ip as held at its time, stored, given its
// lineage context, and offered to every shipped production detector
// (lineage-suspects, rollback, shadow-copy: separate processes, gRPC over
// go-plugin with AutoMTLS, lineage through the broker) before the enriched
// document is encoded. Open loop: the sender writes each alert at its due
// time whatever the intake does, and latency counts from that write to the
// enriched alert's hand-over, so queueing shows (p99-from-due-ms counts
// from the due time, the sender's own lateness included). Alerts come in
// pairs from one family so that lineage-suspects does its whole walk;
// every tenth family had a revert, so rollback is asked too. Meanwhile
// another process commits a batch of lifecycle records and state changes
// every 200 ms (a busy pool's tracer), competing for the store. Run with
// -benchtime 10000x (10 s of alerts).
//
// Environment: VMLINEAGE_BENCH_RATE (alerts/s, default 1000),
// VMLINEAGE_BENCH_PROFILE=dir (CPU profiles of the measured part: host.pprof
// and one per detector process), VMLINEAGE_BENCH_WRITER=0 (no writer),
// VMLINEAGE_BENCH_INTAKE=go (no socket: a goroutine of the benchmark
// parses each alert from ECS JSON at its due time and hands it to
// Ordered.Go, latency from the due time; the benchmark's only intake
// before 2026-12-03), ordered (the same, results handed over in arrival
// order, as vmlineage enrich does) or serial (alerts one at a time, the
// intake before Ordered), VMLINEAGE_BENCH_WORKERS (Ordered's workers,
// default DefaultWorkers), VMLINEAGE_BENCH_UNARY=1 (unary Enrich calls
// instead of EnrichStream, for comparison), VMLINEAGE_BENCH_DETECTORS (a
// comma list of the detectors to run, or none: a diagnosis of where the
// tail comes from; the target is with all three), VMLINEAGE_BENCH_SLICE_US
// (a scheduler slice for the host and the detectors, in µs; default the
// kernel's), VMLINEAGE_BENCH_WRITER_WARM (the busy pool writer's warm-up
// commits), VMLINEAGE_BENCH_WARMUP (alerts sent before the measured ones,
// default benchWarmUpAlerts; 0 for none), VMLINEAGE_BENCH_ALERTLOG (new:
// the alert log starts empty, the default; steady: it starts with
// steadyAlerts alerts that age out of its retention at the rate new ones
// come in, as a log at its bound does, see steadyAlertLog; full: the
// same alerts, no retention), VMLINEAGE_BENCH_PRUNE_EVERY (with steady:
// how often the writer prunes, default pruneEvery). Besides the end-to-end
// figures it prints the p50/p99 of each phase as the agent's
// alert_phase_seconds sees them (from Start, so without the time an alert
// waited to be read).
func BenchmarkEnrich1MVMs(b *testing.B) {
	rate := 1000
	if v, err := strconv.Atoi(os.Getenv("VMLINEAGE_BENCH_RATE")); err == nil && v > 0 {
		rate = v // to see service time without queueing
	}
	benchEnrich(b, alertstest.Big{Families: 100000, FamilySize: 10}, rate)
}

func benchEnrich(b *testing.B, big alertstest.Big, rate int) {
	defer TuneGC()() // as the agent runs when it enriches alerts
	intake := os.Getenv("VMLINEAGE_BENCH_INTAKE")
	switch intake {
	case "":
		intake = "syslog"
	case "syslog", "go", "ordered", "serial":
	default:
		b.Fatalf("VMLINEAGE_BENCH_INTAKE=%s: want syslog, go, ordered or serial", intake)
	}
	st := big.Open(b)
	// The probe run (b.N 1) logs nothing: testing cuts a benchmark's log
	// short, and the figures of the real run come last.
	logf := b.Logf
	if b.N == 1 {
		logf = func(string, ...any) {}
	}
	ctx := context.Background()
	logMode := os.Getenv("VMLINEAGE_BENCH_ALERTLOG")
	var steadyFrom time.Time // receipt time of the steady log's oldest alert
	switch logMode {
	case "", "new":
		logMode = "new"
	case "steady", "full":
		steadyFrom = steadyAlertLog(b, big, AlertsPath(st.Path()))
	default:
		b.Fatalf("VMLINEAGE_BENCH_ALERTLOG=%s: want new, steady or full", logMode)
	}
	svc, err := NewService(ctx, st)
	if err != nil {
		b.Fatal(err)
	}
	defer svc.Close()
	if logMode == "steady" {
		// From now on the oldest alert ages out each millisecond.
		svc.SetRetention(Retention{MaxAge: time.Since(steadyFrom) + time.Millisecond})
		if v, err := time.ParseDuration(os.Getenv("VMLINEAGE_BENCH_PRUNE_EVERY")); err == nil {
			svc.log.writeMu.Lock()
			svc.log.pruneEvery = v // an experiment: how often the writer prunes
			svc.log.writeMu.Unlock()
		}
	}
	pruned0 := svc.Pruned()
	profDir := os.Getenv("VMLINEAGE_BENCH_PROFILE")
	if profDir != "" {
		if err := os.MkdirAll(profDir, 0o755); err != nil {
			b.Fatal(err)
		}
		b.Setenv(plugins.EnvCPUProfile, profDir)
	}
	// The three production detectors (detectors/example is a template),
	// unless VMLINEAGE_BENCH_DETECTORS names others.
	names := []string{"lineage-suspects", "rollback", "shadow-copy"}
	if v := os.Getenv("VMLINEAGE_BENCH_DETECTORS"); v == "none" {
		names = nil
	} else if v != "" {
		names = strings.Split(v, ",")
	}
	// VMLINEAGE_BENCH_SLICE_US: a scheduler slice for the host and the
	// detectors, set before they start so that they inherit it (an
	// experiment, see the README; the agent keeps the kernel's default).
	if v, err := strconv.Atoi(os.Getenv("VMLINEAGE_BENCH_SLICE_US")); err == nil && v > 0 {
		if err := schedslice.Set(time.Duration(v) * time.Microsecond); err != nil {
			b.Fatal(err)
		}
		defer schedslice.Set(0)
	}
	var dets []plugintest.Detector
	if len(names) > 0 {
		dets = plugintest.ShippedDetectors(names...)
	}
	dir, pins := plugintest.Setup(b, dets...)
	m, err := plugins.NewManager(plugins.Config{Dir: dir, Pins: pins, UnaryEnrich: os.Getenv("VMLINEAGE_BENCH_UNARY") == "1"}, svc)
	if err != nil {
		b.Fatal(err)
	}
	m.Start(ctx)
	defer m.Close()
	for _, s := range m.Status() {
		if s.State != plugins.StateRunning {
			b.Fatalf("detector %s: %s %s", s.Name, s.State, s.LastError)
		}
	}
	e := NewEnricher(svc, m, nil)
	// Where each alert's time went (the agent's alert_phase_seconds).
	var tmMu sync.Mutex
	var timings []Timing
	measuring := false
	e.Observe = func(tm Timing) {
		tmMu.Lock()
		if measuring {
			timings = append(timings, tm)
		}
		tmMu.Unlock()
	}
	interval := time.Second / time.Duration(rate)
	rng := rand.New(rand.NewPCG(1, 2))
	docs := make([][]byte, b.N)
	at := alertstest.BigT0.Add(2 * time.Hour)
	run := time.Now().UnixNano() // fresh alert ids: the store copy may hold earlier runs'
	var cef []byte               // the same alerts as CEF lines, for the syslog intake
	for i := 0; i < b.N; i += 2 {
		f := rng.IntN(big.Families)
		for j := 0; j < 2 && i+j < b.N; j++ {
			mem := 1 + rng.IntN(big.FamilySize-3) // a running clone
			t := at.Add(time.Duration(i+j) * time.Millisecond)
			docs[i+j] = fmt.Appendf(nil, `{"@timestamp":%q,"event":{"kind":"alert","id":"bench-%d-%d"},"source":{"ip":%q},"rule":{"name":"ET MALWARE beacon"}}`,
				t.Format(time.RFC3339Nano), run, i+j, big.IP(f, mem))
			cef = fmt.Appendf(cef, "CEF:0|vmlineage|bench|1.0|100|ET MALWARE beacon|5|rt=%d src=%s externalId=bench-%d-%d\n", t.UnixMilli(), big.IP(f, mem), run, i+j)
		}
	}
	// Warm up the detectors' connections and the statements.
	for i := 0; i < 20; i++ {
		a, _ := ParseJSON(fmt.Appendf(nil, `{"@timestamp":%q,"source":{"ip":%q}}`, at.Format(time.RFC3339), big.IP(rng.IntN(big.Families), 1)), time.Now())
		e.Enrich(ctx, a)
	}
	floorIdle, floorIdle99 := roundTrips(b, interval, 1000)
	floorBusy, floorBusy99 := roundTrips(b, 0, 1000)
	stopWriter, writerPID := func() writerReport { return writerReport{} }, 0
	if os.Getenv("VMLINEAGE_BENCH_WRITER") != "0" {
		stopWriter, writerPID = busyPool(b, st)
	}
	workers, _ := strconv.Atoi(os.Getenv("VMLINEAGE_BENCH_WORKERS")) // 0: DefaultWorkers
	ord := NewOrdered(e, workers)
	warm := benchWarmUpAlerts
	if v, err := strconv.Atoi(os.Getenv("VMLINEAGE_BENCH_WARMUP")); err == nil && v >= 0 {
		warm = v
	}
	if warm > 0 && b.N > 1 {
		benchWarmUp(b, ctx, ord, big, warm, interval, run, logf)
	}
	// The syslog intake: alerts come from a process of their own over TCP
	// and are due from start on (time for it to connect first).
	start := time.Now().Add(300 * time.Millisecond)
	var src *alertSender
	if intake == "syslog" {
		src = startSender(b, ctx, ord, cef, start, interval, fmt.Sprintf("bench-%d-", run))
	}

	lat := make([]time.Duration, b.N)
	late := make([]time.Duration, b.N) // from each alert's due time to its Submit
	var failed int
	var mu sync.Mutex
	var wg sync.WaitGroup
	runtime.GC()
	var ms0 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	gor0 := procstat.GoroutinesCreated()
	senderPID := 0
	if src != nil {
		senderPID = src.pid
	}
	self0, kids0 := procCPU(writerPID, senderPID)
	writerCPU0, senderCPU0 := pidCPU(writerPID), pidCPU(senderPID)
	wait0, kwait0 := runDelay(writerPID, senderPID)
	sys0, ksys0 := procSyscalls(writerPID, senderPID)
	rd0, wr0, _ := procstat.Bytes(os.Getpid())
	machine0 := machineCPU()
	load0 := loadAvg()
	stats0, q0 := m.Stats(), svc.Queries()
	type cacheStats interface{ CacheStats() (hits, misses int64) }
	var hits0, misses0 int64
	if c, ok := svc.Backend().(cacheStats); ok {
		hits0, misses0 = c.CacheStats()
	}
	var prof *os.File
	if profDir != "" {
		if prof, err = os.Create(filepath.Join(profDir, "host.pprof")); err != nil {
			b.Fatal(err)
		}
		pprof.StartCPUProfile(prof)
	}
	tmMu.Lock()
	measuring = true
	tmMu.Unlock()
	b.ResetTimer()
	steals := traceSteal()
	defer steals.Stop() // on a failed run; Stop may come twice
	if d := time.Until(start); d > 0 {
		time.Sleep(d)
	} else {
		logf("the run began %s after its first alert was due: the first alerts went out back to back", (-d).Round(time.Millisecond))
	}
	// In-process intakes (the sender a goroutine here, latency from each
	// alert's due time): go, the syslog intake's path without the socket
	// (Ordered.Go); ordered (Submit, results in arrival order, as enrich
	// hands them over); serial (one alert at a time, as every intake did
	// before Ordered).
	submit := ord.Go
	switch intake {
	case "ordered":
		submit = ord.Submit
	case "serial":
		submit = func(ctx context.Context, a *Alert, then func([]byte, error)) { then(e.Enrich(ctx, a)) }
	}
	// fromDue is each alert's latency from its due time, sender's
	// lateness included (lat counts from when the alert reached the
	// intake: the same for in-process intakes).
	var fromDue []time.Duration
	sent := dueTimes(start, interval, b.N) // the sender process's writes replace them
	if src != nil {
		src.awaitOut(b, start.Add(time.Duration(b.N)*interval+time.Minute))
	}
	for i := 0; i < b.N && src == nil; i++ {
		due := start.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		wg.Add(1)
		a, err := ParseJSON(docs[i], time.Now())
		if err != nil {
			b.Fatal(err)
		}
		late[i] = time.Since(due)
		submit(ctx, a, func(js []byte, err error) {
			defer wg.Done()
			if err == nil && len(js) == 0 {
				err = fmt.Errorf("empty output")
			}
			lat[i] = time.Since(due)
			if err != nil {
				mu.Lock()
				failed++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	ord.Close()
	elapsed := time.Since(start)
	if fromDue == nil {
		fromDue = lat
	}
	stealSpans := steals.Stop()
	b.StopTimer()
	if prof != nil {
		pprof.StopCPUProfile()
		prof.Close()
	}
	self1, kids1 := procCPU(writerPID, senderPID)
	writerCPU1, senderCPU1 := pidCPU(writerPID), pidCPU(senderPID)
	wait1, kwait1 := runDelay(writerPID, senderPID)
	sys1, ksys1 := procSyscalls(writerPID, senderPID)
	rd1, wr1, _ := procstat.Bytes(os.Getpid())
	machine1 := machineCPU()
	var ms1 runtime.MemStats
	runtime.ReadMemStats(&ms1)
	gor1 := procstat.GoroutinesCreated()
	stats1, q1 := m.Stats(), svc.Queries()
	var hits1, misses1 int64
	if c, ok := svc.Backend().(cacheStats); ok {
		hits1, misses1 = c.CacheStats()
	}
	// The sender is reaped only now: a reaped child's syscalls count as
	// the parent's.
	if src != nil {
		lat, late, fromDue, sent, failed = src.collect(b, start, interval)
	}
	writer := stopWriter()
	hostRSS, kidsRSS := peakRSS(writerPID, senderPID)
	if failed > 0 {
		b.Fatalf("%d alerts failed", failed)
	}
	n := float64(b.N)
	pauses, commits := gcPauses(&ms0, &ms1), svc.SlowCommits()
	if path := os.Getenv("VMLINEAGE_BENCH_DUMP"); path != "" && b.N > 1 {
		byID := make(map[string]Timing, len(timings))
		for _, tm := range timings {
			byID[tm.AlertID] = tm
		}
		phases := make([]*Timing, b.N)
		for i := range phases {
			if tm, ok := byID[fmt.Sprintf("bench-%d-%d", run, i)]; ok {
				phases[i] = &tm
			}
		}
		dumpLatencies(b, path, sent, lat, phases, pauses, commits)
	}
	fromDue = slices.Clone(fromDue)
	slices.Sort(fromDue)
	tail := tailFigures(lat, interval, writer, start) + "; " + stallFigures(lat, sent, pauses, commits)
	if src != nil {
		enricherTime := make(map[string]time.Duration, len(timings)) // Start to out, by alert ID
		for _, tm := range timings {
			enricherTime[tm.AlertID] = tm.Total
		}
		inEnricher := make([]time.Duration, b.N)
		for i := range inEnricher {
			inEnricher[i] = -1
			if d, ok := enricherTime[fmt.Sprintf("bench-%d-%d", run, i)]; ok {
				inEnricher[i] = d
			}
		}
		tail += "; " + splitFigures(lat, inEnricher)
	}
	clear, clear99 := clearFigures(lat, sent, stealSpans)
	slices.Sort(lat)
	q := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	ours := (self1 - self0) + (kids1 - kids0)
	hostMS := float64((self1 - self0).Microseconds()) / 1000 / n
	plugMS := float64((kids1 - kids0).Microseconds()) / 1000 / n
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(q(0.999), "p99.9-ms")
	// From the due time, the sender's lateness included (the same as
	// p99-ms with an in-process intake).
	b.ReportMetric(ms(fromDue[min(len(fromDue)-1, len(fromDue)*99/100)]), "p99-from-due-ms")
	// The p99 of the alerts that no steal touched (see clearOfSteal); 0
	// when too few were.
	b.ReportMetric(clear99, "p99-no-steal-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
	b.ReportMetric(n/elapsed.Seconds(), "alerts/s")
	// CPU per alert: what the latency figures cost, whatever else ran.
	b.ReportMetric(hostMS, "host-cpu-ms/alert")
	b.ReportMetric(plugMS, "plugin-cpu-ms/alert")
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/n, "host-allocs/alert")
	b.ReportMetric(float64(gor1-gor0)/n, "host-goroutines/alert")
	// Each collection stops the host's world twice (see stallFigures).
	b.ReportMetric(float64(ms1.NumGC-ms0.NumGC), "host-gcs")
	// Read and write syscalls: exact where CPU time drifts with the
	// machine (syscalls are dear on a VM).
	b.ReportMetric(float64(sys1-sys0)/n, "host-syscalls/alert")
	b.ReportMetric(float64(ksys1-ksys0)/n, "plugin-syscalls/alert")
	// Bytes through those syscalls: the stores' pages, the alert log's
	// WAL and checkpoints, and the sockets.
	b.ReportMetric(float64(rd1-rd0)/n/1024, "host-read-KiB/alert")
	b.ReportMetric(float64(wr1-wr0)/n/1024, "host-write-KiB/alert")
	// Time ready but waiting for a CPU (run-queue delay), summed over
	// threads: what a hand-off between processes waits, besides steal.
	b.ReportMetric(ms(wait1-wait0)/n, "host-runq-ms/alert")
	b.ReportMetric(ms(kwait1-kwait0)/n, "plugin-runq-ms/alert")
	b.ReportMetric(float64(stats1.EnrichCalls-stats0.EnrichCalls)/n, "grpc-enrich/alert")
	b.ReportMetric(float64(stats1.LineageCalls-stats0.LineageCalls)/n, "broker-calls/alert")
	b.ReportMetric(float64(q1-q0)/n, "sql/alert")
	// The alert log: what retention deleted per alert stored, and the
	// file's size at the end (WAL included).
	b.ReportMetric(float64(svc.Pruned()-pruned0)/n, "pruned/alert")
	b.ReportMetric(float64(fileSizes(AlertsPath(st.Path()), AlertsPath(st.Path())+"-wal"))/(1<<20), "alertlog-MiB")
	b.ReportMetric(float64(hostRSS)/(1<<20), "host-peak-rss-MiB")
	b.ReportMetric(float64(kidsRSS)/(1<<20), "plugins-peak-rss-MiB")
	other := machine1.busy - machine0.busy - ours
	starts := 0
	for _, s := range m.Status() {
		starts += s.Starts - 1
	}
	logf("alert log: %s", logMode)
	logf("%d alerts at %d/s over %s; %d VMs; detector calls %d made, %d skipped, %d failed, %d restarts; writer commits %d",
		b.N, rate, elapsed.Round(time.Millisecond), big.Families*big.FamilySize,
		stats1.EnrichCalls-stats0.EnrichCalls, stats1.EnrichSkipped-stats0.EnrichSkipped, stats1.EnrichFailed-stats0.EnrichFailed, starts, writer.Commits)
	if h, mi := hits1-hits0, misses1-misses0; h+mi > 0 {
		logf("family cache: %d hits, %d misses (%.0f%%)", h, mi, 100*float64(h)/float64(h+mi))
	}
	logf("latency ms: p50 %.2f  p99 %.2f  p99.9 %.2f  max %.2f", q(0.5), q(0.99), q(0.999), float64(lat[len(lat)-1].Microseconds())/1000)
	logf("%s", tail)
	logf("%s", clear)
	slices.Sort(late)
	if src != nil {
		logf("sending: the sender process wrote the alerts p50 %.3f p99 %.3f ms after their due time (its sleep overshooting; the latency above counts from each write); from the due time, latency was p50 %.2f p99 %.2f ms",
			ms(late[len(late)/2]), ms(late[len(late)*99/100]), ms(fromDue[len(fromDue)/2]), ms(fromDue[len(fromDue)*99/100]))
	} else {
		logf("sending: alerts were handed to the intake p50 %.3f p99 %.3f ms after their due time (the sender's sleep overshooting, and the parse), included in the latency above",
			ms(late[len(late)/2]), ms(late[len(late)*99/100]))
	}
	tmMu.Lock()
	logf("by phase, ms p50/p99 (Enricher.Observe, as the agent's alert_phase_seconds): %s", phaseFigures(timings))
	tmMu.Unlock()
	logf("CPU ms/alert: host %.3f + detectors %.3f = %.3f (%.2f of %d cores at this rate)",
		hostMS, plugMS, hostMS+plugMS, (hostMS+plugMS)*float64(rate)/1000, runtime.NumCPU())
	b.ReportMetric(ms(floorIdle99), "roundtrip-idle-p99-ms")
	logf("machine floor: a round trip to another process (every detector call makes at least one) takes p50 %.3f p99 %.3f ms after %s idle (the alert interval), p50 %.3f p99 %.3f ms back to back",
		ms(floorIdle), ms(floorIdle99), interval, ms(floorBusy), ms(floorBusy99))
	steal := machine1.steal - machine0.steal
	b.ReportMetric(float64(steal.Milliseconds()), "steal-ms")
	cores := func(d time.Duration) float64 { return d.Seconds() / elapsed.Seconds() }
	b.ReportMetric(cores(writerCPU1-writerCPU0), "writer-cores")
	// The two accounts need not agree: a process's own (/proc/<pid>/stat)
	// is scaled to the time the scheduler ran it, the machine's
	// (/proc/stat) is sampled at timer ticks, which miss much of work done
	// in short bursts between them. "other" often comes out near 0 while
	// the writer and the sender report 0.13 cores between them.
	logf("machine meanwhile: other processes used %.2f cores by the machine's account; by their own, the busy pool's writer %.2f and the alerts' sender %.2f (load average %s before, %s after); the hypervisor took %d ms from this VM's CPUs while they had work (steal time: stalls of whatever ran)",
		max(0, cores(other)), cores(writerCPU1-writerCPU0), cores(senderCPU1-senderCPU0), load0, loadAvg(), steal.Milliseconds())
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// tailFigures says how the slowest 1% of alerts (lat in sending order,
// one per interval from start) lie in time: spread over the run, as
// queueing behind steady work leaves them, or bunched, as a stall of the
// machine or a burst of other work leaves them. The writer's longest
// commit (a WAL checkpoint of the lineage store, typically) is named
// beside the busiest stretch.
func tailFigures(lat []time.Duration, interval time.Duration, w writerReport, start time.Time) string {
	if len(lat) < 100 {
		return "slowest 1%: too few alerts to tell"
	}
	cut := slowCut(lat)
	const window = 100 * time.Millisecond
	per := map[int]int{} // slow alerts per 100 ms window of sending time
	slow := 0
	for i, l := range lat {
		if l >= cut {
			per[int(time.Duration(i)*interval/window)]++
			slow++
		}
	}
	// The busiest three windows in a row (the earliest of equals).
	windows := int(time.Duration(len(lat)-1)*interval/window) + 1
	best, bestAt := 0, 0
	for k := 0; k < windows; k++ {
		if c := per[k] + per[k+1] + per[k+2]; c > best {
			best, bestAt = c, k
		}
	}
	out := fmt.Sprintf("slowest 1%% (%d alerts, from %.2f ms): in %d of %d 100 ms windows; %d of them sent in the 300 ms from %.1f s",
		slow, float64(cut.Microseconds())/1000, len(per), windows, best, (time.Duration(bestAt) * window).Seconds())
	switch {
	case w.Longest > 0 && w.LongestAt.Before(start):
		// The writer runs through the warm-up too.
		out += fmt.Sprintf("; the writer's longest commit took %s, %.1f s before the run (in the warm-up)", w.Longest.Round(time.Millisecond), start.Sub(w.LongestAt).Seconds())
	case w.Longest > 0:
		out += fmt.Sprintf("; the writer's longest commit took %s from %.1f s", w.Longest.Round(time.Millisecond), w.LongestAt.Sub(start).Seconds())
	}
	return out
}

// slowCut is the latency from which an alert is one of the slowest 1%.
func slowCut(lat []time.Duration) time.Duration {
	sorted := slices.Clone(lat)
	slices.Sort(sorted)
	return sorted[len(sorted)-len(sorted)/100]
}

// gcPauses are the stop-the-world pauses of the collections between two
// MemStats readings (the runtime keeps the last 256).
func gcPauses(ms0, ms1 *runtime.MemStats) []Span {
	var out []Span
	for n := max(ms0.NumGC, ms1.NumGC-min(ms1.NumGC, 256)) + 1; n <= ms1.NumGC; n++ {
		i := (n + 255) % 256
		end := time.Unix(0, int64(ms1.PauseEnd[i]))
		d := time.Duration(ms1.PauseNs[i])
		out = append(out, Span{At: end.Add(-d), Took: d})
	}
	return out
}

// splitFigures says where the slowest 1% of alerts (lat, from the
// sender's write to the hand-over) spent their time: before Start (in the
// socket, the intake's read and parse, the hand-over to Ordered) or from
// Start on (inEnricher, Timing.Total; negative when unknown). A stall that
// held up the intake shows in the first, one in enrichment in the second.
func splitFigures(lat, inEnricher []time.Duration) string {
	if len(lat) < 100 {
		return "split: too few alerts to tell"
	}
	cut := slowCut(lat)
	var before, in []time.Duration
	for i, l := range lat {
		if l < cut || inEnricher[i] < 0 {
			continue
		}
		before, in = append(before, max(0, l-inEnricher[i])), append(in, inEnricher[i])
	}
	if len(in) == 0 {
		return "split: no timings for the slowest alerts"
	}
	slices.Sort(before)
	slices.Sort(in)
	return fmt.Sprintf("of those, before Start (socket, read, parse, hand-over) p50 %.2f max %.2f ms, from Start to out p50 %.2f max %.2f ms",
		ms(before[len(before)/2]), ms(before[len(before)-1]), ms(in[len(in)/2]), ms(in[len(in)-1]))
}

// stallFigures says how many of the slowest 1% of alerts (lat, with when
// each was sent) were in flight during one of the
// host's collection pauses, and how many during one of the alert log's
// slow commits (a WAL checkpoint: while it runs, enrichment has a core
// less), with the count and longest of each. On the test machine slow
// 100 ms windows lined up with both (2026-12-03).
func stallFigures(lat []time.Duration, sent []time.Time, pauses, commits []Span) string {
	if len(lat) < 100 {
		return "stalls: too few alerts to tell"
	}
	cut := slowCut(lat)
	during := func(spans []Span) (n int) {
		for i, l := range lat {
			if l < cut {
				continue
			}
			for _, s := range spans {
				if s.At.Before(sent[i].Add(l)) && sent[i].Before(s.At.Add(s.Took)) {
					n++
					break
				}
			}
		}
		return n
	}
	longest := func(spans []Span) time.Duration {
		var m time.Duration
		for _, s := range spans {
			m = max(m, s.Took)
		}
		return m
	}
	return fmt.Sprintf("in flight during one of the host's %d collection pauses (longest %.2f ms): %d of them; during one of the alert log's %d commits of %s or more (longest %s): %d",
		len(pauses), float64(longest(pauses).Microseconds())/1000, during(pauses), len(commits), slowCommit, longest(commits).Round(time.Millisecond), during(commits))
}

// dumpLatencies writes each alert's latency, in sending order, to path:
// "index sent_unix_us latency_ms" lines, for a closer look at the tail
// (followed, for an alert the enricher timed, by its Timing in ms: total
// queue match context detectors encode, from Start), then the host's
// collection pauses and the alert log's slow commits in the run as "gc
// start_unix_us took_ms" and "commit start_unix_us took_ms" lines.
func dumpLatencies(b *testing.B, path string, sent []time.Time, lat []time.Duration, phases []*Timing, pauses, commits []Span) {
	var buf []byte
	for i, l := range lat {
		buf = fmt.Appendf(buf, "%d %d %.3f", i, sent[i].UnixMicro(), ms(l))
		if tm := phases[i]; tm != nil {
			buf = fmt.Appendf(buf, " %.3f %.3f %.3f %.3f %.3f %.3f", ms(tm.Total), ms(tm.Queue), ms(tm.Match), ms(tm.Context), ms(tm.Detectors), ms(tm.Encode))
		}
		buf = append(buf, '\n')
	}
	for _, k := range []struct {
		name  string
		spans []Span
	}{{"gc", pauses}, {"commit", commits}} {
		for _, s := range k.spans {
			buf = fmt.Appendf(buf, "%s %d %.3f\n", k.name, s.At.UnixMicro(), float64(s.Took.Microseconds())/1000)
		}
	}
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		b.Errorf("VMLINEAGE_BENCH_DUMP: %v", err)
	}
}

// phaseFigures renders the p50 and p99 of each phase of the timings.
func phaseFigures(tms []Timing) string {
	if len(tms) == 0 {
		return "none"
	}
	var out []string
	for _, p := range []struct {
		name string
		get  func(*Timing) time.Duration
	}{
		{"match", func(t *Timing) time.Duration { return t.Match }},
		{"queue", func(t *Timing) time.Duration { return t.Queue }},
		{"context", func(t *Timing) time.Duration { return t.Context }},
		{"detectors", func(t *Timing) time.Duration { return t.Detectors }},
		{"encode", func(t *Timing) time.Duration { return t.Encode }},
		{"total", func(t *Timing) time.Duration { return t.Total }},
	} {
		d := make([]time.Duration, len(tms))
		for i := range tms {
			d[i] = p.get(&tms[i])
		}
		slices.Sort(d)
		out = append(out, fmt.Sprintf("%s %.2f/%.2f", p.name, ms(d[len(d)/2]), ms(d[min(len(d)-1, len(d)*99/100)])))
	}
	return strings.Join(out, "  ")
}

// echoEnv names the Unix socket a child process of the test binary echoes
// on (see roundTrips).
const echoEnv = "VMLINEAGE_BENCH_ECHO_SOCKET"

// roundTrips measures the floor under every detector call on this machine:
// n one-byte round trips to another process over a Unix socket, each after
// gap of idleness, and returns their p50 and p99. On a virtual machine a
// process woken from idle can wait for the hypervisor to run its vCPU
// (seen here: p99 over 3 ms after 10 ms idle, 0.1 ms back to back), which
// no code of ours can shorten; the benchmark prints it beside its own
// figures so that they can be read against the machine.
func roundTrips(b *testing.B, gap time.Duration, n int) (p50, p99 time.Duration) {
	sock := filepath.Join(b.TempDir(), "echo.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), echoEnv+"="+sock)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer cmd.Wait()
	c, err := l.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	d := make([]time.Duration, n)
	buf := []byte{0}
	for i := range d {
		if gap > 0 {
			time.Sleep(gap)
		}
		t := time.Now()
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
		d[i] = time.Since(t)
	}
	slices.Sort(d)
	return d[n/2], d[min(n-1, n*99/100)]
}

// echoChild is roundTrips' other process: it sends back every byte until
// the connection closes.
func echoChild(sock string) int {
	c, err := net.Dial("unix", sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer c.Close()
	io.Copy(c, c)
	return 0
}

// busyPoolEnv names the store a child process of the test binary writes
// to as a busy pool's tracer would (see busyPool).
const busyPoolEnv = "VMLINEAGE_BENCH_BUSY_POOL_STORE"

// writerReport is what the writer process did: its commits, and its
// longest commit (Longest, begun at LongestAt).
type writerReport struct {
	Commits   int
	Longest   time.Duration
	LongestAt time.Time
}

// busyPool starts a process that commits, every 200 ms until stopped, what
// a tracer commits for a busy pool: 50 VMs starting or stopping (a state
// span and a record each), dated after the benchmark's alerts so that
// their enrichment is the same whatever the timing. Its commits reach the
// enrichment path as they would in the agent (SQLite empties the page
// caches of every other connection on each commit) while its CPU is not
// counted as enrichment's. It returns once the writer is warm (see
// busyPoolWarm). The stop function says what the writer did.
func busyPool(b *testing.B, st *lineage.Store) (stop func() writerReport, pid int) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), busyPoolEnv+"="+st.Path())
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	outp, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	lines := bufio.NewReader(outp)
	ready := make(chan error, 1)
	go func() {
		l, err := lines.ReadString('\n')
		if err == nil && l != "ready\n" {
			err = fmt.Errorf("said %q", l)
		}
		ready <- err
	}()
	select {
	case err = <-ready:
	case <-time.After(2 * time.Minute):
		err = errors.New("not warm after 2 minutes")
	}
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		b.Fatalf("busy pool writer: %v: %s", err, errb.String())
	}
	return func() writerReport {
		in.Close()
		rest, _ := io.ReadAll(lines)
		if err := cmd.Wait(); err != nil {
			b.Errorf("busy pool writer: %v: %s%s", err, rest, errb.String())
		}
		var r writerReport
		var longest, at int64
		if _, err := fmt.Sscan(string(rest), &r.Commits, &longest, &at); err != nil {
			b.Errorf("busy pool writer said %q: %v", rest, err)
		}
		r.Longest, r.LongestAt = time.Duration(longest)*time.Microsecond, time.UnixMicro(at)
		return r
	}, cmd.Process.Pid
}

// benchWarmUpAlerts is how many alerts the benchmark sends before the
// measured ones (VMLINEAGE_BENCH_WARMUP), 2 s at the default rate. A
// freshly started host (the store's and the alert log's page caches, the
// detectors' streams, the heap's size, the workers) is not the steady
// state the target is about. Without it, in 20 of 297 runs (2026-12-02
// and 03) most of the slowest 1% were sent in a 300 ms span starting in
// the run's first 0.6 s: p99 10.5-166 ms, median 30.1, against a median
// of 14.0 in the other 277.
const benchWarmUpAlerts = 2000

// benchWarmUp sends n alerts through the syslog intake (whatever the run's
// intake) from a sender process of their own, at the run's rate, of
// families drawn with a seed of their own, and logs their latency:
// it is what a freshly started agent gives, and it is not counted.
func benchWarmUp(b *testing.B, ctx context.Context, ord *Ordered, big alertstest.Big, n int, interval time.Duration, run int64, logf func(string, ...any)) {
	rng := rand.New(rand.NewPCG(5, 6))
	// Just before the measured alerts' times, so that they count in their
	// windows as any earlier alert does.
	at := alertstest.BigT0.Add(2*time.Hour - time.Duration(n+1)*time.Millisecond)
	prefix := fmt.Sprintf("warm-%d-", run)
	var cef []byte
	f := 0
	for i := 0; i < n; i++ {
		if i%2 == 0 {
			f = rng.IntN(big.Families)
		}
		t := at.Add(time.Duration(i) * time.Millisecond)
		cef = fmt.Appendf(cef, "CEF:0|vmlineage|bench|1.0|100|ET MALWARE beacon|5|rt=%d src=%s externalId=%s%d\n", t.UnixMilli(), big.IP(f, 1+rng.IntN(big.FamilySize-3)), prefix, i)
	}
	start := time.Now().Add(300 * time.Millisecond)
	s := startSender(b, ctx, ord, cef, start, interval, prefix)
	defer s.cancel()
	s.awaitOut(b, start.Add(time.Duration(n)*interval+time.Minute))
	lat, _, _, _, failed := s.collect(b, start, interval)
	if failed > 0 {
		b.Fatalf("warm-up: %d alerts failed", failed)
	}
	slices.Sort(lat)
	logf("warm-up (not counted): %d alerts at the same rate through the syslog intake, other families: latency ms p50 %.2f p99 %.2f max %.2f",
		n, ms(lat[n/2]), ms(lat[n*99/100]), ms(lat[n-1]))
}

// busyPoolWarm is how many commits the writer makes back to back before
// it says it is ready. A tracer that has run for a while has its page
// cache (32 MiB) full; a fresh one fills it on its first few thousand VM
// changes, each page a pread and a page fault, and before this warm-up
// (2026-12-03) that filling fell in the measured 10 s: the writer used
// 0.08 cores of the run instead of 0.04-0.05. 100 commits (5,000 VM
// changes) take it past that. VMLINEAGE_BENCH_WRITER_WARM=N makes it N
// (0: as before).
const busyPoolWarm = 100

// busyPoolChild is the writer process: it warms up, says "ready", commits
// until stdin closes and prints the number of commits (warm-up left out).
func busyPoolChild(path string) int {
	st, err := lineage.Open(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer st.Close()
	big := alertstest.Big{Families: 100000, FamilySize: 10}
	rng := rand.New(rand.NewPCG(3, 4))
	at := alertstest.BigT0.Add(3 * time.Hour)
	n := 0
	commit := func() error {
		return st.Update(context.Background(), func(tx *lineage.Tx) error {
			for i := 0; i < 50; i++ {
				n++
				f, m := rng.IntN(big.Families), 1+rng.IntN(big.FamilySize-1)
				at = at.Add(time.Millisecond)
				ps, act := "Halted", record.Shutdown
				if n%2 == 0 {
					ps, act = "Running", record.Start
				}
				if err := tx.MoveState(big.UUID(f, m), ps, "", at); err != nil {
					return err
				}
				r := &record.Record{ID: record.ID(alertstest.BigPool, fmt.Sprintf("busy-%d-%d", os.Getpid(), n), 0), PoolUUID: alertstest.BigPool,
					VMUUID: big.UUID(f, m), VMName: big.Name(f, m), Activity: act, Start: at, End: at, Result: record.Success, Source: record.SourceXAPI}
				if _, err := tx.PutRecord(r); err != nil {
					return err
				}
			}
			return nil
		})
	}
	warm := busyPoolWarm
	if v, err := strconv.Atoi(os.Getenv("VMLINEAGE_BENCH_WRITER_WARM")); err == nil {
		warm = v
	}
	for i := 0; i < warm; i++ {
		if err := commit(); err != nil {
			fmt.Fprintln(os.Stderr, "busy pool writer:", err)
			return 1
		}
	}
	fmt.Println("ready")
	stop := make(chan struct{})
	go func() { io.Copy(io.Discard, os.Stdin); close(stop) }()
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	commits := 0
	var longest time.Duration // with when it began: a WAL checkpoint shows here
	var longestAt time.Time
	for {
		select {
		case <-stop:
			fmt.Println(commits, longest.Microseconds(), longestAt.UnixMicro())
			return 0
		case <-t.C:
		}
		began := time.Now()
		if err := commit(); err != nil {
			fmt.Fprintln(os.Stderr, "busy pool writer:", err)
			return 1
		}
		if d := time.Since(began); d > longest {
			longest, longestAt = d, began
		}
		commits++
	}
}

// procCPU is the user+system CPU time of this process and, separately, of
// its children but those skipped (the writer, the sender): the detectors,
// from /proc.
func procCPU(skip ...int) (self, kids time.Duration) {
	me := os.Getpid()
	procstat.Each(func(pid, ppid int, stat []string, _ string) {
		if slices.Contains(skip, pid) {
			return
		}
		d := statCPU(stat)
		switch {
		case pid == me:
			self += d
		case ppid == me:
			kids += d
		}
	})
	return self, kids
}

// pidCPU is the user+system CPU time of process pid (0 when pid is 0 or
// gone).
func pidCPU(pid int) (d time.Duration) {
	if pid == 0 {
		return 0
	}
	procstat.Each(func(p, _ int, stat []string, _ string) {
		if p == pid {
			d = statCPU(stat)
		}
	})
	return d
}

// statCPU is utime+stime of /proc/<pid>/stat fields (after the command).
func statCPU(stat []string) time.Duration {
	u, _ := strconv.ParseInt(stat[11], 10, 64)
	s, _ := strconv.ParseInt(stat[12], 10, 64)
	return time.Duration(u+s) * time.Second / 100 // USER_HZ is 100 on Linux
}

// procSyscalls is the read and write syscalls of this process and,
// separately, of its children but those skipped (the detectors).
func procSyscalls(skip ...int) (self, kids int64) {
	me := os.Getpid()
	procstat.Each(func(pid, ppid int, _ []string, _ string) {
		if slices.Contains(skip, pid) {
			return
		}
		r, w, _ := procstat.Syscalls(pid)
		if pid == me {
			self += r + w
		} else if ppid == me {
			kids += r + w
		}
	})
	return self, kids
}

// runDelay is how long the threads of this process and, separately, of
// its children but those skipped waited for a CPU (procstat.RunDelay).
func runDelay(skip ...int) (self, kids time.Duration) {
	me := os.Getpid()
	procstat.Each(func(pid, ppid int, _ []string, _ string) {
		if slices.Contains(skip, pid) {
			return
		}
		d, _ := procstat.RunDelay(pid)
		if pid == me {
			self += d
		} else if ppid == me {
			kids += d
		}
	})
	return self, kids
}

// peakRSS is VmHWM of this process and the sum over its children but
// those skipped.
func peakRSS(skip ...int) (self, kids int64) {
	me := os.Getpid()
	procstat.Each(func(pid, ppid int, _ []string, status string) {
		if (pid != me && ppid != me) || slices.Contains(skip, pid) {
			return
		}
		for _, line := range strings.Split(status, "\n") {
			if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				if pid == me {
					self = kb << 10
				} else {
					kids += kb << 10
				}
			}
		}
	})
	return self, kids
}

// cpuTimes: busy is the CPU time all processes used; steal the time the
// hypervisor ran something else while this VM's CPUs had work (a stall
// of whatever ran on them; Linux counts it from the paravirtual steal
// clock).
type cpuTimes struct{ busy, steal time.Duration }

// machineCPU reads cpuTimes from /proc/stat.
func machineCPU() cpuTimes {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	var busy, steal int64
	for i, v := range f[1:min(len(f), 9)] { // guest time is already in user
		n, _ := strconv.ParseInt(v, 10, 64)
		switch i {
		case 3, 4: // idle, iowait
		case 7:
			steal = n
		default:
			busy += n
		}
	}
	return cpuTimes{busy: time.Duration(busy) * time.Second / 100, steal: time.Duration(steal) * time.Second / 100}
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], "/")
}

// The slowest alerts' time is split at Start: a stall before it (the
// intake) and one after it (enrichment) read apart.
func TestSplitFigures(t *testing.T) {
	lat := make([]time.Duration, 1000)
	in := make([]time.Duration, 1000)
	for i := range lat {
		lat[i], in[i] = time.Millisecond, 800*time.Microsecond
	}
	for i := 0; i < 10; i++ { // the slowest 1%: 30 ms, 25 of them before Start
		lat[500+i], in[500+i] = 30*time.Millisecond, 5*time.Millisecond
	}
	in[509] = -1 // no timing: left out
	want := "of those, before Start (socket, read, parse, hand-over) p50 25.00 max 25.00 ms, from Start to out p50 5.00 max 5.00 ms"
	if got := splitFigures(lat, in); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

func TestTailFigures(t *testing.T) {
	start := time.Unix(1000, 0)
	lat := make([]time.Duration, 10000)
	for i := range lat {
		lat[i] = time.Millisecond
	}
	for i := 6850; i < 6950; i++ { // a stall: 100 slow alerts across windows 68 and 69
		lat[i] = 20 * time.Millisecond
	}
	w := writerReport{Commits: 50, Longest: 240 * time.Millisecond, LongestAt: start.Add(6800 * time.Millisecond)}
	got := tailFigures(lat, time.Millisecond, w, start)
	want := "slowest 1% (100 alerts, from 20.00 ms): in 2 of 100 100 ms windows; 100 of them sent in the 300 ms from 6.7 s; the writer's longest commit took 240ms from 6.8 s"
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	// Spread out: one slow alert in every window.
	for i := range lat {
		lat[i] = time.Millisecond
		if i%100 == 50 {
			lat[i] = 5 * time.Millisecond
		}
	}
	if got := tailFigures(lat, time.Millisecond, writerReport{}, start); !strings.Contains(got, "in 100 of 100 100 ms windows; 3 of them") {
		t.Fatalf("spread tail: %s", got)
	}
	// The writer's longest commit fell in the warm-up, before the run.
	w.LongestAt = start.Add(-2200 * time.Millisecond)
	if got := tailFigures(lat, time.Millisecond, w, start); !strings.HasSuffix(got, "the writer's longest commit took 240ms, 2.2 s before the run (in the warm-up)") {
		t.Fatalf("warm-up commit: %s", got)
	}
}

func TestStallFigures(t *testing.T) {
	start := time.Unix(1000, 0)
	lat := make([]time.Duration, 10000)
	for i := range lat {
		lat[i] = time.Millisecond
	}
	for i := 2000; i < 2030; i++ { // 30 slow alerts sent before a pause at 2.035 s ends
		lat[i] = 40 * time.Millisecond
	}
	for i := 5000; i < 5070; i++ { // 70 at 5.0 s, during a commit from 5.05 s
		lat[i] = 60 * time.Millisecond
	}
	lat[9000] = 100 * time.Millisecond // slow, but in flight during neither
	pauses := []Span{{At: start.Add(2035 * time.Millisecond), Took: 3 * time.Millisecond}, {At: start.Add(8 * time.Second), Took: time.Millisecond}}
	commits := []Span{{At: start.Add(5050 * time.Millisecond), Took: 45 * time.Millisecond}}
	got := stallFigures(lat, dueTimes(start, time.Millisecond, len(lat)), pauses, commits)
	want := "in flight during one of the host's 2 collection pauses (longest 3.00 ms): 30 of them; during one of the alert log's 1 commits of 20ms or more (longest 45ms): 70"
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	// A pause after the slow alerts came back touches none of them.
	if got := stallFigures(lat, dueTimes(start, time.Millisecond, len(lat)), []Span{{At: start.Add(2100 * time.Millisecond), Took: time.Millisecond}}, nil); !strings.Contains(got, "(longest 1.00 ms): 0 of them") {
		t.Fatalf("late pause: %s", got)
	}
}

// steadyAlerts is how many alerts the steady alert log starts with:
// about 100 s of alerts at the benchmark's rate.
const steadyAlerts = 100_000

// steadyFiller: random letters in each enriched document of the steady
// log, so that it packs to about the size of a real one.
const steadyFiller = 800

// steadyAlertLog puts at path an alert log of steadyAlerts alerts as a
// log at its retention bound holds them (a copy of one built once in the
// cache): received one millisecond apart from the time it returns, each
// with documents that pack to about the size of the benchmark's (700
// bytes an alert against 740, both documents) and naming one random VM of big. Their alert times are two days before
// the benchmark's alerts, outside every detector's window, so that the
// detectors' work is the same as with a new log.
func steadyAlertLog(b *testing.B, big alertstest.Big, path string) (oldest time.Time) {
	b.Helper()
	oldest = alertstest.BigT0.Add(-48 * time.Hour)
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	cached := filepath.Join(cache, "vmlineage-bench", fmt.Sprintf("alertlog-steady-%d-v2.db", steadyAlerts))
	if _, err := os.Stat(cached); err != nil {
		began := time.Now()
		if err := buildSteadyLog(big, cached, oldest); err != nil {
			b.Fatal(err)
		}
		b.Logf("built %s in %s", cached, time.Since(began).Round(time.Second))
	}
	if err := alertstest.CopyFile(cached, path); err != nil {
		b.Fatal(err)
	}
	return oldest
}

func buildSteadyLog(big alertstest.Big, path string, oldest time.Time) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".building"
	for _, f := range []string{tmp, tmp + "-wal", tmp + "-shm"} {
		os.Remove(f)
	}
	ctx := context.Background()
	db, err := openAlertDB(ctx, tmp)
	if err != nil {
		return err
	}
	defer db.Close()
	rng := rand.New(rand.NewPCG(3, 4))
	// Stored packed, as the writer stores them: an enriched alert of this
	// benchmark packs to about 550 bytes (3.4 KiB of JSON); this one, of
	// random letters, to about 600.
	filler := make([]byte, steadyFiller)
	for i := 0; i < steadyAlerts; {
		tx, err := db.Begin()
		if err != nil {
			return err
		}
		for end := min(i+5000, steadyAlerts); i < end; i++ {
			f, m := rng.IntN(big.Families), 1+rng.IntN(big.FamilySize-3)
			at := oldest.Add(time.Duration(i) * time.Millisecond)
			id := fmt.Sprintf("steady-%d", i)
			js := fmt.Sprintf(`{"@timestamp":%q,"event":{"kind":"alert","id":%q},"source":{"ip":%q},"rule":{"name":"ET MALWARE beacon"}}`,
				at.Format(time.RFC3339Nano), id, big.IP(f, m))
			for k := range filler {
				filler[k] = 'a' + byte(rng.IntN(26)) // SQLite stores text as it is: no compression to flatter
			}
			enriched := js[:len(js)-1] + `,"vmlineage":{"note":"` + string(filler) + `"}}`
			pjs, err := packDoc(nil, []byte(js))
			if err != nil {
				return err
			}
			penr, err := packDoc(nil, []byte(enriched))
			if err != nil {
				return err
			}
			res, err := tx.Exec("INSERT INTO alerts(id,time_ms,received_ms,source,matched,json,enriched) VALUES(?,?,?,?,1,?,?)",
				id, at.UnixMilli(), at.UnixMilli(), "syslog", pjs, penr)
			if err != nil {
				tx.Rollback()
				return err
			}
			seq, _ := res.LastInsertId()
			if _, err := tx.Exec("INSERT INTO alert_vms(alert_seq,vm_uuid,time_ms,field,value) VALUES(?,?,?,'source.ip',?)",
				seq, big.UUID(f, m), at.UnixMilli(), big.IP(f, m)); err != nil {
				tx.Rollback()
				return err
			}
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	if _, err := db.Exec("PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		return err
	}
	db.Close()
	return os.Rename(tmp, path)
}

// fileSizes is the sum of the sizes of the files that exist.
func fileSizes(paths ...string) int64 {
	var n int64
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil {
			n += fi.Size()
		}
	}
	return n
}
