// Package schedslice sets the scheduler time slice of this process's
// threads (Linux 6.12 and later, EEVDF: the slice of a SCHED_OTHER task,
// sched_attr.sched_runtime).
//
// EEVDF runs the task with the earliest virtual deadline, a task's
// deadline being where it is plus its slice; a running task keeps the CPU
// until its slice is used, unless a task woken with an earlier deadline
// takes it. A short slice gives a task that wakes, does a little and
// sleeps (an alert handed from one process to another) an early deadline,
// so that it runs soon after it wakes instead of after whatever holds the
// CPU used up its slice (1.4 ms on a 2-core machine by default, more on
// larger ones). It costs more context switches to tasks that run long.
// No privilege is needed; threads and processes started afterwards
// inherit the slice. BenchmarkEnrich1MVMs tries it
// (VMLINEAGE_BENCH_SLICE_US); the agent keeps the kernel's default.
package schedslice

import (
	"errors"
	"time"
)

// The kernel's bounds on a custom slice.
const (
	Min = 100 * time.Microsecond
	Max = 100 * time.Millisecond
)

// ErrUnsupported is returned where the kernel keeps no custom slice
// (before Linux 6.12, or not Linux): Set changes nothing there.
var ErrUnsupported = errors.New("schedslice: this kernel keeps no custom time slices (Linux 6.12 or later)")
