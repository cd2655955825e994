package elasticsearch

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/outputs"
)

func doc(i int) outputs.Item {
	id := fmt.Sprintf("ID%d", i)
	p := fmt.Sprintf(`{"@timestamp":"2026-11-26T10:00:%02d.000Z","message":"VM vm-%d started","event":{"id":%q,"dataset":"vmlineage.lifecycle","action":"vm-start"}}`, i%60, i, id)
	return outputs.Item{ID: id, Payload: []byte(p), Time: time.Now()}
}

func docs(n int) []outputs.Item {
	out := make([]outputs.Item, n)
	for i := range out {
		out[i] = doc(i)
	}
	return out
}

func fast(cfg Config) Config {
	cfg.Backoff = outputs.Backoff{Min: time.Millisecond, Max: 5 * time.Millisecond}
	return cfg
}

func TestWholeRequestErrorsAreRetried(t *testing.T) {
	f, srv := newFake(t, canned{429, "429.json"}, canned{500, "500.json"}, canned{503, "503.json"})
	o, err := New(fast(Config{URLs: []string{srv.URL}}))
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Send(context.Background(), docs(3)); err != nil {
		t.Fatal(err)
	}
	if len(f.requests) != 4 || len(f.docs) != 3 {
		t.Fatalf("%d requests, %d docs", len(f.requests), len(f.docs))
	}
	if h := o.Health(); h.Sent != 3 || h.Retried != 9 || h.DeadLettered != 0 {
		t.Fatalf("health %+v", h)
	}
}

func TestMixedItemOutcomes(t *testing.T) {
	f, srv := newFake(t, canned{200, "bulk_mixed.json"})
	dl := filepath.Join(t.TempDir(), "dead.jsonl")
	o, err := New(fast(Config{URLs: []string{srv.URL}, DeadLetterPath: dl}))
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if err := o.Send(context.Background(), docs(5)); err != nil {
		t.Fatal(err)
	}
	// Only the 429 and 503 items go again; 201 and 409 are delivered; 400 is dead.
	if len(f.requests) != 2 || strings.Join(f.requests[1], ",") != "ID3,ID4" {
		t.Fatalf("requests %v", f.requests)
	}
	h := o.Health()
	if h.Sent != 4 || h.DeadLettered != 1 || h.Retried != 2 || !strings.Contains(h.LastError, "document_parsing_exception") {
		t.Fatalf("health %+v", h)
	}
	b, err := os.ReadFile(dl)
	if err != nil {
		t.Fatal(err)
	}
	var e outputs.DeadLetterEntry
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("dead letter %q: %v", b, err)
	}
	if e.ID != "ID2" || e.Status != 400 || !strings.Contains(e.Error, "failed to parse field [event.duration]") ||
		string(e.Event) != string(doc(2).Payload) || e.Output != "elasticsearch" {
		t.Fatalf("dead letter %+v", e)
	}
}

func TestMalformedAnswerIsRetried(t *testing.T) {
	f, srv := newFake(t, canned{200, "malformed.json"})
	o, _ := New(fast(Config{URLs: []string{srv.URL}}))
	if err := o.Send(context.Background(), docs(2)); err != nil {
		t.Fatal(err)
	}
	if o.Malformed.Load() != 1 || len(f.requests) != 2 || len(f.docs) != 2 {
		t.Fatalf("malformed %d, requests %d", o.Malformed.Load(), len(f.requests))
	}
}

func TestGivesBackAfterMaxAttempts(t *testing.T) {
	_, srv := newFake(t, canned{503, "503.json"}, canned{503, "503.json"}, canned{503, "503.json"})
	o, _ := New(fast(Config{URLs: []string{srv.URL}, MaxAttempts: 3}))
	err := o.Send(context.Background(), docs(4))
	if err == nil || !strings.Contains(err.Error(), "HTTP 503") {
		t.Fatalf("want the 503 back, got %v", err)
	}
	if h := o.Health(); h.Failed != 4 || h.Sent != 0 {
		t.Fatalf("health %+v", h)
	}
	// The caller sends again; now it goes through.
	if err := o.Send(context.Background(), docs(4)); err != nil {
		t.Fatal(err)
	}
}

