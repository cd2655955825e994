package xensource

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/record"
)

// corpus renders n operations of every kind, with noise, as one host's log
// (all hosts' lines in one stream: what a replay of a merged file sees).
func corpus(n int) []byte {
	var b bytes.Buffer
	base := time.Date(2026, 12, 31, 20, 0, 0, 0, time.UTC)
	results := []string{"success", "success", "success", "failure"}
	for i := 0; i < n; i++ {
		op := testOp(i, allOps[i%len(allOps)], results[i%4], base)
		op.TaskRef = fmt.Sprintf("OpaqueRef:%08x-%04x-4abc-8def-0123456789ab", i, i&0xffff)
		for _, hl := range Render(op) {
			b.WriteString(hl.Line)
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}

func splitLines(b []byte) [][]byte {
	return bytes.SplitAfter(bytes.TrimSuffix(b, []byte("\n")), []byte("\n"))
}

// BenchmarkParse measures the line parser alone (target: ≥ 1,000,000
// lines/s on one core for replay).
func BenchmarkParse(b *testing.B) {
	data := corpus(2000)
	lines := splitLines(data)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	var l Line
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		for _, ln := range lines {
			_ = ParseBytes(ln, &l)
		}
	}
	b.ReportMetric(float64(len(lines))*float64(b.N)/b.Elapsed().Seconds(), "lines/s")
	b.ReportMetric(float64(len(lines))*float64(b.N)/(cpuTime()-cpu0).Seconds(), "lines/cpu-s")
}

// BenchmarkReplay measures the whole replay path: split, parse, infer the
// year, group backtraces and derive records.
func BenchmarkReplay(b *testing.B) {
	data := corpus(2000)
	nlines := bytes.Count(data, []byte("\n"))
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	records := 0
	for i := 0; i < b.N; i++ {
		sc := NewScanner("xen1", time.Date(2027, 1, 2, 0, 0, 0, 0, time.UTC), time.UTC)
		d := NewDeriver(Config{PoolUUID: testPool, Master: "xen1"})
		var out []record.Record
		feed := func(e *Entry) { out = append(out, d.Feed(e)...) }
		if err := sc.Scan(bytes.NewReader(data), feed); err != nil {
			b.Fatal(err)
		}
		sc.Flush(feed)
		out = append(out, d.Flush()...)
		records = len(out)
	}
	b.ReportMetric(float64(nlines)*float64(b.N)/b.Elapsed().Seconds(), "lines/s")
	b.ReportMetric(float64(nlines)*float64(b.N)/(cpuTime()-cpu0).Seconds(), "lines/cpu-s")
	b.ReportMetric(float64(records), "records/op")
}

// BenchmarkReplayFile replays a generated file from disk (size from
// VMLINEAGE_BENCH_BYTES, default 64 MiB; the realistic and the dense corpus)
// through Scanner and Deriver and reports lines/s, MB/s and the peak heap,
// which must stay flat whatever the file size.
func BenchmarkReplayFile(b *testing.B) {
	b.Run("realistic", func(b *testing.B) { benchReplayFile(b, false) })
	b.Run("dense", func(b *testing.B) { benchReplayFile(b, true) })
}

func benchReplayFile(b *testing.B, dense bool) {
	size := int64(64 << 20)
	if s := os.Getenv("VMLINEAGE_BENCH_BYTES"); s != "" {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			size = n
		}
	}
	path := filepath.Join(b.TempDir(), "xensource.log")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	nlines, err := WriteCorpus(f, size, CorpusConfig{Failed: 7, Dense: dense})
	if err1 := f.Close(); err == nil {
		err = err1
	}
	if err != nil {
		b.Fatal(err)
	}
	st, _ := os.Stat(path)
	b.SetBytes(st.Size())
	var peak uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // sample the heap while replaying
		defer close(done)
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				runtime.ReadMemStats(&ms)
				if ms.HeapInuse > peak {
					peak = ms.HeapInuse
				}
			}
		}
	}()
	b.ResetTimer()
	cpu0 := cpuTime()
	var records int
	for i := 0; i < b.N; i++ {
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		sc := NewScanner("pool", st.ModTime(), time.UTC)
		d := NewDeriver(Config{PoolUUID: testPool, Master: "xen1"})
		records = 0
		feed := func(e *Entry) { records += len(d.Feed(e)) }
		if err := sc.Scan(f, feed); err != nil {
			b.Fatal(err)
		}
		sc.Flush(feed)
		records += len(d.Flush())
		f.Close()
	}
	b.StopTimer()
	cpu := cpuTime() - cpu0
	close(stop)
	<-done
	b.ReportMetric(float64(nlines)*float64(b.N)/b.Elapsed().Seconds(), "lines/s")
	b.ReportMetric(float64(nlines)*float64(b.N)/cpu.Seconds(), "lines/cpu-s")
	b.ReportMetric(float64(st.Size())*float64(b.N)/cpu.Seconds()/1e6, "MB/cpu-s")
	b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
	b.ReportMetric(float64(records), "records/op")
}

// cpuTime is the process's user+system CPU time: with other work on the
// machine, lines per CPU-second is the figure that compares with the
// one-core target.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
