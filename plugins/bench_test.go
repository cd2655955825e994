package plugins_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/internal/procstat"
	"github.com/vmlineage/vmlineage/plugins"
	"github.com/vmlineage/vmlineage/plugins/plugintest"
)

// BenchmarkEnrichCall measures what one Enrich call through the plugin
// path costs in CPU, on the host and in the detector process, with the
// shipped lineage-suspects detector and an alert carrying the context the
// host sends (a family of ten with states, two alerted VMs, the
// ancestry), four calls in flight at a time as under load. It isolates
// the gRPC transport (go-plugin's AutoMTLS connection) from the store, so
// that a change to the transport can be compared run against run: stream
// (calls on one EnrichStream, as the host makes them) beside unary (one
// gRPC call each, as before EnrichStream and for older detectors).
func BenchmarkEnrichCall(b *testing.B) {
	dir, pins := plugintest.Setup(b, plugintest.ShippedDetectors("lineage-suspects")...)
	b.Run("stream", func(b *testing.B) { benchEnrichCall(b, plugins.Config{Dir: dir, Pins: pins}) })
	b.Run("unary", func(b *testing.B) { benchEnrichCall(b, plugins.Config{Dir: dir, Pins: pins, UnaryEnrich: true}) })
}

func benchEnrichCall(b *testing.B, cfg plugins.Config) {
	m, err := plugins.NewManager(cfg, newMem())
	if err != nil {
		b.Fatal(err)
	}
	m.Start(context.Background())
	defer m.Close()
	a := benchAlert()
	ctx := context.Background()
	check := func() {
		rs := m.Enrich(ctx, a)
		if len(rs) != 1 || rs[0].Err != nil || rs[0].Skipped != "" || rs[0].Enrichment == nil || len(rs[0].Enrichment.Suspects) == 0 {
			b.Fatalf("enrich: %+v", rs)
		}
	}
	for i := 0; i < 100; i++ {
		check()
	}
	const inFlight = 4
	host0, kids0 := cpuOf()
	b.ResetTimer()
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < inFlight; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				check()
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	host1, kids1 := cpuOf()
	n := float64(b.N)
	b.ReportMetric(float64((host1-host0).Microseconds())/n, "host-cpu-us/call")
	b.ReportMetric(float64((kids1-kids0).Microseconds())/n, "plugin-cpu-us/call")
}

// benchAlert is the alert of the second VM of a family of ten to alert.
func benchAlert() *plugins.Alert {
	t := time.Unix(1700000000, 0).UTC()
	a := &plugins.Alert{ID: "bench", Time: t, ContextWindow: 24 * time.Hour,
		ECS: []byte(`{"@timestamp":"2023-11-14T22:13:20Z","event":{"kind":"alert","id":"bench-1"},"source":{"ip":"10.1.2.3"},"rule":{"name":"ET MALWARE beacon"}}`)}
	root := plugins.VM{UUID: "f0000000-0000-4000-8000-000000000000", Name: "origin", Kind: "vm", Destroyed: t.Add(-time.Hour)}
	a.Family = append(a.Family, root)
	a.FamilyStates = append(a.FamilyStates, plugins.VMState{UUID: root.UUID, PowerState: "Halted"})
	for i := 1; i < 10; i++ {
		v := plugins.VM{UUID: fmt.Sprintf("f0000000-0000-4000-8000-%012d", i), Name: "clone-" + strconv.Itoa(i), Kind: "vm", ParentUUID: root.UUID}
		ps := "Running"
		if i > 7 {
			ps = "Halted"
		}
		a.Family = append(a.Family, v)
		a.FamilyStates = append(a.FamilyStates, plugins.VMState{UUID: v.UUID, PowerState: ps, HostUUID: "h0000000-0000-4000-8000-000000000001", Existed: true})
	}
	a.VMs = []plugins.AlertVM{{UUID: a.Family[2].UUID, Field: "source.ip", Value: "10.1.2.3"}}
	a.Ancestors = []plugins.VM{a.Family[2], root}
	a.FamilyAlerted = []plugins.AlertedVM{{UUID: a.Family[1].UUID, First: t.Add(-time.Second), Last: t.Add(-time.Second), Count: 1},
		{UUID: a.Family[2].UUID, First: t, Last: t, Count: 1}}
	return a
}

// cpuOf is the user+system CPU time of this process and of its children.
func cpuOf() (self, kids time.Duration) {
	me := os.Getpid()
	procstat.Each(func(pid, ppid int, stat []string, _ string) {
		u, _ := strconv.ParseInt(stat[11], 10, 64)
		st, _ := strconv.ParseInt(stat[12], 10, 64)
		d := time.Duration(u+st) * time.Second / 100 // USER_HZ is 100 on Linux
		if pid == me {
			self += d
		} else if ppid == me {
			kids += d
		}
	})
	return self, kids
}
