package lifecycle

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/agent/xapi"
	"github.com/vmlineage/vmlineage/agent/xapi/xapisim"
)

func benchEnv(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func cpuNow() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkTracerReplay is the tracer alone: decoding, pairing and the
// store, on the event.from answers a client polling every
// VMLINEAGE_BENCH_POLL_MS (default 100 ms, xapi's 50 ms batching delay plus
// the agent's own turn) would get from a generated pool of
// VMLINEAGE_BENCH_VMS VMs (10,000) and VMLINEAGE_BENCH_OPS operations
// (100,000) started every VMLINEAGE_BENCH_SPACING_MS (4 ms). The answers
// are captured once (xapisim.Capture) and replayed from a file, so two runs
// see the same batches and compare exactly, which BenchmarkTracePool (the
// agent process against the live simulator, whose batches follow the
// machine's load) cannot promise. No HTTP, no TLS: see that one for them.
func BenchmarkTracerReplay(b *testing.B) {
	vms, ops := benchEnv("VMLINEAGE_BENCH_VMS", 10000), benchEnv("VMLINEAGE_BENCH_OPS", 100000)
	spacing := time.Duration(benchEnv("VMLINEAGE_BENCH_SPACING_MS", 4)) * time.Millisecond
	poll := time.Duration(benchEnv("VMLINEAGE_BENCH_POLL_MS", 100)) * time.Millisecond
	sc := xapisim.Generate(xapisim.GenConfig{Hosts: 16, VMs: vms, Ops: ops, Seed: 1, Spacing: spacing})
	// VMLINEAGE_BENCH_CAPTURE names a file to keep the capture in between
	// runs (it is large: about 1 GB for the default pool).
	file := os.Getenv("VMLINEAGE_BENCH_CAPTURE")
	if file == "" {
		file = filepath.Join(b.TempDir(), "answers")
	}
	file += fmt.Sprintf(".v%d-o%d-s%v-p%v", vms, ops, spacing, poll)
	var answers int
	truth, err := readTruth(file)
	if err != nil {
		truth, answers, err = capture(sc, poll, file)
	}
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		st, err := lineage.Open(filepath.Join(b.TempDir(), "lineage.db"))
		if err != nil {
			b.Fatal(err)
		}
		tr := New(st, slog.New(slog.NewTextHandler(io.Discard, nil)))
		in, err := os.Open(file)
		if err != nil {
			b.Fatal(err)
		}
		r := bufio.NewReaderSize(in, 1<<20)
		var buf []byte
		next := func() (*xapi.EventBatch, error) {
			var n [4]byte
			if _, err := io.ReadFull(r, n[:]); err != nil {
				return nil, err
			}
			buf = append(buf[:0], make([]byte, binary.LittleEndian.Uint32(n[:]))...)
			if _, err := io.ReadFull(r, buf); err != nil {
				return nil, err
			}
			return xapi.DecodeEventFrom(bytes.NewReader(buf))
		}
		ctx := context.Background()
		// The baseline, as the agent takes it at start: the whole pool.
		first, err := next()
		if err != nil {
			b.Fatal(err)
		}
		snap := &xapi.PoolSnapshot{Records: map[string]map[string]*xapi.Snapshot{}}
		for _, e := range first.Events {
			if snap.Records[e.Class] == nil {
				snap.Records[e.Class] = map[string]*xapi.Snapshot{}
			}
			snap.Records[e.Class][e.Ref] = e.Snapshot
			if e.Class == "pool" {
				snap.PoolRef = e.Ref
			}
		}
		if err := tr.Resync(ctx, snap, first.Token, xapi.ReasonStart); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		t0, cpu0 := time.Now(), cpuNow()
		var events, batches int
		for {
			eb, err := next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			if len(eb.Events) == 0 {
				if err := tr.Flush(ctx); err != nil {
					b.Fatal(err)
				}
				continue
			}
			events += len(eb.Events)
			batches++
			if err := tr.Events(ctx, eb); err != nil {
				b.Fatalf("batch %d: %v", batches, err)
			}
			if s := tr.Stale(); len(s) > 0 {
				b.Fatalf("batch %d: dels lost at this cadence (%v): the replay cannot re-read refs", batches, s)
			}
		}
		if err := tr.Flush(ctx); err != nil {
			b.Fatal(err)
		}
		wall, cpu := time.Since(t0), cpuNow()-cpu0
		b.StopTimer()
		in.Close()
		got, err := st.Records(ctx, lineage.Filter{})
		if err != nil {
			b.Fatal(err)
		}
		st.Close()
		score := xapisim.ScoreRecords(truth, got)
		if answers == 0 {
			answers = batches
		}
		b.ReportMetric(float64(events)/cpu.Seconds(), "events/cpu-s")
		b.ReportMetric(float64(events)/wall.Seconds(), "events/s")
		b.ReportMetric(float64(score.Recorded())/float64(score.Expected)*100, "%recorded")
		fmt.Printf("replay: %d VMs, %d ops every %v, polled every %v: %d events in %d batches (%d answers), %.0f events per CPU-second "+
			"(%.0f/s wall); %s\n", vms, ops, spacing, poll, events, batches, answers, float64(events)/cpu.Seconds(),
			float64(events)/wall.Seconds(), score)
		for _, x := range score.Examples {
			fmt.Println("  ", x)
		}
		b.StartTimer()
	}
}

// capture writes the answers to file, each after its length (4 bytes,
// little-endian), and the ground truth beside it.
func capture(sc *xapisim.Scenario, poll time.Duration, file string) ([]record.Record, int, error) {
	f, err := os.Create(file)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	var answers int
	truth, err := xapisim.Capture(sc, xapi.Classes, poll, func(body []byte) error {
		answers++
		var n [4]byte
		binary.LittleEndian.PutUint32(n[:], uint32(len(body)))
		w.Write(n[:])
		_, err := w.Write(body)
		return err
	})
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		os.Remove(file)
		return nil, 0, err
	}
	js, err := json.Marshal(truth)
	if err == nil {
		err = os.WriteFile(file+".truth", js, 0o600)
	}
	return truth, answers, err
}

func readTruth(file string) ([]record.Record, error) {
	if _, err := os.Stat(file); err != nil {
		return nil, err
	}
	js, err := os.ReadFile(file + ".truth")
	if err != nil {
		return nil, err
	}
	var truth []record.Record
	return truth, json.Unmarshal(js, &truth)
}
