package audit

import (
	"strings"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/xapi/xapisim"
)

// roundTrip writes an entry with the simulator's writer (SExpr.string_of
// under debug.ml's escape, independent of this parser) and parses it back.
func roundTrip(t *testing.T, e xapisim.AuditEntry) Line {
	t.Helper()
	var l Line
	if err := Parse(e.Line(), &l); err != nil {
		t.Fatalf("%v\n%s", err, e.Line())
	}
	return l.Clone()
}

func simEntry(name, value string) xapisim.AuditEntry {
	return xapisim.AuditEntry{Host: "xcp-h1", Time: time.Date(2024, 3, 15, 10, 22, 33, 456e6, time.UTC), ThreadID: 4711,
		Client: "HTTPS 10.0.0.50", Task: "Async.VM.clone R:0f3a9b2c7d1e", TrackID: strings.Repeat("4c", 16),
		SubjectID: "S-1-5-21-1", Subject: name, Decision: "ALLOWED", Result: "OK", CallType: "API", Action: "VM.clone",
		Args: []xapisim.AuditArg{{Name: "vm", Value: value, UUID: "5a1c7e2b-3d4f-4a6b-9c8d-0e1f2a3b4c5d", Ref: "OpaqueRef:9e8d7c6b-5a4f-4e3d-8c1b-0a9f8e7d6c5b"},
			{Name: "new_name", Value: value}, {Name: "other_config", Args: []xapisim.AuditArg{{Name: "k", Value: value}}}}}
}

func TestEscapingRoundTripsWithTheSimulatorsWriter(t *testing.T) {
	for _, v := range []string{
		`EXAMPLE01\vmadmin`, `O'Brien's "VM"`, `\\server\share\`, `trailing\`, `'`, `\'`, `(paren) [bracket] |pipe|`,
		"Café ünïcode 日本", "tab\there", "\x00\x01\x7f\xff", "new\nline\r\nend", "", "  spaces  ",
		`ERROR:X: [ a; b ]`, `'trackid=fake' 'LOCAL_SUPERUSER'`,
	} {
		l := roundTrip(t, simEntry(v, v))
		want := strings.NewReplacer("\n", " ", "\r", " ").Replace(v) // audit_line_of drops newlines
		if l.SubjectName != want || l.Args[0].Value != want || l.Args[1].Value != want || l.Args[2].Args[0].Value != want {
			t.Errorf("%q came back as subject %q, args %q %q %q", v, l.SubjectName, l.Args[0].Value, l.Args[1].Value, l.Args[2].Args[0].Value)
		}
		if l.Escaping != EscapeOuter || l.TaskID != "0f3a9b2c7d1e" || l.ClientIP != "10.0.0.50" {
			t.Errorf("%q: header %+v", v, l)
		}
	}
}

// FuzzRoundTrip: whatever a name or value holds, the simulator's writer
// and this parser agree.
func FuzzRoundTrip(f *testing.F) {
	f.Add(`EXAMPLE01\vmadmin`, `O'Brien`)
	f.Add("Café\n", `\\x41`)
	f.Add(`\`, `'`)
	f.Fuzz(func(t *testing.T, name, value string) {
		e := simEntry(name, value)
		var l Line
		if err := Parse(e.Line(), &l); err != nil {
			t.Fatalf("%v\n%s", err, e.Line())
		}
		nl := strings.NewReplacer("\n", " ", "\r", " ")
		if l.SubjectName != nl.Replace(name) || l.Args[0].Value != nl.Replace(value) || l.Args[2].Args[0].Value != nl.Replace(value) {
			t.Fatalf("name %q value %q came back as %q %q", name, value, l.SubjectName, l.Args[0].Value)
		}
	})
}
