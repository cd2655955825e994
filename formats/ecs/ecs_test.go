package ecs

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/vmlineage/vmlineage/agent/record"
	"github.com/vmlineage/vmlineage/formats"
	"github.com/vmlineage/vmlineage/formats/internal/checkers"
	"github.com/vmlineage/vmlineage/formats/internal/fixtures"
)

// clean is what a string reads as after a JSON round trip: each invalid
// UTF-8 byte becomes U+FFFD, everything else is kept.
func clean(s string) string { return string([]rune(s)) }

func get(doc map[string]any, path string) any {
	var cur any = doc
	for _, k := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[k]
	}
	return cur
}

func strList(xs ...string) []any {
	var out []any
	for _, x := range xs {
		out = append(out, x)
	}
	return out
}

func validIPs(xs ...string) []any {
	var out []any
	seen := map[string]bool{}
	for _, x := range xs {
		if _, err := netip.ParseAddr(x); err == nil && !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

func message(r *record.Record, c *formats.Context) string {
	var p [formats.MaxMessageParts]string
	n := formats.MessageParts(r, c, &p)
	return clean(strings.Join(p[:n], ""))
}

func decode(t *testing.T, b []byte) map[string]any {
	t.Helper()
	if !json.Valid(b) {
		t.Fatalf("invalid JSON: %s", b)
	}
	if !utf8.Valid(b) {
		t.Fatalf("document is not valid UTF-8: %q", b)
	}
	for _, bad := range []string{"\u2028", "\u2029", "\u202e", "\u200f", "\ufeff", "\u0085"} {
		if bytes.Contains(b, []byte(bad)) {
			t.Fatalf("document holds raw %U: %s", []rune(bad)[0], b)
		}
	}
	for _, c := range b {
		if c < 0x20 || c == 0x7f {
			t.Fatalf("document holds raw control byte %#x", c)
		}
	}
	var doc map[string]any
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

func TestRecordFields(t *testing.T) {
	for _, tc := range fixtures.Cases() {
		t.Run(tc.Name, func(t *testing.T) {
			r, c := &tc.R, &tc.C
			doc := decode(t, AppendRecord(nil, r, c))
			sp := formats.SpecOf(r.Activity)
			ts := r.End
			if ts.IsZero() {
				ts = r.Start
			}
			cat, typ := sp.Category, sp.Type
			if r.Result == record.Denied {
				cat, typ = "api", "denied"
			}
			vmName := r.VMName
			if vmName == "" {
				vmName = r.VMUUID
			}
			host := r.HostName
			if host == "" {
				host = c.HostName
			}
			want := map[string]any{
				"@timestamp":               record.FormatTime(ts),
				"ecs.version":              "9.4.0",
				"message":                  message(r, c),
				"event.kind":               "event",
				"event.category":           strList(cat),
				"event.type":               strList(typ),
				"event.action":             sp.Action,
				"event.outcome":            formats.Outcome(r.Result),
				"event.id":                 r.ID,
				"event.dataset":            "vmlineage.lifecycle",
				"event.module":             "vmlineage",
				"event.provider":           "xapi",
				"event.severity":           json.Number(fmt.Sprint(formats.Severity(r.Activity, r.Result))),
				"event.start":              record.FormatTime(r.Start),
				"host.name":                nilIfEmpty(clean(vmName)),
				"host.id":                  nilIfEmpty(r.VMUUID),
				"cloud.instance.id":        nilIfEmpty(r.VMUUID),
				"observer.hostname":        nilIfEmpty(clean(host)),
				"orchestrator.type":        "xapi",
				"orchestrator.cluster.id":  r.PoolUUID,
				"orchestrator.resource.id": nilIfEmpty(r.VMUUID),
				"xen.source":               string(r.Source),
				"xen.operation":            nilIfEmpty(clean(r.Operation)),
				"xen.result":               string(r.Result),
				"xen.task.uuid":            nilIfEmpty(r.TaskUUID),
				"xen.pool.uuid":            r.PoolUUID,
				"vmlineage.activity":       string(r.Activity),
				"vmlineage.family_root":    nilIfEmpty(clean(c.FamilyRoot)),
				"vmlineage.parent.uuid":    nilIfEmpty(r.ParentVMUUID),
				"error.message":            nilIfEmpty(clean(r.Error)),
				"data_stream.type":         "logs",
				"data_stream.dataset":      "vmlineage.lifecycle",
				"data_stream.namespace":    "default",
				"host.ip":                  nilIfNone(validIPs(c.VMIPs...)),
				"observer.ip":              nilIfNone(validIPs(c.HostIP)),
				"user.name":                nilIfEmpty(clean(actor(c.ActorName, r, func(a *record.Actor) string { return a.Name }))),
				"user.id":                  nilIfEmpty(clean(actor(c.ActorID, r, func(a *record.Actor) string { return a.SubjectID }))),
				"user_agent.name":          nilIfEmpty(clean(actor(c.ActorOriginator, r, func(a *record.Actor) string { return a.Originator }))),
				"vmlineage.chain.hash":     nil,
				"vmlineage.chain.prev":     nil,
				"vmlineage.chain.seq":      nil,
			}
			if ch := r.Chain; ch != nil {
				want["vmlineage.chain.hash"], want["vmlineage.chain.prev"], want["vmlineage.chain.seq"] = ch.Hash, ch.Prev, json.Number(fmt.Sprint(ch.Seq))
			}
			if !r.End.IsZero() {
				want["event.end"] = record.FormatTime(r.End)
				want["event.duration"] = json.Number(fmt.Sprint(r.End.Sub(r.Start).Nanoseconds()))
			} else {
				want["event.end"] = nil
				want["event.duration"] = nil
			}
			if r.Result == record.Denied || r.Result == record.Cancelled {
				want["event.reason"] = string(r.Result)
			}
			var ap []any
			for _, a := range c.AncestorPath {
				if a == "" {
					continue
				}
				ap = append(ap, clean(a))
			}
			want["vmlineage.ancestor_path"] = nilIfNone(ap)
			var unk []any
			for _, u := range r.Unknown {
				if u != "" {
					unk = append(unk, clean(u))
				}
			}
			want["xen.unknown"] = nilIfNone(unk)
			for k, w := range want {
				if got := get(doc, k); !reflect.DeepEqual(got, w) {
					t.Errorf("%s = %#v, want %#v", k, got, w)
				}
			}
		})
	}
}

// actor is the context's value, else the record's actor's.
func actor(ctx string, r *record.Record, f func(*record.Actor) string) string {
	if ctx != "" || r.Actor == nil {
		return ctx
	}
	return f(r.Actor)
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func nilIfNone(xs []any) any {
	if len(xs) == 0 {
		return nil
	}
	return xs
}

func TestMACsAndAddresses(t *testing.T) {
	tc := fixtures.Base()
	tc.C.VMMACs = []string{"aa:bb:cc:dd:ee:0f", "not-a-mac", "00-16-3E-01-02-03"}
	tc.C.VMIPs = []string{"192.0.2.55", "bogus", "192.0.2.55", "fe80::1"}
	doc := decode(t, AppendRecord(nil, &tc.R, &tc.C))
	if got, want := get(doc, "host.mac"), strList("AA-BB-CC-DD-EE-0F", "00-16-3E-01-02-03"); !reflect.DeepEqual(got, want) {
		t.Errorf("host.mac = %v, want %v", got, want)
	}
	if got, want := get(doc, "host.ip"), strList("192.0.2.55", "fe80::1"); !reflect.DeepEqual(got, want) {
		t.Errorf("host.ip = %v, want %v", got, want)
	}
	if got, want := get(doc, "related.ip"), strList("192.0.2.55", "fe80::1", "192.0.2.10", "198.51.100.7"); !reflect.DeepEqual(got, want) {
		t.Errorf("related.ip = %v, want %v", got, want)
	}
	if got, want := get(doc, "related.hosts"), strList("web-01", "xen1.lab.example", "base-01"); !reflect.DeepEqual(got, want) {
		t.Errorf("related.hosts = %v, want %v", got, want)
	}
	if got := get(doc, "error.code"); got != nil {
		t.Errorf("error.code on success = %v", got)
	}
}

func TestErrorCode(t *testing.T) {
	tc := fixtures.Base()
	tc.R.Result = record.Failure
	tc.R.Error = "VM_BAD_POWER_STATE: [OpaqueRef:1, halted, running]"
	doc := decode(t, AppendRecord(nil, &tc.R, &tc.C))
	if got := get(doc, "error.code"); got != "VM_BAD_POWER_STATE" {
		t.Errorf("error.code = %v", got)
	}
}

func TestNilContextAndAppend(t *testing.T) {
	tc := fixtures.Base()
	prefix := []byte(`{"create":{}}` + "\n")
	b := AppendRecord(append([]byte(nil), prefix...), &tc.R, nil)
	if !bytes.HasPrefix(b, prefix) {
		t.Fatal("AppendRecord overwrote the buffer's contents")
	}
	decode(t, b[len(prefix):])
	if !bytes.Equal(Marshal(&tc.R, nil), b[len(prefix):]) {
		t.Fatal("Marshal and AppendRecord differ")
	}
}

// TestHostileStringsExact checks the escaping of each hostile string as JSON
// decodes it, in a field written verbatim.
func TestHostileStringsExact(t *testing.T) {
	for _, h := range fixtures.Hostile {
		b := appendString(nil, h)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%q -> %s: %v", h, b, err)
		}
		if got != clean(h) {
			t.Errorf("%q -> %s decodes to %q", h, b, got)
		}
	}
}

// TestValidateWithElasticECS runs every document through the ECS validator
// against the official @elastic/ecs 9.4.0 field definitions: zero errors and
// zero warnings.
func TestValidateWithElasticECS(t *testing.T) {
	node, modules := checkers.ECS(t)
	script := checkers.ValidatorScript(t)
	var all bytes.Buffer
	cases := fixtures.Cases()
	for _, tc := range cases {
		all.Write(AppendRecord(nil, &tc.R, &tc.C))
		all.WriteByte('\n')
	}
	if err := os.WriteFile(filepath.Join(t.TempDir(), "docs.ndjson"), all.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(node, script, "--custom", "xen", "--custom", "vmlineage")
	cmd.Env = append(os.Environ(), "NODE_PATH="+modules)
	cmd.Stdin = &all
	out, err := cmd.CombinedOutput()
	text := string(out)
	if err != nil {
		t.Fatalf("validator failed: %v\n%s", err, text)
	}
	if want := fmt.Sprintf("%d passed, 0 failed", len(cases)); !strings.Contains(text, want) {
		t.Fatalf("validator output lacks %q:\n%s", want, text)
	}
	if strings.Contains(text, "WARN") {
		t.Fatalf("validator warned:\n%s", text)
	}
	t.Logf("%s", strings.TrimSpace(text))
}

// TestValidatorCatchesErrors proves the validator is live: a document with a
// wrong type, a bad allowed value and an unknown field fails.
func TestValidatorCatchesErrors(t *testing.T) {
	node, modules := checkers.ECS(t)
	cmd := exec.Command(node, checkers.ValidatorScript(t), "--custom", "xen", "--custom", "vmlineage")
	cmd.Env = append(os.Environ(), "NODE_PATH="+modules)
	cmd.Stdin = strings.NewReader(`{"@timestamp":"2026-11-25T10:00:00.000Z","ecs":{"version":"9.4.0"},"event":{"kind":"lifecycle","duration":"3s"},"vm":{"uuid":"x"}}` + "\n")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("validator accepted a bad document:\n%s", out)
	}
	for _, want := range []string{"event.kind", "event.duration", "vm.uuid", "0 passed, 1 failed"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("validator output lacks %q:\n%s", want, out)
		}
	}
}
