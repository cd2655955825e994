package procstat

import (
	"os"
	"os/exec"
	"testing"
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
