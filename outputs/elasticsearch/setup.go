package elasticsearch

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/elastic/go-elasticsearch/v8/esapi"
)

// templatePriority beats the built-in logs template (priority 100), which
// would otherwise match logs-*-* first.
const templatePriority = 200

// IndexTemplate is the composable template for the data stream.
func (o *Output) IndexTemplate() map[string]any {
	return map[string]any{
		"index_patterns": []string{"logs-" + o.cfg.Dataset + "-*"},
		"data_stream":    map[string]any{},
		"priority":       templatePriority,
		"_meta":          map[string]any{"managed_by": "vmlineage", "description": "vmlineage VM lifecycle records (ECS)"},
		"template": map[string]any{
			"settings": map[string]any{
				"index.lifecycle.name":             o.cfg.ILMPolicy,
				"index.mapping.total_fields.limit": 2000,
			},
			"mappings": lifecycleMappings(),
		},
	}
}

func kw() map[string]any { return map[string]any{"type": "keyword", "ignore_above": 1024} }

func lifecycleMappings() map[string]any {
	date := map[string]any{"type": "date"}
	ip := map[string]any{"type": "ip"}
	return map[string]any{
		// Strings not named below are keywords, as in ECS.
		"dynamic_templates": []any{
			map[string]any{"strings_as_keyword": map[string]any{"match_mapping_type": "string", "mapping": kw()}},
		},
		"properties": map[string]any{
			"@timestamp": date,
			"message":    map[string]any{"type": "match_only_text"},
			"ecs":        props(map[string]any{"version": kw()}),
			"event": props(map[string]any{
				"kind": kw(), "category": kw(), "type": kw(), "action": kw(), "outcome": kw(),
				"id": kw(), "dataset": kw(), "module": kw(), "provider": kw(),
				"start": date, "end": date, "created": date, "ingested": date,
				"duration": map[string]any{"type": "long"}, "sequence": map[string]any{"type": "long"},
				"original": map[string]any{"type": "keyword", "index": false, "doc_values": false},
			}),
			"host":     props(map[string]any{"id": kw(), "name": kw(), "hostname": kw(), "type": kw(), "ip": ip}),
			"observer": props(map[string]any{"hostname": kw(), "name": kw(), "type": kw(), "vendor": kw(), "product": kw(), "ip": ip}),
			"related":  props(map[string]any{"hosts": kw(), "user": kw(), "ip": ip}),
			"data_stream": props(map[string]any{
				"type": map[string]any{"type": "constant_keyword"}, "dataset": map[string]any{"type": "constant_keyword"},
				"namespace": map[string]any{"type": "constant_keyword"},
			}),
			"error": props(map[string]any{"message": map[string]any{"type": "match_only_text"}, "code": kw(), "type": kw()}),
		},
	}
}

func props(p map[string]any) map[string]any { return map[string]any{"properties": p} }

// ILMPolicyBody rolls over at 50 GB per primary shard or 30 days and deletes
// after RetentionDays.
func (o *Output) ILMPolicyBody() map[string]any {
	return map[string]any{"policy": map[string]any{
		"_meta": map[string]any{"managed_by": "vmlineage"},
		"phases": map[string]any{
			"hot": map[string]any{"actions": map[string]any{
				"rollover": map[string]any{"max_primary_shard_size": "50gb", "max_age": "30d"},
			}},
			"delete": map[string]any{"min_age": fmt.Sprintf("%dd", o.cfg.RetentionDays), "actions": map[string]any{"delete": map[string]any{}}},
		},
	}}
}

// VMIndexTemplate maps the VM index (one document per VM, see
// agent/backend/esbackend): lineage.ancestors makes "descendants of X" one
// term query, lineage.root "the family of X"; states and attrs are nested
// so that a value and its time span match together (which VM held
// 10.0.0.5 at 09:01).
func (o *Output) VMIndexTemplate() map[string]any {
	date := map[string]any{"type": "date"}
	return map[string]any{
		"index_patterns": []string{o.cfg.VMIndex},
		"priority":       templatePriority,
		"_meta":          map[string]any{"managed_by": "vmlineage", "description": "vmlineage: one document per VM, its lineage and its states, names and addresses over time"},
		"template": map[string]any{"mappings": map[string]any{
			"dynamic_templates": []any{
				map[string]any{"strings_as_keyword": map[string]any{"match_mapping_type": "string", "mapping": kw()}},
			},
			"properties": map[string]any{
				"@timestamp": date,
				"vm": props(map[string]any{
					"uuid": kw(), "name": kw(), "kind": kw(), "pool_uuid": kw(), "host_uuid": kw(), "power_state": kw(),
					"parent_uuid": kw(), "parent_via": kw(), "first_seen": date, "last_seen": date,
					"destroyed": map[string]any{"type": "boolean"}, "destroyed_at": date,
				}),
				"lineage": props(map[string]any{"root": kw(), "ancestors": kw(), "depth": map[string]any{"type": "integer"}}),
				"states": map[string]any{"type": "nested", "properties": map[string]any{
					"from": date, "to": date, "power_state": kw(), "host_uuid": kw()}},
				"states_complete": map[string]any{"type": "boolean"},
				"attrs": map[string]any{"type": "nested", "properties": map[string]any{
					"kind": kw(), "value": kw(), "from": date, "to": date}},
				"attrs_complete": map[string]any{"type": "boolean"},
			},
		}},
	}
}

