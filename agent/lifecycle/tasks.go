package lifecycle

import (
	"sort"
	"strings"
	"time"

	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/agent/xapi"
)

// taskInfo is what the tracer knows of one task, from its own record and from
// the VMs whose current_operations named it. It is persisted while pending.
type taskInfo struct {
	Ref       string    `json:"ref"`
	UUID      string    `json:"uuid,omitempty"`
	Name      string    `json:"name,omitempty"`
	Status    string    `json:"status,omitempty"`
	Created   time.Time `json:"created,omitzero"`
	Finished  time.Time `json:"finished,omitzero"`
	FirstSeen time.Time `json:"first_seen,omitzero"`
	GoneAt    time.Time `json:"gone_at,omitzero"` // pool clock when it vanished
	Result    string    `json:"result,omitempty"`
	ErrorInfo []string  `json:"error_info,omitempty"`
	SubtaskOf string    `json:"subtask_of,omitempty"`
	// InRevert is the revert task whose key sat beside this task's
	// hard_shutdown key on one VM: the sub-task VM.revert runs, when its own
	// object is never seen. Kept because the revert may be recorded and
	// forgotten (a restart between) before this task's key vanishes.
	InRevert string            `json:"in_revert,omitempty"`
	Resident string            `json:"resident,omitempty"` // host uuid
	VMs      map[string]string `json:"vms,omitempty"`      // VM ref → operation
	VMUUIDs  map[string]string `json:"vm_uuids,omitempty"` // VM uuid → operation
	NewVMs   []string          `json:"new_vms,omitempty"`  // refs of VMs created carrying the key
	SrcHost  string            `json:"src_host,omitempty"` // host uuid the VM was on when first tied to the task
	Seen     bool              `json:"seen,omitempty"`     // the task object itself was seen
	Done     bool              `json:"done,omitempty"`     // its completion was seen
	Gone     bool              `json:"gone,omitempty"`     // deleted, or its keys vanished unseen
	Recorded bool              `json:"recorded,omitempty"`
	// The window of this process's events in which the task was seen; a VM
	// change inside it may be the task's when nothing else ties them.
	FirstSeq, EndSeq int64 `json:"-"`
}

// shortID is the task's id as the logs print it (record.TaskShortID); a ref
// of another shape (never seen from xapi) still gets a stable id.
func shortID(ref string) string {
	if s := record.TaskShortID(ref); s != "" {
		return s
	}
	return "x" + strings.ToLower(strings.NewReplacer(":", "", "|", "").Replace(ref))
}

// mainOp decides which operation a task performed and on which VMs.
func (tk *taskInfo) mainOp() (op string) {
	ops := map[string]bool{}
	for _, o := range tk.VMs {
		ops[o] = true
	}
	switch {
	case ops["reverting"] || ops["revert"]:
		return "revert"
	case len(ops) == 1:
		for o := range ops {
			return o
		}
	}
	if class, msg, _ := record.SplitTaskName(tk.Name); class == "VM" {
		return msg
	}
	// Several different keys under one task: the most significant wins.
	for _, o := range []string{"import", "clone", "copy", "snapshot", "checkpoint", "migrate_send", "pool_migrate", "destroy", "export"} {
		if ops[o] {
			return o
		}
	}
	var all []string
	for o := range ops {
		all = append(all, o)
	}
	sort.Strings(all)
	if len(all) > 0 {
		return all[0]
	}
	return ""
}

// outcome maps the task status to a result; inferred is true when the task's
// completion was never seen and the result is read from the VM's state.
func (t *Tracer) outcome(tk *taskInfo, a record.Activity, vm *vmInfo, created bool) (res record.Result, inferred bool) {
	switch tk.Status {
	case xapi.TaskSuccess:
		return record.Success, false
	case xapi.TaskFailure:
		if len(tk.ErrorInfo) > 0 && tk.ErrorInfo[0] == xapi.ErrPermissionDenied {
			return record.Denied, false
		}
		return record.Failure, false
	case xapi.TaskCancelled, xapi.TaskCancelling:
		return record.Cancelled, false
	}
	ok := true
	switch a {
	case record.Clone, record.Copy, record.Snapshot, record.Checkpoint, record.Import, record.Create:
		ok = created
	case record.Start, record.Resume, record.Unpause, record.Reboot:
		ok = vm != nil && (vm.power == xapi.Running || vm.power == xapi.Paused)
	case record.Shutdown:
		ok = vm == nil || vm.power == xapi.Halted
	case record.Suspend:
		ok = vm != nil && vm.power == xapi.Suspended
	case record.Pause:
		ok = vm != nil && vm.power == xapi.Paused
	case record.ConvertToTemplate:
		ok = vm != nil && vm.template
	}
	if ok {
		return record.Success, true
	}
	return record.Failure, true
}

// errorText renders error_info as "CODE: p1, p2".
func errorText(info []string) string {
	if len(info) == 0 {
		return ""
	}
	if len(info) == 1 {
		return info[0]
	}
	return info[0] + ": " + strings.Join(info[1:], ", ")
}
