package metrics_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/vmlineage/vmlineage/agent/config"
	"github.com/vmlineage/vmlineage/agent/metrics"
	"github.com/vmlineage/vmlineage/agent/pipeline"
	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/agent/xapi/xapisim"
)

func scrapeValue(t *testing.T, url, name, label, lv string) float64 {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	f := fams[name]
	if f == nil {
		return 0
	}
	for _, m := range f.Metric {
		ok := label == ""
		for _, l := range m.Label {
			ok = ok || (l.GetName() == label && l.GetValue() == lv)
		}
		if ok && m.Counter != nil {
			return m.Counter.GetValue()
		}
	}
	return 0
}

// The threat-model scenario played by the simulator and traced by the real
// pipeline: the endpoint is scraped while records flow, and the counters
// move step by step up to the scenario's ground truth. Records reach the
// metrics through pipeline.Options.OnRecord, the hook that exists today;
// events in, outputs and lag need the pipeline to call the other methods
// (see the README's wiring).
func TestScrapeDuringSimulatedScenario(t *testing.T) {
	sc, err := xapisim.Builtin("threat-model")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "pw")
	os.WriteFile(pwFile, []byte("metrics-test\n"), 0o600)
	srv := xapisim.New(xapisim.Config{Scenario: sc, TLS: true, Password: "metrics-test"})
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	reg := prometheus.NewRegistry()
	m := metrics.New(reg, "test")
	ms, err := metrics.Listen("127.0.0.1:0", metrics.Handler(m.Gatherer(reg), nil))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	go ms.Serve(ctx)
	url := "http://" + ms.Addr()

	cfg := config.Default()
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.XAPI.URL, cfg.XAPI.Fingerprint, cfg.XAPI.PasswordFile = srv.URL(), srv.CertFingerprint(), pwFile
	cfg.XAPI.EventTimeout = config.Duration(5 * time.Second)
	a, err := pipeline.New(cfg, pipeline.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), FatalAuth: true, BackoffBase: 100 * time.Millisecond,
		OnRecord: func(r *record.Record) {
			m.Committed()
			m.Delivered("test-sink", 1)
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	actx, stop := context.WithCancel(ctx)
	defer stop()
	go a.Run(actx)
	for a.Tracer.PoolUUID() == "" {
		if ctx.Err() != nil {
			t.Fatal("agent did not sync with the simulator")
		}
		time.Sleep(20 * time.Millisecond)
	}
	played := make(chan error, 1)
	go func() { played <- srv.Play(ctx, sc, 20) }()
	want := -1 // the ground truth, known once the scenario has played

	// Scrape every 100 ms while the scenario plays; keep the distinct values.
	var seen []float64
	for {
		v := scrapeValue(t, url, "vmlineage_records_committed_total", "", "")
		if len(seen) == 0 || v != seen[len(seen)-1] {
			if len(seen) > 0 && v < seen[len(seen)-1] {
				t.Fatalf("counter went down: %v", append(seen, v))
			}
			seen = append(seen, v)
		}
		select {
		case err := <-played:
			if err != nil {
				t.Fatal(err)
			}
			truth, _ := srv.Truth()
			want = len(truth)
		default:
		}
		if want > 0 && v >= float64(want) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("timed out; counter values seen %v, truth %d", seen, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
	truth, _ := srv.Truth()
	t.Logf("records_committed_total while the scenario played: %v (ground truth %d)", seen, len(truth))
	if len(seen) < 3 {
		t.Errorf("counter should move in steps as records flow, saw only %v", seen)
	}
	if got := seen[len(seen)-1]; got != float64(len(truth)) {
		t.Errorf("records_committed_total = %v, want %d", got, len(truth))
	}
	if got := scrapeValue(t, url, "vmlineage_records_out_total", "output", "test-sink"); got != float64(len(truth)) {
		t.Errorf("records_out_total{output=test-sink} = %v, want %d", got, len(truth))
	}
}
