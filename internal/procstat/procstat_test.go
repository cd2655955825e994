package procstat

import (
	"os"
	"os/exec"
	"runtime"
	"sync"
	"testing"
	"time"
)

// Each reports this process and a child it started, with the child's
// parent and the stat fields the benchmarks read.
func TestEachSeesSelfAndChild(t *testing.T) {
	cmd := exec.Command("sleep", "5")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	self, child := false, false
	Each(func(pid, ppid int, stat []string, status string) {
		switch pid {
		case os.Getpid():
			self = len(stat) >= 13 && len(status) > 0
		case cmd.Process.Pid:
			child = ppid == os.Getpid() && len(stat) >= 13
		}
	})
	if !self || !child {
		t.Fatalf("self seen %v, child seen %v", self, child)
	}
}

// Syscalls counts this process's own writes: a thousand writes to a file
// raise its write count by at least a thousand.
func TestSyscallsCountsWrites(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "w")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, w0, ok := Syscalls(os.Getpid())
	if !ok {
		t.Fatal("cannot read /proc/self/io")
	}
	for i := 0; i < 1000; i++ {
		if _, err := f.Write([]byte{'x'}); err != nil {
			t.Fatal(err)
		}
	}
	_, w1, _ := Syscalls(os.Getpid())
	if w1-w0 < 1000 {
		t.Fatalf("write count rose by %d after 1000 writes", w1-w0)
	}
	if _, _, ok := Syscalls(-1); ok {
		t.Fatal("pid -1 read")
	}
}

// Bytes counts the bytes this process writes and reads: a 1 MiB write to
// a file and reading it back raise both by at least that much.
func TestBytesCountsWrittenAndRead(t *testing.T) {
	path := t.TempDir() + "/b"
	r0, w0, ok := Bytes(os.Getpid())
	if !ok {
		t.Fatal("cannot read /proc/self/io")
	}
	data := make([]byte, 1<<20)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := os.ReadFile(path); err != nil {
		t.Fatal(err)
	}
	r1, w1, _ := Bytes(os.Getpid())
	if w1-w0 < 1<<20 || r1-r0 < 1<<20 {
		t.Fatalf("after writing and reading 1 MiB: written rose by %d, read by %d", w1-w0, r1-r0)
	}
	if _, _, ok := Bytes(-1); ok {
		t.Fatal("pid -1 read")
	}
}

// RunDelay counts the time threads wait for a CPU: four times as many
// busy threads as CPUs for 300 ms wait, together, far more than 100 ms.
func TestRunDelay(t *testing.T) {
	d0, ok := RunDelay(os.Getpid())
	if !ok {
		t.Fatal("cannot read /proc/self/task/*/schedstat")
	}
	n := 4 * runtime.NumCPU()
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(n))
	stop := time.Now().Add(300 * time.Millisecond)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			for time.Now().Before(stop) {
			}
		}()
	}
	wg.Wait()
	d1, _ := RunDelay(os.Getpid())
	if d1-d0 < 100*time.Millisecond {
		t.Fatalf("%d busy threads on %d CPUs for 300 ms waited %s in all", n, runtime.NumCPU(), d1-d0)
	}
	if _, ok := RunDelay(-1); ok {
		t.Fatal("pid -1 read")
	}
}