// SetupStep is one thing Setup did.
type SetupStep struct {
	What   string `json:"what"`
	Status int    `json:"status"`
	Err    string `json:"error,omitempty"`
}

// Setup installs the ILM policy, the index templates and, when KibanaURL is
// set, the Kibana saved objects. It is what `vmlineage setup` runs; every
// step is idempotent. It returns what it did, and the first error.
func (o *Output) Setup(ctx context.Context) ([]SetupStep, error) {
	var steps []SetupStep
	do := func(what string, req esapi.Request) error {
		res, err := req.Do(ctx, o.es)
		st := SetupStep{What: what}
		if err != nil {
			st.Err = err.Error()
			steps = append(steps, st)
			return fmt.Errorf("setup %s: %w", what, err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
		st.Status = res.StatusCode
		if res.IsError() {
			st.Err = strings.TrimSpace(string(b))
			steps = append(steps, st)
			return fmt.Errorf("setup %s: HTTP %d: %s", what, res.StatusCode, st.Err)
		}
		steps = append(steps, st)
		return nil
	}
	body := func(v any) io.Reader { b, _ := json.Marshal(v); return bytes.NewReader(b) }
	if err := do("ILM policy "+o.cfg.ILMPolicy, esapi.ILMPutLifecycleRequest{Policy: o.cfg.ILMPolicy, Body: body(o.ILMPolicyBody())}); err != nil {
		return steps, err
	}
	name := "logs-" + o.cfg.Dataset
	if err := do("index template "+name, esapi.IndicesPutIndexTemplateRequest{Name: name, Body: body(o.IndexTemplate())}); err != nil {
		return steps, err
	}
	if err := do("index template "+o.cfg.VMIndex, esapi.IndicesPutIndexTemplateRequest{Name: o.cfg.VMIndex, Body: body(o.VMIndexTemplate())}); err != nil {
		return steps, err
	}
	if o.cfg.KibanaURL == "" {
		return steps, nil
	}
	st, err := o.importSavedObjects(ctx)
	steps = append(steps, st)
	return steps, err
}

// importSavedObjects posts the NDJSON to Kibana's saved objects import API
// (multipart "file", kbn-xsrf header, overwrite=true).
func (o *Output) importSavedObjects(ctx context.Context) (SetupStep, error) {
	st := SetupStep{What: "kibana saved objects"}
	nd := o.cfg.SavedObjects
	if nd == nil {
		if o.cfg.SavedObjectsFile == "" {
			st.Err = "no saved objects given"
			return st, fmt.Errorf("setup kibana: no saved objects (SavedObjects or SavedObjectsFile)")
		}
		var err error
		if nd, err = os.ReadFile(o.cfg.SavedObjectsFile); err != nil {
			st.Err = err.Error()
			return st, fmt.Errorf("setup kibana: %w", err)
		}
	}
	var mp bytes.Buffer
	w := multipart.NewWriter(&mp)
	fw, _ := w.CreateFormFile("file", "vmlineage.ndjson")
	fw.Write(nd)
	w.Close()
	u := strings.TrimSuffix(o.cfg.KibanaURL, "/")
	if o.cfg.KibanaSpace != "" {
		u += "/s/" + o.cfg.KibanaSpace
	}
	u += "/api/saved_objects/_import?overwrite=true"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, &mp)
	if err != nil {
		st.Err = err.Error()
		return st, err
	}
	req.Header.Set("Content-Type", w.FormDataContentType())
	req.Header.Set("kbn-xsrf", "true")
	switch {
	case o.cfg.APIKey != "":
		req.Header.Set("Authorization", "ApiKey "+o.cfg.APIKey)
	case o.cfg.Username != "":
		req.SetBasicAuth(o.cfg.Username, o.cfg.Password)
	}
	hc := &http.Client{Timeout: 60 * time.Second, Transport: o.cfg.Transport}
	if hc.Transport == nil {
		if hc.Transport, err = o.kibanaTransport(); err != nil {
			st.Err = err.Error()
			return st, fmt.Errorf("setup kibana: %w", err)
		}
	}
	res, err := hc.Do(req)
	if err != nil {
		st.Err = err.Error()
		return st, fmt.Errorf("setup kibana: %w", err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(res.Body, 4<<20))
	st.Status = res.StatusCode
	var ans struct {
		Success      bool              `json:"success"`
		SuccessCount int               `json:"successCount"`
		Errors       []json.RawMessage `json:"errors"`
	}
	if res.StatusCode >= 300 || json.Unmarshal(b, &ans) != nil || !ans.Success {
		st.Err = strings.TrimSpace(string(b))
		return st, fmt.Errorf("setup kibana: HTTP %d: %s", res.StatusCode, st.Err)
	}
	return st, nil
}

// kibanaTransport trusts what the Elasticsearch connection trusts: the CA
// file and the fingerprint pin (Kibana usually shares the cluster's CA).
func (o *Output) kibanaTransport() (http.RoundTripper, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tc, err := tlsConfig(o.cfg.CAFile, o.cfg.Fingerprint)
	if err != nil {
		return nil, err
	}
	if tc != nil {
		tr.TLSClientConfig = tc
	}
	return tr, nil
}
