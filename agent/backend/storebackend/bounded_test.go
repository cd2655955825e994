package storebackend

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/alerts/alertstest"
	"github.com/vmlineage/vmlineage/agent/backend"
	"github.com/vmlineage/vmlineage/internal/procstat"
)

// The alert path's reads under a context that can end (the intake's)
// start no goroutine per query to watch it, and a context that has ended
// stops them before they query.
func TestBoundedReads(t *testing.T) {
	b, ctx, cancel := openForAlertReads(t)
	at, vm1 := alertstest.At(200), alertstest.VMUUID["vm1"]
	read := func(ctx context.Context) error {
		if err := b.Fresh(ctx); err != nil {
			return err
		}
		if u, err := b.FindVMs(ctx, backend.KindIP, alertstest.VMIP["vm1"], at); err != nil || len(u) != 1 || u[0] != vm1 {
			t.Fatalf("FindVMs: %v %v", u, err)
		}
		if _, err := b.RecordFacts(ctx, vm1, at.Add(-24*time.Hour), at, 100); err != nil {
			return err
		}
		_, err := b.AncestryAt(ctx, vm1, at)
		return err
	}
	if err := read(ctx); err != nil { // statements prepared, connections open
		t.Fatal(err)
	}
	const rounds = 50
	g0, q0 := procstat.GoroutinesCreated(), b.Queries()
	for i := 0; i < rounds; i++ {
		if err := read(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Watching the context cost two goroutines a query: 8 a round.
	if n, q := procstat.GoroutinesCreated()-g0, b.Queries()-q0; n >= rounds {
		t.Fatalf("%d goroutines started for %d reads", n, q)
	}
	cancel()
	q1 := b.Queries()
	for name, err := range map[string]error{
		"Fresh":       b.Fresh(ctx),
		"FindVMs":     second(b.FindVMs(ctx, backend.KindIP, alertstest.VMIP["vm1"], at)),
		"FamilyOf":    second(b.FamilyOf(ctx, vm1, 100)),
		"RecordFacts": second(b.RecordFacts(ctx, vm1, at.Add(-time.Hour), at, 100)),
	} {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s after the context ended: %v, want context.Canceled", name, err)
		}
	}
	if q := b.Queries(); q != q1 {
		t.Fatalf("%d queries made after the context ended", q-q1)
	}
}

func second[T any](_ T, err error) error { return err }

// openForAlertReads opens a backend on the threat model, closed at the
// test's end, and a context that can end, as the intake's.
func openForAlertReads(tb testing.TB) (*Backend, context.Context, context.CancelFunc) {
	b := openBackend(tb, alertstest.ThreatModel(tb))
	ctx, cancel := context.WithCancel(context.Background())
	return b, ctx, cancel
}

// BenchmarkAlertReads is the alert path's reads of one alert on a small
// store (the threat model): what each costs beyond the store's pages,
// under a context that can end, as the intake's does.
func BenchmarkAlertReads(b *testing.B) {
	bk, ctx, cancel := openForAlertReads(b)
	defer cancel()
	at, vm1 := alertstest.At(200), alertstest.VMUUID["vm1"]
	b.Run("Fresh", func(b *testing.B) {
		g0 := procstat.GoroutinesCreated()
		for b.Loop() {
			if err := bk.Fresh(ctx); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(procstat.GoroutinesCreated()-g0)/float64(b.N), "goroutines/op")
	})
	b.Run("FindVMs+RecordFacts+AncestryAt", func(b *testing.B) {
		g0 := procstat.GoroutinesCreated()
		for b.Loop() {
			if _, err := bk.FindVMs(ctx, backend.KindIP, alertstest.VMIP["vm1"], at); err != nil {
				b.Fatal(err)
			}
			if _, err := bk.RecordFacts(ctx, vm1, at.Add(-24*time.Hour), at, 100); err != nil {
				b.Fatal(err)
			}
			if _, err := bk.AncestryAt(ctx, vm1, at); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(procstat.GoroutinesCreated()-g0)/float64(b.N), "goroutines/op")
	})
}
