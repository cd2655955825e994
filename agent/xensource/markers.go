package xensource

import (
	"strings"

	"github.com/vmlineage/vmlineage/agent/record"
)

// vmOps are the vm_operations values (datamodel_vm.ml, reference xapi.md §9)
// that make a lifecycle record, plus the HTTP handlers' task labels
// "VM.import" / "VM.export" and VM.create. Other VM.* calls (setters,
// pool_migrate_complete, ...) are not lifecycle steps: the XAPI tracer keys
// on current_operations, which only ever holds vm_operations values.
var vmOps = map[string]bool{
	"snapshot": true, "clone": true, "copy": true, "revert": true, "checkpoint": true,
	"snapshot_with_quiesce": true, "provision": true, "start": true, "start_on": true,
	"pause": true, "unpause": true, "clean_shutdown": true, "clean_reboot": true,
	"hard_shutdown": true, "power_state_reset": true, "hard_reboot": true, "suspend": true,
	"csvm": true, "resume": true, "resume_on": true, "pool_migrate": true, "migrate_send": true,
	"shutdown": true, "make_into_template": true, "import": true, "export": true,
	"metadata_export": true, "destroy": true, "create": true, "sysprep": true,
}

// opOfTaskName returns the VM operation named by a task name such as
// "Async.VM.start", "VM.clean_shutdown" or "InternalAsync.VM.clone".
func opOfTaskName(name string) (string, bool) {
	class, msg, _ := record.SplitTaskName(name)
	if class != "VM" || !vmOps[msg] {
		return "", false
	}
	return msg, true
}

// auditFields are the values of a coordinator audit line
// (message_forwarding.ml: "VM.clone: VM = '<uuid> (<name>)'; new_name = '…'").
type auditFields struct {
	op                 string
	vmUUID, vmName     string
	newName            string
	hostUUID, hostName string
	hasNewName         bool
}

// parseAudit reads "VM.<op>: <key> = '<value>'; …". It accepts the
// source's quirks: checkpoint writes "new_name=' <name>'", start_on writes
// "host '<…>'" without "=", VM.create separates fields by a space.
func parseAudit(msg string) (auditFields, bool) {
	var a auditFields
	rest, ok := strings.CutPrefix(msg, "VM.")
	if !ok {
		return a, false
	}
	i := strings.IndexByte(rest, ':')
	if i <= 0 {
		return a, false
	}
	a.op, rest = rest[:i], rest[i+1:]
	if !vmOps[a.op] {
		return a, false
	}
	if v, ok := quoted(rest, "VM = '"); ok {
		a.vmUUID, a.vmName = uuidAndName(v)
	} else if v, ok := quoted(rest, "snapshot = '"); ok {
		a.vmUUID, a.vmName = uuidAndName(v)
	}
	if v, ok := quoted(rest, "new_name = '"); ok {
		a.newName, a.hasNewName = v, true
	} else if v, ok := quoted(rest, "new_name=' "); ok {
		a.newName, a.hasNewName = v, true
	} else if v, ok := quoted(rest, "name_label = '"); ok && a.op == "create" {
		a.newName, a.hasNewName = v, true
	}
	if v, ok := quoted(rest, "host = '"); ok {
		a.hostUUID, a.hostName = uuidAndName(v)
	} else if v, ok := quoted(rest, "host '"); ok {
		a.hostUUID, a.hostName = uuidAndName(v)
	}
	return a, true
}

// quoted returns the value after key up to the closing quote that ends the
// field (a quote followed by ';', ' ' + next key, or the end of the line).
// Names may themselves hold quotes, so the last plausible end wins within
// the field.
func quoted(s, key string) (string, bool) {
	i := strings.Index(s, key)
	if i < 0 {
		return "", false
	}
	v := s[i+len(key):]
	end := -1
	for j := 0; j < len(v); j++ {
		if v[j] != '\'' {
			continue
		}
		if j+1 == len(v) {
			end = j
			break
		}
		if v[j+1] == ';' || (v[j+1] == ' ' && looksLikeKey(v[j+2:])) {
			end = j
			break
		}
	}
	if end < 0 {
		return "", false
	}
	return v[:end], true
}

func looksLikeKey(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == ' ' || c == '=' {
			return i > 0
		}
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return false
}

