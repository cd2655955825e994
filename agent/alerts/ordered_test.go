package alerts

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/alerts/alertstest"
	"github.com/vmlineage/vmlineage/plugins"
)

// gate is a Detectors that holds every call until want calls are in at
// once (or a deadline passes, which a one-at-a-time intake always hits),
// and then releases them by VM uuid, highest first (vm4, vm3, ...): later
// alerts of the threat model finish first.
type gate struct {
	want int
	// next, when set, paces the releases by the test instead of by 5 ms
	// sleeps: each release after the first waits for a value on it (the
	// previous alert emitted), so a loaded machine cannot reorder them.
	next    chan struct{}
	mu      sync.Mutex
	in      []held
	most    int
	timeout bool
}

type held struct {
	vm string
	c  chan struct{}
}

func (g *gate) Enrich(ctx context.Context, a *plugins.Alert) []plugins.Result {
	h := held{vm: a.VMs[0].UUID, c: make(chan struct{})}
	g.mu.Lock()
	g.in = append(g.in, h)
	if len(g.in) > g.most {
		g.most = len(g.in)
	}
	if len(g.in) == g.want {
		in := g.in
		slices.SortFunc(in, func(x, y held) int { return strings.Compare(y.vm, x.vm) })
		go func() {
			for i, x := range in {
				if i > 0 && g.next != nil {
					select {
					case <-g.next:
					case <-time.After(5 * time.Second):
					}
				}
				close(x.c)
				time.Sleep(5 * time.Millisecond)
			}
		}()
		g.in = nil
	}
	g.mu.Unlock()
	select {
	case <-h.c:
	case <-time.After(5 * time.Second):
		g.mu.Lock()
		g.timeout = true
		g.in = slices.DeleteFunc(g.in, func(x held) bool { return x.c == h.c })
		g.mu.Unlock()
	}
	return []plugins.Result{{Detector: "gate", Enrichment: &plugins.Enrichment{}}}
}

// peak is the most calls seen at once, and whether any waited in vain.
func (g *gate) peak() (int, bool) { g.mu.Lock(); defer g.mu.Unlock(); return g.most, g.timeout }

func gatedEnricher(t *testing.T, want int) (*Enricher, *gate) {
	t.Helper()
	g := &gate{want: want}
	return NewEnricher(threatModelService(t), g, nil), g
}

// Alerts are enriched several at once, and handed over in the order they
// came even when later ones finish first.
func TestOrderedRunsAtOnceAndKeepsOrder(t *testing.T) {
	e, g := gatedEnricher(t, 4)
	o := NewOrdered(e, 4)
	var got []string
	for i, vm := range []string{"vm1", "vm2", "vm3", "vm4"} {
		a, err := ParseJSON([]byte(alertFor("uuid", vm, i)), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		o.Submit(context.Background(), a, func(js []byte, err error) {
			if err != nil {
				t.Errorf("%s: %v", vm, err)
				return
			}
			var en enriched
			json.Unmarshal(js, &en)
			got = append(got, en.VMLineage.VMs[0].Name)
		})
	}
	o.Close()
	if most, timeout := g.peak(); timeout || most != 4 {
		t.Errorf("at most %d alerts were enriched at once, want 4", most)
	}
	if fmt.Sprint(got) != "[vm1 vm2 vm3 vm4]" {
		t.Errorf("handed over in the order %v", got)
	}
}

// Every alert counts for the ones submitted after it, as when they run one
// by one: Submit enters it in the alert log before it returns, while the
// detectors still hold it, so the next alert's context sees it.
func TestOrderedAlertSeesEarlierOnes(t *testing.T) {
	e, _ := gatedEnricher(t, 2)
	o := NewOrdered(e, 2)
	defer o.Close()
	a1, _ := ParseJSON([]byte(alertFor("uuid", "vm1", 0)), time.Now())
	a2, _ := ParseJSON([]byte(alertFor("uuid", "vm2", 1)), time.Now())
	o.Submit(context.Background(), a1, func([]byte, error) {})
	av, err := e.svc.AlertedVMs(context.Background(), []string{alertstest.VMUUID["vm1"]}, a1.Time, a2.Time)
	if err != nil || len(av) != 1 {
		t.Fatalf("alerted VMs once the first alert is submitted: %+v %v", av, err)
	}
	o.Submit(context.Background(), a2, func([]byte, error) {})
}

// The syslog listener enriches the alerts of one UDP socket several at
// once and emits each as soon as it is ready: vm3's, which the detectors
// let go first, is not held behind vm1's and vm2's. A message that is not an alert
// still reaches OnError.
func TestSyslogListenerConcurrent(t *testing.T) {
	e, g := gatedEnricher(t, 3)
	g.next = make(chan struct{}, 3) // vm2 goes once vm3 is out, vm1 once vm2 is
	o := NewOrdered(e, 3)
	var mu sync.Mutex
	var got, errs []string
	l := &SyslogListener{Ordered: o, Emit: func(js []byte) {
		var en enriched
		json.Unmarshal(js, &en)
		mu.Lock()
		got = append(got, en.VMLineage.VMs[0].Name)
		mu.Unlock()
		g.next <- struct{}{}
	}, OnError: func(raw []byte, err error) { mu.Lock(); errs = append(errs, string(raw)); mu.Unlock() }}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go l.ServeUDP(ctx, pc)
	u, err := net.Dial("udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	for _, vm := range []string{"vm1", "vm2", "junk", "vm3"} {
		m := "not cef at all"
		if vm != "junk" {
			m = fmt.Sprintf(`<134>1 2024-03-01T09:20:00Z av1 av - - - CEF:0|Acme|AV|1|v|Virus|9|dvchost=%s rt=1709284800000`, vm)
		}
		u.Write([]byte(m))
	}
	waitUntil(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 3 && len(errs) == 1 })
	if most, timeout := g.peak(); timeout || most != 3 {
		t.Errorf("at most %d alerts were enriched at once, want 3", most)
	}
	mu.Lock()
	defer mu.Unlock()
	sorted := append([]string(nil), got...)
	slices.Sort(sorted)
	if fmt.Sprint(sorted) != "[vm1 vm2 vm3]" || got[0] != "vm3" {
		t.Errorf("emitted %v; want all three, vm3 (released first) first", got)
	}
}

