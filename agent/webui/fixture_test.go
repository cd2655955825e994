package webui

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/record"
)

// The threat-model scenario (agent/xapi/xapisim/scenarios/threat-model.json,
// Lee et al. section 2): origin is cloned into vm1..vm5, which start on three
// hosts; origin is destroyed and vm5 halted.
const (
	tmPool   = "6f1c2a0e-3d4b-4c5a-9e8f-0a1b2c3d4e5f"
	tmOrigin = "0e1e2e3e-0000-4000-8000-00000000000a"
	tmXen1   = "a1a1a1a1-0000-4000-8000-000000000001"
	tmXen2   = "a2a2a2a2-0000-4000-8000-000000000002"
	tmXen3   = "a3a3a3a3-0000-4000-8000-000000000003"
)

var (
	tmStart = time.Date(2024, 3, 1, 9, 0, 0, 0, time.UTC)
	tmHosts = map[string]string{tmXen1: "xen1", tmXen2: "xen2", tmXen3: "xen3"}
	// vm1..vm5: uuid, the host it starts on, its IP.
	tmClones = []struct{ name, uuid, host, ip, mac string }{
		{"vm1", "11111111-0000-4000-8000-000000000001", tmXen1, "10.1.0.11", "02:16:3e:00:00:01"},
		{"vm2", "22222222-0000-4000-8000-000000000002", tmXen2, "10.1.0.12", "02:16:3e:00:00:02"},
		{"vm3", "33333333-0000-4000-8000-000000000003", tmXen3, "10.1.0.13", "02:16:3e:00:00:03"},
		{"vm4", "44444444-0000-4000-8000-000000000004", tmXen2, "10.1.0.14", "02:16:3e:00:00:04"},
		{"vm5", "55555555-0000-4000-8000-000000000005", tmXen3, "10.1.0.15", "02:16:3e:00:00:05"},
	}
)

func at(sec float64) time.Time { return tmStart.Add(time.Duration(sec * float64(time.Second))) }

