package spool

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/outputs"
)

// flaky fails its first n Sends, then records what it gets.
type flaky struct {
	mu    sync.Mutex
	fails int
	got   []string
	calls int
}

func (f *flaky) Name() string { return "flaky" }
func (f *flaky) Close() error { return nil }
func (f *flaky) Send(ctx context.Context, items []outputs.Item) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.fails > 0 {
		f.fails--
		return errors.New("receiver down")
	}
	for _, it := range items {
		f.got = append(f.got, it.ID)
	}
	return nil
}

func TestShipperRetriesAndAcks(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out := &flaky{fails: 3}
	sh := &Shipper{Spool: s, Output: out, BatchSize: 40, Backoff: outputs.Backoff{Min: time.Millisecond, Max: 2 * time.Millisecond}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sh.Run(ctx); close(done) }()
	if err := s.Append(ctx, items(0, 100)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Stats().Records > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	h := sh.Health()
	if len(out.got) != 100 || h.Health.Sent != 100 || h.Health.Failed == 0 || h.Health.LastError != "receiver down" || h.Spool.Acked != 100 {
		t.Fatalf("got %d, health %+v", len(out.got), h)
	}
	for i, id := range out.got {
		if id != item(i).ID {
			t.Fatalf("order: %d is %s", i, id)
		}
	}
}

func BenchmarkAppend(b *testing.B) {
	for _, c := range []struct {
		name string
		sync time.Duration
		per  int
	}{{"fsync-each-append-batch100", 0, 100}, {"group-commit-10ms-batch100", 10 * time.Millisecond, 100}, {"fsync-each-append-batch1", 0, 1}} {
		b.Run(c.name, func(b *testing.B) {
			s, err := Open(b.TempDir(), Options{SyncInterval: c.sync, MaxBytes: 8 << 30})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			batch := items(0, c.per)
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i += c.per {
				if err := s.Append(context.Background(), batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
		})
	}
}

func BenchmarkReadAck(b *testing.B) {
	s, err := Open(b.TempDir(), Options{MaxBytes: 8 << 30})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for i := 0; i < b.N; i += 1000 {
		s.Append(context.Background(), items(i, 1000))
	}
	b.ResetTimer()
	start := time.Now()
	n := 0
	for n < b.N {
		bt, err := s.Read(context.Background(), 500, 0)
		if err != nil {
			b.Fatal(err)
		}
		n += len(bt.Items)
		s.Ack(bt)
	}
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "records/s")
}

func TestTee(t *testing.T) {
	a, _ := Open(t.TempDir(), Options{})
	b, _ := Open(t.TempDir(), Options{MaxBytes: 4096, WhenFull: Reject})
	defer a.Close()
	defer b.Close()
	tee := Tee{a, b}
	if err := tee.Append(context.Background(), items(0, 3)); err != nil {
		t.Fatal(err)
	}
	big := []outputs.Item{{ID: "x", Payload: make([]byte, 4000)}}
	if err := tee.Append(context.Background(), big); !errors.Is(err, ErrFull) {
		t.Fatalf("want ErrFull from the small spool, got %v", err)
	}
	if a.Stats().Records != 4 || b.Stats().Records != 3 {
		t.Fatalf("a %+v b %+v", a.Stats(), b.Stats())
	}
}
