package main

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/plugins"
)

// Detector implements plugins.Detector.
type Detector struct {
	lin    plugins.Lineage
	k      int
	window time.Duration
}

// Info implements plugins.Detector.
func (d *Detector) Info() plugins.Info {
	return plugins.Info{Name: "lineage-suspects", Version: "1.0.0",
		Description: "alerts from k VMs of one family within a window: the other descendants of their nearest common ancestor are suspects"}
}

// Configure implements plugins.Detector.
func (d *Detector) Configure(_ context.Context, cfg map[string]string, lin plugins.Lineage) error {
	d.lin, d.k, d.window = lin, 2, 24*time.Hour
	if v, ok := cfg["k"]; ok {
		k, err := strconv.Atoi(v)
		if err != nil || k < 1 {
			return fmt.Errorf("k: want an integer >= 1, got %q", v)
		}
		d.k = k
	}
	if v, ok := cfg["window"]; ok {
		w, err := time.ParseDuration(v)
		if err != nil || w <= 0 {
			return fmt.Errorf("window: want a positive duration such as 24h, got %q", v)
		}
		d.window = w
	}
	return nil
}

// Needs implements plugins.NeedsDeclarer: alerts only, with their family,
// and only once k VMs of a family alerted within the window.
func (d *Detector) Needs() plugins.Needs {
	return plugins.Needs{Enrich: true, AlertFamily: true,
		EnrichWhen: &plugins.EnrichWhen{Window: d.window, MinFamilyAlerted: d.k}}
}

// OnRecord implements plugins.Detector; this detector works on alerts only.
func (d *Detector) OnRecord(context.Context, *record.Record) ([]plugins.Finding, error) {
	return nil, nil
}

// Enrich implements plugins.Detector.
func (d *Detector) Enrich(ctx context.Context, a *plugins.Alert) (*plugins.Enrichment, error) {
	out := &plugins.Enrichment{}
	done := map[string]bool{} // family roots already handled
	ix := a.Index()
	for _, av := range a.VMs {
		if err := d.family(ctx, a, ix, av.UUID, done, out); err != nil {
			return nil, err
		}
	}
	sort.SliceStable(out.Suspects, func(i, j int) bool { return out.Suspects[i].Score > out.Suspects[j].Score })
	return out, nil
}

