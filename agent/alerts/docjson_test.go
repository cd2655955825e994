package alerts

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/plugins"
)

// The encoder knows every field of the types it writes; a new field turns
// it off (falling back to encoding/json) until it is taught the field.
func TestDocJSONFields(t *testing.T) {
	if !fastDocJSON {
		t.Fatal("fastDocJSON is off: Output, MatchedVM, DetectorOutcome, plugins.Suspect, plugins.Finding or plugins.VM changed; teach encodeDoc the new fields")
	}
}

// encodeDoc writes the bytes json.Marshal writes for the rendered
// document, over random alerts and outputs: keys that sort around the
// ones the enricher sets, threat objects with and without enrichments,
// strings encoding/json escapes, scores in exponent form.
func TestEncodeDocLikeMarshal(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	e := &Enricher{}
	for i := 0; i < 3000; i++ {
		a := &Alert{Doc: randDoc(rng, 0), ID: randString(rng), Time: randTime(rng)}
		out := randOutput(rng)
		checkEncodeDoc(t, e, a, out, fmt.Sprintf("case %d", i))
	}
}

// A score that is not a number fails as it does through encoding/json.
func TestEncodeDocNaNScore(t *testing.T) {
	e := &Enricher{}
	a := &Alert{Doc: map[string]any{"a": "b"}, Time: time.Unix(1, 0)}
	out := &Output{Suspects: []plugins.Suspect{{VMUUID: "x", Score: math.NaN()}}}
	raw, _ := json.Marshal(a.Doc)
	if _, err := e.encodeDoc(a, out, raw); err == nil {
		t.Fatal("NaN score encoded")
	}
}

func checkEncodeDoc(t *testing.T, e *Enricher, a *Alert, out *Output, what string) {
	t.Helper()
	raw, err := json.Marshal(a.Doc)
	if err != nil {
		return // Start fails such an alert before Finish
	}
	want, werr := json.Marshal(e.render(a, out))
	got, gerr := e.encodeDoc(a, out, raw)
	if (werr == nil) != (gerr == nil) {
		t.Fatalf("%s: errors differ: %v, %v", what, werr, gerr)
	}
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Fatalf("%s: differs at byte %d:\n got %s\nwant %s", what, i, got[max(0, i-60):min(len(got), i+60)], want[max(0, i-60):min(len(want), i+60)])
	}
}

var docKeys = []string{"@timestamp", "@a", "A", "event", "host", "source", "thr", "threat", "threat2", "threaz", "vm", "vmlineage",
	"vmlineagf", "z", "<k>", "é", "a\u2028b", "q\"", "enrichments", "indicator", "ênrichments", "enrichment", "\xff"}

func randDoc(rng *rand.Rand, depth int) map[string]any {
	m := map[string]any{}
	for n := rng.IntN(6); n > 0; n-- {
		k := docKeys[rng.IntN(len(docKeys))]
		m[k] = randValue(rng, depth)
	}
	if depth == 0 && rng.IntN(3) > 0 {
		// A threat object, often with enrichments of its own.
		th := randDoc(rng, depth+1)
		switch rng.IntN(4) {
		case 0:
			th["enrichments"] = []any{randDoc(rng, depth+2), "x"}
		case 1:
			th["enrichments"] = []any{}
		case 2:
			th["enrichments"] = "not a list"
		}
		m["threat"] = th
		if rng.IntN(5) == 0 {
			m["threat"] = "not an object"
		}
	}
	if depth == 0 && rng.IntN(2) == 0 {
		m["@timestamp"] = randTime(rng).Format(time.RFC3339Nano)
	}
	return m
}

func randValue(rng *rand.Rand, depth int) any {
	switch rng.IntN(8) {
	case 0:
		return json.Number(fmt.Sprint(rng.IntN(1000) - 500))
	case 1:
		return json.Number("1e400")
	case 2:
		return rng.IntN(2) == 0
	case 3:
		return nil
	case 4:
		if depth < 3 {
			return []any{randValue(rng, depth+1), randString(rng)}
		}
	case 5:
		if depth < 3 {
			return randDoc(rng, depth+1)
		}
	}
	return randString(rng)
}

