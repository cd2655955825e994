package alerts

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vmlineage/vmlineage/agent/alerts/alertstest"
)

// A CEF alert dated only by its syslog header (or its receipt) has an ID
// that includes that time: the same sensor line a day later is another
// alert, while the same message sent again keeps its ID. An alert that
// carries its own time keeps the digest of its line.
func TestCEFIDIncludesTheTimeItIsDatedBy(t *testing.T) {
	now := time.Date(2024, 3, 5, 0, 0, 0, 0, time.UTC)
	line := "CEF:0|ClamAV|ClamAV|1|v|Virus found|9|dvchost=vm1 fname=/tmp/eicar"
	parse := func(hdr string, now time.Time) *Alert {
		t.Helper()
		a, err := ParseSyslogCEF([]byte(hdr+line), now)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	a1 := parse("<134>1 2024-03-01T09:20:00Z av1 av - - - ", now)
	a1again := parse("<134>1 2024-03-01T09:20:00Z av1 av - - - ", now.Add(time.Hour))
	a2 := parse("<134>1 2024-03-02T09:20:00Z av1 av - - - ", now)
	if a1.ID == a2.ID || a1.ID != a1again.ID {
		t.Errorf("header-dated: a day apart %s / %s, re-sent %s", a1.ID, a2.ID, a1again.ID)
	}
	if r1, r2 := parse("", now), parse("", now.Add(24*time.Hour)); r1.ID == r2.ID {
		t.Errorf("receipt-dated alerts a day apart share the ID %s", r1.ID)
	}
	// A sensor's retry of a receipt-dated line, seconds later in the same
	// window, is a re-send (over syslog without a header time and over
	// HTTP, which reads CEF through ParseCEF).
	if r1, r2 := parse("", now.Add(time.Second)), parse("", now.Add(40*time.Second)); r1.ID != r2.ID {
		t.Errorf("a retry 39 s later got another ID: %s / %s", r1.ID, r2.ID)
	}
	if c1, err := ParseCEF(line, now.Add(time.Second)); err != nil {
		t.Fatal(err)
	} else if c2, _ := ParseCEF(line, now.Add(2*time.Minute)); c1.ID != c2.ID {
		t.Errorf("ParseCEF: a retry 2 min later got another ID: %s / %s", c1.ID, c2.ID)
	}
	own := line + " rt=1709284800000"
	for _, hdr := range []string{"", "<134>1 2024-03-01T09:20:00Z av1 av - - - ", "<134>1 2024-03-02T09:20:00Z av1 av - - - "} {
		a, err := ParseSyslogCEF([]byte(hdr+own), now)
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.Sum256([]byte(own))
		if want := "sha256:" + hex.EncodeToString(h[:16]); a.ID != want {
			t.Errorf("an alert with its own rt: ID %s, want %s (unchanged)", a.ID, want)
		}
	}
	if a, _ := ParseCEF(line+" externalId=x7", now); a.ID != "x7" {
		t.Errorf("externalId: ID %s", a.ID)
	}
}

// End to end: the second header-dated alert counts for its VM at its own
// time.
func TestCEFHeaderDatedAlertsCountedAtTheirTimes(t *testing.T) {
	svc := threatModelService(t)
	e := NewEnricher(svc, nil, nil)
	line := "CEF:0|ClamAV|ClamAV|1|v|Virus found|9|dvchost=vm1 fname=/tmp/eicar"
	t1, t2 := alertstest.At(600), alertstest.At(3600)
	for _, at := range []time.Time{t1, t2} {
		a, err := ParseSyslogCEF([]byte(fmt.Sprintf("<134>1 %s av1 av - - - %s", at.Format(time.RFC3339), line)), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		js, err := e.Enrich(context.Background(), a)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(js), `"matched":true`) {
			t.Fatalf("not matched: %s", js)
		}
	}
	vm1 := alertstest.VMUUID["vm1"]
	av, err := svc.AlertedVMs(context.Background(), []string{vm1}, t2.Add(-time.Minute), t2.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if len(av) != 1 || av[0].Count != 1 {
		t.Errorf("the alert of %s is not counted for vm1 in its own window: %+v", t2, av)
	}
}

// A custom label followed by two spaces still names its field: the alert
// is matched by its VM uuid.
func TestCEFCustomLabelWithExtraSpace(t *testing.T) {
	a, err := ParseCEF("CEF:0|V|P|1|s|n|3|cs1Label=vm_uuid  cs1=11111111-0000-4000-8000-000000000001", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := lookupString(a.Doc, "cloud.instance.id"); v != "11111111-0000-4000-8000-000000000001" {
		t.Errorf("cloud.instance.id = %q", v)
	}
}

// A header-only CEF line without the last '|' is an alert.
func TestCEFHeaderOnlyWithoutLastPipe(t *testing.T) {
	a, err := ParseCEF("CEF:0|Vendor|Product|1.0|100|Port scan|5", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if a.Doc["event"].(map[string]any)["severity"] != 5 {
		t.Errorf("event = %v", a.Doc["event"])
	}
}
