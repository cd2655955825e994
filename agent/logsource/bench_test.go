package logsource_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/logsource"
	"github.com/vmlineage/vmlineage/agent/xensource"
)

// corpusVersion names the generator's output: a cached corpus written by an
// older generator is not reused.
const corpusVersion = 2

// benchCorpus returns a generated xensource.log (realistic or dense, see
// xensource.CorpusConfig) of at least VMLINEAGE_BENCH_BYTES (default 1 GiB),
// made once into the cache directory (VMLINEAGE_BENCH_CACHE, default
// <user cache>/vmlineage-bench).
func benchCorpus(b *testing.B, dense bool) (string, int64) {
	size := int64(1 << 30)
	if v := os.Getenv("VMLINEAGE_BENCH_BYTES"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			b.Fatalf("VMLINEAGE_BENCH_BYTES: %v", err)
		}
		size = n
	}
	dir := os.Getenv("VMLINEAGE_BENCH_CACHE")
	if dir == "" {
		c, err := os.UserCacheDir()
		if err != nil {
			c = os.TempDir()
		}
		dir = filepath.Join(c, "vmlineage-bench")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	kind := "realistic"
	if dense {
		kind = "dense"
	}
	p := filepath.Join(dir, fmt.Sprintf("xensource-v%d-%s-%d.log", corpusVersion, kind, size))
	if fi, err := os.Stat(p); err == nil && fi.Size() >= size {
		return p, fi.Size()
	}
	tmp := p + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := xensource.WriteCorpus(f, size, xensource.CorpusConfig{Failed: 13, Dense: dense}); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	// The corpus starts on 31 December: an mtime in the next year anchors
	// the year inference.
	os.Chtimes(tmp, time.Date(2027, 1, 2, 0, 0, 0, 0, time.UTC), time.Date(2027, 1, 2, 0, 0, 0, 0, time.UTC))
	if err := os.Rename(tmp, p); err != nil {
		b.Fatal(err)
	}
	fi, _ := os.Stat(p)
	return p, fi.Size()
}

// peakRSS is the process's peak resident set (VmHWM) in MiB; resetPeak
// starts a new measurement (Linux: clear_refs 5).
func peakRSS() float64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			return kb / 1024
		}
	}
	return -1
}

func resetPeak() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkReplay replays the generated corpora into a fresh store (the
// whole `vmlineage replay` path: read, parse, year, backtraces, derive,
// SQLite commits) and runs `grep -c` over the same file in the same run.
// "realistic" is a busy pool's log (one record per ~1,000 lines), "dense"
// operations back to back (one record per ~12 lines: the store's worst case).
func BenchmarkReplay(b *testing.B) {
	b.Run("realistic", func(b *testing.B) { benchReplay(b, false, true) })
	b.Run("dense", func(b *testing.B) { benchReplay(b, true, true) })
}

// BenchmarkReplayNoStore is the same without the store: the reading and
// deriving path alone.
func BenchmarkReplayNoStore(b *testing.B) {
	b.Run("realistic", func(b *testing.B) { benchReplay(b, false, false) })
	b.Run("dense", func(b *testing.B) { benchReplay(b, true, false) })
}

func benchReplay(b *testing.B, dense, withStore bool) {
	path, size := benchCorpus(b, dense)
	grep, err := exec.LookPath("grep")
	if err != nil {
		b.Fatal("grep not found")
	}
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		dir := b.TempDir()
		st := openStore(b, dir)
		if !withStore {
			st.Close()
			st = nil
		}
		e := logsource.NewEngine(st, logsource.EngineConfig{Mode: logsource.Active,
			Deriver: xensource.Config{PoolUUID: "4a0f3b9e-1c2d-4e5f-8a9b-0c1d2e3f4a5b", Master: "xen1",
				Hosts: map[string]string{"xen1": "11111111-1111-4111-8111-111111111111", "xen2": "22222222-2222-4222-8222-222222222222", "xen3": "33333333-3333-4333-8333-333333333333"}}})
		runtime.GC()
		resetPeak()
		c0, t0 := cpuTime(), time.Now()
		b.StartTimer()
		rc := logsource.ReplayConfig{Files: []string{path}}
		// Tuning knobs, for measuring (defaults: ReplayConfig's).
		rc.Batch, _ = strconv.Atoi(os.Getenv("VMLINEAGE_BENCH_BATCH"))
		rc.CacheKiB, _ = strconv.Atoi(os.Getenv("VMLINEAGE_BENCH_CACHE_KIB"))
		res, err := logsource.Replay(context.Background(), e, rc)
		b.StopTimer()
		wall, cpu := time.Since(t0), cpuTime()-c0
		if err != nil {
			b.Fatal(err)
		}
		rss := peakRSS()
		g0, gc0 := time.Now(), childCPU()
		out, err := exec.Command(grep, "-c", "xapi", path).Output()
		gwall, gcpu := time.Since(g0), childCPU()-gc0
		if err != nil {
			b.Fatalf("grep: %v", err)
		}
		lines := float64(res.Stats.Lines)
		b.ReportMetric(lines/wall.Seconds(), "lines/s")
		b.ReportMetric(lines/cpu.Seconds(), "lines/cpu-s")
		b.ReportMetric(float64(size)/1e6/wall.Seconds(), "MB/s")
		b.ReportMetric(float64(size)/1e6/cpu.Seconds(), "MB/cpu-s")
		b.ReportMetric(lines/gwall.Seconds(), "grep-lines/s")
		b.ReportMetric(float64(size)/1e6/gwall.Seconds(), "grep-MB/s")
		b.ReportMetric(rss, "peak-RSS-MiB")
		b.ReportMetric(float64(res.Stats.Records), "records")
		b.Logf("%s: %.0f MB, %d lines, %d records (one per %.0f lines), %d stored in %s (cpu %s, GOMAXPROCS %d): "+
			"%.0f lines/s, %.0f lines per CPU-s, %.0f MB/s; grep -c matched %s lines in %s (cpu %s): %.0f lines/s, %.0f MB/s; peak RSS %.0f MiB",
			filepath.Base(path), float64(size)/1e6, res.Stats.Lines, res.Stats.Records, lines/max(1, float64(res.Stats.Records)), res.Records,
			wall.Round(time.Millisecond), cpu.Round(time.Millisecond), runtime.GOMAXPROCS(0),
			lines/wall.Seconds(), lines/cpu.Seconds(), float64(size)/1e6/wall.Seconds(),
			strings.TrimSpace(string(out)), gwall.Round(time.Millisecond), gcpu.Round(time.Millisecond),
			lines/gwall.Seconds(), float64(size)/1e6/gwall.Seconds(), rss)
		if st != nil {
			st.Close()
		}
		b.StartTimer()
	}
}

// childCPU is the CPU time of waited-for children (grep).
func childCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
