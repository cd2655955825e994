package alerts

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/alerts/alertstest"
	"github.com/vmlineage/vmlineage/formats/cef"
	"github.com/vmlineage/vmlineage/internal/schedslice"
	"github.com/vmlineage/vmlineage/plugins"
	"github.com/vmlineage/vmlineage/plugins/plugintest"
)

func TestMain(m *testing.M) {
	if os.Getenv(busyPoolEnv) != "" || os.Getenv(senderEnv) != "" || os.Getenv(echoEnv) != "" {
		// The benchmark's helpers stand for other machines' work (the
		// sensor, the round-trip floor) or keep the kernel's default slice
		// (the tracer's bulk writes): not the host's slice (see benchEnrich).
		schedslice.Set(0)
	}
	if path := os.Getenv(busyPoolEnv); path != "" {
		os.Exit(busyPoolChild(path)) // the benchmark's tracer stand-in, a process of its own
	}
	if spec := os.Getenv(senderEnv); spec != "" {
		os.Exit(senderChild(spec)) // the benchmark's alert source, a process of its own
	}
	if sock := os.Getenv(echoEnv); sock != "" {
		os.Exit(echoChild(sock)) // the benchmark's round-trip floor
	}
	plugintest.Main(m)
}

type enriched struct {
	Threat struct {
		Enrichments []struct {
			Indicator map[string]any `json:"indicator"`
			Matched   map[string]any `json:"matched"`
		} `json:"enrichments"`
	} `json:"threat"`
	VMLineage struct {
		Matched        bool        `json:"matched"`
		VMs            []MatchedVM `json:"vms"`
		CommonAncestor *struct {
			UUID      string `json:"vm_uuid"`
			Name      string `json:"name"`
			Destroyed bool   `json:"destroyed"`
		} `json:"common_ancestor"`
		Suspects  []plugins.Suspect `json:"suspects"`
		Findings  []map[string]any  `json:"findings"`
		Detectors []DetectorOutcome `json:"detectors"`
		Notes     []string          `json:"notes"`
		Error     string            `json:"error"`
	} `json:"vmlineage"`
	Event map[string]any `json:"event"`
}

