// Package elasticsearch is the Elasticsearch output. Records go to the data
// stream logs-<dataset>-<namespace> (default logs-vmlineage.lifecycle-default)
// with the bulk "create" action and the record id as _id, so a record sent
// twice is answered 409 and counts as delivered: exactly once in the index.
// HTTP 429/5xx and per-item 429/5xx are retried with jittered exponential
// back-off; other per-item errors go to a dead-letter file (JSON lines),
// never dropped silently. The _bulk body is written here, not by
// esutil.BulkIndexer, because BulkIndexer never retries items.
package elasticsearch

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/elastic/go-elasticsearch/v8"
	"github.com/elastic/go-elasticsearch/v8/esapi"

	"github.com/vmlineage/vmlineage/outputs"
)

// Config of the Elasticsearch output.
type Config struct {
	Name string   // default "elasticsearch"
	URLs []string // e.g. https://es1:9200
	// Authentication: APIKey (base64 "id:key", as Kibana shows it) wins over
	// ServiceToken, which wins over Username/Password.
	Username, Password string
	APIKey             string
	ServiceToken       string
	// TLS: CAFile (PEM) and/or Fingerprint (hex SHA-256 of the CA or server
	// certificate, as Elasticsearch prints it on first start).
	CAFile      string
	Fingerprint string
	// Dataset and Namespace name the data stream logs-<dataset>-<namespace>
	// (defaults vmlineage.lifecycle and default).
	Dataset   string
	Namespace string
	// VMIndex holds one document per VM (default vmlineage-vms).
	VMIndex string
	// Headers are added to every request (VictoriaLogs reads VL-Msg-Field,
	// VL-Time-Field, VL-Stream-Fields from headers).
	Headers map[string]string
	// DeadLetterPath receives items Elasticsearch refused for good (mapping
	// errors). Without it such items make Send fail, so they are never lost.
	DeadLetterPath string
	// MaxAttempts per Send before giving the batch back to the caller
	// (default 5). Backoff between attempts (default 200ms .. 30s).
	MaxAttempts int
	Backoff     outputs.Backoff
	// Timeout per HTTP request (default 60s).
	Timeout time.Duration
	// Compress request bodies with gzip.
	Compress bool

	// Setup only.
	ILMPolicy string // default "vmlineage"
	// Retention deletes backing indices older than this (default 365 days).
	RetentionDays int
	// KibanaURL, when set, makes Setup import SavedObjects (NDJSON) there;
	// KibanaSpace selects a space. SavedObjectsFile is read when
	// SavedObjects is nil.
	KibanaURL        string
	KibanaSpace      string
	SavedObjects     []byte
	SavedObjectsFile string

	// Transport overrides the HTTP transport (tests).
	Transport http.RoundTripper
}

// Output is the Elasticsearch output.
type Output struct {
	outputs.Counters
	cfg    Config
	es     *elasticsearch.Client
	dl     *outputs.DeadLetter
	stream string
	hdr    http.Header

	Requests, Malformed atomic.Uint64

	// dead holds the ids of records dead-lettered lately (oldest evicted
	// past maxDeadIDs). A batch that also holds items still failing goes
	// back to the Shipper, which sends all of it again: the settled
	// dead-lettered items are then skipped instead of written again on
	// every retry. Only in memory: after a restart such an item may be
	// dead-lettered once more.
	deadMu  sync.Mutex
	dead    map[string]struct{}
	deadIDs []string
}

// maxDeadIDs bounds Output.dead: far more than a batch's items, so a batch
// being retried never loses its entries.
const maxDeadIDs = 1 << 16

