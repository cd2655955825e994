package xapisim

import (
	"bytes"
	"regexp"
	"testing"
)

var tokenRE = regexp.MustCompile(`<member><name>token</name><value>([0-9,]*)</value>`)

// rawEvents counts the events of an event.from reply without decoding it
// (the decoder would dominate: this measures the server) and returns the
// token.
func rawEvents(b *testing.B, body []byte) (int, string) {
	m := tokenRE.FindSubmatch(body)
	if m == nil {
		b.Fatalf("no token in %.200s", body)
	}
	return bytes.Count(body, []byte("<member><name>operation</name>")), string(m[1])
}

// BenchmarkEventFromInitial10kVMs measures event.from("") over HTTP on a
// generated 10,000-VM pool: the full resync a tracer does at start-up.
func BenchmarkEventFromInitial10kVMs(b *testing.B) {
	sc := Generate(GenConfig{Hosts: 16, VMs: 10000, Seed: 1})
	s := startServer(b, Config{Scenario: sc})
	u := s.URL()
	sess := login(b, u)
	b.ResetTimer()
	events, size := 0, 0
	for i := 0; i < b.N; i++ {
		body := rawCall(b, u, "event.from", sess, []any{"vm", "task", "host", "pool", "vif", "vm_guest_metrics"}, "", 1.0)
		n, _ := rawEvents(b, body)
		events += n
		size += len(body)
	}
	b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(events)/float64(b.N), "events/call")
	b.ReportMetric(float64(size)/float64(b.N)/1e6, "MB/call")
}

// BenchmarkEventFromStream10kVMs measures the steady state: a generated
// workload played at speed 0 on a 10,000-VM pool while one client keeps
// event.from outstanding (so every write batch is served).
func BenchmarkEventFromStream10kVMs(b *testing.B) {
	sc := Generate(GenConfig{Hosts: 16, VMs: 10000, Ops: 300, Seed: 1})
	events, calls := 0, 0
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		s := New(Config{Scenario: sc})
		if err := s.Start(); err != nil {
			b.Fatal(err)
		}
		u := s.URL()
		sess := login(b, u)
		pool := call(b, u, "pool.get_all", sess).([]any)[0]
		tok := call(b, u, "event.inject", sess, "pool", pool).(string) // start from now
		done := make(chan struct{})
		b.StartTimer()
		go func() { _ = s.Play(b.Context(), sc, 0); close(done) }()
		for running := true; running; {
			select {
			case <-done:
				running = false
			default:
			}
			n, nt := rawEvents(b, rawCall(b, u, "event.from", sess, []any{"vm", "task", "host", "vif", "vm_guest_metrics"}, tok, 0.2))
			tok = nt
			events += n
			calls++
		}
		b.StopTimer()
		s.Close()
	}
	b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(calls)/float64(b.N), "calls/op")
}
