package webui

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/record"
)

// httpError is an error with the status the client should see.
type httpError struct {
	code int
	msg  string
}

func (e httpError) Error() string { return e.msg }

func badRequest(format string, a ...any) error {
	return httpError{http.StatusBadRequest, fmt.Sprintf(format, a...)}
}

// api wraps a handler returning a value to encode as JSON: it checks the
// token, bounds the request time, and maps errors to statuses.
func (s *Server) api(fn func(*http.Request) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if !s.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="vmlineage"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "missing or wrong bearer token"})
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		defer cancel()
		v, err := fn(r.WithContext(ctx))
		if err != nil {
			var he httpError
			switch {
			case errors.As(err, &he):
				writeJSON(w, he.code, map[string]string{"error": he.msg})
			case errors.Is(err, lineage.ErrNotFound):
				writeJSON(w, http.StatusNotFound, map[string]string{"error": err.Error()})
			default:
				s.log.Error("webui: API request failed", "path", r.URL.Path, "err", err)
				writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "internal error (see the server log)"})
			}
			return
		}
		writeJSON(w, http.StatusOK, v)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// Node is one VM as the page draws it.
type Node struct {
	UUID        string `json:"uuid"`
	Name        string `json:"name"`
	Parent      string `json:"parent,omitempty"`
	Via         string `json:"via,omitempty"`
	Kind        string `json:"kind"`
	PowerState  string `json:"power_state"`
	Destroyed   bool   `json:"destroyed"`
	DestroyedAt string `json:"destroyed_at,omitempty"`
	FirstSeen   string `json:"first_seen"`
	LastSeen    string `json:"last_seen"`
	HostUUID    string `json:"host_uuid,omitempty"`
	Host        string `json:"host,omitempty"`
	PoolUUID    string `json:"pool_uuid,omitempty"`
	Marks       *Mark  `json:"marks,omitempty"`
}

func nodeOf(v lineage.VM, hosts map[string]string, marks map[string]Mark) Node {
	n := Node{UUID: v.UUID, Name: v.Name, Parent: v.ParentUUID, Via: v.ParentVia, Kind: v.Kind,
		PowerState: v.PowerState, Destroyed: v.IsDestroyed(), DestroyedAt: record.FormatTime(v.Destroyed),
		FirstSeen: record.FormatTime(v.FirstSeen), LastSeen: record.FormatTime(v.LastSeen),
		HostUUID: v.HostUUID, Host: hosts[v.HostUUID], PoolUUID: v.PoolUUID}
	if m, ok := marks[v.UUID]; ok && (m.Alerted || m.Suspect) {
		n.Marks = &m
	}
	return n
}

func (s *Server) marks(ctx context.Context) (map[string]Mark, error) {
	if s.opts.Alerts == nil {
		return nil, nil
	}
	m, err := s.opts.Alerts.Marks(ctx)
	if err != nil {
		return nil, fmt.Errorf("alert marks: %w", err)
	}
	return m, nil
}

func (s *Server) hostNames(ctx context.Context) (map[string]string, []lineage.Host, error) {
	hs, err := s.st.Hosts(ctx)
	if err != nil {
		return nil, nil, err
	}
	m := make(map[string]string, len(hs))
	for _, h := range hs {
		m[h.UUID] = h.Name
	}
	return m, hs, nil
}

func (s *Server) handlePools(r *http.Request) (any, error) {
	ps, err := s.st.Pools(r.Context())
	if ps == nil {
		ps = []lineage.Pool{}
	}
	return ps, err
}

func (s *Server) handleHosts(r *http.Request) (any, error) {
	_, hs, err := s.hostNames(r.Context())
	if err != nil {
		return nil, err
	}
	out := []lineage.Host{}
	pool := r.URL.Query().Get("pool")
	for _, h := range hs {
		if pool == "" || h.PoolUUID == pool {
			out = append(out, h)
		}
	}
	return out, nil
}

// TreeResponse is the family tree of a pool.
type TreeResponse struct {
	Pool  string `json:"pool"`
	Nodes []Node `json:"nodes"`
	// First and Last bound the known history (first sighting to the last
	// record or change): the range of the page's time control.
	First string `json:"first"`
	Last  string `json:"last"`
	Now   string `json:"now"`
}

