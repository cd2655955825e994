package xapi

import (
	"bytes"
	"fmt"
	"sync"
	"time"
)

// Direct decoders for the types on the event path. Each mirrors what kolo
// would do for the same struct tags (members a type lacks are skipped, empty
// values leave the field zero); FuzzDecodeXMLRPC checks the two agree.

func (s *scanner) str() (string, error) {
	sc, c, err := s.value()
	if err != nil {
		return "", err
	}
	if c != "" {
		return "", fmt.Errorf("%w: a %s where a string was expected", errSyntax, c)
	}
	return sc.str()
}

// strInterned is str for members with few distinct values (classes, power
// states, statuses, host and null refs): each value is allocated once, not
// once per event.
func (s *scanner) strInterned() (string, error) {
	sc, c, err := s.value()
	if err != nil {
		return "", err
	}
	if c != "" {
		return "", fmt.Errorf("%w: a %s where a string was expected", errSyntax, c)
	}
	switch sc.typ {
	case "", "string":
		if bytes.IndexByte(sc.text, '&') < 0 && bytes.IndexByte(sc.text, '\r') < 0 {
			return intern(sc.text), nil
		}
	}
	return sc.str()
}

// The intern table is bounded: past internMax distinct values (a field
// holding more than expected), values are no longer kept.
const internMax = 4096

var (
	internMu  sync.RWMutex
	internTab = map[string]string{}
)

func intern(b []byte) string {
	internMu.RLock()
	v, ok := internTab[string(b)]
	internMu.RUnlock()
	if ok {
		return v
	}
	v = string(b)
	internMu.Lock()
	if len(internTab) < internMax {
		internTab[v] = v
	}
	internMu.Unlock()
	return v
}

func (s *scanner) decodeSnapshot(x *Snapshot) error {
	sc, c, err := s.value()
	if err != nil {
		return err
	}
	if c == "" {
		if len(sc.text) == 0 && sc.typ == "" {
			return nil // empty <value/>: left zero, as kolo does
		}
		return fmt.Errorf("%w: snapshot is a <%s>, not a struct", errSyntax, sc.typ)
	}
	if c != "struct" {
		return fmt.Errorf("%w: snapshot is an array, not a struct", errSyntax)
	}
	for {
		name, ok, err := s.nextMember()
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		if err = s.snapshotField(x, name); err != nil {
			return fmt.Errorf("field %s: %w", name, err)
		}
		if err = s.endMember(); err != nil {
			return err
		}
	}
	return s.closeCompound()
}

func (s *scanner) snapshotField(x *Snapshot, name []byte) error {
	name, err := plainName(name)
	if err != nil {
		return err
	}
	switch string(name) {
	case "uuid":
		x.UUID, err = s.str()
	case "name_label":
		x.NameLabel, err = s.str()
	case "power_state":
		x.PowerState, err = s.strInterned()
	case "resident_on":
		x.ResidentOn, err = s.strInterned()
	case "is_a_template":
		x.IsATemplate, err = s.boolean()
	case "is_default_template":
		x.IsDefaultTemplate, err = s.boolean()
	case "is_a_snapshot":
		x.IsASnapshot, err = s.boolean()
	case "is_control_domain":
		x.IsControlDomain, err = s.boolean()
	case "snapshot_of":
		x.SnapshotOf, err = s.strInterned()
	case "snapshot_time":
		err = s.timeInto(&x.SnapshotTime)
	case "parent":
		x.Parent, err = s.strInterned()
	case "current_operations":
		x.CurrentOperations, err = s.strMap(x.CurrentOperations)
	case "other_config":
		x.OtherConfig, err = s.strMap(x.OtherConfig)
	case "VIFs":
		x.VIFs, err = s.strSlice(x.VIFs)
	case "guest_metrics":
		x.GuestMetrics, err = s.str()
	case "domid":
		x.Domid, err = s.str()
	case "status":
		x.Status, err = s.strInterned()
	case "created":
		err = s.timeInto(&x.Created)
	case "finished":
		err = s.timeInto(&x.Finished)
	case "progress":
		err = s.floatInto(&x.Progress)
	case "result":
		x.Result, err = s.str()
	case "error_info":
		x.ErrorInfo, err = s.strSlice(x.ErrorInfo)
	case "subtask_of":
		x.SubtaskOf, err = s.strInterned()
	case "hostname":
		x.Hostname, err = s.str()
	case "address":
		x.Address, err = s.str()
	case "master":
		x.Master, err = s.strInterned()
	case "VM":
		x.VM, err = s.str()
	case "MAC":
		x.MAC, err = s.str()
	case "device":
		x.Device, err = s.str()
	case "networks":
		x.Networks, err = s.strMap(x.Networks)
	default:
		err = s.skipValue()
	}
	return err
}

