package esbackend

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/alerts/alertstest"
	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/internal/receivers"
	"github.com/vmlineage/vmlineage/outputs/elasticsearch"
)

// cluster is where the write-side tests write: VictoriaLogs started here
// (it takes the bulk API but keeps every version of a document: _id is
// ignored), or the Elasticsearch cluster at ES_URL (+ ES_USER,
// ES_PASSWORD, ES_API_KEY, ES_CA_FILE, ES_FINGERPRINT), in a VM index
// and record namespace of the test's own.
type cluster struct {
	out *elasticsearch.Output
	vl  *receivers.VictoriaLogs // nil for Elasticsearch
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	if u := os.Getenv("ES_URL"); u != "" {
		n := rand.Uint64()
		cfg := elasticsearch.Config{URLs: []string{u}, Namespace: fmt.Sprintf("t%d", n), VMIndex: fmt.Sprintf("vmlineage-vms-t%d", n),
			Username: os.Getenv("ES_USER"), Password: os.Getenv("ES_PASSWORD"), APIKey: os.Getenv("ES_API_KEY"),
			CAFile: os.Getenv("ES_CA_FILE"), Fingerprint: os.Getenv("ES_FINGERPRINT")}
		o, err := elasticsearch.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := o.Setup(context.Background()); err != nil {
			t.Fatal(err)
		}
		return &cluster{out: o}
	}
	v := receivers.StartVictoriaLogs(t)
	o, err := elasticsearch.New(elasticsearch.Config{URLs: []string{v.ESURL},
		Headers: map[string]string{"VL-Msg-Field": "vm.name", "VL-Time-Field": "@timestamp", "VL-Stream-Fields": "lineage.root"}})
	if err != nil {
		t.Fatal(err)
	}
	return &cluster{out: o, vl: v}
}

// latest returns the last document written for every VM.
func (c *cluster) latest(t *testing.T) map[string]Doc {
	t.Helper()
	out := map[string]Doc{}
	if c.vl == nil {
		es := c.out.Client()
		if res, err := es.Indices.Refresh(es.Indices.Refresh.WithIndex(c.out.VMIndex())); err == nil {
			res.Body.Close()
		}
		b := New(es, c.out.VMIndex(), c.out.RecordsPattern())
		ds, err := b.search(context.Background(), "all", map[string]any{"match_all": map[string]any{}}, maxHits, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			out[d.VM.UUID] = d
		}
		return out
	}
	c.vl.Flush(t)
	// VictoriaLogs flattens objects into dotted fields and keeps arrays as
	// JSON text; every version is kept, so the newest per VM is taken.
	rows := c.vl.Query(t, `vm.uuid:* | sort by (_time, _stream_id) | fields _time, _msg, vm.uuid, vm.parent_uuid, vm.destroyed, vm.power_state, lineage.root, lineage.ancestors, lineage.depth, states, attrs`)
	for _, r := range rows {
		var d Doc
		// vm.name is the message field (VL-Msg-Field).
		d.VM = DocVM{UUID: r["vm.uuid"], Name: r["_msg"], ParentUUID: r["vm.parent_uuid"], Destroyed: r["vm.destroyed"] == "true", PowerState: r["vm.power_state"]}
		d.Lineage.Root = r["lineage.root"]
		fmt.Sscan(r["lineage.depth"], &d.Lineage.Depth)
		for _, f := range []struct {
			key string
			dst any
		}{{"lineage.ancestors", &d.Lineage.Ancestors}, {"states", &d.States}, {"attrs", &d.Attrs}} {
			if v := r[f.key]; v != "" {
				if err := json.Unmarshal([]byte(v), f.dst); err != nil {
					t.Fatalf("%s of %s: %v (%q)", f.key, d.VM.UUID, err, v)
				}
			}
		}
		out[d.VM.UUID] = d // rows come oldest first
	}
	return out
}

