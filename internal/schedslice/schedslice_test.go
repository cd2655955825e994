//go:build linux

package schedslice

import (
	"errors"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// Set gives every thread the slice, threads and processes started later
// inherit it, and 0 gives back the kernel's default.
func TestSetInheritReset(t *testing.T) {
	def, err := Get()
	if err != nil {
		t.Fatal(err)
	}
	if err := Set(200 * time.Microsecond); err != nil {
		if errors.Is(err, ErrUnsupported) && os.Getenv("CI") != "true" {
			t.Skipf("kernel without custom slices: %v", err) // before Linux 6.12
		}
		t.Fatal(err)
	}
	defer Set(0)
	ents, _ := os.ReadDir("/proc/self/task")
	for _, e := range ents {
		if got := threadSlice(t, "/proc/self/task/"+e.Name()+"/sched"); got != 200*time.Microsecond {
			t.Errorf("thread %s: slice %s, want 200µs", e.Name(), got)
		}
	}
	// A thread started now (LockOSThread on a fresh goroutine while every
	// other thread is busy or parked makes the runtime start one, or reuse
	// one: either way it must have the slice).
	got := make(chan time.Duration)
	go func() {
		runtime.LockOSThread()
		d, _ := Get()
		got <- d
	}()
	if d := <-got; d != 200*time.Microsecond {
		t.Errorf("new thread: slice %s, want 200µs", d)
	}
	out, err := exec.Command("cat", "/proc/self/sched").Output()
	if err != nil {
		t.Fatal(err)
	}
	if d := parseSlice(t, string(out)); d != 200*time.Microsecond {
		t.Errorf("child process: slice %s, want 200µs", d)
	}
	if err := Set(0); err != nil {
		t.Fatal(err)
	}
	if d, _ := Get(); d != def {
		t.Errorf("after Set(0): slice %s, want the default %s", d, def)
	}
}

func TestSetRejectsOutOfBounds(t *testing.T) {
	for _, d := range []time.Duration{time.Microsecond, 99 * time.Microsecond, 101 * time.Millisecond} {
		if err := Set(d); err == nil || errors.Is(err, ErrUnsupported) {
			t.Errorf("Set(%s) = %v, want a bounds error", d, err)
		}
	}
}

func threadSlice(t *testing.T, path string) time.Duration {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return parseSlice(t, string(b))
}

var sliceLine = regexp.MustCompile(`(?m)^se\.slice\s*:\s*(\d+)`)

func parseSlice(t *testing.T, s string) time.Duration {
	m := sliceLine.FindStringSubmatch(s)
	if m == nil {
		t.Fatalf("no se.slice in %q", s)
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	return time.Duration(n)
}
