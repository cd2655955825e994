package esbackend

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	es8 "github.com/elastic/go-elasticsearch/v8"
	"github.com/elastic/go-elasticsearch/v8/esapi"

	"github.com/vmlineage/vmlineage/agent/backend"
	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/plugins"
)

// Backend reads lineage from the VM index and the record data streams.
type Backend struct {
	es      *es8.Client
	vms     string // VM index
	recs    string // record data streams (pattern)
	timeout time.Duration
	queries atomic.Int64
}

var _ backend.Lineage = (*Backend)(nil)

// New reads through client: VM documents from vmIndex, records from
// recordsPattern (elasticsearch.Output's VMIndex and RecordsPattern).
func New(client *es8.Client, vmIndex, recordsPattern string) *Backend {
	return &Backend{es: client, vms: vmIndex, recs: recordsPattern, timeout: 10 * time.Second}
}

// Queries is how many requests the backend made.
func (b *Backend) Queries() int64 { return b.queries.Load() }

// Close implements backend.Lineage (the client needs no closing).
func (b *Backend) Close() error { return nil }

// Fresh implements backend.Lineage: nothing is cached.
func (b *Backend) Fresh(context.Context) error { return nil }

// maxHits bounds one search (Elasticsearch's default index.max_result_window
// is 10,000).
const maxHits = 10000

