package xapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/kolo/xmlrpc"
)

// koloEnvelope is the whole answer as kolo decodes it.
type koloEnvelope struct {
	Status           string     `xmlrpc:"Status"`
	Value            EventBatch `xmlrpc:"Value"`
	ErrorDescription []string   `xmlrpc:"ErrorDescription"`
}

type koloRecords struct {
	Status string               `xmlrpc:"Status"`
	Value  map[string]*Snapshot `xmlrpc:"Value"`
}

func recordsXML(n int) []byte {
	var v xstruct
	for i := 0; i < n; i++ {
		v = append(v, kv{fmt.Sprintf("OpaqueRef:vm-%d", i), vmRecord(i)})
	}
	v = append(v, kv{"OpaqueRef:task-1", taskRecord(1, TaskSuccess)})
	return xmlSuccess(v)
}

// smallVM keeps fuzz seeds small: the fuzzer slows to a crawl on 10 kB
// inputs, and every member kind is still present.
func smallVM() xstruct {
	v := vmRecord(7)
	var out xstruct
	for _, m := range v {
		switch m.k {
		case "uuid", "name_label", "power_state", "is_a_template", "current_operations", "VIFs", "snapshot_time", "domid", "other_config", "HVM_shadow_multiplier", "memory_target":
			out = append(out, m)
		}
	}
	return out
}

func seedXML(f *testing.F) {
	f.Add(xmlSuccess(xstruct{{"events", []any{xstruct{{"id", "12"}, {"class", "vm"}, {"operation", "mod"}, {"ref", "OpaqueRef:a"}, {"snapshot", smallVM()}},
		xstruct{{"id", "13"}, {"class", "task"}, {"operation", "del"}, {"ref", "OpaqueRef:t"}}}},
		{"valid_ref_counts", xstruct{{"vm", xi4(1)}}}, {"token", tokenOf(13)}}))
	f.Add(xmlSuccess(xstruct{{"OpaqueRef:a", smallVM()}, {"OpaqueRef:t", xstruct{{"status", "success"}, {"progress", 1.0}, {"created", xtime(time.Unix(1e9, 0))}, {"error_info", []any{"X"}}}}}))
	f.Add(xmlFailure(ErrSessionInvalid, "OpaqueRef:x"))
	f.Add(xmlSuccess(""))
	f.Add([]byte(`<?xml version="1.0"?><methodResponse><params><param><value><struct><member><name>Status</name><value>Success</value></member><member><name>Value</name><value><struct><member><name>events</name><value><array><data><value><struct><member><name>class</name><value><string>vm</string></value></member><member><name>snapshot</name><value><struct><member><name>name_label</name><value>a &amp; b&#x21;</value></member><member><name>created</name><value><dateTime.iso8601>2025-03-19T04:16:24+01:00</dateTime.iso8601></value></member></struct></value></member></struct></value></data></array></value></member><member><name>token</name><value/></member></struct></value></member></struct></value></param></params></methodResponse>`))
	f.Add([]byte("<methodResponse>\n <params>\n  <param>\n   <value>\n    <struct>\n     <member>\n      <name>Status</name>\n      <value><string>Success</string></value>\n     </member>\n    </struct>\n   </value>\n  </param>\n </params>\n</methodResponse>\n"))
}

// FuzzDecodeXMLRPC: the direct decoder never panics, and wherever both it
// and kolo accept an answer they decode the same EventBatch.
func FuzzDecodeXMLRPC(f *testing.F) {
	seedXML(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		var mine EventBatch
		errMine := decodeXMLRPC(data, func(s *scanner) error { return s.decodeEventBatch(&mine) })
		var k koloEnvelope
		errKolo := xmlrpc.Response(data).Unmarshal(&k)
		if errMine != nil || errKolo != nil || k.Status != "Success" {
			return
		}
		trimStrings(reflect.ValueOf(&mine))
		trimStrings(reflect.ValueOf(&k.Value))
		if !reflect.DeepEqual(mine, k.Value) {
			t.Fatalf("decoders disagree\nmine: %+v\nkolo: %+v", mine, k.Value)
		}
	})
}

// trimStrings trims every string v reaches, in place: kolo trims an untyped
// string, the scanner keeps it whole as xapi wrote it
// (TestUntypedStringsKeepTheirSpaces); apart from that they must agree.
func trimStrings(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			trimStrings(v.Elem())
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Field(i).CanSet() {
				trimStrings(v.Field(i))
			}
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			trimStrings(v.Index(i))
		}
	case reflect.Map:
		for _, key := range v.MapKeys() {
			e := reflect.New(v.Type().Elem()).Elem()
			e.Set(v.MapIndex(key))
			trimStrings(e)
			v.SetMapIndex(key, e)
		}
	case reflect.String:
		if v.CanSet() {
			v.SetString(strings.TrimSpace(v.String()))
		}
	}
}

