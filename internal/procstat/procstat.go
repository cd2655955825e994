// Package procstat reads /proc for the benchmarks: the CPU time and peak
// memory of the test process and of the processes it started (detectors,
// a writer), which the Go runtime does not report.
package procstat

import (
	"os"
	"strconv"
	"strings"
)

// Each calls fn for this process and its children with the fields of
// /proc/<pid>/stat after the command name (state is [0], ppid [1], utime
// [11], stime [12]) and /proc/<pid>/status.
func Each(fn func(pid, ppid int, stat []string, status string)) {
	me := os.Getpid()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
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
		if pid != me && ppid != me {
			continue
		}
		status, _ := os.ReadFile("/proc/" + e.Name() + "/status")
		fn(pid, ppid, f, string(status))
	}
}
