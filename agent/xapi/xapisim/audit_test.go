package xapisim

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/audit"
	"github.com/vmlineage/vmlineage/agent/record"
)

// getAudit fetches base/audit_log and parses every line with agent/audit.
func getAudit(t *testing.T, base, session string, q url.Values) (*http.Response, []audit.Line) {
	t.Helper()
	if q == nil {
		q = url.Values{}
	}
	if session != "" {
		q.Set("session_id", session)
	}
	resp, err := http.Get(strings.TrimSuffix(base, "/") + "/audit_log?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []audit.Line
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l audit.Line
		if err := audit.Parse(sc.Text(), &l); err != nil {
			t.Fatalf("line does not parse: %v\n%s", err, sc.Text())
		}
		out = append(out, l.Clone())
	}
	return resp, out
}

func playInsider(t *testing.T, cfg Config) (*Server, *Scenario) {
	t.Helper()
	sc, err := Builtin("insider")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Scenario = sc
	cfg.HostListeners = true
	s := startServer(t, cfg)
	if err := s.Play(context.Background(), sc, 0); err != nil {
		t.Fatal(err)
	}
	return s, sc
}

func TestAuditLogInsider(t *testing.T) {
	s, _ := playInsider(t, Config{})
	sess := login(t, s.URL())
	resp, lines := getAudit(t, s.URL(), sess, nil)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/plain" || resp.ContentLength != -1 ||
		len(resp.TransferEncoding) != 0 {
		t.Fatalf("answer: %d %q length %d encoding %v", resp.StatusCode, resp.Header.Get("Content-Type"), resp.ContentLength, resp.TransferEncoding)
	}
	byTask := map[string][]audit.Line{}
	for _, l := range lines {
		key := l.TaskID
		if a, ok := l.Arg("task_id"); ok {
			key = record.TaskShortID(a.Ref)
		}
		byTask[key] = append(byTask[key], l)
	}
	truth, _ := s.Truth()
	if len(truth) == 0 {
		t.Fatal("no records")
	}
	for _, r := range truth {
		if r.Actor == nil {
			t.Errorf("%s %s: no actor in the ground truth", r.Activity, r.ID[:8])
			continue
		}
		found := false
		for _, l := range byTask[r.TaskID] {
			// An HTTP handler's check runs under a task without a client
			// (E6): no address on those lines.
			if l.SubjectName == r.Actor.Name && l.SubjectID == r.Actor.SubjectID && l.TrackID == r.Actor.TrackID &&
				(l.ClientIP == r.Actor.ClientIP || l.CallType == audit.HTTP) && l.Decision == audit.Allowed {
				found = true
			}
		}
		if !found {
			t.Errorf("%s of %s (task %s): no coordinator line with actor %+v; lines %+v", r.Activity, r.VMName, r.TaskID, *r.Actor, byTask[r.TaskID])
		}
	}
	denied := s.Denied()
	acts := map[record.Activity]bool{}
	for _, d := range denied {
		acts[d.Activity] = true
		if d.Source != record.SourceAudit || d.Result != record.Denied || d.Actor == nil || d.Actor.Name != `EXAMPLE01\contractor` ||
			d.VMName != "finance-db" || d.ID != record.ID(d.PoolUUID, d.TaskID, 0) {
			t.Errorf("denied record %+v", d)
		}
		ok := false
		for _, l := range byTask[d.TaskID] {
			ok = ok || (l.Decision == audit.Denied && l.SubjectName == d.Actor.Name && l.ClientIP == "" == (l.CallType == audit.HTTP))
		}
		if !ok {
			t.Errorf("no DENIED line for %s (task %s): %+v", d.Activity, d.TaskID, byTask[d.TaskID])
		}
	}
	if len(denied) != 4 || !acts[record.Clone] || !acts[record.Copy] || !acts[record.Export] || !acts[record.Destroy] {
		t.Errorf("denied: %v", acts)
	}
	// The member keeps its copies of calls forwarded to it, with no actor.
	if s.HostURL("fin2") == "" {
		t.Fatal("no member listener")
	}
	_, member := getAudit(t, s.HostURL("fin2"), sess, nil)
	copies := 0
	for _, l := range member {
		if l.Action == "VM.start" || l.Action == "VM.clean_reboot" || l.Action == "VM.clean_shutdown" {
			copies++
			if l.SubjectID != "LOCAL_SUPERUSER" || l.SubjectName != "" || l.Host != "fin2" || l.Args[0].UUID != "" || l.Args[0].Ref == "" {
				t.Errorf("member copy %+v", l)
			}
			if len(byTask[l.TaskID]) == 0 {
				t.Errorf("member copy of task %s the coordinator did not log", l.TaskID)
			}
		}
	}
	if copies != 3 {
		t.Errorf("%d member copies, want 3 (start, reboot, shutdown of web-01 on fin2)", copies)
	}
	// Each poll leaves its own line, with our session's trackid.
	_, again := getAudit(t, s.URL(), sess, nil)
	last := again[len(again)-1]
	if last.Action != "http/get_audit_log" || last.TrackID != TrackID(sess) || last.CallType != audit.HTTP || last.TaskKind != 'D' {
		t.Errorf("last line after a poll: %+v", last)
	}
	// Users' sessions: Session.create in xensource.log, session.create in
	// audit.log for the AD users.
	sessions := 0
	for _, hl := range s.HostLogLines() {
		if strings.Contains(hl.Line, "Session.create trackid=") {
			sessions++
		}
	}
	if sessions < 5 { // four scenario users and our login
		t.Errorf("%d Session.create lines", sessions)
	}
	creates := 0
	for _, l := range lines {
		if l.Action == "session.create" {
			creates++
			o, _ := l.Arg("originator")
			if l.SubjectID == "LOCAL_SUPERUSER" || (l.SubjectName == `EXAMPLE01\vmadmin` && o.Value != "XenCenter") {
				t.Errorf("session.create %+v", l)
			}
		}
	}
	if creates != 2 {
		t.Errorf("%d session.create lines, want 2 (the AD users)", creates)
	}
}