func (d *Detector) family(ctx context.Context, a *plugins.Alert, ix plugins.FamilyIndex, vm string, done map[string]bool, out *plugins.Enrichment) error {
	// The host usually sends the family and its states along; ask only
	// when it did not (very large families).
	var fam []plugins.VM
	sent := false
	if r := ix.Root(vm); r != nil {
		fam, sent = ix.Members(a, r.UUID), len(a.FamilyStates) == len(a.Family)
	} else {
		var err error
		if fam, err = d.lin.Family(ctx, vm); err != nil {
			return fmt.Errorf("family of %s: %w", vm, err)
		}
	}
	if len(fam) == 0 {
		return fmt.Errorf("family of %s: empty answer", vm)
	}
	root := fam[0]
	if done[root.UUID] {
		return nil
	}
	done[root.UUID] = true
	byUUID := make(map[string]*plugins.VM, len(fam))
	uuids := make([]string, len(fam))
	for i := range fam {
		byUUID[fam[i].UUID] = &fam[i]
		uuids[i] = fam[i].UUID
	}
	// Which VMs alerted and what state each was in: two independent
	// questions, asked at once to save a round trip (states usually came
	// with the alert).
	stateOf := make(map[string]plugins.VMState, len(fam))
	var states []plugins.VMState
	var stErr error
	var wg sync.WaitGroup
	if sent {
		for _, u := range uuids {
			stateOf[u] = ix.States[u]
		}
	} else {
		wg.Add(1)
		go func() {
			defer wg.Done()
			states, stErr = d.lin.StatesAt(ctx, uuids, a.Time)
		}()
	}
	var alerted []plugins.AlertedVM
	var err error
	if sent && a.ContextWindow == d.window {
		in := make(map[string]bool, len(uuids))
		for _, u := range uuids {
			in[u] = true
		}
		for _, x := range a.FamilyAlerted {
			if in[x.UUID] {
				alerted = append(alerted, x)
			}
		}
	} else {
		alerted, err = d.lin.AlertedVMs(ctx, uuids, a.Time.Add(-d.window), a.Time)
	}
	wg.Wait()
	if err != nil {
		return fmt.Errorf("alerted VMs: %w", err)
	}
	if stErr != nil {
		return fmt.Errorf("states: %w", stErr)
	}
	for _, st := range states {
		stateOf[st.UUID] = st
	}
	if len(alerted) < d.k {
		out.Notes = append(out.Notes, fmt.Sprintf("lineage-suspects: %d of the %d VMs needed in family %s alerted within %s",
			len(alerted), d.k, label(&root), d.window))
		return nil
	}
	hit := map[string]bool{}
	var names []string
	for _, av := range alerted {
		hit[av.UUID] = true
		if v := byUUID[av.UUID]; v != nil {
			names = append(names, label(v))
		}
	}
	sort.Strings(names)
	nca := nearestCommonAncestor(byUUID, root.UUID, alerted)
	anc0 := byUUID[nca]
	if out.CommonAncestor == nil {
		cp := *anc0
		out.CommonAncestor = &cp
	}
	// The ancestor and its subtree, breadth first.
	children := map[string][]string{}
	for i := range fam {
		if p := fam[i].ParentUUID; p != "" {
			children[p] = append(children[p], fam[i].UUID)
		}
	}
	type cand struct {
		uuid  string
		depth int
	}
	var cands []cand
	queue := []cand{{nca, 0}}
	seen := map[string]bool{}
	for len(queue) > 0 {
		c := queue[0]
		queue = queue[1:]
		if seen[c.uuid] {
			continue
		}
		seen[c.uuid] = true
		if !hit[c.uuid] {
			cands = append(cands, c)
		}
		for _, ch := range children[c.uuid] {
			queue = append(queue, cand{ch, c.depth + 1})
		}
	}
	if len(cands) == 0 {
		out.Notes = append(out.Notes, fmt.Sprintf("lineage-suspects: every VM descending from %s has alerted", label(anc0)))
		return nil
	}
	ancDesc := label(anc0)
	if anc0.IsDestroyed() {
		ancDesc += " (destroyed " + record.FormatTime(anc0.Destroyed) + ")"
	}
	who := strings.Join(names, ", ")
	for _, c := range cands {
		v := byUUID[c.uuid]
		ps := v.PowerState
		existed := true
		if st, ok := stateOf[c.uuid]; ok {
			existed = st.Existed
			if st.PowerState != "" {
				ps = st.PowerState
			}
		}
		score, why := rank(v, ps, existed)
		score -= 0.01 * float64(min(c.depth, 9))
		var reason string
		if c.uuid == nca {
			reason = fmt.Sprintf("%s is the nearest common ancestor of %s, which alerted within %s; %s", ancDesc, who, d.window, why)
		} else {
			reason = fmt.Sprintf("%s descends from %s, the nearest common ancestor of %s, which alerted within %s; it has not alerted: %s",
				label(v), ancDesc, who, d.window, why)
		}
		out.Suspects = append(out.Suspects, plugins.Suspect{VMUUID: v.UUID, VMName: v.Name, Score: score, Reason: reason,
			PowerState: ps, Destroyed: v.IsDestroyed() && !v.Destroyed.After(a.Time)})
	}
	return nil
}

// rank puts the VMs no sensor can see first.
func rank(v *plugins.VM, ps string, existed bool) (float64, string) {
	switch {
	case v.IsDestroyed() || !existed:
		return 0.3, "it no longer exists, but copies, exports or snapshots of it may"
	case v.Kind == "snapshot" || v.Kind == "template":
		return 0.8, "a " + v.Kind + " can bring the infection back whenever it is reverted to or instantiated"
	}
	switch strings.ToLower(ps) {
	case "halted", "suspended":
		return 0.9, strings.ToLower(ps) + ", so no IDS or AV sensor can see it"
	case "paused":
		return 0.85, "paused, so no sensor inside it runs"
	case "running":
		return 0.6, "running, but silent"
	}
	return 0.5, "power state unknown"
}

// nearestCommonAncestor is the deepest VM on the root path of every alerted
// VM (a VM counts as its own ancestor, so a parent and child meet at the parent).
func nearestCommonAncestor(byUUID map[string]*plugins.VM, root string, alerted []plugins.AlertedVM) string {
	var common []string
	for i, av := range alerted {
		path := pathFromRoot(byUUID, av.UUID)
		if i == 0 {
			common = path
			continue
		}
		n := 0
		for n < len(common) && n < len(path) && common[n] == path[n] {
			n++
		}
		common = common[:n]
	}
	if len(common) == 0 {
		return root
	}
	return common[len(common)-1]
}

func pathFromRoot(byUUID map[string]*plugins.VM, uuid string) []string {
	var rev []string
	for u := uuid; u != "" && len(rev) <= len(byUUID); {
		rev = append(rev, u)
		v := byUUID[u]
		if v == nil {
			break
		}
		u = v.ParentUUID
	}
	out := make([]string, len(rev))
	for i, u := range rev {
		out[len(rev)-1-i] = u
	}
	return out
}

func label(v *plugins.VM) string {
	if v.Name != "" {
		return v.Name
	}
	return v.UUID
}
