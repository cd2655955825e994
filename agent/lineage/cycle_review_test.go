package lineage

import (
	"context"
	"testing"

	"github.com/vmlineage/vmlineage/agent/record"
)

// A creating record sealed for a VM that already has a parent changes no
// link (the UPDATE only fills an empty parent), so nothing is refused: yet
// the seal path counts and reports a refused cycle (the agent logs a
// warning that a parent link "was not made" although none was to be made).
func TestReviewSealCountsARefusalForAVMThatKeepsItsParent(t *testing.T) {
	ctx := context.Background()
	s, _ := open(t)
	var heard []string
	s.OnRefusedParent = func(child, parent string) { heard = append(heard, child+"<-"+parent) }
	s.DeferSeal(true)
	err := s.Update(ctx, func(tx *Tx) error {
		for _, v := range []*VM{vm("o", "origin", "", 0), vm("d", "D", "o", 1), vm("e", "E", "d", 2)} {
			if err := tx.PutVM(v); err != nil {
				return err
			}
		}
		_, err := tx.PutRecord(&record.Record{ID: record.ID("p", "0000000000c1", 0), PoolUUID: "p", VMUUID: "d", VMName: "D", ParentVMUUID: "e",
			Activity: record.Clone, Start: at(8), End: at(9), Result: record.Success, Source: record.SourceLog})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Seal(ctx, 0, nil, 0); err != nil {
		t.Fatal(err)
	}
	if v, _ := s.VM(ctx, "d"); v.ParentUUID != "o" {
		t.Fatalf("d: parent %q, want o", v.ParentUUID)
	}
	if s.RefusedParents() != 0 || len(heard) != 0 {
		t.Fatalf("no link was to be made (d keeps o), yet refused %d: %v", s.RefusedParents(), heard)
	}
}

// A store that already holds a cycle (the README: "only a corrupt store has
// one"; TestCyclicParentsListedOnce writes one): the cycle check of a VM
// below it stops where the walk comes round (UNION, not UNION ALL; with
// UNION ALL it ran to maxDepth, 100,000 steps, about 50 ms a PutVM), and
// still answers right: a link from the cycle down is fine, one closing a
// second cycle is refused.
func TestReviewPutVMBelowAnExistingCycle(t *testing.T) {
	ctx := context.Background()
	s, _ := open(t)
	if err := s.Update(ctx, func(tx *Tx) error {
		for _, v := range []*VM{vm("a", "A", "", 0), vm("b", "B", "a", 1), vm("c", "C", "b", 2)} {
			if err := tx.PutVM(v); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DB().Exec("UPDATE vms SET parent_uuid='b' WHERE uuid='a'"); err != nil {
		t.Fatal(err)
	}
	err := s.Update(ctx, func(tx *Tx) error {
		for i := range 20 {
			if err := tx.PutVM(vm("c", "C", "b", 3+i)); err != nil {
				return err
			}
		}
		if err := tx.PutVM(vm("d", "D", "c", 30)); err != nil {
			return err
		}
		return tx.PutVM(vm("c", "C", "d", 31)) // d descends from c
	})
	if err != nil {
		t.Fatal(err)
	}
	for uuid, want := range map[string]string{"c": "b", "d": "c"} {
		if v, _ := s.VM(ctx, uuid); v.ParentUUID != want {
			t.Errorf("%s: parent %q, want %q", uuid, v.ParentUUID, want)
		}
	}
	if s.RefusedParents() != 1 {
		t.Errorf("refused %d, want 1 (c<-d)", s.RefusedParents())
	}
}
