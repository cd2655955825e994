package alerts

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/alerts/alertstest"
	"github.com/vmlineage/vmlineage/plugins"
	"github.com/vmlineage/vmlineage/plugins/plugintest"
)

// BenchmarkEnrich1MVMs: enrichment latency through the plugin path (all
// shipped detectors, gRPC over go-plugin with AutoMTLS, lineage through the
// broker; lineage-suspects, rollback, shadow-copy) with 1,000,000 VMs in the store and alerts arriving at 1,000/s
// (open loop: latency counts from the alert's scheduled arrival, so queueing
// shows). Alerts come in pairs from one family so that lineage-suspects does
// its whole walk. Run with -benchtime 10000x (10 s of alerts).
func BenchmarkEnrich1MVMs(b *testing.B) {
	rate := 1000
	if v, err := strconv.Atoi(os.Getenv("VMLINEAGE_BENCH_RATE")); err == nil && v > 0 {
		rate = v // to see service time without queueing
	}
	benchEnrich(b, alertstest.Big{Families: 100000, FamilySize: 10}, rate)
}

func benchEnrich(b *testing.B, big alertstest.Big, rate int) {
	st := big.Open(b)
	ctx := context.Background()
	svc, err := NewService(ctx, st)
	if err != nil {
		b.Fatal(err)
	}
	defer svc.Close()
	// The three production detectors; detectors/example is a template.
	dir, pins := plugintest.Setup(b, plugintest.ShippedDetectors("lineage-suspects", "rollback", "shadow-copy")...)
	m, err := plugins.NewManager(plugins.Config{Dir: dir, Pins: pins}, svc)
	if err != nil {
		b.Fatal(err)
	}
	m.Start(ctx)
	defer m.Close()
	e := NewEnricher(svc, m, nil)
	rng := rand.New(rand.NewPCG(1, 2))
	docs := make([][]byte, b.N)
	at := alertstest.BigT0.Add(2 * time.Hour)
	for i := 0; i < b.N; i += 2 {
		f := rng.IntN(big.Families)
		for j := 0; j < 2 && i+j < b.N; j++ {
			mem := 1 + rng.IntN(big.FamilySize-3) // a running clone
			docs[i+j] = fmt.Appendf(nil, `{"@timestamp":%q,"event":{"kind":"alert","id":"bench-%d-%d"},"source":{"ip":%q}}`,
				at.Add(time.Duration(i+j)*time.Millisecond).Format(time.RFC3339Nano), i+j, time.Now().UnixNano(), big.IP(f, mem))
		}
	}
	// Warm up the detectors' connections.
	if a, err := ParseJSON(docs[0], time.Now()); err == nil {
		e.Enrich(ctx, a)
	}
	lat := make([]time.Duration, b.N)
	var failed int
	var mu sync.Mutex
	var wg sync.WaitGroup
	interval := time.Second / time.Duration(rate)
	cpu0 := treeCPU()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		due := start.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := ParseJSON(docs[i], time.Now())
			if err == nil {
				var js []byte
				if js, err = e.Enrich(ctx, a); err == nil && len(js) == 0 {
					err = fmt.Errorf("empty output")
				}
			}
			lat[i] = time.Since(due)
			if err != nil {
				mu.Lock()
				failed++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	if cpu0 >= 0 {
		// CPU of the host and its detector processes per alert: what the
		// latency figures cost, independent of how busy the machine was.
		b.ReportMetric(float64((treeCPU()-cpu0).Microseconds())/1000/float64(b.N), "cpu-ms/alert")
	}
	if failed > 0 {
		b.Fatalf("%d alerts failed", failed)
	}
	slices.Sort(lat)
	q := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "alerts/s")
}

// treeCPU is the user+system CPU time of this process and its children
// (the detectors), from /proc; -1 where /proc is not there.
func treeCPU() time.Duration {
	self := os.Getpid()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return -1
	}
	var ticks int64
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// Fields after the command name (which may hold spaces): state ppid ... utime(14) stime(15).
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 13 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		if pid != self && ppid != self {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += u + st
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ is 100 on Linux
}
