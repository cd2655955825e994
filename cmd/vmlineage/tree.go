package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/agent/webui"
)

func newTreeCmd() *cobra.Command {
	var sf storeFlags
	var format, pool, vm string
	c := &cobra.Command{
		Use:   "tree",
		Short: "Print the VM family tree",
		Long: `Print the family tree of the VMs: who was cloned, copied, snapshotted or imported from whom.
Destroyed VMs stay in the tree, marked. --format text (default), json (one VM per line:
vm_uuid, name, parent_vm_uuid, kind, power_state, destroyed), dot (Graphviz) or svg (an SVG
drawn by vmlineage itself, no Graphviz needed).`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			ctx := cmdContext(c)
			st, err := sf.open()
			if err != nil {
				return err
			}
			defer st.Close()
			vms, err := st.VMs(ctx, pool)
			if err != nil {
				return err
			}
			if vm != "" {
				v, err := resolveVM(ctx, st, vm)
				if err != nil {
					return err
				}
				if vms, err = family(ctx, st, v); err != nil {
					return err
				}
			}
			return printTree(c.OutOrStdout(), st, vms, format)
		},
	}
	sf.bind(c)
	c.Flags().StringVar(&format, "format", "text", "text, json, dot (Graphviz) or svg (drawn without Graphviz)")
	c.Flags().StringVar(&pool, "pool", "", "only this pool uuid")
	c.Flags().StringVar(&vm, "vm", "", "only the family of this VM (uuid or name)")
	return c
}

// family is the whole tree the VM belongs to: its root and every descendant.
func family(ctx context.Context, st *lineage.Store, v lineage.VM) ([]lineage.VM, error) {
	root, err := st.FamilyRoot(ctx, v.UUID)
	if err != nil {
		return nil, err
	}
	desc, err := st.Descendants(ctx, root.UUID)
	if err != nil {
		return nil, err
	}
	return append([]lineage.VM{root}, desc...), nil
}

func printTree(w io.Writer, st *lineage.Store, vms []lineage.VM, format string) error {
	bw := bufio.NewWriter(w)
	defer bw.Flush()
	switch format {
	case "json":
		enc := json.NewEncoder(bw)
		enc.SetEscapeHTML(false)
		for _, v := range vms {
			if err := enc.Encode(v); err != nil {
				return err
			}
		}
		return nil
	case "text":
		names := vmNames(st)
		roots, kids := treeOf(vms)
		cycles := cycleRoots(vms, &roots, kids)
		var walk func(v lineage.VM, prefix string, last, top bool)
		walk = func(v lineage.VM, prefix string, last, top bool) {
			branch, next := "├── ", prefix+"│   "
			if last {
				branch, next = "└── ", prefix+"    "
			}
			if top {
				branch, next = "", ""
			}
			line := vmLine(v, names)
			if p, ok := cycles[v.UUID]; ok {
				line += "  [cycle: its parent " + names.vm(p, "") + " descends from it]"
			}
			fmt.Fprintf(bw, "%s%s%s\n", prefix, branch, line)
			ch := kids[v.UUID]
			for i, k := range ch {
				walk(k, next, i == len(ch)-1, false)
			}
		}
		for _, r := range roots {
			walk(r, "", true, true)
		}
		return nil
	case "dot":
		return writeDot(bw, vms)
	case "svg":
		return webui.RenderSVG(bw, vms, &webui.SVGOptions{HostNames: vmNames(st).hosts})
	}
	return fmt.Errorf("--format: %q is not text, json, dot or svg", format)
}

// treeOf splits VMs into roots (no parent among them) and children lists,
// each ordered by first sighting.
func treeOf(vms []lineage.VM) (roots []lineage.VM, kids map[string][]lineage.VM) {
	in := map[string]bool{}
	for _, v := range vms {
		in[v.UUID] = true
	}
	kids = map[string][]lineage.VM{}
	for _, v := range vms {
		if v.ParentUUID != "" && in[v.ParentUUID] && v.ParentUUID != v.UUID {
			kids[v.ParentUUID] = append(kids[v.ParentUUID], v)
		} else {
			roots = append(roots, v)
		}
	}
	less := func(s []lineage.VM) func(i, j int) bool {
		return func(i, j int) bool {
			if !s[i].FirstSeen.Equal(s[j].FirstSeen) {
				return s[i].FirstSeen.Before(s[j].FirstSeen)
			}
			return s[i].UUID < s[j].UUID
		}
	}
	sort.SliceStable(roots, less(roots))
	for k := range kids {
		sort.SliceStable(kids[k], less(kids[k]))
	}
	return roots, kids
}

