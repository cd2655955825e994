package alerts

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"time"

	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/plugins"
)

// Detectors is what the enricher needs of plugins.Manager (an interface so
// that tests and the in-process path can stand in).
type Detectors interface {
	Enrich(ctx context.Context, a *plugins.Alert) []plugins.Result
}

// Enricher ties alerts to VMs, asks the detectors, and writes the enriched
// ECS document.
type Enricher struct {
	svc  *Service
	dets Detectors // may be nil: matching only
	log  *slog.Logger
	now  func() time.Time
	// Window is how far back a suspect's own alerts make it "already known"
	// rather than suspected (default 24h, lineage-suspects' default).
	Window time.Duration
}

// NewEnricher returns an enricher over the service; dets may be nil.
func NewEnricher(svc *Service, dets Detectors, log *slog.Logger) *Enricher {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Enricher{svc: svc, dets: dets, log: log, now: time.Now, Window: 24 * time.Hour}
}

// Output is the vmlineage part of an enriched alert (ECS field vmlineage).
type Output struct {
	Matched        bool              `json:"matched"`
	VMs            []MatchedVM       `json:"vms,omitempty"`
	CommonAncestor *plugins.VM       `json:"common_ancestor,omitempty"`
	Suspects       []plugins.Suspect `json:"suspects"`
	Findings       []plugins.Finding `json:"findings,omitempty"`
	Detectors      []DetectorOutcome `json:"detectors,omitempty"`
	Notes          []string          `json:"notes,omitempty"`
	AlertID        string            `json:"alert_id"`
	EnrichedAt     string            `json:"enriched_at"`
	matches        []plugins.AlertVM // for threat.enrichments
	vmByUUID       map[string]*plugins.VM
}

// MatchedVM is a VM the alert was tied to.
type MatchedVM struct {
	UUID       string `json:"vm_uuid"`
	Name       string `json:"name,omitempty"`
	Field      string `json:"matched_field"`
	Value      string `json:"matched_value"`
	PowerState string `json:"power_state,omitempty"`
}

// DetectorOutcome says how each detector fared on this alert.
type DetectorOutcome struct {
	Name   string `json:"name"`
	Status string `json:"status"` // ok, failed, skipped
	Error  string `json:"error,omitempty"`
	// Reason says why a detector was skipped: what it declared it needs
	// to find anything did not hold for this alert.
	Reason string `json:"reason,omitempty"`
}

// Enrich ties a to VMs, runs the detectors and returns the enriched ECS
// document (one line of JSON, no newline); the alert is stored (alert log)
// without waiting for the write. It fails only when the alert cannot be
// encoded at all; everything else becomes a note.
func (e *Enricher) Enrich(ctx context.Context, a *Alert) ([]byte, error) {
	received := e.now()
	out := &Output{AlertID: a.ID, Notes: append([]string(nil), a.Notes...), Suspects: []plugins.Suspect{}}
	raw, err := json.Marshal(a.Doc)
	if err != nil {
		return nil, fmt.Errorf("alert %s: %w", a.ID, err)
	}
	vms, notes, err := e.svc.match(ctx, a)
	out.Notes = append(out.Notes, notes...)
	if err != nil {
		e.log.Error("alert matching failed", "alert", a.ID, "error", err)
		out.Notes = append(out.Notes, "matching against the lineage store failed: "+err.Error())
	}
	// From here on the alert counts for AlertedVMs (other alerts of its
	// family arriving meanwhile see it).
	pend := e.svc.log.begin(a.ID, a.Time, vms)
	out.matches = vms
	if len(vms) == 0 {
		if err == nil {
			out.Notes = append(out.Notes, "no VM in the lineage store matches this alert's cloud.instance.id, host.name, host.ip, source.ip, destination.ip or host.mac at "+timeString(a.Time))
		}
	} else {
		out.Matched = true
		cx := e.context(ctx, a, out)
		e.describeVMs(ctx, a, out, cx)
		if e.dets != nil {
			pa := &plugins.Alert{ID: a.ID, Time: a.Time, VMs: out.matches, ECS: raw, Family: cx.family, FamilyStates: cx.states}
			if cx.recordsOK && cx.alertedOK {
				pa.ContextWindow, pa.Records, pa.FamilyAlerted = e.Window, cx.records, cx.alerted
			}
			e.runDetectors(ctx, pa, out, cx)
		} else {
			out.Notes = append(out.Notes, "no detectors configured")
		}
	}
	out.EnrichedAt = timeString(e.now())
	doc := e.render(a, out)
	js, jerr := json.Marshal(doc)
	row := &alertRow{id: a.ID, timeMS: a.Time.UnixMilli(), received: received.UnixMilli(), source: a.Source, json: string(raw), vms: vms}
	if jerr == nil {
		row.enriched = js
	}
	e.svc.log.finish(pend, row)
	if jerr != nil {
		return nil, fmt.Errorf("alert %s: encode enriched: %w", a.ID, jerr)
	}
	return js, nil
}

