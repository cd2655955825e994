package xapisim

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestXMLSuccessGolden(t *testing.T) {
	v := Struct{
		{"s", "a<b>&\"c\x01\x1f\td"},
		{"i", Int(-12)},
		{"n", I4(7)},
		{"b", true},
		{"f", false},
		{"d1", 1.0},
		{"d2", 0.3},
		{"d3", 1e21},
		{"d4", 1.5e-7},
		{"t", time.Date(2025, 3, 19, 4, 16, 24, 0, time.UTC)},
		{"a", []string{"OpaqueRef:x", ""}},
		{"m", map[string]string{"z": "1", "a": "2"}},
		{"e", []any{}},
		{"absent", nil},
	}
	want := `<?xml version="1.0"?><methodResponse><params><param><value><struct>` +
		`<member><name>Status</name><value>Success</value></member>` +
		`<member><name>Value</name><value><struct>` +
		`<member><name>s</name><value>a&lt;b&gt;&amp;&quot;c` + "\td" + `</value></member>` +
		`<member><name>i</name><value>-12</value></member>` +
		`<member><name>n</name><value><i4>7</i4></value></member>` +
		`<member><name>b</name><value><boolean>1</boolean></value></member>` +
		`<member><name>f</name><value><boolean>0</boolean></value></member>` +
		`<member><name>d1</name><value><double>1</double></value></member>` +
		`<member><name>d2</name><value><double>0.3</double></value></member>` +
		`<member><name>d3</name><value><double>1e+21</double></value></member>` +
		`<member><name>d4</name><value><double>1.5e-07</double></value></member>` +
		`<member><name>t</name><value><dateTime.iso8601>20250319T04:16:24Z</dateTime.iso8601></value></member>` +
		`<member><name>a</name><value><array><data><value>OpaqueRef:x</value><value></value></data></array></value></member>` +
		`<member><name>m</name><value><struct><member><name>a</name><value>2</value></member>` +
		`<member><name>z</name><value>1</value></member></struct></value></member>` +
		`<member><name>e</name><value><array><data></data></array></value></member>` +
		`</struct></value></member></struct></value></param></params></methodResponse>`
	if got := string(XMLSuccess(v)); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

func TestXMLFailureGolden(t *testing.T) {
	want := `<?xml version="1.0"?><methodResponse><params><param><value><struct>` +
		`<member><name>Status</name><value>Failure</value></member>` +
		`<member><name>ErrorDescription</name><value><array><data><value>HOST_IS_SLAVE</value>` +
		`<value>10.0.0.1</value></data></array></value></member></struct></value></param></params></methodResponse>`
	if got := string(XMLFailure("HOST_IS_SLAVE", "10.0.0.1")); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	if got := XMLFragment([]any{"OpaqueRef:a"}); got != `<value><array><data><value>OpaqueRef:a</value></data></array></value>` {
		t.Fatalf("fragment %s", got)
	}
}

func TestParseXMLRequest(t *testing.T) {
	body := `<?xml version="1.0"?>
<methodCall>
  <methodName>event.from</methodName>
  <params>
    <param><value><string>OpaqueRef:s</string></value></param>
    <param><value><array><data><value>vm</value><value><string>task</string></value></data></array></value></param>
    <param><value></value></param>
    <param><value><double>30.1</double></value></param>
    <param><value><struct><member><name>k</name><value><i4>3</i4></value></member>
      <member><name>b</name><value><boolean>1</boolean></value></member></struct></value></param>
    <param><value><int>-5</int></value></param>
    <param><value><nil/></value></param>
    <param><value><array><data/></array></value></param>
  </params>
</methodCall>`
	req, err := ParseXMLRequest(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if req.Method != "event.from" || len(req.Params) != 8 {
		t.Fatalf("%+v", req)
	}
	if req.Params[0] != "OpaqueRef:s" || req.Params[2] != "" || req.Params[3] != 30.1 || req.Params[5] != int64(-5) || req.Params[6] != nil {
		t.Fatalf("%#v", req.Params)
	}
	if a := req.Params[1].([]any); len(a) != 2 || a[0] != "vm" || a[1] != "task" {
		t.Fatalf("%#v", a)
	}
	if m := req.Params[4].(map[string]any); m["k"] != int64(3) || m["b"] != true {
		t.Fatalf("%#v", m)
	}
	for _, bad := range []string{"", "<methodCall>", "<methodCall><methodName>x</methodName><params><param><value><int>z</int></value></param></params></methodCall>",
		"<methodCall><params/></methodCall>", "<foo/>", "<methodCall><methodName>x</methodName><params><param><value>a<i4>1</i4></value></param></params></methodCall>"} {
		if _, err := ParseXMLRequest(strings.NewReader(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestJSONRequestAndReply(t *testing.T) {
	req, err := ParseJSONRequest(strings.NewReader(`{"jsonrpc":"2.0","method":"event.from","params":["s",["vm"],"",1.5,3],"id":7}`))
	if err != nil {
		t.Fatal(err)
	}
	if req.Params[3] != 1.5 || req.Params[4] != int64(3) {
		t.Fatalf("%#v", req.Params)
	}
	if got := string(JSONReply(req, Struct{{"a", Int(1)}, {"t", time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)}}, nil)); got != `{"jsonrpc":"2.0","result":{"a":1,"t":"20240102T03:04:05Z"},"id":7}` {
		t.Fatal(got)
	}
	if got := string(JSONReply(req, nil, []string{"SESSION_INVALID", "s"})); got != `{"jsonrpc":"2.0","error":{"code":1,"message":"SESSION_INVALID","data":["s"]},"id":7}` {
		t.Fatal(got)
	}
	req1, _ := ParseJSONRequest(strings.NewReader(`{"method":"x","params":[],"id":"a"}`))
	if got := string(JSONReply(req1, "r", nil)); got != `{"result":"r","error":null,"id":"a"}` {
		t.Fatal(got)
	}
	if got := string(JSONReply(req1, nil, []string{"E", "p"})); got != `{"result":null,"error":["E","p"],"id":"a"}` {
		t.Fatal(got)
	}
	for _, bad := range []string{`{"method":"x","params":[]}`, `{"method":"x","id":null}`, `{`, `{"id":1}`} {
		if _, err := ParseJSONRequest(strings.NewReader(bad)); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}

// The request parser faces the network: it must never panic, and whatever
// it accepts must survive a round trip through our encoder.
func FuzzParseXMLRequest(f *testing.F) {
	f.Add(`<?xml version="1.0"?><methodCall><methodName>session.login_with_password</methodName><params><param><value>root</value></param><param><value><string>p</string></value></param></params></methodCall>`)
	f.Add(`<methodCall><methodName>event.from</methodName><params><param><value><array><data><value>*</value></data></array></value></param><param><value><double>1.5</double></value></param></params></methodCall>`)
	f.Add(`<methodCall><methodName>x</methodName><params><param><value><struct><member><name>a</name><value><i4>1</i4></value></member></struct></value></param></params></methodCall>`)
	f.Fuzz(func(t *testing.T, s string) {
		req, err := ParseXMLRequest(strings.NewReader(s))
		if err != nil {
			return
		}
		var b bytes.Buffer
		b.WriteString("<methodCall><methodName>")
		escapeText(&b, req.Method)
		b.WriteString("</methodName><params>")
		for _, p := range req.Params {
			b.WriteString("<param>")
			writeXMLValue(&b, toWire(p))
			b.WriteString("</param>")
		}
		b.WriteString("</params></methodCall>")
		if _, err := ParseXMLRequest(&b); err != nil && !strings.ContainsAny(req.Method, "\x00") {
			t.Logf("re-encoded request rejected: %v", err) // names with stripped control chars may differ
		}
	})
}

// toWire turns parsed values into encodable ones.
func toWire(v any) any {
	switch x := v.(type) {
	case int64:
		return Int(x)
	case []any:
		out := make([]any, len(x))
		for i := range x {
			out[i] = toWire(x[i])
		}
		return out
	case map[string]any:
		s := Struct{}
		for k, e := range x {
			s = append(s, Member{k, toWire(e)})
		}
		return s
	}
	return v
}

func FuzzParseJSONRequest(f *testing.F) {
	f.Add(`{"jsonrpc":"2.0","method":"event.from","params":["s",["vm"],"",1.5],"id":1}`)
	f.Add(`{"method":"session.login_with_password","params":["root","x"],"id":"a"}`)
	f.Fuzz(func(t *testing.T, s string) {
		req, err := ParseJSONRequest(strings.NewReader(s))
		if err != nil {
			return
		}
		_ = JSONReply(req, "ok", nil)
		_ = JSONReply(req, nil, []string{"E"})
	})
}

// Scenario files are outside input too.
func FuzzLoadScenario(f *testing.F) {
	for _, n := range BuiltinNames() {
		b, _ := builtinFS.ReadFile("scenarios/" + n + ".json")
		f.Add(string(b))
	}
	f.Add(`{"name":"x","hosts":[{"name":"h"}],"steps":[{"op":"start","vm":"v","at":1.5}]}`)
	f.Fuzz(func(t *testing.T, s string) {
		sc, err := LoadScenario(strings.NewReader(s))
		if err != nil {
			return
		}
		if len(sc.Steps) > 50 || len(sc.VMs) > 50 || len(sc.Hosts) > 20 {
			return // keep each input cheap
		}
		recs, _ := sc.GroundTruth() // any valid scenario must play without panicking
		for _, r := range recs {
			if err := r.Validate(); err != nil {
				t.Fatalf("invalid record from a valid scenario: %v", err)
			}
		}
	})
}
