package syslog

import (
	"strings"
	"testing"
	"time"

	"github.com/leodido/go-syslog/v4/rfc3164"
	"github.com/leodido/go-syslog/v4/rfc5424"
)

// The go-syslog builder's silent failures the formatter guards against.
// If a new go-syslog version fixes one, this test says so.
func TestBuilderGotchas(t *testing.T) {
	ts := time.Date(2026, 11, 25, 16, 50, 0, 123456789, time.UTC)
	b := &rfc5424.SyslogMessage{}
	b.SetPriority(134)
	b.SetVersion(1)
	b.SetTimestamp(ts.Format(time.RFC3339Nano))
	b.SetAppname("vm lineage")
	b.SetMsgID(strings.Repeat("m", 33))
	b.SetHostname(strings.Repeat("h", 256))
	b.SetParameter("vmlineage@32473", "id", `a"b]c\d`)
	b.SetMessage("CEF:0|x")
	s, err := b.String()
	if err != nil {
		t.Fatal(err)
	}
	if s != `<134>1 - - - - - [vmlineage@32473 id=""] CEF:0|x` {
		t.Fatalf("go-syslog builder behaviour changed: %q", s)
	}
	// Our formatter with the same values keeps every field.
	f, err := NewFormatter(FormatConfig{AppName: "vm lineage", MsgID: strings.Repeat("m", 33), Hostname: strings.Repeat("h", 256), ProcID: "42", Facility: 16, Severity: 6})
	if err != nil {
		t.Fatal(err)
	}
	out := f.Append(nil, `a"b]c\d`, ts, []byte("CEF:0|x"))
	want := `<134>1 2026-11-25T16:50:00.123456Z ` + strings.Repeat("h", 255) + ` vm_lineage 42 ` + strings.Repeat("m", 32) + ` [vmlineage@32473 id="a\"b\]c\\d"] CEF:0|x`
	if string(out) != want {
		t.Fatalf("got\n%s\nwant\n%s", out, want)
	}
	m, err := rfc5424.NewParser().Parse(out)
	if err != nil {
		t.Fatalf("go-syslog cannot parse our message: %v", err)
	}
	sm := m.(*rfc5424.SyslogMessage)
	if *sm.Appname != "vm_lineage" || *sm.MsgID != strings.Repeat("m", 32) || (*sm.StructuredData)["vmlineage@32473"]["id"] != `a"b]c\d` ||
		!sm.Timestamp.Equal(ts.Truncate(time.Microsecond)) || *sm.Message != "CEF:0|x" {
		t.Fatalf("parsed back wrong: %+v", sm)
	}
}

// For values the builder accepts, our fast path writes exactly what the
// builder writes.
func TestMatchesBuilder(t *testing.T) {
	ts := time.Date(2026, 1, 2, 3, 4, 5, 600000000, time.UTC)
	f, err := NewFormatter(FormatConfig{Hostname: "xen1.example", AppName: "vmlineage", ProcID: "77", MsgID: "lifecycle"})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"3f2a", "with space", "é ü", `q"uote`} {
		payload := "CEF:0|Vm|Lineage|1|vm.start|VM started|3|msg=a\\=b|c"
		b := &rfc5424.SyslogMessage{}
		b.SetPriority(13*8 + 5)
		b.SetVersion(1)
		b.SetTimestamp(ts.Format(tsLayout))
		b.SetHostname("xen1.example")
		b.SetAppname("vmlineage")
		b.SetProcID("77")
		b.SetMsgID("lifecycle")
		b.SetParameter("vmlineage@32473", "id", string(AppendSDValue(nil, id)))
		b.SetMessage(payload)
		want, err := b.String()
		if err != nil {
			t.Fatal(err)
		}
		if got := string(f.Append(nil, id, ts, []byte(payload))); got != want {
			t.Fatalf("id %q:\n got %s\nwant %s", id, got, want)
		}
	}
}