// alertContext is what the host reads once per alert and sends along to
// the detectors (most need it, and one read here saves each of them round
// trips over the broker).
type alertContext struct {
	// family holds the families of the matched VMs (root first, then
	// descendants) and states their states at the alert's time; both nil
	// when larger than plugins.MaxAlertFamily.
	family []plugins.VM
	states []plugins.VMState
	// records of the matched VMs and which family members alerted, over
	// e.Window before the alert; *OK false when not read (too many, or
	// no family).
	records   []record.Record
	recordsOK bool
	alerted   []plugins.AlertedVM
	alertedOK bool
}

// maxContextRecords bounds the records sent along with an alert.
const maxContextRecords = 1000

func (e *Enricher) context(ctx context.Context, a *Alert, out *Output) *alertContext {
	cx := &alertContext{}
	inFamily := map[string]bool{}
	for _, m := range out.matches {
		if inFamily[m.UUID] {
			continue // a second VM of a family already read
		}
		fam, err := e.svc.lin.FamilyAt(ctx, m.UUID, a.Time, plugins.MaxAlertFamily)
		if err != nil {
			out.Notes = append(out.Notes, fmt.Sprintf("could not read the family of %s: %v", m.UUID, err))
			continue
		}
		for i := range fam {
			if !inFamily[fam[i].UUID] {
				inFamily[fam[i].UUID] = true
				cx.family = append(cx.family, fam[i].VM)
				cx.states = append(cx.states, fam[i].State)
			}
		}
		if len(cx.family) > plugins.MaxAlertFamily {
			cx.family, cx.states = nil, nil
			return cx
		}
	}
	if len(cx.family) == 0 || e.Window <= 0 {
		return cx
	}
	since, until := a.Time.Add(-e.Window), a.Time
	cx.recordsOK = true
	for _, m := range out.matches {
		r, err := e.svc.lin.RecordsOfVM(ctx, m.UUID, since, until.Add(time.Millisecond), maxContextRecords+1)
		if err != nil || len(cx.records)+len(r) > maxContextRecords {
			cx.records, cx.recordsOK = nil, false
			break
		}
		cx.records = append(cx.records, r...)
	}
	uuids := make([]string, len(cx.family))
	for i := range cx.family {
		uuids[i] = cx.family[i].UUID
	}
	alerted, err := e.svc.AlertedVMs(ctx, uuids, since, until)
	if err == nil {
		cx.alerted, cx.alertedOK = alerted, true
	} else {
		out.Notes = append(out.Notes, "could not read which VMs of the family alerted: "+err.Error())
	}
	return cx
}

