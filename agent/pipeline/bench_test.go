package pipeline_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/agent/xapi/xapisim"
)

// agentProc is the real agent binary in its own process, pinned to one core
// (GOMAXPROCS=1), so its CPU time and peak RSS are its own and not the
// simulator's.
type agentProc struct {
	cmd    *exec.Cmd
	stderr *os.File
	start  time.Time
}

func startAgentProc(b testing.TB, bin string, h *harness, dataDir string) *agentProc {
	errf, err := os.CreateTemp(b.TempDir(), "agent-log-")
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "agent", "--xapi-url", h.url, "--xapi-fingerprint", h.srv.CertFingerprint(),
		"--xapi-password-file", h.pwFile, "--data-dir", dataDir, "--xapi-event-timeout", "5s", "--log-format", "json")
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	if prof := os.Getenv("VMLINEAGE_BENCH_PROFILE"); prof != "" {
		cmd.Env = append(cmd.Env, "VMLINEAGE_CPUPROFILE="+prof, "VMLINEAGE_MEMPROFILE="+prof+".mem")
	}
	cmd.Stderr = errf
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	p := &agentProc{cmd: cmd, stderr: errf, start: time.Now()}
	if os.Getenv("VMLINEAGE_BENCH_RSS_TRACE") != "" {
		go func() {
			var last int64
			for {
				b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
				if err != nil {
					return
				}
				for _, l := range strings.Split(string(b), "\n") {
					if strings.HasPrefix(l, "VmRSS:") {
						kb, _ := strconv.ParseInt(strings.Fields(l)[1], 10, 64)
						if kb-last > 20000 || last-kb > 20000 {
							fmt.Printf("  rss %6.1f MiB at %.2fs\n", float64(kb)/1024, time.Since(p.start).Seconds())
							last = kb
						}
					}
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	return p
}

// stop ends the agent with SIGTERM and returns its counters, CPU seconds and
// peak RSS in bytes.
func (p *agentProc) stop(b testing.TB) (stats map[string]float64, cpu float64, rss int64, wall time.Duration) {
	// VmHWM, not rusage's Maxrss: the child's Maxrss counts the parent's
	// (the simulator's) pages from before exec, when they share memory.
	rss = vmHWM(p.cmd.Process.Pid)
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.cmd.Wait()
	wall = time.Since(p.start)
	ru := p.cmd.ProcessState.SysUsage().(*syscall.Rusage)
	cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
	stats = map[string]float64{}
	if f := os.Getenv("VMLINEAGE_BENCH_KEEPLOG"); f != "" {
		p.stderr.Seek(0, 0)
		if out, err := os.Create(f); err == nil {
			io.Copy(out, p.stderr)
			out.Close()
		}
	}
	p.stderr.Seek(0, 0)
	sc := bufio.NewScanner(p.stderr)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) != nil || m["msg"] != "vmlineage agent stopped" {
			continue
		}
		for k, v := range m {
			if f, ok := v.(float64); ok {
				stats[k] = f
			}
		}
	}
	return stats, cpu, rss, wall
}

// cpuSeconds reads a process's user+system CPU time so far.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndex(s, ")")+2:])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

// vmHWM reads a process's peak resident set size, in bytes.
func vmHWM(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			kb, _ := strconv.ParseInt(strings.Fields(l)[1], 10, 64)
			return kb * 1024
		}
	}
	return -1
}

func storeCount(path string) int64 {
	st, err := lineage.Open(path)
	if err != nil {
		return -1
	}
	defer st.Close()
	n, _ := st.CountRecords(context.Background())
	return n
}

