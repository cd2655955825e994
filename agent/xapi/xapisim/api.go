package xapisim

import (
	"context"
	"crypto/rand"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The XenAPI methods the simulator answers. Lifecycle calls go through the
// same engine as the scenario player.

func (s *Server) eng() *engine {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.engine
}

func randomRef() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("OpaqueRef:%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func errf(code string, params ...string) *XenError { return &XenError{code, params} }

func paramCount(method string, want int, p []any) *XenError {
	return errf("MESSAGE_PARAMETER_COUNT_MISMATCH", method, strconv.Itoa(want), strconv.Itoa(len(p)))
}

// canonicalMethod turns the alternative wire name Class_message into
// Class.message (datamodel_utils.ml alternative_wire_name).
func canonicalMethod(m string) string {
	if strings.Contains(m, ".") {
		return m
	}
	classes := []string{"VM_guest_metrics", "VM_metrics", "host_metrics", "VM", "VIF", "task", "host", "pool",
		"network", "session", "event", "system"}
	for _, c := range classes {
		if rest, ok := strings.CutPrefix(m, c+"_"); ok {
			return c + "." + rest
		}
	}
	return m
}

// call dispatches one request. bare is true for system.listMethods.
func (s *Server) call(ctx context.Context, req *Request, remote string) (any, *XenError, bool) {
	s.mu.Lock()
	slave := s.slaveOf
	s.mu.Unlock()
	if slave != "" {
		return nil, errf("HOST_IS_SLAVE", slave), false
	}
	method := canonicalMethod(req.Method)
	p := req.Params
	switch method {
	case "system.listMethods":
		return s.listMethods(), nil, true
	case "session.login_with_password":
		v, xe := s.login(method, p, remote)
		return v, xe, false
	}
	if len(p) == 0 {
		if s.known(method) {
			return nil, paramCount(method, 1, p), false
		}
		return nil, errf("MESSAGE_METHOD_UNKNOWN", req.Method), false
	}
	sref, _ := p[0].(string)
	s.mu.Lock()
	sess := s.sessions[sref]
	s.mu.Unlock()
	if sess == nil {
		if !s.known(method) {
			return nil, errf("MESSAGE_METHOD_UNKNOWN", req.Method), false
		}
		return nil, errf("SESSION_INVALID", sref), false
	}
	args := p[1:]
	switch method {
	case "session.logout":
		s.mu.Lock()
		if s.sessions[sref] != nil {
			close(sess.gone)
			delete(s.sessions, sref)
		}
		s.mu.Unlock()
		return "", nil, false
	case "session.get_this_host":
		return s.eng().masterRef, nil, false
	case "host.get_server_certificate":
		if len(args) != 1 {
			return nil, paramCount(method, 2, p), false
		}
		ref, _ := args[0].(string)
		e := s.eng()
		e.db.mu.Lock()
		ok := e.db.get("host", ref) != nil
		name := e.db.str("host", ref, "name_label")
		e.db.mu.Unlock()
		if !ok {
			return nil, errf("HANDLE_INVALID", "host", ref), false
		}
		return string(s.HostCertPEM(name)), nil, false
	case "host.get_servertime", "host.get_server_localtime":
		// The pool's clock is the scenario's virtual clock: the agent dates
		// what a resync finds by it.
		return s.sched.now().UTC().Truncate(time.Second), nil, false
	case "event.from":
		if len(args) != 3 {
			return nil, paramCount(method, 4, p), false
		}
		v, xe := s.eventFrom(ctx, sess, args)
		return v, xe, false
	case "event.inject":
		if len(args) != 2 {
			return nil, paramCount(method, 3, p), false
		}
		v, xe := s.inject(args)
		return v, xe, false
	case "event.get_current_id":
		e := s.eng()
		e.db.mu.Lock()
		defer e.db.mu.Unlock()
		return Int(e.db.gen), nil, false
	case "task.destroy":
		if len(args) != 1 {
			return nil, paramCount(method, 2, p), false
		}
		ref, _ := args[0].(string)
		e := s.eng()
		e.db.mu.Lock()
		ok := e.db.get("task", ref) != nil
		if ok {
			e.db.remove("task", ref)
		}
		e.db.mu.Unlock()
		if !ok {
			return nil, errf("HANDLE_INVALID", "task", ref), false
		}
		e.db.notify()
		return "", nil, false
	}
	if v, xe, ok := s.lifecycle(method, p, sess); ok {
		return v, xe, false
	}
	if v, xe, ok := s.getter(method, p); ok {
		return v, xe, false
	}
	return nil, errf("MESSAGE_METHOD_UNKNOWN", req.Method), false
}

func (s *Server) login(method string, p []any, remote string) (any, *XenError) {
	if len(p) < 2 || len(p) > 4 {
		return nil, paramCount(method, 2, p)
	}
	user, _ := p[0].(string)
	pass, _ := p[1].(string)
	spec, ok := s.credentials(user, pass)
	if !ok {
		time.Sleep(s.cfg.AuthFailDelay)
		return nil, errf("SESSION_AUTHENTICATION_FAILED", user, "Authentication failure")
	}
	ss := &session{ref: randomRef(), user: user, gone: make(chan struct{}), lost: make(chan struct{})}
	if len(p) == 4 {
		ss.originator, _ = p[3].(string)
	}
	// The session's identity as the audit log shows it: the caller's real
	// address, the originator it gave.
	spec.ClientIP, spec.Originator, spec.Uname = remote, ss.originator, user
	ss.info = &userInfo{spec: spec, session: ss.ref, trackid: TrackID(ss.ref)}
	e := s.eng()
	e.db.mu.Lock()
	e.sessionLine(ss.info, s.sched.now())
	e.db.mu.Unlock()
	s.mu.Lock()
	s.sessions[ss.ref] = ss
	s.mu.Unlock()
	return ss.ref, nil
}

// credentials accepts the configured root login and any scenario user
// that has a password.
func (s *Server) credentials(user, pass string) (UserSpec, bool) {
	if user == s.cfg.User && pass == s.cfg.Password {
		return UserSpec{Name: user, SubjectID: "LOCAL_SUPERUSER", Role: "pool-admin"}, true
	}
	e := s.eng()
	for _, name := range e.userOrder {
		u := e.users[name]
		if u.spec.Password != "" && pass == u.spec.Password && (user == u.spec.Uname || user == u.spec.Name) {
			return u.spec, true
		}
	}
	return UserSpec{}, false
}

// eventFrom implements event.from (section 6.1 of the reference).
func (s *Server) eventFrom(ctx context.Context, sess *session, args []any) (any, *XenError) {
	var classes []string
	switch c := args[0].(type) {
	case []any:
		for _, x := range c {
			str, _ := x.(string)
			classes = append(classes, str)
		}
	case string:
		classes = []string{c}
	}
	tokStr, _ := args[1].(string)
	tok, ok := parseToken(tokStr)
	if !ok {
		return nil, errf("EVENT_FROM_TOKEN_PARSE_FAILURE", tokStr)
	}
	timeout := 24 * time.Hour
	switch t := args[2].(type) {
	case float64:
		if t >= 0 && !math.IsNaN(t) && t < 1e9 {
			timeout = time.Duration(t * float64(time.Second))
		}
	case int64:
		if t >= 0 {
			timeout = time.Duration(t) * time.Second
		}
	case string:
		if f, err := strconv.ParseFloat(t, 64); err == nil && f >= 0 {
			timeout = time.Duration(f * float64(time.Second))
		}
	}
	e := s.eng()
	sub, bad := parseSubscription(e.db, classes)
	if sub == nil {
		return nil, errf("EVENT_SUBSCRIPTION_PARSE_FAILURE", bad)
	}
	w := &waiter{sess: sess, sub: sub, tok: tok}
	s.mu.Lock()
	if sess.eventsLost {
		sess.eventsLost = false
		sess.lost = make(chan struct{})
		s.mu.Unlock()
		return nil, errf("EVENTS_LOST")
	}
	lost := sess.lost
	s.waiters[w] = struct{}{}
	s.listeners[sess.ref] = time.Now()
	s.lastListen = time.Now()
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.waiters, w)
		s.listeners[sess.ref] = time.Now()
		s.lastListen = time.Now()
		s.mu.Unlock()
	}()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	expired := false
	for {
		if !sub.onlyTask {
			if d := s.batchDelay(); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					return nil, nil
				}
			}
		}
		e.db.mu.Lock()
		if expired || e.db.hasChanges(sub, tok) {
			events, nt := e.db.collect(sub, tok)
			s.mu.Lock()
			extra := map[string]int{"session": len(s.sessions)} // messages live outside the DB
			s.mu.Unlock()
			out := batchStruct(events, e.db.counts(extra), nt)
			e.db.mu.Unlock()
			return out, nil
		}
		ch := e.db.changedCh()
		e.db.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			expired = true
		case <-ctx.Done():
			return nil, nil
		case <-sess.gone:
			return nil, errf("SESSION_INVALID", sess.ref)
		case <-lost:
			s.mu.Lock()
			sess.eventsLost = false
			sess.lost = make(chan struct{})
			s.mu.Unlock()
			return nil, errf("EVENTS_LOST")
		}
	}
}

