package elasticsearch

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/internal/receivers"
	"github.com/vmlineage/vmlineage/outputs"
	"github.com/vmlineage/vmlineage/outputs/spool"
)

// backend is where the integration tests write: VictoriaLogs started here,
// or the Elasticsearch cluster at ES_URL.
type backend struct {
	name      string
	cfg       Config
	stopStart bool
	stop      func()
	start     func()
	// docs returns the stored documents by event.id (all copies).
	docs func(t *testing.T) map[string][]map[string]string
}

var vlHeaders = map[string]string{"VL-Msg-Field": "message", "VL-Time-Field": "@timestamp", "VL-Stream-Fields": "event.dataset"}

func newBackend(t *testing.T) *backend {
	t.Helper()
	if u := os.Getenv("ES_URL"); u != "" {
		ns := fmt.Sprintf("t%d", rand.Uint64())
		cfg := Config{URLs: []string{u}, Namespace: ns, Username: os.Getenv("ES_USER"), Password: os.Getenv("ES_PASSWORD"),
			APIKey: os.Getenv("ES_API_KEY"), CAFile: os.Getenv("ES_CA_FILE"), Fingerprint: os.Getenv("ES_FINGERPRINT")}
		o, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := o.Setup(context.Background()); err != nil {
			t.Fatal(err)
		}
		return &backend{name: "elasticsearch", cfg: cfg, docs: func(t *testing.T) map[string][]map[string]string {
			return esDocs(t, o)
		}}
	}
	v := receivers.StartVictoriaLogs(t)
	return &backend{name: "victorialogs", cfg: Config{URLs: []string{v.ESURL}, Headers: vlHeaders}, stopStart: true,
		stop: v.Stop, start: v.Start,
		docs: func(t *testing.T) map[string][]map[string]string {
			v.Flush(t)
			out := map[string][]map[string]string{}
			for _, r := range v.Query(t, `event.dataset:"vmlineage.lifecycle" | fields event.id, _msg, event.action, vm.name, _time`) {
				out[r["event.id"]] = append(out[r["event.id"]], r)
			}
			return out
		}}
}

// esDocs reads back every document of the test's data stream from a real
// cluster (after a refresh), keyed by _id.
func esDocs(t *testing.T, o *Output) map[string][]map[string]string {
	ctx := context.Background()
	es := o.Client()
	if res, err := es.Indices.Refresh(es.Indices.Refresh.WithIndex(o.DataStream()), es.Indices.Refresh.WithContext(ctx)); err == nil {
		res.Body.Close()
	}
	out := map[string][]map[string]string{}
	res, err := es.Search(es.Search.WithIndex(o.DataStream()), es.Search.WithSize(10000), es.Search.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var ans struct {
		Hits struct {
			Hits []struct {
				ID     string          `json:"_id"`
				Source json.RawMessage `json:"_source"`
			} `json:"hits"`
		} `json:"hits"`
	}
	json.NewDecoder(res.Body).Decode(&ans)
	for _, h := range ans.Hits.Hits {
		var d struct {
			Message string `json:"message"`
			Event   struct {
				ID     string `json:"id"`
				Action string `json:"action"`
			} `json:"event"`
			VM struct {
				Name string `json:"name"`
			} `json:"vm"`
		}
		json.Unmarshal(h.Source, &d)
		out[h.ID] = append(out[h.ID], map[string]string{"event.id": d.Event.ID, "_msg": d.Message, "event.action": d.Event.Action, "vm.name": d.VM.Name})
	}
	return out
}

var names = []string{"web-01", "pipe|and=eq\\back", "quote\"d", "new\nline", "\u202eevil\u202c", "日本語", "nul\x00byte"}

func ecsDoc(i int) outputs.Item {
	id := fmt.Sprintf("rec-%06d", i)
	ts := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Millisecond)
	m := map[string]any{
		"@timestamp": ts.Format("2006-01-02T15:04:05.000Z"),
		"message":    fmt.Sprintf("VM %s started (%d)", names[i%len(names)], i),
		"event":      map[string]any{"id": id, "dataset": "vmlineage.lifecycle", "action": "vm-start", "kind": "event"},
		"vm":         map[string]any{"name": names[i%len(names)]},
	}
	b, _ := json.Marshal(m)
	return outputs.Item{ID: id, Payload: b, Time: ts}
}

