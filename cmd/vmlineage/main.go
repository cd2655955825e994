// Command vmlineage traces the lifecycle of the VMs of a XenServer / XCP-ng
// pool, keeps their family tree, and ships lifecycle records to SIEMs.
package main

import (
	"fmt"
	"os"
	"runtime/pprof"
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
		defer func() {
			if f, err := os.Create(p); err == nil {
				pprof.Lookup("allocs").WriteTo(f, 0)
				f.Close()
			}
		}()
	}
	if err := newRoot().Execute(); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "vmlineage:", err)
		os.Exit(1)
	}
}
