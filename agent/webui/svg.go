package webui

import (
	"bufio"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/record"
)

// SVGOptions tune RenderSVG. The zero value (or nil) draws the plain tree.
type SVGOptions struct {
	// Marks highlights alerted and suspect VMs (by uuid).
	Marks map[string]Mark
	// HostNames names hosts by uuid in labels ("running on xen2").
	HostNames map[string]string
	// Title is drawn at the top (default "VM family tree").
	Title string
}

// Geometry shared by RenderSVG and the page (static/app.js keeps the same
// numbers so the two drawings look alike).
const (
	svgW   = 188 // node box
	svgH   = 42
	svgCol = 240 // column pitch (one generation)
	svgRow = 52  // row pitch
	svgPad = 24
	svgTop = 44 // room for the title
)

// treeLayout is the tidy tree of RenderSVG: generation gives the column;
// leaves take successive rows, a parent sits midway between its first and
// last child; families are separated by a little air.
type treeLayout struct {
	depth []int
	row   []float64
	rows  float64
	cols  int
	index map[string]int
}

func layoutTree(vms []lineage.VM) treeLayout {
	n := len(vms)
	L := treeLayout{depth: make([]int, n), row: make([]float64, n), index: make(map[string]int, n)}
	for i, v := range vms {
		L.index[v.UUID] = i
	}
	kids := make([][]int, n)
	var roots []int
	for i, v := range vms {
		if p, ok := L.index[v.ParentUUID]; ok && v.ParentUUID != "" && p != i {
			kids[p] = append(kids[p], i)
		} else {
			roots = append(roots, i)
		}
	}
	older := func(s []int) {
		sort.SliceStable(s, func(a, b int) bool {
			va, vb := &vms[s[a]], &vms[s[b]]
			if !va.FirstSeen.Equal(vb.FirstSeen) {
				return va.FirstSeen.Before(vb.FirstSeen)
			}
			return va.UUID < vb.UUID
		})
	}
	older(roots)
	for _, k := range kids {
		older(k)
	}
	state := make([]uint8, n) // 0 new, 1 on stack, 2 placed
	row := 0.0
	place := func(root int) {
		type frame struct{ i, d, next int }
		stack := []frame{{root, 0, 0}}
		state[root] = 1
		for len(stack) > 0 {
			top := &stack[len(stack)-1]
			if top.next < len(kids[top.i]) {
				k := kids[top.i][top.next]
				top.next++
				if state[k] == 0 { // a parent cycle is cut here
					state[k] = 1
					stack = append(stack, frame{k, top.d + 1, 0})
				}
				continue
			}
			i, d := top.i, top.d
			stack = stack[:len(stack)-1]
			L.depth[i] = d
			L.cols = max(L.cols, d+1)
			first, last := -1, -1
			for _, k := range kids[i] {
				if state[k] == 2 && L.depth[k] == d+1 {
					if first < 0 {
						first = k
					}
					last = k
				}
			}
			if first < 0 {
				L.row[i] = row
				row++
			} else {
				L.row[i] = (L.row[first] + L.row[last]) / 2
			}
			state[i] = 2
		}
	}
	for _, r := range roots {
		place(r)
		row += 0.35
	}
	for i := range vms { // members of a parent cycle with no root
		if state[i] == 0 {
			place(i)
			row += 0.35
		}
	}
	L.rows = max(row-0.35, 1)
	return L
}

