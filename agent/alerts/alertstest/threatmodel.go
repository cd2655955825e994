// Package alertstest builds lineage stores for alert enrichment tests and
// benchmarks.
package alertstest

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/record"
)

// The simulator's threat-model scenario (agent/xapi/xapisim/scenarios/
// threat-model.json) as the tracer leaves it in the store: origin cloned
// into vm1..vm5, all started, origin destroyed, vm5 shut down.
// The fixture's names, exported for tests.
var (
	T0       = time.Date(2024, 3, 1, 9, 0, 0, 0, time.UTC)
	Pool     = "6f1c2a0e-3d4b-4c5a-9e8f-0a1b2c3d4e5f"
	Origin   = "0e1e2e3e-0000-4000-8000-00000000000a"
	VMUUID   = map[string]string{}
	VMIP     = map[string]string{}
	VMMAC    = map[string]string{}
	hosts    = []string{"a1a1a1a1-0000-4000-8000-000000000001", "a2a2a2a2-0000-4000-8000-000000000002", "a3a3a3a3-0000-4000-8000-000000000003"}
	startsOn = map[string]int{"vm1": 0, "vm2": 1, "vm3": 2, "vm4": 1, "vm5": 2}
)

func init() {
	for i := 1; i <= 5; i++ {
		n := fmt.Sprintf("vm%d", i)
		VMUUID[n] = fmt.Sprintf("%d%d%d%d%d%d%d%d-0000-4000-8000-00000000000%d", i, i, i, i, i, i, i, i, i)
		VMIP[n] = fmt.Sprintf("10.1.0.1%d", i)
		VMMAC[n] = fmt.Sprintf("02:16:3e:00:00:0%d", i)
	}
}

// At is the scenario start plus sec seconds.
func At(sec int) time.Time { return T0.Add(time.Duration(sec) * time.Second) }

var taskN int

func rec(vm, name, parent string, a record.Activity, sec int) *record.Record {
	taskN++
	short := fmt.Sprintf("%012x", taskN)
	return &record.Record{ID: record.ID(Pool, short, 0), PoolUUID: Pool, VMUUID: vm, VMName: name, ParentVMUUID: parent,
		Activity: a, Start: At(sec), End: At(sec).Add(2 * time.Second), Result: record.Success, Source: record.SourceXAPI, TaskID: short}
}

// ThreatModel opens a new store under t.TempDir() holding the threat-model.
func ThreatModel(t testing.TB) *lineage.Store {
	t.Helper()
	st, err := lineage.Open(filepath.Join(t.TempDir(), "lineage.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	err = st.Update(context.Background(), func(tx *lineage.Tx) error {
		must := func(err error) {
			if err != nil {
				t.Fatal(err)
			}
		}
		must(tx.PutVM(&lineage.VM{UUID: Origin, PoolUUID: Pool, Name: "origin", PowerState: "Halted", FirstSeen: T0, LastSeen: T0}))
		must(tx.SetState(Origin, "Halted", "", T0))
		must(tx.SetAttrs(Origin, lineage.AttrName, []string{"origin"}, T0))
		must(tx.SetAttrs(Origin, lineage.AttrIP, []string{"10.1.0.10"}, T0))
		for i := 1; i <= 5; i++ {
			n := fmt.Sprintf("vm%d", i)
			u := VMUUID[n]
			sec := 10 * i
			must(tx.PutVM(&lineage.VM{UUID: u, PoolUUID: Pool, Name: n, ParentUUID: Origin, ParentVia: "clone", PowerState: "Halted", FirstSeen: At(sec), LastSeen: At(sec)}))
			must(tx.SetState(u, "Halted", "", At(sec)))
			must(tx.SetAttrs(u, lineage.AttrName, []string{n}, At(sec)))
			must(tx.SetAttrs(u, lineage.AttrMAC, []string{VMMAC[n]}, At(sec)))
			_, err := tx.PutRecord(rec(u, n, Origin, record.Clone, sec))
			must(err)
		}
		for i := 1; i <= 5; i++ {
			n := fmt.Sprintf("vm%d", i)
			u := VMUUID[n]
			sec := 50 + 10*i
			h := hosts[startsOn[n]]
			must(tx.SetState(u, "Running", h, At(sec)))
			must(tx.SetAttrs(u, lineage.AttrIP, []string{VMIP[n]}, At(sec+5)))
			must(tx.PutVM(&lineage.VM{UUID: u, PoolUUID: Pool, Name: n, PowerState: "Running", HostUUID: h, FirstSeen: At(10 * i), LastSeen: At(sec)}))
			r := rec(u, n, "", record.Start, sec)
			r.HostUUID = h
			_, err := tx.PutRecord(r)
			must(err)
		}
		_, err := tx.PutRecord(rec(Origin, "origin", "", record.Destroy, 120))
		must(err)
		must(tx.MarkDestroyed(Origin, At(120)))
		_, err = tx.PutRecord(rec(VMUUID["vm5"], "vm5", "", record.Shutdown, 130))
		must(err)
		must(tx.SetState(VMUUID["vm5"], "Halted", "", At(130)))
		must(tx.SetAttrs(VMUUID["vm5"], lineage.AttrIP, nil, At(130)))
		return tx.PutVM(&lineage.VM{UUID: VMUUID["vm5"], PoolUUID: Pool, Name: "vm5", PowerState: "Halted", FirstSeen: At(50), LastSeen: At(130)})
	})
	if err != nil {
		t.Fatal(err)
	}
	return st
}
