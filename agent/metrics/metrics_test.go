package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/vmlineage/vmlineage/agent/metrics/metricstest"
)

// feeder stands in for the pipeline: it plays a scenario of batches (events
// in, records committed, records shipped by two outputs, a failing output,
// a detector restart) through the same calls the pipeline makes.
type feeder struct {
	m                         *Metrics
	events, records, shipped  int
	esErrors, restarts, queue int
}

func (f *feeder) step(i int) {
	f.m.Event(3)
	f.events += 3
	f.m.Committed()
	f.records++
	f.m.Queue("elasticsearch", i%4)
	f.queue = i % 4
	f.m.Delivered("syslog", 1)
	f.shipped++
	if i%3 == 0 {
		f.m.OutputError("elasticsearch")
		f.esErrors++
	} else {
		f.m.Delivered("elasticsearch", 1)
	}
	if i == 5 {
		f.m.DetectorRestart("rollback")
		f.restarts++
	}
	f.m.Lag(time.Duration(i) * 100 * time.Millisecond)
}

func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	return metricstest.Scrape(t, url+"/metrics")
}

// value returns the value of family name with the given label (or the
// first series), -1 when absent.
func value(fams map[string]*dto.MetricFamily, name, label, lv string) float64 {
	var labels map[string]string
	if label != "" {
		labels = map[string]string{label: lv}
	}
	if v, ok := metricstest.Value(fams, name, labels); ok {
		return v
	}
	return -1
}