var stringParts = []string{"vm1", "10.1.0.1", "<script>", "a&b", `q"uote`, `back\slash`, "tab\t", "\x01", "é", "\u2028", "\u2029",
	"\xff\xfe", "🙂", "", " ", "fe80::1", "00:16:3e:aa:bb:cc", "halted; destroyed"}

func randString(rng *rand.Rand) string {
	var b strings.Builder
	for n := rng.IntN(4); n > 0; n-- {
		b.WriteString(stringParts[rng.IntN(len(stringParts))])
	}
	return b.String()
}

func randTime(rng *rand.Rand) time.Time {
	if rng.IntN(6) == 0 {
		return time.Time{}
	}
	return time.Unix(1700000000+rng.Int64N(1e8), rng.Int64N(1e9)).In(time.FixedZone("x", 3600*(rng.IntN(5)-2)))
}

var scores = []float64{0, 1, 0.5, 0.95, -0.25, 1e-7, 1.5e-9, 1e21, 3e22, 123456789.125, 1e20, math.SmallestNonzeroFloat64, math.MaxFloat64}

func randVM(rng *rand.Rand) *plugins.VM {
	return &plugins.VM{UUID: randString(rng), PoolUUID: randString(rng), Name: randString(rng), ParentUUID: randString(rng),
		ParentVia: randString(rng), Kind: randString(rng), PowerState: randString(rng), HostUUID: randString(rng),
		FirstSeen: randTime(rng), LastSeen: randTime(rng), Destroyed: randTime(rng)}
}

var matchFields = []string{"cloud.instance.id", "host.name", "host.ip", "source.ip", "destination.ip", "host.mac", "other"}

func randOutput(rng *rand.Rand) *Output {
	o := &Output{Matched: rng.IntN(2) == 0, AlertID: randString(rng), EnrichedAt: randString(rng), vmByUUID: map[string]*plugins.VM{}}
	for n := rng.IntN(3); n > 0; n-- {
		o.VMs = append(o.VMs, MatchedVM{UUID: randString(rng), Name: randString(rng), Field: randString(rng), Value: randString(rng), PowerState: randString(rng)})
	}
	for n := rng.IntN(3); n > 0; n-- {
		m := plugins.AlertVM{UUID: randString(rng), Field: matchFields[rng.IntN(len(matchFields))], Value: randString(rng)}
		if rng.IntN(2) == 0 {
			m.Value = []string{"10.0.0.7", "fe80::1", "00:16:3e:aa:bb:cc"}[rng.IntN(3)]
		}
		o.matches = append(o.matches, m)
		if rng.IntN(2) == 0 {
			o.vmByUUID[m.UUID] = &plugins.VM{UUID: m.UUID, Name: randString(rng)}
		}
	}
	if rng.IntN(2) == 0 {
		o.CommonAncestor = randVM(rng)
	}
	switch rng.IntN(4) {
	case 0: // nil: null
	case 1:
		o.Suspects = []plugins.Suspect{}
	default:
		for n := 1 + rng.IntN(4); n > 0; n-- {
			o.Suspects = append(o.Suspects, plugins.Suspect{VMUUID: randString(rng), VMName: randString(rng), Score: scores[rng.IntN(len(scores))],
				Reason: randString(rng), PowerState: randString(rng), Destroyed: rng.IntN(2) == 0, Detector: randString(rng)})
		}
	}
	for n := rng.IntN(3); n > 0; n-- {
		f := plugins.Finding{Detector: randString(rng), Kind: randString(rng), VMUUID: randString(rng), VMName: randString(rng),
			Severity: rng.IntN(21) - 5, Summary: randString(rng), Time: randTime(rng), RecordID: randString(rng)}
		if rng.IntN(2) == 0 {
			f.Details = map[string]string{}
			for k := rng.IntN(4); k > 0; k-- {
				f.Details[randString(rng)] = randString(rng)
			}
		}
		o.Findings = append(o.Findings, f)
	}
	for n := rng.IntN(3); n > 0; n-- {
		o.Detectors = append(o.Detectors, DetectorOutcome{Name: randString(rng), Status: randString(rng), Error: randString(rng), Reason: randString(rng)})
	}
	for n := rng.IntN(3); n > 0; n-- {
		o.Notes = append(o.Notes, randString(rng))
	}
	return o
}