// FuzzStreamRecords: the streaming splitter never panics, and agrees with
// the in-memory decoder (and kolo) when they all accept the answer.
func FuzzStreamRecords(f *testing.F) {
	seedXML(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		streamed := map[string]*Snapshot{}
		// Small uneven reads: the steps of the decoder meet the end of the
		// window at every kind of place.
		errS := streamRecords(&chunkReader{b: data}, 1<<20, func(ref string, s *Snapshot) error {
			streamed[ref] = s
			return nil
		})
		mem := map[string]*Snapshot{}
		errM := decodeXMLRPC(data, func(s *scanner) error {
			return s.decodeRecords(func(ref string, x *Snapshot) error { mem[ref] = x; return nil })
		})
		if errS != nil || errM != nil {
			return
		}
		if !reflect.DeepEqual(streamed, mem) {
			t.Fatalf("stream and memory disagree\n%v\n%v", streamed, mem)
		}
		var k koloRecords
		if err := xmlrpc.Response(data).Unmarshal(&k); err == nil && k.Status == "Success" && len(k.Value) == len(mem) {
			trimStrings(reflect.ValueOf(k.Value))
			trimStrings(reflect.ValueOf(mem))
			for ref, s := range k.Value {
				if !reflect.DeepEqual(s, mem[ref]) && !(s == nil && reflect.DeepEqual(*mem[ref], Snapshot{})) {
					t.Fatalf("kolo disagrees on %s\nmine %+v\nkolo %+v", ref, mem[ref], s)
				}
			}
		}
	})
}

// FuzzDecodeJSONRPC: JSON-RPC replies never panic the decoders.
func FuzzDecodeJSONRPC(f *testing.F) {
	f.Add(batchJSON(2))
	f.Add([]byte(`{"jsonrpc":"2.0","error":{"code":1,"message":"SESSION_INVALID","data":["OpaqueRef:x"]},"id":1}`))
	f.Add([]byte(`{"result":null,"error":["HOST_IS_SLAVE","10.0.0.1"],"id":1}`))
	rec, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 2, "result": toJSON(xstruct{{"OpaqueRef:a", vmRecord(1)}})})
	f.Add(rec)
	f.Fuzz(func(t *testing.T, data []byte) {
		if res, err := decodeJSONRPC(data); err == nil {
			var b EventBatch
			_ = decodeJSONBatch(res, &b)
		}
		_ = streamJSONRecords(bytes.NewReader(data), func(string, *Snapshot) error { return nil })
	})
}

func TestDecodersAgreeOnRealisticBatch(t *testing.T) {
	data := batchXML(50)
	var mine EventBatch
	if err := decodeXMLRPC(data, func(s *scanner) error { return s.decodeEventBatch(&mine) }); err != nil {
		t.Fatal(err)
	}
	var k koloEnvelope
	if err := xmlrpc.Response(data).Unmarshal(&k); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(mine, k.Value) {
		t.Fatalf("disagree")
	}
	var js EventBatch
	res, err := decodeJSONRPC(batchJSON(50))
	if err != nil {
		t.Fatal(err)
	}
	if err := decodeJSONBatch(res, &js); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(mine, js) {
		for i := range mine.Events {
			if !reflect.DeepEqual(mine.Events[i].Snapshot, js.Events[i].Snapshot) {
				t.Fatalf("XML and JSON disagree on event %d\n%+v\n%+v", i, mine.Events[i].Snapshot, js.Events[i].Snapshot)
			}
		}
		t.Fatalf("XML and JSON disagree\n%+v\n%+v", mine.ValidRefCounts, js.ValidRefCounts)
	}
	if len(mine.Events) != 50 || mine.ValidRefCounts["vm"] != 50 || !strings.HasPrefix(mine.Token, "0000") {
		t.Fatalf("%+v", mine)
	}
}

