// Command shadow-copy is a vmlineage detector plugin for the paper's section
// 2 threat: a VM is copied, cloned or exported and the source destroyed soon
// after, so the copies live on with no visible origin. It reports that
// pattern when the destroy record arrives, the VMs orphaned by it, and, on
// an alert, that the alerted VM's origin no longer exists.
//
// Settings: window (default 1h: copy-to-destroy gap that counts).
package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/plugins"
)

func main() { plugins.Serve(&Detector{}) }

// Detector implements plugins.Detector.
type Detector struct {
	lin    plugins.Lineage
	window time.Duration
}

// Info implements plugins.Detector.
func (d *Detector) Info() plugins.Info {
	return plugins.Info{Name: "shadow-copy", Version: "1.0.0",
		Description: "copy, clone or export followed by destruction of the source; VMs whose origin no longer exists"}
}

// Configure implements plugins.Detector.
func (d *Detector) Configure(_ context.Context, cfg map[string]string, lin plugins.Lineage) error {
	d.lin, d.window = lin, time.Hour
	if v, ok := cfg["window"]; ok {
		w, err := time.ParseDuration(v)
		if err != nil || w <= 0 {
			return fmt.Errorf("window: want a positive duration such as 1h, got %q", v)
		}
		d.window = w
	}
	return nil
}

var copying = map[record.Activity]bool{record.Copy: true, record.Clone: true, record.Export: true}

// Needs implements plugins.NeedsDeclarer: destroy records, and alerts on
// VMs with a destroyed ancestor (read from the ancestry sent along).
func (d *Detector) Needs() plugins.Needs {
	return plugins.Needs{Enrich: true, OnRecord: true, OnRecordActivities: []record.Activity{record.Destroy}, AlertAncestors: true,
		EnrichWhen: &plugins.EnrichWhen{DestroyedAncestor: true}}
}

// OnRecord implements plugins.Detector.
func (d *Detector) OnRecord(ctx context.Context, r *record.Record) ([]plugins.Finding, error) {
	if r.Activity != record.Destroy || r.Result != record.Success || r.VMUUID == "" {
		return nil, nil
	}
	src := labelOr(r.VMName, r.VMUUID)
	recs, err := d.lin.Records(ctx, plugins.RecordQuery{VMUUID: r.VMUUID, Since: r.Start.Add(-d.window), Until: r.Start})
	if err != nil {
		return nil, err
	}
	var copies []string
	var last time.Time
	for _, x := range recs {
		if !copying[x.Activity] || x.Result != record.Success {
			continue
		}
		switch {
		case x.Activity == record.Export && x.VMUUID == r.VMUUID:
			copies = append(copies, "an export")
		case x.ParentVMUUID == r.VMUUID && x.Activity != record.Export:
			copies = append(copies, fmt.Sprintf("%s %s", x.Activity, labelOr(x.VMName, x.VMUUID)))
		default:
			continue
		}
		last = x.Start
	}
	var out []plugins.Finding
	if len(copies) > 0 {
		out = append(out, plugins.Finding{Kind: "shadow_copy", VMUUID: r.VMUUID, VMName: r.VMName, Severity: 6, Time: r.Start, RecordID: r.ID,
			Summary: fmt.Sprintf("%s was copied (%s) and destroyed %s after the last copy: the copies outlive their source",
				src, strings.Join(copies, ", "), r.Start.Sub(last).Round(time.Second)),
			Details: map[string]string{"copies": strings.Join(copies, ", "), "window": d.window.String()}})
	}
	desc, err := d.lin.Descendants(ctx, r.VMUUID)
	if err != nil {
		return nil, err
	}
	var orphans []string
	for _, v := range desc {
		if v.ParentUUID == r.VMUUID && !v.IsDestroyed() {
			orphans = append(orphans, labelOr(v.Name, v.UUID))
		}
	}
	if len(orphans) > 0 {
		sort.Strings(orphans)
		out = append(out, plugins.Finding{Kind: "orphan", VMUUID: r.VMUUID, VMName: r.VMName, Severity: 4, Time: r.Start, RecordID: r.ID,
			Summary: fmt.Sprintf("%s no longer exists; VMs made from it: %s", src, strings.Join(orphans, ", ")),
			Details: map[string]string{"orphans": strings.Join(orphans, ", ")}})
	}
	return out, nil
}

// Enrich implements plugins.Detector: an alerted VM whose origin is gone.
func (d *Detector) Enrich(ctx context.Context, a *plugins.Alert) (*plugins.Enrichment, error) {
	out := &plugins.Enrichment{}
	ix := a.Index()
	for _, av := range a.VMs {
		anc := ix.Ancestors(av.UUID)
		if ix.VMs[av.UUID] == nil { // ancestry not sent along: ask
			var err error
			if anc, err = d.lin.Ancestors(ctx, av.UUID); err != nil {
				return nil, err
			}
		}
		for i, p := range anc {
			if !p.IsDestroyed() || p.Destroyed.After(a.Time) {
				continue
			}
			rel := "origin"
			if i > 0 {
				rel = fmt.Sprintf("ancestor (%d generations up)", i+1)
			}
			out.Findings = append(out.Findings, plugins.Finding{Kind: "origin_destroyed", VMUUID: av.UUID, Severity: 4, Time: a.Time,
				Summary: fmt.Sprintf("the %s of this VM, %s, was destroyed %s; other copies of it may exist", rel, labelOr(p.Name, p.UUID), record.FormatTime(p.Destroyed)),
				Details: map[string]string{"ancestor_uuid": p.UUID, "ancestor_name": p.Name, "destroyed_at": record.FormatTime(p.Destroyed)}})
			break
		}
	}
	return out, nil
}

func labelOr(n, u string) string {
	if n != "" {
		return n
	}
	return u
}