func (s *Server) handleTree(r *http.Request) (any, error) {
	ctx := r.Context()
	pool := r.URL.Query().Get("pool")
	vms, err := s.st.VMs(ctx, pool)
	if err != nil {
		return nil, err
	}
	hosts, _, err := s.hostNames(ctx)
	if err != nil {
		return nil, err
	}
	marks, err := s.marks(ctx)
	if err != nil {
		return nil, err
	}
	out := TreeResponse{Pool: pool, Nodes: make([]Node, 0, len(vms)), Now: record.FormatTime(time.Now())}
	var first, last time.Time
	for _, v := range vms {
		out.Nodes = append(out.Nodes, nodeOf(v, hosts, marks))
		if first.IsZero() || v.FirstSeen.Before(first) {
			first = v.FirstSeen
		}
		last = maxTime(last, v.LastSeen, v.Destroyed, v.FirstSeen)
	}
	if lr, err := s.lastRecord(ctx, pool); err == nil {
		last = maxTime(last, lr)
	}
	out.First, out.Last = record.FormatTime(first), record.FormatTime(last)
	return out, nil
}

// lastRecord is the latest start or end of a record of the pool, so the time
// control reaches past the final operation.
func (s *Server) lastRecord(ctx context.Context, pool string) (time.Time, error) {
	var v sql.NullInt64
	err := s.st.DB().QueryRowContext(ctx, `SELECT MAX(MAX(start_ms, COALESCE(end_ms, 0))) FROM records WHERE ?='' OR pool_uuid=?`, pool, pool).Scan(&v)
	if err != nil || !v.Valid {
		return time.Time{}, err
	}
	return time.UnixMilli(v.Int64).UTC(), nil
}

func maxTime(ts ...time.Time) time.Time {
	var m time.Time
	for _, t := range ts {
		if t.After(m) {
			m = t
		}
	}
	return m
}

func (s *Server) handleMarks(r *http.Request) (any, error) {
	m, err := s.marks(r.Context())
	if m == nil {
		m = map[string]Mark{}
	}
	return m, err
}

// TimelineEntry is one record of a VM's timeline. Role says whether the VM
// is the record's subject ("self") or the VM something was made from
// ("parent", e.g. the source of a clone).
type TimelineEntry struct {
	record.Record
	Role string `json:"role"`
}

// MarshalJSON writes the record's own JSON plus "role" (the embedded
// record's MarshalJSON would otherwise swallow the field).
func (e TimelineEntry) MarshalJSON() ([]byte, error) {
	b, err := json.Marshal(e.Record)
	if err != nil {
		return nil, err
	}
	role, _ := json.Marshal(e.Role)
	b = append(b[:len(b)-1], `,"role":`...)
	b = append(b, role...)
	return append(b, '}'), nil
}

// UnmarshalJSON reads what MarshalJSON writes.
func (e *TimelineEntry) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, &e.Record); err != nil {
		return err
	}
	var aux struct {
		Role string `json:"role"`
	}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	e.Role = aux.Role
	return nil
}

// VMResponse is a VM's page: its facts, ancestors (nearest first),
// children, every record and every name/IP/MAC it held.
type VMResponse struct {
	VM        Node            `json:"vm"`
	Ancestors []Node          `json:"ancestors"`
	Children  []Node          `json:"children"`
	Timeline  []TimelineEntry `json:"timeline"`
	// TimelineTruncated: the VM has more records than maxTimeline; the
	// timeline holds the newest.
	TimelineTruncated bool       `json:"timeline_truncated,omitempty"`
	Attrs             []AttrSpan `json:"attrs"`
}

// maxTimeline bounds a VM's timeline in /api/vm.
const maxTimeline = 5000

// AttrSpan is a name, IP or MAC a VM held from From until To ("" while it
// still holds it).
type AttrSpan struct {
	Kind  string `json:"kind"`
	Value string `json:"value"`
	From  string `json:"from"`
	To    string `json:"to,omitempty"`
}

