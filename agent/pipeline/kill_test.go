package pipeline_test

import (
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/agent/xapi/xapisim"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// vmlineageBinary builds the real command once per test run: the kill test
// needs a separate process to SIGKILL.
// compareTolerant compares the store with the ground truth for runs in which
// the agent was not watching all the time (killed, or cut off by faults).
// An operation that leaves no trace in the pool's state (a failed call, a
// plugin call, an export) and runs entirely while nobody watches cannot be
// seen through XAPI (xensource.log covers those): such misses are logged.
// Everything with an effect on the pool must be there, once.
func compareTolerant(t *testing.T, st *lineage.Store, truth []record.Record) ([]record.Record, int) {
	t.Helper()
	var effect, silent []record.Record
	for _, r := range truth {
		if r.Activity == record.Other || r.Activity == record.Export || r.Result != record.Success {
			silent = append(silent, r)
		} else {
			effect = append(effect, r)
		}
	}
	got := waitTraced(t, st, effect, 30*time.Second)
	missing, _ := match(silent, got)
	for _, m := range missing {
		t.Logf("not seen (no effect on the pool, ran while nobody watched): %s %s of %s", m.Activity, m.Result, m.VMName)
	}
	var seen []record.Record
	for _, r := range truth {
		if !containsRec(missing, r) {
			seen = append(seen, r)
		}
	}
	return got, compareRecords(t, seen, got)
}

func containsRec(rs []record.Record, r record.Record) bool {
	for _, x := range rs {
		if x.ID == r.ID {
			return true
		}
	}
	return false
}

func vmlineageBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "vmlineage-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "vmlineage")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/vmlineage/vmlineage/cmd/vmlineage").CombinedOutput()
		if err != nil {
			buildErr = err
			t.Logf("%s", out)
		}
	})
	if buildErr != nil {
		t.Fatalf("building vmlineage: %v", buildErr)
	}
	return binPath
}

// TestSIGKILLMidScenario kills the agent process with SIGKILL at random
// moments while the simulator plays, restarts it each time, and checks that
// the store ends up with every ground-truth record exactly once.
func TestSIGKILLMidScenario(t *testing.T) {
	bin := vmlineageBinary(t)
	sc, err := xapisim.Builtin("every-activity")
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, sc, true, "")
	cfg := h.config()
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "agent", "--xapi-url", h.url, "--xapi-fingerprint", h.srv.CertFingerprint(),
			"--xapi-password-file", h.pwFile, "--data-dir", cfg.DataDir, "--xapi-event-timeout", "2s",
			"--xapi-backoff-max", "300ms", "--log-level", "warn")
		cmd.Stderr = os.Stderr
		if !testing.Verbose() {
			cmd.Stderr = nil
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	cmd := start()
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	// Baseline first, as an operator would start the agent before the work.
	store := filepath.Join(cfg.DataDir, "lineage.db")
	waitUntil(t, context.Background(), 20*time.Second, "first sync", func() bool {
		st, err := lineage.Open(store)
		if err != nil {
			return false
		}
		defer st.Close()
		v, _ := st.AgentState(context.Background(), "xapi.token")
		return v != ""
	})
	played := make(chan error, 1)
	go func() { played <- h.srv.Play(context.Background(), sc, 20) }()
	rng := rand.New(rand.NewPCG(7, 7))
	kills := 0
	for done := false; !done; {
		select {
		case err := <-played:
			if err != nil {
				t.Fatal(err)
			}
			done = true
		case <-time.After(time.Duration(400+rng.IntN(1200)) * time.Millisecond):
			cmd.Process.Signal(syscall.SIGKILL)
			cmd.Wait()
			kills++
			cmd = start()
		}
	}
	truth, tree := h.srv.Truth()
	st, err := lineage.Open(store)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	got, degraded := compareTolerant(t, st, truth)
	unknownParent := map[string]bool{}
	for _, r := range got {
		if r.Activity.Creating() && r.VMUUID != "" && r.IsUnknown("parent_vm_uuid") {
			unknownParent[r.VMUUID] = true
		}
	}
	compareTreeTolerant(t, st, tree, unknownParent)
	t.Logf("%d SIGKILLs during the scenario; %d records expected, %d stored, %d with an unknown VM", kills, len(truth), len(got), degraded)
	if kills < 5 {
		t.Errorf("only %d kills: the scenario was too short to test anything", kills)
	}
}
