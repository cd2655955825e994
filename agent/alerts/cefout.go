package alerts

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/vmlineage/vmlineage/formats/cef"
	"github.com/vmlineage/vmlineage/plugins"
)

// CEF custom fields of an enriched alert (the documented contract for CEF
// outputs; labels never change, new ones are added):
//
//	cs1 vmlineageSuspects      suspects, best first: "name(uuid,power state,score)" joined by "; "
//	cs2 vmlineageAncestor      nearest common ancestor "name(uuid)", " destroyed <time>" when so
//	cs3 vmlineageVM            matched VMs "name(uuid) via field=value" joined by "; "
//	cs4 vmlineageFindings      findings "detector/kind: summary" joined by "; "
//	cs5 vmlineageNotes         notes joined by "; "
//	cs6 vmlineageAlertID       the alert's id
//	cn1 vmlineageSuspectCount  number of suspects
//	msg                        the first suspect's reason, else the alert's message
//
// Header: vmlineage|vmlineage|<version>|alert.enriched (alert.unmatched when
// no VM matched)|<rule.name, else "Alert">|<event.severity, else 5>.
const (
	cefLabelSuspects = "vmlineageSuspects"
	cefLabelAncestor = "vmlineageAncestor"
	cefLabelVM       = "vmlineageVM"
	cefLabelFindings = "vmlineageFindings"
	cefLabelNotes    = "vmlineageNotes"
	cefLabelAlertID  = "vmlineageAlertID"
	cefLabelCount    = "vmlineageSuspectCount"
)

// EnrichedCEF renders an enriched alert (as Enrich returns it) as a CEF line.
func EnrichedCEF(enrichedJSON []byte, version string) ([]byte, error) {
	var doc map[string]any
	if err := json.Unmarshal(enrichedJSON, &doc); err != nil {
		return nil, fmt.Errorf("enriched alert: %w", err)
	}
	var vl struct {
		Matched        bool              `json:"matched"`
		VMs            []MatchedVM       `json:"vms"`
		CommonAncestor *json.RawMessage  `json:"common_ancestor"`
		Suspects       []plugins.Suspect `json:"suspects"`
		Findings       []struct {
			Detector, Kind, Summary string
		} `json:"findings"`
		Notes   []string `json:"notes"`
		AlertID string   `json:"alert_id"`
	}
	if raw, ok := doc["vmlineage"]; ok {
		b, _ := json.Marshal(raw)
		if err := json.Unmarshal(b, &vl); err != nil {
			return nil, fmt.Errorf("enriched alert: vmlineage: %w", err)
		}
	}
	sig := "alert.enriched"
	if !vl.Matched {
		sig = "alert.unmatched"
	}
	name, _ := lookupString(doc, "rule.name")
	if name == "" {
		name = "Alert"
	}
	sev := "5"
	if v, ok := lookup(doc, "event.severity"); ok {
		if n, err := strconv.Atoi(fmt.Sprint(v)); err == nil && n >= 0 && n <= 10 {
			sev = strconv.Itoa(n)
		}
	}
	ev := &cef.Event{Version: 0, DeviceVendor: "vmlineage", DeviceProduct: "vmlineage", DeviceVersion: version, SignatureID: sig, Name: name, Severity: sev}
	add := func(k, v string) {
		if v != "" {
			ev.Extensions = append(ev.Extensions, cef.Field{Key: k, Value: v})
		}
	}
	if ts, ok := lookupString(doc, "@timestamp"); ok {
		if t, err := parseAlertTime(ts); err == nil {
			add("rt", strconv.FormatInt(t.UnixMilli(), 10))
		}
	}
	if s := lookupStrings(doc, "source.ip"); len(s) > 0 {
		add("src", s[0])
	}
	if s := lookupStrings(doc, "destination.ip"); len(s) > 0 {
		add("dst", s[0])
	}
	if s, ok := lookupString(doc, "host.name"); ok {
		add("dvchost", s)
	}
	var parts []string
	for _, s := range vl.Suspects {
		parts = append(parts, fmt.Sprintf("%s(%s,%s,%.2f)", suspectLabel(&s), s.VMUUID, powerOrDestroyed(&s), s.Score))
	}
	custom := func(i int, label, v string) {
		if v != "" {
			add(fmt.Sprintf("cs%dLabel", i), label)
			add(fmt.Sprintf("cs%d", i), v)
		}
	}
	custom(1, cefLabelSuspects, strings.Join(parts, "; "))
	if vl.CommonAncestor != nil {
		var ca plugins.VM
		var extra struct {
			Destroyed   bool   `json:"destroyed"`
			DestroyedAt string `json:"destroyed_at"`
		}
		json.Unmarshal(*vl.CommonAncestor, &ca)
		json.Unmarshal(*vl.CommonAncestor, &extra)
		v := fmt.Sprintf("%s(%s)", ca.Name, ca.UUID)
		if extra.Destroyed {
			v += " destroyed " + extra.DestroyedAt
		}
		custom(2, cefLabelAncestor, v)
	}
	parts = parts[:0]
	for _, m := range vl.VMs {
		parts = append(parts, fmt.Sprintf("%s(%s) via %s=%s", m.Name, m.UUID, m.Field, m.Value))
	}
	custom(3, cefLabelVM, strings.Join(parts, "; "))
	parts = parts[:0]
	for _, f := range vl.Findings {
		parts = append(parts, fmt.Sprintf("%s/%s: %s", f.Detector, f.Kind, f.Summary))
	}
	custom(4, cefLabelFindings, strings.Join(parts, "; "))
	custom(5, cefLabelNotes, strings.Join(vl.Notes, "; "))
	custom(6, cefLabelAlertID, vl.AlertID)
	add("cn1Label", cefLabelCount)
	add("cn1", strconv.Itoa(len(vl.Suspects)))
	if len(vl.Suspects) > 0 {
		add("msg", vl.Suspects[0].Reason)
	} else if m, ok := lookupString(doc, "message"); ok {
		add("msg", m)
	}
	return cef.AppendEvent(nil, ev)
}

func powerOrDestroyed(s *plugins.Suspect) string {
	if s.Destroyed {
		return "destroyed"
	}
	if s.PowerState == "" {
		return "unknown"
	}
	return s.PowerState
}
