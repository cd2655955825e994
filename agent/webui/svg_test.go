package webui

import (
	"bytes"
	"context"
	"encoding/xml"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmlineage/vmlineage/agent/lineage"
)

var update = flag.Bool("update", false, "rewrite golden files")

// svgNode is a VM group read back from RenderSVG's output.
type svgNode struct {
	ID    string
	Class []string
	Title string
	Texts []string
	Edge  string
	Halo  bool
}

// parseSVG checks the document is well-formed XML and returns its VM groups.
func parseSVG(t testing.TB, b []byte) []svgNode {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(b))
	var out []svgNode
	var cur *svgNode
	depth, nodeDepth := 0, -1
	var inTitle, inText bool
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v", err)
		}
		switch e := tok.(type) {
		case xml.StartElement:
			depth++
			attr := func(name string) string {
				for _, a := range e.Attr {
					if a.Name.Local == name {
						return a.Value
					}
				}
				return ""
			}
			switch {
			case e.Name.Local == "g" && strings.HasPrefix(attr("id"), "vm-"):
				out = append(out, svgNode{ID: strings.TrimPrefix(attr("id"), "vm-"), Class: strings.Fields(attr("class"))})
				cur, nodeDepth = &out[len(out)-1], depth
			case cur != nil && e.Name.Local == "title":
				inTitle = true
			case cur != nil && e.Name.Local == "text" && depth == nodeDepth+1:
				inText = true
				cur.Texts = append(cur.Texts, "")
			case cur != nil && e.Name.Local == "path":
				cur.Edge = attr("d")
			case cur != nil && e.Name.Local == "rect" && attr("class") == "halo":
				cur.Halo = true
			}
		case xml.EndElement:
			if depth == nodeDepth {
				cur, nodeDepth = nil, -1
			}
			if e.Name.Local == "title" {
				inTitle = false
			}
			if e.Name.Local == "text" && cur != nil && depth == nodeDepth+1 {
				inText = false
			}
			depth--
		case xml.CharData:
			if cur != nil && inTitle {
				cur.Title += string(e)
			} else if cur != nil && inText {
				cur.Texts[len(cur.Texts)-1] += string(e)
			}
		}
	}
	return out
}

func has(cls []string, c string) bool {
	for _, x := range cls {
		if x == c {
			return true
		}
	}
	return false
}

func TestRenderSVGThreatModel(t *testing.T) {
	st := threatModelStore(t)
	vms, err := st.VMs(context.Background(), tmPool)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := RenderSVG(&buf, vms, &SVGOptions{Marks: threatMarks(), HostNames: tmHosts, Title: "threat-model pool"}); err != nil {
		t.Fatal(err)
	}
	nodes := parseSVG(t, buf.Bytes())
	if len(nodes) != 6 {
		t.Fatalf("%d VM groups, want 6", len(nodes))
	}
	byID := map[string]svgNode{}
	for _, n := range nodes {
		byID[n.ID] = n
	}
	o := byID[tmOrigin]
	if !has(o.Class, "destroyed") || o.Edge != "" || o.Texts[0] != "origin" || !strings.Contains(o.Texts[1], "destroyed") {
		t.Errorf("origin = %+v, want a destroyed root", o)
	}
	if !strings.Contains(o.Title, "destroyed 2024-03-01T09:02:00.800Z") || !strings.Contains(o.Title, tmOrigin) {
		t.Errorf("origin tooltip %q", o.Title)
	}
	for _, c := range tmClones {
		n := byID[c.uuid]
		if n.Edge == "" || !has(n.Class, "via-clone") || has(n.Class, "destroyed") || n.Texts[0] != c.name {
			t.Errorf("%s = %+v, want a clone with an edge from origin", c.name, n)
		}
	}
	if n := byID[tmClones[4].uuid]; !has(n.Class, "suspect") || !n.Halo || !has(n.Class, "ps-halted") || !strings.Contains(n.Title, "SUSPECT sibling") {
		t.Errorf("vm5 = %+v, want halted and suspect", n)
	}
	if n := byID[tmClones[0].uuid]; !has(n.Class, "alerted") || !has(n.Class, "ps-running") || !strings.Contains(n.Texts[1], "running on xen1") {
		t.Errorf("vm1 = %+v, want alerted, running on xen1", n)
	}
	for _, want := range []string{">running</text>", ">destroyed</text>", ">template</text>", ">snapshot</text>", ">suspect</text>", ">alerted</text>"} {
		if !bytes.Contains(buf.Bytes(), []byte(want)) {
			t.Errorf("legend lacks %s", want)
		}
	}
	for _, bad := range []string{"<script", "href=\"http", "xlink:href"} {
		if bytes.Contains(buf.Bytes(), []byte(bad)) {
			t.Errorf("SVG contains %s", bad)
		}
	}
	golden := filepath.Join("testdata", "threat-model.svg")
	if *update {
		if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./agent/webui -run TestRenderSVG -args -update to create it)", err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("SVG differs from %s (if intended: go test ./agent/webui -run TestRenderSVG -args -update)", golden)
	}
}

// TestRenderSVGShapes: kinds, a deep chain, a parent cycle and hostile
// names all render into well-formed XML, and every VM is drawn once.
func TestRenderSVGShapes(t *testing.T) {
	vms := []lineage.VM{
		{UUID: "t", Name: "golden <image> & \"co\"", Kind: lineage.KindTemplate, PowerState: "Halted"},
		{UUID: "s", Name: "snap\x00\x1b]0;evil\a", Kind: lineage.KindSnapshot, ParentUUID: "t", ParentVia: "snapshot", PowerState: "Halted"},
		{UUID: "a", Name: "a", Kind: lineage.KindVM, ParentUUID: "b", ParentVia: "clone\" onload=\"x"}, // a cycle a <-> b
		{UUID: "b", Name: "b", Kind: "weird kind!", ParentUUID: "a", PowerState: "Paused"},
	}
	prev := "t"
	for i := 0; i < 300; i++ { // a 300-generation chain
		u := "chain-" + string(rune('a'+i%26)) + strings.Repeat("x", i/26)
		vms = append(vms, lineage.VM{UUID: u, Name: u, Kind: lineage.KindVM, ParentUUID: prev, ParentVia: "copy", PowerState: "Running"})
		prev = u
	}
	var buf bytes.Buffer
	if err := RenderSVG(&buf, vms, nil); err != nil {
		t.Fatal(err)
	}
	nodes := parseSVG(t, buf.Bytes())
	if len(nodes) != len(vms) {
		t.Fatalf("%d VM groups, want %d", len(nodes), len(vms))
	}
	for _, n := range nodes {
		if n.ID == "t" && (!has(n.Class, "k-template") || n.Texts[0] != "golden <image> & \"co\"") {
			t.Errorf("template = %+v", n)
		}
		if n.ID == "s" && (!has(n.Class, "k-snapshot") || !has(n.Class, "via-snapshot") || strings.ContainsAny(n.Texts[0], "\x00\x1b\a")) {
			t.Errorf("snapshot = %+v", n)
		}
		if n.ID == "b" && !has(n.Class, "k-weirdkind") {
			t.Errorf("odd kind not sanitised: %v", n.Class)
		}
		if n.ID == "a" && !has(n.Class, "via-cloneonloadx") {
			t.Errorf("odd via not sanitised: %v", n.Class)
		}
	}
	if bytes.Contains(buf.Bytes(), []byte(`onload="x`)) {
		t.Error("attribute injection through parent_via")
	}
}