func (s *Server) handleVM(r *http.Request) (any, error) {
	ctx := r.Context()
	uuid := r.PathValue("uuid")
	if uuid == "" || len(uuid) > 64 {
		return nil, badRequest("bad VM uuid")
	}
	v, err := s.st.VM(ctx, uuid)
	if err != nil {
		return nil, err
	}
	hosts, _, err := s.hostNames(ctx)
	if err != nil {
		return nil, err
	}
	marks, err := s.marks(ctx)
	if err != nil {
		return nil, err
	}
	out := VMResponse{VM: nodeOf(v, hosts, marks), Ancestors: []Node{}, Children: []Node{}, Timeline: []TimelineEntry{}, Attrs: []AttrSpan{}}
	anc, err := s.st.Ancestors(ctx, uuid)
	if err != nil {
		return nil, err
	}
	for _, a := range anc {
		out.Ancestors = append(out.Ancestors, nodeOf(a, hosts, marks))
	}
	kids, err := s.st.DB().QueryContext(ctx, "SELECT uuid FROM vms WHERE parent_uuid=? ORDER BY first_seen_ms, uuid", uuid)
	if err != nil {
		return nil, err
	}
	var kidIDs []string
	for kids.Next() {
		var k string
		if err := kids.Scan(&k); err != nil {
			kids.Close()
			return nil, err
		}
		kidIDs = append(kidIDs, k)
	}
	kids.Close()
	for _, k := range kidIDs {
		if kv, err := s.st.VM(ctx, k); err == nil {
			out.Children = append(out.Children, nodeOf(kv, hosts, marks))
		}
	}
	// The newest records: a VM padded with cheap operations must not push
	// its latest ones (a destroy, a migration) out of sight.
	recs, err := s.st.Records(ctx, lineage.Filter{VMUUID: uuid, Limit: maxTimeline + 1, Newest: true})
	if err != nil {
		return nil, err
	}
	if len(recs) > maxTimeline {
		recs, out.TimelineTruncated = recs[1:], true
	}
	for _, rec := range recs {
		role := "self"
		if rec.VMUUID != uuid {
			role = "parent"
		}
		if rec.HostName == "" {
			rec.HostName = hosts[rec.HostUUID]
		}
		out.Timeline = append(out.Timeline, TimelineEntry{Record: rec, Role: role})
	}
	attrs, err := s.st.Attrs(ctx, uuid)
	if err != nil {
		return nil, err
	}
	for _, a := range attrs {
		out.Attrs = append(out.Attrs, AttrSpan{Kind: a.Kind, Value: a.Value, From: record.FormatTime(a.From), To: record.FormatTime(a.To)})
	}
	return out, nil
}

// AtResponse is the pool at a past time: each host with the VMs resident on
// it then, and the VMs that existed but ran nowhere (halted, suspended).
type AtResponse struct {
	At       string   `json:"at"`
	Pool     string   `json:"pool"`
	Hosts    []AtHost `json:"hosts"`
	Unplaced []AtVM   `json:"unplaced"`
	Exists   []string `json:"exists"` // uuids of every VM that existed then
}

// AtHost is a host and its VMs at the time.
type AtHost struct {
	UUID    string `json:"host_uuid"`
	Name    string `json:"name"`
	Address string `json:"address,omitempty"`
	VMs     []AtVM `json:"vms"`
}

// AtVM is a VM's state at the time.
type AtVM struct {
	UUID       string `json:"uuid"`
	Name       string `json:"name"`
	Kind       string `json:"kind"`
	PowerState string `json:"power_state"`
	Marks      *Mark  `json:"marks,omitempty"`
}

func (s *Server) handleAt(r *http.Request) (any, error) {
	ctx := r.Context()
	q := r.URL.Query()
	at, err := ParseTime(q.Get("t"))
	if err != nil {
		return nil, badRequest("t: %v", err)
	}
	pool := q.Get("pool")
	states, err := s.stateAt(ctx, pool, at)
	if err != nil {
		return nil, err
	}
	_, hosts, err := s.hostNames(ctx)
	if err != nil {
		return nil, err
	}
	marks, err := s.marks(ctx)
	if err != nil {
		return nil, err
	}
	out := AtResponse{At: record.FormatTime(at), Pool: pool, Hosts: []AtHost{}, Unplaced: []AtVM{}, Exists: make([]string, 0, len(states))}
	hostIdx := map[string]int{}
	for _, h := range hosts {
		if pool == "" || h.PoolUUID == pool || h.PoolUUID == "" {
			hostIdx[h.UUID] = len(out.Hosts)
			out.Hosts = append(out.Hosts, AtHost{UUID: h.UUID, Name: h.Name, Address: h.Address, VMs: []AtVM{}})
		}
	}
	for _, st := range states {
		out.Exists = append(out.Exists, st.UUID)
		ps := st.PowerState
		if ps == "" {
			ps = "unknown"
		}
		vm := AtVM{UUID: st.UUID, Name: st.Name, Kind: st.Kind, PowerState: ps}
		if m, ok := marks[st.UUID]; ok && (m.Alerted || m.Suspect) {
			vm.Marks = &m
		}
		if st.HostUUID == "" {
			out.Unplaced = append(out.Unplaced, vm)
			continue
		}
		i, ok := hostIdx[st.HostUUID]
		if !ok { // a host we never saw described: show it by uuid
			i = len(out.Hosts)
			hostIdx[st.HostUUID] = i
			out.Hosts = append(out.Hosts, AtHost{UUID: st.HostUUID, Name: shortID(st.HostUUID), VMs: []AtVM{}})
		}
		out.Hosts[i].VMs = append(out.Hosts[i].VMs, vm)
	}
	return out, nil
}