// cycleRoots finds the VMs no root reaches (a corrupt store whose parent
// chain loops: each VM of the loop has its parent in the set), makes the
// first-seen VM of each loop a root, cut from its parent's children, and
// returns those roots with the parent cut off, so the loop and everything
// below it are printed, marked, rather than dropped.
func cycleRoots(vms []lineage.VM, roots *[]lineage.VM, kids map[string][]lineage.VM) map[string]string {
	byUUID := map[string]lineage.VM{}
	for _, v := range vms {
		byUUID[v.UUID] = v
	}
	reached := map[string]bool{}
	var mark func(u string)
	mark = func(u string) {
		if reached[u] {
			return
		}
		reached[u] = true
		for _, k := range kids[u] {
			mark(k.UUID)
		}
	}
	for _, r := range *roots {
		mark(r.UUID)
	}
	cut := map[string]string{}
	sorted := treeOrder(vms)
	for _, v := range sorted {
		if reached[v.UUID] {
			continue
		}
		// Walk up to the loop above v, then take its first-seen member.
		onPath := map[string]bool{}
		u := v.UUID
		for !onPath[u] {
			onPath[u] = true
			u = byUUID[u].ParentUUID
		}
		root := byUUID[u]
		for w := byUUID[u].ParentUUID; w != u; w = byUUID[w].ParentUUID {
			if c := byUUID[w]; c.FirstSeen.Before(root.FirstSeen) || (c.FirstSeen.Equal(root.FirstSeen) && c.UUID < root.UUID) {
				root = c
			}
		}
		p := root.ParentUUID
		ch := kids[p]
		for i := range ch {
			if ch[i].UUID == root.UUID {
				kids[p] = append(ch[:i:i], ch[i+1:]...)
				break
			}
		}
		cut[root.UUID] = p
		*roots = append(*roots, root)
		mark(root.UUID)
	}
	return cut
}

// treeOrder is vms by first sighting then uuid.
func treeOrder(vms []lineage.VM) []lineage.VM {
	out := append([]lineage.VM(nil), vms...)
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].FirstSeen.Equal(out[j].FirstSeen) {
			return out[i].FirstSeen.Before(out[j].FirstSeen)
		}
		return out[i].UUID < out[j].UUID
	})
	return out
}

func vmLine(v lineage.VM, names nameBook) string {
	var b strings.Builder
	b.WriteString(v.Name)
	b.WriteString("  ")
	b.WriteString(v.UUID)
	if v.Kind != lineage.KindVM {
		b.WriteString("  (" + v.Kind + ")")
	}
	if v.IsDestroyed() {
		b.WriteString("  [destroyed " + record.FormatTime(v.Destroyed) + "]")
	} else {
		b.WriteString("  [" + strings.ToLower(v.PowerState))
		if v.HostUUID != "" {
			b.WriteString(" on " + names.host(v.HostUUID))
		}
		b.WriteString("]")
	}
	if v.ParentVia != "" {
		b.WriteString("  <- " + v.ParentVia)
		if v.ParentUUID == "" {
			b.WriteString(" of a VM never seen")
		}
	}
	return b.String()
}

func writeDot(w io.Writer, vms []lineage.VM) error {
	fmt.Fprintln(w, "digraph vmlineage {")
	fmt.Fprintln(w, "  rankdir=TB;")
	fmt.Fprintln(w, `  node [shape=box, style="rounded,filled", fontname="Helvetica"];`)
	in := map[string]bool{}
	for _, v := range vms {
		in[v.UUID] = true
	}
	for _, v := range vms {
		fill := map[string]string{"Running": "#c8e6c9", "Halted": "#eeeeee", "Suspended": "#fff9c4", "Paused": "#ffe0b2"}[v.PowerState]
		if fill == "" {
			fill = "#ffffff"
		}
		style := "rounded,filled"
		label := v.Name + `\n` + short(v.UUID) + `\n` + strings.ToLower(v.PowerState)
		if v.Kind != lineage.KindVM {
			label += " " + v.Kind
		}
		if v.IsDestroyed() {
			style, fill, label = "rounded,filled,dashed", "#ffcdd2", label+` destroyed`
		}
		fmt.Fprintf(w, "  %q [label=%s, style=%q, fillcolor=%q];\n", v.UUID, dotString(label), style, fill)
	}
	for _, v := range vms {
		if v.ParentUUID != "" && in[v.ParentUUID] {
			fmt.Fprintf(w, "  %q -> %q [label=%q];\n", v.ParentUUID, v.UUID, v.ParentVia)
		}
	}
	_, err := fmt.Fprintln(w, "}")
	return err
}

// dotString quotes a label, keeping the \n line breaks Graphviz understands.
func dotString(s string) string {
	return `"` + strings.NewReplacer(`"`, `\"`).Replace(s) + `"`
}
