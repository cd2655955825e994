package main

import (
	"strings"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/lineage"
)

// A parent cycle (a corrupt store) under no root: tree prints the cycle's
// VMs and those below it, says where it closes, and tree --vm on one of
// them prints its family.
func TestTreeShowsCycle(t *testing.T) {
	t0 := time.Date(2024, 3, 1, 9, 0, 0, 0, time.UTC)
	mk := func(uuid, name, parent string, sec int) *lineage.VM {
		at := t0.Add(time.Duration(sec) * time.Second)
		return &lineage.VM{UUID: uuid, PoolUUID: "p", Name: name, ParentUUID: parent, Kind: lineage.KindVM, PowerState: "Halted", FirstSeen: at, LastSeen: at}
	}
	dir := storeWith(t, func(tx *lineage.Tx) error {
		for _, v := range []*lineage.VM{mk("o", "origin", "", 0), mk("a", "vmA", "b", 1), mk("b", "vmB", "", 2), mk("c", "vmC", "a", 3)} {
			if err := tx.PutVM(v); err != nil {
				return err
			}
		}
		return nil
	})
	// The store refuses a link that closes a cycle; a corrupt file has one.
	sqlExec(t, dir, "UPDATE vms SET parent_uuid='a' WHERE uuid='b'")
	for _, args := range [][]string{{"tree", "--data-dir", dir}, {"tree", "--data-dir", dir, "--vm", "vmC"}} {
		out, err := run(t, args...)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		for _, n := range []string{"vmA", "vmB", "vmC", "cycle: its parent vmB (b) descends from it"} {
			if !strings.Contains(out, n) {
				t.Errorf("%v does not show %q:\n%s", args, n, out)
			}
		}
	}
}
