package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/verify"
	"github.com/vmlineage/vmlineage/formats/cef"
	"github.com/vmlineage/vmlineage/internal/receivers"
)

// syslogCopies reads what rsyslog wrote for one input (the inputname of the
// listener an output sends to), in the order rsyslog wrote it: the record id
// from the CEF externalId, the chain link from cn3/flexString1, the time
// rsyslog received it. The messages themselves are returned too, for the
// chain check.
func syslogCopies(t *testing.T, rs *receivers.Rsyslog, input string) ([]Copy, []string) {
	t.Helper()
	var out []Copy
	var msgs []string
	bad := 0
	for _, m := range rs.Messages(t) {
		if m.Input != input {
			continue
		}
		i := strings.Index(m.Msg, "CEF:")
		if i < 0 {
			bad++
			continue
		}
		ev, err := cef.Parse(m.Msg[i:])
		if err != nil {
			t.Errorf("%s: unparseable CEF: %v: %q", input, err, m.Msg)
			continue
		}
		id, _ := ev.Get("externalId")
		seq, _ := ev.Custom(cef.LabelChainSeq)
		hash, _ := ev.Custom(cef.LabelChainHash)
		at, _ := time.Parse(time.RFC3339Nano, m.Received)
		out = append(out, Copy{ID: id, Link: seq + ":" + hash, At: at, Size: len(m.Raw)})
		msgs = append(msgs, m.Msg[i:])
	}
	if bad > 0 {
		t.Errorf("%s: %d messages without CEF", input, bad)
	}
	return out, msgs
}

// countSyslog counts the distinct record ids rsyslog holds per input
// (cheap enough to poll).
func countSyslog(t *testing.T, rs *receivers.Rsyslog) map[string]int {
	seen := map[string]map[string]bool{}
	for _, m := range rs.Messages(t) {
		i := strings.Index(m.Msg, "externalId=")
		if i < 0 {
			continue
		}
		f := strings.Fields(m.Msg[i+len("externalId="):])
		if len(f) == 0 || IsCheckpoint(f[0]) {
			continue
		}
		if seen[m.Input] == nil {
			seen[m.Input] = map[string]bool{}
		}
		seen[m.Input][f[0]] = true
	}
	out := map[string]int{}
	for in, s := range seen {
		out[in] = len(s)
	}
	return out
}

// vlCopies reads every document of the namespace from VictoriaLogs. It
// keeps no ingestion order (VictoriaLogs sorts by _time), so the window is
// not measured there; re-sends and conflicting copies are.
func vlCopies(t *testing.T, vl *receivers.VictoriaLogs, ns string) ([]Copy, []verify.Link) {
	t.Helper()
	vl.Flush(t)
	var out []Copy
	var links []verify.Link
	rows := vl.Query(t, `data_stream.namespace:`+ns+` | fields event.id, vmlineage.chain.seq, vmlineage.chain.hash, vmlineage.checkpoint.seq, vmlineage.checkpoint.hash`)
	for i, r := range rows {
		id := r["event.id"]
		seq, hash := r["vmlineage.chain.seq"], r["vmlineage.chain.hash"]
		cp := false
		if IsCheckpoint(id) {
			seq, hash, cp = r["vmlineage.checkpoint.seq"], r["vmlineage.checkpoint.hash"], true
		}
		out = append(out, Copy{ID: id, Link: seq + ":" + hash})
		if n, err := strconv.ParseInt(seq, 10, 64); err == nil && hash != "" {
			links = append(links, verify.Link{Seq: n, Hash: hash, Checkpoint: cp, Line: i + 1})
		} else {
			t.Errorf("victorialogs: document %s carries no chain link (%q, %q)", id, seq, hash)
		}
	}
	return out, links
}

func countVL(t *testing.T, vl *receivers.VictoriaLogs, ns string) int {
	vl.Flush(t)
	rows := vl.Query(t, `data_stream.namespace:`+ns+` event.kind:event | stats count_uniq(event.id) as n`)
	if len(rows) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(rows[0]["n"])
	return n
}

// esCluster is a real Elasticsearch cluster (ES_URL): there _id is unique
// per backing index, so documents are counted by _id.
type esCluster struct {
	url, user, password, apiKey string
	client                      *http.Client
}

func esFromEnv() *esCluster {
	u := os.Getenv("ES_URL")
	if u == "" {
		return nil
	}
	return &esCluster{url: strings.TrimSuffix(u, "/"), user: os.Getenv("ES_USER"), password: os.Getenv("ES_PASSWORD"),
		apiKey: os.Getenv("ES_API_KEY"), client: &http.Client{Timeout: time.Minute}}
}

func (e *esCluster) do(ctx context.Context, method, path string, body any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, e.url+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	switch {
	case e.apiKey != "":
		req.Header.Set("Authorization", "ApiKey "+e.apiKey)
	case e.user != "":
		req.SetBasicAuth(e.user, e.password)
	}
	res, err := e.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if res.StatusCode >= 300 {
		return b, fmt.Errorf("%s %s: %s: %s", method, path, res.Status, b)
	}
	return b, err
}

// copies reads every document of the data stream by scrolling; each copy's
// Link carries its _index and _id, so a duplicated _id would show as two
// copies with one id and different links only if stored twice.
func (e *esCluster) copies(t *testing.T, stream string) []Copy {
	ctx := context.Background()
	if _, err := e.do(ctx, "POST", "/"+stream+"/_refresh", nil); err != nil {
		t.Fatalf("elasticsearch refresh: %v", err)
	}
	type hit struct {
		Index  string `json:"_index"`
		ID     string `json:"_id"`
		Source struct {
			Event struct {
				ID string `json:"id"`
			} `json:"event"`
			VMLineage struct {
				Chain *struct {
					Seq  int64  `json:"seq"`
					Hash string `json:"hash"`
				} `json:"chain"`
			} `json:"vmlineage"`
		} `json:"_source"`
	}
	var page struct {
		ScrollID string `json:"_scroll_id"`
		Hits     struct {
			Hits []hit `json:"hits"`
		} `json:"hits"`
	}
	b, err := e.do(ctx, "POST", "/"+stream+"/_search?scroll=1m", map[string]any{"size": 5000, "_source": []string{"event.id", "vmlineage.chain"}})
	if err != nil {
		t.Fatalf("elasticsearch search: %v", err)
	}
	var out []Copy
	for {
		page.Hits.Hits = nil
		if err := json.Unmarshal(b, &page); err != nil {
			t.Fatalf("elasticsearch search answer: %v", err)
		}
		if len(page.Hits.Hits) == 0 {
			break
		}
		for _, h := range page.Hits.Hits {
			link := h.Index + "/" + h.ID
			if h.ID != h.Source.Event.ID {
				t.Errorf("elasticsearch: document _id %s carries event.id %s", h.ID, h.Source.Event.ID)
			}
			if c := h.Source.VMLineage.Chain; c != nil {
				link += fmt.Sprintf("@%d:%s", c.Seq, c.Hash)
			}
			out = append(out, Copy{ID: h.ID, Link: link})
		}
		if b, err = e.do(ctx, "POST", "/_search/scroll", map[string]any{"scroll": "1m", "scroll_id": page.ScrollID}); err != nil {
			t.Fatalf("elasticsearch scroll: %v", err)
		}
	}
	return out
}