// The HTTP endpoint's ordered form enriches a request's alerts several at
// once; the answer keeps the request's order, with an error document in
// place of an item that is not an alert, and emit gets each alert.
func TestHTTPHandlerOrdered(t *testing.T) {
	e, g := gatedEnricher(t, 3)
	o := NewOrdered(e, 3)
	defer o.Close()
	var mu sync.Mutex
	emitted := 0
	h, err := HTTPHandlerOrdered("s3cret", o, func([]byte) { mu.Lock(); emitted++; mu.Unlock() }, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	body := alertFor("uuid", "vm1", 0) + "\n" + alertFor("uuid", "vm2", 1) + "\n{\"@timestamp\":\"yesterday\"}\n" + alertFor("uuid", "vm3", 2) + "\n"
	resp, lines := postAlerts(t, srv.URL, "s3cret", body)
	if resp.StatusCode != 200 || len(lines) != 4 || resp.Header.Get("X-Vmlineage-Errors") != "1" {
		t.Fatalf("%d, errors %q: %s", resp.StatusCode, resp.Header.Get("X-Vmlineage-Errors"), strings.Join(lines, "\n"))
	}
	var got []string
	for _, l := range lines {
		en := decode(t, []byte(l))
		if en.VMLineage.Error != "" {
			got = append(got, "error")
			continue
		}
		got = append(got, en.VMLineage.VMs[0].Name)
	}
	if fmt.Sprint(got) != "[vm1 vm2 error vm3]" {
		t.Errorf("answer in the order %v", got)
	}
	if most, timeout := g.peak(); timeout || most != 3 {
		t.Errorf("at most %d alerts were enriched at once, want 3", most)
	}
	mu.Lock()
	defer mu.Unlock()
	if emitted != 3 {
		t.Errorf("emitted %d, want 3", emitted)
	}
}

// TestStartDoesNoQuery: Start, which the intake runs in arrival order,
// queries no store (matching runs on the worker), yet an alert finished
// before an earlier one still counts the earlier one: its reads wait for
// every admitted alert to be tied to its VMs. So with vm1's alert started
// first and finished last, vm2's enrichment sees both VMs alerted and
// lineage-suspects names vm5.
func TestStartDoesNoQuery(t *testing.T) {
	e, _ := newEnricher(t)
	ctx := context.Background()
	a1, _ := ParseJSON([]byte(alertFor("uuid", "vm1", 0)), time.Now())
	a2, _ := ParseJSON([]byte(alertFor("uuid", "vm2", 1)), time.Now())
	q0 := e.svc.Queries()
	j1, j2 := e.Start(ctx, a1), e.Start(ctx, a2)
	if q := e.svc.Queries() - q0; q != 0 {
		t.Fatalf("Start made %d queries", q)
	}
	j1.Admit()
	j2.Admit()
	done2 := make(chan []byte, 1)
	go func() {
		js, err := j2.Finish(ctx)
		if err != nil {
			t.Error(err)
		}
		done2 <- js
	}()
	time.Sleep(100 * time.Millisecond) // vm2's enrichment waits for vm1's match
	if _, err := j1.Finish(ctx); err != nil {
		t.Fatal(err)
	}
	en := decode(t, <-done2)
	if len(en.VMLineage.Suspects) == 0 || en.VMLineage.Suspects[0].VMName != "vm5" {
		t.Fatalf("vm2's alert, finished before vm1's: suspects %+v, notes %v", en.VMLineage.Suspects, en.VMLineage.Notes)
	}
}
