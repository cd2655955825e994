// Package plugins is vmlineage's detector plugin SDK: the protocol (gRPC over
// hashicorp/go-plugin, see proto/detector.proto), the handshake, the
// plugin-side Serve and the host-side Manager that finds, verifies, starts,
// supervises and calls detector binaries.
//
// A detector implements Detector and calls Serve from main. It sees the
// lineage store only through the Lineage it is handed in Configure, which
// the host serves over go-plugin's broker; detectors never open the store.
package plugins

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	goplugin "github.com/hashicorp/go-plugin"

	"github.com/vmlineage/vmlineage/agent/record"
)

// Handshake is shared by the host and every detector. Bump ProtocolVersion
// on an incompatible change of proto/detector.proto; the magic cookie only
// stops a person from running a detector binary by hand (go-plugin: "not a
// security measure").
var Handshake = goplugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "VMLINEAGE_DETECTOR_PLUGIN",
	MagicCookieValue: "5b0c3f1e-lineage-detector",
}

// PluginName is the key of the detector in go-plugin's plugin set.
const PluginName = "detector"

// ErrNotFound is returned by Lineage when a VM is not in the store.
var ErrNotFound = errors.New("not found")

// Info describes a detector.
type Info struct {
	Name        string `json:"name"`
	Version     string `json:"version"`
	Description string `json:"description"`
}

// Detector is what a plugin implements.
type Detector interface {
	Info() Info
	// Configure is called once after each start, before any other call, with
	// the detector's settings from the agent's config and the lineage service.
	Configure(ctx context.Context, config map[string]string, lin Lineage) error
	// OnRecord sees every committed lifecycle record (streaming detection).
	OnRecord(ctx context.Context, r *record.Record) ([]Finding, error)
	// Enrich returns suspects and findings for an alert the host has tied to
	// VMs. A nil Enrichment means "nothing to add".
	Enrich(ctx context.Context, a *Alert) (*Enrichment, error)
}

// NeedsDeclarer is implemented by detectors that say what they need; the
// SDK asks right after each successful Configure and tells the host, which
// then skips calls that cannot yield anything and leaves out of a request
// what the detector does not read. A detector without it is sent
// everything (AllNeeds), as before this existed.
type NeedsDeclarer interface {
	Needs() Needs
}

// Needs is what a detector needs, once configured.
type Needs struct {
	// Enrich and OnRecord say whether the call may return anything.
	Enrich   bool
	OnRecord bool
	// OnRecordActivities limits OnRecord to records of these activities
	// (empty: all).
	OnRecordActivities []record.Activity
	// AlertFamily: Enrich reads Alert.Family, FamilyStates and
	// FamilyAlerted; AlertRecords: it reads Alert.Records;
	// AlertAncestors: it reads Alert.Ancestors (a detector that reads the
	// family finds the ancestors in it: Alert.Index covers both).
	AlertFamily    bool
	AlertRecords   bool
	AlertAncestors bool
	// EnrichWhen, when set, says when Enrich can yield something at all.
	EnrichWhen *EnrichWhen
}

// EnrichWhen: Enrich can yield something only when one of the conditions
// set holds. The host checks them against the context it sends with the
// alert (Alert.Family, Records, FamilyAlerted) and skips the call when none
// holds; it calls whenever it cannot tell (no context sent, or its
// ContextWindow shorter than Window). A condition may hold when Enrich
// then finds nothing; it must never fail to hold when Enrich would.
type EnrichWhen struct {
	// Window is the look-back of the conditions.
	Window time.Duration
	// MinFamilyAlerted: at least this many VMs of one matched VM's family
	// alerted within Window (this alert included).
	MinFamilyAlerted int
	// RecordActivities: a matched VM has a record (as VM or parent) of one
	// of these activities within Window.
	RecordActivities []record.Activity
	// DestroyedAncestor: an ancestor of a matched VM was destroyed before
	// the alert.
	DestroyedAncestor bool
}

// AllNeeds is what the host assumes of a detector that declares nothing.
func AllNeeds() Needs {
	return Needs{Enrich: true, OnRecord: true, AlertFamily: true, AlertRecords: true, AlertAncestors: true}
}

