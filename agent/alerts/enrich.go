package alerts

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"time"

	"github.com/vmlineage/vmlineage/agent/backend"
	"github.com/vmlineage/vmlineage/plugins"
)

// Detectors is what the enricher needs of plugins.Manager (an interface so
// that tests and the in-process path can stand in).
type Detectors interface {
	Enrich(ctx context.Context, a *plugins.Alert) []plugins.Result
}

// wanter is implemented by plugins.Manager: which parts of an alert's
// context the detectors it would ask read. Without it the enricher reads
// them all.
type wanter interface {
	Wanted(a *plugins.Alert) plugins.Needs
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
	// Observe, when set, is told how long each alert took (the agent's
	// metrics), on the goroutine that finished it: keep it cheap.
	Observe func(Timing)
}

// Timing is how one alert went, for metrics: its outcome, and how long it
// took in all and in each phase.
type Timing struct {
	AlertID string // the alert's ID (Alert.ID)
	Outcome string // TimingMatched, TimingUnmatched or TimingFailed
	// Total runs from Start to the enriched document: what the sender of
	// the alert waits, queueing for a worker included.
	Total time.Duration
	// Queue: from Start (the alert entered in the alert log, in arrival
	// order) until a worker takes it. Match: tying it to VMs. Context:
	// reading its lineage context. Detectors: the detector calls (in
	// parallel). Encode: the enriched document.
	Queue, Match, Context, Detectors, Encode time.Duration
}

// Outcomes of a Timing.
const (
	TimingMatched   = "matched"   // tied to at least one VM
	TimingUnmatched = "unmatched" // no VM matches: out unchanged, with a note
	TimingFailed    = "failed"    // matching failed (store error) or the alert cannot be encoded
)

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
// encoded at all; everything else becomes a note. It is Start then Finish.
func (e *Enricher) Enrich(ctx context.Context, a *Alert) ([]byte, error) {
	return e.Start(ctx, a).Finish(ctx)
}

// Job is an alert between Start and Finish.
type Job struct {
	e        *Enricher
	a        *Alert
	received time.Time
	started  time.Time // Start returned
	out      *Output
	raw      []byte
	vms      []plugins.AlertVM
	matchErr error
	pend     *pending
	err      error // the alert cannot be encoded: Finish returns it
}

// Start does the first part of enriching a: it enters the alert in the
// alert log, from where it counts for AlertedVMs once Finish has tied it
// to its VMs (other alerts of its family see it from then on, and a read
// waits for every alert a worker has taken to be tied). Callers that enrich alerts
// concurrently call Start in arrival order (Ordered does), so that every
// alert sees the ones before it as when they run one by one. Start does no
// store query, so the intake that calls it keeps up with its socket.
// Finish must follow.
func (e *Enricher) Start(ctx context.Context, a *Alert) *Job {
	j := &Job{e: e, a: a, received: e.now()}
	j.out = &Output{AlertID: a.ID, Notes: append([]string(nil), a.Notes...), Suspects: []plugins.Suspect{}}
	raw, err := marshalDoc(a.Doc)
	if err != nil {
		j.err = fmt.Errorf("alert %s: %w", a.ID, err)
		j.started = e.now()
		return j
	}
	j.raw = raw
	j.pend = e.svc.log.begin(a.ID, a.Time)
	j.started = e.now()
	return j
}

// Admit says a worker has taken the job; callers that run Finish apart
// from Start admit jobs in the order they started them (Finish admits the
// job too, for those that do not).
func (j *Job) Admit() {
	if j.pend != nil {
		j.e.svc.log.admit(j.pend)
	}
}

// match ties the alert to VMs and makes it count for them (alertLog.resolve).
func (j *Job) match(ctx context.Context) {
	e, a := j.e, j.a
	vms, notes, err := e.svc.match(ctx, a)
	e.svc.log.resolveMatch(ctx, j.pend, vms)
	j.out.Notes = append(j.out.Notes, notes...)
	if err != nil {
		e.log.Error("alert matching failed", "alert", a.ID, "error", err)
		j.out.Notes = append(j.out.Notes, "matching against the lineage store failed: "+err.Error())
	}
	j.vms, j.matchErr = vms, err
}

