package webui

import (
	"context"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/vmlineage/vmlineage/agent/lineage"
)

func newTestServer(t *testing.T, st *lineage.Store, opts Options) *httptest.Server {
	t.Helper()
	ts := httptest.NewServer(New(st, opts))
	t.Cleanup(ts.Close)
	return ts
}

// get fetches path and decodes the JSON answer into v, failing unless the
// status is want.
func get(t *testing.T, ts *httptest.Server, path, token string, want int, v any) {
	t.Helper()
	req, _ := http.NewRequest("GET", ts.URL+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("GET %s: status %d, want %d: %s", path, resp.StatusCode, want, body)
	}
	if v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("GET %s: %v in %s", path, err, body)
		}
	}
}

func TestAPITree(t *testing.T) {
	fa := &fakeAlerts{}
	ts := newTestServer(t, threatModelStore(t), Options{Alerts: fa})

	var pools []lineage.Pool
	get(t, ts, "/api/pools", "", 200, &pools)
	if len(pools) != 1 || pools[0].UUID != tmPool || pools[0].Name != "threat-model pool" {
		t.Fatalf("pools = %+v", pools)
	}
	var hosts []lineage.Host
	get(t, ts, "/api/hosts?pool="+tmPool, "", 200, &hosts)
	if len(hosts) != 3 || hosts[0].Name != "xen1" || hosts[2].Address != "10.0.0.3" {
		t.Fatalf("hosts = %+v", hosts)
	}

	var tr TreeResponse
	get(t, ts, "/api/tree?pool="+tmPool, "", 200, &tr)
	if len(tr.Nodes) != 6 {
		t.Fatalf("tree has %d nodes, want 6", len(tr.Nodes))
	}
	byName := map[string]Node{}
	for _, n := range tr.Nodes {
		byName[n.Name] = n
	}
	o := byName["origin"]
	if !o.Destroyed || o.DestroyedAt != "2024-03-01T09:02:00.800Z" || o.Parent != "" {
		t.Fatalf("origin = %+v, want destroyed at 09:02:00.800, no parent", o)
	}
	for _, c := range tmClones {
		n := byName[c.name]
		if n.UUID != c.uuid || n.Parent != tmOrigin || n.Via != "clone" || n.Destroyed || n.Marks != nil {
			t.Errorf("%s = %+v, want a live unmarked clone of origin", c.name, n)
		}
		wantPS, wantHost := "Running", tmHosts[c.host]
		if c.name == "vm5" {
			wantPS, wantHost = "Halted", ""
		}
		if n.PowerState != wantPS || n.Host != wantHost {
			t.Errorf("%s: %s on %q, want %s on %q", c.name, n.PowerState, n.Host, wantPS, wantHost)
		}
	}
	if tr.First != "2024-03-01T09:00:00.000Z" || tr.Last != "2024-03-01T09:02:10.800Z" {
		t.Errorf("time range %s .. %s", tr.First, tr.Last)
	}

	// Marks arrive: the tree and /api/marks carry them.
	fa.set(threatMarks())
	get(t, ts, "/api/tree?pool="+tmPool, "", 200, &tr)
	for _, n := range tr.Nodes {
		switch n.Name {
		case "vm1":
			if n.Marks == nil || !n.Marks.Alerted {
				t.Errorf("vm1 marks = %+v, want alerted", n.Marks)
			}
		case "vm5":
			if n.Marks == nil || !n.Marks.Suspect || n.Marks.Alerted || n.Marks.Reason == "" {
				t.Errorf("vm5 marks = %+v, want suspect with a reason", n.Marks)
			}
		case "origin":
			if n.Marks != nil {
				t.Errorf("origin marked %+v", n.Marks)
			}
		}
	}
	var marks map[string]Mark
	get(t, ts, "/api/marks", "", 200, &marks)
	if len(marks) != 5 || !marks[tmClones[4].uuid].Suspect {
		t.Errorf("marks = %+v", marks)
	}
}

