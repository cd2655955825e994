package pipeline_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/config"
	"github.com/vmlineage/vmlineage/agent/xapi/xapisim"
)

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func get(t *testing.T, url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func metricValue(body, name string) float64 {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `(\{[^}]*\})? ([0-9.e+]+)$`).FindStringSubmatch(body)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(m[2], 64)
	return v
}

// TestAgentServesMetricsAndWebView runs the agent with its metrics endpoint
// and web view on, plays threat-model with a file output, and checks the
// counters move with the records and the view serves the tree.
func TestAgentServesMetricsAndWebView(t *testing.T) {
	sc, _ := xapisim.Builtin("threat-model")
	h := newHarness(t, sc, true, "")
	cfg := h.config()
	cfg.Metrics.Listen, cfg.WebUI.Listen = freeAddr(t), freeAddr(t)
	cfg.Outputs = []config.Output{{Name: "archive", Type: "file", Format: "ecs", Path: filepath.Join(h.dir, "out.jsonl")}}
	ctx := context.Background()
	a := h.startAgent(ctx, cfg)
	base := "http://" + cfg.Metrics.Listen
	if code, body := get(t, base+"/healthz"); code != 200 {
		t.Errorf("/healthz after the first sync: %d %s", code, body)
	}
	_, before := get(t, base+"/metrics")
	if err := h.srv.Play(ctx, sc, 0); err != nil {
		t.Fatal(err)
	}
	truth, _ := h.srv.Truth()
	waitTraced(t, a.Store, truth, 30*time.Second)
	var after string
	waitUntil(t, ctx, 20*time.Second, "records delivered to the file output", func() bool {
		_, after = get(t, base+"/metrics")
		return metricValue(after, `vmlineage_records_out_total`) >= float64(len(truth))
	})
	if got := metricValue(after, "vmlineage_records_committed_total"); got != float64(len(truth)) {
		t.Errorf("records committed: %v, want %d", got, len(truth))
	}
	if got := metricValue(after, "vmlineage_chain_head_seq"); got != float64(len(truth)) {
		t.Errorf("chain head: %v, want %d (every record sealed as stored)", got, len(truth))
	}
	if got := metricValue(after, "vmlineage_chain_unsealed_records"); got != 0 {
		t.Errorf("unsealed records: %v", got)
	}
	if b, a := metricValue(before, "vmlineage_events_in_total"), metricValue(after, "vmlineage_events_in_total"); !(a > b) {
		t.Errorf("events in did not move: %v -> %v", b, a)
	}
	code, body := get(t, "http://"+cfg.WebUI.Listen+"/api/tree")
	if code != 200 {
		t.Fatalf("/api/tree: %d %s", code, body)
	}
	var tree any
	if err := json.Unmarshal([]byte(body), &tree); err != nil || len(fmt.Sprint(tree)) < 100 {
		t.Errorf("/api/tree is not a tree: %v %.200s", err, body)
	}
}

// With metrics.token_file, the agent's /metrics wants the token; /healthz
// stays open.
func TestAgentMetricsToken(t *testing.T) {
	sc, _ := xapisim.Builtin("threat-model")
	h := newHarness(t, sc, true, "")
	cfg := h.config()
	cfg.Metrics.Listen = freeAddr(t)
	cfg.Metrics.TokenFile = filepath.Join(h.dir, "metrics-token")
	const token = "metrics-token-0123456789"
	os.WriteFile(cfg.Metrics.TokenFile, []byte(token+"\n"), 0o600)
	h.startAgent(context.Background(), cfg)
	base := "http://" + cfg.Metrics.Listen
	if code, _ := get(t, base+"/metrics"); code != http.StatusUnauthorized {
		t.Errorf("/metrics without the token: %d", code)
	}
	req, _ := http.NewRequest("GET", base+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || metricValue(string(b), "vmlineage_records_committed_total") < 0 {
		t.Errorf("/metrics with the token: %d %.200s", resp.StatusCode, b)
	}
	if code, body := get(t, base+"/healthz"); code == http.StatusUnauthorized {
		t.Errorf("/healthz wants a token: %s", body)
	}
}