// The writer writes every VM at its first start, then what the store
// changes: a new clone of vm5 (and the shutdown it records) shows up with
// its ancestor path, and vm5's states follow.
func TestWriterWritesAndFollowsTheStore(t *testing.T) {
	st := alertstest.ThreatModel(t)
	c := newCluster(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &Writer{Store: st, Sink: c.out, Key: "vmindex.test.cursor", Poll: 20 * time.Millisecond}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	waitCursor := func(pred func(lineage.ChangeCursor) bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			if cur, ok, err := w.cursor(ctx); err == nil && ok && pred(cur) {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatal("the writer did not get there")
	}
	waitCursor(func(lineage.ChangeCursor) bool { return true })
	docs := c.latest(t)
	if len(docs) != 6 {
		t.Fatalf("%d documents after the first start, want 6: %v", len(docs), keys(docs))
	}
	vm3 := docs[alertstest.VMUUID["vm3"]]
	if vm3.Lineage.Root != alertstest.Origin || strings.Join(vm3.Lineage.Ancestors, ",") != alertstest.Origin || vm3.VM.Name != "vm3" {
		t.Errorf("vm3: %+v", vm3)
	}
	if o := docs[alertstest.Origin]; !o.VM.Destroyed || o.Lineage.Root != alertstest.Origin || len(o.Lineage.Ancestors) != 0 {
		t.Errorf("origin: %+v", o)
	}

	// A clone of vm5, started and stopped.
	vm6 := "66666666-0000-4000-8000-000000000006"
	at := alertstest.At(300)
	before, _, _ := w.cursor(ctx)
	err := st.Update(ctx, func(tx *lineage.Tx) error {
		if err := tx.PutVM(&lineage.VM{UUID: vm6, PoolUUID: alertstest.Pool, Name: "vm6", ParentUUID: alertstest.VMUUID["vm5"], ParentVia: "clone",
			PowerState: "Halted", FirstSeen: at, LastSeen: at}); err != nil {
			return err
		}
		if err := tx.SetState(vm6, "Halted", "", at); err != nil {
			return err
		}
		if err := tx.SetAttrs(vm6, lineage.AttrIP, []string{"10.1.0.16"}, at); err != nil {
			return err
		}
		_, err := tx.PutRecord(&record.Record{ID: record.ID(alertstest.Pool, "vm6clone", 0), PoolUUID: alertstest.Pool, VMUUID: vm6, VMName: "vm6",
			ParentVMUUID: alertstest.VMUUID["vm5"], Activity: record.Clone, Start: at, End: at, Result: record.Success, Source: record.SourceXAPI})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	waitCursor(func(c lineage.ChangeCursor) bool { return c.RecordSeq > before.RecordSeq })
	docs = c.latest(t)
	d6, ok := docs[vm6]
	if !ok {
		t.Fatalf("no document for the new clone: %v", keys(docs))
	}
	if d6.Lineage.Root != alertstest.Origin || strings.Join(d6.Lineage.Ancestors, ",") != alertstest.Origin+","+alertstest.VMUUID["vm5"] ||
		d6.Lineage.Depth != 2 || d6.VM.ParentUUID != alertstest.VMUUID["vm5"] {
		t.Errorf("vm6 lineage: %+v %+v", d6.VM, d6.Lineage)
	}
	if len(d6.Attrs) != 1 || d6.Attrs[0].Kind != "ip" || d6.Attrs[0].Value != "10.1.0.16" || d6.Attrs[0].To != "" {
		t.Errorf("vm6 attrs: %+v", d6.Attrs)
	}
	cancel()
	if err := <-done; err != context.Canceled {
		t.Errorf("Run: %v", err)
	}
	// A restarted writer goes on from its position: nothing new, nothing
	// rewritten.
	cur, _, _ := w.cursor(context.Background())
	next, n, err := w.Step(context.Background(), cur)
	if err != nil || n != 0 || next != cur {
		t.Errorf("step with nothing new: %v %d %+v", err, n, next)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
