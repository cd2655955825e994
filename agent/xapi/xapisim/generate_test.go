package xapisim

import (
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/record"
)

// TestGenerateValid plays a generated pool headless and checks that every
// operation succeeded except the failures the generator asked for: the
// sequence respects power states, kinds and concurrency.
func TestGenerateValid(t *testing.T) {
	sc := Generate(GenConfig{Hosts: 4, VMs: 200, Ops: 3000, Seed: 7})
	if err := sc.Validate(); err != nil {
		t.Fatal(err)
	}
	recs, tree := sc.GroundTruth()
	wantFail := 0
	for _, st := range sc.Steps {
		if st.Fail != "" {
			wantFail++
		}
	}
	failed := 0
	for _, r := range recs {
		if err := r.Validate(); err != nil {
			t.Fatal(err)
		}
		if r.Result != record.Success {
			failed++
			if r.Error != "HOST_NOT_ENOUGH_FREE_MEMORY: 4294967296, 1073741824" {
				t.Errorf("unexpected failure %s %s on %s: %s", r.Activity, r.Operation, r.VMName, r.Error)
			}
		}
	}
	if failed != wantFail {
		t.Errorf("%d failures, want %d", failed, wantFail)
	}
	if len(recs) < len(sc.Steps) {
		t.Errorf("%d records for %d steps", len(recs), len(sc.Steps))
	}
	if len(tree) < 200 {
		t.Errorf("tree has %d VMs", len(tree))
	}
	// Same config, same scenario and same record ids.
	recs2, _ := Generate(GenConfig{Hosts: 4, VMs: 200, Ops: 3000, Seed: 7}).GroundTruth()
	for i := range recs {
		if recs[i].ID != recs2[i].ID {
			t.Fatalf("record %d id differs between runs", i)
		}
	}
}

func TestGenerateLargeIsFast(t *testing.T) {
	if testing.Short() {
		t.Skip("large generation")
	}
	t0 := time.Now()
	sc := Generate(GenConfig{Hosts: 16, VMs: 10000, Ops: 100000, Seed: 1})
	gen := time.Since(t0)
	if len(sc.Steps) < 90000 {
		t.Fatalf("only %d steps", len(sc.Steps))
	}
	t.Logf("generated %d VMs / %d steps in %v", len(sc.VMs), len(sc.Steps), gen)
}

func BenchmarkGenerate10kVMs100kOps(b *testing.B) {
	for i := 0; i < b.N; i++ {
		Generate(GenConfig{Hosts: 16, VMs: 10000, Ops: 100000, Seed: int64(i)})
	}
}

func BenchmarkGroundTruth10kVMs100kOps(b *testing.B) {
	sc := Generate(GenConfig{Hosts: 16, VMs: 10000, Ops: 100000, Seed: 1})
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		recs, _ := sc.GroundTruth()
		b.ReportMetric(float64(len(recs)), "records")
	}
}