func TestRefusedWithoutDeadLetterFails(t *testing.T) {
	_, srv := newFake(t, canned{200, "bulk_mixed.json"})
	o, _ := New(fast(Config{URLs: []string{srv.URL}}))
	err := o.Send(context.Background(), docs(5))
	if !errors.Is(err, ErrPermanent) {
		t.Fatalf("want ErrPermanent, got %v", err)
	}
}

func TestDuplicateIsDelivered(t *testing.T) {
	f, srv := newFake(t)
	o, _ := New(fast(Config{URLs: []string{srv.URL}}))
	for i := 0; i < 3; i++ {
		if err := o.Send(context.Background(), docs(10)); err != nil {
			t.Fatal(err)
		}
	}
	if len(f.docs) != 10 || f.creates["ID0"] != 3 || o.Health().Sent != 30 {
		t.Fatalf("docs %d, creates %d", len(f.docs), f.creates["ID0"])
	}
}

func TestTooLargeIsSplit(t *testing.T) {
	f, srv := newFake(t, canned{413, "500.json"})
	o, _ := New(fast(Config{URLs: []string{srv.URL}}))
	if err := o.Send(context.Background(), docs(8)); err != nil {
		t.Fatal(err)
	}
	if len(f.docs) != 8 || len(f.requests) != 3 || len(f.requests[1]) != 4 {
		t.Fatalf("requests %v", f.requests)
	}
}

func TestAuthAndHeaders(t *testing.T) {
	f, srv := newFake(t)
	o, _ := New(Config{URLs: []string{srv.URL}, APIKey: "aWQ6a2V5", Headers: map[string]string{"VL-Msg-Field": "message"}})
	o.Send(context.Background(), docs(1))
	o2, _ := New(Config{URLs: []string{srv.URL}, Username: "elastic", Password: "pw"})
	o2.Send(context.Background(), docs(1))
	// go-elasticsearch writes "APIKey"; Elasticsearch reads the scheme case-insensitively.
	if a := f.headers[0].Get("Authorization"); !strings.EqualFold(a, "ApiKey aWQ6a2V5") || f.headers[0].Get("VL-Msg-Field") != "message" {
		t.Fatalf("api key header %q", a)
	}
	if u, p, ok := (&http.Request{Header: f.headers[1]}).BasicAuth(); !ok || u != "elastic" || p != "pw" {
		t.Fatalf("basic auth %v %q %q", ok, u, p)
	}
	if ct := f.headers[0].Get("Content-Type"); ct != "application/json" && ct != "application/x-ndjson" {
		t.Fatalf("content type %q", ct)
	}
}

func TestBadNames(t *testing.T) {
	for _, c := range []Config{{URLs: []string{"http://x"}, Namespace: "Prod"}, {URLs: []string{"http://x"}, Dataset: "a-b"}, {}} {
		if _, err := New(c); err == nil {
			t.Fatalf("%+v accepted", c)
		}
	}
}

func TestTLSFingerprintAndCA(t *testing.T) {
	f := &fakeES{t: t, docs: map[string]json.RawMessage{}, creates: map[string]int{}, puts: map[string][]byte{}}
	srv := httptest.NewTLSServer(f)
	defer srv.Close()
	cert := srv.Certificate()
	sum := sha256.Sum256(cert.Raw)
	fp := hex.EncodeToString(sum[:])
	o, err := New(fast(Config{URLs: []string{srv.URL}, Fingerprint: fp, MaxAttempts: 1}))
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Send(context.Background(), docs(1)); err != nil {
		t.Fatalf("pinned fingerprint refused: %v", err)
	}
	bad, _ := New(fast(Config{URLs: []string{srv.URL}, Fingerprint: strings.Repeat("00", 32), MaxAttempts: 1}))
	if err := bad.Send(context.Background(), docs(1)); err == nil {
		t.Fatal("wrong fingerprint accepted")
	}
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o644)
	withCA, err := New(fast(Config{URLs: []string{srv.URL}, CAFile: ca, MaxAttempts: 1}))
	if err != nil {
		t.Fatal(err)
	}
	if err := withCA.Send(context.Background(), docs(2)); err != nil {
		t.Fatalf("CA file refused: %v", err)
	}
	none, _ := New(fast(Config{URLs: []string{srv.URL}, MaxAttempts: 1}))
	if err := none.Send(context.Background(), docs(1)); err == nil {
		t.Fatal("unknown CA accepted")
	}
}

