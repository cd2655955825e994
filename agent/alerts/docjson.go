package alerts

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"

	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/internal/jsonw"
	"github.com/vmlineage/vmlineage/plugins"
)

// encodeDoc returns json.Marshal(e.render(a, out)): the same bytes
// (TestEncodeDocLikeMarshal, FuzzEncodeDoc), written without reflection.
// Marshalling the rendered map through encoding/json was about a tenth of
// the host's CPU per alert in Enrich1MVMs (maps sorted at every level,
// each finding and VM encoded twice by their MarshalJSON). raw is
// json.Marshal(a.Doc), made by Start: the alert's own fields are copied
// from it, not encoded again. Whatever this encoder does not know field
// for field (a type grew a field, a score that is not a number) goes
// through encoding/json.
func (e *Enricher) encodeDoc(a *Alert, out *Output, raw []byte) ([]byte, error) {
	if !fastDocJSON || raw == nil || !fastOutput(out) {
		return json.Marshal(e.render(a, out))
	}
	members, ok := splitObject(raw, a.Doc)
	if !ok {
		return json.Marshal(e.render(a, out))
	}
	// The top level's keys in encoding/json's order (sorted), with the
	// three the enricher sets put in their places.
	type member struct {
		key    string              // the Go key: the order is the Go keys'
		rawKey []byte              // as written in raw
		val    []byte              // copied from raw
		fn     func([]byte) []byte // or written
	}
	var ms []member
	var threat []byte // the alert's own threat value, extended below
	hasTimestamp := false
	for _, m := range members {
		switch m.key {
		case "@timestamp":
			hasTimestamp = true
		case "vmlineage":
			continue
		case "threat":
			if len(out.matches) > 0 {
				threat = m.val
				continue
			}
		}
		ms = append(ms, member{key: m.key, rawKey: m.rawKey, val: m.val})
	}
	if !hasTimestamp {
		ms = append(ms, member{key: "@timestamp", fn: func(b []byte) []byte { return jsonw.AppendString(b, timeString(a.Time)) }})
	}
	ms = append(ms, member{key: "vmlineage", fn: func(b []byte) []byte { return appendOutput(b, out) }})
	if len(out.matches) > 0 {
		ms = append(ms, member{key: "threat", fn: func(b []byte) []byte { return e.appendThreat(b, a, out, threat) }})
	}
	slices.SortFunc(ms, func(x, y member) int {
		switch {
		case x.key < y.key:
			return -1
		case x.key > y.key:
			return 1
		}
		return 0
	})
	b := make([]byte, 0, len(raw)+1024+512*len(out.Suspects))
	b = append(b, '{')
	for i, m := range ms {
		if i > 0 {
			b = append(b, ',')
		}
		if m.rawKey != nil {
			b = append(b, m.rawKey...)
		} else {
			b = jsonw.AppendString(b, m.key)
		}
		b = append(b, ':')
		if m.fn != nil {
			b = m.fn(b)
		} else {
			b = append(b, m.val...)
		}
	}
	return append(b, '}'), nil
}

// appendThreat writes the threat object render makes: the alert's own
// threat fields (when threat is an object; raw is its value as Start
// wrote it) with enrichments extended by one entry per matched VM.
func (e *Enricher) appendThreat(b []byte, a *Alert, out *Output, raw []byte) []byte {
	var own []rawMember // the alert's threat object, sorted
	var oldEnr []byte   // the elements of its enrichments array
	if t, ok := a.Doc["threat"].(map[string]any); ok {
		own, _ = splitObject(raw, t)
		if _, isList := t["enrichments"].([]any); isList {
			for _, m := range own {
				if m.key == "enrichments" {
					oldEnr = bytes.TrimSpace(m.val[1 : len(m.val)-1])
				}
			}
		}
	}
	b = append(b, '{')
	wrote, done := false, false
	enrichments := func() {
		if wrote {
			b = append(b, ',')
		}
		b = append(b, `"enrichments":[`...)
		b = append(b, oldEnr...)
		for i, m := range out.matches {
			if i > 0 || len(oldEnr) > 0 {
				b = append(b, ',')
			}
			b = e.appendEnrichment(b, a, out, m)
		}
		b = append(b, ']')
		wrote, done = true, true
	}
	for _, m := range own {
		if m.key == "enrichments" {
			continue
		}
		if !done && m.key > "enrichments" {
			enrichments()
		}
		if wrote {
			b = append(b, ',')
		}
		b = append(b, m.rawKey...)
		b = append(b, ':')
		b = append(b, m.val...)
		wrote = true
	}
	if !done {
		enrichments()
	}
	return append(b, '}')
}