// threatModelService is a Service over a fresh threat-model store.
func threatModelService(t *testing.T) *Service {
	t.Helper()
	svc, err := NewService(context.Background(), alertstest.ThreatModel(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	return svc
}

func newEnricher(t *testing.T, extra ...plugintest.Detector) (*Enricher, *plugins.Manager) {
	t.Helper()
	svc := threatModelService(t)
	dir, pins := plugintest.Setup(t, append(plugintest.ShippedDetectors(), extra...)...)
	m, err := plugins.NewManager(plugins.Config{Dir: dir, Pins: pins, CallTimeout: 500 * time.Millisecond,
		MinBackoff: 50 * time.Millisecond, PingInterval: 200 * time.Millisecond}, svc)
	if err != nil {
		t.Fatal(err)
	}
	m.Start(context.Background())
	t.Cleanup(m.Close)
	return NewEnricher(svc, m, nil), m
}

// alertFor builds an ECS alert naming vm (vm1..vm4) through the given field.
func alertFor(by, vm string, min int) string {
	ts := alertstest.At(600 + 60*min).Format(time.RFC3339)
	switch by {
	case "uuid":
		return fmt.Sprintf(`{"@timestamp":%q,"event":{"kind":"alert","id":"a-%s"},"cloud":{"instance":{"id":%q}},"rule":{"name":"EICAR"}}`, ts, vm, alertstest.VMUUID[vm])
	case "name":
		return fmt.Sprintf(`{"@timestamp":%q,"event.kind":"alert","host.name":%q,"message":"malware found"}`, ts, vm)
	case "ip":
		return fmt.Sprintf(`{"@timestamp":%q,"event":{"kind":"alert"},"source":{"ip":"198.51.100.7"},"destination":{"ip":%q,"port":445}}`, ts, alertstest.VMIP[vm])
	case "mac":
		return fmt.Sprintf(`{"@timestamp":%q,"host":{"mac":[%q]}}`, ts, strings.ToUpper(strings.ReplaceAll(alertstest.VMMAC[vm], ":", "-")))
	}
	panic(by)
}

func decode(t *testing.T, line []byte) enriched {
	t.Helper()
	var e enriched
	if err := json.Unmarshal(line, &e); err != nil {
		t.Fatalf("enriched alert is not JSON: %v\n%s", err, line)
	}
	return e
}

// The acceptance test of issue 4: alerts for vm1..vm4 through `enrich`'s
// JSON-lines path; from the second on, vm5 (halted) is the first suspect
// and origin is named as the common ancestor, destroyed.
func TestThreatModelSuspects(t *testing.T) {
	for _, by := range []string{"uuid", "name", "ip", "mac"} {
		t.Run(by, func(t *testing.T) {
			e, _ := newEnricher(t, plugintest.Detector{Name: "zz-hang", Pkg: plugintest.TestDetector, Mode: "hang"})
			var in bytes.Buffer
			for i, vm := range []string{"vm1", "vm2", "vm3", "vm4"} {
				in.WriteString(alertFor(by, vm, i) + "\n")
			}
			var out bytes.Buffer
			if err := RunJSONLines(context.Background(), &in, &out, e, func(n int, err error) { t.Errorf("line %d: %v", n, err) }); err != nil {
				t.Fatal(err)
			}
			lines := bytes.Split(bytes.TrimSpace(out.Bytes()), []byte("\n"))
			if len(lines) != 4 {
				t.Fatalf("want 4 enriched alerts, got %d:\n%s", len(lines), out.Bytes())
			}
			for i, line := range lines {
				en := decode(t, line)
				vm := fmt.Sprintf("vm%d", i+1)
				if !en.VMLineage.Matched || len(en.VMLineage.VMs) != 1 || en.VMLineage.VMs[0].Name != vm {
					t.Fatalf("alert %d: want matched to %s, got %+v", i+1, vm, en.VMLineage.VMs)
				}
				if len(en.Threat.Enrichments) != 1 || en.Threat.Enrichments[0].Matched["id"] != alertstest.VMUUID[vm] {
					t.Fatalf("alert %d: threat.enrichments %+v", i+1, en.Threat.Enrichments)
				}
				// The hung detector is named and the others still answered.
				var hungNoted bool
				for _, n := range en.VMLineage.Notes {
					hungNoted = hungNoted || strings.Contains(n, "detector zz-hang failed")
				}
				if !hungNoted {
					t.Errorf("alert %d: no note about the hung detector: %q", i+1, en.VMLineage.Notes)
				}
				if i == 0 {
					continue
				}
				s := en.VMLineage.Suspects
				if len(s) == 0 || s[0].VMName != "vm5" || s[0].PowerState != "Halted" {
					t.Fatalf("alert %d: want vm5 (Halted) first, got %+v", i+1, s)
				}
				if !strings.Contains(s[0].Reason, "origin (destroyed") || !strings.Contains(s[0].Reason, "halted") {
					t.Errorf("alert %d: reason %q", i+1, s[0].Reason)
				}
				ca := en.VMLineage.CommonAncestor
				if ca == nil || ca.Name != "origin" || !ca.Destroyed || ca.UUID != alertstest.Origin {
					t.Fatalf("alert %d: common ancestor %+v", i+1, ca)
				}
				for _, x := range s {
					if x.VMName == vm || (i >= 1 && x.VMName == "vm1") {
						t.Errorf("alert %d: alerted VM %s listed as suspect", i+1, x.VMName)
					}
				}
				var found bool
				for _, f := range en.VMLineage.Findings {
					found = found || f["kind"] == "origin_destroyed"
				}
				if !found {
					t.Errorf("alert %d: no origin_destroyed finding: %v", i+1, en.VMLineage.Findings)
				}
			}
			t.Logf("alert 2: %s", lines[1])
			e.svc.Flush() // store the enriched copies
			marks, err := e.svc.Marks(context.Background(), alertstest.T0, 0)
			if err != nil {
				t.Fatal(err)
			}
			if m := marks[alertstest.VMUUID["vm5"]]; !m.Suspect || m.Score < 0.8 || !marks[alertstest.VMUUID["vm1"]].Alerted || marks[alertstest.VMUUID["vm1"]].Suspect {
				t.Errorf("marks: %+v", marks)
			}
			// The same, as a CEF line for syslog outputs.
			line, err := EnrichedCEF(lines[1], "test")
			if err != nil {
				t.Fatal(err)
			}
			ev, err := cef.Parse(string(line))
			if err != nil {
				t.Fatalf("%v: %s", err, line)
			}
			sus, _ := ev.Custom("vmlineageSuspects")
			anc, _ := ev.Custom("vmlineageAncestor")
			if !strings.HasPrefix(sus, "vm5("+alertstest.VMUUID["vm5"]+",Halted,0.89)") || !strings.HasPrefix(anc, "origin(") || !strings.Contains(anc, "destroyed 2024-03-01T09:02:00") ||
				ev.SignatureID != "alert.enriched" {
				t.Errorf("CEF: %s", line)
			}
		})
	}
}

func TestUnmatchedAlertGoesOutUnchanged(t *testing.T) {
	st := alertstest.ThreatModel(t)
	svc, err := NewService(context.Background(), st)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	e := NewEnricher(svc, nil, nil)
	in := `{"@timestamp":"2024-03-01T09:30:00Z","host":{"name":"not-a-vm"},"source":{"ip":"10.1.0.11"},"x":{"n":12345678901234567890}}`
	// 10.1.0.11 is vm1's only from 09:01:05: at 08:00 it matches nothing.
	in = strings.Replace(in, "09:30", "08:00", 1)
	a, err := ParseJSON([]byte(in), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	js, err := e.Enrich(context.Background(), a)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	d := json.NewDecoder(bytes.NewReader(js))
	d.UseNumber()
	if err := d.Decode(&doc); err != nil {
		t.Fatal(err)
	}
	vl := doc["vmlineage"].(map[string]any)
	if vl["matched"] != false || !strings.Contains(fmt.Sprint(vl["notes"]), "no VM in the lineage store matches") {
		t.Fatalf("vmlineage: %v", vl)
	}
	delete(doc, "vmlineage")
	var orig map[string]any
	d = json.NewDecoder(strings.NewReader(in))
	d.UseNumber()
	d.Decode(&orig)
	a1, _ := json.Marshal(orig)
	a2, _ := json.Marshal(doc)
	if !bytes.Equal(a1, a2) {
		t.Fatalf("alert changed:\n%s\n%s", a1, a2)
	}
}

func TestBadLinesAreNotDropped(t *testing.T) {
	st := alertstest.ThreatModel(t)
	svc, _ := NewService(context.Background(), st)
	t.Cleanup(svc.Close)
	e := NewEnricher(svc, nil, nil)
	in := alertFor("name", "vm1", 0) + "\n{not json\n\n" + `{"@timestamp":"yesterday"}` + "\n" + strings.Repeat("x", MaxAlertBytes+10) + "\n" + alertFor("name", "vm2", 1)
	var out bytes.Buffer
	var errs []string
	if err := RunJSONLines(context.Background(), strings.NewReader(in), &out, e, func(n int, err error) { errs = append(errs, err.Error()) }); err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSpace(out.Bytes()), []byte("\n"))
	if len(lines) != 5 || len(errs) != 3 {
		t.Fatalf("want 5 output lines and 3 errors, got %d and %q", len(lines), errs)
	}
	for i, want := range []string{"", "not valid JSON", "@timestamp", "larger than", ""} {
		en := decode(t, lines[i])
		if want == "" {
			if !en.VMLineage.Matched {
				t.Errorf("line %d not matched: %s", i, lines[i])
			}
			continue
		}
		if !strings.Contains(en.VMLineage.Error, want) || en.Event["original"] == nil {
			t.Errorf("line %d: want error containing %q with event.original, got %s", i, want, firstBytes(lines[i], 300))
		}
	}
}

func TestAlertStoredOnce(t *testing.T) {
	st := alertstest.ThreatModel(t)
	svc, _ := NewService(context.Background(), st)
	t.Cleanup(svc.Close)
	e := NewEnricher(svc, nil, nil)
	for i := 0; i < 3; i++ {
		a, err := ParseJSON([]byte(alertFor("uuid", "vm1", 0)), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.Enrich(context.Background(), a); err != nil {
			t.Fatal(err)
		}
	}
	av, err := svc.AlertedVMs(context.Background(), []string{alertstest.VMUUID["vm1"]}, alertstest.T0, alertstest.At(3600))
	if err != nil || len(av) != 1 || av[0].Count != 1 {
		t.Fatalf("%+v %v", av, err)
	}
	svc.Close() // stores the queued enriched copies
	adb, err := openAlertDB(context.Background(), AlertsPath(st.Path()))
	if err != nil {
		t.Fatal(err)
	}
	defer adb.Close()
	var n int
	var stored []byte
	if err := adb.QueryRow("SELECT COUNT(*), MAX(enriched) FROM alerts").Scan(&n, &stored); err != nil || n != 1 || !isPacked(stored) {
		t.Fatalf("stored enriched alert: %v %d %q", err, n, stored)
	}
	if enrichedJSON, err := unpackDoc(stored); err != nil || !strings.Contains(string(enrichedJSON), `"matched":true`) {
		t.Fatalf("stored enriched alert: %v %q", err, enrichedJSON)
	}
	// The lineage store holds no alert tables.
	if err := st.DB().QueryRow("SELECT COUNT(*) FROM sqlite_master WHERE name IN ('alerts','alert_vms')").Scan(&n); err != nil || n != 0 {
		t.Fatalf("alert tables in the lineage store: %d %v", n, err)
	}
}

// TestObserveTimings: Enricher.Observe hears of every alert with its
// outcome and where its time went; a hung detector's call timeout shows
// in the detectors phase, not in the others.
func TestObserveTimings(t *testing.T) {
	e, _ := newEnricher(t, plugintest.Detector{Name: "zz-hang", Pkg: plugintest.TestDetector, Mode: "hang"})
	var mu sync.Mutex
	var got []Timing
	e.Observe = func(tm Timing) { mu.Lock(); got = append(got, tm); mu.Unlock() }
	for _, in := range []string{alertFor("name", "vm1", 0), alertFor("name", "vm2", 1),
		`{"@timestamp":"2024-03-01T09:30:00Z","host":{"name":"not-a-vm"}}`} {
		a, err := ParseJSON([]byte(in), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.Enrich(context.Background(), a); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 3 {
		t.Fatalf("%d timings for 3 alerts: %+v", len(got), got)
	}
	for i, tm := range got {
		want := TimingMatched
		if i == 2 {
			want = TimingUnmatched
		}
		sum := tm.Match + tm.Queue + tm.Context + tm.Detectors + tm.Encode
		if tm.Outcome != want || tm.Total < sum || tm.Match <= 0 || tm.Encode <= 0 {
			t.Errorf("alert %d: %+v (phases sum to %s)", i, tm, sum)
		}
		if i < 2 && (tm.Context <= 0 || tm.Detectors < 500*time.Millisecond || tm.Context > 400*time.Millisecond) {
			t.Errorf("alert %d: the hung detector's 500ms call timeout belongs to the detectors phase: %+v", i, tm)
		}
		if i == 2 && (tm.Context != 0 || tm.Detectors != 0) {
			t.Errorf("unmatched alert: no context read, no detector asked: %+v", tm)
		}
	}
}
