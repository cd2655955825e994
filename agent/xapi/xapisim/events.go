package xapisim

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// event.from semantics (xen-api ocaml/xapi/xapi_event.ml from_inner): one
// event per object per call carrying its current snapshot; add for rows
// created after the token, mod for rows modified after it, del (no
// snapshot) for rows deleted after it that existed at the token; messages
// first, then adds, mods, dels, each group in generation order.

// token is the parsed "%020d,%020d" pair.
type token struct{ gen, msg uint64 }

func (t token) String() string { return fmt.Sprintf("%020d,%020d", t.gen, t.msg) }

// parseToken accepts "" (from the beginning) or "a,b" with two integers.
func parseToken(s string) (token, bool) {
	if s == "" {
		return token{}, true
	}
	a, b, ok := strings.Cut(s, ",")
	if !ok {
		return token{}, false
	}
	g, err1 := strconv.ParseUint(strings.TrimSpace(a), 10, 64)
	m, err2 := strconv.ParseUint(strings.TrimSpace(b), 10, 64)
	if err1 != nil || err2 != nil {
		return token{}, false
	}
	return token{g, m}, true
}

// subscription is a parsed classes list: "*", "vm", "vm/OpaqueRef:…".
type subscription struct {
	all      bool
	classes  map[string]bool            // lower-case
	objects  map[string]map[string]bool // lower-case class -> refs
	messages bool
	onlyTask bool
}

func parseSubscription(db *DB, classes []string) (*subscription, string) {
	s := &subscription{classes: map[string]bool{}, objects: map[string]map[string]bool{}}
	onlyTask := len(classes) > 0
	for _, c := range classes {
		cls, ref, hasRef := strings.Cut(c, "/")
		cls = strings.ToLower(cls)
		if cls != "task" {
			onlyTask = false
		}
		switch {
		case cls == "*" && !hasRef:
			s.all, s.messages = true, true
		case cls == "message":
			s.messages = true
		case db.tables[cls] != nil || knownOtherClass(cls):
			if hasRef {
				if s.objects[cls] == nil {
					s.objects[cls] = map[string]bool{}
				}
				s.objects[cls][ref] = true
			} else {
				s.classes[cls] = true
			}
		default:
			return nil, c
		}
	}
	s.onlyTask = onlyTask
	return s, ""
}

// knownOtherClass accepts classes that real xapi has and we do not model:
// subscribing to them is valid and yields nothing.
func knownOtherClass(c string) bool {
	switch c {
	case "session", "sr", "vdi", "vbd", "pif", "pbd", "console", "vm_appliance", "vgpu", "pgpu",
		"pci", "pusb", "vusb", "vtpm", "crashdump", "pool_patch", "pool_update", "secret", "blob",
		"user", "role", "subject", "data_source", "bond", "vlan", "tunnel", "certificate",
		"observer", "cluster", "cluster_host", "repository", "host_cpu", "host_crashdump",
		"host_patch", "sm", "pif_metrics", "vif_metrics", "vbd_metrics", "gpu_group", "network_sriov",
		"feature", "sdn_controller", "vdi_nbd_server_info", "pvs_site", "pvs_server", "pvs_proxy",
		"pvs_cache_storage", "vmss", "vmpp", "dr_task", "lvhd", "usb_group", "vm_group", "host_driver",
		"driver_variant", "event":
		return true
	}
	return false
}

func (s *subscription) wantsClass(c string) bool {
	return s.all || s.classes[c] || s.objects[c] != nil
}

func (s *subscription) wants(c, ref string) bool {
	return s.all || s.classes[c] || s.objects[c][ref]
}

type evt struct {
	gen   uint64
	class string
	op    string
	ref   string
	snap  Struct
}

// collect builds the events after tok. Caller holds db.mu. newTok is the
// highest generation returned (or the input one), as xapi's Token.
func (db *DB) collect(sub *subscription, tok token) (events []evt, newTok token) {
	newTok = tok
	var adds, mods, dels []evt
	for _, cls := range db.order {
		t := db.tables[cls]
		if !sub.wantsClass(cls) || t.lastMod <= tok.gen {
			continue
		}
		seen := map[string]bool{}
		for _, le := range t.since(tok.gen) {
			r := t.rows[le.ref]
			if r == nil || seen[le.ref] || r.modified <= tok.gen || !sub.wants(cls, le.ref) {
				continue
			}
			seen[le.ref] = true
			ref := le.ref
			e := evt{gen: r.modified, class: cls, ref: ref, snap: rowStruct(t.def, r.vals)}
			if r.created > tok.gen {
				e.op = "add"
				adds = append(adds, e)
			} else {
				e.op = "mod"
				mods = append(mods, e)
			}
			if r.modified > newTok.gen {
				newTok.gen = r.modified
			}
		}
		for _, d := range t.deleted {
			// A row created and deleted since the token yields nothing, and
			// does not move the token either: Table.fold_over_deleted only
			// visits deletions with created <= since, and only what it
			// visits moves from_inner's "last".
			if d.deleted <= tok.gen || d.created > tok.gen || !sub.wants(cls, d.ref) {
				continue
			}
			if d.deleted > newTok.gen {
				newTok.gen = d.deleted
			}
			dels = append(dels, evt{gen: d.deleted, class: cls, op: "del", ref: d.ref})
		}
	}
	if sub.messages {
		for _, m := range db.msgs {
			if m.gen > tok.msg {
				events = append(events, evt{gen: 0, class: "message", op: "add", ref: m.ref, snap: m.snap})
				newTok.msg = m.gen
			}
		}
	}
	byGen := func(es []evt) {
		sort.Slice(es, func(i, j int) bool { return es[i].gen < es[j].gen })
	}
	byGen(adds)
	byGen(mods)
	byGen(dels)
	events = append(events, adds...)
	events = append(events, mods...)
	events = append(events, dels...)
	return events, newTok
}

// hasChanges reports cheaply whether collect would return anything.
func (db *DB) hasChanges(sub *subscription, tok token) bool {
	if sub.messages && db.msgGen > tok.msg {
		return true
	}
	for _, cls := range db.order {
		t := db.tables[cls]
		if !sub.wantsClass(cls) || t.lastMod <= tok.gen {
			continue
		}
		if sub.all || sub.classes[cls] {
			// lastMod may come from a row created and deleted after the
			// token (invisible): check the log and the deletions exactly.
			for _, le := range t.since(tok.gen) {
				if r := t.rows[le.ref]; r != nil && r.modified > tok.gen {
					return true
				}
			}
			for i := len(t.deleted) - 1; i >= 0 && t.deleted[i].deleted > tok.gen; i-- {
				if t.deleted[i].created <= tok.gen {
					return true
				}
			}
			continue
		}
		for ref := range sub.objects[cls] {
			if r := t.rows[ref]; r != nil && r.modified > tok.gen {
				return true
			}
		}
		for _, d := range t.deleted {
			if d.deleted > tok.gen && d.created <= tok.gen && sub.objects[cls][d.ref] {
				return true
			}
		}
	}
	return false
}

// batchStruct renders an event.from reply.
func batchStruct(events []evt, counts Struct, tok token) Struct {
	list := make([]any, len(events))
	for i, e := range events {
		id := strconv.FormatUint(e.gen, 10)
		m := Struct{{"id", id}, {"timestamp", "0.0"}, {"class", e.class}, {"operation", e.op}, {"ref", e.ref}}
		if e.snap != nil {
			m = append(m, Member{"snapshot", e.snap})
		}
		list[i] = m
	}
	return Struct{{"events", list}, {"valid_ref_counts", counts}, {"token", tok.String()}}
}