func (s *scanner) boolean() (bool, error) {
	sc, c, err := s.value()
	if err != nil {
		return false, err
	}
	if c != "" {
		return false, fmt.Errorf("%w: a %s where a bool was expected", errSyntax, c)
	}
	if sc.typ == "" && len(sc.text) == 0 {
		return false, nil
	}
	return sc.boolean()
}

func (s *scanner) timeInto(t *time.Time) error {
	sc, c, err := s.value()
	if err != nil {
		return err
	}
	if c != "" {
		return fmt.Errorf("%w: a %s where a time was expected", errSyntax, c)
	}
	if sc.typ == "" && len(sc.text) == 0 {
		return nil
	}
	v, err := sc.time()
	if err == nil {
		*t = v
	}
	return err
}

func (s *scanner) floatInto(f *float64) error {
	sc, c, err := s.value()
	if err != nil {
		return err
	}
	if c != "" {
		return fmt.Errorf("%w: a %s where a float was expected", errSyntax, c)
	}
	if sc.typ == "" && len(sc.text) == 0 {
		return nil
	}
	v, err := sc.float()
	if err == nil {
		*f = v
	}
	return err
}

// strMap decodes a struct of strings. Like kolo it replaces the map.
func (s *scanner) strMap(_ map[string]string) (map[string]string, error) {
	sc, c, err := s.value()
	if err != nil {
		return nil, err
	}
	if c == "" {
		if sc.typ == "" && len(sc.text) == 0 {
			return nil, nil
		}
		return nil, fmt.Errorf("%w: a <%s> where a map was expected", errSyntax, sc.typ)
	}
	if c != "struct" {
		return nil, fmt.Errorf("%w: an array where a map was expected", errSyntax)
	}
	m := map[string]string{}
	for {
		name, ok, err := s.nextMember()
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		k, err := unescape(name)
		if err != nil {
			return nil, err
		}
		v, err := s.str()
		if err != nil {
			return nil, err
		}
		m[k] = v
		if err = s.endMember(); err != nil {
			return nil, err
		}
	}
	return m, s.closeCompound()
}

