package alerts

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
var (
	t0       = time.Date(2024, 3, 1, 9, 0, 0, 0, time.UTC)
	pool     = "6f1c2a0e-3d4b-4c5a-9e8f-0a1b2c3d4e5f"
	origin   = "0e1e2e3e-0000-4000-8000-00000000000a"
	vmUUID   = map[string]string{}
	vmIP     = map[string]string{}
	vmMAC    = map[string]string{}
	hosts    = []string{"a1a1a1a1-0000-4000-8000-000000000001", "a2a2a2a2-0000-4000-8000-000000000002", "a3a3a3a3-0000-4000-8000-000000000003"}
	startsOn = map[string]int{"vm1": 0, "vm2": 1, "vm3": 2, "vm4": 1, "vm5": 2}
)

func init() {
	for i := 1; i <= 5; i++ {
		n := fmt.Sprintf("vm%d", i)
		vmUUID[n] = fmt.Sprintf("%d%d%d%d%d%d%d%d-0000-4000-8000-00000000000%d", i, i, i, i, i, i, i, i, i)
		vmIP[n] = fmt.Sprintf("10.1.0.1%d", i)
		vmMAC[n] = fmt.Sprintf("02:16:3e:00:00:0%d", i)
	}
}

func at(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }

var taskN int

func rec(vm, name, parent string, a record.Activity, sec int) *record.Record {
	taskN++
	short := fmt.Sprintf("%012x", taskN)
	return &record.Record{ID: record.ID(pool, short, 0), PoolUUID: pool, VMUUID: vm, VMName: name, ParentVMUUID: parent,
		Activity: a, Start: at(sec), End: at(sec).Add(2 * time.Second), Result: record.Success, Source: record.SourceXAPI, TaskID: short}
}

func threatModelStore(t testing.TB) *lineage.Store {
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
		must(tx.PutVM(&lineage.VM{UUID: origin, PoolUUID: pool, Name: "origin", PowerState: "Halted", FirstSeen: t0, LastSeen: t0}))
		must(tx.SetState(origin, "Halted", "", t0))
		must(tx.SetAttrs(origin, lineage.AttrName, []string{"origin"}, t0))
		must(tx.SetAttrs(origin, lineage.AttrIP, []string{"10.1.0.10"}, t0))
		for i := 1; i <= 5; i++ {
			n := fmt.Sprintf("vm%d", i)
			u := vmUUID[n]
			sec := 10 * i
			must(tx.PutVM(&lineage.VM{UUID: u, PoolUUID: pool, Name: n, ParentUUID: origin, ParentVia: "clone", PowerState: "Halted", FirstSeen: at(sec), LastSeen: at(sec)}))
			must(tx.SetState(u, "Halted", "", at(sec)))
			must(tx.SetAttrs(u, lineage.AttrName, []string{n}, at(sec)))
			must(tx.SetAttrs(u, lineage.AttrMAC, []string{vmMAC[n]}, at(sec)))
			_, err := tx.PutRecord(rec(u, n, origin, record.Clone, sec))
			must(err)
		}
		for i := 1; i <= 5; i++ {
			n := fmt.Sprintf("vm%d", i)
			u := vmUUID[n]
			sec := 50 + 10*i
			h := hosts[startsOn[n]]
			must(tx.SetState(u, "Running", h, at(sec)))
			must(tx.SetAttrs(u, lineage.AttrIP, []string{vmIP[n]}, at(sec+5)))
			must(tx.PutVM(&lineage.VM{UUID: u, PoolUUID: pool, Name: n, PowerState: "Running", HostUUID: h, FirstSeen: at(10 * i), LastSeen: at(sec)}))
			r := rec(u, n, "", record.Start, sec)
			r.HostUUID = h
			_, err := tx.PutRecord(r)
			must(err)
		}
		_, err := tx.PutRecord(rec(origin, "origin", "", record.Destroy, 120))
		must(err)
		must(tx.MarkDestroyed(origin, at(120)))
		_, err = tx.PutRecord(rec(vmUUID["vm5"], "vm5", "", record.Shutdown, 130))
		must(err)
		must(tx.SetState(vmUUID["vm5"], "Halted", "", at(130)))
		must(tx.SetAttrs(vmUUID["vm5"], lineage.AttrIP, nil, at(130)))
		return tx.PutVM(&lineage.VM{UUID: vmUUID["vm5"], PoolUUID: pool, Name: "vm5", PowerState: "Halted", FirstSeen: at(50), LastSeen: at(130)})
	})
	if err != nil {
		t.Fatal(err)
	}
	return st
}
