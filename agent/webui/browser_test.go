package webui

import (
	"context"
	"fmt"
	"math/rand"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"

	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/internal/browsertest"
)

// artifactDir is where screenshots go: $VMLINEAGE_ARTIFACTS, else
// testdata/artifacts (git-ignored).
func artifactDir(tb testing.TB) string {
	d := os.Getenv("VMLINEAGE_ARTIFACTS")
	if d == "" {
		d = filepath.Join("testdata", "artifacts")
	}
	if err := os.MkdirAll(d, 0o755); err != nil {
		tb.Fatal(err)
	}
	return d
}

func screenshot(tb testing.TB, ctx context.Context, name string) {
	tb.Helper()
	var png []byte
	if err := chromedp.Run(ctx, chromedp.CaptureScreenshot(&png)); err != nil {
		tb.Fatalf("screenshot %s: %v", name, err)
	}
	p := filepath.Join(artifactDir(tb), name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		tb.Fatal(err)
	}
	tb.Logf("screenshot: %s", p)
}

// nodeInfo is what the test reads back from the drawn tree.
type nodeInfo struct {
	Name    string `json:"name"`
	UUID    string `json:"uuid"`
	Parent  string `json:"parent"`
	Class   string `json:"cls"`
	Sub     string `json:"sub"`
	Shown   bool   `json:"shown"`
	HasEdge bool   `json:"edge"`
}

const readNodes = `Array.from(document.querySelectorAll('#tree g.node')).map(g => {
  const n = window.vmlineage.nodes[+g.dataset.i];
  const r = g.getBoundingClientRect();
  return {name: g.querySelector('.name').textContent, uuid: n.uuid, parent: n.parent || '', cls: g.getAttribute('class'),
    sub: g.querySelector('.sub').textContent, shown: getComputedStyle(g).display !== 'none' && r.width > 0,
    edge: !!g.querySelector('path.edge')};
})`

func nodesByName(tb testing.TB, ctx context.Context) map[string]nodeInfo {
	tb.Helper()
	var ns []nodeInfo
	if err := chromedp.Run(ctx, chromedp.Evaluate(readNodes, &ns)); err != nil {
		tb.Fatal(err)
	}
	m := map[string]nodeInfo{}
	for _, n := range ns {
		m[n.Name] = n
	}
	return m
}

func hasClass(n nodeInfo, c string) bool { return slices.Contains(strings.Fields(n.Class), c) }

