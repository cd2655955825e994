package xapisim

import (
	"fmt"
	"sort"
	"strings"
	"sync"
)

// The database model of xapi's event.from (xen-api ocaml/database/
// db_cache_types.ml): a global generation counter; every write (create a
// row, set a field, delete a row) stamps what it touches with a fresh
// generation; each row keeps created and modified stamps; each table keeps a
// queue of deletions capped at 512 entries and cut to the newest 256.

const (
	delQueueMax  = 512
	delQueueKeep = 256
)

type classDef struct {
	name   string // wire name: "VM", "VM_guest_metrics"
	lower  string // event class: "vm"
	fields []string
	idx    map[string]int
}

func newClass(name string, fields ...string) *classDef {
	c := &classDef{name: name, lower: strings.ToLower(name), fields: fields, idx: map[string]int{}}
	for i, f := range fields {
		if _, dup := c.idx[f]; dup {
			panic("xapisim: duplicate field " + name + "." + f)
		}
		c.idx[f] = i
	}
	return c
}

type row struct {
	ref      string
	created  uint64
	modified uint64
	vals     []any // in classDef.fields order; values are never mutated in place
}

type delEntry struct {
	created, deleted uint64
	ref              string
}

type table struct {
	def     *classDef
	rows    map[string]*row
	deleted []delEntry
	lastMod uint64 // highest stamp of any row or deletion: lets scans skip the table
	// log lists (generation, ref) of every create/modify in generation
	// order, so event.from finds what changed after a token without
	// scanning every row; stale entries are skipped and compacted away.
	log []logEntry
}

type logEntry struct {
	gen uint64
	ref string
}

// logged records a stamp. Caller holds mu.
func (t *table) logged(g uint64, ref string) {
	t.lastMod = g
	t.log = append(t.log, logEntry{g, ref})
	if len(t.log) > 4*len(t.rows)+1024 {
		t.compact()
	}
}

// compact keeps one entry per live row, at its current stamp.
func (t *table) compact() {
	l := make([]logEntry, 0, len(t.rows))
	for ref, r := range t.rows {
		l = append(l, logEntry{r.modified, ref})
	}
	sort.Slice(l, func(i, j int) bool { return l[i].gen < l[j].gen })
	t.log = l
}

// since returns the log entries after gen.
func (t *table) since(gen uint64) []logEntry {
	i := sort.Search(len(t.log), func(i int) bool { return t.log[i].gen > gen })
	return t.log[i:]
}

// relation keeps a set field as the inverse of a ref field (xapi's
// datamodel relations, e.g. VM.resident_on / host.resident_VMs).
type relation struct {
	class, field, target, inverse string
}

// DB is the simulated xapi database. Callers hold mu around every
// read-modify sequence; notify wakes event.from waiters after a batch.
type DB struct {
	mu        sync.Mutex
	gen       uint64
	tables    map[string]*table // by lower-case class
	byName    map[string]*table // by wire name, the hot path
	order     []string          // lower-case classes in definition order
	relations []relation
	changed   chan struct{}

	msgs   []message
	msgGen uint64
}

type message struct {
	gen  uint64
	ref  string
	snap Struct
}

func newDB(defs []*classDef, rels []relation) *DB {
	db := &DB{tables: map[string]*table{}, byName: map[string]*table{}, relations: rels, changed: make(chan struct{})}
	for _, d := range defs {
		db.tables[d.lower] = &table{def: d, rows: map[string]*row{}}
		db.byName[d.name] = db.tables[d.lower]
		db.order = append(db.order, d.lower)
	}
	return db
}

func (db *DB) table(class string) *table {
	if t := db.byName[class]; t != nil {
		return t
	}
	t := db.tables[strings.ToLower(class)]
	if t == nil {
		panic("xapisim: no table " + class)
	}
	return t
}

func (db *DB) stamp() uint64 {
	db.gen++
	return db.gen
}