func ecsDocs(from, n int) []outputs.Item {
	out := make([]outputs.Item, n)
	for i := range out {
		out[i] = ecsDoc(from + i)
	}
	return out
}

func checkAll(t *testing.T, b *backend, n int, wantNoDup bool) (dups int) {
	t.Helper()
	var got map[string][]map[string]string
	deadline := time.Now().Add(20 * time.Second)
	for {
		got = b.docs(t)
		if len(got) >= n || time.Now().After(deadline) {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	for i := 0; i < n; i++ {
		it := ecsDoc(i)
		copies := got[it.ID]
		if len(copies) == 0 {
			t.Fatalf("%s: record %s missing (%d of %d stored)", b.name, it.ID, len(got), n)
		}
		dups += len(copies) - 1
		var want struct {
			Message string `json:"message"`
			VM      struct {
				Name string `json:"name"`
			} `json:"vm"`
		}
		json.Unmarshal(it.Payload, &want)
		c := copies[0]
		if tm, ok := c["_time"]; ok {
			if got, err := time.Parse(time.RFC3339Nano, tm); err != nil || !got.Equal(it.Time) {
				t.Fatalf("%s: record %s time %q, want %s", b.name, it.ID, tm, it.Time)
			}
		}
		if c["_msg"] != want.Message || c["vm.name"] != want.VM.Name || c["event.action"] != "vm-start" {
			t.Fatalf("%s: record %s stored as %q, want message %q vm.name %q", b.name, it.ID, c, want.Message, want.VM.Name)
		}
	}
	if wantNoDup && dups > 0 {
		t.Fatalf("%s: %d duplicates by _id", b.name, dups)
	}
	return dups
}

func TestRoundTrip(t *testing.T) {
	for _, gz := range []bool{false, true} {
		t.Run(fmt.Sprintf("gzip=%v", gz), func(t *testing.T) { roundTrip(t, gz) })
	}
}

func roundTrip(t *testing.T, gz bool) {
	b := newBackend(t)
	cfg := b.cfg
	cfg.Compress = gz
	o, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	const n = 700
	items := ecsDocs(0, n)
	for i := 0; i < n; i += 100 {
		if err := o.Send(context.Background(), items[i:i+100]); err != nil {
			t.Fatal(err)
		}
	}
	if h := o.Health(); h.Sent != n || h.Failed != 0 {
		t.Fatalf("health %+v", h)
	}
	checkAll(t, b, n, true)
}

// TestOutage stops the receiver while records flow through a spool and
// restarts it: every record arrives.
func TestOutage(t *testing.T) {
	b := newBackend(t)
	if !b.stopStart {
		t.Skip("ES_URL cluster cannot be stopped from here")
	}
	cfg := b.cfg
	cfg.MaxAttempts = 2
	cfg.Backoff = outputs.Backoff{Min: 10 * time.Millisecond, Max: 100 * time.Millisecond}
	o, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := spool.Open(t.TempDir(), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	sh := &spool.Shipper{Spool: sp, Output: o, BatchSize: 100, Backoff: outputs.Backoff{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sh.Run(ctx); close(done) }()
	const n = 3000
	for i := 0; i < n; i += 50 {
		if err := sp.Append(ctx, ecsDocs(i, 50)); err != nil {
			t.Fatal(err)
		}
		if i == 1000 {
			b.stop()
		}
		if i == 2000 {
			time.Sleep(500 * time.Millisecond)
			b.start()
		}
		time.Sleep(time.Millisecond)
	}
	deadline := time.Now().Add(60 * time.Second)
	for sp.Stats().Records > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	<-done
	h := sh.Health()
	if h.Health.Failed == 0 {
		t.Fatal("the outage was not noticed")
	}
	dups := checkAll(t, b, n, false)
	t.Logf("%s outage: %d records, all arrived, %d duplicates (VictoriaLogs ignores _id; Elasticsearch answers 409), health %+v", b.name, n, dups, h.Health)
}

// --- SIGKILL during delivery: the test binary re-runs itself as the agent.

func TestMain(m *testing.M) {
	if os.Getenv("ES_CHILD") == "shipper" {
		childShipper()
		return
	}
	os.Exit(m.Run())
}

func childShipper() {
	var cfg Config
	json.Unmarshal([]byte(os.Getenv("ES_CFG")), &cfg)
	cfg.Backoff = outputs.Backoff{Min: 10 * time.Millisecond, Max: 100 * time.Millisecond}
	o, err := New(cfg)
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	sp, err := spool.Open(os.Getenv("SPOOL_DIR"), spool.Options{SegmentBytes: 64 << 10})
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	sh := &spool.Shipper{Spool: sp, Output: o, BatchSize: 1 + rand.IntN(200), Backoff: cfg.Backoff}
	go func() {
		for sp.Stats().Records > 0 {
			time.Sleep(10 * time.Millisecond)
		}
		fmt.Println("DRAINED")
		os.Exit(0)
	}()
	sh.Run(context.Background())
}

func TestSIGKILLDuringDelivery(t *testing.T) {
	b := newBackend(t)
	kills := sigkillRun(t, b.cfg, 20000)
	dups := checkAll(t, b, 20000, b.name == "elasticsearch")
	t.Logf("%s: 20000 records, %d SIGKILLs during delivery, all arrived, %d duplicates stored", b.name, kills, dups)
}

// TestSIGKILLNoDuplicateByID runs the same against the fake that enforces
// create semantics: re-sent records are answered 409, counted as delivered,
// and each _id is stored once.
func TestSIGKILLNoDuplicateByID(t *testing.T) {
	f, srv := newFake(t)
	kills := sigkillRun(t, Config{URLs: []string{srv.URL}}, 5000)
	f.mu.Lock()
	defer f.mu.Unlock()
	resent := 0
	for i := 0; i < 5000; i++ {
		id := ecsDoc(i).ID
		if _, ok := f.docs[id]; !ok {
			t.Fatalf("record %s missing", id)
		}
		resent += f.creates[id] - 1
	}
	if len(f.docs) != 5000 {
		t.Fatalf("%d docs stored", len(f.docs))
	}
	t.Logf("5000 records, %d SIGKILLs, each stored once; %d re-sends answered 409", kills, resent)
}

func sigkillRun(t *testing.T, cfg Config, n int) int {
	dir := t.TempDir()
	sp, err := spool.Open(dir, spool.Options{SegmentBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i += 500 {
		if err := sp.Append(context.Background(), ecsDocs(i, 500)); err != nil {
			t.Fatal(err)
		}
	}
	sp.Close()
	cfgJSON, _ := json.Marshal(cfg)
	run := func(wait time.Duration) string {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "ES_CHILD=shipper", "SPOOL_DIR="+dir, "ES_CFG="+string(cfgJSON))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		select {
		case <-exited:
		case <-time.After(wait):
			cmd.Process.Signal(syscall.SIGKILL)
			<-exited
		}
		if strings.Contains(out.String(), "ERR") {
			t.Fatalf("child: %s", out.String())
		}
		return out.String()
	}
	kills := 0
	for i := 0; i < 20; i++ {
		if strings.Contains(run(time.Duration(20+rand.IntN(120))*time.Millisecond), "DRAINED") {
			break
		}
		kills++
	}
	if out := run(60 * time.Second); !strings.Contains(out, "DRAINED") {
		t.Fatalf("spool not drained: %s", out)
	}
	return kills
}

// The setup request bodies are accepted by a real cluster (ES_URL only).
func TestSetupRealCluster(t *testing.T) {
	if os.Getenv("ES_URL") == "" {
		t.Skip("ES_URL not set: setup is checked against the recorded fake (TestSetup)")
	}
	b := newBackend(t) // runs Setup
	_ = b
	res, err := http.Get(os.Getenv("ES_URL") + "/_index_template/logs-vmlineage.lifecycle")
	if err == nil {
		res.Body.Close()
	}
}
