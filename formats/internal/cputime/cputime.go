// Package cputime measures the CPU time of the calling OS thread, so that a
// benchmark on a shared machine can report records per CPU-second (per core)
// besides the wall-clock figure that other processes' load distorts.
package cputime

import (
	"runtime"
	"syscall"
	"time"
)

// rusageThread is RUSAGE_THREAD (Linux).
const rusageThread = 1

// Thread returns the user+system CPU time of the current thread; ok is false
// where the platform cannot tell.
func Thread() (d time.Duration, ok bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}

// Measure runs f pinned to one OS thread and returns the CPU time it used.
func Measure(f func()) (time.Duration, bool) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	start, ok := Thread()
	f()
	end, ok2 := Thread()
	return end - start, ok && ok2
}