func TestBrowserThreatModel(t *testing.T) {
	ctx, cancel := browsertest.New(t)
	defer cancel()
	fa := &fakeAlerts{}
	ts := httptest.NewServer(New(threatModelStore(t), Options{Alerts: fa}))
	defer ts.Close()

	if err := chromedp.Run(ctx,
		chromedp.Navigate(ts.URL+"/"),
		chromedp.WaitReady(`body[data-state="ready"]`, chromedp.ByQuery),
	); err != nil {
		t.Fatal(err)
	}

	// The tree: origin destroyed, with its five clones drawn as its children.
	nodes := nodesByName(t, ctx)
	if len(nodes) != 6 {
		t.Fatalf("page draws %d VMs, want 6: %v", len(nodes), nodes)
	}
	o := nodes["origin"]
	if !hasClass(o, "destroyed") || !strings.Contains(o.Sub, "destroyed") || !o.Shown {
		t.Errorf("origin = %+v, want shown as destroyed", o)
	}
	for _, c := range tmClones {
		n := nodes[c.name]
		if n.Parent != tmOrigin || !n.HasEdge || !n.Shown || hasClass(n, "destroyed") {
			t.Errorf("%s = %+v, want a live clone drawn under origin", c.name, n)
		}
		if hasClass(n, "suspect") || hasClass(n, "alerted") {
			t.Errorf("%s marked before any alert: %s", c.name, n.Class)
		}
	}
	if !hasClass(nodes["vm5"], "ps-halted") || !hasClass(nodes["vm1"], "ps-running") {
		t.Errorf("power states: vm5 %s, vm1 %s", nodes["vm5"].Class, nodes["vm1"].Class)
	}

	// Alerts arrive; the investigator refreshes: vm5 is a suspect, vm1 alerted.
	fa.set(threatMarks())
	vm5 := "#vm-" + tmClones[4].uuid
	if err := chromedp.Run(ctx,
		chromedp.Click("#refresh", chromedp.ByQuery),
		chromedp.WaitReady(vm5+".suspect", chromedp.ByQuery),
		chromedp.WaitReady(`body[data-state="ready"]`, chromedp.ByQuery),
	); err != nil {
		t.Fatal(err)
	}
	nodes = nodesByName(t, ctx)
	if !hasClass(nodes["vm5"], "suspect") || !hasClass(nodes["vm1"], "alerted") || hasClass(nodes["origin"], "suspect") {
		t.Errorf("marks: vm5 %q, vm1 %q, origin %q", nodes["vm5"].Class, nodes["vm1"].Class, nodes["origin"].Class)
	}

	// Hover vm5: the tooltip names it with its uuid, state and why it is suspect.
	var xy []float64
	var tip string
	var tipHidden bool
	if err := chromedp.Run(ctx,
		chromedp.Evaluate(`(() => { const r = document.querySelector('`+vm5+` rect.box').getBoundingClientRect();
			return [r.x + r.width / 2, r.y + r.height / 2]; })()`, &xy),
		chromedp.ActionFunc(func(ctx context.Context) error {
			return input.DispatchMouseEvent(input.MouseMoved, xy[0], xy[1]).Do(ctx)
		}),
		chromedp.WaitVisible("#tooltip", chromedp.ByQuery),
		chromedp.Text("#tooltip", &tip, chromedp.ByQuery),
		chromedp.Evaluate(`document.getElementById('tooltip').hidden`, &tipHidden),
	); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"vm5", tmClones[4].uuid, "halted", "clone of origin", "suspect sibling of alerted vm1"} {
		if !strings.Contains(tip, s) || tipHidden {
			t.Errorf("tooltip over vm5 lacks %q: %q", s, tip)
		}
	}

	// Click vm5: its timeline and ancestors.
	var acts []string
	var details string
	if err := chromedp.Run(ctx,
		chromedp.Click(vm5+" rect.box", chromedp.ByQuery),
		chromedp.WaitReady(`#details[data-uuid="`+tmClones[4].uuid+`"]`, chromedp.ByQuery),
		chromedp.Evaluate(`Array.from(document.querySelectorAll('#details tr.row')).map(r =>
			r.dataset.activity + '|' + Array.from(r.cells).map(c => c.textContent).join('|'))`, &acts),
		chromedp.Text("#details", &details, chromedp.ByQuery),
	); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"clone|2024-03-01 09:00:50|09:00:50 800 ms|clone|success|xen1",
		"start|2024-03-01 09:01:40|09:01:40 800 ms|start|success|xen3",
		"shutdown|2024-03-01 09:02:10|09:02:10 800 ms|shutdown|success|xen3",
	}
	if !slices.Equal(acts, want) {
		t.Errorf("vm5 timeline rows:\n got %q\nwant %q", acts, want)
	}
	for _, s := range []string{"vm5", "suspect", "sibling of alerted vm1", "Ancestors", "origin", "(destroyed)", "10.1.0.15", tmClones[4].uuid, "02:16:3e:00:00:05 2024-03-01 09:00:50 → now"} {
		if !strings.Contains(strings.ToLower(details), strings.ToLower(s)) {
			t.Errorf("details panel lacks %q:\n%s", s, details)
		}
	}
	var hosts string
	if err := chromedp.Run(ctx, chromedp.Text("#hosts", &hosts, chromedp.ByQuery)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(hosts, "xen3") || !strings.Contains(hosts, "vm3running") || !strings.Contains(hosts, "vm5halted") {
		t.Errorf("pool now:\n%s", hosts)
	}
	screenshot(t, ctx, "threat-model.png")

	// Search by an IP vm5 no longer holds.
	var selected string
	if err := chromedp.Run(ctx,
		chromedp.Click(`#vm-`+tmClones[0].uuid+` rect.box`, chromedp.ByQuery),
		chromedp.WaitReady(`#details[data-uuid="`+tmClones[0].uuid+`"]`, chromedp.ByQuery),
		chromedp.SendKeys("#search", "10.1.0.15\r", chromedp.ByQuery),
		chromedp.WaitReady(`#details[data-uuid="`+tmClones[4].uuid+`"]`, chromedp.ByQuery),
		chromedp.AttributeValue(vm5, "class", &selected, nil, chromedp.ByQuery),
	); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(selected, "selected") {
		t.Errorf("search 10.1.0.15 left vm5 unselected: %q", selected)
	}

	// Move the time control to before the clones existed: they are gone.
	before := at(5)
	if err := chromedp.Run(ctx,
		chromedp.Evaluate(fmt.Sprintf(`(() => { const s = document.getElementById('time-slider');
			s.value = %d; s.dispatchEvent(new Event('input', {bubbles: true})); })()`, before.Unix()), nil),
		chromedp.WaitReady(`body[data-at="`+record.FormatTime(before)+`"]`, chromedp.ByQuery),
	); err != nil {
		t.Fatal(err)
	}
	nodes = nodesByName(t, ctx)
	for _, c := range tmClones {
		if n := nodes[c.name]; n.Shown || !hasClass(n, "absent") {
			t.Errorf("%s still shown at %s: %+v", c.name, before, n)
		}
	}
	if o := nodes["origin"]; !o.Shown || hasClass(o, "destroyed") || !hasClass(o, "ps-halted") {
		t.Errorf("origin at %s = %+v, want shown, halted, not yet destroyed", before, o)
	}
	var label string
	if err := chromedp.Run(ctx,
		chromedp.Text("#hosts", &hosts, chromedp.ByQuery),
		chromedp.Text("#time-label", &label, chromedp.ByQuery),
	); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(hosts, "vm") || !strings.Contains(hosts, "originhalted") {
		t.Errorf("pool at %s:\n%s", before, hosts)
	}
	if label != "pool at 2024-03-01 09:00:05 UTC" {
		t.Errorf("time label %q", label)
	}
	screenshot(t, ctx, "threat-model-before-clones.png")

	// And at 09:01:45 (every clone running, origin still there) through the
	// datetime input.
	if err := chromedp.Run(ctx,
		chromedp.Evaluate(`(() => { const i = document.getElementById('time-input');
			i.value = '2024-03-01T09:01:45'; i.dispatchEvent(new Event('change', {bubbles: true})); })()`, nil),
		chromedp.WaitReady(`body[data-at="2024-03-01T09:01:45.000Z"]`, chromedp.ByQuery),
		chromedp.Text("#hosts", &hosts, chromedp.ByQuery),
	); err != nil {
		t.Fatal(err)
	}
	nodes = nodesByName(t, ctx)
	for _, c := range tmClones {
		if n := nodes[c.name]; !n.Shown || !hasClass(n, "ps-running") {
			t.Errorf("%s at 09:01:45 = %+v, want shown running", c.name, n)
		}
	}
	if !strings.Contains(hosts, "vm5running") || !strings.Contains(hosts, "originhalted") {
		t.Errorf("pool at 09:01:45:\n%s", hosts)
	}
}

