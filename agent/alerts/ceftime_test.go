package alerts

import (
	"strings"
	"testing"
	"time"
)

// The CEF standard's date forms for rt/end/start, with and without year,
// fraction and zone; a year-less time takes the year nearest the receipt.
func TestParseCEFTimeForms(t *testing.T) {
	now := time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)
	utc := func(y int, mo time.Month, d, h, mi, s, ms int) time.Time {
		return time.Date(y, mo, d, h, mi, s, ms*1e6, time.UTC)
	}
	for in, want := range map[string]time.Time{
		"1709284260000":                  utc(2024, 3, 1, 9, 11, 0, 0),
		"Mar 01 2024 09:11:00":           utc(2024, 3, 1, 9, 11, 0, 0),
		"Mar 1 2024 09:11:00.250":        utc(2024, 3, 1, 9, 11, 0, 250),
		"Mar 01 2024 09:11:00 UTC":       utc(2024, 3, 1, 9, 11, 0, 0),
		"Mar 01 2024 09:11:00.123 PST":   utc(2024, 3, 1, 17, 11, 0, 123),
		"Mar 01 2024 09:11:00 KST":       utc(2024, 3, 1, 0, 11, 0, 0),
		"Mar 01 2024 09:11:00 CET":       utc(2024, 3, 1, 8, 11, 0, 0),
		"Mar 01 2024 09:11:00 +0900":     utc(2024, 3, 1, 0, 11, 0, 0),
		"Mar 01 2024 09:11:00 -07:00":    utc(2024, 3, 1, 16, 11, 0, 0),
		"Mar 01 2024 09:11:00 GMT+09:00": utc(2024, 3, 1, 0, 11, 0, 0),
		// year-less: the year nearest the receipt, at most a day ahead
		"Mar 01 09:11:00":         utc(2024, 3, 1, 9, 11, 0, 0),
		"Mar 01 09:11:00.123 UTC": utc(2024, 3, 1, 9, 11, 0, 123),
		"Mar 01 09:11:00 UTC":     utc(2024, 3, 1, 9, 11, 0, 0),
		"Mar 02 09:11:00 JST":     utc(2024, 3, 2, 0, 11, 0, 0), // 12 h ahead: a fast clock
		"Mar 03 09:11:00":         utc(2023, 3, 3, 9, 11, 0, 0), // 2 days ahead: last year's
		"Dec 31 23:59:00":         utc(2023, 12, 31, 23, 59, 0, 0),
		"Feb 29 10:00:00":         utc(2024, 2, 29, 10, 0, 0, 0),
	} {
		got, err := parseCEFTime(in, now, nil)
		if err != nil || !got.Equal(want) {
			t.Errorf("%q: got %s, %v; want %s", in, got, err, want)
		}
	}
	// The new year: an alert stamped Dec 31 received on Jan 1 is of the
	// year before, not a year ahead.
	if got, _ := parseCEFTime("Dec 31 23:59:00", time.Date(2025, 1, 1, 0, 5, 0, 0, time.UTC), nil); got.Year() != 2024 {
		t.Errorf("Dec 31 received on Jan 1 2025: %s", got)
	}
	for in, want := range map[string]string{
		"Mar 01 2024 09:11:00 CST":  `"CST" is ambiguous`,
		"Mar 01 09:11:00 IST":       `"IST" is ambiguous`,
		"Mar 01 2024 09:11:00 XYZT": `unknown time zone "XYZT"`,
		"Mar 01 2024 09:11:00 +25":  `unknown time zone "+25"`,
		"yesterday":                 "want epoch milliseconds",
		"Mar 01 2024":               "want epoch milliseconds",
		"Feb 29 10:00:00 UTC":       "in no year near",
	} {
		n := now
		if strings.HasPrefix(in, "Feb 29") {
			n = time.Date(2022, 3, 1, 0, 0, 0, 0, time.UTC) // 2021-2023: no Feb 29
		}
		if _, err := parseCEFTime(in, n, nil); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error with %q", in, err, want)
		}
	}
}

// A zone the alert cannot be placed by is an error naming the field.
func TestCEFUnknownZoneNamesTheField(t *testing.T) {
	_, err := ParseCEF("CEF:0|V|P|1|s|n|3|end=Mar 01 2024 09:11:00 CST dvchost=vm1", time.Now())
	if err == nil || !strings.Contains(err.Error(), `end="Mar 01 2024 09:11:00 CST"`) || !strings.Contains(err.Error(), "ambiguous") {
		t.Errorf("got %v", err)
	}
}

// Through ParseCEF: the standard's year-less forms are read, and a zone
// abbreviation moves the time (PST is not UTC).
func TestCEFYearlessAndZonedRt(t *testing.T) {
	now := time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)
	for rt, want := range map[string]time.Time{
		"Mar 01 09:11:00":          time.Date(2024, 3, 1, 9, 11, 0, 0, time.UTC),
		"Mar 01 09:11:00.123 UTC":  time.Date(2024, 3, 1, 9, 11, 0, 123e6, time.UTC),
		"Mar 01 2024 09:11:00 PST": time.Date(2024, 3, 1, 17, 11, 0, 0, time.UTC),
	} {
		a, err := ParseCEF("CEF:0|V|P|1|s|n|3|rt="+rt+" dvchost=vm1", now)
		if err != nil || !a.Time.Equal(want) {
			t.Errorf("rt=%s: %v, %v; want %s", rt, a, err, want)
			continue
		}
	}
}

// An RFC 3164 header time has no year: it takes the year nearest the
// receipt (not the receiver's calendar year), and a note says the
// zone-less stamp was taken as UTC.
func TestRFC3164HeaderTimeYear(t *testing.T) {
	line := " av1 CEF:0|Acme|AV|1|v|Virus|9|dvchost=vm1"
	for _, c := range []struct {
		hdr       string
		now, want time.Time
	}{
		{"<134>Dec 31 23:59:00", time.Date(2025, 1, 1, 0, 5, 0, 0, time.UTC), time.Date(2024, 12, 31, 23, 59, 0, 0, time.UTC)},
		{"<134>Mar  1 09:11:00", time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC), time.Date(2024, 3, 1, 9, 11, 0, 0, time.UTC)},
	} {
		a, err := ParseSyslogCEF([]byte(c.hdr+line), c.now)
		if err != nil {
			t.Fatal(err)
		}
		if !a.Time.Equal(c.want) || len(a.Notes) != 1 || !strings.Contains(a.Notes[0], "RFC 3164") {
			t.Errorf("%s received %s: %s %q, want %s and a note", c.hdr, c.now, a.Time, a.Notes, c.want)
		}
	}
	// An RFC 3339 stamp in an RFC 3164 header carries its year and zone.
	a, err := ParseSyslogCEF([]byte("<134>2024-03-01T09:11:00+09:00"+line), time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	if err != nil || !a.Time.Equal(time.Date(2024, 3, 1, 0, 11, 0, 0, time.UTC)) || len(a.Notes) != 0 {
		t.Errorf("RFC 3339 stamp: %v %v", a, err)
	}
}