// Finish reads the alert's lineage context, runs the detectors and returns
// the enriched document (see Enrich). It may run on any goroutine.
func (j *Job) Finish(ctx context.Context) ([]byte, error) {
	e := j.e
	tm := Timing{AlertID: j.a.ID}
	if e.Observe != nil {
		tm.Queue = e.now().Sub(j.started)
		defer func() {
			tm.Total = e.now().Sub(j.received)
			e.Observe(tm)
		}()
	}
	if j.err != nil {
		tm.Outcome = TimingFailed
		return nil, j.err
	}
	// phase measures the phases only when someone is told of them.
	phase := func(d *time.Duration, f func()) {
		if e.Observe == nil {
			f()
			return
		}
		t := e.now()
		f()
		*d = e.now().Sub(t)
	}
	j.Admit()
	phase(&tm.Match, func() { j.match(ctx) })
	a, out, vms := j.a, j.out, j.vms
	out.matches = vms
	switch {
	case j.matchErr != nil:
		tm.Outcome = TimingFailed
	case len(vms) == 0:
		tm.Outcome = TimingUnmatched
	default:
		tm.Outcome = TimingMatched
	}
	if len(vms) == 0 {
		if j.matchErr == nil {
			out.Notes = append(out.Notes, "no VM in the lineage store matches this alert's cloud.instance.id, host.name, host.ip, source.ip, destination.ip or host.mac at "+timeString(a.Time))
		}
	} else {
		out.Matched = true
		pa := &plugins.Alert{ID: a.ID, Time: a.Time, VMs: out.matches, ECS: j.raw}
		want := plugins.AllNeeds()
		var cx *alertContext
		phase(&tm.Context, func() {
			cx = e.facts(ctx, pa, out)
			e.describeVMs(ctx, a, out, cx)
			if e.dets != nil {
				if w, ok := e.dets.(wanter); ok {
					want = w.Wanted(pa)
				}
				e.load(ctx, pa, want, cx, out)
			}
		})
		if e.dets != nil {
			phase(&tm.Detectors, func() { e.runDetectors(ctx, pa, out, cx) })
		} else {
			out.Notes = append(out.Notes, "no detectors configured")
		}
	}
	var js []byte
	var jerr error
	phase(&tm.Encode, func() {
		out.EnrichedAt = timeString(e.now())
		js, jerr = e.encodeDoc(a, out, j.raw)
		row := &alertRow{id: a.ID, timeMS: a.Time.UnixMilli(), received: j.received.UnixMilli(), source: a.Source, json: string(j.raw), vms: vms}
		if jerr == nil {
			row.enriched = js
		}
		e.svc.log.finish(j.pend, row)
	})
	if jerr != nil {
		tm.Outcome = TimingFailed
		return nil, fmt.Errorf("alert %s: encode enriched: %w", a.ID, jerr)
	}
	return js, nil
}

// alertContext is what the host reads once per alert and sends along to
// the detectors (most need some of it, and one read here saves each of
// them round trips over the broker). It is read in two steps: first the
// facts that decide which detectors can find anything (the matched VMs'
// ancestry, which VMs of their families alerted, what their records are
// about), then only the parts those detectors read (the families with
// their states, the records themselves).
type alertContext struct {
	// self holds each matched VM as it stood at the alert's time.
	self map[string]backend.Member
	// fams holds the family (by root) of each matched VM; a family over
	// plugins.MaxAlertFamily VMs is left out (tooBig; detectors then ask).
	fams   map[string]*backend.Family
	tooBig bool
	// alerted: which VMs of those families alerted within the window
	// (this alert included); alertedOK false when that is not known.
	alerted   []plugins.AlertedVM
	alertedOK bool
}

// maxContextRecords bounds the records sent along with an alert.
const maxContextRecords = 1000

// facts reads what decides which detectors to ask into pa.Ancestors and
// pa.Facts.
func (e *Enricher) facts(ctx context.Context, pa *plugins.Alert, out *Output) *alertContext {
	cx := &alertContext{self: map[string]backend.Member{}, fams: map[string]*backend.Family{}}
	lin := e.svc.lin
	if err := lin.Fresh(ctx); err != nil {
		out.Notes = append(out.Notes, "lineage backend: "+err.Error())
	}
	inAncestry := map[string]bool{}
	addAncestor := func(v plugins.VM) {
		if !inAncestry[v.UUID] {
			inAncestry[v.UUID] = true
			pa.Ancestors = append(pa.Ancestors, v)
		}
	}
	for _, m := range out.matches {
		f, err := lin.FamilyOf(ctx, m.UUID, plugins.MaxAlertFamily)
		if err != nil {
			out.Notes = append(out.Notes, fmt.Sprintf("could not read the family of %s: %v", m.UUID, err))
			continue
		}
		if f != nil {
			cx.fams[f.Root] = f
			if st, ok := f.StateAt(m.UUID, pa.Time); ok {
				for i, a := range f.Ancestry(m.UUID) {
					if i == 0 {
						cx.self[m.UUID] = backend.Member{VM: a.VM, Depth: a.Depth, State: st}
					}
					addAncestor(a.VM)
				}
				continue
			}
		} else {
			cx.tooBig = true
		}
		// A family too large to send, or a time older than the states kept.
		anc, err := lin.AncestryAt(ctx, m.UUID, pa.Time)
		if err != nil {
			out.Notes = append(out.Notes, fmt.Sprintf("could not read the ancestry of %s: %v", m.UUID, err))
			continue
		}
		cx.self[m.UUID] = anc[0]
		for i := range anc {
			addAncestor(anc[i].VM)
		}
	}
	if e.Window <= 0 {
		return cx
	}
	since, until := pa.Time.Add(-e.Window), pa.Time
	f := &plugins.AlertFacts{Window: e.Window, RecordsOK: true}
	pa.Facts = f
	for _, m := range out.matches {
		rf, err := lin.RecordFacts(ctx, m.UUID, since, until.Add(time.Millisecond), maxContextRecords+1)
		if err != nil || len(f.Records)+len(rf) > maxContextRecords {
			f.Records, f.RecordsOK = nil, false
			break
		}
		f.Records = append(f.Records, rf...)
	}
	if len(cx.fams) == 0 || cx.tooBig || len(cx.self) < len(out.matches) {
		return cx // some family unknown: lineage-suspects asks for itself
	}
	rootOf := map[string]string{}
	var all []string
	for root, fam := range cx.fams {
		for i := range fam.Members {
			rootOf[fam.Members[i].UUID] = root
			all = append(all, fam.Members[i].UUID)
		}
	}
	alerted, err := e.svc.AlertedVMs(ctx, all, since, until)
	if err != nil {
		out.Notes = append(out.Notes, "could not read which VMs of the family alerted: "+err.Error())
		return cx
	}
	cx.alerted, cx.alertedOK = alerted, true
	f.FamilyAlerted = map[string][]plugins.AlertedVM{}
	for root := range cx.fams {
		f.FamilyAlerted[root] = nil
	}
	for _, x := range alerted {
		f.FamilyAlerted[rootOf[x.UUID]] = append(f.FamilyAlerted[rootOf[x.UUID]], x)
	}
	return cx
}