// do runs a request and decodes a 2xx answer into out; 404 is ErrNotFound.
func (b *Backend) do(ctx context.Context, what string, req esapi.Request, out any) error {
	b.queries.Add(1)
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	res, err := req.Do(ctx, b.es)
	if err != nil {
		return fmt.Errorf("elasticsearch %s: %w", what, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("elasticsearch %s: reading the answer: %w", what, err)
	}
	if res.StatusCode == http.StatusNotFound {
		return fmt.Errorf("elasticsearch %s: %w", what, plugins.ErrNotFound)
	}
	if res.IsError() {
		return fmt.Errorf("elasticsearch %s: HTTP %d: %s", what, res.StatusCode, firstBytes(body, 300))
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("elasticsearch %s: malformed answer (%d bytes): %w", what, len(body), err)
	}
	return nil
}

func firstBytes(b []byte, n int) string {
	if len(b) > n {
		b = b[:n]
	}
	return strings.TrimSpace(string(b))
}

type getAnswer struct {
	Found  bool `json:"found"`
	Source Doc  `json:"_source"`
}

type searchAnswer struct {
	TimedOut bool `json:"timed_out"`
	Shards   struct {
		Failed int `json:"failed"`
	} `json:"_shards"`
	Hits struct {
		Hits []struct {
			ID     string          `json:"_id"`
			Source json.RawMessage `json:"_source"`
		} `json:"hits"`
	} `json:"hits"`
}

func (a *searchAnswer) check(what string) error {
	if a.TimedOut || a.Shards.Failed > 0 {
		// A partial answer would silently drop VMs from a family.
		return fmt.Errorf("elasticsearch %s: partial answer (timed out %v, %d shards failed)", what, a.TimedOut, a.Shards.Failed)
	}
	return nil
}

// doc reads one VM document.
func (b *Backend) doc(ctx context.Context, uuid string) (*Doc, error) {
	var a getAnswer
	err := b.do(ctx, "get VM "+uuid, esapi.GetRequest{Index: b.vms, DocumentID: uuid}, &a)
	if errors.Is(err, plugins.ErrNotFound) || (err == nil && !a.Found) {
		return nil, fmt.Errorf("VM %s: %w", uuid, plugins.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	return &a.Source, nil
}

// docs reads VM documents by uuid (missing ones left out).
func (b *Backend) docs(ctx context.Context, uuids []string) (map[string]*Doc, error) {
	out := make(map[string]*Doc, len(uuids))
	if len(uuids) == 0 {
		return out, nil
	}
	body, _ := json.Marshal(map[string]any{"ids": uuids})
	var a struct {
		Docs []struct {
			ID     string `json:"_id"`
			Found  bool   `json:"found"`
			Source Doc    `json:"_source"`
		} `json:"docs"`
	}
	if err := b.do(ctx, "mget VMs", esapi.MgetRequest{Index: b.vms, Body: bytes.NewReader(body)}, &a); err != nil {
		return nil, err
	}
	for i := range a.Docs {
		if a.Docs[i].Found {
			out[a.Docs[i].ID] = &a.Docs[i].Source
		}
	}
	return out, nil
}

// search runs a query over the VM index and decodes the documents.
func (b *Backend) search(ctx context.Context, what string, query map[string]any, size int, sortBy []any) ([]Doc, error) {
	q := map[string]any{"query": query, "size": size, "track_total_hits": false}
	if sortBy != nil {
		q["sort"] = sortBy
	}
	body, _ := json.Marshal(q)
	var a searchAnswer
	if err := b.do(ctx, what, esapi.SearchRequest{Index: []string{b.vms}, Body: bytes.NewReader(body)}, &a); err != nil {
		if errors.Is(err, plugins.ErrNotFound) {
			return nil, nil // no VM index yet: no VMs
		}
		return nil, err
	}
	if err := a.check(what); err != nil {
		return nil, err
	}
	out := make([]Doc, len(a.Hits.Hits))
	for i, h := range a.Hits.Hits {
		if err := json.Unmarshal(h.Source, &out[i]); err != nil {
			return nil, fmt.Errorf("elasticsearch %s: document %s: %w", what, h.ID, err)
		}
	}
	return out, nil
}

// familyOrder sorts like the store: depth, then first sighting, then uuid.
var familyOrder = []any{
	map[string]any{"lineage.depth": "asc"}, map[string]any{"vm.first_seen": "asc"}, map[string]any{"vm.uuid": "asc"},
}

func term(field, value string) map[string]any {
	return map[string]any{"term": map[string]any{field: value}}
}

func toVMs(ds []Doc) []plugins.VM {
	out := make([]plugins.VM, len(ds))
	for i := range ds {
		out[i] = ds[i].ToVM()
	}
	return out
}

// VM implements backend.Lineage.
func (b *Backend) VM(ctx context.Context, uuid string) (plugins.VM, error) {
	d, err := b.doc(ctx, uuid)
	if err != nil {
		return plugins.VM{}, err
	}
	return d.ToVM(), nil
}

// Ancestors implements backend.Lineage: nearest first.
func (b *Backend) Ancestors(ctx context.Context, uuid string) ([]plugins.VM, error) {
	d, err := b.doc(ctx, uuid)
	if err != nil {
		return nil, err
	}
	ds, err := b.docs(ctx, d.Lineage.Ancestors)
	if err != nil {
		return nil, err
	}
	var out []plugins.VM
	for i := len(d.Lineage.Ancestors) - 1; i >= 0; i-- {
		if a := ds[d.Lineage.Ancestors[i]]; a != nil {
			out = append(out, a.ToVM())
		}
	}
	return out, nil
}

// Descendants implements backend.Lineage: one term query on
// lineage.ancestors, breadth first.
func (b *Backend) Descendants(ctx context.Context, uuid string) ([]plugins.VM, error) {
	ds, err := b.search(ctx, "descendants of "+uuid, term("lineage.ancestors", uuid), maxHits, familyOrder)
	return toVMs(ds), err
}

// Siblings implements backend.Lineage.
func (b *Backend) Siblings(ctx context.Context, uuid string) ([]plugins.VM, error) {
	d, err := b.doc(ctx, uuid)
	if err != nil || d.VM.ParentUUID == "" {
		return nil, err
	}
	ds, err := b.search(ctx, "siblings of "+uuid, map[string]any{"bool": map[string]any{
		"filter":   []any{term("vm.parent_uuid", d.VM.ParentUUID)},
		"must_not": []any{term("vm.uuid", uuid)},
	}}, maxHits, []any{map[string]any{"vm.first_seen": "asc"}, map[string]any{"vm.uuid": "asc"}})
	return toVMs(ds), err
}

// Family implements backend.Lineage.
func (b *Backend) Family(ctx context.Context, uuid string) ([]plugins.VM, error) {
	f, err := b.FamilyOf(ctx, uuid, 0)
	if err != nil {
		return nil, err
	}
	if f == nil {
		return nil, fmt.Errorf("family of %s has more than %d VMs", uuid, maxHits)
	}
	out := make([]plugins.VM, len(f.Members))
	for i := range f.Members {
		out[i] = f.Members[i].VM
	}
	return out, nil
}

// FamilyOf implements backend.Lineage: the VM's document for its root,
// then one term query on lineage.root.
func (b *Backend) FamilyOf(ctx context.Context, uuid string, limit int) (*backend.Family, error) {
	d, err := b.doc(ctx, uuid)
	if err != nil {
		return nil, err
	}
	size := maxHits
	if limit > 0 && limit < maxHits {
		size = limit + 1
	}
	ds, err := b.search(ctx, "family of "+uuid, term("lineage.root", d.root()), size, familyOrder)
	if err != nil {
		return nil, err
	}
	if len(ds) >= size || (limit > 0 && len(ds) > limit) {
		return nil, nil
	}
	ms := make([]backend.FamilyMember, 0, len(ds))
	for i := range ds {
		ms = append(ms, ds[i].member())
	}
	if len(ms) == 0 || ms[0].UUID != d.root() {
		// The index is behind (the root's document not written yet): an
		// answer without the root would misplace every member.
		return nil, fmt.Errorf("elasticsearch: family of %s: root %s has no document", uuid, d.root())
	}
	return backend.NewFamily(ms), nil
}

// AncestryAt implements backend.Lineage.
func (b *Backend) AncestryAt(ctx context.Context, uuid string, at time.Time) ([]backend.Member, error) {
	d, err := b.doc(ctx, uuid)
	if err != nil {
		return nil, err
	}
	ds, err := b.docs(ctx, d.Lineage.Ancestors)
	if err != nil {
		return nil, err
	}
	chain := []*Doc{d}
	for i := len(d.Lineage.Ancestors) - 1; i >= 0; i-- {
		if a := ds[d.Lineage.Ancestors[i]]; a != nil {
			chain = append(chain, a)
		}
	}
	out := make([]backend.Member, len(chain))
	for i, c := range chain {
		st, _ := c.stateAt(at)
		out[i] = backend.Member{VM: c.ToVM(), Depth: c.Lineage.Depth, State: st}
	}
	return out, nil
}

// FamilyUUIDs implements backend.Lineage: root and its descendants.
func (b *Backend) FamilyUUIDs(ctx context.Context, root string, limit int) ([]string, error) {
	size := maxHits
	if limit > 0 && limit < maxHits {
		size = limit + 1
	}
	q := map[string]any{"bool": map[string]any{"should": []any{term("vm.uuid", root), term("lineage.ancestors", root)}, "minimum_should_match": 1}}
	ds, err := b.search(ctx, "family of "+root, q, size, familyOrder)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(ds))
	for i := range ds {
		out[i] = ds[i].VM.UUID
	}
	return out, nil
}

// VMsAt implements backend.Lineage.
func (b *Backend) VMsAt(ctx context.Context, uuids []string, at time.Time) ([]backend.Member, error) {
	ds, err := b.docs(ctx, uuids)
	if err != nil {
		return nil, err
	}
	out := make([]backend.Member, len(uuids))
	for i, u := range uuids {
		d := ds[u]
		if d == nil {
			out[i] = backend.Member{VM: plugins.VM{UUID: u}, State: plugins.VMState{UUID: u}}
			continue
		}
		st, _ := d.stateAt(at)
		out[i] = backend.Member{VM: d.ToVM(), Depth: d.Lineage.Depth, State: st}
	}
	return out, nil
}

// StatesAt implements backend.Lineage.
func (b *Backend) StatesAt(ctx context.Context, uuids []string, at time.Time) ([]plugins.VMState, error) {
	ms, err := b.VMsAt(ctx, uuids, at)
	if err != nil {
		return nil, err
	}
	out := make([]plugins.VMState, len(ms))
	for i := range ms {
		out[i] = ms[i].State
	}
	return out, nil
}

// FindVMs implements backend.Lineage: a uuid by id, a name or an address by
// one nested query over the spans it was held.
func (b *Backend) FindVMs(ctx context.Context, kind, value string, at time.Time) ([]string, error) {
	switch kind {
	case backend.KindUUID:
		d, err := b.doc(ctx, strings.ToLower(strings.TrimSpace(value)))
		if errors.Is(err, plugins.ErrNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		return []string{d.VM.UUID}, nil
	case backend.KindName, backend.KindIP, backend.KindMAC:
	default:
		return nil, fmt.Errorf("esbackend: unknown key kind %q", kind)
	}
	if kind == backend.KindMAC {
		value = strings.ToLower(strings.TrimSpace(value))
	}
	t := ts(at)
	q := map[string]any{"nested": map[string]any{"path": "attrs", "query": map[string]any{"bool": map[string]any{"filter": []any{
		term("attrs.kind", kind),
		term("attrs.value", value),
		map[string]any{"range": map[string]any{"attrs.from": map[string]any{"lte": t}}},
		map[string]any{"bool": map[string]any{"minimum_should_match": 1, "should": []any{
			map[string]any{"range": map[string]any{"attrs.to": map[string]any{"gt": t}}},
			map[string]any{"bool": map[string]any{"must_not": []any{map[string]any{"exists": map[string]any{"field": "attrs.to"}}}}},
		}}},
	}}}}}
	ds, err := b.search(ctx, kind+" "+value, q, 100, []any{map[string]any{"vm.uuid": "asc"}})
	if err != nil {
		return nil, err
	}
	var out []string
	for i := range ds {
		out = append(out, ds[i].VM.UUID)
	}
	sort.Strings(out)
	return out, nil
}

// Records implements backend.Lineage from the record data streams.
func (b *Backend) Records(ctx context.Context, q plugins.RecordQuery) ([]record.Record, error) {
	return b.records(ctx, q.VMUUID, q.Activity, q.Since, q.Until, q.Limit)
}

// RecordsOfVM implements backend.Lineage.
func (b *Backend) RecordsOfVM(ctx context.Context, uuid string, since, until time.Time, limit int) ([]record.Record, error) {
	return b.records(ctx, uuid, "", since, until, limit)
}

// RecordFacts implements backend.Lineage.
func (b *Backend) RecordFacts(ctx context.Context, uuid string, since, until time.Time, limit int) ([]plugins.RecordFact, error) {
	rs, err := b.records(ctx, uuid, "", since, until, limit)
	if err != nil {
		return nil, err
	}
	out := make([]plugins.RecordFact, len(rs))
	for i := range rs {
		out[i] = plugins.RecordFact{VMUUID: rs[i].VMUUID, Activity: rs[i].Activity, Start: rs[i].Start}
	}
	return out, nil
}

func (b *Backend) records(ctx context.Context, vm string, act record.Activity, since, until time.Time, limit int) ([]record.Record, error) {
	var filter []any
	if vm != "" {
		filter = append(filter, map[string]any{"bool": map[string]any{"minimum_should_match": 1, "should": []any{
			term("cloud.instance.id", vm), term("vmlineage.parent.uuid", vm)}}})
	}
	if act != "" {
		filter = append(filter, term("vmlineage.activity", string(act)))
	}
	if !since.IsZero() || !until.IsZero() {
		r := map[string]any{}
		if !since.IsZero() {
			r["gte"] = ts(since)
		}
		if !until.IsZero() {
			r["lt"] = ts(until)
		}
		filter = append(filter, map[string]any{"range": map[string]any{"event.start": r}})
	}
	size := maxHits
	if limit > 0 && limit < maxHits {
		size = limit
	}
	body, _ := json.Marshal(map[string]any{"size": size, "track_total_hits": false,
		"query": map[string]any{"bool": map[string]any{"filter": filter}},
		"sort":  []any{map[string]any{"event.start": "asc"}, map[string]any{"event.id": "asc"}}})
	var a searchAnswer
	err := b.do(ctx, "records of "+vm, esapi.SearchRequest{Index: []string{b.recs}, Body: bytes.NewReader(body),
		AllowNoIndices: esapi.BoolPtr(true), IgnoreUnavailable: esapi.BoolPtr(true)}, &a)
	if errors.Is(err, plugins.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if err := a.check("records of " + vm); err != nil {
		return nil, err
	}
	out := make([]record.Record, 0, len(a.Hits.Hits))
	seen := map[string]bool{}
	for _, h := range a.Hits.Hits {
		r, err := RecordFromECS(h.Source)
		if err != nil {
			return nil, fmt.Errorf("elasticsearch record %s: %w", h.ID, err)
		}
		if seen[r.ID] {
			continue // one pool shipped to two namespaces: the same record twice
		}
		seen[r.ID] = true
		out = append(out, r)
	}
	return out, nil
}