// waitRecords waits until the store holds want records, or until its count
// has not moved for 3 s (at high speed some operations coalesce away), or d.
func waitRecords(b testing.TB, path string, want int64, d time.Duration) int64 {
	deadline := time.Now().Add(d)
	var n, last int64 = 0, -1
	still := time.Now()
	for time.Now().Before(deadline) {
		if n = storeCount(path); n >= want {
			return n
		}
		if n != last {
			last, still = n, time.Now()
		} else if time.Since(still) > 3*time.Second {
			return n
		}
		time.Sleep(200 * time.Millisecond)
	}
	return n
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// benchPlay plays sc on the harness's simulator the way the benchmarks do.
// By default the play is paced by the agent (xapisim.PlayPaced): the
// simulator's clock moves VMLINEAGE_BENCH_POLL_MS (default 100 ms: xapi's
// 50 ms batching delay plus the agent's own turn) at each event.from call,
// so the agent sees the pool exactly as it would see xapi when polling at
// that cadence, whatever share of this shared machine the simulator gets.
// Operations start every VMLINEAGE_BENCH_SPACING_MS (default 4 ms, so about
// 1,000 of the 10,000 VMs are busy at once) and keep xapi's durations (1 to
// 15 s): the load comes from many VMs at work, not from operations shorter
// than one poll.
//
// With VMLINEAGE_BENCH_SPEED set, the simulator runs on its own at that many
// times real time instead (the earlier setting was 500 with an operation
// every 200 ms). Then what the agent records depends on the machine: an
// operation of 4 s lasts 8 ms at speed 500, one poll of the agent sees its
// task come and go whole, and event.from shows nothing of an object created
// and deleted between two calls (as xapi does); and a simulator short of
// CPU falls behind its clock and runs late steps back to back.
func benchPlay(b testing.TB, h *harness, sc *xapisim.Scenario) (how string) {
	poll := time.Duration(envInt("VMLINEAGE_BENCH_POLL_MS", 100)) * time.Millisecond
	if speed := envInt("VMLINEAGE_BENCH_SPEED", 0); speed > 0 {
		if err := h.srv.Play(context.Background(), sc, float64(speed)); err != nil {
			b.Fatal(err)
		}
		return fmt.Sprintf("played at speed %d", speed)
	}
	if err := h.srv.PlayPaced(context.Background(), sc, poll); err != nil {
		b.Fatal(err)
	}
	return fmt.Sprintf("paced by the agent, polled every %v", poll)
}

func benchSpacing() time.Duration {
	return time.Duration(envInt("VMLINEAGE_BENCH_SPACING_MS", 4)) * time.Millisecond
}

// BenchmarkTracePool plays a generated pool (VMLINEAGE_BENCH_VMS VMs,
// VMLINEAGE_BENCH_OPS operations; default 10,000 and 100,000, see benchPlay
// for the pace) from the simulator through one agent process into its
// store, and reports events/s (wall and per CPU-second of the agent) and how
// many of the operations the store holds a record of.
// Run once: go test -run '^$' -bench TracePool -benchtime 1x ./agent/pipeline
func BenchmarkTracePool(b *testing.B) {
	vms, ops := envInt("VMLINEAGE_BENCH_VMS", 10000), envInt("VMLINEAGE_BENCH_OPS", 100000)
	spacing := benchSpacing()
	bin := vmlineageBinary(b)
	for i := 0; i < b.N; i++ {
		sc := xapisim.Generate(xapisim.GenConfig{Hosts: 16, VMs: vms, Ops: ops, Seed: 1, Spacing: spacing})
		h := newHarness(b, sc, true, "")
		dir := filepath.Join(b.TempDir(), "data")
		p := startAgentProc(b, bin, h, dir)
		store := filepath.Join(dir, "lineage.db")
		waitUntil(b, context.Background(), 5*time.Minute, "baseline", func() bool {
			st, err := lineage.Open(store)
			if err != nil {
				return false
			}
			defer st.Close()
			v, _ := st.AgentState(context.Background(), "xapi.token")
			return v != ""
		})
		t0 := time.Now()
		cpu0 := cpuSeconds(p.cmd.Process.Pid) // the baseline sync is not event tracing
		how := benchPlay(b, h, sc)
		truth, _ := h.srv.Truth()
		got := waitRecords(b, store, int64(len(truth)), 5*time.Minute)
		play := time.Since(t0) - 3*time.Second // the settling wait
		if got >= int64(len(truth)) {
			play += 3 * time.Second
		}
		cpuPlay := cpuSeconds(p.cmd.Process.Pid) - cpu0
		stats, cpu, rss, wall := p.stop(b)
		score := scoreStore(b, store, truth)
		ev := stats["events"]
		b.ReportMetric(ev/play.Seconds(), "events/s")
		b.ReportMetric(ev/cpuPlay, "events/cpu-s")
		b.ReportMetric(float64(rss)/(1<<20), "peak-RSS-MiB")
		b.ReportMetric(float64(score.Recorded())/float64(score.Expected)*100, "%recorded")
		fmt.Printf("trace: %d VMs, %d ops (one every %v, %s): %.0f events in %.1fs of play (%.0f events/s wall, %.0f per agent CPU-second, "+
			"GOMAXPROCS=1, agent busy %.0f%% of the play); %.0f batches (%.0f events each) in %.0f commits, %.0f objects whose del event.from dropped (found by re-reading refs), %.0f resyncs; "+
			"agent ran %.1fs, CPU %.1fs (baseline sync included), peak RSS %.1f MiB\n",
			vms, ops, spacing, how, ev, play.Seconds(), ev/play.Seconds(), ev/cpuPlay, 100*cpuPlay/play.Seconds(),
			stats["batches"], ev/max(stats["batches"], 1), stats["commits"], stats["reconciled"], stats["resyncs"], wall.Seconds(), cpu, float64(rss)/(1<<20))
		fmt.Printf("trace: records: %s\n", score)
		for _, x := range score.Examples {
			fmt.Println("  ", x)
		}
	}
}

// scoreStore compares the store's records with the ground truth.
func scoreStore(b testing.TB, path string, truth []record.Record) xapisim.Score {
	st, err := lineage.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	got, err := st.Records(context.Background(), lineage.Filter{})
	if err != nil {
		b.Fatal(err)
	}
	return xapisim.ScoreRecords(truth, got)
}

// BenchmarkRSS100kVMs measures the agent's peak RSS with
// VMLINEAGE_BENCH_RSS_VMS VMs (default 100,000) in the store: a live pool of
// VMLINEAGE_BENCH_RSS_LIVE VMs (default 10,000; xapi pools hold at most 64
// hosts of 1,000 VMs) plus the history of VMs that came and went (destroyed
// VMs stay in the tree with their records and parents). The agent restarts on
// that store and traces 5,000 operations.
func BenchmarkRSS100kVMs(b *testing.B) {
	total, live := envInt("VMLINEAGE_BENCH_RSS_VMS", 100000), envInt("VMLINEAGE_BENCH_RSS_LIVE", 10000)
	bin := vmlineageBinary(b)
	for i := 0; i < b.N; i++ {
		sc := xapisim.Generate(xapisim.GenConfig{Hosts: 64, VMs: live, Ops: 5000, Seed: 2, Spacing: benchSpacing()})
		h := newHarness(b, sc, true, "")
		dir := filepath.Join(b.TempDir(), "data")
		store := filepath.Join(dir, "lineage.db")
		// First run: the baseline of the live pool.
		p := startAgentProc(b, bin, h, dir)
		waitUntil(b, context.Background(), 10*time.Minute, "baseline", func() bool {
			st, err := lineage.Open(store)
			if err != nil {
				return false
			}
			defer st.Close()
			v, _ := st.AgentState(context.Background(), "xapi.token")
			return v != ""
		})
		p.stop(b)
		// The history: destroyed VMs in families, each with its records.
		fillHistory(b, store, total-live)
		before := storeCount(store)
		p = startAgentProc(b, bin, h, dir)
		// Paced plays start only once the agent follows: the catch-up and
		// resync after the restart come first.
		waitUntil(b, context.Background(), 10*time.Minute, "agent in event.from", func() bool { return h.srv.Waiting() > 0 })
		benchPlay(b, h, sc)
		truth, _ := h.srv.Truth()
		got := waitRecords(b, store, before+int64(len(truth)), 5*time.Minute) - before
		stats, cpu, rss, _ := p.stop(b)
		st, _ := lineage.Open(store)
		all, _ := st.VMs(context.Background(), "")
		nrec, _ := st.CountRecords(context.Background())
		st.Close()
		b.ReportMetric(float64(rss)/(1<<20), "peak-RSS-MiB")
		fmt.Printf("rss: %d VMs in the store (%d live in the pool), %d records stored; restart traced %.0f events (%d of %d scenario records), "+
			"agent CPU %.1fs, peak RSS %.1f MiB\n", len(all), live, nrec, stats["events"], got, len(truth), cpu, float64(rss)/(1<<20))
	}
}

// fillHistory adds n destroyed VMs to the store, in families of ten (a root
// and nine clones), each with a clone and a destroy record.
func fillHistory(b testing.TB, path string, n int) {
	st, err := lineage.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	pool, _ := st.AgentState(ctx, "xapi.pool_uuid")
	t0 := time.Date(2023, 1, 1, 0, 0, 0, 0, time.UTC)
	for done := 0; done < n; {
		err := st.Update(ctx, func(tx *lineage.Tx) error {
			for j := 0; j < 5000 && done < n; j, done = j+1, done+1 {
				u := fmt.Sprintf("h157%04x-0000-4000-8000-%012x", done>>16, done)
				parent := ""
				if done%10 != 0 {
					parent = fmt.Sprintf("h157%04x-0000-4000-8000-%012x", (done-done%10)>>16, done-done%10)
				}
				at := t0.Add(time.Duration(done) * time.Minute)
				v := &lineage.VM{UUID: u, PoolUUID: pool, Name: fmt.Sprintf("old-%06d", done), ParentUUID: parent, ParentVia: "clone",
					Kind: lineage.KindVM, PowerState: "Halted", FirstSeen: at, LastSeen: at, Destroyed: at.Add(time.Hour),
					Ref: fmt.Sprintf("OpaqueRef:h157%04x-0000-4000-8000-%012x", done>>16, done)}
				if err := tx.PutVM(v); err != nil {
					return err
				}
				for k, a := range []record.Activity{record.Clone, record.Destroy} {
					r := record.Record{ID: record.ID(pool, fmt.Sprintf("%012x", done*2+k), 0), PoolUUID: pool, VMUUID: u, VMName: v.Name,
						ParentVMUUID: parent, Activity: a, Start: at.Add(time.Duration(k) * time.Hour), End: at.Add(time.Duration(k)*time.Hour + time.Second),
						Result: record.Success, Source: record.SourceXAPI}
					if _, err := tx.PutRecord(&r); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}