func TestAPIVMTimeline(t *testing.T) {
	ts := newTestServer(t, threatModelStore(t), Options{})
	vm5 := tmClones[4]
	var d VMResponse
	get(t, ts, "/api/vm/"+vm5.uuid, "", 200, &d)
	var acts []string
	for _, e := range d.Timeline {
		acts = append(acts, string(e.Activity)+"/"+e.Role+"/"+e.HostName+"/"+string(e.Result))
		if e.Start.IsZero() || e.End.IsZero() || !e.End.After(e.Start) {
			t.Errorf("record %s: start %v end %v", e.ID, e.Start, e.End)
		}
	}
	want := []string{"clone/self/xen1/success", "start/self/xen3/success", "shutdown/self/xen3/success"}
	if !slices.Equal(acts, want) {
		t.Fatalf("vm5 timeline = %v, want %v", acts, want)
	}
	if len(d.Ancestors) != 1 || d.Ancestors[0].Name != "origin" || !d.Ancestors[0].Destroyed {
		t.Fatalf("vm5 ancestors = %+v, want [origin (destroyed)]", d.Ancestors)
	}
	var ips []string
	for _, a := range d.Attrs {
		if a.Kind == lineage.AttrMAC && a.To != "" {
			t.Errorf("vm5 MAC span closed: %+v", a)
		}
		if a.Kind == lineage.AttrIP {
			ips = append(ips, a.Value+"@"+a.From+"-"+a.To)
		}
	}
	if !slices.Equal(ips, []string{"10.1.0.15@2024-03-01T09:01:45.000Z-2024-03-01T09:02:10.800Z"}) {
		t.Errorf("vm5 IPs = %v", ips)
	}

	// origin: the five clones it was the source of, then its destruction.
	get(t, ts, "/api/vm/"+tmOrigin, "", 200, &d)
	acts = acts[:0]
	for _, e := range d.Timeline {
		acts = append(acts, string(e.Activity)+"/"+e.Role)
	}
	want = []string{"clone/parent", "clone/parent", "clone/parent", "clone/parent", "clone/parent", "destroy/self"}
	if !slices.Equal(acts, want) {
		t.Fatalf("origin timeline = %v, want %v", acts, want)
	}
	if len(d.Children) != 5 || len(d.Ancestors) != 0 {
		t.Fatalf("origin: %d children, %d ancestors", len(d.Children), len(d.Ancestors))
	}

	get(t, ts, "/api/vm/99999999-0000-4000-8000-000000000009", "", 404, nil)
	get(t, ts, "/api/nothing", "", 404, nil)
}

func TestAPIPoolAt(t *testing.T) {
	ts := newTestServer(t, threatModelStore(t), Options{})
	pool := func(when string) AtResponse {
		var r AtResponse
		get(t, ts, "/api/at?pool="+tmPool+"&t="+url.QueryEscape(when), "", 200, &r)
		return r
	}
	layout := func(r AtResponse) string {
		var parts []string
		for _, h := range r.Hosts {
			var vms []string
			for _, v := range h.VMs {
				vms = append(vms, v.Name+":"+v.PowerState)
			}
			parts = append(parts, h.Name+"["+strings.Join(vms, ",")+"]")
		}
		var un []string
		for _, v := range r.Unplaced {
			un = append(un, v.Name+":"+v.PowerState)
		}
		return strings.Join(parts, " ") + " off[" + strings.Join(un, ",") + "]"
	}
	cases := []struct{ when, want string }{
		// Before the clones: only origin, halted.
		{"2024-03-01T09:00:05Z", "xen1[] xen2[] xen3[] off[origin:Halted]"},
		// All five cloned, none started (a datetime-local value, taken as UTC).
		{"2024-03-01T09:00:55", "xen1[] xen2[] xen3[] off[origin:Halted,vm1:Halted,vm2:Halted,vm3:Halted,vm4:Halted,vm5:Halted]"},
		// All running, origin still there (Unix milliseconds).
		{"1709283705000", "xen1[vm1:Running] xen2[vm2:Running,vm4:Running] xen3[vm3:Running,vm5:Running] off[origin:Halted]"},
		// The end: origin gone, vm5 halted.
		{"2024-03-01T09:05:00Z", "xen1[vm1:Running] xen2[vm2:Running,vm4:Running] xen3[vm3:Running] off[vm5:Halted]"},
	}
	for _, c := range cases {
		if got := layout(pool(c.when)); got != c.want {
			t.Errorf("pool at %s:\n got %s\nwant %s", c.when, got, c.want)
		}
	}
	if r := pool("2024-03-01T09:00:05Z"); !slices.Equal(r.Exists, []string{tmOrigin}) {
		t.Errorf("exists before the clones = %v", r.Exists)
	}
	get(t, ts, "/api/at?t=yesterday", "", 400, nil)
}