func (e *Enricher) describeVMs(ctx context.Context, a *Alert, out *Output, cx *alertContext) {
	out.vmByUUID = map[string]*plugins.VM{}
	type known struct {
		name, ps string
	}
	kn := map[string]known{}
	for i, st := range cx.states {
		kn[st.UUID] = known{cx.family[i].Name, st.PowerState}
	}
	var ask []string
	for _, m := range out.matches {
		if _, ok := kn[m.UUID]; !ok {
			ask = append(ask, m.UUID)
		}
	}
	if len(ask) > 0 {
		vms := make(map[string]string, len(ask))
		for _, u := range ask {
			if v, err := e.svc.lin.VM(ctx, u); err == nil {
				vms[u] = v.Name
			}
		}
		sts, err := e.svc.lin.StatesAt(ctx, ask, a.Time)
		if err != nil {
			out.Notes = append(out.Notes, "could not read the matched VMs' state: "+err.Error())
		}
		for _, st := range sts {
			if name, ok := vms[st.UUID]; ok {
				kn[st.UUID] = known{name, st.PowerState}
			}
		}
	}
	for _, m := range out.matches {
		mv := MatchedVM{UUID: m.UUID, Field: m.Field, Value: m.Value}
		if k, ok := kn[m.UUID]; ok {
			mv.Name, mv.PowerState = k.name, k.ps
			out.vmByUUID[m.UUID] = &plugins.VM{UUID: m.UUID, Name: k.name}
		}
		out.VMs = append(out.VMs, mv)
	}
}

func (e *Enricher) runDetectors(ctx context.Context, pa *plugins.Alert, out *Output, cx *alertContext) {
	for i := range pa.Family {
		if out.vmByUUID[pa.Family[i].UUID] == nil {
			out.vmByUUID[pa.Family[i].UUID] = &pa.Family[i]
		}
	}
	alerted := map[string]bool{}
	for _, m := range out.matches {
		alerted[m.UUID] = true
	}
	best := map[string]int{} // vm uuid -> index in out.Suspects
	for _, r := range e.dets.Enrich(ctx, pa) {
		if r.Skipped != "" {
			out.Detectors = append(out.Detectors, DetectorOutcome{Name: r.Detector, Status: "skipped", Reason: r.Skipped})
			continue
		}
		if r.Err != nil {
			out.Detectors = append(out.Detectors, DetectorOutcome{Name: r.Detector, Status: "failed", Error: r.Err.Error()})
			out.Notes = append(out.Notes, fmt.Sprintf("detector %s failed: %v; this alert is enriched by the others", r.Detector, r.Err))
			e.log.Warn("detector failed on alert", "detector", r.Detector, "alert", pa.ID, "error", r.Err)
			continue
		}
		out.Detectors = append(out.Detectors, DetectorOutcome{Name: r.Detector, Status: "ok"})
		en := r.Enrichment
		if en == nil {
			continue
		}
		if out.CommonAncestor == nil && en.CommonAncestor != nil {
			out.CommonAncestor = en.CommonAncestor
		}
		for _, s := range en.Suspects {
			if alerted[s.VMUUID] {
				continue
			}
			if i, ok := best[s.VMUUID]; ok {
				// One entry per VM: the highest-scoring detector's reason
				// leads, the others follow.
				cur := &out.Suspects[i]
				dets := cur.Detector + "," + s.Detector
				if s.Score > cur.Score {
					s.Reason += "; also " + cur.Detector + ": " + cur.Reason
					*cur = s
				} else {
					cur.Reason += "; also " + s.Detector + ": " + s.Reason
				}
				cur.Detector = dets
				continue
			}
			best[s.VMUUID] = len(out.Suspects)
			out.Suspects = append(out.Suspects, s)
		}
		out.Findings = append(out.Findings, en.Findings...)
		for _, n := range en.Notes {
			out.Notes = append(out.Notes, r.Detector+": "+n)
		}
	}
	e.dropAlerted(ctx, pa.Time, out, cx)
	sort.SliceStable(out.Suspects, func(i, j int) bool { return out.Suspects[i].Score > out.Suspects[j].Score })
}