// New builds the client; it does not contact the cluster.
func New(cfg Config) (*Output, error) {
	if cfg.Name == "" {
		cfg.Name = "elasticsearch"
	}
	if len(cfg.URLs) == 0 {
		return nil, fmt.Errorf("elasticsearch output %q: no URLs", cfg.Name)
	}
	if cfg.Dataset == "" {
		cfg.Dataset = "vmlineage.lifecycle"
	}
	if cfg.Namespace == "" {
		cfg.Namespace = "default"
	}
	if err := checkPart("dataset", cfg.Dataset); err != nil {
		return nil, fmt.Errorf("elasticsearch output %q: %w", cfg.Name, err)
	}
	if err := checkPart("namespace", cfg.Namespace); err != nil {
		return nil, fmt.Errorf("elasticsearch output %q: %w", cfg.Name, err)
	}
	if cfg.VMIndex == "" {
		cfg.VMIndex = "vmlineage-vms"
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 5
	}
	if cfg.Backoff.Min <= 0 {
		cfg.Backoff.Min = 200 * time.Millisecond
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 60 * time.Second
	}
	if cfg.ILMPolicy == "" {
		cfg.ILMPolicy = "vmlineage"
	}
	if cfg.RetentionDays <= 0 {
		cfg.RetentionDays = 365
	}
	// TLS trust is ours, not the client library's: its CertificateFingerprint
	// accepts a server when the pin matches any certificate the server sent
	// (so anyone appending the public CA certificate passes), ignores CACert
	// beside it, and dials without the context or a timeout.
	tr, err := tlsTransport(cfg)
	if err != nil {
		return nil, fmt.Errorf("elasticsearch output %q: %w", cfg.Name, err)
	}
	ec := elasticsearch.Config{
		Addresses: cfg.URLs, Username: cfg.Username, Password: cfg.Password,
		APIKey: cfg.APIKey, ServiceToken: cfg.ServiceToken,
		// Retries are ours: counted, with back-off, 429 included, and per item.
		DisableRetry:        true,
		CompressRequestBody: cfg.Compress,
		Transport:           tr,
	}
	es, err := elasticsearch.NewClient(ec)
	if err != nil {
		return nil, fmt.Errorf("elasticsearch output %q: %w", cfg.Name, err)
	}
	o := &Output{cfg: cfg, es: es, stream: "logs-" + cfg.Dataset + "-" + cfg.Namespace, hdr: http.Header{}}
	for k, v := range cfg.Headers {
		o.hdr.Set(k, v)
	}
	if cfg.DeadLetterPath != "" {
		if o.dl, err = outputs.OpenDeadLetter(cfg.DeadLetterPath); err != nil {
			return nil, err
		}
	}
	return o, nil
}

// tlsTransport returns cfg.Transport, or a clone of the default transport,
// with the TLS trust of cfg.CAFile and cfg.Fingerprint. A pin is checked
// with outputs.VerifyPin (the leaf, or a CA the leaf's chain verifies up
// to); with a CA file as well, the chain must also verify to it.
func tlsTransport(cfg Config) (http.RoundTripper, error) {
	tc, err := tlsConfig(cfg.CAFile, cfg.Fingerprint)
	if err != nil || tc == nil {
		return cfg.Transport, err
	}
	base := cfg.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	ht, ok := base.(*http.Transport)
	if !ok {
		return nil, fmt.Errorf("CAFile/Fingerprint need an *http.Transport, not %T", base)
	}
	ht = ht.Clone()
	ht.TLSClientConfig = tc
	return ht, nil
}

// tlsConfig is the client TLS configuration for a CA file and/or a pin
// (nil when neither is set). Shared by the cluster and Kibana connections.
func tlsConfig(caFile, fingerprint string) (*tls.Config, error) {
	if caFile == "" && fingerprint == "" {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s: no PEM certificate in it", caFile)
		}
		tc.RootCAs = pool
	}
	if fingerprint != "" {
		want, err := outputs.ParseFingerprint(fingerprint)
		if err != nil {
			return nil, err
		}
		if caFile == "" {
			tc.InsecureSkipVerify = true // the pin replaces chain checks (VerifyConnection below)
		}
		// Runs after the chain check when a CA file is given: both must hold.
		tc.VerifyConnection = func(cs tls.ConnectionState) error {
			return outputs.VerifyPin(cs.PeerCertificates, want, true)
		}
	}
	return tc, nil
}