// marshalDoc writes what json.Marshal writes, and fails where it fails,
// for random documents, for the integers it writes itself (a CEF alert's
// severity) and for the values only encoding/json handles.
func TestMarshalDocLikeMarshal(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for i := 0; i < 3000; i++ {
		checkMarshalDoc(t, randDoc(rng, 0))
	}
	for _, n := range []string{"", "0", "-0", "12", "-1.5e+10", "1E-7", "01", "1.", "-", "1e", "+1", " 1", "1 ", "0x1", "NaN", ".5", "1.5.2", "--1", "1e+"} {
		checkMarshalDoc(t, map[string]any{"n": json.Number(n)})
	}
	for _, v := range []any{1.5, 7, -7, int64(math.MinInt64), math.MaxInt, math.NaN(), map[string]string{"a": "<b>"}, []string{"x"}, map[string]any(nil), []any(nil),
		[]any{json.Number("bad")}, map[string]any{"deep": []any{map[string]any{"x": json.Number("1"), "y": 2.5}}}} {
		checkMarshalDoc(t, map[string]any{"v": v, "w": "<&>"})
	}
}

func checkMarshalDoc(t *testing.T, doc map[string]any) {
	t.Helper()
	want, werr := json.Marshal(doc)
	got, gerr := marshalDoc(doc)
	if (werr == nil) != (gerr == nil) || !bytes.Equal(got, want) {
		t.Fatalf("%#v:\n got %s (%v)\nwant %s (%v)", doc, got, gerr, want, werr)
	}
}

// FuzzEncodeDoc: for any alert ParseJSON accepts and any output, encodeDoc
// writes what encoding/json writes, and so does marshalDoc for the alert's
// document.
func FuzzEncodeDoc(f *testing.F) {
	f.Add([]byte(`{"@timestamp":"2024-03-01T09:11:00Z","host":{"ip":["10.1.0.1"]},"host.name":"vm1"}`), uint64(1))
	f.Add([]byte(`{"threat":{"enrichments":[{"a":1}],"framework":"MITRE ATT&CK"},"vmlineage":1,"z":"<>"}`), uint64(2))
	f.Add([]byte(`{"thr\u00e9at":{},"threat":"x","\u2028":null}`), uint64(3))
	f.Fuzz(func(t *testing.T, b []byte, seed uint64) {
		a, err := ParseJSON(b, time.Unix(0, 0))
		if err != nil {
			return
		}
		checkMarshalDoc(t, a.Doc)
		rng := rand.New(rand.NewPCG(seed, seed>>7))
		checkEncodeDoc(t, &Enricher{}, a, randOutput(rng), "fuzz")
	})
}

// A CEF alert's document (its severity an int) is written by marshalDoc
// itself: through encoding/json it was a tenth of the host's allocations
// in BenchmarkEnrich1MVMs.
func TestCEFDocWithoutReflection(t *testing.T) {
	a, err := ParseCEF(`CEF:0|Security|IDS|1.0|100|beacon|5|rt=1709284260000 src=10.1.0.11 cs1Label=cloud.instance.id cs1=abc msg=a\=b`, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := appendDocValue(nil, a.Doc); !ok {
		t.Fatalf("document %#v goes through encoding/json", a.Doc)
	}
	checkMarshalDoc(t, a.Doc)
}

// BenchmarkMarshalDocCEF is Start's encoding of a CEF alert's document.
func BenchmarkMarshalDocCEF(b *testing.B) {
	a, err := ParseCEF(`CEF:0|vmlineage|bench|1.0|100|ET MALWARE beacon|5|rt=1709284260000 src=10.1.0.11 externalId=bench-1-1`, time.Unix(0, 0))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := marshalDoc(a.Doc); err != nil {
			b.Fatal(err)
		}
	}
}