// appendEnrichment writes one threat.enrichments entry as render builds it
// (maps, so keys sorted).
func (e *Enricher) appendEnrichment(b []byte, a *Alert, out *Output, m plugins.AlertVM) []byte {
	name := m.UUID
	if v := out.vmByUUID[m.UUID]; v != nil && v.Name != "" {
		name = v.Name
	}
	at := timeString(a.Time)
	desc := fmt.Sprintf("%s matched VM %s (%s) as it was at %s", m.Field, name, m.UUID, at)
	if len(out.Suspects) > 0 {
		desc += fmt.Sprintf("; lineage suspects: %d, first %s", len(out.Suspects), suspectLabel(&out.Suspects[0]))
	}
	typ := indicatorType(m)
	b = append(b, `{"indicator":{"description":`...)
	b = jsonw.AppendString(b, desc)
	switch typ {
	case "ipv4-addr", "ipv6-addr":
		b = append(b, `,"ip":`...)
		b = jsonw.AppendString(b, m.Value)
	case "mac-addr":
		b = append(b, `,"mac":`...)
		b = jsonw.AppendString(b, m.Value)
	}
	b = append(b, `,"name":`...)
	b = jsonw.AppendString(b, name)
	b = append(b, `,"provider":"vmlineage","type":`...)
	b = jsonw.AppendString(b, typ)
	b = append(b, `},"matched":{"atomic":`...)
	b = jsonw.AppendString(b, m.Value)
	b = append(b, `,"field":`...)
	b = jsonw.AppendString(b, m.Field)
	b = append(b, `,"id":`...)
	b = jsonw.AppendString(b, m.UUID)
	b = append(b, `,"occurred":`...)
	b = jsonw.AppendString(b, at)
	return append(b, `,"type":"vmlineage_vm_match"}}`...)
}

// fastOutput is false when out holds what only encoding/json writes as it
// should: a score that is not a number (an error there).
func fastOutput(out *Output) bool {
	for i := range out.Suspects {
		if f := out.Suspects[i].Score; math.IsNaN(f) || math.IsInf(f, 0) {
			return false
		}
	}
	return true
}