// WantsRecord reports whether OnRecord should see r.
func (n *Needs) WantsRecord(r *record.Record) bool {
	if !n.OnRecord {
		return false
	}
	if len(n.OnRecordActivities) == 0 {
		return true
	}
	for _, a := range n.OnRecordActivities {
		if a == r.Activity {
			return true
		}
	}
	return false
}

// SkipEnrich says why Enrich need not be called for a ("" when it must):
// Enrich is not implemented, or none of the EnrichWhen conditions holds.
// The conditions are read from a.Facts when the host set them, else from
// the context sent along (Family, FamilyAlerted, Records, Ancestors). A
// condition the alert's context cannot settle counts as holding.
func (n *Needs) SkipEnrich(a *Alert) string {
	if !n.Enrich {
		return "it does not enrich alerts"
	}
	w := n.EnrichWhen
	if w == nil || (w.MinFamilyAlerted <= 0 && len(w.RecordActivities) == 0 && !w.DestroyedAncestor) {
		return ""
	}
	ix := a.Index()
	for _, v := range a.VMs {
		if ix.VMs[v.UUID] == nil {
			return "" // no family or ancestry for this VM: cannot tell
		}
	}
	since := a.Time.Add(-w.Window)
	var why []string
	if w.MinFamilyAlerted > 0 {
		perRoot := map[string]int{}
		switch f := a.Facts; {
		case f != nil && f.FamilyAlerted != nil && f.Window >= w.Window:
			for root, avs := range f.FamilyAlerted {
				for _, x := range avs {
					if !x.Last.Before(since) {
						perRoot[root]++
					}
				}
			}
		case a.ContextWindow > 0 && a.ContextWindow >= w.Window && len(a.Family) > 0 && len(a.FamilyStates) == len(a.Family):
			for _, x := range a.FamilyAlerted {
				if r := ix.Root(x.UUID); r != nil && !x.Last.Before(since) {
					perRoot[r.UUID]++
				}
			}
		default:
			return ""
		}
		for _, c := range perRoot {
			if c >= w.MinFamilyAlerted {
				return ""
			}
		}
		why = append(why, fmt.Sprintf("fewer than %d VMs of the family alerted within %s", w.MinFamilyAlerted, w.Window))
	}
	if len(w.RecordActivities) > 0 {
		var facts []RecordFact
		switch f := a.Facts; {
		case f != nil && f.RecordsOK && f.Window >= w.Window:
			facts = f.Records
		case a.ContextWindow > 0 && a.ContextWindow >= w.Window:
			for i := range a.Records {
				facts = append(facts, RecordFact{VMUUID: a.Records[i].VMUUID, Activity: a.Records[i].Activity, Start: a.Records[i].Start})
			}
		default:
			return ""
		}
		for _, r := range facts {
			if r.Start.Before(since) {
				continue
			}
			for _, act := range w.RecordActivities {
				if r.Activity == act {
					return ""
				}
			}
		}
		acts := make([]string, len(w.RecordActivities))
		for i, act := range w.RecordActivities {
			acts[i] = string(act)
		}
		why = append(why, fmt.Sprintf("no %s of the alerted VM within %s", strings.Join(acts, " or "), w.Window))
	}
	if w.DestroyedAncestor {
		for _, v := range a.VMs {
			for _, p := range ix.Ancestors(v.UUID) {
				if p.IsDestroyed() && !p.Destroyed.After(a.Time) {
					return ""
				}
			}
		}
		why = append(why, "no ancestor of the alerted VM was destroyed")
	}
	return strings.Join(why, "; ")
}

// Lineage is the read-only view of the lineage store offered to detectors.
type Lineage interface {
	VM(ctx context.Context, uuid string) (VM, error)
	// Ancestors: nearest first, up to the family root.
	Ancestors(ctx context.Context, uuid string) ([]VM, error)
	// Descendants: breadth first.
	Descendants(ctx context.Context, uuid string) ([]VM, error)
	Siblings(ctx context.Context, uuid string) ([]VM, error)
	// Family: the family root first, then all its descendants, breadth first.
	Family(ctx context.Context, uuid string) ([]VM, error)
	// StatesAt gives each VM's power state at time at, in the order asked.
	StatesAt(ctx context.Context, uuids []string, at time.Time) ([]VMState, error)
	Records(ctx context.Context, q RecordQuery) ([]record.Record, error)
	// AlertedVMs says which of the VMs were named by an alert in [since, until].
	AlertedVMs(ctx context.Context, uuids []string, since, until time.Time) ([]AlertedVM, error)
}