// notify wakes every waiter; call after a batch of writes (lock not needed).
func (db *DB) notify() {
	db.mu.Lock()
	close(db.changed)
	db.changed = make(chan struct{})
	db.mu.Unlock()
}

// changedCh returns the channel closed at the next notify. Caller holds mu.
func (db *DB) changedCh() <-chan struct{} { return db.changed }

// get returns the row or nil. Caller holds mu.
func (db *DB) get(class, ref string) *row {
	return db.table(class).rows[ref]
}

// field reads one field. Caller holds mu.
func (db *DB) field(class, ref, name string) any {
	t := db.table(class)
	r := t.rows[ref]
	if r == nil {
		return nil
	}
	i, ok := t.def.idx[name]
	if !ok {
		panic("xapisim: no field " + class + "." + name)
	}
	return r.vals[i]
}

func (db *DB) str(class, ref, name string) string {
	s, _ := db.field(class, ref, name).(string)
	return s
}

// create adds a row from a field map (fields the class lacks panic: they
// are programming errors). Caller holds mu.
func (db *DB) create(class, ref string, fields map[string]any) {
	t := db.table(class)
	vals := make([]any, len(t.def.fields))
	for k, v := range fields {
		i, ok := t.def.idx[k]
		if !ok {
			panic("xapisim: no field " + class + "." + k)
		}
		vals[i] = v
	}
	g := db.stamp()
	t.rows[ref] = &row{ref: ref, created: g, modified: g, vals: vals}
	t.logged(g, ref)
	for _, rel := range db.relations {
		if rel.class == t.def.name {
			if target, _ := vals[t.def.idx[rel.field]].(string); target != "" {
				db.relAdd(rel, target, ref)
			}
		}
	}
}

// set writes one field (a no-op write still stamps the row, as in xapi).
// Caller holds mu.
func (db *DB) set(class, ref, name string, v any) {
	t := db.table(class)
	r := t.rows[ref]
	if r == nil {
		return
	}
	i, ok := t.def.idx[name]
	if !ok {
		panic("xapisim: no field " + class + "." + name)
	}
	old := r.vals[i]
	nv := make([]any, len(r.vals)) // copy on write: snapshots share the old slice
	copy(nv, r.vals)
	nv[i] = v
	r.vals = nv
	r.modified = db.stamp()
	t.logged(r.modified, ref)
	for _, rel := range db.relations {
		if rel.class == t.def.name && rel.field == name {
			if o, _ := old.(string); o != "" {
				db.relRemove(rel, o, ref)
			}
			if n, _ := v.(string); n != "" {
				db.relAdd(rel, n, ref)
			}
		}
	}
}

// mapPut / mapDel change one key of a string-map field.
func (db *DB) mapPut(class, ref, name, key, val string) {
	m, _ := db.field(class, ref, name).(map[string]string)
	nm := make(map[string]string, len(m)+1)
	for k, v := range m {
		nm[k] = v
	}
	nm[key] = val
	db.set(class, ref, name, nm)
}

func (db *DB) mapDel(class, ref, name, key string) {
	m, _ := db.field(class, ref, name).(map[string]string)
	nm := make(map[string]string, len(m))
	for k, v := range m {
		if k != key {
			nm[k] = v
		}
	}
	db.set(class, ref, name, nm)
}

// touch stamps a row without changing it (event.inject).
func (db *DB) touch(class, ref string) bool {
	t := db.table(class)
	r := t.rows[ref]
	if r == nil {
		return false
	}
	r.modified = db.stamp()
	t.logged(r.modified, ref)
	return true
}

// remove deletes a row and queues the deletion. Caller holds mu.
func (db *DB) remove(class, ref string) {
	t := db.table(class)
	r := t.rows[ref]
	if r == nil {
		return
	}
	for _, rel := range db.relations {
		if rel.class == t.def.name {
			if target, _ := r.vals[t.def.idx[rel.field]].(string); target != "" {
				db.relRemove(rel, target, ref)
			}
		}
	}
	delete(t.rows, ref)
	g := db.stamp()
	t.deleted = append(t.deleted, delEntry{created: r.created, deleted: g, ref: ref})
	if len(t.deleted) > delQueueMax {
		t.deleted = append([]delEntry(nil), t.deleted[len(t.deleted)-delQueueKeep:]...)
	}
	t.lastMod = g
}