// openStore opens a fresh store in a temporary directory.
func openStore(t testing.TB) *lineage.Store {
	t.Helper()
	st, err := lineage.Open(filepath.Join(t.TempDir(), "lineage.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// threatModelStore builds, through the store's write API as the tracer does,
// what tracing the threat-model scenario leaves behind.
func threatModelStore(t testing.TB) *lineage.Store {
	t.Helper()
	st := openStore(t)
	task := 0
	rec := func(tx *lineage.Tx, vm, name, parent string, a record.Activity, host string, start float64, dest string) error {
		task++
		short := fmt.Sprintf("%08x%04x", 0xdead0000+task, task)
		r := &record.Record{ID: record.ID(tmPool, short, 0), PoolUUID: tmPool, HostUUID: host, HostName: tmHosts[host],
			VMUUID: vm, VMName: name, ParentVMUUID: parent, Activity: a, Start: at(start), End: at(start + 0.8),
			Result: record.Success, TaskID: short, Source: record.SourceXAPI, DestinationHostUUID: dest}
		_, err := tx.PutRecord(r)
		return err
	}
	err := st.Update(context.Background(), func(tx *lineage.Tx) error {
		if err := tx.PutPool(&lineage.Pool{UUID: tmPool, Name: "threat-model pool", MasterUUID: tmXen1}); err != nil {
			return err
		}
		for i, h := range []string{tmXen1, tmXen2, tmXen3} {
			if err := tx.PutHost(&lineage.Host{UUID: h, PoolUUID: tmPool, Name: tmHosts[h], Address: fmt.Sprintf("10.0.0.%d", i+1), FirstSeen: tmStart, LastSeen: at(130)}); err != nil {
				return err
			}
		}
		if err := tx.PutVM(&lineage.VM{UUID: tmOrigin, PoolUUID: tmPool, Name: "origin", Kind: lineage.KindVM, PowerState: "Halted", FirstSeen: tmStart, LastSeen: tmStart}); err != nil {
			return err
		}
		if err := tx.SetState(tmOrigin, "Halted", "", tmStart); err != nil {
			return err
		}
		for kind, v := range map[string]string{lineage.AttrName: "origin", lineage.AttrIP: "10.1.0.10", lineage.AttrMAC: "02:16:3e:00:00:0a"} {
			if err := tx.SetAttrs(tmOrigin, kind, []string{v}, tmStart); err != nil {
				return err
			}
		}
		for i, c := range tmClones { // clones at 10 s .. 50 s, run on the master
			when := float64(10 * (i + 1))
			if err := rec(tx, c.uuid, c.name, tmOrigin, record.Clone, tmXen1, when, ""); err != nil {
				return err
			}
			if err := tx.PutVM(&lineage.VM{UUID: c.uuid, PoolUUID: tmPool, Name: c.name, ParentUUID: tmOrigin, ParentVia: "clone", Kind: lineage.KindVM,
				PowerState: "Halted", FirstSeen: at(when + 0.8), LastSeen: at(when + 0.8)}); err != nil {
				return err
			}
			if err := tx.SetState(c.uuid, "Halted", "", at(when+0.8)); err != nil {
				return err
			}
			if err := tx.SetAttrs(c.uuid, lineage.AttrName, []string{c.name}, at(when+0.8)); err != nil {
				return err
			}
			if err := tx.SetAttrs(c.uuid, lineage.AttrMAC, []string{c.mac}, at(when+0.8)); err != nil {
				return err
			}
		}
		for i, c := range tmClones { // starts at 60 s .. 100 s; the guest reports its IP
			when := float64(60 + 10*i)
			if err := rec(tx, c.uuid, c.name, "", record.Start, c.host, when, ""); err != nil {
				return err
			}
			if err := tx.PutVM(&lineage.VM{UUID: c.uuid, PoolUUID: tmPool, Name: c.name, Kind: lineage.KindVM, PowerState: "Running", HostUUID: c.host,
				FirstSeen: at(when), LastSeen: at(when + 0.8)}); err != nil {
				return err
			}
			if err := tx.SetState(c.uuid, "Running", c.host, at(when+0.8)); err != nil {
				return err
			}
			if err := tx.SetAttrs(c.uuid, lineage.AttrIP, []string{c.ip}, at(when+5)); err != nil {
				return err
			}
		}
		if err := rec(tx, tmOrigin, "origin", "", record.Destroy, tmXen1, 120, ""); err != nil {
			return err
		}
		if err := tx.MarkDestroyed(tmOrigin, at(120.8)); err != nil {
			return err
		}
		vm5 := tmClones[4]
		if err := rec(tx, vm5.uuid, vm5.name, "", record.Shutdown, vm5.host, 130, ""); err != nil {
			return err
		}
		if err := tx.PutVM(&lineage.VM{UUID: vm5.uuid, PoolUUID: tmPool, Name: vm5.name, Kind: lineage.KindVM, PowerState: "Halted",
			FirstSeen: at(130), LastSeen: at(130.8)}); err != nil {
			return err
		}
		if err := tx.SetState(vm5.uuid, "Halted", "", at(130.8)); err != nil {
			return err
		}
		return tx.SetAttrs(vm5.uuid, lineage.AttrIP, nil, at(130.8))
	})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// fakeAlerts is an AlertSource whose marks the test sets.
type fakeAlerts struct {
	mu sync.Mutex
	m  map[string]Mark
}

func (f *fakeAlerts) Marks(context.Context) (map[string]Mark, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]Mark, len(f.m))
	for k, v := range f.m {
		out[k] = v
	}
	return out, nil
}

func (f *fakeAlerts) set(m map[string]Mark) {
	f.mu.Lock()
	f.m = m
	f.mu.Unlock()
}

// threatMarks is what the detector pipeline says after vm1's alert: vm1
// alerted, its siblings through origin suspect (the paper's Table 3).
func threatMarks() map[string]Mark {
	m := map[string]Mark{tmClones[0].uuid: {Alerted: true, Score: 1, Reason: "IDS alert: C2 beacon from 10.1.0.11"}}
	for _, c := range tmClones[1:] {
		m[c.uuid] = Mark{Suspect: true, Score: 0.8, Reason: "sibling of alerted vm1 (clones of origin)"}
	}
	return m
}