// load reads the parts of the context the detectors to be asked read.
func (e *Enricher) load(ctx context.Context, pa *plugins.Alert, want plugins.Needs, cx *alertContext, out *Output) {
	if !want.Enrich {
		return
	}
	complete := pa.Facts != nil
	if want.AlertFamily {
		if cx.tooBig || len(cx.fams) == 0 || !cx.alertedOK {
			complete = false
		} else if err := e.loadFamilies(ctx, pa, cx); err != nil {
			out.Notes = append(out.Notes, "could not read the families' states: "+err.Error())
			pa.Family, pa.FamilyStates = nil, nil
			complete = false
		} else {
			pa.FamilyAlerted = cx.alerted
		}
	}
	if want.AlertRecords && complete {
		if !pa.Facts.RecordsOK {
			complete = false
		} else {
			since, until := pa.Time.Add(-e.Window), pa.Time
			for _, m := range out.matches {
				r, err := e.svc.lin.RecordsOfVM(ctx, m.UUID, since, until.Add(time.Millisecond), maxContextRecords+1)
				if err != nil || len(pa.Records)+len(r) > maxContextRecords {
					pa.Records, complete = nil, false
					break
				}
				pa.Records = append(pa.Records, r...)
			}
		}
	}
	if complete {
		pa.ContextWindow = e.Window
	} else {
		pa.Records, pa.FamilyAlerted = nil, nil
	}
}

// loadFamilies puts the families read into pa with every member's state
// at the alert's time (asking the backend only for states older than
// those it kept).
func (e *Enricher) loadFamilies(ctx context.Context, pa *plugins.Alert, cx *alertContext) error {
	roots := make([]string, 0, len(cx.fams))
	for root := range cx.fams {
		roots = append(roots, root)
	}
	sort.Strings(roots)
	var unknown []int
	for _, root := range roots {
		f := cx.fams[root]
		for i := range f.Members {
			st, ok := f.StateAt(f.Members[i].UUID, pa.Time)
			if !ok {
				unknown = append(unknown, len(pa.Family))
			}
			pa.Family = append(pa.Family, f.Members[i].VM)
			pa.FamilyStates = append(pa.FamilyStates, st)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	uu := make([]string, len(unknown))
	for k, i := range unknown {
		uu[k] = pa.Family[i].UUID
	}
	sts, err := e.svc.lin.StatesAt(ctx, uu, pa.Time)
	if err != nil {
		return err
	}
	for k, i := range unknown {
		pa.FamilyStates[i] = sts[k]
	}
	return nil
}

func (e *Enricher) describeVMs(ctx context.Context, a *Alert, out *Output, cx *alertContext) {
	out.vmByUUID = map[string]*plugins.VM{}
	for _, m := range out.matches {
		mv := MatchedVM{UUID: m.UUID, Field: m.Field, Value: m.Value}
		if self, ok := cx.self[m.UUID]; ok {
			mv.Name, mv.PowerState = self.Name, self.State.PowerState
			out.vmByUUID[m.UUID] = &plugins.VM{UUID: m.UUID, Name: self.Name}
		}
		out.VMs = append(out.VMs, mv)
	}
}

func (e *Enricher) runDetectors(ctx context.Context, pa *plugins.Alert, out *Output, cx *alertContext) {
	for _, vms := range [][]plugins.VM{pa.Ancestors, pa.Family} {
		for i := range vms {
			if out.vmByUUID[vms[i].UUID] == nil {
				out.vmByUUID[vms[i].UUID] = &vms[i]
			}
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
		inFamily := map[string]bool{}
		for _, f := range cx.fams {
			for i := range f.Members {
				inFamily[f.Members[i].UUID] = true
			}
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
