package gopool

import (
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/internal/procstat"
)

// One job after another: the goroutine that ran a job runs the next, so
// a thousand jobs start a handful of goroutines, not a thousand.
func TestJobsReuseGoroutines(t *testing.T) {
	var p Pool
	defer p.Close()
	done := make(chan struct{})
	p.Go(func() { done <- struct{}{} }) // starts ants's housekeeping
	<-done
	time.Sleep(10 * time.Millisecond) // the worker goes back to the pool
	before := procstat.GoroutinesCreated()
	const n = 1000
	for i := 0; i < n; i++ {
		p.Go(func() { done <- struct{}{} })
		<-done
	}
	if got := procstat.GoroutinesCreated() - before; got > 20 {
		t.Fatalf("%d jobs one after another started %d goroutines, want a few", n, got)
	}
}

// Go never waits for a goroutine to be free: jobs that wait for each
// other all run at once.
func TestJobsRunAtOnce(t *testing.T) {
	var p Pool
	defer p.Close()
	const n = 200
	var started sync.WaitGroup
	started.Add(n)
	release := make(chan struct{})
	var done sync.WaitGroup
	done.Add(n)
	for i := 0; i < n; i++ {
		p.Go(func() {
			defer done.Done()
			started.Done()
			<-release
		})
	}
	ok := make(chan struct{})
	go func() { started.Wait(); close(ok) }()
	select {
	case <-ok:
	case <-time.After(10 * time.Second):
		t.Fatal("not every job started while the others waited")
	}
	close(release)
	done.Wait()
}

func TestGoAfterClose(t *testing.T) {
	for _, used := range []bool{false, true} {
		var p Pool
		if used {
			ran := make(chan struct{})
			p.Go(func() { close(ran) })
			<-ran
		}
		p.Close()
		ran := make(chan struct{})
		p.Go(func() { close(ran) })
		select {
		case <-ran:
		case <-time.After(10 * time.Second):
			t.Fatalf("used before Close %v: a job given after Close did not run", used)
		}
	}
}

// A job's panic crashes the process, as on a goroutine of its own, and
// the report names the function that panicked.
func TestPanicCrashes(t *testing.T) {
	if os.Getenv("GOPOOL_PANIC") == "1" {
		var p Pool
		p.Go(panicsInAJob)
		time.Sleep(10 * time.Second)
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^TestPanicCrashes$")
	cmd.Env = append(os.Environ(), "GOPOOL_PANIC=1")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("the process survived a job's panic:\n%s", out)
	}
	for _, want := range []string{"the job's own panic", "gopool.panicsInAJob"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("crash report lacks %q:\n%s", want, out)
		}
	}
}

func panicsInAJob() { panic("the job's own panic") }
