package storebackend

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/alerts/alertstest"
	"github.com/vmlineage/vmlineage/agent/backend"
	"github.com/vmlineage/vmlineage/agent/lineage"
)

// openBackend opens a backend on st, closed when the test ends, with its
// cache at the store's current version.
func openBackend(tb testing.TB, st *lineage.Store) *Backend {
	tb.Helper()
	b, err := Open(st, lineage.ReaderOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { b.Close() })
	if err := b.Fresh(context.Background()); err != nil {
		tb.Fatal(err)
	}
	return b
}

// The alerts of one family arriving together read it once: those behind
// the first wait for its read and find the family in the cache.
func TestFamilyReadOnceForABurst(t *testing.T) {
	b := openBackend(t, alertstest.ThreatModel(t))
	ctx := context.Background()
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
	f, err := b.FamilyOf(ctx, alertstest.VMUUID["vm5"], 1000)
	if err != nil || f == nil {
		t.Fatal(f, err)
	}
	b.cache.mu.Lock()
	b.cache.clearLocked() // as a commit elsewhere would
	b.cache.mu.Unlock()
	defer b.cache.fillFor(f.Root)() // a read of the family in flight that does not end
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

// Reads of different families do not take turns: a family read in flight
// that does not end holds up only the reads of its own family.
func TestFamiliesReadSideBySide(t *testing.T) {
	st := alertstest.ThreatModel(t)
	const loner = "99999999-0000-4000-8000-000000000099"
	if err := st.Update(context.Background(), func(tx *lineage.Tx) error {
		return tx.PutVM(&lineage.VM{UUID: loner, Name: "loner", PowerState: "Running", FirstSeen: alertstest.At(0), LastSeen: alertstest.At(0)})
	}); err != nil {
		t.Fatal(err)
	}
	b := openBackend(t, st)
	ctx := context.Background()
	root, err := st.RootOf(ctx, alertstest.VMUUID["vm5"])
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	end := b.cache.fillFor(root) // the threat model's family, read by an alert that does not finish
	stuck := func() { once.Do(end) }
	defer stuck()
	type result struct {
		f   *backend.Family
		err error
	}
	read := func(uuid string) chan result {
		ch := make(chan result, 1)
		go func() {
			f, err := b.FamilyOf(ctx, uuid, 1000)
			ch <- result{f, err}
		}()
		return ch
	}
	other, same := read(loner), read(alertstest.VMUUID["vm1"])
	select {
	case r := <-other:
		if r.err != nil || r.f == nil || r.f.Root != loner || len(r.f.Members) != 1 {
			t.Fatalf("family of the loner: %+v, %v", r.f, r.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the read of another family waited for the read in flight")
	}
	select {
	case r := <-same:
		t.Fatalf("a read of the family in flight did not wait for it: %+v, %v", r.f, r.err)
	case <-time.After(50 * time.Millisecond):
	}
	stuck()
	select {
	case r := <-same:
		if r.err != nil || r.f == nil || r.f.Root != root || r.f.Member(alertstest.VMUUID["vm1"]) == nil {
			t.Fatalf("family of vm1: %+v, %v", r.f, r.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the read of the family did not go on after the read ahead ended")
	}
	b.cache.mu.Lock()
	left := len(b.cache.filling)
	b.cache.mu.Unlock()
	if left != 0 {
		t.Errorf("%d turn entries left after every read ended", left)
	}
}

// RootOf names the root a family read starts from: the same for every
// member, the root itself for the root, and ErrNotFound for a VM the store
// does not know.
func TestRootOf(t *testing.T) {
	st := alertstest.ThreatModel(t)
	ctx := context.Background()
	b := openBackend(t, st)
	f, err := b.FamilyOf(ctx, alertstest.VMUUID["vm3"], 1000)
	if err != nil || f == nil {
		t.Fatal(f, err)
	}
	for _, m := range f.Members {
		root, err := st.RootOf(ctx, m.UUID)
		if err != nil || root != f.Root {
			t.Errorf("root of %s (%s): %q, %v; want %s", m.Name, m.UUID, root, err, f.Root)
		}
	}
	if _, err := st.RootOf(ctx, "00000000-0000-4000-8000-00000000dead"); !errors.Is(err, lineage.ErrNotFound) {
		t.Errorf("root of an unknown VM: %v, want ErrNotFound", err)
	}
}

// A VM moved to another family between a miss's RootOf and its family
// read is not in the family read from the old root: its family is read
// again, as it is now.
func TestFamilyOfAfterAMove(t *testing.T) {
	st := alertstest.ThreatModel(t)
	ctx := context.Background()
	const loner, drifter = "99999999-0000-4000-8000-000000000099", "88888888-0000-4000-8000-000000000088"
	put := func(v lineage.VM) {
		t.Helper()
		if err := st.Update(ctx, func(tx *lineage.Tx) error { return tx.PutVM(&v) }); err != nil {
			t.Fatal(err)
		}
	}
	put(lineage.VM{UUID: loner, Name: "loner", FirstSeen: alertstest.At(0), LastSeen: alertstest.At(0)})
	put(lineage.VM{UUID: drifter, Name: "drifter", ParentUUID: loner, ParentVia: "clone", FirstSeen: alertstest.At(1), LastSeen: alertstest.At(1)})
	origin, err := st.RootOf(ctx, alertstest.VMUUID["vm1"])
	if err != nil {
		t.Fatal(err)
	}
	b := openBackend(t, st)
	defer func() { afterRootOf = nil }()
	afterRootOf = func() {
		afterRootOf = nil
		put(lineage.VM{UUID: drifter, Name: "drifter", ParentUUID: origin, ParentVia: "clone", FirstSeen: alertstest.At(1), LastSeen: alertstest.At(1)})
	}
	f, err := b.FamilyOf(ctx, drifter, 1000)
	if err != nil || f == nil {
		t.Fatal(f, err)
	}
	if f.Root != origin || f.Member(drifter) == nil {
		t.Fatalf("family of the moved VM: root %s, %d members (drifter in it: %v); want the family of %s with it", f.Root, len(f.Members), f.Member(drifter) != nil, origin)
	}
}