func TestScrapeWhileRecordsFlow(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg, "1.2.3-test")
	var unhealthy atomic.Bool
	srv, err := Listen("127.0.0.1:0", Handler(reg, func() error {
		if unhealthy.Load() {
			return errors.New("xapi: no event for 90s")
		}
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	url := "http://" + srv.Addr()

	f := &feeder{m: m}
	before := scrape(t, url)
	if v := value(before, "vmlineage_events_in_total", "", ""); v != 0 {
		t.Fatalf("events before any flow = %v, want 0", v)
	}
	if v := value(before, "vmlineage_build_info", "version", "1.2.3-test"); v != 1 {
		t.Fatalf("build_info = %v", v)
	}
	prevEvents, prevOut := 0.0, 0.0
	for i := 1; i <= 12; i++ {
		f.step(i)
		fams := scrape(t, url)
		ev := value(fams, "vmlineage_events_in_total", "", "")
		out := value(fams, "vmlineage_records_out_total", "output", "syslog")
		if ev <= prevEvents || out <= prevOut {
			t.Fatalf("step %d: counters did not move: events %v→%v, syslog out %v→%v", i, prevEvents, ev, prevOut, out)
		}
		prevEvents, prevOut = ev, out
		checks := []struct {
			name, label, lv string
			want            float64
		}{
			{"vmlineage_events_in_total", "", "", float64(f.events)},
			{"vmlineage_records_committed_total", "", "", float64(f.records)},
			{"vmlineage_records_out_total", "output", "syslog", float64(f.shipped)},
			{"vmlineage_output_errors_total", "output", "elasticsearch", float64(f.esErrors)},
			{"vmlineage_queue_depth", "queue", "elasticsearch", float64(f.queue)},
			{"vmlineage_lag_seconds", "", "", (time.Duration(i) * 100 * time.Millisecond).Seconds()},
		}
		for _, c := range checks {
			if got := value(fams, c.name, c.label, c.lv); got != c.want && !(c.want == 0 && got == -1) {
				t.Errorf("step %d: %s{%s=%q} = %v, want %v", i, c.name, c.label, c.lv, got, c.want)
			}
		}
		if last := value(fams, "vmlineage_last_event_timestamp_seconds", "", ""); time.Since(time.Unix(int64(last), 0)) > time.Minute {
			t.Errorf("last event timestamp %v is not recent", last)
		}
	}
	fams := scrape(t, url)
	if v := value(fams, "vmlineage_detector_restarts_total", "detector", "rollback"); v != 1 {
		t.Errorf("detector restarts = %v, want 1", v)
	}
	if v := value(fams, "vmlineage_records_out_total", "output", "elasticsearch"); v != 8 {
		t.Errorf("elasticsearch out = %v, want 8 (12 steps, 4 failed)", v)
	}
	if fams["go_goroutines"] == nil || fams["process_cpu_seconds_total"] == nil {
		t.Errorf("runtime/process collectors missing")
	}

	// /healthz: 200 then 503 with the reason.
	for _, tc := range []struct {
		bad  bool
		code int
		body string
	}{{false, 200, `"ok"`}, {true, 503, "no event for 90s"}} {
		unhealthy.Store(tc.bad)
		resp, err := http.Get(url + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var js map[string]string
		if resp.StatusCode != tc.code || !strings.Contains(string(b), tc.body) || json.Unmarshal(b, &js) != nil {
			t.Errorf("/healthz (unhealthy=%v) = %d %s", tc.bad, resp.StatusCode, b)
		}
	}
	cancel()
	if err := <-served; err != nil {
		t.Errorf("Serve after shutdown: %v", err)
	}
}

// An output that counts for itself is read at scrape time through OnScrape
// and SetOutput; the counters follow its totals, across a restart of the
// output too.
func TestSetOutputOnScrape(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg, "dev")
	var acked, failed, dead atomic.Uint64
	var queued atomic.Int64
	m.OnScrape(func() {
		m.SetOutput("elasticsearch", OutputStats{Delivered: acked.Load(), Errors: failed.Load(), Queued: queued.Load(), DeadLettered: dead.Load()})
	})
	srv, err := Listen("127.0.0.1:0", Handler(m.Gatherer(reg), nil))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Serve(ctx)
	url := "http://" + srv.Addr()
	steps := []struct {
		acked, failed uint64
		queued        int64
		wantOut       float64
		wantErr       float64
	}{
		{5, 0, 3, 5, 0},
		{9, 2, 1, 9, 2},
		{9, 2, 0, 9, 2},
		{4, 1, 0, 13, 3}, // the output restarted: its totals began again
	}
	deadSteps := []struct{ total, want float64 }{{0, 0}, {2, 2}, {3, 3}, {1, 4}}
	for i, s := range steps {
		acked.Store(s.acked)
		failed.Store(s.failed)
		queued.Store(s.queued)
		dead.Store(uint64(deadSteps[i].total))
		fams := scrape(t, url)
		if got := value(fams, "vmlineage_records_out_total", "output", "elasticsearch"); got != s.wantOut {
			t.Errorf("step %d: records out %v, want %v", i, got, s.wantOut)
		}
		if got := value(fams, "vmlineage_output_errors_total", "output", "elasticsearch"); got != s.wantErr {
			t.Errorf("step %d: errors %v, want %v", i, got, s.wantErr)
		}
		if got := value(fams, "vmlineage_records_dead_lettered_total", "output", "elasticsearch"); got != deadSteps[i].want {
			t.Errorf("step %d: dead-lettered %v, want %v", i, got, deadSteps[i].want)
		}
		if got := value(fams, "vmlineage_queue_depth", "queue", "elasticsearch"); got != float64(s.queued) {
			t.Errorf("step %d: queue %v, want %v", i, got, s.queued)
		}
	}
}

func TestSetDetector(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg, "dev")
	get := func() (restarts, up float64) {
		byName := metricstest.Gather(t, reg)
		return value(byName, "vmlineage_detector_restarts_total", "detector", "rollback"), value(byName, "vmlineage_detector_up", "detector", "rollback")
	}
	for i, s := range []struct {
		starts       int
		up           bool
		wantRestarts float64
		wantUp       float64
	}{{1, true, 0, 1}, {1, true, 0, 1}, {3, false, 2, 0}, {4, true, 3, 1}} {
		m.SetDetector("rollback", s.starts, s.up)
		if r, u := get(); r != s.wantRestarts || u != s.wantUp {
			t.Errorf("step %d: restarts %v up %v, want %v %v", i, r, u, s.wantRestarts, s.wantUp)
		}
	}
}

func TestNilMetricsIsNoop(t *testing.T) {
	var m *Metrics
	m.Event(1)
	m.Committed()
	m.Delivered("x", 1)
	m.OutputError("x")
	m.Queue("x", 1)
	m.Lag(time.Second)
	m.DetectorRestart("x")
	m.Reconnect()
	m.SetOutput("x", OutputStats{})
	m.SetDetector("x", 1, true)
	m.OnScrape(func() {})
	m.Alert("matched", time.Millisecond, AlertPhase{"match", time.Millisecond})
	m.DetectorCall("x", "enrich", "ok", true, time.Millisecond)
	m.InFlight(1)
}

func TestListenBadAddress(t *testing.T) {
	if _, err := Listen("256.0.0.1:99999", Handler(prometheus.NewRegistry(), nil)); err == nil {
		t.Fatal("want an error for a bad address")
	}
}

func ExampleNew() {
	reg := prometheus.NewRegistry()
	m := New(reg, "dev")
	m.Delivered("syslog", 2)
	fams, _ := reg.Gather()
	for _, f := range fams {
		if f.GetName() == "vmlineage_records_out_total" {
			fmt.Println(f.GetName(), f.Metric[0].Label[0].GetValue(), f.Metric[0].Counter.GetValue())
		}
	}
	// Output: vmlineage_records_out_total syslog 2
}

// TestAlertAndDetectorCall: an alert counts by outcome with its total
// and phase times; a detector call counts by outcome, timed only when made.
func TestAlertAndDetectorCall(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg, "test")
	m.Alert("matched", 3*time.Millisecond, AlertPhase{"match", time.Millisecond}, AlertPhase{"detectors", 2 * time.Millisecond})
	m.Alert("unmatched", time.Millisecond, AlertPhase{"match", time.Millisecond})
	m.DetectorCall("rollback", "enrich", "ok", true, 2*time.Millisecond)
	m.DetectorCall("rollback", "enrich", "skipped", false, 0)
	m.InFlight(3)
	byName := metricstest.Gather(t, reg)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"vmlineage_alerts_total", map[string]string{"outcome": "matched"}, 1},
		{"vmlineage_alerts_total", map[string]string{"outcome": "unmatched"}, 1},
		{"vmlineage_alert_enrich_seconds", nil, 2},
		{"vmlineage_alert_phase_seconds", map[string]string{"phase": "match"}, 2},
		{"vmlineage_alert_phase_seconds", map[string]string{"phase": "detectors"}, 1},
		{"vmlineage_detector_calls_total", map[string]string{"detector": "rollback", "outcome": "ok"}, 1},
		{"vmlineage_detector_calls_total", map[string]string{"detector": "rollback", "outcome": "skipped"}, 1},
		{"vmlineage_detector_call_seconds", map[string]string{"detector": "rollback"}, 1},
		{"vmlineage_alerts_in_flight", nil, 3},
	} {
		if v, ok := metricstest.Value(byName, c.name, c.labels); !ok || v != c.want {
			t.Errorf("%s%v = %v (found %v), want %v", c.name, c.labels, v, ok, c.want)
		}
	}
	if h := byName["vmlineage_alert_enrich_seconds"].GetMetric()[0].GetHistogram(); h.GetSampleSum() < 0.0039 || h.GetSampleSum() > 0.0041 {
		t.Errorf("enrich seconds sum %v, want 0.004", h.GetSampleSum())
	}
}

// With a token, /metrics answers only a request that carries it; /healthz
// stays open for probes.
func TestRequireToken(t *testing.T) {
	const token = "0123456789abcdef0123"
	h := RequireToken(Handler(prometheus.NewRegistry(), nil), token)
	for _, c := range []struct {
		path, auth string
		want       int
	}{
		{"/metrics", "", 401},
		{"/metrics", "Bearer wrong-token-0123456789", 401},
		{"/metrics", "Basic " + token, 401},
		{"/metrics", "Bearer " + token, 200},
		{"/metrics", "bearer " + token, 200},
		{"/healthz", "", 200},
	} {
		r := httptest.NewRequest("GET", c.path, nil)
		if c.auth != "" {
			r.Header.Set("Authorization", c.auth)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != c.want {
			t.Errorf("%s with %q: %d, want %d", c.path, c.auth, w.Code, c.want)
		}
		if w.Code == 401 && !strings.Contains(w.Header().Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("401 without a WWW-Authenticate challenge")
		}
	}
	w := httptest.NewRecorder()
	RequireToken(Handler(prometheus.NewRegistry(), nil), "").ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	if w.Code != 200 {
		t.Errorf("no token configured: /metrics %d", w.Code)
	}
}