// checkPart applies the data stream naming scheme: lowercase, no "-" (it
// separates type, dataset and namespace), none of \ / * ? " < > | , # space.
func checkPart(what, s string) error {
	if len(s) > 100 || strings.ToLower(s) != s || strings.ContainsAny(s, "-\\/*?\"<>|, #:") {
		return fmt.Errorf("%s %q: lowercase, at most 100 bytes, no - \\ / * ? \" < > | , # : or space", what, s)
	}
	return nil
}

// Name implements outputs.Output.
func (o *Output) Name() string { return o.cfg.Name }

// DataStream is the data stream written to.
func (o *Output) DataStream() string { return o.stream }

// Client exposes the underlying client (setup, status).
func (o *Output) Client() *elasticsearch.Client { return o.es }

// op is one bulk action: its action line and its source line.
type op struct {
	item   outputs.Item
	action []byte
	source []byte
	record bool // a record of Send (unique id, fixed payload), not a VM document
}

// Send implements outputs.Output. Records this output dead-lettered
// already (in an earlier Send of the same batch) are settled and skipped.
func (o *Output) Send(ctx context.Context, items []outputs.Item) error {
	ops := make([]op, 0, len(items))
	o.deadMu.Lock()
	for _, it := range items {
		if _, done := o.dead[it.ID]; done {
			continue
		}
		a := fmt.Appendf(nil, `{"create":{"_index":%s,"_id":%s}}`, jsonStr(o.stream), jsonStr(it.ID))
		ops = append(ops, op{item: it, action: a, source: it.Payload, record: true})
	}
	o.deadMu.Unlock()
	if len(ops) == 0 {
		return nil
	}
	return o.bulk(ctx, ops)
}

// deadLettered remembers records written to the dead-letter file.
func (o *Output) deadLettered(ops []op) {
	o.deadMu.Lock()
	defer o.deadMu.Unlock()
	if o.dead == nil {
		o.dead = map[string]struct{}{}
	}
	for _, p := range ops {
		if !p.record {
			continue
		}
		if _, ok := o.dead[p.item.ID]; ok {
			continue
		}
		o.dead[p.item.ID] = struct{}{}
		o.deadIDs = append(o.deadIDs, p.item.ID)
	}
	if n := len(o.deadIDs) - maxDeadIDs; n > 0 {
		for _, id := range o.deadIDs[:n] {
			delete(o.dead, id)
		}
		o.deadIDs = append(o.deadIDs[:0], o.deadIDs[n:]...)
	}
}

// VMDoc is one VM's document in the VM index (the CLI builds it, with the
// VM's ancestor path, from the lineage store).
type VMDoc struct {
	ID  string          // VM uuid: the document _id
	Doc json.RawMessage // fields to set
}

// UpsertVMs writes one document per VM into the VM index: fields in Doc
// replace those stored, the document is created when missing.
func (o *Output) UpsertVMs(ctx context.Context, docs []VMDoc) error {
	ops := make([]op, len(docs))
	for i, d := range docs {
		a := fmt.Appendf(nil, `{"update":{"_index":%s,"_id":%s,"retry_on_conflict":3}}`, jsonStr(o.cfg.VMIndex), jsonStr(d.ID))
		src := fmt.Appendf(nil, `{"doc":%s,"doc_as_upsert":true}`, d.Doc)
		ops[i] = op{item: outputs.Item{ID: d.ID, Payload: d.Doc}, action: a, source: src}
	}
	return o.bulk(ctx, ops)
}

