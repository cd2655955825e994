package esbackend

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/vmlineage/vmlineage/agent/alerts/alertstest"
	"github.com/vmlineage/vmlineage/agent/lineage"
)

// The documents of the threat-model: the ancestor path, the family root,
// the states and the addresses over time are what the store says.
func TestBuildDoc(t *testing.T) {
	st := alertstest.ThreatModel(t)
	ctx := context.Background()
	h, err := st.VMHistory(ctx, alertstest.VMUUID["vm5"])
	if err != nil {
		t.Fatal(err)
	}
	d := BuildDoc(&h)
	if d.VM.Name != "vm5" || d.VM.PowerState != "Halted" || d.VM.ParentUUID != alertstest.Origin || d.VM.ParentVia != "clone" || d.VM.Destroyed {
		t.Errorf("vm: %+v", d.VM)
	}
	if d.Lineage.Root != alertstest.Origin || len(d.Lineage.Ancestors) != 1 || d.Lineage.Ancestors[0] != alertstest.Origin || d.Lineage.Depth != 1 {
		t.Errorf("lineage: %+v", d.Lineage)
	}
	// Halted (clone), Running on a3 (start), Halted (shutdown at 09:02:10), newest first.
	if len(d.States) != 3 || d.States[0].PowerState != "Halted" || d.States[0].From != "2024-03-01T09:02:10.000Z" || d.States[0].To != "" ||
		d.States[1].PowerState != "Running" || d.States[1].To != "2024-03-01T09:02:10.000Z" || !d.StatesComplete {
		t.Errorf("states: %+v", d.States)
	}
	var ip *DocAttr
	for i := range d.Attrs {
		if d.Attrs[i].Kind == "ip" {
			ip = &d.Attrs[i]
		}
	}
	if ip == nil || ip.Value != "10.1.0.15" || ip.From != "2024-03-01T09:01:45.000Z" || ip.To != "2024-03-01T09:02:10.000Z" {
		t.Errorf("ip held: %+v", ip)
	}
	// Back from JSON: the state at a time, as the store gives it.
	var back Doc
	if err := json.Unmarshal(d.Marshal(), &back); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		sec  int
		want string
	}{{55, "Halted"}, {105, "Running"}, {200, "Halted"}} {
		got, ok := back.stateAt(alertstest.At(c.sec))
		want, _ := st.StatesAtOf(ctx, []string{back.VM.UUID}, alertstest.At(c.sec))
		if !ok || got.PowerState != c.want || got.PowerState != want[0].PowerStateAt || got.Existed != want[0].ExistedAt {
			t.Errorf("state at +%ds: %+v (store: %+v)", c.sec, got, want[0])
		}
	}
	// The root is its own root, with no ancestors; destroyed shows.
	h, err = st.VMHistory(ctx, alertstest.Origin)
	if err != nil {
		t.Fatal(err)
	}
	d = BuildDoc(&h)
	if d.Lineage.Root != alertstest.Origin || len(d.Lineage.Ancestors) != 0 || !d.VM.Destroyed || d.VM.DestroyedAt != "2024-03-01T09:02:00.000Z" {
		t.Errorf("origin: %+v %+v", d.VM, d.Lineage)
	}
	vm := d.ToVM()
	if !vm.IsDestroyed() || !vm.Destroyed.Equal(alertstest.At(120)) {
		t.Errorf("origin as VM: %+v", vm)
	}
	if _, err := st.VMHistory(ctx, "00000000-dead-4000-8000-000000000000"); !errors.Is(err, lineage.ErrNotFound) {
		t.Errorf("unknown VM: %v", err)
	}
}
