package cef

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/vmlineage/vmlineage/formats/internal/fixtures"
)

// FuzzParse: Parse never panics; what it accepts re-encodes to a line that
// parses again, and encoding is then a fixed point. Values that need no
// cleaning survive unchanged.
func FuzzParse(f *testing.F) {
	f.Add(`CEF:0|Acme\|Corp|Xen\\Agent|1.0|vm.start|VM started|3|rt=1764064800123 cs1Label=pool name cs1=pool\=a msg=line1\nline2 with \\ backslash and | pipe`)
	f.Add("CEF:0|a|b|c|d|e|1|msg=a=b x=1")
	f.Add("CEF:1|a|b|c|d|e|Low| k=v  w=2 z= ")
	for _, tc := range fixtures.Cases() {
		f.Add(string(AppendRecord(nil, &tc.R, &tc.C)))
	}
	f.Fuzz(func(t *testing.T, line string) {
		e, err := Parse(line)
		if err != nil {
			return
		}
		var kept []Field
		for _, x := range e.Extensions {
			if ValidKey(x.Key) {
				kept = append(kept, x)
			}
		}
		e.Extensions = kept
		b1, err := AppendEvent(nil, e)
		if err != nil {
			t.Fatal(err)
		}
		if !utf8.Valid(b1) || bytes.ContainsAny(b1, "\n\r\x00") {
			t.Fatalf("AppendEvent wrote a bad line: %q", b1)
		}
		e2, err := Parse(string(b1))
		if err != nil {
			t.Fatalf("re-encoded line does not parse: %v\n%q", err, b1)
		}
		b2, err := AppendEvent(nil, e2)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b1, b2) {
			t.Fatalf("not a fixed point:\n%q\n%q", b1, b2)
		}
		if len(e2.Extensions) != len(kept) {
			t.Fatalf("%d fields re-parsed from %d: %q", len(e2.Extensions), len(kept), b1)
		}
		for i, x := range kept {
			if e2.Extensions[i].Key != x.Key {
				t.Fatalf("field %d: key %q, want %q", i, e2.Extensions[i].Key, x.Key)
			}
			if refClean(x.Value, MaxLineBytes, false) == x.Value && e2.Extensions[i].Value != x.Value {
				t.Fatalf("clean value %q came back as %q", x.Value, e2.Extensions[i].Value)
			}
		}
		for i, h := range [...]string{e.DeviceVendor, e.DeviceProduct, e.DeviceVersion, e.SignatureID, e.Name, e.Severity} {
			got := [...]string{e2.DeviceVendor, e2.DeviceProduct, e2.DeviceVersion, e2.SignatureID, e2.Name, e2.Severity}[i]
			if got != refClean(h, MaxLineBytes, true) {
				t.Fatalf("header %d: %q came back as %q", i, h, got)
			}
		}
	})
}

// FuzzRecordRoundTrip: Parse(AppendRecord(r)) gives back every value the
// way the cleaning rules say (refClean, written apart from the encoder).
func FuzzRecordRoundTrip(f *testing.F) {
	for _, h := range fixtures.Hostile {
		f.Add(h, h, h, h, h)
	}
	f.Add("web-01", "xen1", "VM_BAD_POWER_STATE: x", "pool", "alice")
	f.Fuzz(func(t *testing.T, vm, host, errText, pool, actor string) {
		tc := fixtures.Base()
		tc.R.VMName, tc.R.HostName, tc.R.Error, tc.R.Operation = vm, host, errText, actor
		tc.C.PoolName, tc.C.ActorName, tc.C.ActorID, tc.C.FamilyRoot, tc.C.AgentVersion = pool, actor, vm, host, pool
		tc.R.TaskUUID, tc.R.ID = errText, pool
		tc.C.VMIPs, tc.C.VMMACs = []string{vm, host}, []string{actor}
		line := AppendRecord(nil, &tc.R, &tc.C)
		if !utf8.Valid(line) || bytes.ContainsAny(line, "\n\r\x00\t") || strings.HasPrefix(string(line), "\uFEFF") {
			t.Fatalf("bad line: %q", line)
		}
		e, err := Parse(string(line))
		if err != nil {
			t.Fatalf("Parse: %v\n%q", err, line)
		}
		ext := map[string]string{}
		for _, x := range e.Extensions {
			if _, dup := ext[x.Key]; dup {
				t.Fatalf("key %s repeated in %q", x.Key, line)
			}
			ext[x.Key] = x.Value
		}
		w := expected(&tc.R, &tc.C)
		got := [6]string{e.DeviceVendor, e.DeviceProduct, e.DeviceVersion, e.SignatureID, e.Name, e.Severity}
		if got != w.header {
			t.Fatalf("header %q, want %q", got, w.header)
		}
		for k, v := range w.ext {
			if ext[k] != v {
				t.Fatalf("%s = %q, want %q\nline %q", k, ext[k], v, line)
			}
		}
		for k := range ext {
			if _, ok := w.ext[k]; !ok {
				t.Fatalf("unexpected %s=%q", k, ext[k])
			}
		}
	})
}
