package esbackend

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/formats"
	"github.com/vmlineage/vmlineage/formats/ecs"
	"github.com/vmlineage/vmlineage/outputs"
	"github.com/vmlineage/vmlineage/outputs/elasticsearch"
)

// The query side is tested against recorded exchanges with Elasticsearch
// (testdata/es-*.json): each request the backend makes (method, path,
// body) and the answer. With ES_URL set the same tests run against that
// cluster instead, writing their documents first; with
// VMLINEAGE_ES_RECORD=1 as well they record the exchanges anew.
//
// No cluster was at hand when the committed files were made: their
// answers are written in the shapes the Elasticsearch 8 API reference
// gives for get, mget and search (envelopes, _source, "found", hits
// without total when track_total_hits is false), holding the documents
// BuildDoc makes for the threat-model and the ECS records formats/ecs
// writes. A request the files do not hold fails the test, so a change of
// query shows.

type esExchange struct {
	Method   string          `json:"method"`
	Path     string          `json:"path"`
	Body     json.RawMessage `json:"body,omitempty"`
	Status   int             `json:"status"`
	Response json.RawMessage `json:"response"`
}

type esRecording struct {
	VMIndex   string       `json:"vm_index"`
	Namespace string       `json:"namespace"`
	Exchanges []esExchange `json:"exchanges"`
}

// esSession is a cluster to read from: live (ES_URL, through a recording
// proxy) or replayed.
type esSession struct {
	live      bool
	direct    *elasticsearch.Output // live: writes go straight to the cluster
	read      *elasticsearch.Output // reads: through the proxy or the replay
	vmIndex   string
	namespace string

	mu  sync.Mutex
	rec esRecording
}

func canonical(b []byte) string {
	if len(bytes.TrimSpace(b)) == 0 {
		return ""
	}
	var v any
	if json.Unmarshal(b, &v) != nil {
		return string(b)
	}
	c, _ := json.Marshal(v)
	return string(c)
}

func newESSession(t *testing.T, name string) *esSession {
	t.Helper()
	file := filepath.Join("testdata", "es-"+name+".json")
	s := &esSession{}
	var srv *httptest.Server
	if u := os.Getenv("ES_URL"); u != "" {
		s.live = true
		n := rand.Uint64()
		s.vmIndex, s.namespace = fmt.Sprintf("vmlineage-vms-t%d", n), fmt.Sprintf("t%d", n)
		cfg := esEnvConfig(u)
		cfg.VMIndex, cfg.Namespace = s.vmIndex, s.namespace
		o, err := elasticsearch.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := o.Setup(context.Background()); err != nil {
			t.Fatal(err)
		}
		s.direct = o
		target, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tr, err := esEnvTransport()
		if err != nil {
			t.Fatal(err)
		}
		srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			out, err := http.NewRequestWithContext(r.Context(), r.Method, target.JoinPath(r.URL.Path).String()+querySuffix(r.URL), bytes.NewReader(body))
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			out.Header = r.Header.Clone()
			res, err := tr.RoundTrip(out)
			if err != nil {
				http.Error(w, err.Error(), 502)
				return
			}
			defer res.Body.Close()
			ans, _ := io.ReadAll(res.Body)
			s.mu.Lock()
			s.rec.Exchanges = append(s.rec.Exchanges, esExchange{Method: r.Method, Path: r.URL.RequestURI(), Body: jsonOrNil(body), Status: res.StatusCode, Response: jsonOrNil(ans)})
			s.mu.Unlock()
			for k, v := range res.Header {
				w.Header()[k] = v
			}
			w.WriteHeader(res.StatusCode)
			w.Write(ans)
		}))
		t.Cleanup(func() {
			if os.Getenv("VMLINEAGE_ES_RECORD") == "" || t.Failed() {
				return
			}
			s.rec.VMIndex, s.rec.Namespace = s.vmIndex, s.namespace
			b, _ := json.MarshalIndent(s.rec, "", " ")
			if err := os.WriteFile(file, append(b, '\n'), 0o644); err != nil {
				t.Error(err)
			}
		})
	} else {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var rec esRecording
		if err := json.Unmarshal(b, &rec); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		s.vmIndex, s.namespace = rec.VMIndex, rec.Namespace
		answers := map[string]esExchange{}
		for _, x := range rec.Exchanges {
			answers[x.Method+" "+x.Path+" "+canonical(x.Body)] = x
		}
		srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			key := r.Method + " " + r.URL.RequestURI() + " " + canonical(body)
			x, ok := answers[key]
			w.Header().Set("X-Elastic-Product", "Elasticsearch")
			w.Header().Set("Content-Type", "application/json")
			if !ok {
				t.Errorf("request not in %s: %s", file, key)
				w.WriteHeader(http.StatusTeapot)
				w.Write([]byte(`{"error":"not recorded"}`))
				return
			}
			w.WriteHeader(x.Status)
			w.Write(x.Response)
		}))
	}
	t.Cleanup(srv.Close)
	cfg := esEnvConfig(srv.URL)
	cfg.CAFile, cfg.Fingerprint = "", "" // the proxy speaks plain HTTP
	cfg.VMIndex, cfg.Namespace = s.vmIndex, s.namespace
	o, err := elasticsearch.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.read = o
	return s
}