func (s *scanner) strSlice(old []string) ([]string, error) {
	sc, c, err := s.value()
	if err != nil {
		return nil, err
	}
	if c == "" {
		if sc.typ == "" && len(sc.text) == 0 {
			return old, nil
		}
		return nil, fmt.Errorf("%w: a <%s> where an array was expected", errSyntax, sc.typ)
	}
	if c != "array" {
		return nil, fmt.Errorf("%w: a struct where an array was expected", errSyntax)
	}
	var out []string
	for {
		ok, err := s.nextElem()
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		v, err := s.str()
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	// kolo leaves an empty array nil; so do we.
	return out, s.closeCompound()
}

func (s *scanner) decodeEvent(e *Event) error {
	sc, c, err := s.value()
	if err != nil {
		return err
	}
	if c != "struct" {
		if c == "" && sc.typ == "" && len(sc.text) == 0 {
			return nil
		}
		return fmt.Errorf("%w: event is not a struct", errSyntax)
	}
	for {
		name, ok, err := s.nextMember()
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		if name, err = plainName(name); err != nil {
			return err
		}
		switch string(name) {
		case "id":
			e.ID, err = s.str()
		case "class":
			e.Class, err = s.strInterned()
		case "operation":
			e.Operation, err = s.strInterned()
		case "ref":
			e.Ref, err = s.str()
		case "snapshot":
			if e.Snapshot == nil {
				e.Snapshot = new(Snapshot)
			}
			err = s.decodeSnapshot(e.Snapshot)
		default:
			err = s.skipValue()
		}
		if err != nil {
			return fmt.Errorf("event member %s: %w", name, err)
		}
		if err = s.endMember(); err != nil {
			return err
		}
	}
	return s.closeCompound()
}

// decodeEventBatch decodes the Value of an event.from reply.
func (s *scanner) decodeEventBatch(b *EventBatch) error {
	_, c, err := s.value()
	if err != nil {
		return err
	}
	if c != "struct" {
		return fmt.Errorf("%w: event.from result is not a struct", errSyntax)
	}
	for {
		name, ok, err := s.nextMember()
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		if name, err = plainName(name); err != nil {
			return err
		}
		switch string(name) {
		case "events":
			err = s.decodeEvents(b)
		case "valid_ref_counts":
			b.ValidRefCounts, err = s.intMap()
		case "token":
			b.Token, err = s.str()
		default:
			err = s.skipValue()
		}
		if err != nil {
			return fmt.Errorf("event.from %s: %w", name, err)
		}
		if err = s.endMember(); err != nil {
			return err
		}
	}
	return s.closeCompound()
}

func (s *scanner) decodeEvents(b *EventBatch) error {
	sc, c, err := s.value()
	if err != nil {
		return err
	}
	if c != "array" {
		if c == "" && sc.typ == "" && len(sc.text) == 0 {
			return nil
		}
		return fmt.Errorf("%w: events is not an array", errSyntax)
	}
	for {
		ok, err := s.nextElem()
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		b.Events = append(b.Events, Event{})
		if err = s.decodeEvent(&b.Events[len(b.Events)-1]); err != nil {
			return fmt.Errorf("event %d: %w", len(b.Events)-1, err)
		}
	}
	return s.closeCompound()
}

func (s *scanner) intMap() (map[string]int, error) {
	sc, c, err := s.value()
	if err != nil {
		return nil, err
	}
	if c != "struct" {
		if c == "" && sc.typ == "" && len(sc.text) == 0 {
			return nil, nil
		}
		return nil, fmt.Errorf("%w: not a struct", errSyntax)
	}
	m := map[string]int{}
	for {
		name, ok, err := s.nextMember()
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		k, err := unescape(name)
		if err != nil {
			return nil, err
		}
		v, c, err := s.value()
		if err != nil {
			return nil, err
		}
		if c != "" {
			return nil, fmt.Errorf("%w: count of %s is not a number", errSyntax, k)
		}
		n, err := v.integer()
		if err != nil {
			return nil, fmt.Errorf("count of %s: %w", k, err)
		}
		m[k] = n
		if err = s.endMember(); err != nil {
			return nil, err
		}
	}
	return m, s.closeCompound()
}

// decodeRecords decodes a get_all_records result (ref → record) calling fn
// for each record.
func (s *scanner) decodeRecords(fn func(ref string, snap *Snapshot) error) error {
	sc, c, err := s.value()
	if err != nil {
		return err
	}
	if c != "struct" {
		if c == "" && sc.typ == "" && len(sc.text) == 0 {
			return nil
		}
		return fmt.Errorf("%w: get_all_records result is not a struct", errSyntax)
	}
	for {
		if done, err := s.decodeRecordMember(fn); err != nil || done {
			if err != nil {
				return err
			}
			break
		}
	}
	return s.closeCompound()
}

// decodeRecordMember decodes one "<member><name>ref</name><value>…" or
// reports done at </struct>.
func (s *scanner) decodeRecordMember(fn func(ref string, snap *Snapshot) error) (done bool, err error) {
	name, ok, err := s.nextMember()
	if err != nil || !ok {
		return !ok, err
	}
	ref, err := unescape(name)
	if err != nil {
		return false, err
	}
	snap := new(Snapshot)
	if err = s.decodeSnapshot(snap); err != nil {
		return false, fmt.Errorf("record %s: %w", ref, err)
	}
	if err = s.endMember(); err != nil {
		return false, err
	}
	return false, fn(ref, snap)
}

// plainName resolves entities in a member name (rare: only when a server
// escapes what needs no escaping).
func plainName(name []byte) ([]byte, error) {
	if bytes.IndexByte(name, '&') < 0 && bytes.IndexByte(name, '\r') < 0 {
		return name, nil
	}
	u, err := unescape(name)
	return []byte(u), err
}