// TestBrowserHostileNames: VM names, kinds and states come from whoever can
// name a VM; the page shows them as text and runs none of them.
func TestBrowserHostileNames(t *testing.T) {
	ctx, cancel := browsertest.New(t)
	defer cancel()
	st := threatModelStore(t)
	const evil = `<img src=x onerror="window.pwned=1">`
	err := st.Update(context.Background(), func(tx *lineage.Tx) error {
		return tx.PutVM(&lineage.VM{UUID: "e0000000\"><svg onload=window.pwned=2>", PoolUUID: tmPool, Name: evil,
			ParentUUID: tmOrigin, ParentVia: `clone" onmouseover="window.pwned=3`, Kind: `vm" onclick="window.pwned=4`, PowerState: `Running"><script>window.pwned=5</script>`,
			FirstSeen: at(1), LastSeen: at(1)})
	})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(New(st, Options{}))
	defer ts.Close()
	var pwned bool
	var names []string
	if err := chromedp.Run(ctx,
		chromedp.Navigate(ts.URL+"/"),
		chromedp.WaitReady(`body[data-state="ready"]`, chromedp.ByQuery),
		chromedp.Evaluate(`Array.from(document.querySelectorAll('#tree g.node .name')).map(e => e.textContent)`, &names),
		chromedp.Evaluate(`(() => { const i = window.vmlineage.nodes.findIndex(n => n.name.startsWith('<img'));
			const e = document.querySelector('#tree g.node[data-i="' + i + '"] rect.box');
			e.dispatchEvent(new MouseEvent('mousemove', {bubbles: true})); e.dispatchEvent(new MouseEvent('click', {bubbles: true})); })()`, nil),
		chromedp.WaitReady(`#details[data-uuid^="e0000000"]`, chromedp.ByQuery),
		chromedp.Evaluate(`window.pwned !== undefined`, &pwned),
	); err != nil {
		t.Fatal(err)
	}
	if pwned {
		t.Fatal("a VM's name, kind or state ran as code in the page")
	}
	if !slices.Contains(names, `<img src=x onerror="…`) {
		t.Errorf("hostile name not shown as text: %q", names)
	}
}