func TestRFC3164HasTag(t *testing.T) {
	f, err := NewFormatter(FormatConfig{Format: RFC3164, Hostname: "xen1", Tag: "vm lineage!", Facility: 4, Severity: 5})
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Date(2026, 11, 5, 16, 50, 1, 0, time.UTC)
	out := f.Append(nil, "id", ts, []byte("CEF:0|a|b|1|c|d|3|k=v"))
	if string(out) != "<37>Nov  5 16:50:01 xen1 vmlineage: CEF:0|a|b|1|c|d|3|k=v" {
		t.Fatalf("got %q", out)
	}
	m, err := rfc3164.NewParser(rfc3164.WithYear(rfc3164.CurrentYear{})).Parse(out)
	if err != nil {
		t.Fatal(err)
	}
	sm := m.(*rfc3164.SyslogMessage)
	if *sm.Appname != "vmlineage" || *sm.Message != "CEF:0|a|b|1|c|d|3|k=v" || *sm.Hostname != "xen1" {
		t.Fatalf("parsed %+v", sm)
	}
}

func TestNoBOM(t *testing.T) {
	for _, fm := range []Format{RFC5424, RFC3164} {
		f, _ := NewFormatter(FormatConfig{Format: fm, Hostname: "h"})
		out := f.Append(nil, "id", time.Now(), []byte("\xef\xbb\xbfCEF:0|a|b|1|c|d|3|k=v"))
		if strings.Contains(string(out), "\xef\xbb\xbf") || !strings.HasSuffix(string(out), " CEF:0|a|b|1|c|d|3|k=v") {
			t.Fatalf("%s: %q", fm, out)
		}
	}
}

func TestBadConfig(t *testing.T) {
	for _, c := range []FormatConfig{{Format: "rfc5425"}, {Facility: 24}, {Severity: 9}, {SDID: "a b"}} {
		if _, err := NewFormatter(c); err == nil {
			t.Fatalf("%+v accepted", c)
		}
	}
	if _, err := New(Config{Address: "nohost"}); err == nil {
		t.Fatal("address without port accepted")
	}
	if _, err := New(Config{Address: "h:1", Network: "sctp"}); err == nil {
		t.Fatal("sctp accepted")
	}
	if _, err := ParseFingerprint("ab:cd"); err == nil {
		t.Fatal("short fingerprint accepted")
	}
}

// FuzzFormat: whatever the id, header fields and payload, the message is a
// valid RFC 5424 message whose fields parse back to what we meant.
func FuzzFormat(f *testing.F) {
	f.Add("id", "app", "msgid", "host", []byte("CEF:0|a|b|1|c|d|3|k=v"))
	f.Add(`"]\`, "a p p", strings.Repeat("x", 40), "h\x00st", []byte("\xef\xbb\xbfCEF\n"))
	f.Fuzz(func(t *testing.T, id, app, msgid, host string, payload []byte) {
		fm, err := NewFormatter(FormatConfig{AppName: app, MsgID: msgid, Hostname: host, ProcID: "1"})
		if err != nil {
			t.Fatal(err)
		}
		out := fm.Append(nil, id, time.Unix(1764064800, 987654321), payload)
		m, err := rfc5424.NewParser(rfc5424.WithBestEffort()).Parse(out)
		if err != nil && m == nil {
			t.Fatalf("unparseable %q: %v", out, err)
		}
		sm := m.(*rfc5424.SyslogMessage)
		if !kept(sm.Appname, headerField(app, maxAppName)) {
			t.Fatalf("app %q -> %v in %q", app, sm.Appname, out)
		}
		if !kept(sm.MsgID, headerField(msgid, maxMsgID)) {
			t.Fatalf("msgid %q -> %v", msgid, sm.MsgID)
		}
		if sm.Timestamp == nil {
			t.Fatalf("timestamp lost in %q", out)
		}
		if id != "" {
			if sm.StructuredData == nil {
				t.Fatalf("SD lost in %q (%v)", out, err)
			}
			got := (*sm.StructuredData)["vmlineage@32473"]["id"]
			if want := string([]rune(id)); got != want { // invalid bytes become U+FFFD each
				t.Fatalf("id %q came back %q from %q", id, got, out)
			}
		}
	})
}
