// Command lineage-suspects is a vmlineage detector plugin (paper section 4):
// when VMs of one family raise alerts — at least k of them within a window —
// their nearest common ancestor is the clue, and every VM that descends from
// it (and the ancestor itself) but has not alerted is a suspect. Halted and
// suspended VMs come first: no IDS or AV sees them.
//
// Settings: k (default 2), window (Go duration, default 24h).
package main

import (
	"github.com/vmlineage/vmlineage/plugins"
)

func main() { plugins.Serve(&Detector{}) }