// TestDecodePrettyTyped: other servers indent, type every value and escape
// freely; both decoders must read that as xapi's compact form.
func TestDecodePrettyTyped(t *testing.T) {
	doc := "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<!-- pretty -->\r\n<methodResponse>\n <params>\n  <param>\n   <value>\n    <struct>\n" +
		"     <member><name>Status</name><value><string>Success</string></value></member>\n" +
		"     <member>\n      <name>Value</name>\n      <value><struct>\n" +
		"       <member><name>OpaqueRef:a</name><value><struct>\n" +
		"        <member><name>name_label</name><value><string>a &lt;b&gt; &#233;\r\nx</string></value></member>\n" +
		"        <member><name>domid</name><value><int>7</int></value></member>\n" +
		"        <member><name>is_a_template</name><value><boolean>1</boolean></value></member>\n" +
		"        <member><name>VIFs</name><value><array><data>\n <value>OpaqueRef:v1</value>\n <value><string>OpaqueRef:v2</string></value>\n</data></array></value></member>\n" +
		"        <member><name>other_config</name><value><struct/></value></member>\n" +
		"        <member><name>tags</name><value><array><data/></array></value></member>\n" +
		"        <member><name>guest_metrics</name><value/></member>\n" +
		"        <member><name>snapshot_time</name><value><dateTime.iso8601>20250319T04:16:24Z</dateTime.iso8601></value></member>\n" +
		"       </struct></value></member>\n" +
		"      </struct></value>\n     </member>\n    </struct>\n   </value>\n  </param>\n </params>\n</methodResponse>\n"
	mem := map[string]*Snapshot{}
	err := decodeXMLRPC([]byte(doc), func(s *scanner) error {
		return s.decodeRecords(func(ref string, x *Snapshot) error { mem[ref] = x; return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	a := mem["OpaqueRef:a"]
	if a == nil || a.NameLabel != "a <b> é\nx" || a.Domid != "7" || !a.IsATemplate || len(a.VIFs) != 2 || a.VIFs[1] != "OpaqueRef:v2" ||
		a.SnapshotTime.Format(DateTimeLayout) != "20250319T04:16:24Z" || a.GuestMetrics != "" {
		t.Fatalf("%+v", a)
	}
	streamed := map[string]*Snapshot{}
	if err := streamRecords(iotest.OneByteReader(strings.NewReader(doc)), 1<<20, func(ref string, x *Snapshot) error { streamed[ref] = x; return nil }); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(mem, streamed) {
		t.Fatalf("stream differs: %+v", streamed["OpaqueRef:a"])
	}
}

// chunkReader hands out its bytes in reads of 1, 2, 3, 5, 8, … 34 bytes.
type chunkReader struct {
	b    []byte
	a, n int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	if c.n == 0 || c.n > 34 {
		c.a, c.n = 1, 1
	}
	k := min(c.n, len(p), len(c.b))
	copy(p, c.b[:k])
	c.b = c.b[k:]
	c.a, c.n = c.n, c.a+c.n
	return k, nil
}

// FuzzStreamEventBatch checks that the streaming event.from decoder, fed in
// small uneven reads, agrees with the in-memory one on every input both
// accept.
func FuzzStreamEventBatch(f *testing.F) {
	seedXML(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		var streamed, mem EventBatch
		errS := streamEventBatch(&chunkReader{b: data}, 1<<20, &streamed)
		errM := decodeXMLRPC(data, func(s *scanner) error { return s.decodeEventBatch(&mem) })
		if errS != nil || errM != nil {
			return
		}
		if !reflect.DeepEqual(streamed, mem) {
			t.Fatalf("stream and memory disagree\n%+v\n%+v", streamed, mem)
		}
	})
}

// FuzzParseXAPITime: the fast path for xapi's own datetimes gives what
// time.Parse gives with kolo's layouts, and refuses what it refuses.
func FuzzParseXAPITime(f *testing.F) {
	for _, s := range []string{"20250319T04:16:24Z", "20240229T23:59:59Z", "20230229T00:00:00Z", "20250431T00:00:00Z",
		"20251319T04:16:24Z", "20250319T24:00:00Z", "2025-03-19T04:16:24Z", "20250319T04:16:24", "19700101T00:00:00Z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseXAPITime(s)
		var want time.Time
		var werr error
		for _, l := range timeLayouts {
			if want, werr = time.Parse(l, s); werr == nil {
				break
			}
		}
		if (err == nil) != (werr == nil) || !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: got %v (%v), time.Parse %v (%v)", s, got, err, want, werr)
		}
	})
}

// TestUntypedStringsKeepTheirSpaces: xapi writes a string as
// <value>text</value> with nothing around it, so a VM named " web 01 " (xapi
// allows it) keeps its spaces over XML-RPC, in memory and streamed, as over
// JSON-RPC; trimmed, alerts naming it would not match.
func TestUntypedStringsKeepTheirSpaces(t *testing.T) {
	const name = "  web 01 \t"
	vm := smallVM()
	for i := range vm {
		if vm[i].k == "name_label" {
			vm[i].v = name
		}
	}
	answer := xstruct{{"OpaqueRef:a", vm}}
	got := map[string]string{}
	if err := decodeXMLRPC(xmlSuccess(answer), func(s *scanner) error {
		return s.decodeRecords(func(_ string, x *Snapshot) error { got["xml-rpc"] = x.NameLabel; return nil })
	}); err != nil {
		t.Fatal(err)
	}
	if err := streamRecords(bytes.NewReader(xmlSuccess(answer)), 1<<20, func(_ string, x *Snapshot) error {
		got["xml-rpc streamed"] = x.NameLabel
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	js, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "result": toJSON(answer)})
	if err := streamJSONRecords(bytes.NewReader(js), func(_ string, x *Snapshot) error { got["json-rpc"] = x.NameLabel; return nil }); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"xml-rpc", "xml-rpc streamed", "json-rpc"} {
		if got[k] != name {
			t.Errorf("%s: name %q, want %q", k, got[k], name)
		}
	}
}
