package backend

import (
	"time"

	"github.com/vmlineage/vmlineage/plugins"
)

// Family is a VM family with every member's state history: what the alert
// path needs of a family, read once and then answered in memory (the
// ancestry of any member, the family's members, their states at any time).
// A Family is immutable once built; backends may share it between alerts.
type Family struct {
	Root string
	// Members: root first, then breadth first, each generation by first
	// sighting.
	Members []FamilyMember
	index   map[string]int
}

// FamilyMember is a VM of a Family.
type FamilyMember struct {
	plugins.VM
	Depth int
	// Spans are the VM's power state spans, newest first. When
	// SpansComplete is false older spans were left out: times before the
	// oldest one kept are unknown.
	Spans         []Span
	SpansComplete bool
}

// Span is a power state held from From until To (zero: still held).
type Span struct {
	From, To   time.Time
	PowerState string
	HostUUID   string
}

// NewFamily indexes members (root first) into a Family.
func NewFamily(members []FamilyMember) *Family {
	f := &Family{Members: members, index: make(map[string]int, len(members))}
	if len(members) > 0 {
		f.Root = members[0].UUID
	}
	for i := range members {
		f.index[members[i].UUID] = i
	}
	return f
}

// Member returns the member with uuid, or nil.
func (f *Family) Member(uuid string) *FamilyMember {
	if i, ok := f.index[uuid]; ok {
		return &f.Members[i]
	}
	return nil
}

// StateAt is the member's state at time at, as StatesAt gives it; ok is
// false when uuid is not a member or the time is older than the spans kept.
func (f *Family) StateAt(uuid string, at time.Time) (st plugins.VMState, ok bool) {
	m := f.Member(uuid)
	if m == nil {
		return plugins.VMState{UUID: uuid}, false
	}
	st = plugins.VMState{UUID: uuid, Existed: !m.FirstSeen.After(at) && (m.Destroyed.IsZero() || m.Destroyed.After(at))}
	for _, s := range m.Spans { // newest first: the first span holding at wins
		if !s.From.After(at) && (s.To.IsZero() || s.To.After(at)) {
			st.PowerState, st.HostUUID = s.PowerState, s.HostUUID
			return st, true
		}
	}
	if !m.SpansComplete && (len(m.Spans) == 0 || at.Before(m.Spans[len(m.Spans)-1].From)) {
		return st, false
	}
	return st, true
}

// Ancestry is the member and its ancestors, nearest first up to the root.
func (f *Family) Ancestry(uuid string) []*FamilyMember {
	var out []*FamilyMember
	for m := f.Member(uuid); m != nil && len(out) <= len(f.Members); m = f.Member(m.ParentUUID) {
		out = append(out, m)
		if m.ParentUUID == "" {
			break
		}
	}
	return out
}

// UUIDs lists the members.
func (f *Family) UUIDs() []string {
	out := make([]string, len(f.Members))
	for i := range f.Members {
		out[i] = f.Members[i].UUID
	}
	return out
}
