//go:build linux

package schedslice

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Set gives every thread of this process the slice d (between Min and
// Max), or the kernel's default again when d is 0. Threads the process
// starts later, and the processes it starts, inherit the slice of the
// thread that starts them.
func Set(d time.Duration) error {
	if d != 0 && (d < Min || d > Max) {
		return fmt.Errorf("schedslice: slice %s is outside %s to %s", d, Min, Max)
	}
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return fmt.Errorf("schedslice: %w", err)
	}
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if err := setThread(tid, d); err != nil {
			if errors.Is(err, unix.ESRCH) {
				continue // the thread ended meanwhile
			}
			return err
		}
	}
	return nil
}

func setThread(tid int, d time.Duration) error {
	a, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		return fmt.Errorf("schedslice: thread %d: %w", tid, err)
	}
	if a.Policy != unix.SCHED_NORMAL && a.Policy != unix.SCHED_BATCH {
		return nil // a real-time or idle policy set by the operator: left alone
	}
	a.Size = unix.SizeofSchedAttr
	a.Flags = 0
	a.Runtime = uint64(d)
	if err := unix.SchedSetAttr(tid, a, 0); err != nil {
		return fmt.Errorf("schedslice: thread %d: %w", tid, err)
	}
	if d == 0 {
		return nil
	}
	// Before 6.12 the runtime of a SCHED_OTHER task is accepted and
	// ignored: it reads back as the default.
	b, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		return fmt.Errorf("schedslice: thread %d: %w", tid, err)
	}
	if b.Runtime != uint64(d) {
		return ErrUnsupported
	}
	return nil
}

// Get is the slice of the calling thread.
func Get() (time.Duration, error) {
	a, err := unix.SchedGetAttr(0, 0)
	if err != nil {
		return 0, fmt.Errorf("schedslice: %w", err)
	}
	return time.Duration(a.Runtime), nil
}
