package kibana

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/formats"
	"github.com/vmlineage/vmlineage/formats/ecs"
)

var update = flag.Bool("update", false, "rewrite vmlineage.ndjson from Objects")

// TestGenerate keeps vmlineage.ndjson equal to what Objects describes.
func TestGenerate(t *testing.T) {
	want := Marshal(Objects())
	if *update {
		if err := os.WriteFile("vmlineage.ndjson", want, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if !bytes.Equal(NDJSON, want) {
		t.Fatal("vmlineage.ndjson is stale: run `go generate ./packaging/kibana`")
	}
}

type raw struct {
	Type       string          `json:"type"`
	ID         string          `json:"id"`
	Attributes map[string]any  `json:"attributes"`
	References []Reference     `json:"references"`
	Extra      json.RawMessage `json:"-"`
}

func parseBundle(t *testing.T) []raw {
	t.Helper()
	var out []raw
	sc := bufio.NewScanner(bytes.NewReader(NDJSON))
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Bytes()
		var o raw
		d := json.NewDecoder(bytes.NewReader(line))
		if err := d.Decode(&o); err != nil {
			t.Fatalf("line %d: %v", n, err)
		}
		if o.Type == "" || o.ID == "" || o.Attributes == nil || o.References == nil {
			t.Fatalf("line %d: type, id, attributes and references are required: %s", n, line)
		}
		out = append(out, o)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// legacyJSON lists the attributes Kibana stores as JSON-encoded strings.
var legacyJSON = []string{"visState", "uiStateJSON", "panelsJSON", "optionsJSON", "kibanaSavedObjectMeta.searchSourceJSON"}

func attr(o raw, name string) (any, bool) {
	var cur any = o.Attributes
	for _, k := range strings.Split(name, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[k]; !ok {
			return nil, false
		}
	}
	return cur, true
}

func decoded(t *testing.T, o raw, name string) (map[string]any, []any) {
	t.Helper()
	v, ok := attr(o, name)
	if !ok {
		return nil, nil
	}
	s, ok := v.(string)
	if !ok {
		t.Fatalf("%s %s: %s must be a JSON string, is %T", o.Type, o.ID, name, v)
	}
	var x any
	if err := json.Unmarshal([]byte(s), &x); err != nil {
		t.Fatalf("%s %s: %s does not parse: %v", o.Type, o.ID, name, err)
	}
	switch x := x.(type) {
	case map[string]any:
		return x, nil
	case []any:
		return nil, x
	}
	t.Fatalf("%s %s: %s is neither object nor array", o.Type, o.ID, name)
	return nil, nil
}

func TestStructure(t *testing.T) {
	objs := parseBundle(t)
	known := map[string]bool{"index-pattern": true, "visualization": true, "search": true, "dashboard": true}
	byKey := map[string]raw{}
	for _, o := range objs {
		if !known[o.Type] {
			t.Errorf("unknown type %q", o.Type)
		}
		k := o.Type + "/" + o.ID
		if _, dup := byKey[k]; dup {
			t.Errorf("duplicate object %s", k)
		}
		byKey[k] = o
		if title, _ := o.Attributes["title"].(string); title == "" {
			t.Errorf("%s has no title", k)
		}
	}
	dashboards := 0
	for _, o := range objs {
		names := map[string]bool{}
		for _, r := range o.References {
			if _, ok := byKey[r.Type+"/"+r.ID]; !ok {
				t.Errorf("%s %s: reference %s -> %s/%s does not resolve inside the bundle", o.Type, o.ID, r.Name, r.Type, r.ID)
			}
			names[r.Name] = true
		}
		used := map[string]bool{}
		for _, name := range legacyJSON {
			m, arr := decoded(t, o, name)
			if m != nil {
				if ref, ok := m["indexRefName"].(string); ok {
					used[ref] = true
				}
			}
			for _, p := range arr {
				pm, _ := p.(map[string]any)
				ref, _ := pm["panelRefName"].(string)
				if ref == "" {
					t.Errorf("dashboard %s: panel without panelRefName: %v", o.ID, pm)
				}
				used[ref] = true
			}
		}
		for n := range used {
			if !names[n] {
				t.Errorf("%s %s: %q is used but not among its references", o.Type, o.ID, n)
			}
		}
		for n := range names {
			if !used[n] {
				t.Errorf("%s %s: reference %q is never used", o.Type, o.ID, n)
			}
		}
		switch o.Type {
		case "index-pattern":
			title := o.Attributes["title"].(string)
			if ok, _ := path.Match(title, "logs-"+formats.Dataset+"-default"); !ok {
				t.Errorf("data view %q does not match the data stream", title)
			}
			if o.Attributes["timeFieldName"] != "@timestamp" {
				t.Errorf("data view time field = %v", o.Attributes["timeFieldName"])
			}
		case "visualization":
			if vs, _ := decoded(t, o, "visState"); vs["type"] == nil || vs["aggs"] == nil {
				t.Errorf("visualization %s: visState lacks type or aggs", o.ID)
			}
		case "dashboard":
			dashboards++
			_, panels := decoded(t, o, "panelsJSON")
			if len(panels) != len(o.References) {
				t.Errorf("dashboard %s: %d panels, %d references", o.ID, len(panels), len(o.References))
			}
		}
	}
	if dashboards != 1 {
		t.Errorf("%d dashboards, want 1", dashboards)
	}
}

// kqlField finds the field names of simple KQL queries ("field:value").
var kqlField = regexp.MustCompile(`([A-Za-z_@][A-Za-z0-9_.@]*)\s*:`)

// referencedFields lists every field a visualization or search names.
func referencedFields(t *testing.T, objs []raw) map[string]string {
	fields := map[string]string{}
	add := func(f, where string) {
		if f != "" {
			fields[f] = where
		}
	}
	for _, o := range objs {
		where := o.Type + " " + o.ID
		if ss, _ := decoded(t, o, "kibanaSavedObjectMeta.searchSourceJSON"); ss != nil {
			q, _ := ss["query"].(map[string]any)
			qs, _ := q["query"].(string)
			for _, m := range kqlField.FindAllStringSubmatch(qs, -1) {
				add(m[1], where+" query")
			}
		}
		if vs, _ := decoded(t, o, "visState"); vs != nil {
			aggs, _ := vs["aggs"].([]any)
			for _, a := range aggs {
				am, _ := a.(map[string]any)
				p, _ := am["params"].(map[string]any)
				f, _ := p["field"].(string)
				add(f, where+" agg")
			}
		}
		if o.Type == "index-pattern" {
			add(o.Attributes["timeFieldName"].(string), where)
		}
		if cols, ok := o.Attributes["columns"].([]any); ok {
			for _, c := range cols {
				add(c.(string), where+" column")
			}
		}
		if srt, ok := o.Attributes["sort"].([]any); ok {
			for _, s := range srt {
				add(s.([]any)[0].(string), where+" sort")
			}
		}
	}
	return fields
}

func flatten(prefix string, v any, out map[string]bool) {
	m, ok := v.(map[string]any)
	if !ok {
		out[prefix] = true
		return
	}
	for k, x := range m {
		p := k
		if prefix != "" {
			p = prefix + "." + k
		}
		flatten(p, x, out)
	}
}

// TestFieldsExistInECSDocuments: every field the dashboards use is one the
// ECS encoder writes.
func TestFieldsExistInECSDocuments(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	base := record.Record{ID: "id1", PoolUUID: "pool", HostUUID: "h", HostName: "xen1", VMUUID: "vm1", VMName: "web-01",
		ParentVMUUID: "vm0", Activity: record.Clone, Start: t0, End: t0.Add(time.Second), Result: record.Success,
		TaskUUID: "t", Source: record.SourceXAPI}
	ctx := formats.Context{PoolName: "p", ParentName: "base", FamilyRoot: "vm0", AncestorPath: []string{"vm0"},
		ActorName: "alice", VMKind: formats.KindVM}
	failed := base
	failed.Result, failed.Error = record.Failure, "VM_BAD_POWER_STATE: x"
	have := map[string]bool{}
	for _, r := range []record.Record{base, failed} {
		var doc map[string]any
		if err := json.Unmarshal(ecs.AppendRecord(nil, &r, &ctx), &doc); err != nil {
			t.Fatal(err)
		}
		flatten("", doc, have)
	}
	fields := referencedFields(t, parseBundle(t))
	var names []string
	for f := range fields {
		names = append(names, f)
	}
	sort.Strings(names)
	if len(names) < 8 {
		t.Fatalf("only %d fields found in the bundle: %v", len(names), names)
	}
	for _, f := range names {
		if !have[f] {
			t.Errorf("%s uses field %s, which the ECS encoder never writes", fields[f], f)
		}
	}
	t.Logf("fields used: %s", strings.Join(names, ", "))
}
