// Command rollback is a vmlineage detector plugin for the VM rollback attack
// (paper, reference 1): reverting a VM to a snapshot, or resuming it from an
// old suspend image, silently undoes patches, revoked credentials and logs.
// Each such record yields a finding naming the image's age and what the VM
// lost; an alert on a VM rolled back within the window carries the finding.
//
// Settings: old (default 24h: older images are severity 7, younger 5),
// resume_min_age (default 1h: younger suspend images are not reported),
// window (default 24h, look-back for alerts).
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
	lin                       plugins.Lineage
	old, resumeMinAge, window time.Duration
}

// Info implements plugins.Detector.
func (d *Detector) Info() plugins.Info {
	return plugins.Info{Name: "rollback", Version: "1.0.0",
		Description: "revert to a snapshot or resume from an old suspend image (VM rollback attack)"}
}

// Configure implements plugins.Detector.
func (d *Detector) Configure(_ context.Context, cfg map[string]string, lin plugins.Lineage) error {
	d.lin, d.old, d.resumeMinAge, d.window = lin, 24*time.Hour, time.Hour, 24*time.Hour
	for key, dst := range map[string]*time.Duration{"old": &d.old, "resume_min_age": &d.resumeMinAge, "window": &d.window} {
		if v, ok := cfg[key]; ok {
			dur, err := time.ParseDuration(v)
			if err != nil || dur < 0 {
				return fmt.Errorf("%s: want a duration such as 24h, got %q", key, v)
			}
			*dst = dur
		}
	}
	return nil
}

// Needs implements plugins.NeedsDeclarer: reverts and resumes, and alerts
// on VMs that had one within the window (read from the records sent along).
func (d *Detector) Needs() plugins.Needs {
	acts := []record.Activity{record.Revert, record.Resume}
	return plugins.Needs{Enrich: true, OnRecord: true, OnRecordActivities: acts, AlertRecords: true,
		EnrichWhen: &plugins.EnrichWhen{Window: d.window, RecordActivities: acts}}
}

// OnRecord implements plugins.Detector.
func (d *Detector) OnRecord(ctx context.Context, r *record.Record) ([]plugins.Finding, error) {
	if r.Result != record.Success {
		return nil, nil
	}
	switch r.Activity {
	case record.Revert:
		f, err := d.revert(ctx, r)
		if err != nil || f == nil {
			return nil, err
		}
		return []plugins.Finding{*f}, nil
	case record.Resume:
		f, err := d.resume(ctx, r)
		if err != nil || f == nil {
			return nil, err
		}
		return []plugins.Finding{*f}, nil
	}
	return nil, nil
}

// Enrich implements plugins.Detector: rollbacks of the alert's VMs within
// the window before it.
func (d *Detector) Enrich(ctx context.Context, a *plugins.Alert) (*plugins.Enrichment, error) {
	out := &plugins.Enrichment{}
	for _, av := range a.VMs {
		// One query for the window, filtered here: most VMs have no rollback
		// and this keeps the alert path to one round trip.
		since := a.Time.Add(-d.window)
		var recs []record.Record
		if a.ContextWindow >= d.window { // sent along with the alert
			recs = a.Records
		} else {
			var err error
			if recs, err = d.lin.Records(ctx, plugins.RecordQuery{VMUUID: av.UUID, Since: since, Until: a.Time.Add(time.Millisecond), Limit: 10000}); err != nil {
				return nil, err
			}
		}
		for i := range recs {
			if recs[i].VMUUID != av.UUID || recs[i].Start.Before(since) || (recs[i].Activity != record.Revert && recs[i].Activity != record.Resume) {
				continue
			}
			fs, err := d.OnRecord(ctx, &recs[i])
			if err != nil {
				return nil, err
			}
			for _, f := range fs {
				f.Summary += fmt.Sprintf(" (%s before this alert)", a.Time.Sub(recs[i].Start).Round(time.Second))
				out.Findings = append(out.Findings, f)
			}
		}
	}
	return out, nil
}

func (d *Detector) revert(ctx context.Context, r *record.Record) (*plugins.Finding, error) {
	f := &plugins.Finding{Kind: "rollback", VMUUID: r.VMUUID, VMName: r.VMName, Severity: 5, Time: r.Start, RecordID: r.ID,
		Details: map[string]string{"activity": "revert"}}
	vm := name(r)
	if r.SnapshotUUID == "" {
		f.Summary = fmt.Sprintf("%s was reverted to a snapshot (which one is unknown): every change since that snapshot is lost", vm)
		return f, nil
	}
	f.Details["snapshot_uuid"] = r.SnapshotUUID
	taken, snapName, err := d.snapshotTime(ctx, r.SnapshotUUID)
	if err != nil {
		return nil, err
	}
	if taken.IsZero() {
		f.Summary = fmt.Sprintf("%s was reverted to snapshot %s of unknown age: every change since it is lost", vm, r.SnapshotUUID)
		return f, nil
	}
	age := r.Start.Sub(taken)
	if age >= d.old {
		f.Severity = 7
	}
	f.Details["snapshot_time"] = record.FormatTime(taken)
	f.Details["snapshot_age"] = age.Round(time.Second).String()
	lost, err := d.lost(ctx, r.VMUUID, taken, r.Start)
	if err != nil {
		return nil, err
	}
	f.Details["lost_operations"] = lost
	f.Summary = fmt.Sprintf("%s was reverted to snapshot %s taken %s earlier (%s): %s of its life is undone%s",
		vm, snapName, age.Round(time.Second), record.FormatTime(taken), age.Round(time.Second), lostText(lost))
	return f, nil
}

