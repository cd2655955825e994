// Package esbackend serves enrichment's lineage reads (backend.Lineage)
// from Elasticsearch, so that one enrichment service sees the VMs of
// every pool whose agent ships there (config lineage.backend:
// elasticsearch). Each agent with an Elasticsearch output keeps one
// document per VM in the VM index (Writer); lifecycle records are read
// from the record data streams.
//
// A VM document (id: the VM uuid):
//
//	{"@timestamp": last seen,
//	 "vm": {"uuid", "name", "kind", "pool_uuid", "host_uuid", "power_state",
//	        "parent_uuid", "parent_via", "first_seen", "last_seen",
//	        "destroyed", "destroyed_at"},
//	 "lineage": {"root": family root uuid (the VM itself for a root),
//	             "ancestors": [root, …, parent], "depth": len(ancestors)},
//	 "states": [{"from", "to", "power_state", "host_uuid"}, …] newest first,
//	 "states_complete": false when older spans were left out,
//	 "attrs": [{"kind": "name"|"ip"|"mac", "value", "from", "to"}, …],
//	 "attrs_complete": …}
//
// "Descendants of X" is one term query on lineage.ancestors, "the family of
// X" one on lineage.root; which VM held an address at a time is one nested
// query on attrs. Times are RFC 3339 UTC with milliseconds; "to" is left
// out while a span is open.
package esbackend

import (
	"encoding/json"
	"time"

	"github.com/vmlineage/vmlineage/agent/backend"
	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/plugins"
)

// Doc is a VM document.
type Doc struct {
	Timestamp      string    `json:"@timestamp"`
	VM             DocVM     `json:"vm"`
	Lineage        DocLine   `json:"lineage"`
	States         []DocSpan `json:"states"`
	StatesComplete bool      `json:"states_complete"`
	Attrs          []DocAttr `json:"attrs"`
	AttrsComplete  bool      `json:"attrs_complete"`
}

// DocVM is the VM's current facts.
type DocVM struct {
	UUID        string `json:"uuid"`
	Name        string `json:"name"`
	Kind        string `json:"kind,omitempty"`
	PoolUUID    string `json:"pool_uuid,omitempty"`
	HostUUID    string `json:"host_uuid,omitempty"`
	PowerState  string `json:"power_state,omitempty"`
	ParentUUID  string `json:"parent_uuid,omitempty"`
	ParentVia   string `json:"parent_via,omitempty"`
	FirstSeen   string `json:"first_seen,omitempty"`
	LastSeen    string `json:"last_seen,omitempty"`
	Destroyed   bool   `json:"destroyed"`
	DestroyedAt string `json:"destroyed_at,omitempty"`
}

// DocLine is the VM's place in its family.
type DocLine struct {
	Root      string   `json:"root"`
	Ancestors []string `json:"ancestors"`
	Depth     int      `json:"depth"`
}

// DocSpan is a power state span.
type DocSpan struct {
	From       string `json:"from"`
	To         string `json:"to,omitempty"`
	PowerState string `json:"power_state"`
	HostUUID   string `json:"host_uuid,omitempty"`
}

// DocAttr is a name, MAC or IP held over a span.
type DocAttr struct {
	Kind  string `json:"kind"`
	Value string `json:"value"`
	From  string `json:"from"`
	To    string `json:"to,omitempty"`
}

func ts(t time.Time) string { return record.FormatTime(t) }

func parseTS(s string) time.Time {
	if s == "" {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	return t.UTC()
}

// BuildDoc makes the document of a VM from what the store says of it.
func BuildDoc(h *lineage.VMHistory) Doc {
	v := &h.VM
	d := Doc{Timestamp: ts(v.LastSeen), StatesComplete: h.SpansComplete, AttrsComplete: h.AttrsComplete,
		States: []DocSpan{}, Attrs: []DocAttr{}}
	d.VM = DocVM{UUID: v.UUID, Name: v.Name, Kind: v.Kind, PoolUUID: v.PoolUUID, HostUUID: v.HostUUID, PowerState: v.PowerState,
		ParentUUID: v.ParentUUID, ParentVia: v.ParentVia, FirstSeen: ts(v.FirstSeen), LastSeen: ts(v.LastSeen),
		Destroyed: v.IsDestroyed(), DestroyedAt: ts(v.Destroyed)}
	d.Lineage = DocLine{Root: v.UUID, Ancestors: append([]string{}, h.AncestorPath...), Depth: len(h.AncestorPath)}
	if len(h.AncestorPath) > 0 {
		d.Lineage.Root = h.AncestorPath[0]
	}
	for _, s := range h.Spans {
		d.States = append(d.States, DocSpan{From: ts(s.From), To: ts(s.To), PowerState: s.PowerState, HostUUID: s.HostUUID})
	}
	for _, a := range h.Attrs {
		d.Attrs = append(d.Attrs, DocAttr{Kind: a.Kind, Value: a.Value, From: ts(a.From), To: ts(a.To)})
	}
	return d
}

// Marshal is the document's JSON.
func (d *Doc) Marshal() json.RawMessage {
	b, _ := json.Marshal(d) // plain strings, bools and ints: cannot fail
	return b
}

// VM is the document as a plugins.VM.
func (d *Doc) ToVM() plugins.VM {
	return plugins.VM{UUID: d.VM.UUID, PoolUUID: d.VM.PoolUUID, Name: d.VM.Name, ParentUUID: d.VM.ParentUUID, ParentVia: d.VM.ParentVia,
		Kind: d.VM.Kind, PowerState: d.VM.PowerState, HostUUID: d.VM.HostUUID, FirstSeen: parseTS(d.VM.FirstSeen),
		LastSeen: parseTS(d.VM.LastSeen), Destroyed: parseTS(d.VM.DestroyedAt)}
}

// member is the document as a backend.FamilyMember.
func (d *Doc) member() backend.FamilyMember {
	m := backend.FamilyMember{VM: d.ToVM(), Depth: d.Lineage.Depth, SpansComplete: d.StatesComplete}
	for _, s := range d.States {
		m.Spans = append(m.Spans, backend.Span{From: parseTS(s.From), To: parseTS(s.To), PowerState: s.PowerState, HostUUID: s.HostUUID})
	}
	return m
}

// stateAt is the VM's state at t from the spans the document carries;
// ok is false when t is older than them and they are incomplete.
func (d *Doc) stateAt(t time.Time) (plugins.VMState, bool) {
	f := backend.NewFamily([]backend.FamilyMember{d.member()})
	return f.StateAt(d.VM.UUID, t)
}

// root is the family root (documents always name one; the VM itself for a
// root).
func (d *Doc) root() string {
	if d.Lineage.Root != "" {
		return d.Lineage.Root
	}
	return d.VM.UUID
}
