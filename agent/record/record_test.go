package record

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

func sample() Record {
	t0 := time.Date(2024, 3, 1, 9, 0, 10, 0, time.UTC)
	return Record{ID: ID("pool-1", TaskShortID("OpaqueRef:8b8a1b91-4f63-4cd5-b59d-fa67df61a56c"), 0), PoolUUID: "pool-1",
		HostUUID: "h1", HostName: "xen1", VMUUID: "vm1", VMName: "vm1", ParentVMUUID: "origin", Activity: Clone, Operation: "clone",
		Start: t0, End: t0.Add(2500 * time.Millisecond), Result: Success, TaskUUID: "t1", TaskID: "8b8a1b914f63", Source: SourceXAPI}
}

func TestTaskShortIDMatchesLogs(t *testing.T) {
	// Real pair from vatesfr/xen-orchestra#4774: R:8b8a1b914f63 ↔ OpaqueRef:8b8a1b91-4f63-….
	if got := TaskShortID("OpaqueRef:8b8a1b91-4f63-4cd5-b59d-fa67df61a56c"); got != "8b8a1b914f63" {
		t.Fatalf("got %q", got)
	}
	if got := TaskShortID("DummyRef:|ff3d49a8-0f9b-4231-bd60-1e1d80457d1a|VM.set_is_a_template"); got != "ff3d49a80f9b" {
		t.Fatalf("dummy ref: got %q", got)
	}
	for _, bad := range []string{"", "OpaqueRef:NULL", "DummyRef:|x|y", "OpaqueRef:short"} {
		if got := TaskShortID(bad); got != "" {
			t.Errorf("TaskShortID(%q) = %q, want empty", bad, got)
		}
	}
}

func TestIDDeterministic(t *testing.T) {
	a, b := ID("p", "8b8a1b914f63", 0), ID("p", "8b8a1b914f63", 0)
	if a != b || len(a) != 32 {
		t.Fatalf("ids %q %q", a, b)
	}
	if a == ID("p2", "8b8a1b914f63", 0) || a == ID("p", "8b8a1b914f63", 1) || a == ID("p", "8b8a1b914f64", 0) {
		t.Fatal("ids must differ with pool, task and index")
	}
}

func TestJSONRoundTripAndSchema(t *testing.T) {
	b, err := os.ReadFile("../../schema/record.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource("record.schema.json", doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile("record.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	r := sample()
	js, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(js), `"start":"2024-03-01T09:00:10.000Z"`) || !strings.Contains(string(js), `"end":"2024-03-01T09:00:12.500Z"`) {
		t.Errorf("times must be RFC 3339 UTC with milliseconds: %s", js)
	}
	inst, _ := jsonschema.UnmarshalJSON(strings.NewReader(string(js)))
	if err := sch.Validate(inst); err != nil {
		t.Errorf("sample record does not fit the schema: %v", err)
	}
	var back Record
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	if back.Start != r.Start || back.End != r.End || back.ID != r.ID || back.Activity != r.Activity {
		t.Errorf("round trip changed the record: %+v", back)
	}
	// The schema rejects what the contract forbids.
	for name, mut := range map[string]func(m map[string]any){
		"unknown activity": func(m map[string]any) { m["activity"] = "teleport" },
		"other w/o op":     func(m map[string]any) { m["activity"] = "other"; delete(m, "operation") },
		"local time":       func(m map[string]any) { m["start"] = "2024-03-01T10:00:10+01:00" },
		"extra field":      func(m map[string]any) { m["colour"] = "red" },
	} {
		var m map[string]any
		json.Unmarshal(js, &m)
		mut(m)
		bad, _ := json.Marshal(m)
		inst, _ := jsonschema.UnmarshalJSON(strings.NewReader(string(bad)))
		if sch.Validate(inst) == nil {
			t.Errorf("%s: schema accepted %s", name, bad)
		}
	}
}

func TestValidate(t *testing.T) {
	r := sample()
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	r.Activity = "teleport"
	if err := r.Validate(); err == nil || !strings.Contains(err.Error(), "teleport") {
		t.Errorf("want an error naming the bad activity, got %v", err)
	}
	r = sample()
	r.End = r.Start.Add(-time.Second)
	if err := r.Validate(); err == nil {
		t.Error("end before start must be refused")
	}
}

func TestActivityOf(t *testing.T) {
	for op, want := range map[string]Activity{"clone": Clone, "hard_shutdown": Shutdown, "pool_migrate": Migrate,
		"make_into_template": ConvertToTemplate, "provision": Other, "brand_new_op": Other} {
		if a, ok := ActivityOf(op); !ok || a != want {
			t.Errorf("ActivityOf(%q) = %q,%v want %q", op, a, ok, want)
		}
	}
	if a, ok := ActivityOf("call_plugin"); !ok || a != Other {
		t.Error("every VM operation is recorded, unknown ones as other")
	}
	if c, m, a := SplitTaskName("Async.VM.clone"); c != "VM" || m != "clone" || !a {
		t.Errorf("SplitTaskName: %q %q %v", c, m, a)
	}
}
