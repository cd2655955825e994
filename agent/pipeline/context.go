package pipeline

import (
	"context"
	"os"
	"sync"

	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/formats"
)

// contextBuilder looks up, in the store, the lineage facts an encoded record
// carries besides the record itself: pool and host names, the VM's kind,
// state and addresses at the record's time, its parent's name, the ancestor
// path and the family root.
type contextBuilder struct {
	st      *lineage.Store
	version string
	agent   string

	mu    sync.Mutex
	hosts map[string]lineage.Host
	pools map[string]string
}

func newContextBuilder(st *lineage.Store, version string) *contextBuilder {
	name, _ := os.Hostname()
	return &contextBuilder{st: st, version: version, agent: name}
}

func (b *contextBuilder) names(ctx context.Context) (map[string]lineage.Host, map[string]string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.hosts == nil {
		b.hosts, b.pools = map[string]lineage.Host{}, map[string]string{}
		if hs, err := b.st.Hosts(ctx); err == nil {
			for _, h := range hs {
				b.hosts[h.UUID] = h
			}
		}
		if ps, err := b.st.Pools(ctx); err == nil {
			for _, p := range ps {
				b.pools[p.UUID] = p.Name
			}
		}
	}
	return b.hosts, b.pools
}

// pool is the uuid of the (first) pool the store knows.
func (b *contextBuilder) pool(ctx context.Context) string {
	_, pools := b.names(ctx)
	for u := range pools {
		return u
	}
	return ""
}

// base is the context of a document that is about no VM (checkpoints).
func (b *contextBuilder) base(ctx context.Context, namespace string) *formats.Context {
	_, pools := b.names(ctx)
	c := &formats.Context{AgentName: b.agent, AgentVersion: b.version, Namespace: namespace}
	for _, name := range pools {
		c.PoolName = name
	}
	return c
}

func (b *contextBuilder) build(ctx context.Context, r *record.Record, namespace string) *formats.Context {
	hosts, pools := b.names(ctx)
	c := &formats.Context{PoolName: pools[r.PoolUUID], AgentName: b.agent, AgentVersion: b.version, Namespace: namespace}
	if h, ok := hosts[r.HostUUID]; ok {
		c.HostName, c.HostIP = h.Name, h.Address
	}
	if h, ok := hosts[r.DestinationHostUUID]; ok {
		c.DestinationHostName = h.Name
	}
	if r.VMUUID == "" {
		return c
	}
	if v, err := b.st.VM(ctx, r.VMUUID); err == nil {
		c.VMKind, c.PowerState = formats.VMKind(v.Kind), v.PowerState
	}
	anc, _ := b.st.Ancestors(ctx, r.VMUUID)
	if len(anc) > 0 {
		c.FamilyRoot = anc[len(anc)-1].UUID
		for i := len(anc) - 1; i >= 0; i-- {
			c.AncestorPath = append(c.AncestorPath, anc[i].UUID)
		}
	} else {
		c.FamilyRoot = r.VMUUID
	}
	if r.ParentVMUUID != "" {
		if p, err := b.st.VM(ctx, r.ParentVMUUID); err == nil {
			c.ParentName = p.Name
		}
		if len(anc) == 0 || anc[0].UUID != r.ParentVMUUID {
			// A creating record's parent is the new VM's parent: the path
			// of the store already says so; a failed creation names it.
			c.AncestorPath = append(c.AncestorPath, r.ParentVMUUID)
		}
	}
	at := r.End
	if attrs, err := b.st.Attrs(ctx, r.VMUUID, lineage.AttrIP, lineage.AttrMAC); err == nil {
		for _, a := range attrs {
			if a.From.After(at) || (!a.To.IsZero() && !a.To.After(at)) {
				continue
			}
			if a.Kind == lineage.AttrIP {
				c.VMIPs = append(c.VMIPs, a.Value)
			} else {
				c.VMMACs = append(c.VMMACs, a.Value)
			}
		}
	}
	return c
}

// Contexts looks up the lineage context of records for the encoders
// (`vmlineage records --format ecs|cef`).
type Contexts struct{ b *contextBuilder }

// NewContexts reads from st; version goes into ECS agent.version.
func NewContexts(st *lineage.Store, version string) *Contexts {
	return &Contexts{b: newContextBuilder(st, version)}
}

// For returns the context of r; namespace is the ECS data stream namespace.
func (c *Contexts) For(ctx context.Context, r *record.Record, namespace string) *formats.Context {
	return c.b.build(ctx, r, namespace)
}
