package main

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/plugins"
)

// tree: root (destroyed) → a → {a1, a2 (halted)}, root → b (suspended); a
// snapshot s of a1.
type fake struct {
	vms     []plugins.VM
	alerted map[string]bool
	mu      sync.Mutex // the detector asks two questions at once
	calls   []string
}

func (f *fake) call(n string) {
	f.mu.Lock()
	f.calls = append(f.calls, n)
	f.mu.Unlock()
}

func (f *fake) get(u string) *plugins.VM {
	for i := range f.vms {
		if f.vms[i].UUID == u {
			return &f.vms[i]
		}
	}
	return nil
}
func (f *fake) VM(_ context.Context, u string) (plugins.VM, error) {
	f.call("VM")
	if v := f.get(u); v != nil {
		return *v, nil
	}
	return plugins.VM{}, plugins.ErrNotFound
}
func (f *fake) Ancestors(context.Context, string) ([]plugins.VM, error) { panic("unused") }
func (f *fake) Descendants(context.Context, string) ([]plugins.VM, error) {
	panic("unused")
}
func (f *fake) Siblings(context.Context, string) ([]plugins.VM, error) { panic("unused") }
func (f *fake) Family(context.Context, string) ([]plugins.VM, error) {
	f.call("Family")
	return f.vms, nil
}
func (f *fake) StatesAt(_ context.Context, uu []string, _ time.Time) ([]plugins.VMState, error) {
	f.call("StatesAt")
	var out []plugins.VMState
	for _, u := range uu {
		v := f.get(u)
		out = append(out, plugins.VMState{UUID: u, PowerState: v.PowerState, Existed: !v.IsDestroyed()})
	}
	return out, nil
}
func (f *fake) Records(context.Context, plugins.RecordQuery) ([]record.Record, error) {
	return nil, nil
}
func (f *fake) AlertedVMs(_ context.Context, uu []string, _, _ time.Time) ([]plugins.AlertedVM, error) {
	f.call("AlertedVMs")
	var out []plugins.AlertedVM
	for _, u := range uu {
		if f.alerted[u] {
			out = append(out, plugins.AlertedVM{UUID: u, Count: 1})
		}
	}
	return out, nil
}

func newFake() *fake {
	return &fake{vms: []plugins.VM{
		{UUID: "root", Name: "root", PowerState: "Halted", Destroyed: time.Unix(100, 0)},
		{UUID: "a", Name: "a", ParentUUID: "root", PowerState: "Running"},
		{UUID: "b", Name: "b", ParentUUID: "root", PowerState: "Suspended"},
		{UUID: "a1", Name: "a1", ParentUUID: "a", PowerState: "Running"},
		{UUID: "a2", Name: "a2", ParentUUID: "a", PowerState: "Halted"},
		{UUID: "s", Name: "s", ParentUUID: "a1", PowerState: "Halted", Kind: "snapshot"},
	}, alerted: map[string]bool{}}
}

func enrich(t *testing.T, f *fake, cfg map[string]string, a *plugins.Alert) *plugins.Enrichment {
	t.Helper()
	d := &Detector{}
	if err := d.Configure(context.Background(), cfg, f); err != nil {
		t.Fatal(err)
	}
	e, err := d.Enrich(context.Background(), a)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func names(ss []plugins.Suspect) string {
	var n []string
	for _, s := range ss {
		n = append(n, s.VMName)
	}
	return strings.Join(n, ",")
}

func TestNearestCommonAncestorAndRanking(t *testing.T) {
	f := newFake()
	f.alerted["a1"], f.alerted["s"] = true, true
	a := &plugins.Alert{Time: time.Unix(1000, 0), VMs: []plugins.AlertVM{{UUID: "a1"}}}
	e := enrich(t, f, nil, a)
	// a1 and its snapshot s meet at a1: only a1's subtree, which has alerted entirely.
	if len(e.Suspects) != 0 || e.CommonAncestor == nil || e.CommonAncestor.UUID != "a1" {
		t.Fatalf("got %s, ancestor %+v", names(e.Suspects), e.CommonAncestor)
	}
	f.alerted = map[string]bool{"a1": true, "b": true}
	e = enrich(t, f, nil, a)
	// a1 and b meet at root; b alerted so it is no suspect. Halted first,
	// then the snapshot, the running VM, the destroyed root.
	if got := names(e.Suspects); got != "a2,s,a,root" {
		t.Fatalf("order %s", got)
	}
	if e.CommonAncestor.UUID != "root" || !strings.Contains(e.Suspects[0].Reason, "root (destroyed") {
		t.Fatalf("%+v %q", e.CommonAncestor, e.Suspects[0].Reason)
	}
	// Without the family sent along it asks Family, StatesAt and AlertedVMs.
	if c := strings.Join(f.calls, ","); !strings.HasPrefix(c, "Family,") || !strings.Contains(c, "StatesAt") || !strings.Contains(c, "AlertedVMs") {
		t.Fatalf("calls %v", f.calls)
	}
	// With it, only AlertedVMs.
	f.calls = nil
	a.Family = f.vms
	for _, v := range f.vms {
		a.FamilyStates = append(a.FamilyStates, plugins.VMState{UUID: v.UUID, PowerState: v.PowerState, Existed: !v.IsDestroyed()})
	}
	e2 := enrich(t, f, nil, a)
	if names(e2.Suspects) != names(e.Suspects) || strings.Join(f.calls, ",") != "AlertedVMs" {
		t.Fatalf("with family: %s, calls %v", names(e2.Suspects), f.calls)
	}
	// k=3: two alerted VMs are not enough.
	e = enrich(t, f, map[string]string{"k": "3"}, a)
	if len(e.Suspects) != 0 || len(e.Notes) != 1 {
		t.Fatalf("k=3: %s %q", names(e.Suspects), e.Notes)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []map[string]string{{"k": "0"}, {"k": "x"}, {"window": "-1h"}, {"window": "soon"}} {
		if err := (&Detector{}).Configure(context.Background(), cfg, newFake()); err == nil {
			t.Errorf("%v: want an error", cfg)
		}
	}
}
