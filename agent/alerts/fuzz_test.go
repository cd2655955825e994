package alerts

import (
	"encoding/json"
	"testing"
	"time"
)

// FuzzParseSyslogCEF: any input either fails with an error or yields an
// alert whose document encodes as JSON and carries the CEF line.
func FuzzParseSyslogCEF(f *testing.F) {
	for _, s := range []string{
		`<134>1 2024-03-01T09:11:00.000Z ids1 snort - - - CEF:0|Snort|IDS|2.9|1:2001|ET TROJAN x|8|src=10.1.0.12 dst=198.51.100.7 rt=1709284260000 msg=a\=b c\\d\nline2`,
		`<134>Mar  1 09:11:00 av1 CEF:0|Acme\|AV|Scan|1|virus|Virus found|9|dvchost=vm1 dvcmac=02:16:3E:00:00:01 cs1Label=cloud.instance.id cs1=11111111-0000-4000-8000-000000000001`,
		`CEF:0|V|P|1|s|n|3|rt=Mar 01 2024 09:11:00 dvc=10.1.0.13 externalId=abc`,
		`CEF:1|V|P|1|s|n|Very-High|src=::1 end=1 start=x`,
		"\xef\xbb\xbfCEF:0|a|b|c|d|e|f|",
		`<1>1 - - - - - - CEF:0|||||||`,
		`<134>Feb 29 23:59:00 av1 CEF:0|V|P|1|s|n|5`,
		`CEF:0|V|P|1|s|n|3|rt=Mar 01 09:11:00.123 PST end=Feb 29 2024 00:00:00 GMT+09:30 cs1Label=vm_uuid  cs1=x`,
	} {
		f.Add([]byte(s))
	}
	now := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ParseSyslogCEF(b, now)
		if err != nil {
			return
		}
		if a.ID == "" || a.Time.IsZero() {
			t.Fatalf("alert without id or time: %+v", a)
		}
		if _, err := json.Marshal(a.Doc); err != nil {
			t.Fatalf("document does not encode: %v", err)
		}
		if s, ok := lookupString(a.Doc, "event.original"); !ok || len(s) < 4 || s[:4] != "CEF:" {
			t.Fatalf("event.original %q", s)
		}
	})
}

// FuzzParseJSON: an accepted alert re-encodes.
func FuzzParseJSON(f *testing.F) {
	f.Add([]byte(`{"@timestamp":"2024-03-01T09:11:00Z","host":{"ip":["10.1.0.1"]},"host.name":"vm1"}`))
	f.Add([]byte(`{"event":{"id":"x"},"n":1e400}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ParseJSON(b, time.Unix(0, 0))
		if err != nil {
			return
		}
		if _, err := json.Marshal(a.Doc); err != nil {
			t.Fatalf("document does not encode: %v", err)
		}
		lookupStrings(a.Doc, "host.ip")
		lookupStrings(a.Doc, "cloud.instance.id")
	})
}
