// Command vmlineage traces the lifecycle of the VMs of a XenServer / XCP-ng
// pool, keeps their family tree, and ships lifecycle records to SIEMs.
package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"time"
	// alerts.timezone names a zone; hosts without tzdata still know them.
	_ "time/tzdata"
)

func main() {
	// A CPU profile for performance work: VMLINEAGE_CPUPROFILE=file.
	if p := os.Getenv("VMLINEAGE_CPUPROFILE"); p != "" {
		if f, err := os.Create(p); err == nil {
			pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	if p := os.Getenv("VMLINEAGE_MEMPROFILE"); p != "" {
		// The heap profile at the largest heap seen (sampled every 200 ms).
		go func() {
			var peak uint64
			for {
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				if ms.HeapInuse > peak {
					peak = ms.HeapInuse
					if f, err := os.Create(p); err == nil {
						pprof.Lookup("heap").WriteTo(f, 0)
						f.Close()
					}
				}
				time.Sleep(200 * time.Millisecond)
			}
		}()
	}
	if err := newRoot().Execute(); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "vmlineage:", err)
		os.Exit(exitCode(err))
	}
}
