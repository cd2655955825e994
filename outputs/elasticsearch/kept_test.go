package elasticsearch

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// itemServer answers every bulk request 200 with status(i) for item i (0:
// 201), as Elasticsearch reports per-item errors (missing index privileges:
// 403 security_exception; a data stream it cannot create: 404).
func itemServer(t *testing.T, status func(line string) (int, string)) (*httptest.Server, *atomic.Int64) {
	var reqs atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reqs.Add(1)
		w.Header().Set("X-Elastic-Product", "Elasticsearch")
		body, _ := io.ReadAll(r.Body)
		var items []string
		for i, l := range strings.Split(strings.TrimSpace(string(body)), "\n") {
			if i%2 == 1 {
				continue
			}
			st, typ := status(l)
			if st == 0 {
				items = append(items, `{"create":{"status":201}}`)
			} else {
				items = append(items, fmt.Sprintf(`{"create":{"status":%d,"error":{"type":%q,"reason":"test"}}}`, st, typ))
			}
		}
		fmt.Fprintf(w, `{"took":1,"errors":true,"items":[%s]}`, strings.Join(items, ","))
	}))
	t.Cleanup(srv.Close)
	return srv, &reqs
}

func lines(path string) int {
	b, _ := os.ReadFile(path)
	return strings.Count(string(b), "\n")
}

// TestPerItemAuthIsKept: per-item 401/403/404 are kept and retried (Send
// fails, so the spool keeps them) like the same whole-request statuses,
// not dead-lettered and acknowledged; a 400 beside them is dead-lettered.
func TestPerItemAuthIsKept(t *testing.T) {
	for _, c := range []struct {
		status int
		typ    string
	}{{403, "security_exception"}, {404, "index_not_found_exception"}, {401, "security_exception"}, {403, "cluster_block_exception"}} {
		t.Run(fmt.Sprint(c.status, c.typ), func(t *testing.T) {
			srv, reqs := itemServer(t, func(l string) (int, string) {
				if strings.Contains(l, `"_id":"ID0"`) {
					return 400, "mapper_parsing_exception"
				}
				return c.status, c.typ
			})
			dl := filepath.Join(t.TempDir(), "dead.jsonl")
			o, err := New(fast(Config{URLs: []string{srv.URL}, DeadLetterPath: dl, MaxAttempts: 3}))
			if err != nil {
				t.Fatal(err)
			}
			if err := o.Send(context.Background(), docs(3)); err == nil {
				t.Errorf("per-item %d %s: Send returned nil (the spool would be acknowledged)", c.status, c.typ)
			}
			if n := lines(dl); n != 1 || o.Health().DeadLettered != 1 {
				t.Errorf("dead letters: %d lines, counter %d; want only the 400 item", n, o.Health().DeadLettered)
			}
			if reqs.Load() != 3 {
				t.Errorf("%d requests, want 3 (MaxAttempts)", reqs.Load())
			}
		})
	}
}

// TestWholeRequest408IsKept: a proxy's 408 is transient; the batch is kept.
func TestWholeRequest408IsKept(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Elastic-Product", "Elasticsearch")
		http.Error(w, "request timeout", http.StatusRequestTimeout)
	}))
	defer srv.Close()
	dl := filepath.Join(t.TempDir(), "dead.jsonl")
	o, _ := New(fast(Config{URLs: []string{srv.URL}, DeadLetterPath: dl, MaxAttempts: 2}))
	if err := o.Send(context.Background(), docs(50)); err == nil || lines(dl) != 0 {
		t.Errorf("HTTP 408: Send %v, %d dead-lettered", err, lines(dl))
	}
}

// TestDeadLetteredOnce: a batch with a permanent failure (400) and an item
// Elasticsearch keeps answering 429 goes back to the Shipper, which sends
// all of it again; the 400 item is dead-lettered once, not once per retry,
// and is not sent again.
func TestDeadLetteredOnce(t *testing.T) {
	var id0 atomic.Int64
	srv, _ := itemServer(t, func(l string) (int, string) {
		switch {
		case strings.Contains(l, `"_id":"ID0"`):
			id0.Add(1)
			return 400, "mapper_parsing_exception"
		case strings.Contains(l, `"_id":"ID1"`):
			return 429, "es_rejected_execution_exception"
		}
		return 0, ""
	})
	dl := filepath.Join(t.TempDir(), "dead.jsonl")
	o, _ := New(fast(Config{URLs: []string{srv.URL}, DeadLetterPath: dl, MaxAttempts: 2}))
	for range 3 { // three Shipper retries of the same batch
		if err := o.Send(context.Background(), docs(3)); err == nil {
			t.Fatal("Send returned nil with ID1 still refused")
		}
	}
	if n := lines(dl); n != 1 || o.Health().DeadLettered != 1 || id0.Load() != 1 {
		t.Errorf("ID0 dead-lettered %d times (counter %d), sent %d times; want once", n, o.Health().DeadLettered, id0.Load())
	}
}