// VM is a node of the family tree.
type VM struct {
	UUID       string    `json:"vm_uuid"`
	PoolUUID   string    `json:"pool_uuid,omitempty"`
	Name       string    `json:"name"`
	ParentUUID string    `json:"parent_vm_uuid,omitempty"`
	ParentVia  string    `json:"parent_via,omitempty"` // clone, copy, snapshot, ...; set without ParentUUID: made so from a VM never seen
	Kind       string    `json:"kind,omitempty"`
	PowerState string    `json:"power_state,omitempty"`
	HostUUID   string    `json:"host_uuid,omitempty"`
	FirstSeen  time.Time `json:"-"`
	LastSeen   time.Time `json:"-"`
	Destroyed  time.Time `json:"-"`
}

// IsDestroyed reports whether the VM no longer exists.
func (v *VM) IsDestroyed() bool { return !v.Destroyed.IsZero() }

// MarshalJSON writes times as RFC 3339 and the destroyed flag, the shape of
// `vmlineage tree --format json`.
func (v VM) MarshalJSON() ([]byte, error) {
	type plain VM
	return json.Marshal(struct {
		plain
		FirstSeen   string `json:"first_seen,omitempty"`
		Destroyed   bool   `json:"destroyed"`
		DestroyedAt string `json:"destroyed_at,omitempty"`
	}{plain(v), record.FormatTime(v.FirstSeen), v.IsDestroyed(), record.FormatTime(v.Destroyed)})
}

// VMState is a VM's power state at a time. PowerState is "" when nothing is
// known; Existed is false when the VM did not exist then (not yet created,
// already destroyed, or unknown uuid).
type VMState struct {
	UUID       string `json:"vm_uuid"`
	PowerState string `json:"power_state"`
	HostUUID   string `json:"host_uuid,omitempty"`
	Existed    bool   `json:"existed"`
}

// RecordQuery selects records; zero fields select everything.
type RecordQuery struct {
	VMUUID   string // records of this VM, or where it is the parent
	Activity record.Activity
	Since    time.Time // start >= Since
	Until    time.Time // start < Until
	Limit    int
}

// AlertedVM is a VM named by alerts in a window.
type AlertedVM struct {
	UUID  string
	First time.Time
	Last  time.Time
	Count int64
}

// Alert is what a detector is asked to enrich.
type Alert struct {
	ID   string
	Time time.Time
	// VMs the host tied the alert to, and through which field.
	VMs []AlertVM
	// ECS is the alert as received (ECS JSON).
	ECS json.RawMessage
	// Family holds the families of the matched VMs (root first, then
	// descendants) and FamilyStates their states at Time, in the same order;
	// both are empty when the families are larger than MaxAlertFamily.
	Family       []VM
	FamilyStates []VMState
	// ContextWindow > 0 says Records and FamilyAlerted were sent: the
	// matched VMs' lifecycle records (as VM or parent) and the family
	// members that alerted (this alert included) in [Time-ContextWindow, Time].
	ContextWindow time.Duration
	Records       []record.Record
	FamilyAlerted []AlertedVM
	// Ancestors are the matched VMs and their ancestors up to the family
	// roots, each once (sent to detectors that declared AlertAncestors).
	Ancestors []VM
	// Facts summarize the context for SkipEnrich when the host has not
	// read all of it. Host side only: never sent to a detector.
	Facts *AlertFacts
}

// AlertFacts is what the host knows of an alert's context before it
// decides which detectors to ask (and so which parts of the context to
// read in full).
type AlertFacts struct {
	// Window is the look-back the facts cover.
	Window time.Duration
	// FamilyAlerted holds, per family root of a matched VM, the family's
	// VMs that alerted within Window (this alert included); nil when not
	// known.
	FamilyAlerted map[string][]AlertedVM
	// Records are the matched VMs' records within Window (as VM or as
	// parent), in brief; RecordsOK says they are all there.
	Records   []RecordFact
	RecordsOK bool
}