// IndexVMs writes whole VM documents into the VM index (bulk "index" with
// the VM uuid as _id): each replaces what was stored for that VM. The
// lineage backend (agent/backend/esbackend) builds them complete from the
// store, so a re-sent document is harmless.
func (o *Output) IndexVMs(ctx context.Context, docs []VMDoc) error {
	ops := make([]op, len(docs))
	for i, d := range docs {
		a := fmt.Appendf(nil, `{"index":{"_index":%s,"_id":%s}}`, jsonStr(o.cfg.VMIndex), jsonStr(d.ID))
		ops[i] = op{item: outputs.Item{ID: d.ID, Payload: d.Doc}, action: a, source: d.Doc}
	}
	return o.bulk(ctx, ops)
}

// VMIndex is the index of VM documents.
func (o *Output) VMIndex() string { return o.cfg.VMIndex }

// RecordsPattern matches the record data streams of every namespace
// (logs-<dataset>-*), for readers that want every pool's records.
func (o *Output) RecordsPattern() string { return "logs-" + o.cfg.Dataset + "-*" }

func jsonStr(s string) []byte {
	b, _ := json.Marshal(s)
	return b
}

// bulkResponse is the part of the _bulk answer we read.
type bulkResponse struct {
	Errors bool                         `json:"errors"`
	Items  []map[string]bulkItemOutcome `json:"items"`
}

type bulkItemOutcome struct {
	Status int `json:"status"`
	Error  *struct {
		Type   string `json:"type"`
		Reason string `json:"reason"`
	} `json:"error"`
}

func (b bulkItemOutcome) reason() string {
	if b.Error == nil {
		return fmt.Sprintf("status %d", b.Status)
	}
	return fmt.Sprintf("%s: %s", b.Error.Type, b.Error.Reason)
}

// ErrPermanent marks items Elasticsearch refused for good while no
// dead-letter file is configured.
var ErrPermanent = errors.New("elasticsearch: items refused (configure a dead-letter file)")

func retryable(status int) bool { return status == 429 || status >= 500 }

// kept reports statuses whose items are kept and retried rather than
// dead-lettered: transient ones (retryable, 408 from a proxy or load
// balancer) and those an operator fixes (401/403: credentials or index
// privileges; 404: a data stream that cannot be created). Elasticsearch
// reports missing index privileges per item in a 200 answer, so this holds
// per item as well as for the whole request.
func kept(status int) bool {
	return retryable(status) || status == 401 || status == 403 || status == 404 || status == 408
}

// bulk sends ops until each is delivered (2xx, or 409 for create),
// dead-lettered, or MaxAttempts ran out.
func (o *Output) bulk(ctx context.Context, ops []op) error {
	pending := ops
	var lastErr error
	var dead []outputs.DeadLetterEntry
	var deadOps []op
	delivered := 0
	for attempt := 1; len(pending) > 0; attempt++ {
		if attempt > 1 {
			o.AddRetried(len(pending))
			if err := o.cfg.Backoff.Sleep(ctx, attempt-1); err != nil {
				lastErr = fmt.Errorf("%w (last error: %v)", err, lastErr)
				break
			}
		}
		var again []op
		status, outcomes, err := o.post(ctx, pending)
		switch {
		case err != nil:
			lastErr = err
			again = pending
		case status == http.StatusRequestEntityTooLarge && len(pending) > 1:
			// Too big for http.max_content_length: halve it, keep going.
			half := len(pending) / 2
			if err := o.bulk(ctx, pending[:half]); err != nil {
				return err
			}
			pending = pending[half:]
			attempt = 0
			continue
		case status >= 300:
			lastErr = fmt.Errorf("elasticsearch output %q: bulk: HTTP %d", o.cfg.Name, status)
			if kept(status) {
				again = pending
			} else {
				for _, p := range pending {
					dead = append(dead, outputs.Entry(o.cfg.Name, p.item, status, lastErr.Error()))
				}
				deadOps = append(deadOps, pending...)
			}
		default:
			for i, p := range pending {
				oc := outcomes[i]
				switch {
				case oc.Status >= 200 && oc.Status < 300, oc.Status == 409 && bytes.HasPrefix(p.action, []byte(`{"create"`)):
					delivered++
				case kept(oc.Status):
					lastErr = fmt.Errorf("elasticsearch output %q: item %s: %s", o.cfg.Name, p.item.ID, oc.reason())
					again = append(again, p)
				default:
					dead = append(dead, outputs.Entry(o.cfg.Name, p.item, oc.Status, oc.reason()))
					deadOps = append(deadOps, p)
				}
			}
		}
		pending = again
		if len(pending) > 0 && attempt >= o.cfg.MaxAttempts {
			break
		}
	}
	o.AddSent(delivered)
	if len(dead) > 0 {
		if o.dl == nil {
			err := fmt.Errorf("%w: %d item(s), first %s: %s", ErrPermanent, len(dead), dead[0].ID, dead[0].Error)
			o.Fail(len(dead)+len(pending), err)
			return err
		}
		if err := o.dl.Write(dead); err != nil {
			o.Fail(len(dead)+len(pending), err)
			return err
		}
		o.deadLettered(deadOps)
		o.AddDeadLettered(len(dead))
		o.Fail(len(dead), fmt.Errorf("elasticsearch output %q: %d item(s) dead-lettered to %s, first %s: %s", o.cfg.Name, len(dead), o.dl.Path(), dead[0].ID, dead[0].Error))
	}
	if len(pending) > 0 {
		if lastErr == nil {
			lastErr = fmt.Errorf("elasticsearch output %q: %d item(s) not delivered", o.cfg.Name, len(pending))
		}
		o.Fail(len(pending), lastErr)
		return lastErr
	}
	return nil
}

