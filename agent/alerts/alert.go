// Package alerts takes in the security alerts of the sensors a team already
// runs (CEF over syslog, ECS JSON over HTTP or stdin), ties each to the VMs
// it names as they were at the alert's time, asks the detector plugins for
// lineage-derived suspects and findings, and sends the alert back out
// enriched (ECS: threat.enrichments and the vmlineage.* fields). An alert is
// never dropped: unmatched alerts and failing detectors are noted in it.
package alerts

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/vmlineage/vmlineage/agent/record"
)

// MaxAlertBytes bounds one alert (JSON document or CEF line).
const MaxAlertBytes = 1 << 20

// Alert is one alert as received, with the fields vmlineage reads from it.
type Alert struct {
	// Doc is the ECS document: as received for JSON alerts, built from the
	// CEF fields for CEF alerts. Numbers are json.Number so that nothing is
	// rounded on the way through.
	Doc map[string]any
	// ID is event.id, else a digest of the document (so a re-sent alert is
	// stored once); for a CEF alert without its own time, of the line and
	// the time it is dated by.
	ID string
	// Time is @timestamp; when absent, the time it was received (noted).
	Time time.Time
	// Source says how the alert came in: stdin, http, syslog-udp, syslog-tcp.
	Source string
	// Notes are remarks made while reading the alert (such as a missing time).
	Notes []string
}

// ErrTooLarge is returned for an alert over MaxAlertBytes.
var ErrTooLarge = fmt.Errorf("alert larger than %d bytes", MaxAlertBytes)

// ParseJSON reads one ECS JSON alert. now is used when it has no @timestamp.
func ParseJSON(b []byte, now time.Time) (*Alert, error) {
	if len(b) > MaxAlertBytes {
		return nil, ErrTooLarge
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return nil, errors.New("empty alert")
	}
	if b[0] != '{' {
		return nil, fmt.Errorf("alert must be a JSON object, got %q…", firstBytes(b, 20))
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("alert is not valid JSON: %w", err)
	}
	// dec.More reports false at a stray '}' or ']', so look at the bytes.
	if rest := bytes.TrimSpace(b[dec.InputOffset():]); len(rest) > 0 {
		return nil, fmt.Errorf("alert has data after the JSON object: %q", firstBytes(rest, 20))
	}
	return fromDoc(doc, b, now)
}

func firstBytes(b []byte, n int) string {
	if len(b) > n {
		b = b[:n]
	}
	return string(b)
}

func fromDoc(doc map[string]any, raw []byte, now time.Time) (*Alert, error) {
	a := &Alert{Doc: doc}
	if v, ok := lookup(doc, "@timestamp"); ok {
		if _, isStr := v.(string); !isStr {
			return nil, fmt.Errorf("@timestamp must be an RFC 3339 string, got %v", v)
		}
	}
	if ts, ok := lookupString(doc, "@timestamp"); ok && ts != "" {
		t, err := parseAlertTime(ts)
		if err != nil {
			return nil, fmt.Errorf("@timestamp %q: %w", ts, err)
		}
		a.Time = t
	} else {
		a.Time = now.UTC()
		a.Notes = append(a.Notes, "alert has no @timestamp; matched as of the time it was received")
	}
	if id, ok := lookupString(doc, "event.id"); ok && id != "" {
		a.ID = id
	} else {
		h := sha256.Sum256(raw)
		a.ID = "sha256:" + hex.EncodeToString(h[:16])
	}
	return a, nil
}

func parseAlertTime(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05.999999999Z07:00"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, errors.New("want an RFC 3339 time such as 2024-03-01T09:05:00Z")
}

// lookup finds a field by its dotted ECS name in either nested
// ({"host":{"ip":…}}) or flattened ({"host.ip":…}) form, or a mix.
func lookup(m map[string]any, path string) (any, bool) {
	if v, ok := m[path]; ok {
		return v, true
	}
	for i := len(path) - 1; i > 0; i-- {
		if path[i] != '.' {
			continue
		}
		if sub, ok := m[path[:i]].(map[string]any); ok {
			if v, ok := lookup(sub, path[i+1:]); ok {
				return v, true
			}
		}
	}
	return nil, false
}

func lookupString(m map[string]any, path string) (string, bool) {
	v, ok := lookup(m, path)
	if !ok {
		return "", false
	}
	s, ok := v.(string)
	return s, ok
}

// lookupStrings returns a keyword field that may be a string or an array.
func lookupStrings(m map[string]any, path string) []string {
	v, ok := lookup(m, path)
	if !ok {
		return nil
	}
	switch x := v.(type) {
	case string:
		if x != "" {
			return []string{x}
		}
	case []any:
		var out []string
		for _, e := range x {
			if s, ok := e.(string); ok && s != "" {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// ensureMap returns m[key] as an object, creating it (or keeping a flattened
// document flat is not possible, so a non-object value is kept under
// key+"_original").
func ensureMap(m map[string]any, key string) map[string]any {
	if sub, ok := m[key].(map[string]any); ok {
		return sub
	}
	sub := map[string]any{}
	if old, ok := m[key]; ok {
		m[key+"_original"] = old
	}
	m[key] = sub
	return sub
}

// timeString renders a time the way records do.
func timeString(t time.Time) string { return record.FormatTime(t) }

// normalizeMAC turns the ECS form (00-16-3E-AA-BB-CC) into XAPI's
// (00:16:3e:aa:bb:cc), which the store keeps.
func normalizeMAC(s string) string {
	return strings.ToLower(strings.ReplaceAll(strings.TrimSpace(s), "-", ":"))
}