// RecordFact is a lifecycle record in brief.
type RecordFact struct {
	VMUUID   string
	Activity record.Activity
	Start    time.Time
}

// MaxAlertFamily bounds the family sent along with an alert.
const MaxAlertFamily = 1000

// FamilyIndex indexes Alert.Family: every member by uuid, and each
// member's state at the alert's time.
type FamilyIndex struct {
	VMs    map[string]*VM
	States map[string]VMState
}

// Index builds the FamilyIndex of the alert over Family and Ancestors
// (empty maps when the host sent neither).
func (a *Alert) Index() FamilyIndex {
	ix := FamilyIndex{VMs: make(map[string]*VM, len(a.Family)+len(a.Ancestors)), States: make(map[string]VMState, len(a.FamilyStates))}
	for i := range a.Ancestors {
		ix.VMs[a.Ancestors[i].UUID] = &a.Ancestors[i]
	}
	for i := range a.Family {
		ix.VMs[a.Family[i].UUID] = &a.Family[i]
	}
	for _, s := range a.FamilyStates {
		ix.States[s.UUID] = s
	}
	return ix
}

// Root returns the family root of uuid, or nil when uuid is not indexed.
func (ix FamilyIndex) Root(uuid string) *VM {
	v := ix.VMs[uuid]
	for n := 0; v != nil && v.ParentUUID != "" && n <= len(ix.VMs); n++ {
		p := ix.VMs[v.ParentUUID]
		if p == nil {
			break
		}
		v = p
	}
	return v
}

// Ancestors returns uuid's ancestors, nearest first (nil when not indexed).
func (ix FamilyIndex) Ancestors(uuid string) []VM {
	var out []VM
	v := ix.VMs[uuid]
	for v != nil && v.ParentUUID != "" && len(out) <= len(ix.VMs) {
		p := ix.VMs[v.ParentUUID]
		if p == nil {
			break
		}
		out = append(out, *p)
		v = p
	}
	return out
}

// Members returns the VMs whose root is root, in Alert.Family order.
func (ix FamilyIndex) Members(a *Alert, root string) []VM {
	var out []VM
	for i := range a.Family {
		if r := ix.Root(a.Family[i].UUID); r != nil && r.UUID == root {
			out = append(out, a.Family[i])
		}
	}
	return out
}

// AlertVM is a VM an alert was tied to.
type AlertVM struct {
	UUID  string `json:"vm_uuid"`
	Field string `json:"field"`
	Value string `json:"value"`
}

// Enrichment is a detector's answer to an alert.
type Enrichment struct {
	Suspects       []Suspect
	Findings       []Finding
	CommonAncestor *VM
	Notes          []string
}

// Suspect is a VM a detector thinks should be looked at.
type Suspect struct {
	VMUUID     string  `json:"vm_uuid"`
	VMName     string  `json:"vm_name,omitempty"`
	Score      float64 `json:"score"` // 0..1, higher is more suspect
	Reason     string  `json:"reason"`
	PowerState string  `json:"power_state,omitempty"`
	Destroyed  bool    `json:"destroyed"`
	Detector   string  `json:"detector,omitempty"` // set by the host
}

// Finding is something a detector noticed.
type Finding struct {
	Detector string            `json:"detector,omitempty"` // set by the host
	Kind     string            `json:"kind"`
	VMUUID   string            `json:"vm_uuid,omitempty"`
	VMName   string            `json:"vm_name,omitempty"`
	Severity int               `json:"severity"` // 0..10 as in CEF
	Summary  string            `json:"summary"`
	Time     time.Time         `json:"-"`
	Details  map[string]string `json:"details,omitempty"`
	RecordID string            `json:"record_id,omitempty"`
}

// MarshalJSON writes Time as RFC 3339.
func (f Finding) MarshalJSON() ([]byte, error) {
	type plain Finding
	return json.Marshal(struct {
		plain
		Time string `json:"time,omitempty"`
	}{plain(f), record.FormatTime(f.Time)})
}
