package storebackend

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/alerts/alertstest"
	"github.com/vmlineage/vmlineage/agent/lineage"
)

// The alerts of one family arriving together read it once: those behind
// the first wait for its read and find the family in the cache.
func TestFamilyReadOnceForABurst(t *testing.T) {
	b, err := Open(alertstest.ThreatModel(t), lineage.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	if err := b.Fresh(ctx); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, vm := range []string{"vm1", "vm2", "vm3", "vm4", "vm5", "vm1", "vm2", "vm3"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := b.FamilyOf(ctx, alertstest.VMUUID[vm], 1000)
			if err != nil || f == nil || f.Member(alertstest.VMUUID[vm]) == nil {
				t.Errorf("family of %s: %v %v", vm, f, err)
			}
		}()
	}
	wg.Wait()
	if hits, misses := b.CacheStats(); misses != 1 || hits != 7 {
		t.Fatalf("%d hits, %d misses; want the family read once", hits, misses)
	}
}

// Once a family has shown itself larger than largeFamily, reads of it do
// not take turns: they would hold up the reads of every other family for
// as long as they take.
func TestLargeFamilyReadsWithoutTakingTurns(t *testing.T) {
	defer func(n int) { largeFamily = n }(largeFamily)
	largeFamily = 3 // the threat model's family is larger
	b, err := Open(alertstest.ThreatModel(t), lineage.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	if _, err := b.FamilyOf(ctx, alertstest.VMUUID["vm5"], 1000); err != nil {
		t.Fatal(err)
	}
	b.cache.mu.Lock()
	b.cache.clearLocked() // as a commit elsewhere would
	b.cache.mu.Unlock()
	b.cache.fill.Lock() // a read in flight that does not end
	defer b.cache.fill.Unlock()
	done := make(chan error, 1)
	go func() {
		f, err := b.FamilyOf(ctx, alertstest.VMUUID["vm1"], 1000)
		if err == nil && f == nil {
			err = errors.New("no family")
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a large family's read waited for the read ahead")
	}
}