func (d *Detector) snapshotTime(ctx context.Context, snap string) (time.Time, string, error) {
	recs, err := d.lin.Records(ctx, plugins.RecordQuery{VMUUID: snap, Activity: record.Snapshot, Limit: 10})
	if err != nil {
		return time.Time{}, snap, err
	}
	for _, r := range recs {
		if r.VMUUID == snap {
			return r.Start, labelOr(r.VMName, snap), nil
		}
	}
	recs, err = d.lin.Records(ctx, plugins.RecordQuery{VMUUID: snap, Activity: record.Checkpoint, Limit: 10})
	if err != nil {
		return time.Time{}, snap, err
	}
	for _, r := range recs {
		if r.VMUUID == snap {
			return r.Start, labelOr(r.VMName, snap), nil
		}
	}
	v, err := d.lin.VM(ctx, snap)
	if err != nil {
		return time.Time{}, snap, nil // unknown snapshot: say so, do not fail
	}
	return v.FirstSeen, labelOr(v.Name, snap), nil
}

func (d *Detector) resume(ctx context.Context, r *record.Record) (*plugins.Finding, error) {
	sus, err := d.lin.Records(ctx, plugins.RecordQuery{VMUUID: r.VMUUID, Activity: record.Suspend, Until: r.Start})
	if err != nil {
		return nil, err
	}
	var last *record.Record
	for i := range sus {
		if sus[i].VMUUID == r.VMUUID && sus[i].Result == record.Success {
			last = &sus[i]
		}
	}
	if last == nil {
		return nil, nil
	}
	imageAt := last.End
	if imageAt.IsZero() {
		imageAt = last.Start
	}
	age := r.Start.Sub(imageAt)
	// A resume between that suspend and this one means the same image was
	// used twice: the VM was rolled back to it whatever its age.
	again, err := d.lin.Records(ctx, plugins.RecordQuery{VMUUID: r.VMUUID, Activity: record.Resume, Since: last.Start, Until: r.Start})
	if err != nil {
		return nil, err
	}
	reused := false
	for _, x := range again {
		if x.VMUUID == r.VMUUID && x.ID != r.ID && x.Result == record.Success {
			reused = true
		}
	}
	if age < d.resumeMinAge && !reused {
		return nil, nil
	}
	f := &plugins.Finding{Kind: "rollback", VMUUID: r.VMUUID, VMName: r.VMName, Severity: 5, Time: r.Start, RecordID: r.ID,
		Details: map[string]string{"activity": "resume", "suspend_record_id": last.ID, "image_time": record.FormatTime(imageAt),
			"image_age": age.Round(time.Second).String()}}
	if age >= d.old {
		f.Severity = 7
	}
	what := fmt.Sprintf("the memory image is %s old (suspended %s)", age.Round(time.Second), record.FormatTime(imageAt))
	if reused {
		f.Severity = 8
		f.Details["reused_image"] = "true"
		what += " and had already been resumed once: the VM was put back to an earlier state"
	}
	f.Summary = fmt.Sprintf("%s was resumed from an old suspend image: %s", name(r), what)
	return f, nil
}

// lost lists the VM's operations between the image and the rollback.
func (d *Detector) lost(ctx context.Context, vm string, from, to time.Time) (string, error) {
	recs, err := d.lin.Records(ctx, plugins.RecordQuery{VMUUID: vm, Since: from.Add(time.Millisecond), Until: to})
	if err != nil {
		return "", err
	}
	count := map[string]int{}
	for _, r := range recs {
		if r.VMUUID == vm && r.Result == record.Success {
			count[string(r.Activity)]++
		}
	}
	var parts []string
	for a, n := range count {
		parts = append(parts, fmt.Sprintf("%s×%d", a, n))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", "), nil
}

func lostText(lost string) string {
	if lost == "" {
		return ""
	}
	return "; operations since then: " + lost
}

func name(r *record.Record) string { return labelOr(r.VMName, r.VMUUID) }

func labelOr(n, u string) string {
	if n != "" {
		return n
	}
	return u
}