// inject touches an object and returns a token just below the change.
func (s *Server) inject(args []any) (any, *XenError) {
	cls, _ := args[0].(string)
	ref, _ := args[1].(string)
	e := s.eng()
	e.db.mu.Lock()
	t := e.db.tables[strings.ToLower(cls)]
	if t == nil {
		e.db.mu.Unlock()
		return nil, errf("HANDLE_INVALID", cls, ref)
	}
	if !e.db.touch(cls, ref) {
		e.db.mu.Unlock()
		return nil, errf("HANDLE_INVALID", t.def.name, ref)
	}
	tok := token{gen: e.db.gen - 1}
	e.db.mu.Unlock()
	e.db.notify()
	return tok.String(), nil
}

// getter answers <class>.get_all_records, get_all, get_record, get_by_uuid,
// get_by_name_label and get_<field>.
func (s *Server) getter(method string, p []any) (any, *XenError, bool) {
	cls, msg, ok := strings.Cut(method, ".")
	def := classByName(cls)
	if !ok || def == nil {
		return nil, nil, false
	}
	e := s.eng()
	db := e.db
	args := p[1:]
	arg := func() string {
		if len(args) == 0 {
			return ""
		}
		a, _ := args[0].(string)
		return a
	}
	need := func(n int) *XenError {
		if len(args) != n {
			return paramCount(method, n+1, p)
		}
		return nil
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	switch msg {
	case "get_all_records":
		if xe := need(0); xe != nil {
			return nil, xe, true
		}
		refs := db.refs(def.name)
		out := make(Struct, 0, len(refs))
		for _, r := range refs {
			rec, _ := db.record(def.name, r)
			out = append(out, Member{r, rec})
		}
		return out, nil, true
	case "get_all":
		if xe := need(0); xe != nil {
			return nil, xe, true
		}
		return db.refs(def.name), nil, true
	case "get_record":
		if xe := need(1); xe != nil {
			return nil, xe, true
		}
		rec, ok := db.record(def.name, arg())
		if !ok {
			return nil, errf("HANDLE_INVALID", def.name, arg()), true
		}
		return rec, nil, true
	case "get_by_uuid":
		if xe := need(1); xe != nil {
			return nil, xe, true
		}
		if r := db.byUUID(def.name, arg()); r != "" {
			return r, nil, true
		}
		return nil, errf("UUID_INVALID", def.name, arg()), true
	case "get_by_name_label":
		if xe := need(1); xe != nil {
			return nil, xe, true
		}
		if _, has := def.idx["name_label"]; !has {
			return nil, nil, false
		}
		out := []string{}
		for _, r := range db.refs(def.name) {
			if db.str(def.name, r, "name_label") == arg() {
				out = append(out, r)
			}
		}
		return out, nil, true
	}
	if f, ok := strings.CutPrefix(msg, "get_"); ok {
		if _, has := def.idx[f]; has {
			if xe := need(1); xe != nil {
				return nil, xe, true
			}
			if db.get(def.name, arg()) == nil {
				return nil, errf("HANDLE_INVALID", def.name, arg()), true
			}
			return db.field(def.name, arg(), f), nil, true
		}
	}
	return nil, nil, false
}

// known reports whether method exists (for SESSION_INVALID vs unknown).
func (s *Server) known(method string) bool {
	for _, m := range s.listMethods() {
		if m == method {
			return true
		}
	}
	cls, msg, _ := strings.Cut(method, ".")
	if def := classByName(cls); def != nil {
		if f, ok := strings.CutPrefix(msg, "get_"); ok {
			_, has := def.idx[f]
			return has
		}
	}
	return false
}

func (s *Server) listMethods() []string {
	ms := []string{"system.listMethods", "session.login_with_password", "session.logout",
		"session.get_this_host", "host.get_server_certificate", "host.get_servertime", "host.get_server_localtime", "event.from", "event.inject", "event.get_current_id", "task.destroy"}
	for _, c := range allClasses {
		for _, m := range []string{"get_all_records", "get_all", "get_record", "get_by_uuid"} {
			ms = append(ms, c.name+"."+m)
		}
	}
	for m := range lifecycleCalls {
		ms = append(ms, "VM."+m)
		if m != "set_is_a_template" {
			ms = append(ms, "Async.VM."+m)
		}
	}
	sort.Strings(ms)
	return ms
}