func querySuffix(u *url.URL) string {
	if u.RawQuery == "" {
		return ""
	}
	return "?" + u.RawQuery
}

func jsonOrNil(b []byte) json.RawMessage {
	if len(bytes.TrimSpace(b)) == 0 || !json.Valid(b) {
		return nil
	}
	return json.RawMessage(b)
}

func esEnvConfig(u string) elasticsearch.Config {
	return elasticsearch.Config{URLs: []string{u}, Username: os.Getenv("ES_USER"), Password: os.Getenv("ES_PASSWORD"),
		APIKey: os.Getenv("ES_API_KEY"), CAFile: os.Getenv("ES_CA_FILE"), Fingerprint: os.Getenv("ES_FINGERPRINT")}
}

// esEnvTransport trusts what ES_CA_FILE and ES_FINGERPRINT say.
func esEnvTransport() (http.RoundTripper, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if f := os.Getenv("ES_CA_FILE"); f != "" {
		pem, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		tc.RootCAs = pool
	}
	if fp := strings.ToLower(strings.ReplaceAll(os.Getenv("ES_FINGERPRINT"), ":", "")); fp != "" {
		tc.InsecureSkipVerify = tc.RootCAs == nil // the pin replaces chain checks
		tc.VerifyConnection = func(cs tls.ConnectionState) error {
			for _, c := range cs.PeerCertificates {
				sum := sha256.Sum256(c.Raw)
				if hex.EncodeToString(sum[:]) == fp {
					return nil
				}
			}
			return fmt.Errorf("certificate does not match ES_FINGERPRINT")
		}
	}
	tr.TLSClientConfig = tc
	return tr, nil
}

// backend reads through the session (records of the session's namespace
// only: a cluster may hold earlier runs').
func (s *esSession) backend() *Backend {
	return New(s.read.Client(), s.read.VMIndex(), s.read.DataStream())
}

// writeStore (live only) writes every VM of st as a document and every
// record into the session's data stream, as an agent's Elasticsearch
// output would, and makes them searchable.
func (s *esSession) writeStore(t *testing.T, st *lineage.Store) {
	t.Helper()
	if !s.live {
		return
	}
	ctx := context.Background()
	w := &Writer{Store: st, Sink: s.direct, Key: "vmindex.test.cursor"}
	w.Batch = 500
	if err := w.all(ctx, false); err != nil {
		t.Fatal(err)
	}
	recs, err := st.RecordsAfter(ctx, 0, 100000)
	if err != nil {
		t.Fatal(err)
	}
	var items []outputs.Item
	for i := range recs {
		r := &recs[i].Record
		h, err := st.VMHistory(ctx, r.VMUUID)
		c := &formats.Context{Namespace: s.namespace}
		if err == nil {
			c.AncestorPath, c.FamilyRoot = h.AncestorPath, BuildDoc(&h).Lineage.Root
		}
		items = append(items, outputs.Item{ID: r.ID, Payload: ecs.Marshal(r, c), Time: r.End})
	}
	if err := s.direct.Send(ctx, items); err != nil {
		t.Fatal(err)
	}
	es := s.direct.Client()
	res, err := es.Indices.Refresh(es.Indices.Refresh.WithIndex(s.vmIndex, s.direct.DataStream()))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
}