// post sends one _bulk request. A 2xx answer must be well-formed with one
// outcome per op; anything else is an error to retry.
func (o *Output) post(ctx context.Context, ops []op) (int, []bulkItemOutcome, error) {
	// A buffer per request: Send and UpsertVMs may run concurrently.
	size := 0
	for _, p := range ops {
		size += len(p.action) + len(p.source) + 2
	}
	var buf bytes.Buffer
	buf.Grow(size)
	for _, p := range ops {
		buf.Write(p.action)
		buf.WriteByte('\n')
		buf.Write(p.source)
		buf.WriteByte('\n')
	}
	rctx, cancel := context.WithTimeout(ctx, o.cfg.Timeout)
	defer cancel()
	o.Requests.Add(1)
	res, err := esapi.BulkRequest{Body: bytes.NewReader(buf.Bytes()), Header: o.hdr}.Do(rctx, o.es)
	if err != nil {
		return 0, nil, fmt.Errorf("elasticsearch output %q: bulk: %w", o.cfg.Name, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 256<<20))
	if err != nil {
		return 0, nil, fmt.Errorf("elasticsearch output %q: reading bulk answer: %w", o.cfg.Name, err)
	}
	if res.StatusCode >= 300 {
		return res.StatusCode, nil, nil
	}
	var br bulkResponse
	if err := json.Unmarshal(body, &br); err != nil {
		o.Malformed.Add(1)
		return 0, nil, fmt.Errorf("elasticsearch output %q: malformed bulk answer (HTTP %d, %d bytes): %w", o.cfg.Name, res.StatusCode, len(body), err)
	}
	if len(br.Items) != len(ops) {
		o.Malformed.Add(1)
		return 0, nil, fmt.Errorf("elasticsearch output %q: bulk answer has %d items for %d actions", o.cfg.Name, len(br.Items), len(ops))
	}
	out := make([]bulkItemOutcome, len(ops))
	for i, m := range br.Items {
		for _, v := range m { // one key: the action name
			out[i] = v
		}
		if out[i].Status == 0 {
			o.Malformed.Add(1)
			return 0, nil, fmt.Errorf("elasticsearch output %q: bulk answer item %d has no status", o.cfg.Name, i)
		}
	}
	return res.StatusCode, out, nil
}

// Close implements outputs.Output.
func (o *Output) Close() error {
	if o.dl != nil {
		return o.dl.Close()
	}
	return nil
}
