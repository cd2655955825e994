package elasticsearch

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// canned is a recorded answer from testdata.
type canned struct {
	status int
	file   string
}

// fakeES answers _bulk like Elasticsearch: scripted answers first (from
// testdata), then real create semantics (201 new, 409 existing _id).
type fakeES struct {
	t        testing.TB
	mu       sync.Mutex
	script   []canned
	requests [][]string // _ids per bulk request
	headers  []http.Header
	docs     map[string]json.RawMessage
	creates  map[string]int // create attempts per _id
	puts     map[string][]byte
	kibana   []*http.Request
	kbnBody  [][]byte
	down     bool
}

func newFake(t testing.TB, script ...canned) (*fakeES, *httptest.Server) {
	f := &fakeES{t: t, script: script, docs: map[string]json.RawMessage{}, creates: map[string]int{}, puts: map[string][]byte{}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv
}

func (f *fakeES) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	w.Header().Set("X-Elastic-Product", "Elasticsearch")
	w.Header().Set("Content-Type", "application/json")
	body, _ := io.ReadAll(r.Body)
	switch {
	case f.down:
		http.Error(w, "down", http.StatusBadGateway)
	case r.Method == http.MethodPost && r.URL.Path == "/api/saved_objects/_import":
		f.kibana = append(f.kibana, r)
		f.kbnBody = append(f.kbnBody, body)
		w.Write([]byte(`{"success":true,"successCount":9,"successResults":[]}`))
	case r.Method == http.MethodPut:
		f.puts[r.URL.Path] = body
		w.Write([]byte(`{"acknowledged":true}`))
	case r.URL.Path == "/_bulk" && r.Method == http.MethodPost:
		f.bulk(w, r, body)
	case r.URL.Path == "/":
		w.Write(readTestdata(f.t, "root.json"))
	default:
		http.Error(w, `{"error":"no handler"}`, 404)
	}
}

func (f *fakeES) bulk(w http.ResponseWriter, r *http.Request, body []byte) {
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	type act struct {
		kind, id string
		src      []byte
	}
	var acts []act
	for sc.Scan() {
		var a map[string]struct {
			Index string `json:"_index"`
			ID    string `json:"_id"`
		}
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
			f.t.Errorf("bad action line %q", sc.Bytes())
			return
		}
		if !sc.Scan() {
			f.t.Errorf("action without source")
			return
		}
		for k, v := range a {
			acts = append(acts, act{k, v.ID, append([]byte(nil), sc.Bytes()...)})
		}
	}
	ids := make([]string, len(acts))
	for i, a := range acts {
		ids[i] = a.id
	}
	f.requests = append(f.requests, ids)
	f.headers = append(f.headers, r.Header.Clone())
	if len(f.script) > 0 {
		c := f.script[0]
		f.script = f.script[1:]
		w.WriteHeader(c.status)
		w.Write(readTestdata(f.t, c.file))
		return
	}
	var items []string
	for _, a := range acts {
		switch a.kind {
		case "create":
			f.creates[a.id]++
			if _, ok := f.docs[a.id]; ok {
				items = append(items, fmt.Sprintf(`{"create":{"_id":%q,"status":409,"error":{"type":"version_conflict_engine_exception","reason":"[%s]: version conflict, document already exists (current version [1])"}}}`, a.id, a.id))
				continue
			}
			f.docs[a.id] = a.src
			items = append(items, fmt.Sprintf(`{"create":{"_id":%q,"result":"created","status":201}}`, a.id))
		case "update":
			f.docs[a.id] = a.src
			items = append(items, fmt.Sprintf(`{"update":{"_id":%q,"result":"updated","status":200}}`, a.id))
		}
	}
	fmt.Fprintf(w, `{"took":1,"errors":false,"items":[%s]}`, strings.Join(items, ","))
}

func readTestdata(t testing.TB, name string) []byte {
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