// dropAlerted removes suspects that raised alerts themselves within the
// window: they are already known, not suspected. Family members' alerts
// were read with the context; others are asked for.
func (e *Enricher) dropAlerted(ctx context.Context, at time.Time, out *Output, cx *alertContext) {
	if len(out.Suspects) == 0 {
		return
	}
	hit := map[string]bool{}
	var ask []string
	if cx.alertedOK {
		inFamily := make(map[string]bool, len(cx.family))
		for i := range cx.family {
			inFamily[cx.family[i].UUID] = true
		}
		for _, x := range cx.alerted {
			hit[x.UUID] = true
		}
		for _, s := range out.Suspects {
			if !inFamily[s.VMUUID] {
				ask = append(ask, s.VMUUID)
			}
		}
	} else {
		for _, s := range out.Suspects {
			ask = append(ask, s.VMUUID)
		}
	}
	if len(ask) > 0 {
		av, err := e.svc.AlertedVMs(ctx, ask, at.Add(-e.Window), at)
		if err != nil {
			out.Notes = append(out.Notes, "could not check which suspects alerted themselves: "+err.Error())
			return
		}
		for _, x := range av {
			hit[x.UUID] = true
		}
	}
	keep := out.Suspects[:0]
	for _, s := range out.Suspects {
		if !hit[s.VMUUID] {
			keep = append(keep, s)
		}
	}
	if n := len(out.Suspects) - len(keep); n > 0 {
		out.Notes = append(out.Notes, fmt.Sprintf("%d VMs named by detectors are left out of the suspects: they alerted themselves within %s", n, e.Window))
	}
	out.Suspects = keep
}

// render adds vmlineage and threat.enrichments to the alert's document.
// The input map is copied at the top level so a caller's Alert is unchanged.
func (e *Enricher) render(a *Alert, out *Output) map[string]any {
	doc := make(map[string]any, len(a.Doc)+2)
	for k, v := range a.Doc {
		doc[k] = v
	}
	if _, ok := doc["@timestamp"]; !ok {
		doc["@timestamp"] = timeString(a.Time)
	}
	doc["vmlineage"] = out
	if len(out.matches) == 0 {
		return doc
	}
	var threat map[string]any
	if t, ok := doc["threat"].(map[string]any); ok {
		threat = make(map[string]any, len(t)+1)
		for k, v := range t {
			threat[k] = v
		}
	} else {
		threat = map[string]any{}
	}
	var enr []any
	if old, ok := threat["enrichments"].([]any); ok {
		enr = append(enr, old...)
	}
	for _, m := range out.matches {
		name := m.UUID
		if v := out.vmByUUID[m.UUID]; v != nil && v.Name != "" {
			name = v.Name
		}
		desc := fmt.Sprintf("%s matched VM %s (%s) as it was at %s", m.Field, name, m.UUID, timeString(a.Time))
		if len(out.Suspects) > 0 {
			desc += fmt.Sprintf("; lineage suspects: %d, first %s", len(out.Suspects), suspectLabel(&out.Suspects[0]))
		}
		ind := map[string]any{"provider": "vmlineage", "description": desc, "type": indicatorType(m), "name": name}
		switch indicatorType(m) {
		case "ipv4-addr", "ipv6-addr":
			ind["ip"] = m.Value
		case "mac-addr":
			ind["mac"] = m.Value
		}
		enr = append(enr, map[string]any{
			"indicator": ind,
			"matched": map[string]any{"atomic": m.Value, "field": m.Field, "id": m.UUID, "occurred": timeString(a.Time),
				"type": "vmlineage_vm_match"},
		})
	}
	threat["enrichments"] = enr
	doc["threat"] = threat
	return doc
}

func suspectLabel(s *plugins.Suspect) string {
	if s.VMName != "" {
		return s.VMName
	}
	return s.VMUUID
}

func indicatorType(m plugins.AlertVM) string {
	switch m.Field {
	case "host.mac":
		return "mac-addr"
	case "host.ip", "source.ip", "destination.ip":
		if ip := net.ParseIP(m.Value); ip != nil && ip.To4() == nil {
			return "ipv6-addr"
		}
		return "ipv4-addr"
	}
	return "software" // a VM: ECS has no closer indicator type
}