func TestAuditLogSinceAuthAndArchives(t *testing.T) {
	s, _ := playInsider(t, Config{})
	sess := login(t, s.URL())
	// 401 without a valid session (xapi_http.ml: Http.Unauthorised).
	resp, err := http.Get(s.URL() + "audit_log?session_id=OpaqueRef:bogus")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 401 || !strings.Contains(resp.Header.Get("WWW-Authenticate"), "get_audit_log") {
		t.Errorf("bad session: %d %v", resp.StatusCode, resp.Header)
	}
	_, all := getAudit(t, s.URL(), sess, nil)
	// since is inclusive and compared as a string on the 21 characters.
	mid := all[len(all)/2]
	since := mid.Time.UTC().Format("2006-01-02T15:04:05.000Z")
	_, part := getAudit(t, s.URL(), sess, url.Values{"since": {since}})
	if len(part) == 0 || part[0].Stamp[:21] != mid.Stamp[:21] {
		t.Fatalf("since=%s: first line %+v, want stamp %s", since, part[0], mid.Stamp)
	}
	for _, l := range part {
		if l.Stamp[:21] < mid.Stamp[:21] {
			t.Errorf("line %s before since %s", l.Stamp, since)
		}
	}
	// Archives come first, oldest first, then the live file. A poll's own
	// line is written after its answer has gone (Rbac.check runs the
	// handler first), so a client can poll again before it is there: wait
	// for the lines of the polls made so far before each step.
	awaitPollLines := func(n int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			c := 0
			for _, gen := range s.audit.snapshot("fin1") {
				for _, l := range gen {
					if strings.Contains(l, "|handler:http/get_audit_log ") {
						c++
					}
				}
			}
			if c >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d poll lines in the audit log after 10 s, want %d", c, n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	awaitPollLines(2)
	s.RotateAudit("fin1", true)
	_, afterRot := getAudit(t, s.URL(), sess, nil)
	awaitPollLines(3)
	s.RotateAudit("fin1", false)
	_, after2 := getAudit(t, s.URL(), sess, nil)
	if len(after2) != len(afterRot)+1 {
		t.Fatalf("after a second rotation: %d lines, want %d", len(after2), len(afterRot)+1)
	}
	for i := range afterRot {
		if after2[i].Raw() != afterRot[i].Raw() {
			t.Fatalf("line %d moved after rotation", i)
		}
	}
}

func TestAuditDeniedAsyncAndAPI(t *testing.T) {
	sc, err := LoadScenario(strings.NewReader(`{"name":"denied-async","hosts":[{"name":"h1"}],
		"users":[{"name":"root"},{"name":"EX\\op","subject_id":"S-1-5-21-1-2-3-500","role":"vm-operator","client_ip":"192.0.2.9","password":"pw"}],
		"vms":[{"name":"v","uuid":"aaaaaaaa-0000-4000-8000-000000000001"}],
		"steps":[{"at":"5s","op":"clone","vm":"v","new_name":"c","async":true,"user":"EX\\op"},
		         {"at":"10s","op":"start","vm":"v","async":true,"user":"EX\\op"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, Config{Scenario: sc})
	if err := s.Play(context.Background(), sc, 0); err != nil {
		t.Fatal(err)
	}
	truth, _ := s.Truth()
	if len(truth) != 2 || truth[0].Result != record.Denied || truth[0].VMUUID != "aaaaaaaa-0000-4000-8000-000000000001" ||
		!strings.HasPrefix(truth[0].Error, "RBAC_PERMISSION_DENIED: VM.clone, No permission in user session. (Roles with this permission: pool-admin, pool-operator, vm-power-admin, vm-admin)") ||
		truth[0].Actor.Name != `EX\op` || truth[1].Result != record.Success {
		t.Fatalf("truth %+v", truth)
	}
	if d := s.Denied(); len(d) != 1 || d[0].ID != truth[0].ID || d[0].Source != record.SourceXAPI {
		t.Fatalf("denied %+v", d)
	}
	// An API client logged in as that user is refused too.
	url := s.URL()
	sess := call(t, url, "session.login_with_password", "op", "pw", "1.0", "cli").(string)
	vm := call(t, url, "VM.get_by_uuid", sess, "aaaaaaaa-0000-4000-8000-000000000001").(string)
	_, desc := callErr(t, url, "VM.destroy", sess, vm)
	if len(desc) != 3 || desc[0] != "RBAC_PERMISSION_DENIED" || desc[1] != "VM.destroy" {
		t.Fatalf("VM.destroy as vm-operator: %v", desc)
	}
	root := login(t, url)
	_, lines := getAudit(t, url, root, nil)
	var clone, destroy *audit.Line
	for i := range lines {
		l := &lines[i]
		switch {
		case l.Action == "VM.clone" && l.Decision == audit.Denied:
			clone = l
		case l.Action == "VM.destroy" && l.Decision == audit.Denied:
			destroy = l
		}
	}
	if clone == nil || clone.TaskID != truth[0].TaskID || clone.TaskName != "Async.VM.clone" || clone.ClientIP != "192.0.2.9" {
		t.Errorf("async clone line %+v", clone)
	}
	if destroy == nil || destroy.ClientIP != "127.0.0.1" || destroy.TrackID != TrackID(sess) || destroy.SubjectName != `EX\op` {
		t.Errorf("API destroy line %+v", destroy)
	}
	d := s.Denied()
	if len(d) != 2 || d[1].Activity != record.Destroy || d[1].Actor.ClientIP != "127.0.0.1" || d[1].Actor.Originator != "cli" {
		t.Errorf("denied after the API call: %+v", d)
	}
}

// TestAuditFilesBesideXensource: WriteHostLogs writes each host's
// audit.log, line for line what /audit_log serves.
func TestAuditFilesBesideXensource(t *testing.T) {
	sc, _ := Builtin("insider")
	s := startServer(t, Config{Scenario: sc})
	dir := t.TempDir()
	w := s.WriteHostLogs(dir, 10*time.Millisecond, 0)
	if err := s.Play(context.Background(), sc, 0); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"fin1", "fin2"} {
		b, err := os.ReadFile(filepath.Join(dir, h, "audit.log"))
		if err != nil {
			t.Fatal(err)
		}
		want := strings.Join(s.AuditLines(h), "\n") + "\n"
		if string(b) != want {
			t.Errorf("%s/audit.log differs from what /audit_log serves", h)
		}
		x, _ := os.ReadFile(filepath.Join(dir, h, "xensource.log"))
		if h == "fin1" && !strings.Contains(string(x), "Session.create trackid=") {
			t.Errorf("no Session.create line in %s/xensource.log", h)
		}
	}
	if w.Audit == 0 {
		t.Error("no audit lines written")
	}
}
