package elasticsearch

import (
	"context"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/internal/receivers"
	"github.com/vmlineage/vmlineage/outputs"
)

// BenchmarkBulkVictoriaLogs: records/s through the bulk API into
// VictoriaLogs until they are queryable, and the peak RSS of this process.
func BenchmarkBulkVictoriaLogs(b *testing.B) {
	v := receivers.StartVictoriaLogs(b)
	o, err := New(Config{URLs: []string{v.ESURL}, Headers: vlHeaders})
	if err != nil {
		b.Fatal(err)
	}
	const batch = 2000
	items := make([]outputs.Item, batch)
	b.ResetTimer()
	var el time.Duration
	for i := 0; i < b.N; i += batch {
		// Documents are made per batch, outside the timing, so the peak RSS
		// is the output's, not a pile of prepared documents.
		n := min(batch, b.N-i)
		for j := 0; j < n; j++ {
			items[j] = ecsDoc(i + j)
		}
		start := time.Now()
		if err := o.Send(context.Background(), items[:n]); err != nil {
			b.Fatal(err)
		}
		el += time.Since(start)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "records/s")
	b.ReportMetric(float64(receivers.PeakRSS())/(1<<20), "peakRSS-MiB")
	v.Flush(b)
	if rows := v.Query(b, `* | stats count() as n`); len(rows) != 1 || rows[0]["n"] != itoa(b.N) {
		b.Fatalf("VictoriaLogs holds %v, want %d", rows, b.N)
	}
}

func itoa(n int) string {
	b := []byte{}
	if n == 0 {
		return "0"
	}
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}
