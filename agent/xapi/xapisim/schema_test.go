package xapisim

import (
	"bytes"
	"encoding/json"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// TestSchemaMatchesTypes keeps scenario.schema.json and the Go types in
// step: every JSON field of the types is in the schema and vice versa.
func TestSchemaMatchesTypes(t *testing.T) {
	var s struct {
		Properties map[string]struct {
			Properties map[string]any `json:"properties"`
			Items      struct {
				Properties map[string]any `json:"properties"`
			} `json:"items"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(Schema(), &s); err != nil {
		t.Fatal(err)
	}
	check := func(what string, typ reflect.Type, props map[string]any) {
		var fromType, fromSchema []string
		for i := 0; i < typ.NumField(); i++ {
			if tag := typ.Field(i).Tag.Get("json"); tag != "" {
				fromType = append(fromType, strings.Split(tag, ",")[0])
			}
		}
		for k := range props {
			fromSchema = append(fromSchema, k)
		}
		sort.Strings(fromType)
		sort.Strings(fromSchema)
		if !reflect.DeepEqual(fromType, fromSchema) {
			t.Errorf("%s: type %v, schema %v", what, fromType, fromSchema)
		}
	}
	top := map[string]any{}
	for k := range s.Properties {
		top[k] = true
	}
	check("scenario", reflect.TypeOf(Scenario{}), top)
	check("pool", reflect.TypeOf(PoolSpec{}), s.Properties["pool"].Properties)
	check("hosts", reflect.TypeOf(HostSpec{}), s.Properties["hosts"].Items.Properties)
	check("vms", reflect.TypeOf(VMSpec{}), s.Properties["vms"].Items.Properties)
	check("steps", reflect.TypeOf(Step{}), s.Properties["steps"].Items.Properties)
	check("users", reflect.TypeOf(UserSpec{}), s.Properties["users"].Items.Properties)
}

func TestLoadScenarioErrorsNameTheProblem(t *testing.T) {
	for in, want := range map[string]string{
		`{"hosts":[{"name":"h"}]}`: "missing name",
		`{"name":"x"}`:             "no hosts",
		`{"name":"x","hosts":[{"name":"h"}],"vms":[{"name":"v","power_state":"On"}]}`:         `bad power_state "On"`,
		`{"name":"x","hosts":[{"name":"h"}],"steps":[{"op":"start"}]}`:                        "op start needs vm",
		`{"name":"x","hosts":[{"name":"h"}],"steps":[{"fault":"boom"}]}`:                      `unknown fault "boom"`,
		`{"name":"x","hosts":[{"name":"h"}],"steps":[{"op":"x","vm":"v","at":"soon"}]}`:       `bad duration "soon"`,
		`{"name":"x","hosts":[{"name":"h"}],"bogus":1}`:                                       `unknown field "bogus"`,
		`{"name":"x","hosts":[{"name":"h"}],"users":[{"name":"a"},{"name":"a"}]}`:             `user "a" twice`,
		`{"name":"x","hosts":[{"name":"h"}],"users":[{"name":"a","role":"god"}]}`:             `unknown role "god"`,
		`{"name":"x","hosts":[{"name":"h"}],"steps":[{"op":"start","vm":"v","user":"z"}]}`:    `unknown user "z"`,
		`{"name":"x","hosts":[{"name":"h"}],"steps":[{"op":"start","vm":"v","denied":true}]}`: "local superuser",
	} {
		_, err := LoadScenario(strings.NewReader(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want %q", in, err, want)
		}
	}
}

// TestShippedScenariosFitTheSchema validates every shipped scenario against
// scenario.schema.json with a JSON Schema validator.
func TestShippedScenariosFitTheSchema(t *testing.T) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(Schema()))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource("scenario.schema.json", doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile("scenario.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range BuiltinNames() {
		b, err := builtinFS.ReadFile("scenarios/" + n + ".json")
		if err != nil {
			t.Fatal(err)
		}
		inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if err := sch.Validate(inst); err != nil {
			t.Errorf("%s: %v", n, err)
		}
	}
}
