package record

import "strings"

// ActivityOf maps a XenAPI vm_operations value or a VM message name (the part
// after "VM." in a task name) to the record activity. Every other name —
// config changes, plugin calls, operations this version does not know —
// maps to Other with the raw name kept, so nothing done to a VM goes
// unrecorded; only an empty name reports ok=false.
func ActivityOf(op string) (a Activity, ok bool) {
	switch op {
	case "create":
		return Create, true
	case "import", "import_metadata":
		return Import, true
	case "clone":
		return Clone, true
	case "copy":
		return Copy, true
	case "snapshot", "snapshot_with_quiesce":
		return Snapshot, true
	case "checkpoint":
		return Checkpoint, true
	case "revert", "reverting":
		return Revert, true
	case "start", "start_on":
		return Start, true
	case "clean_shutdown", "hard_shutdown", "shutdown":
		return Shutdown, true
	case "clean_reboot", "hard_reboot":
		return Reboot, true
	case "suspend":
		return Suspend, true
	case "resume", "resume_on":
		return Resume, true
	case "pause":
		return Pause, true
	case "unpause":
		return Unpause, true
	case "pool_migrate", "migrate_send":
		return Migrate, true
	case "export", "metadata_export":
		return Export, true
	case "make_into_template", "set_is_a_template", "create_template":
		return ConvertToTemplate, true
	case "destroy":
		return Destroy, true
	case "":
		return "", false
	}
	return Other, true
}

// SplitTaskName splits a task name_label such as "Async.VM.clone" or
// "VM.start" into class ("VM") and message ("clone"); async reports whether
// the call was asynchronous. Names that are not API calls return class "".
func SplitTaskName(name string) (class, message string, async bool) {
	for _, p := range []string{"Async.", "InternalAsync."} {
		if rest, ok := strings.CutPrefix(name, p); ok {
			name, async = rest, true
			break
		}
	}
	class, message, ok := strings.Cut(name, ".")
	if !ok || class == "" || message == "" || strings.ContainsAny(name, " /#") {
		return "", "", async
	}
	return class, message, async
}
