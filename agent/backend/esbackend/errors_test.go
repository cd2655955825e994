package esbackend

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/outputs/elasticsearch"
	"github.com/vmlineage/vmlineage/plugins"
)

// Answers Elasticsearch gives when things go wrong (shapes from the API
// reference): each becomes an error naming what was asked, never a
// silently shorter family.
func TestBadAnswers(t *testing.T) {
	for _, c := range []struct {
		name, answer string
		status       int
		want         string
	}{
		{"partial", `{"took":5,"timed_out":true,"_shards":{"total":2,"successful":1,"skipped":0,"failed":1},"hits":{"max_score":null,"hits":[]}}`, 200, "partial answer"},
		{"unavailable", `{"error":{"root_cause":[{"type":"search_phase_execution_exception","reason":"all shards failed"}],"type":"search_phase_execution_exception","reason":"all shards failed"},"status":503}`, 503, "HTTP 503"},
		{"truncated", `{"took":1,"timed_out":false,"_shards":{"total":1,"successful":1,"skipped":0,"failed":0},"hits":{"hits":[{"_id":"x","_sour`, 200, "malformed answer"},
		{"no index", `{"error":{"type":"index_not_found_exception","reason":"no such index [vmlineage-vms]"},"status":404}`, 404, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Elastic-Product", "Elasticsearch")
				w.WriteHeader(c.status)
				w.Write([]byte(c.answer))
			}))
			defer srv.Close()
			o, err := elasticsearch.New(elasticsearch.Config{URLs: []string{srv.URL}})
			if err != nil {
				t.Fatal(err)
			}
			b := New(o.Client(), "vmlineage-vms", "logs-vmlineage.lifecycle-*")
			vms, err := b.Descendants(context.Background(), "0e1e2e3e-0000-4000-8000-00000000000a")
			if c.want == "" {
				if err != nil || len(vms) != 0 {
					t.Errorf("no VM index yet must mean no VMs: %v %v", vms, err)
				}
				if _, err := b.VM(context.Background(), "x"); !errors.Is(err, plugins.ErrNotFound) {
					t.Errorf("404 on a get: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "descendants of") {
				t.Errorf("got %v, want an error with %q", err, c.want)
			}
		})
	}
}

func TestRecordFromECS(t *testing.T) {
	r, err := RecordFromECS([]byte(`{"@timestamp":"2024-03-01T09:00:12.000Z","event":{"id":"r1","start":"2024-03-01T09:00:10.000Z","end":"2024-03-01T09:00:12.000Z"},
		"cloud":{"instance":{"id":"vm-1","name":"web-01"}},"vmlineage.activity":"clone","vmlineage":{"parent":{"uuid":"vm-0"}},
		"xen":{"result":"success","source":"xapi","pool":{"uuid":"p"},"task":{"id":"00000000000a"},"unknown":["end"]},"user":{"name":"root"}}`))
	if err != nil || r.ID != "r1" || r.VMUUID != "vm-1" || r.VMName != "web-01" || r.ParentVMUUID != "vm-0" || r.Activity != "clone" ||
		!r.Start.Equal(time.Date(2024, 3, 1, 9, 0, 10, 0, time.UTC)) || r.PoolUUID != "p" || r.TaskID != "00000000000a" ||
		len(r.Unknown) != 1 || r.Actor == nil || r.Actor.Name != "root" {
		t.Errorf("%+v %v", r, err)
	}
	for _, bad := range []string{`[]`, `{"event":{"id":"r1"}}`, `{"event":{"id":"r1","start":"yesterday"},"cloud.instance.id":"v","vmlineage.activity":"clone"}`} {
		if _, err := RecordFromECS([]byte(bad)); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

// Whatever a cluster answers, reading a record never panics, and a record
// read has what every record has.
func FuzzRecordFromECS(f *testing.F) {
	f.Add([]byte(`{"event":{"id":"r1","start":"2024-03-01T09:00:10.000Z"},"cloud":{"instance":{"id":"vm-1"}},"vmlineage":{"activity":"clone"}}`))
	f.Add([]byte(`{"event.id":"r","event.start":"2024-03-01T09:00:10Z","host.id":"h","vmlineage.activity":"start","xen.unknown":[1,"end",null]}`))
	f.Add([]byte(`{"cloud":{"instance":"flat"},"event":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := RecordFromECS(b)
		if err == nil && (r.ID == "" || r.VMUUID == "" || r.Activity == "" || r.Start.IsZero()) {
			t.Fatalf("accepted an incomplete record: %+v", r)
		}
	})
}
