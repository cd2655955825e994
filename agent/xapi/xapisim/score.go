package xapisim

import (
	"fmt"

	"github.com/vmlineage/vmlineage/agent/record"
)

// Score is how a tracer's records compare with the ground truth of a play.
type Score struct {
	Expected int // ground-truth records
	// Truth records stored under their own id (the tracer saw the task):
	Complete int // every field right
	Partial  int // some fields marked unknown (event.from hid that part: times, result, error), the rest right
	NoVM     int // which VM it acted on (or, for a creation, came from) is marked unknown; the rest right
	Wrong    int // a field the record claims to know differs
	// Truth records without their id in the store:
	Inferred int // a resync record of the same VM and activity stands for it (the task was never seen)
	Missing  int // nothing stands for it
	Extra    int // stored records that match no truth record
	// The first few differences, for a report.
	Examples []string
}

// Recorded is how many operations the store holds a record of.
func (s Score) Recorded() int { return s.Complete + s.Partial + s.NoVM + s.Wrong + s.Inferred }

func (s Score) String() string {
	return fmt.Sprintf("%d of %d recorded (%d complete, %d with unknown times/result/error, %d with the VM unknown, %d wrong, "+
		"%d inferred from VM changes), %d missing, %d extra",
		s.Recorded(), s.Expected, s.Complete, s.Partial, s.NoVM, s.Wrong, s.Inferred, s.Missing, s.Extra)
}

// ScoreRecords compares got with truth: by id (the same operation gives the
// same id), else a resync record of the same VM and activity, as the
// end-to-end tests pair them, in time linear in the records.
func ScoreRecords(truth, got []record.Record) Score {
	s := Score{Expected: len(truth)}
	byID := make(map[string]int, len(got))
	inferred := map[string][]int{} // vm uuid + activity -> resync records
	for i, r := range got {
		byID[r.ID] = i
		if r.Source == record.SourceResync {
			k := r.VMUUID + "\x00" + string(r.Activity)
			inferred[k] = append(inferred[k], i)
		}
	}
	used := make([]bool, len(got))
	example := func(format string, a ...any) {
		if len(s.Examples) < 10 {
			s.Examples = append(s.Examples, fmt.Sprintf(format, a...))
		}
	}
	for _, w := range truth {
		if i, ok := byID[w.ID]; ok && !used[i] {
			used[i] = true
			g := got[i]
			if f, want, have := firstDiff(w, g); f != "" {
				s.Wrong++
				example("%s of %s (%s): %s is %q, want %q", w.Activity, w.VMName, w.ID, f, have, want)
			} else if g.IsUnknown("vm_uuid") || g.IsUnknown("parent_vm_uuid") {
				s.NoVM++
			} else if len(g.Unknown) > 0 {
				s.Partial++
			} else {
				s.Complete++
			}
			continue
		}
		k := w.VMUUID + "\x00" + string(w.Activity)
		if c := inferred[k]; len(c) > 0 {
			used[c[0]] = true
			inferred[k] = c[1:]
			s.Inferred++
			continue
		}
		s.Missing++
		example("missing: %s %s of %s (%s)", w.Activity, w.Result, w.VMName, w.ID)
	}
	for i := range got {
		if !used[i] {
			s.Extra++
		}
	}
	return s
}

// firstDiff names the first field g states differently from w (fields g
// lists as unknown are skipped, except an inferred result, which must still
// be right; with vm_uuid unknown so is the VM's name and parent).
func firstDiff(w, g record.Record) (field, want, have string) {
	for _, f := range []struct {
		name string
		a, b string
	}{
		{"activity", string(w.Activity), string(g.Activity)},
		{"vm_uuid", w.VMUUID, g.VMUUID},
		{"vm_name", w.VMName, g.VMName},
		{"parent_vm_uuid", w.ParentVMUUID, g.ParentVMUUID},
		{"result", string(w.Result), string(g.Result)},
		{"error", w.Error, g.Error},
		{"host_uuid", w.HostUUID, g.HostUUID},
		{"destination_host_uuid", w.DestinationHostUUID, g.DestinationHostUUID},
		{"task_id", w.TaskID, g.TaskID},
		{"snapshot_uuid", w.SnapshotUUID, g.SnapshotUUID},
		{"start", record.FormatTime(w.Start), record.FormatTime(g.Start)},
		{"end", record.FormatTime(w.End), record.FormatTime(g.End)},
		{"task_uuid", w.TaskUUID, g.TaskUUID},
	} {
		if g.IsUnknown(f.name) && f.name != "result" {
			continue
		}
		if g.IsUnknown("vm_uuid") && (f.name == "vm_name" || f.name == "parent_vm_uuid") {
			continue
		}
		if f.a != f.b {
			return f.name, f.a, f.b
		}
	}
	return "", "", ""
}