// uuidAndName splits "<uuid> (<name>)" (add_brackets: no brackets when the
// name is empty). A value that is not a uuid (an OpaqueRef on a member,
// "invalid") yields no uuid.
func uuidAndName(v string) (uuid, name string) {
	if len(v) < 36 || !isUUID(v[:36]) {
		return "", ""
	}
	uuid, rest := v[:36], v[36:]
	if strings.HasPrefix(rest, " (") && strings.HasSuffix(rest, ")") {
		name = rest[2 : len(rest)-1]
	}
	return uuid, name
}

func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < 36; i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return false
			}
		}
	}
	return true
}

// uuidAfter returns the uuid that directly follows prefix at the start of s.
func uuidAfter(s, prefix string) (string, bool) {
	if !strings.HasPrefix(s, prefix) || len(s) < len(prefix)+36 {
		return "", false
	}
	u := s[len(prefix) : len(prefix)+36]
	if !isUUID(u) {
		return "", false
	}
	return u, true
}

// xapiVMCalls are the xapi-side xenopsd client lines that show the host
// executing an operation and the VM it acts on (xapi_xenops.ml,
// xapi_vm_migrate.ml).
var xapiVMCalls = []string{
	"xenops: VM.start ", "xenops: VM.shutdown ", "xenops: VM.reboot ", "xenops: VM.suspend ",
	"xenops: VM.pause ", "xenops: VM.unpause ", "xenops: VM.migrate ", "Xapi_xenops.resume: VM.resume ",
}

// xapiCallVM returns the VM uuid of a xapi-side xenopsd call line.
func xapiCallVM(msg string) (uuid string, migrate bool, ok bool) {
	for _, p := range xapiVMCalls {
		if u, ok := uuidAfter(msg, p); ok {
			return u, p == "xenops: VM.migrate ", true
		}
	}
	return "", false, false
}

// failure is a parsed "<dbg> failed with exception <exn>" line.
type failure struct {
	taskName, shortID string
	code              string
	params            []string
}

// parseFailure reads the head of a backtrace block (debug.ml
// with_thread_associated). The failing task is named in the text, not in the
// header (reference fact 8). Server_error is printed by api_errors.ml as
// "Server_error(CODE, [ p1; p2 ])"; any other exception becomes
// INTERNAL_ERROR with the printed exception as its parameter, as xapi does
// for the task's error_info.
func parseFailure(msg string) (failure, bool) {
	var f failure
	i := strings.Index(msg, failedWithException)
	if i < 0 {
		return f, false
	}
	dbg, exn := msg[:i], msg[i+len(failedWithException):]
	n := len(dbg)
	if n < 15 || dbg[n-15] != ' ' || dbg[n-14] != 'R' || dbg[n-13] != ':' {
		return f, false
	}
	f.taskName, f.shortID = dbg[:n-15], dbg[n-12:]
	for j := 0; j < 12; j++ {
		if !isHex(f.shortID[j]) {
			return f, false
		}
	}
	f.code, f.params = parseExn(exn)
	return f, true
}

func parseExn(exn string) (string, []string) {
	if rest, ok := strings.CutPrefix(exn, "Server_error("); ok && strings.HasSuffix(rest, "])") {
		code, ps, ok := strings.Cut(rest[:len(rest)-2], ", [")
		if ok && code != "" {
			ps = strings.TrimSpace(ps)
			if ps == "" {
				return code, nil
			}
			return code, strings.Split(ps, "; ")
		}
	}
	return "INTERNAL_ERROR", []string{exn}
}

// FormatError renders a XenAPI error as records carry it: "CODE" or
// "CODE: p1, p2" (the rule the XAPI ground truth uses for error_info).
func FormatError(code string, params []string) string {
	if len(params) == 0 {
		return code
	}
	return code + ": " + strings.Join(params, ", ")
}

// powerState reads "xenopsd event: Updating VM <uuid> power_state <- <state>".
func powerState(msg string) (uuid, state string, ok bool) {
	u, ok := uuidAfter(msg, "xenopsd event: Updating VM ")
	if !ok {
		return "", "", false
	}
	rest, ok := strings.CutPrefix(msg[len("xenopsd event: Updating VM ")+36:], " power_state <- ")
	if !ok {
		return "", "", false
	}
	return u, rest, true
}

// expectedState is the power state that ends an activity successfully.
func expectedState(a record.Activity) string {
	switch a {
	case record.Start, record.Resume, record.Unpause, record.Reboot, record.Migrate:
		return "Running"
	case record.Shutdown:
		return "Halted"
	case record.Suspend:
		return "Suspended"
	case record.Pause:
		return "Paused"
	}
	return ""
}
