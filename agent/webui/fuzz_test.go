package webui

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/lineage"
)

// FuzzParseTime: the t parameter never panics, and what it accepts is a
// real time.
func FuzzParseTime(f *testing.F) {
	for _, s := range []string{"2024-03-01T09:00:05Z", "2024-03-01T09:00", "1709283605000", "now", "", "2024-03-01 09:00:05",
		"2024-03-01T10:00:05+01:00", "9999999999999999", "0001-01-01T00:00:00Z", "2024-02-30"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tm, err := ParseTime(s)
		if err != nil {
			return
		}
		if tm.Location() != time.UTC {
			t.Errorf("ParseTime(%q) not UTC: %v", s, tm)
		}
	})
}

// FuzzAPIQuery: whatever a client sends as t, q, pool or VM uuid, the API
// answers 200, 400 or 404 — never a 500 or a panic.
func FuzzAPIQuery(f *testing.F) {
	st := threatModelStore(f)
	h := New(st, Options{Alerts: &fakeAlerts{m: threatMarks()}})
	f.Add("2024-03-01T09:00:05Z", "10.1.0.15", tmPool, tmOrigin)
	f.Add("garbage", "%_\\'\"", "", "../../etc/passwd")
	f.Add("", "vm", "x", "")
	f.Fuzz(func(t *testing.T, tq, q, pool, vm string) {
		for _, path := range []string{
			"/api/at?t=" + url.QueryEscape(tq) + "&pool=" + url.QueryEscape(pool),
			"/api/search?q=" + url.QueryEscape(q) + "&pool=" + url.QueryEscape(pool),
			"/api/tree?pool=" + url.QueryEscape(pool),
			"/api/vm/" + url.PathEscape(vm),
		} {
			req, err := http.NewRequest("GET", "http://127.0.0.1"+path, nil)
			if err != nil {
				continue
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			switch rec.Code {
			case 200, 400, 404, 301, 307, 308, 405:
			default:
				t.Errorf("GET %s: %d %s", path, rec.Code, rec.Body.String())
			}
		}
	})
}

// FuzzRenderSVG: VM names, kinds, states and edges from the store (which
// come from XAPI, i.e. from whoever can name a VM) always give well-formed
// XML with every VM drawn.
func FuzzRenderSVG(f *testing.F) {
	f.Add("origin", "vm", "Halted", "clone", "vm1", true)
	f.Add("<script>&", "snapshot", "Running\"", "x\" y=\"", "\x00\xff\xfe", false)
	f.Add("", "", "", "", "", true)
	f.Fuzz(func(t *testing.T, name, kind, ps, via, name2 string, cyc bool) {
		vms := []lineage.VM{
			{UUID: "p", Name: name, Kind: kind, PowerState: ps, HostUUID: name2},
			{UUID: "c" + name2, Name: name2, Kind: kind, PowerState: ps, ParentUUID: "p", ParentVia: via},
		}
		if cyc {
			vms[0].ParentUUID = vms[1].UUID
		}
		var buf bytes.Buffer
		if err := RenderSVG(&buf, vms, &SVGOptions{Title: name, HostNames: map[string]string{name2: name},
			Marks: map[string]Mark{"p": {Suspect: true, Reason: name2}}}); err != nil {
			t.Fatal(err)
		}
		if n := len(parseSVG(t, buf.Bytes())); n != 2 {
			t.Fatalf("%d VM groups drawn, want 2", n)
		}
	})
}