func appendOutput(b []byte, o *Output) []byte {
	b = append(b, `{"matched":`...)
	b = strconv.AppendBool(b, o.Matched)
	if len(o.VMs) > 0 {
		b = append(b, `,"vms":[`...)
		for i := range o.VMs {
			if i > 0 {
				b = append(b, ',')
			}
			v := &o.VMs[i]
			b = append(b, `{"vm_uuid":`...)
			b = jsonw.AppendString(b, v.UUID)
			b = jsonw.AppendOmit(b, `,"name":`, v.Name)
			b = append(b, `,"matched_field":`...)
			b = jsonw.AppendString(b, v.Field)
			b = append(b, `,"matched_value":`...)
			b = jsonw.AppendString(b, v.Value)
			b = jsonw.AppendOmit(b, `,"power_state":`, v.PowerState)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	if o.CommonAncestor != nil {
		b = append(b, `,"common_ancestor":`...)
		b = appendVM(b, o.CommonAncestor)
	}
	b = append(b, `,"suspects":`...)
	if o.Suspects == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i := range o.Suspects {
			if i > 0 {
				b = append(b, ',')
			}
			s := &o.Suspects[i]
			b = append(b, `{"vm_uuid":`...)
			b = jsonw.AppendString(b, s.VMUUID)
			b = jsonw.AppendOmit(b, `,"vm_name":`, s.VMName)
			b = append(b, `,"score":`...)
			b = appendJSONFloat(b, s.Score)
			b = append(b, `,"reason":`...)
			b = jsonw.AppendString(b, s.Reason)
			b = jsonw.AppendOmit(b, `,"power_state":`, s.PowerState)
			b = append(b, `,"destroyed":`...)
			b = strconv.AppendBool(b, s.Destroyed)
			b = jsonw.AppendOmit(b, `,"detector":`, s.Detector)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	if len(o.Findings) > 0 {
		b = append(b, `,"findings":[`...)
		for i := range o.Findings {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendFinding(b, &o.Findings[i])
		}
		b = append(b, ']')
	}
	if len(o.Detectors) > 0 {
		b = append(b, `,"detectors":[`...)
		for i := range o.Detectors {
			if i > 0 {
				b = append(b, ',')
			}
			d := &o.Detectors[i]
			b = append(b, `{"name":`...)
			b = jsonw.AppendString(b, d.Name)
			b = append(b, `,"status":`...)
			b = jsonw.AppendString(b, d.Status)
			b = jsonw.AppendOmit(b, `,"error":`, d.Error)
			b = jsonw.AppendOmit(b, `,"reason":`, d.Reason)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	if len(o.Notes) > 0 {
		b = append(b, `,"notes":[`...)
		for i, n := range o.Notes {
			if i > 0 {
				b = append(b, ',')
			}
			b = jsonw.AppendString(b, n)
		}
		b = append(b, ']')
	}
	b = append(b, `,"alert_id":`...)
	b = jsonw.AppendString(b, o.AlertID)
	b = append(b, `,"enriched_at":`...)
	b = jsonw.AppendString(b, o.EnrichedAt)
	return append(b, '}')
}

// appendVM writes plugins.VM as its MarshalJSON does.
func appendVM(b []byte, v *plugins.VM) []byte {
	b = append(b, `{"vm_uuid":`...)
	b = jsonw.AppendString(b, v.UUID)
	b = jsonw.AppendOmit(b, `,"pool_uuid":`, v.PoolUUID)
	b = append(b, `,"name":`...)
	b = jsonw.AppendString(b, v.Name)
	b = jsonw.AppendOmit(b, `,"parent_vm_uuid":`, v.ParentUUID)
	b = jsonw.AppendOmit(b, `,"parent_via":`, v.ParentVia)
	b = jsonw.AppendOmit(b, `,"kind":`, v.Kind)
	b = jsonw.AppendOmit(b, `,"power_state":`, v.PowerState)
	b = jsonw.AppendOmit(b, `,"host_uuid":`, v.HostUUID)
	b = jsonw.AppendOmit(b, `,"first_seen":`, record.FormatTime(v.FirstSeen))
	b = append(b, `,"destroyed":`...)
	b = strconv.AppendBool(b, v.IsDestroyed())
	b = jsonw.AppendOmit(b, `,"destroyed_at":`, record.FormatTime(v.Destroyed))
	return append(b, '}')
}

// appendFinding writes plugins.Finding as its MarshalJSON does.
func appendFinding(b []byte, f *plugins.Finding) []byte {
	b = append(b, '{')
	n := len(b)
	b = jsonw.AppendOmit(b, `,"detector":`, f.Detector)
	b = append(b, `,"kind":`...)
	b = jsonw.AppendString(b, f.Kind)
	b = append(b[:n], b[n+1:]...) // no comma before the first field
	b = jsonw.AppendOmit(b, `,"vm_uuid":`, f.VMUUID)
	b = jsonw.AppendOmit(b, `,"vm_name":`, f.VMName)
	b = append(b, `,"severity":`...)
	b = strconv.AppendInt(b, int64(f.Severity), 10)
	b = append(b, `,"summary":`...)
	b = jsonw.AppendString(b, f.Summary)
	if len(f.Details) > 0 {
		keys := make([]string, 0, len(f.Details))
		for k := range f.Details {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, `,"details":{`...)
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = jsonw.AppendString(b, k)
			b = append(b, ':')
			b = jsonw.AppendString(b, f.Details[k])
		}
		b = append(b, '}')
	}
	b = jsonw.AppendOmit(b, `,"record_id":`, f.RecordID)
	b = jsonw.AppendOmit(b, `,"time":`, record.FormatTime(f.Time))
	return append(b, '}')
}

// appendJSONFloat writes a finite float64 as encoding/json does (ES6
// number formatting: %f, or %e with a one-digit exponent cleaned up).
func appendJSONFloat(b []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// clean up e-09 to e-9
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

// rawMember is one member of a JSON object: its key in Go (the map's),
// its key and value as written.
type rawMember struct {
	key    string
	rawKey []byte
	val    []byte
}

// splitObject splits js, json.Marshal(m), into its members. The keys are
// taken from m, not unescaped from js: encoding/json writes invalid UTF-8
// in a key as \ufffd, and orders the keys by their Go strings. ok is false
// when js is not what that gives (compact, one member per key of m).
func splitObject(js []byte, m map[string]any) (ms []rawMember, ok bool) {
	if len(js) < 2 || js[0] != '{' || js[len(js)-1] != '}' {
		return nil, false
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	ms = make([]rawMember, 0, len(keys))
	i := 1
	if js[i] == '}' {
		return nil, i == len(js)-1 && len(keys) == 0
	}
	for {
		if js[i] != '"' || len(ms) == len(keys) {
			return nil, false
		}
		end := skipString(js, i)
		if end < 0 || end >= len(js) || js[end] != ':' {
			return nil, false
		}
		vend := skipValue(js, end+1)
		if vend < 0 || vend >= len(js) {
			return nil, false
		}
		ms = append(ms, rawMember{key: keys[len(ms)], rawKey: js[i:end], val: js[end+1 : vend]})
		switch js[vend] {
		case ',':
			i = vend + 1
		case '}':
			return ms, vend == len(js)-1 && len(ms) == len(keys)
		default:
			return nil, false
		}
	}
}

// skipString returns the index after the string starting at js[i] (a
// quote); -1 when it does not end.
func skipString(js []byte, i int) int {
	for j := i + 1; j < len(js); j++ {
		switch js[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return -1
}

// skipValue returns the index after the value starting at js[i]; -1 when
// it does not end.
func skipValue(js []byte, i int) int {
	if i >= len(js) {
		return -1
	}
	switch js[i] {
	case '"':
		return skipString(js, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(js); j++ {
			switch js[j] {
			case '"':
				end := skipString(js, j)
				if end < 0 {
					return -1
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	}
	for j := i; j < len(js); j++ {
		switch js[j] {
		case ',', '}', ']':
			return j
		}
	}
	return -1
}

// fastDocJSON is false when a type encodeDoc writes no longer has exactly
// the fields it writes: a new field must never be dropped silently, so
// the encoder then falls back to encoding/json (and TestDocJSONFields
// fails until it is taught the new field).
var fastDocJSON = fieldsAre(reflect.TypeOf(Output{}), outputJSONFields) &&
	fieldsAre(reflect.TypeOf(MatchedVM{}), matchedVMJSONFields) &&
	fieldsAre(reflect.TypeOf(DetectorOutcome{}), detectorOutcomeJSONFields) &&
	fieldsAre(reflect.TypeOf(plugins.Suspect{}), suspectJSONFields) &&
	fieldsAre(reflect.TypeOf(plugins.Finding{}), findingJSONFields) &&
	fieldsAre(reflect.TypeOf(plugins.VM{}), vmJSONFields)

// The fields of each type, as `json tag` Go type.
var (
	outputJSONFields = []string{"matched bool", "vms,omitempty []alerts.MatchedVM", "common_ancestor,omitempty *plugins.VM",
		"suspects []plugins.Suspect", "findings,omitempty []plugins.Finding", "detectors,omitempty []alerts.DetectorOutcome",
		"notes,omitempty []string", "alert_id string", "enriched_at string", " []plugins.AlertVM", " map[string]*plugins.VM"}
	matchedVMJSONFields = []string{"vm_uuid string", "name,omitempty string", "matched_field string", "matched_value string",
		"power_state,omitempty string"}
	detectorOutcomeJSONFields = []string{"name string", "status string", "error,omitempty string", "reason,omitempty string"}
	suspectJSONFields         = []string{"vm_uuid string", "vm_name,omitempty string", "score float64", "reason string",
		"power_state,omitempty string", "destroyed bool", "detector,omitempty string"}
	findingJSONFields = []string{"detector,omitempty string", "kind string", "vm_uuid,omitempty string", "vm_name,omitempty string",
		"severity int", "summary string", "- time.Time", "details,omitempty map[string]string", "record_id,omitempty string"}
	vmJSONFields = []string{"vm_uuid string", "pool_uuid,omitempty string", "name string", "parent_vm_uuid,omitempty string",
		"parent_via,omitempty string", "kind,omitempty string", "power_state,omitempty string", "host_uuid,omitempty string",
		"- time.Time", "- time.Time", "- time.Time"}
)

// fieldsAre reports whether t's fields are exactly these, in order.
func fieldsAre(t reflect.Type, fields []string) bool {
	if t.NumField() != len(fields) {
		return false
	}
	for i, want := range fields {
		f := t.Field(i)
		if f.Tag.Get("json")+" "+f.Type.String() != want {
			return false
		}
	}
	return true
}

// marshalDoc returns json.Marshal(doc): the same bytes, or the same error
// (TestMarshalDocLikeMarshal, FuzzEncodeDoc). An alert's document holds
// what decoding JSON makes (maps, slices, strings, json.Number, booleans,
// nil), which is written here without reflection; anything else, and a
// number encoding/json would refuse, goes through encoding/json. Start
// encodes every alert's document once (through encoding/json, about 5% of
// the host's CPU in one Enrich1MVMs profile; this saves 19 of 675
// allocations per alert there).
func marshalDoc(doc map[string]any) ([]byte, error) {
	b, ok := appendDocValue(make([]byte, 0, 512), doc)
	if !ok {
		return json.Marshal(doc)
	}
	return b, nil
}

func appendDocValue(b []byte, v any) ([]byte, bool) {
	switch v := v.(type) {
	case nil:
		return append(b, "null"...), true
	case string:
		return jsonw.AppendString(b, v), true
	case bool:
		return strconv.AppendBool(b, v), true
	case int: // a CEF alert's event.severity: without it every CEF document went through encoding/json
		return strconv.AppendInt(b, int64(v), 10), true
	case int64:
		return strconv.AppendInt(b, v, 10), true
	case json.Number:
		if !isJSONNumber(string(v)) {
			return b, false
		}
		if v == "" {
			return append(b, '0'), true // as encoding/json writes an empty Number
		}
		return append(b, v...), true
	case map[string]any:
		if v == nil {
			return append(b, "null"...), true
		}
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = jsonw.AppendString(b, k)
			b = append(b, ':')
			var ok bool
			if b, ok = appendDocValue(b, v[k]); !ok {
				return b, false
			}
		}
		return append(b, '}'), true
	case []any:
		if v == nil {
			return append(b, "null"...), true
		}
		b = append(b, '[')
		for i, e := range v {
			if i > 0 {
				b = append(b, ',')
			}
			var ok bool
			if b, ok = appendDocValue(b, e); !ok {
				return b, false
			}
		}
		return append(b, ']'), true
	}
	return b, false
}

// isJSONNumber reports whether s is a JSON number (or "", which
// encoding/json writes as 0), the check encoding/json makes of a
// json.Number before writing it.
func isJSONNumber(s string) bool {
	if s == "" {
		return true
	}
	i := 0
	if s[i] == '-' {
		if i++; i == len(s) {
			return false
		}
	}
	digits := func() bool {
		start := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		return i > start
	}
	switch {
	case s[i] == '0':
		i++
	case s[i] >= '1' && s[i] <= '9':
		digits()
	default:
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if !digits() {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if !digits() {
			return false
		}
	}
	return i == len(s)
}
