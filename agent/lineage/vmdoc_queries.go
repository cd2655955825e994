package lineage

// Read-only queries for the Elasticsearch VM index (agent/backend/esbackend):
// one document per VM with its ancestor path and its states, names and
// addresses over time, rewritten whenever the store changes what it says.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// VMHistory is what a VM's index document is made of.
type VMHistory struct {
	VM VM
	// AncestorPath holds the uuids from the family root down to the parent
	// (empty for a root).
	AncestorPath []string
	// Spans are the power state spans, newest first (at most MaxSpans
	// unless SpansComplete).
	Spans         []Span
	SpansComplete bool
	// Attrs are the names, MACs and IPs held over time, newest first (at
	// most MaxAttrs unless AttrsComplete).
	Attrs         []Attr
	AttrsComplete bool
}

// MaxAttrs bounds the attributes VMHistory keeps per VM.
const MaxAttrs = 256

// VMHistory reads one VM's document source. ErrNotFound when unknown.
func (s *Store) VMHistory(ctx context.Context, uuid string) (VMHistory, error) {
	var h VMHistory
	anc, err := s.AncestryAt(ctx, uuid, time.Now())
	if err != nil {
		return h, err
	}
	h.VM = anc[0].VM
	for i := len(anc) - 1; i >= 1; i-- {
		h.AncestorPath = append(h.AncestorPath, anc[i].UUID)
	}
	st, err := s.prepared(ctx, `SELECT from_ms, to_ms, power_state, host_uuid FROM vm_states WHERE vm_uuid=? ORDER BY from_ms DESC LIMIT ?`)
	if err != nil {
		return h, err
	}
	rows, err := st.QueryContext(ctx, uuid, MaxSpans+1)
	if err != nil {
		return h, err
	}
	for rows.Next() {
		var from int64
		var to sql.NullInt64
		var sp Span
		if err := rows.Scan(&from, &to, &sp.PowerState, &sp.HostUUID); err != nil {
			rows.Close()
			return h, err
		}
		sp.From, sp.To = fromMS(from), fromNullMS(to)
		h.Spans = append(h.Spans, sp)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return h, err
	}
	h.SpansComplete = len(h.Spans) <= MaxSpans
	h.Spans = h.Spans[:min(len(h.Spans), MaxSpans)]
	st, err = s.prepared(ctx, `SELECT vm_uuid,kind,value,from_ms,to_ms FROM vm_attrs WHERE vm_uuid=? ORDER BY from_ms DESC, kind, value LIMIT ?`)
	if err != nil {
		return h, err
	}
	rows, err = st.QueryContext(ctx, uuid, MaxAttrs+1)
	if err != nil {
		return h, err
	}
	defer rows.Close()
	for rows.Next() {
		var a Attr
		var from int64
		var to sql.NullInt64
		if err := rows.Scan(&a.VMUUID, &a.Kind, &a.Value, &from, &to); err != nil {
			return h, err
		}
		a.From, a.To = fromMS(from), fromNullMS(to)
		h.Attrs = append(h.Attrs, a)
	}
	if err := rows.Err(); err != nil {
		return h, err
	}
	h.AttrsComplete = len(h.Attrs) <= MaxAttrs
	h.Attrs = h.Attrs[:min(len(h.Attrs), MaxAttrs)]
	return h, nil
}

// ChangeCursor is a position in what the store has written: records by
// sequence number, state and attribute spans by row.
type ChangeCursor struct {
	RecordSeq int64 `json:"record_seq"`
	StateRow  int64 `json:"state_row"`
	AttrRow   int64 `json:"attr_row"`
}

// Changed is what ChangedVMs found.
type Changed struct {
	// VMs whose facts, states or attributes changed.
	VMs []string
	// Subtrees are VMs that records gave a parent: their descendants'
	// ancestor paths change with them.
	Subtrees []string
}

// ChangedVMs lists the VMs the store changed after c (at most about limit
// changes of each kind) and the cursor after them. A span closed without a
// new one opened (an address a running VM dropped) is not seen here; a
// periodic rewrite of the live VMs covers it.
func (s *Store) ChangedVMs(ctx context.Context, c ChangeCursor, limit int) (Changed, ChangeCursor, error) {
	var out Changed
	seen := map[string]bool{}
	add := func(u string) {
		if u != "" && !seen[u] {
			seen[u] = true
			out.VMs = append(out.VMs, u)
		}
	}
	scan := func(q string, after int64, fn func(*sql.Rows) (int64, error)) (int64, error) {
		st, err := s.prepared(ctx, q)
		if err != nil {
			return after, err
		}
		rows, err := st.QueryContext(ctx, after, limit)
		if err != nil {
			return after, err
		}
		defer rows.Close()
		for rows.Next() {
			if after, err = fn(rows); err != nil {
				return after, err
			}
		}
		return after, rows.Err()
	}
	var err error
	next := c
	next.RecordSeq, err = scan("SELECT seq, vm_uuid, parent_vm_uuid FROM records WHERE seq>? ORDER BY seq LIMIT ?", c.RecordSeq, func(r *sql.Rows) (int64, error) {
		var seq int64
		var vm, parent string
		if err := r.Scan(&seq, &vm, &parent); err != nil {
			return 0, err
		}
		add(vm)
		if parent != "" && vm != "" {
			out.Subtrees = append(out.Subtrees, vm)
		}
		return seq, nil
	})
	if err != nil {
		return out, c, fmt.Errorf("lineage: changed records: %w", err)
	}
	for _, t := range []struct {
		q   string
		row *int64
	}{
		{"SELECT rowid, vm_uuid FROM vm_states WHERE rowid>? ORDER BY rowid LIMIT ?", &next.StateRow},
		{"SELECT rowid, vm_uuid FROM vm_attrs WHERE rowid>? ORDER BY rowid LIMIT ?", &next.AttrRow},
	} {
		*t.row, err = scan(t.q, *t.row, func(r *sql.Rows) (int64, error) {
			var row int64
			var vm string
			if err := r.Scan(&row, &vm); err != nil {
				return 0, err
			}
			add(vm)
			return row, nil
		})
		if err != nil {
			return out, c, fmt.Errorf("lineage: changed spans: %w", err)
		}
	}
	return out, next, nil
}

// VMUUIDsAfter pages through every VM by uuid (after "" for the first
// page); liveOnly leaves out destroyed VMs.
func (s *Store) VMUUIDsAfter(ctx context.Context, after string, limit int, liveOnly bool) ([]string, error) {
	q := "SELECT uuid FROM vms WHERE uuid>? ORDER BY uuid LIMIT ?"
	if liveOnly {
		q = "SELECT uuid FROM vms WHERE uuid>? AND destroyed_ms IS NULL ORDER BY uuid LIMIT ?"
	}
	st, err := s.prepared(ctx, q)
	if err != nil {
		return nil, err
	}
	rows, err := st.QueryContext(ctx, after, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// CurrentCursor is where the store stands now (the cursor a complete
// rewrite of every VM starts from).
func (s *Store) CurrentCursor(ctx context.Context) (ChangeCursor, error) {
	var c ChangeCursor
	err := s.db.QueryRowContext(ctx, `SELECT (SELECT COALESCE(MAX(seq),0) FROM records), (SELECT COALESCE(MAX(rowid),0) FROM vm_states),
		(SELECT COALESCE(MAX(rowid),0) FROM vm_attrs)`).Scan(&c.RecordSeq, &c.StateRow, &c.AttrRow)
	if errors.Is(err, sql.ErrNoRows) {
		return c, nil
	}
	return c, err
}