// bigStore builds a pool of n VMs: families grown from templates by clones,
// copies and snapshots, some destroyed, on 16 hosts.
func bigStore(tb testing.TB, n int) *lineage.Store {
	tb.Helper()
	st := openStore(tb)
	rng := rand.New(rand.NewSource(42))
	pool := "b0000000-0000-4000-8000-000000000000"
	var hosts []string
	err := st.Update(context.Background(), func(tx *lineage.Tx) error {
		if err := tx.PutPool(&lineage.Pool{UUID: pool, Name: "big pool"}); err != nil {
			return err
		}
		for h := 0; h < 16; h++ {
			u := fmt.Sprintf("b%07d-0000-4000-8000-000000000000", h+1)
			hosts = append(hosts, u)
			if err := tx.PutHost(&lineage.Host{UUID: u, PoolUUID: pool, Name: fmt.Sprintf("xen%02d", h+1), FirstSeen: tmStart, LastSeen: tmStart}); err != nil {
				return err
			}
		}
		var family []string
		for i := 0; i < n; i++ {
			v := &lineage.VM{UUID: fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i), PoolUUID: pool, Kind: lineage.KindVM,
				FirstSeen: tmStart.Add(time.Duration(i) * time.Minute)}
			v.LastSeen = v.FirstSeen
			if i%100 == 0 { // a new family from a golden template
				family = family[:0]
				v.Kind, v.Name, v.PowerState = lineage.KindTemplate, fmt.Sprintf("golden-%d", i/100), "Halted"
			} else {
				p := family[rng.Intn(len(family))]
				v.ParentUUID, v.ParentVia, v.Name = p, "clone", fmt.Sprintf("web-%05d", i)
				switch rng.Intn(10) {
				case 0:
					v.Kind, v.ParentVia, v.PowerState = lineage.KindSnapshot, "snapshot", "Halted"
				case 1:
					v.ParentVia = "copy"
				}
				if v.Kind == lineage.KindVM {
					v.PowerState = []string{"Running", "Running", "Running", "Halted", "Suspended", "Paused"}[rng.Intn(6)]
					if v.PowerState == "Running" || v.PowerState == "Paused" {
						v.HostUUID = hosts[rng.Intn(len(hosts))]
					}
				}
			}
			family = append(family, v.UUID)
			if err := tx.PutVM(v); err != nil {
				return err
			}
			if err := tx.SetState(v.UUID, v.PowerState, v.HostUUID, v.FirstSeen); err != nil {
				return err
			}
			if err := tx.SetAttrs(v.UUID, lineage.AttrName, []string{v.Name}, v.FirstSeen); err != nil {
				return err
			}
			if err := tx.SetAttrs(v.UUID, lineage.AttrIP, []string{fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)}, v.FirstSeen); err != nil {
				return err
			}
			if i%100 != 0 && rng.Intn(6) == 0 {
				if err := tx.MarkDestroyed(v.UUID, v.FirstSeen.Add(time.Duration(1+rng.Intn(600))*time.Minute)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return st
}

type loadStats struct {
	Ready  float64 `json:"readyMs"`
	Fetch  float64 `json:"fetchMs"`
	Layout float64 `json:"layoutMs"`
	DOM    float64 `json:"domMs"`
	Tree   float64 `json:"treeMs"`
	Nodes  int     `json:"nodes"`
	Drawn  int     `json:"drawn"`
}

// BenchmarkBrowser10k loads the page for a pool of 10,000 VMs in headless
// Chromium and reports the time from navigation to the drawn tree (target
// under 2 s), then the time a move of the time control takes.
func BenchmarkBrowser10k(b *testing.B) {
	const n = 10000
	ctx, cancel := browsertest.New(b)
	defer cancel()
	fa := &fakeAlerts{}
	st := bigStore(b, n)
	marks := map[string]Mark{}
	for i := 1; i < n; i += 97 {
		marks[fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i)] = Mark{Suspect: true, Reason: "bench"}
	}
	fa.set(marks)
	ts := httptest.NewServer(New(st, Options{Alerts: fa}))
	defer ts.Close()
	var sum loadStats
	var move float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var s loadStats
		start := time.Now()
		if err := chromedp.Run(ctx,
			chromedp.Navigate(ts.URL+"/"),
			chromedp.WaitReady(`body[data-state="ready"]`, chromedp.ByQuery),
			chromedp.Evaluate(`window.vmlineage.stats`, &s),
		); err != nil {
			b.Fatal(err)
		}
		if s.Nodes != n {
			b.Fatalf("page drew %d VMs, want %d", s.Nodes, n)
		}
		wall := time.Since(start)
		mid := tmStart.Add(n / 2 * time.Minute)
		t0 := time.Now()
		if err := chromedp.Run(ctx,
			chromedp.Evaluate(fmt.Sprintf(`(() => { const s = document.getElementById('time-slider');
				s.value = %d; s.dispatchEvent(new Event('input', {bubbles: true})); })()`, mid.Unix()), nil),
			chromedp.WaitReady(`body[data-at="`+record.FormatTime(mid)+`"]`, chromedp.ByQuery),
		); err != nil {
			b.Fatal(err)
		}
		move += float64(time.Since(t0).Milliseconds())
		b.Logf("10,000 VMs: ready %.0f ms after navigation (wall %v): fetch %.0f ms, layout %.0f ms, DOM %.0f ms (%d nodes in the DOM), painted tree %.0f ms; time move %v",
			s.Ready, wall.Round(time.Millisecond), s.Fetch, s.Layout, s.DOM, s.Drawn, s.Tree, time.Since(t0).Round(time.Millisecond))
		sum.Ready += s.Ready
		sum.Fetch += s.Fetch
		sum.Tree += s.Tree
	}
	b.StopTimer()
	if b.N > 0 {
		b.ReportMetric(sum.Ready/float64(b.N), "ms-to-ready")
		b.ReportMetric(sum.Fetch/float64(b.N), "ms-fetch")
		b.ReportMetric(sum.Tree/float64(b.N), "ms-tree-drawn")
		b.ReportMetric(move/float64(b.N), "ms-time-move")
	}
	screenshot(b, ctx, "big-pool-10k.png")

	// Scroll to the middle of the tree and zoom out: what comes into view
	// is drawn (the DOM holds only the nodes near the viewport).
	var seen struct {
		InView, InDOM int
	}
	if err := chromedp.Run(ctx,
		chromedp.Click("#time-live", chromedp.ByQuery),
		chromedp.WaitReady(`body[data-at="now"]`, chromedp.ByQuery),
		chromedp.Click("#zoom-out", chromedp.ByQuery),
		chromedp.Click("#zoom-out", chromedp.ByQuery),
		chromedp.Evaluate(`(() => { const t = document.getElementById('tree'); t.scrollTop = t.scrollHeight / 2; t.scrollLeft = 200; })()`, nil),
		chromedp.Sleep(300*time.Millisecond),
		chromedp.Evaluate(`(() => { const t = document.getElementById('tree').getBoundingClientRect();
			const gs = Array.from(document.querySelectorAll('#tree g.node'));
			const inView = gs.filter(g => { const r = g.getBoundingClientRect();
				return r.bottom > t.top && r.top < t.bottom && r.right > t.left && r.left < t.right; }).length;
			return {InView: inView, InDOM: gs.length}; })()`, &seen),
	); err != nil {
		b.Fatal(err)
	}
	if seen.InView < 20 || seen.InDOM > 2000 {
		b.Fatalf("after scrolling: %d nodes in view, %d in the DOM", seen.InView, seen.InDOM)
	}
	b.Logf("scrolled to the middle at 64%%: %d VMs in view, %d in the DOM", seen.InView, seen.InDOM)
	screenshot(b, ctx, "big-pool-10k-scrolled.png")
}