// stateRow is one VM as it was at a time.
type stateRow struct {
	UUID, Name, Kind, PowerState, HostUUID string
}

// stateAt is lineage.Store.StateAt done in two set-wise reads: StateAt looks
// each VM's name up on its own (vm_attrs has no index on vm_uuid for closed
// spans), which grows with the square of the pool; a 10,000-VM pool must
// answer while the time slider moves.
func (s *Server) stateAt(ctx context.Context, pool string, at time.Time) ([]stateRow, error) {
	t := at.UnixMilli()
	db := s.st.DB()
	rows, err := db.QueryContext(ctx, `SELECT v.uuid, v.name, v.kind, COALESCE(st.power_state,''), COALESCE(st.host_uuid,'')
		FROM vms v
		LEFT JOIN vm_states st ON st.vm_uuid=v.uuid AND st.from_ms<=? AND (st.to_ms IS NULL OR st.to_ms>?)
		WHERE v.first_seen_ms<=? AND (v.destroyed_ms IS NULL OR v.destroyed_ms>?)
		  AND NOT EXISTS(SELECT 1 FROM vm_gaps g WHERE g.vm_uuid=v.uuid AND g.from_ms<=? AND g.to_ms>?) AND (?='' OR v.pool_uuid=?)
		ORDER BY v.name, v.uuid`, t, t, t, t, t, t, pool, pool)
	if err != nil {
		return nil, fmt.Errorf("pool at %s: %w", record.FormatTime(at), err)
	}
	var out []stateRow
	seen := map[string]bool{}
	for rows.Next() {
		var r stateRow
		if err := rows.Scan(&r.UUID, &r.Name, &r.Kind, &r.PowerState, &r.HostUUID); err != nil {
			rows.Close()
			return nil, err
		}
		if seen[r.UUID] { // overlapping spans written at the same millisecond: keep one
			continue
		}
		seen[r.UUID] = true
		out = append(out, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	// The names VMs bore then (a renamed VM shows its old name).
	names := map[string]string{}
	nrows, err := db.QueryContext(ctx, `SELECT vm_uuid, value FROM vm_attrs WHERE kind='name' AND from_ms<=? AND (to_ms IS NULL OR to_ms>?)
		ORDER BY from_ms`, t, t)
	if err != nil {
		return nil, err
	}
	for nrows.Next() {
		var u, v string
		if err := nrows.Scan(&u, &v); err != nil {
			nrows.Close()
			return nil, err
		}
		names[u] = v // later spans win, as in StateAt
	}
	nrows.Close()
	for i := range out {
		if n := names[out[i].UUID]; n != "" {
			out[i].Name = n
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].UUID < out[j].UUID
	})
	return out, nrows.Err()
}

// ParseTime reads the t parameter: RFC 3339, "YYYY-MM-DDTHH:MM[:SS]" (what
// a datetime-local input sends; taken as UTC), or Unix milliseconds.
func ParseTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "now" {
		return time.Now().UTC(), nil
	}
	if len(s) > 64 {
		return time.Time{}, errors.New("time too long")
	}
	if isDigits(s) {
		var n int64
		if len(s) > 15 {
			return time.Time{}, fmt.Errorf("cannot read time %q: Unix milliseconds out of range", s)
		}
		for _, c := range s {
			n = n*10 + int64(c-'0')
		}
		return time.UnixMilli(n).UTC(), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.000", "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02T15:04", "2006-01-02 15:04", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			if t.Year() < 1 || t.Year() > 9999 {
				break
			}
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("cannot read time %q (want RFC 3339, YYYY-MM-DDTHH:MM[:SS] in UTC, or Unix milliseconds)", s)
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// SearchHit is a VM that matched a search, and why.
type SearchHit struct {
	UUID      string `json:"uuid"`
	Name      string `json:"name"`
	Kind      string `json:"kind"`
	PoolUUID  string `json:"pool_uuid"`
	Destroyed bool   `json:"destroyed"`
	Match     string `json:"match"` // uuid, name, ip, mac
	Value     string `json:"value"`
	From      string `json:"from,omitempty"` // when the VM held Value (ip, mac, former name)
	To        string `json:"to,omitempty"`
}

// maxHits bounds a search answer: a search for "vm" in a big pool should not
// ship the whole pool twice.
const maxHits = 100

func (s *Server) handleSearch(r *http.Request) (any, error) {
	ctx := r.Context()
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	if q == "" {
		return []SearchHit{}, nil
	}
	if len(q) > 200 {
		return nil, badRequest("q: longer than 200 characters")
	}
	return s.search(ctx, q, r.URL.Query().Get("pool"))
}

func (s *Server) search(ctx context.Context, q, pool string) ([]SearchHit, error) {
	vms, err := s.st.VMs(ctx, pool)
	if err != nil {
		return nil, err
	}
	byID := make(map[string]*lineage.VM, len(vms))
	for i := range vms {
		byID[vms[i].UUID] = &vms[i]
	}
	hits := []SearchHit{}
	seen := map[string]bool{}
	add := func(v *lineage.VM, match, value string, from, to time.Time) {
		if v == nil || seen[v.UUID] || len(hits) >= maxHits {
			return
		}
		seen[v.UUID] = true
		hits = append(hits, SearchHit{UUID: v.UUID, Name: v.Name, Kind: v.Kind, PoolUUID: v.PoolUUID, Destroyed: v.IsDestroyed(),
			Match: match, Value: value, From: record.FormatTime(from), To: record.FormatTime(to)})
	}
	lq := strings.ToLower(q)
	// Exact uuid and exact name first, then prefixes and substrings.
	for i := range vms {
		if strings.EqualFold(vms[i].UUID, q) {
			add(&vms[i], "uuid", vms[i].UUID, time.Time{}, time.Time{})
		}
	}
	for i := range vms {
		if strings.EqualFold(vms[i].Name, q) {
			add(&vms[i], "name", vms[i].Name, time.Time{}, time.Time{})
		}
	}
	// IPs and MACs at any time: exact value, then prefix (e.g. "10.1.0.").
	rows, err := s.st.DB().QueryContext(ctx, `SELECT vm_uuid, kind, value, from_ms, to_ms FROM vm_attrs
		WHERE kind IN ('ip','mac') AND value>=? AND value<? ORDER BY value<>? , from_ms LIMIT 1000`, lq, lq+"\x7f", lq)
	if err != nil {
		return nil, err
	}
	type attrHit struct {
		vm, kind, value string
		from, to        sql.NullInt64
	}
	var ah []attrHit
	for rows.Next() {
		var h attrHit
		if err := rows.Scan(&h.vm, &h.kind, &h.value, &h.from, &h.to); err != nil {
			rows.Close()
			return nil, err
		}
		ah = append(ah, h)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for _, h := range ah {
		add(byID[h.vm], h.kind, h.value, msTime(h.from), msTime(h.to))
	}
	var prefix, sub []int
	for i := range vms {
		switch {
		case strings.HasPrefix(strings.ToLower(vms[i].UUID), lq):
			prefix = append(prefix, i)
		case strings.Contains(strings.ToLower(vms[i].Name), lq):
			sub = append(sub, i)
		}
	}
	for _, i := range prefix {
		add(&vms[i], "uuid", vms[i].UUID, time.Time{}, time.Time{})
	}
	sort.SliceStable(sub, func(a, b int) bool { return len(vms[sub[a]].Name) < len(vms[sub[b]].Name) })
	for _, i := range sub {
		add(&vms[i], "name", vms[i].Name, time.Time{}, time.Time{})
	}
	// Former names: a VM renamed since still answers to what it was called.
	rows, err = s.st.DB().QueryContext(ctx, `SELECT vm_uuid, value, from_ms, to_ms FROM vm_attrs
		WHERE kind='name' AND to_ms IS NOT NULL AND value LIKE ? ESCAPE '\' LIMIT 1000`, "%"+likeEscape(q)+"%")
	if err != nil {
		return nil, err
	}
	ah = ah[:0]
	for rows.Next() {
		var h attrHit
		if err := rows.Scan(&h.vm, &h.value, &h.from, &h.to); err != nil {
			rows.Close()
			return nil, err
		}
		ah = append(ah, h)
	}
	rows.Close()
	for _, h := range ah {
		add(byID[h.vm], "former name", h.value, msTime(h.from), msTime(h.to))
	}
	return hits, rows.Err()
}

func likeEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}

func msTime(v sql.NullInt64) time.Time {
	if !v.Valid || v.Int64 == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v.Int64).UTC()
}