func (db *DB) relAdd(rel relation, target, ref string) {
	t := db.table(rel.target)
	if t.rows[target] == nil {
		return
	}
	// Appending in place is safe: snapshots taken earlier hold shorter
	// slice headers and never see the new element. Callers never add a ref
	// twice (create adds once; set removes the old value first).
	set, _ := db.field(rel.target, target, rel.inverse).([]string)
	db.setPlain(rel.target, target, rel.inverse, append(set, ref))
}

func (db *DB) relRemove(rel relation, target, ref string) {
	t := db.table(rel.target)
	if t.rows[target] == nil {
		return
	}
	set, _ := db.field(rel.target, target, rel.inverse).([]string)
	ns := make([]string, 0, len(set)+len(set)/4+1) // spare room: relAdd appends in place
	for _, s := range set {
		if s != ref {
			ns = append(ns, s)
		}
	}
	db.setPlain(rel.target, target, rel.inverse, ns)
}

// setPlain writes without relation processing (inverse sets).
func (db *DB) setPlain(class, ref, name string, v any) {
	t := db.table(class)
	r := t.rows[ref]
	nv := make([]any, len(r.vals))
	copy(nv, r.vals)
	nv[t.def.idx[name]] = v
	r.vals = nv
	r.modified = db.stamp()
	t.logged(r.modified, ref)
}

// record renders a row as its wire struct. Caller holds mu.
func (db *DB) record(class, ref string) (Struct, bool) {
	t := db.table(class)
	r := t.rows[ref]
	if r == nil {
		return nil, false
	}
	return rowStruct(t.def, r.vals), true
}

func rowStruct(def *classDef, vals []any) Struct {
	s := make(Struct, 0, len(vals))
	for i, v := range vals {
		if v != nil {
			s = append(s, Member{def.fields[i], v})
		}
	}
	return s
}

// refs lists the live refs of a class in creation order. Caller holds mu.
func (db *DB) refs(class string) []string {
	t := db.table(class)
	rows := make([]*row, 0, len(t.rows))
	for _, r := range t.rows {
		rows = append(rows, r)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].created < rows[j].created })
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = r.ref
	}
	return out
}

// byUUID finds a row by its uuid field. Caller holds mu.
func (db *DB) byUUID(class, uuid string) string {
	t := db.table(class)
	i := t.def.idx["uuid"]
	for ref, r := range t.rows {
		if s, _ := r.vals[i].(string); s == uuid {
			return ref
		}
	}
	return ""
}

// addMessage records a message object (class "message" events).
func (db *DB) addMessage(ref string, snap Struct) {
	db.msgGen++
	db.msgs = append(db.msgs, message{gen: db.msgGen, ref: ref, snap: snap})
	if len(db.msgs) > 10000 { // xapi keeps a bounded in-memory cache
		db.msgs = append([]message(nil), db.msgs[len(db.msgs)-5000:]...)
	}
}

// counts is valid_ref_counts for every table. Caller holds mu.
func (db *DB) counts(extra map[string]int) Struct {
	names := make([]string, 0, len(db.tables)+len(extra))
	n := map[string]int{}
	for k, t := range db.tables {
		names = append(names, k)
		n[k] = len(t.rows)
	}
	for k, v := range extra {
		if _, ok := n[k]; !ok {
			names = append(names, k)
		}
		n[k] = v
	}
	sort.Strings(names)
	s := make(Struct, len(names))
	for i, k := range names {
		s[i] = Member{k, I4(n[k])}
	}
	return s
}

func (db *DB) String() string { return fmt.Sprintf("db(gen=%d)", db.gen) }
