package audit

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

// benchLines is a mix shaped like a busy pool's audit.log: the reference
// examples (root and AD users, escaped names, errors, HTTP) with varying
// task ids, plus the task.* and internal sub-call noise that dominates real
// files.
func benchLines(tb testing.TB, n int) []string {
	ex := referenceExamples(tb)
	noise := []string{
		`Mar 15 10:22:33 xcp-h1 xapi: [20240315T10:22:33.456Z|audit||4711 HTTPS 10.0.0.50->|task.create D:0f3a9b2c7d1e|audit] ('trackid=4c1f3e9a8b7d6c5e4f3a2b1c0d9e8f7a' 'LOCAL_SUPERUSER' 'root' 'ALLOWED' 'OK' 'API' 'task.create' (('label' 'Xapi#getResource /export/' '' '') ('description' '' '' '')))`,
		`Mar 15 10:22:32 xcp-h1 xapi: [20240315T10:22:32.901Z|audit||4712 |Async.VDI.clone R:8b8a1b914f63|audit] ('trackid=2f4e1262725d99f4d5848b78cac30394' 'LOCAL_SUPERUSER' 'OpaqueRef:11111111-2222-4333-8444-555555555555' 'ALLOWED' 'OK' 'API' 'VDI.clone' (('vdi' 'disk0' 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee' 'OpaqueRef:8b8a1b91-4f63-4cd5-b59d-fa67df61a56c')))`,
	}
	var all []string
	for _, k := range []string{"E1", "E2", "E3", "E4", "E5", "E6", "E7"} {
		all = append(all, ex[k])
	}
	all = append(all, noise...)
	out := make([]string, n)
	for i := range out {
		s := all[i%len(all)]
		j := strings.Index(s, " R:")
		if j < 0 {
			j = strings.Index(s, " D:")
		}
		out[i] = s[:j+3] + fmt.Sprintf("%012x", i) + s[j+15:]
	}
	return out
}

// BenchmarkParse measures the parser alone on one core's worth of lines.
func BenchmarkParse(b *testing.B) {
	lines := benchLines(b, 4096)
	size := 0
	for _, s := range lines {
		size += len(s) + 1
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	var l Line
	bad := 0
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		for _, s := range lines {
			if Parse(s, &l) != nil {
				bad++
			}
		}
	}
	cpu := cpuTime() - cpu0
	if bad > 0 {
		b.Fatalf("%d lines did not parse", bad)
	}
	n := float64(len(lines)) * float64(b.N)
	b.ReportMetric(n/b.Elapsed().Seconds(), "lines/s")
	if cpu > 0 {
		b.ReportMetric(n/cpu.Seconds(), "lines/cpu-s")
	}
}

// cpuTime is the process's user+system CPU time (the machine is shared:
// lines per CPU-second is the comparable figure).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
