package cef

import (
	"testing"

	"github.com/vmlineage/vmlineage/formats/internal/cputime"
	"github.com/vmlineage/vmlineage/formats/internal/fixtures"
)

// BenchmarkAppendRecord measures encoding into a reused buffer: records/s
// and allocations per record.
func BenchmarkAppendRecord(b *testing.B) {
	tc := fixtures.Base()
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	b.ResetTimer()
	cpu, ok := cputime.Measure(func() {
		for i := 0; i < b.N; i++ {
			buf = AppendRecord(buf[:0], &tc.R, &tc.C)
		}
	})
	b.SetBytes(int64(len(buf)))
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	if ok && cpu > 0 {
		// the wall-clock rate suffers from other processes on a shared machine
		b.ReportMetric(float64(b.N)/cpu.Seconds(), "records/cpu-s")
	}
}

// sink keeps Marshal's result on the heap, as a caller's would be.
var sink []byte

// BenchmarkMarshal allocates a fresh buffer per record (one allocation).
func BenchmarkMarshal(b *testing.B) {
	tc := fixtures.Base()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		sink = Marshal(&tc.R, &tc.C)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkAppendRecordHostile encodes records full of strings to clean.
func BenchmarkAppendRecordHostile(b *testing.B) {
	cases := fixtures.Cases()
	buf := make([]byte, 0, 1<<16)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tc := &cases[i%len(cases)]
		buf = AppendRecord(buf[:0], &tc.R, &tc.C)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkParse parses one encoded record line.
func BenchmarkParse(b *testing.B) {
	tc := fixtures.Base()
	line := string(AppendRecord(nil, &tc.R, &tc.C))
	b.ReportAllocs()
	b.SetBytes(int64(len(line)))
	for i := 0; i < b.N; i++ {
		if _, err := Parse(line); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}