func TestAPISearch(t *testing.T) {
	ts := newTestServer(t, threatModelStore(t), Options{})
	search := func(q string) []SearchHit {
		var hits []SearchHit
		get(t, ts, "/api/search?q="+url.QueryEscape(q), "", 200, &hits)
		return hits
	}
	first := func(q string) string {
		h := search(q)
		if len(h) == 0 {
			return "none"
		}
		return h[0].Name + "/" + h[0].Match
	}
	cases := map[string]string{
		"vm3":                                  "vm3/name",
		"ORIGIN":                               "origin/name",
		"10.1.0.15":                            "vm5/ip", // vm5 no longer holds it: IPs at any time
		"10.1.0.10":                            "origin/ip",
		"55555555":                             "vm5/uuid",
		"0e1e2e3e-0000-4000-8000-00000000000a": "origin/uuid",
		"02:16:3e:00:00:04":                    "vm4/mac",
		"nosuchvm":                             "none",
		`%_\`:                                  "none",
	}
	for q, want := range cases {
		if got := first(q); got != want {
			t.Errorf("search %q: first hit %s, want %s", q, got, want)
		}
	}
	h := search("10.1.0.15")
	if h[0].From != "2024-03-01T09:01:45.000Z" || h[0].To != "2024-03-01T09:02:10.800Z" {
		t.Errorf("vm5 held 10.1.0.15 %s .. %s", h[0].From, h[0].To)
	}
	if n := len(search("10.1.0.1")); n != 6 {
		t.Errorf("prefix 10.1.0.1 matched %d VMs, want 6", n)
	}
	if n := len(search("vm")); n != 5 {
		t.Errorf("\"vm\" matched %d VMs, want 5", n)
	}
}

func TestParseTime(t *testing.T) {
	for in, want := range map[string]string{
		"2024-03-01T09:00:05Z":      "2024-03-01T09:00:05Z",
		"2024-03-01T10:00:05+01:00": "2024-03-01T09:00:05Z",
		"2024-03-01T09:00":          "2024-03-01T09:00:00Z",
		"2024-03-01 09:00:05":       "2024-03-01T09:00:05Z",
		"1709283605000":             "2024-03-01T09:00:05Z",
	} {
		got, err := ParseTime(in)
		if err != nil || got.Format("2006-01-02T15:04:05Z07:00") != want {
			t.Errorf("ParseTime(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	for _, bad := range []string{"yesterday", "2024-13-01", "99999999999999999999", "12:00"} {
		if _, err := ParseTime(bad); err == nil {
			t.Errorf("ParseTime(%q) accepted", bad)
		}
	}
}

// TestStateAtMatchesLineage: the endpoint's own read of the pool at a time
// agrees with lineage.Store.StateAt, renames included.
func TestStateAtMatchesLineage(t *testing.T) {
	st := threatModelStore(t)
	err := st.Update(context.Background(), func(tx *lineage.Tx) error {
		if err := tx.SetAttrs(tmClones[2].uuid, lineage.AttrName, []string{"db-primary"}, at(110)); err != nil {
			return err
		}
		return tx.PutVM(&lineage.VM{UUID: tmClones[2].uuid, PoolUUID: tmPool, Name: "db-primary", Kind: lineage.KindVM,
			PowerState: "Running", HostUUID: tmXen3, FirstSeen: at(110), LastSeen: at(110)})
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := New(st, Options{})
	for _, sec := range []float64{-1, 0, 5, 10.8, 30, 55, 60.8, 100.8, 105, 110, 120.8, 125, 130.8, 400} {
		when := at(sec)
		want, err := st.StateAt(context.Background(), tmPool, when)
		if err != nil {
			t.Fatal(err)
		}
		got, err := srv.stateAt(context.Background(), tmPool, when)
		if err != nil {
			t.Fatal(err)
		}
		w := map[string]string{}
		for _, s := range want {
			w[s.VM.UUID] = s.VM.Name + "/" + s.VM.Kind + "/" + s.PowerState + "/" + s.HostUUID
		}
		g := map[string]string{}
		for _, s := range got {
			g[s.UUID] = s.Name + "/" + s.Kind + "/" + s.PowerState + "/" + s.HostUUID
		}
		if !maps.Equal(g, w) {
			t.Errorf("at +%vs:\n got %v\nwant %v", sec, g, w)
		}
	}
	var r AtResponse
	ts := newTestServer(t, st, Options{})
	get(t, ts, "/api/at?t=2024-03-01T09:01:45Z", "", 200, &r)
	get(t, ts, "/api/at?t=2024-03-01T09:01:45Z", "", 200, &r)
	if r.Hosts[2].Name != "xen3" || len(r.Hosts[2].VMs) != 2 || r.Hosts[2].VMs[0].Name != "vm3" {
		t.Errorf("xen3 at 09:01:45 (before the rename) = %+v", r.Hosts[2])
	}
	get(t, ts, "/api/at?t=2024-03-01T09:01:55Z", "", 200, &r)
	if r.Hosts[2].VMs[0].Name != "db-primary" {
		t.Errorf("xen3 at 09:01:55 (after the rename) = %+v", r.Hosts[2])
	}
	var hits []SearchHit
	get(t, ts, "/api/search?q=vm3", "", 200, &hits)
	if len(hits) != 1 || hits[0].Name != "db-primary" || hits[0].Match != "former name" {
		t.Errorf("search for the former name vm3 = %+v", hits)
	}
}
