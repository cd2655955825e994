package lifecycle

import (
	"context"
	"errors"

	"github.com/vmlineage/vmlineage/agent/lineage"
)

// edge is what the tracer needs of a VM's place in the family tree.
type edge struct {
	parent, via string
	known       bool // the store holds the VM (alive or destroyed)
	dirty       bool // set by this process and not yet evictable
}

// maxEdges bounds the cache: the history of a pool (every VM that ever
// existed) stays in the store, not in memory.
const maxEdges = 100000

// edge returns the VM's edge, from the cache or the store.
func (t *Tracer) edge(uuid string) edge {
	if e, ok := t.edges[uuid]; ok {
		return e
	}
	var e edge
	v, err := t.store.LookupVM(context.Background(), uuid)
	switch {
	case err == nil:
		e = edge{parent: v.ParentUUID, via: v.ParentVia, known: true}
	case !errors.Is(err, lineage.ErrNotFound):
		t.log.Warn("reading a VM from the store failed", "vm", uuid, "err", err)
	}
	t.edges[uuid] = e
	return e
}

// setEdge records that uuid was created from parent by via.
func (t *Tracer) setEdge(uuid, parent, via string) {
	e := t.edge(uuid)
	e.parent, e.via, e.dirty = parent, via, true
	t.edges[uuid] = e
}

// markKnown notes that the store now holds uuid.
func (t *Tracer) markKnown(uuid string) {
	e := t.edge(uuid)
	e.known = true
	t.edges[uuid] = e
}

// trimEdges empties the cache once it is large; called after a commit, when
// everything it holds is in the store.
func (t *Tracer) trimEdges() {
	if len(t.edges) > maxEdges {
		t.edges = make(map[string]edge, 1024)
	}
}