func TestSetup(t *testing.T) {
	f, srv := newFake(t)
	nd := []byte(`{"type":"index-pattern","id":"vmlineage-lifecycle","attributes":{"title":"logs-vmlineage.lifecycle-*"}}` + "\n")
	o, _ := New(Config{URLs: []string{srv.URL}, KibanaURL: srv.URL, SavedObjects: nd, Username: "elastic", Password: "pw"})
	steps, err := o.Setup(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != 4 {
		t.Fatalf("steps %+v", steps)
	}
	var tmpl struct {
		IndexPatterns []string       `json:"index_patterns"`
		DataStream    map[string]any `json:"data_stream"`
		Priority      int            `json:"priority"`
		Template      struct {
			Settings map[string]any `json:"settings"`
		} `json:"template"`
	}
	if err := json.Unmarshal(f.puts["/_index_template/logs-vmlineage.lifecycle"], &tmpl); err != nil {
		t.Fatalf("template: %v (%v)", err, f.puts)
	}
	if tmpl.Priority <= 100 || tmpl.DataStream == nil || tmpl.IndexPatterns[0] != "logs-vmlineage.lifecycle-*" || tmpl.Template.Settings["index.lifecycle.name"] != "vmlineage" {
		t.Fatalf("template %+v", tmpl)
	}
	if _, ok := f.puts["/_ilm/policy/vmlineage"]; !ok {
		t.Fatal("no ILM policy")
	}
	if _, ok := f.puts["/_index_template/vmlineage-vms"]; !ok {
		t.Fatal("no VM index template")
	}
	if len(f.kibana) != 1 {
		t.Fatal("no Kibana import")
	}
	k := f.kibana[0]
	if k.Header.Get("kbn-xsrf") != "true" || k.URL.Query().Get("overwrite") != "true" || !strings.HasPrefix(k.Header.Get("Content-Type"), "multipart/form-data") {
		t.Fatalf("kibana request %v %v", k.URL, k.Header)
	}
	if !strings.Contains(string(f.kbnBody[0]), string(nd)) || !strings.Contains(string(f.kbnBody[0]), `name="file"`) {
		t.Fatalf("kibana body %q", f.kbnBody[0])
	}
}

func TestUpsertVMs(t *testing.T) {
	f, srv := newFake(t)
	o, _ := New(Config{URLs: []string{srv.URL}})
	err := o.UpsertVMs(context.Background(), []VMDoc{{ID: "vm-1", Doc: json.RawMessage(`{"vm":{"uuid":"vm-1","ancestors":["vm-0"]}}`)}})
	if err != nil {
		t.Fatal(err)
	}
	if string(f.docs["vm-1"]) != `{"doc":{"vm":{"uuid":"vm-1","ancestors":["vm-0"]}},"doc_as_upsert":true}` {
		t.Fatalf("upsert body %s", f.docs["vm-1"])
	}
}

// FuzzBulkAnswer: whatever the server answers, Send neither panics nor
// reports success unless every item is accounted for.
func FuzzBulkAnswer(f *testing.F) {
	for _, n := range []string{"bulk_mixed.json", "malformed.json", "429.json", "root.json"} {
		b, _ := os.ReadFile(filepath.Join("testdata", n))
		f.Add(200, b)
	}
	f.Fuzz(func(t *testing.T, status int, answer []byte) {
		if status < 200 || status > 599 {
			return
		}
		calls := 0
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Elastic-Product", "Elasticsearch")
			calls++
			w.WriteHeader(status)
			w.Write(answer)
		}))
		defer srv.Close()
		o, _ := New(Config{URLs: []string{srv.URL}, MaxAttempts: 1, DeadLetterPath: filepath.Join(t.TempDir(), "dl")})
		err := o.Send(context.Background(), docs(2))
		h := o.Health()
		if err == nil && h.Sent+h.DeadLettered != 2 {
			t.Fatalf("nil error but %d sent + %d dead of 2 (status %d, %q)", h.Sent, h.DeadLettered, status, answer)
		}
		if err != nil && h.Sent+h.DeadLettered >= 2 {
			t.Fatalf("error %v but all accounted for", err)
		}
	})
}

// countLines counts JSON lines in a file.
func countLines(t *testing.T, path string) int {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		n++
	}
	return n
}
