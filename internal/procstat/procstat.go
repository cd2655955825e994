// Package procstat reads /proc for the benchmarks: the CPU time and peak
// memory of the test process and of the processes it started (detectors,
// a writer), which the Go runtime does not report; and, from the runtime,
// how many goroutines this process has started.
package procstat

import (
	"os"
	"runtime/metrics"
	"strconv"
	"strings"
	"time"
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

// Syscalls is the number of read-like and write-like system calls (read,
// pread, recvmsg…; write, pwrite, sendmsg…) the process pid made, from
// /proc/<pid>/io; ok is false when that cannot be read. Unlike CPU time it
// does not drift with the machine's speed, so it compares runs exactly.
func Syscalls(pid int) (reads, writes int64, ok bool) {
	return ioPair(pid, "syscr", "syscw")
}

// Bytes is how many bytes the process pid read and wrote through system
// calls (rchar, wchar in /proc/<pid>/io: files, the page cache included,
// and sockets alike); ok is false when that cannot be read.
func Bytes(pid int) (read, written int64, ok bool) {
	return ioPair(pid, "rchar", "wchar")
}

// ioPair reads two counters of /proc/<pid>/io.
func ioPair(pid int, ka, kb string) (a, b int64, ok bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/io")
	if err != nil {
		return 0, 0, false
	}
	n := 0
	for _, line := range strings.Split(string(data), "\n") {
		k, v, found := strings.Cut(line, ":")
		if !found {
			continue
		}
		x, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case ka:
			a, n = x, n+1
		case kb:
			b, n = x, n+1
		}
	}
	return a, b, n == 2
}

// RunDelay is how long the threads of process pid (those alive now) have
// waited on a run queue, ready but not running (the second field of
// /proc/<pid>/task/<tid>/schedstat); ok is false when that cannot be read.
func RunDelay(pid int) (d time.Duration, ok bool) {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, false
	}
	for _, e := range ents {
		b, err := os.ReadFile(dir + "/" + e.Name() + "/schedstat")
		if err != nil {
			continue // the thread ended
		}
		f := strings.Fields(string(b))
		if len(f) < 2 {
			continue
		}
		n, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		d += time.Duration(n)
		ok = true
	}
	return d, ok
}

// GoroutinesCreated is how many goroutines this process has started: each
// start that finds a processor idle wakes a thread for it.
func GoroutinesCreated() uint64 {
	s := []metrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}