// RenderSVG writes the family tree of vms as a standalone SVG (no Graphviz,
// no scripts, no external references): power state by colour, destroyed
// VMs hatched and dashed, templates and snapshots by shape and tag, alerted
// and suspect VMs ringed, a legend, and a hover title on every VM.
func RenderSVG(w io.Writer, vms []lineage.VM, opt *SVGOptions) error {
	if opt == nil {
		opt = &SVGOptions{}
	}
	title := opt.Title
	if title == "" {
		title = "VM family tree"
	}
	L := layoutTree(vms)
	cols := max(L.cols, 1)
	width := svgPad*2 + (cols-1)*svgCol + svgW + 30
	width = max(width, 640) // the legend needs the room
	treeH := svgPad*2 + int((L.rows-1)*svgRow) + svgH
	height := svgTop + treeH + 64
	bw := bufio.NewWriter(w)
	p := func(format string, a ...any) { fmt.Fprintf(bw, format, a...) }
	p(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	p(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">`+"\n", width, height, width, height)
	p("<title>%s</title>\n", xmlEscape(title))
	p("<style>%s</style>\n", svgStyle)
	p(`<defs><pattern id="hatch" width="7" height="7" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="7" height="7" fill="#f7f7f8"/><line x1="0" y1="0" x2="0" y2="7" stroke="#e2e4e8" stroke-width="3"/></pattern></defs>` + "\n")
	p(`<rect width="100%%" height="100%%" fill="#fbfcfd"/>` + "\n")
	p(`<text class="title" x="%d" y="28">%s</text><text class="count" x="%d" y="28" text-anchor="end">%d VMs</text>`+"\n", svgPad, xmlEscape(title), width-svgPad, len(vms))
	p(`<g class="tree" transform="translate(0,%d)">`+"\n", svgTop)
	gap := svgCol - svgW
	for i, v := range vms {
		x := svgPad + L.depth[i]*svgCol
		y := svgPad + L.row[i]*svgRow
		cls := []string{"node", "k-" + cssIdent(v.Kind, "vm"), "ps-" + cssIdent(strings.ToLower(v.PowerState), "unknown")}
		if v.IsDestroyed() {
			cls = append(cls, "destroyed")
		}
		m := opt.Marks[v.UUID]
		switch {
		case m.Alerted:
			cls = append(cls, "alerted")
		case m.Suspect:
			cls = append(cls, "suspect")
		}
		if v.ParentVia != "" {
			cls = append(cls, "via-"+cssIdent(v.ParentVia, "other"))
		}
		p(`<g class="%s" id="vm-%s" transform="translate(%d,%s)">`, strings.Join(cls, " "), xmlEscape(v.UUID), x, num(y))
		p("<title>%s</title>", xmlEscape(svgTooltip(v, m, opt.HostNames)))
		if pi, ok := L.index[v.ParentUUID]; ok && v.ParentUUID != "" && pi != i && L.depth[pi] == L.depth[i]-1 {
			dy := svgPad + L.row[pi]*svgRow - y
			p(`<path class="edge" d="M%d,%sH%sV%dH0"/>`, -gap, num(dy+svgH/2), num(-float64(gap)/2), svgH/2)
		}
		rx := 6
		switch v.Kind {
		case lineage.KindSnapshot:
			rx = 18
		case lineage.KindTemplate:
			rx = 0
		}
		if m.Alerted || m.Suspect {
			p(`<rect class="halo" x="-4" y="-4" width="%d" height="%d" rx="%d"/>`, svgW+8, svgH+8, rx+3)
		}
		p(`<rect class="box" width="%d" height="%d" rx="%d"/>`, svgW, svgH, rx)
		name := v.Name
		if name == "" {
			name = "(no name)"
		}
		p(`<text class="name" x="12" y="17">%s</text>`, xmlEscape(truncRunes(name, 21)))
		p(`<text class="sub" x="12" y="33"><tspan class="u">%s</tspan> · %s</text>`, xmlEscape(shortID(v.UUID)), xmlEscape(svgState(v, opt.HostNames)))
		if v.Kind == lineage.KindTemplate || v.Kind == lineage.KindSnapshot {
			p(`<text class="tag" x="%d" y="12" text-anchor="end">%s</text>`, svgW-8, strings.ToUpper(v.Kind))
		}
		if m.Alerted || m.Suspect {
			glyph := "?"
			if m.Alerted {
				glyph = "!"
			}
			p(`<g class="markdot"><circle r="8"/><text y="4">%s</text></g>`, glyph)
		}
		p("</g>\n")
	}
	p("</g>\n")
	writeLegend(p, svgTop+treeH+10)
	p("</svg>\n")
	return bw.Flush()
}

func writeLegend(p func(string, ...any), y int) {
	p(`<g class="legend" transform="translate(%d,%d)">`, svgPad, y)
	rows := [][]struct{ cls, rx, label string }{
		{{"ps-running", "3", "running"}, {"ps-halted", "3", "halted"}, {"ps-suspended", "3", "suspended"}, {"ps-paused", "3", "paused"}, {"destroyed", "3", "destroyed"}},
		{{"k-template", "0", "template"}, {"k-snapshot", "7", "snapshot"}, {"alerted", "3", "alerted"}, {"suspect", "3", "suspect"}},
	}
	for r, items := range rows {
		x := 0
		for _, it := range items {
			p(`<g class="%s" transform="translate(%d,%d)">`, it.cls, x, r*24)
			if it.cls == "alerted" || it.cls == "suspect" {
				p(`<rect class="halo" x="-2" y="-2" width="26" height="18" rx="5"/>`)
			}
			p(`<rect class="box" width="22" height="14" rx="%s"/><text class="lg" x="28" y="11">%s</text></g>`, it.rx, it.label)
			x += 28 + 8*len(it.label) + 18
		}
	}
	p("</g>\n")
}

const svgStyle = `
.title{font-size:16px;font-weight:700;fill:#1d2430}.count{font-size:12px;fill:#6b7585}
.edge{fill:none;stroke:#9aa5b5;stroke-width:1.4}
.via-snapshot .edge,.via-checkpoint .edge{stroke-dasharray:4 3}
.via-copy .edge{stroke:#6c7fa0;stroke-width:2}
.box{fill:#fff;stroke:#98a2b3;stroke-width:1.5}
.ps-running .box{fill:#d7f4df;stroke:#2f9e55}
.ps-halted .box{fill:#eceff3;stroke:#8893a3}
.ps-suspended .box{fill:#fff2bf;stroke:#c49a12}
.ps-paused .box{fill:#ffe1c4;stroke:#d9782b}
.destroyed .box{fill:url(#hatch);stroke:#a8afba;stroke-dasharray:5 3}
.destroyed .name{fill:#5b6472;text-decoration:line-through}
.k-template .box{stroke-width:3}
.k-snapshot .box{stroke-dasharray:2 2}
.name{font-size:13px;font-weight:600;fill:#1d2430}
.sub{font-size:11px;fill:#4a5567}.sub .u{font-family:DejaVu Sans Mono,Menlo,monospace;font-size:10.5px}
.tag{font-size:9px;font-weight:700;letter-spacing:.6px;fill:#5b6472}
.halo{fill:none;stroke-width:3.5}
.alerted .halo{stroke:#d1242f}.suspect .halo{stroke:#e8890c}
.markdot circle{fill:#e8890c}.alerted .markdot circle{fill:#d1242f}
.markdot text{fill:#fff;font-size:11px;font-weight:800;text-anchor:middle}
.lg{font-size:12px;fill:#1d2430}
`

func svgState(v lineage.VM, hosts map[string]string) string {
	if v.IsDestroyed() {
		return "destroyed"
	}
	s := strings.ToLower(v.PowerState)
	if s == "" {
		s = "unknown"
	}
	if v.HostUUID != "" && v.PowerState == "Running" {
		h := hosts[v.HostUUID]
		if h == "" {
			h = shortID(v.HostUUID)
		}
		s += " on " + h
	}
	return s
}

func svgTooltip(v lineage.VM, m Mark, hosts map[string]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n%s\n%s · %s", v.Name, v.UUID, v.Kind, svgState(v, hosts))
	switch {
	case v.ParentVia != "" && v.ParentUUID != "":
		fmt.Fprintf(&b, "\n%s of %s", v.ParentVia, v.ParentUUID)
	case v.ParentVia != "":
		fmt.Fprintf(&b, "\n%s of a VM never seen", v.ParentVia)
	}
	fmt.Fprintf(&b, "\nfirst seen %s", record.FormatTime(v.FirstSeen))
	if v.IsDestroyed() {
		fmt.Fprintf(&b, "\ndestroyed %s", record.FormatTime(v.Destroyed))
	}
	switch {
	case m.Alerted:
		b.WriteString("\nALERTED " + m.Reason)
	case m.Suspect:
		b.WriteString("\nSUSPECT " + m.Reason)
	}
	return b.String()
}

// xmlEscape escapes text and attribute values, and drops what XML 1.0 cannot
// carry at all (most control characters, invalid UTF-8), so that a VM named
// by an attacker cannot break the document.
func xmlEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '&':
			b.WriteString("&amp;")
		case r == '<':
			b.WriteString("&lt;")
		case r == '>':
			b.WriteString("&gt;")
		case r == '"':
			b.WriteString("&quot;")
		case r == '\'':
			b.WriteString("&#39;")
		case r == '\n':
			b.WriteString("&#10;")
		case r == '\t' || r == '\r':
			b.WriteByte(' ')
		case r < 0x20 || r == 0xFFFD || r == 0xFFFE || r == 0xFFFF || (r >= 0xD800 && r <= 0xDFFF):
			// not representable in XML 1.0; invalid UTF-8 decodes to U+FFFD
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// cssIdent keeps a class name to [a-z0-9_-] so odd input cannot inject.
func cssIdent(s, def string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			b.WriteRune(r)
		}
	}
	if b.Len() == 0 {
		return def
	}
	return b.String()
}

func truncRunes(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

func shortID(u string) string {
	if len(u) > 8 {
		return u[:8]
	}
	return u
}

func num(f float64) string {
	s := fmt.Sprintf("%.1f", f)
	return strings.TrimSuffix(s, ".0")
}
