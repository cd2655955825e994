package xapisim

import (
	"strings"
)

// lifecycleCall describes a VM message a client may send by hand: its
// vm_operation and how many parameters follow the session (a range).
type lifecycleCall struct {
	op       string
	min, max int
	hasVM    bool
	hostArg  int // index of a host parameter, -1 if none
	nameArg  int // index of the new name, -1 if none
}

var lifecycleCalls = map[string]lifecycleCall{
	"clone":             {"clone", 2, 2, true, -1, 1},
	"copy":              {"copy", 3, 3, true, -1, 1},
	"snapshot":          {"snapshot", 2, 3, true, -1, 1},
	"checkpoint":        {"checkpoint", 2, 2, true, -1, 1},
	"provision":         {"provision", 1, 1, true, -1, -1},
	"revert":            {"revert", 1, 1, true, -1, -1},
	"start":             {"start", 3, 3, true, -1, -1},
	"start_on":          {"start_on", 4, 4, true, 1, -1},
	"clean_shutdown":    {"clean_shutdown", 1, 1, true, -1, -1},
	"hard_shutdown":     {"hard_shutdown", 1, 1, true, -1, -1},
	"shutdown":          {"shutdown", 1, 1, true, -1, -1},
	"clean_reboot":      {"clean_reboot", 1, 1, true, -1, -1},
	"hard_reboot":       {"hard_reboot", 1, 1, true, -1, -1},
	"suspend":           {"suspend", 1, 1, true, -1, -1},
	"resume":            {"resume", 3, 3, true, -1, -1},
	"resume_on":         {"resume_on", 4, 4, true, 1, -1},
	"pause":             {"pause", 1, 1, true, -1, -1},
	"unpause":           {"unpause", 1, 1, true, -1, -1},
	"pool_migrate":      {"pool_migrate", 3, 3, true, 1, -1},
	"migrate_send":      {"migrate_send", 6, 7, true, 1, -1},
	"destroy":           {"destroy", 1, 1, true, -1, -1},
	"create":            {"create", 1, 1, false, -1, -1},
	"import":            {"import", 4, 4, false, -1, -1},
	"set_is_a_template": {"make_into_template", 2, 2, true, -1, -1},
}

// lifecycle runs VM.<call> or Async.VM.<call>; ok is false for other methods.
func (s *Server) lifecycle(method string, p []any, sess *session) (any, *XenError, bool) {
	async := false
	m := method
	if rest, ok := strings.CutPrefix(m, "Async."); ok {
		async, m = true, rest
	}
	name, ok := strings.CutPrefix(m, "VM.")
	if !ok {
		return nil, nil, false
	}
	lc, ok := lifecycleCalls[name]
	if !ok || (async && name == "set_is_a_template") {
		return nil, nil, false
	}
	args := p[1:]
	if len(args) < lc.min || len(args) > lc.max {
		return nil, paramCount(method, lc.min+1, p), true
	}
	e := s.eng()
	req := &opReq{op: lc.op, async: async, label: method, done: make(chan opResult, 1),
		started: make(chan string, 1), user: sess.info}
	str := func(i int) string { v, _ := args[i].(string); return v }
	e.db.mu.Lock()
	if lc.hasVM {
		req.vm = str(0)
		if e.db.get("VM", req.vm) == nil {
			e.db.mu.Unlock()
			return nil, errf("HANDLE_INVALID", "VM", req.vm), true
		}
	}
	if lc.hostArg >= 0 {
		h := ""
		if d, ok := args[lc.hostArg].(map[string]any); ok { // migrate_send's dest map
			h, _ = d["host"].(string)
		} else {
			h = str(lc.hostArg)
		}
		if h != "" && e.db.get("host", h) == nil {
			e.db.mu.Unlock()
			return nil, errf("HANDLE_INVALID", "host", h), true
		}
		req.host = h
	}
	e.db.mu.Unlock()
	if lc.nameArg >= 0 {
		req.newNames = []string{str(lc.nameArg)}
	}
	switch name {
	case "create":
		if rec, ok := args[0].(map[string]any); ok {
			n, _ := rec["name_label"].(string)
			req.newNames = []string{n}
		}
	case "import":
		req.newNames = []string{"Imported VM"}
	case "set_is_a_template":
		if v, _ := args[1].(bool); !v {
			e.db.mu.Lock()
			e.db.set("VM", req.vm, "is_a_template", false)
			e.db.set("VM", req.vm, "allowed_operations", e.allowedOps(req.vm))
			e.db.mu.Unlock()
			e.db.notify()
			return "", nil, true
		}
		req.label = ""
	}
	started, done := req.started, req.done // the engine clears the fields once used
	e.db.mu.Lock()
	e.launch(e.sched.now(), req)
	e.db.mu.Unlock()
	if async {
		select {
		case ref := <-started:
			return ref, nil, true
		case res := <-done: // failed before a task existed
			return res.value, res.err, true
		}
	}
	res := <-done
	if res.err != nil {
		return nil, res.err, true
	}
	if res.value == nil {
		return "", nil, true
	}
	return res.value, nil, true
}
