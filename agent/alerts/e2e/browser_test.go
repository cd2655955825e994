package e2e_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/vmlineage/vmlineage/agent/alerts"
	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/agent/webui"
	"github.com/vmlineage/vmlineage/internal/browsertest"
)

// allMarks shows every alert the store holds (the scenario's alerts are
// dated in 2024; the agent's own adapter shows the last week).
type allMarks struct{ svc *alerts.Service }

func (m allMarks) Marks(ctx context.Context) (map[string]webui.Mark, error) {
	ms, err := m.svc.Marks(ctx, time.Time{}, 0)
	out := map[string]webui.Mark{}
	for k, v := range ms {
		out[k] = webui.Mark(v)
	}
	return out, err
}

// checkForensicsView is the acceptance of issue 8 on the traced threat-model
// with the alerts the real enrichment stored: the page shows origin destroyed
// with its five clones, vm5 a suspect, vm5's timeline on click, and the pool
// before the clones existed without them. It saves screenshots.
func checkForensicsView(t *testing.T, st *lineage.Store, svc *alerts.Service, start time.Time) {
	ts := httptest.NewServer(webui.New(st, webui.Options{Alerts: allMarks{svc}}))
	defer ts.Close()
	ctx, cancel := browsertest.New(t)
	defer cancel()

	type node struct {
		Name  string `json:"name"`
		UUID  string `json:"uuid"`
		Class string `json:"cls"`
		Shown bool   `json:"shown"`
	}
	nodes := func() map[string]node {
		var ns []node
		if err := chromedp.Run(ctx, chromedp.Evaluate(`Array.from(document.querySelectorAll('#tree g.node')).map(g => {
			const n = window.vmlineage.nodes[+g.dataset.i]; const r = g.getBoundingClientRect();
			return {name: g.querySelector('.name').textContent, uuid: n.uuid, cls: g.getAttribute('class'),
			        shown: getComputedStyle(g).display !== 'none' && r.width > 0}; })`, &ns)); err != nil {
			t.Fatal(err)
		}
		m := map[string]node{}
		for _, n := range ns {
			m[n.Name] = n
		}
		return m
	}
	has := func(n node, c string) bool { return slices.Contains(strings.Fields(n.Class), c) }
	shot := func(name string) {
		var png []byte
		if err := chromedp.Run(ctx, chromedp.CaptureScreenshot(&png)); err != nil {
			t.Fatal(err)
		}
		dir := os.Getenv("VMLINEAGE_ARTIFACTS")
		if dir == "" {
			dir = filepath.Join("testdata", "artifacts")
		}
		os.MkdirAll(dir, 0o755)
		os.WriteFile(filepath.Join(dir, name), png, 0o644)
	}

	if err := chromedp.Run(ctx, chromedp.Navigate(ts.URL+"/"), chromedp.WaitReady(`body[data-state="ready"]`, chromedp.ByQuery)); err != nil {
		t.Fatal(err)
	}
	ns := nodes()
	if o := ns["origin"]; !has(o, "destroyed") || !o.Shown {
		t.Errorf("origin = %+v, want shown destroyed", o)
	}
	for _, c := range []string{"vm1", "vm2", "vm3", "vm4", "vm5"} {
		if n := ns[c]; !n.Shown || has(n, "destroyed") {
			t.Errorf("%s = %+v, want a live clone", c, n)
		}
	}
	if v := ns["vm5"]; !has(v, "suspect") || !has(v, "ps-halted") {
		t.Errorf("vm5 = %+v, want a halted suspect", v)
	}
	if v := ns["vm1"]; !has(v, "alerted") {
		t.Errorf("vm1 = %+v, want alerted", v)
	}
	shot("traced-threat-model.png")

	vm5 := ns["vm5"].UUID
	var acts []string
	if err := chromedp.Run(ctx,
		chromedp.Click("#vm-"+vm5+" rect.box", chromedp.ByQuery),
		chromedp.WaitReady(`#details[data-uuid="`+vm5+`"]`, chromedp.ByQuery),
		chromedp.Evaluate(`Array.from(document.querySelectorAll('#details tr.row')).map(r => r.dataset.activity)`, &acts),
	); err != nil {
		t.Fatal(err)
	}
	if strings.Join(acts, ",") != "clone,start,shutdown" {
		t.Errorf("vm5 timeline: %v", acts)
	}

	before := start.Add(5 * time.Second)
	if err := chromedp.Run(ctx,
		chromedp.Evaluate(fmt.Sprintf(`(() => { const s = document.getElementById('time-slider');
			s.value = %d; s.dispatchEvent(new Event('input', {bubbles: true})); })()`, before.Unix()), nil),
		chromedp.WaitReady(`body[data-at="`+record.FormatTime(before)+`"]`, chromedp.ByQuery),
	); err != nil {
		t.Fatal(err)
	}
	ns = nodes()
	for _, c := range []string{"vm1", "vm2", "vm3", "vm4", "vm5"} {
		if n := ns[c]; n.Shown {
			t.Errorf("%s shown at %s, before it existed", c, before)
		}
	}
	if o := ns["origin"]; !o.Shown || has(o, "destroyed") {
		t.Errorf("origin at %s = %+v, want shown, not yet destroyed", before, o)
	}
	shot("traced-threat-model-before-clones.png")
}
