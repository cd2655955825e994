package alerts

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// parseCEFTime reads the date forms the CEF standard allows for rt, end
// and start: milliseconds since the epoch, or "MMM dd[ yyyy] HH:mm:ss[.SSS]
// [zone]". Without a zone the time is taken in loc (alerts.timezone, UTC
// by default: the sensors' zone when they write local time). Without a year it takes
// the year that puts it nearest to now (the receipt time), but not more than
// a day after now (a sender's clock may run a little ahead; an alert from
// the next year is none). A zone is a numeric offset (+0900, -07:00,
// GMT+9) or an abbreviation of cefZones; an ambiguous or unknown
// abbreviation is refused, never read as UTC.
func parseCEFTime(s string, now time.Time, loc *time.Location) (time.Time, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 || n > 1<<45 {
			return time.Time{}, errors.New("epoch milliseconds out of range")
		}
		return time.UnixMilli(n).UTC(), nil
	}
	f := strings.Fields(s)
	if loc == nil {
		loc = time.UTC
	}
	if len(f) == 4 && !strings.Contains(f[3], ":") || len(f) == 5 {
		// the last field is the zone (a year-less form has no 4th field
		// but the zone; a clock always holds ':')
		z, err := cefZone(f[len(f)-1])
		if err != nil {
			return time.Time{}, err
		}
		loc, f = z, f[:len(f)-1]
	}
	const want = "want epoch milliseconds or MMM dd [yyyy] HH:mm:ss[.SSS] [zone]"
	switch len(f) {
	case 4:
		// Parse accepts a fractional second after the seconds.
		t, err := time.ParseInLocation("Jan 2 2006 15:04:05", strings.Join(f, " "), loc)
		if err != nil {
			return time.Time{}, errors.New(want)
		}
		return t.UTC(), nil
	case 3:
		t, err := time.ParseInLocation("Jan 2 15:04:05", strings.Join(f, " "), loc)
		if err != nil {
			return time.Time{}, errors.New(want)
		}
		return nearestYear(t, now)
	}
	return time.Time{}, errors.New(want)
}

// nearestYear dates a year-less time t (its year is ignored) in the year
// that puts it nearest to now, and not more than a day after now.
func nearestYear(t, now time.Time) (time.Time, error) {
	var best time.Time
	for y := now.Year() - 1; y <= now.Year()+1; y++ {
		c := time.Date(y, t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), t.Location())
		if c.Day() != t.Day() || c.After(now.Add(24*time.Hour)) {
			continue // Feb 29 of a common year, or in the future
		}
		if best.IsZero() || c.Sub(now).Abs() < best.Sub(now).Abs() {
			best = c
		}
	}
	if best.IsZero() {
		return time.Time{}, fmt.Errorf("%s %d is in no year near the receipt time %s", t.Month(), t.Day(), timeString(now))
	}
	return best.UTC(), nil
}

// cefZones are the zone abbreviations read in CEF times: the common ones
// that name one offset. Go's time.Parse takes an abbreviation the local
// zone does not define for UTC+0, which put alerts hours off unseen.
var cefZones = map[string]int{ // offset in minutes east of UTC
	"UTC": 0, "UT": 0, "GMT": 0, "Z": 0, "WET": 0, "WEST": 60,
	"CET": 60, "CEST": 120, "MET": 60, "MEST": 120, "EET": 120, "EEST": 180, "MSK": 180,
	"EST": -300, "EDT": -240, "MST": -420, "MDT": -360, "PST": -480, "PDT": -420,
	"AKST": -540, "AKDT": -480, "HST": -600, "NST": -210, "NDT": -150,
	"KST": 540, "JST": 540, "HKT": 480, "SGT": 480, "AWST": 480, "WIB": 420,
	"ACST": 570, "ACDT": 630, "AEST": 600, "AEDT": 660, "NZST": 720, "NZDT": 780,
}

// cefAmbiguousZones name several offsets: refused with the candidates.
var cefAmbiguousZones = map[string]string{
	"CST": "US Central -06:00, China +08:00 or Cuba -05:00",
	"CDT": "US Central -05:00 or Cuba -04:00",
	"IST": "India +05:30, Israel +02:00 or Ireland +01:00",
	"BST": "British Summer Time +01:00 or Bangladesh +06:00",
	"AST": "Atlantic -04:00 or Arabia +03:00",
	"ADT": "Atlantic -03:00 or Arabia +04:00",
	"SST": "Samoa -11:00 or Singapore +08:00",
	"GST": "Gulf +04:00 or South Georgia -02:00",
}

// cefZone reads the zone of a CEF time.
func cefZone(z string) (*time.Location, error) {
	u := strings.ToUpper(z)
	if min, ok := cefZones[u]; ok {
		return time.FixedZone(u, min*60), nil
	}
	if c, ok := cefAmbiguousZones[u]; ok {
		return nil, fmt.Errorf("time zone abbreviation %q is ambiguous (%s): send a numeric offset such as +0900", z, c)
	}
	num := z
	for _, p := range []string{"GMT", "UTC"} {
		if rest, ok := strings.CutPrefix(u, p); ok && rest != "" {
			num = rest
		}
	}
	if sec, ok := parseOffset(num); ok {
		return time.FixedZone(z, sec), nil
	}
	return nil, fmt.Errorf("unknown time zone %q: send a numeric offset such as +0900 or one of UTC, GMT, CET, EST, PST, KST, JST, …", z)
}

// parseOffset reads +hh, +hhmm or +hh:mm (or -).
func parseOffset(s string) (int, bool) {
	if len(s) < 2 || (s[0] != '+' && s[0] != '-') {
		return 0, false
	}
	d := strings.ReplaceAll(s[1:], ":", "")
	n, err := strconv.Atoi(d)
	if err != nil || n < 0 || d[0] == '+' || d[0] == '-' {
		return 0, false
	}
	h, m := n, 0
	switch len(d) {
	case 1, 2:
	case 4:
		h, m = n/100, n%100
	default:
		return 0, false
	}
	if h > 14 || m > 59 {
		return 0, false
	}
	sec := (h*60 + m) * 60
	if s[0] == '-' {
		sec = -sec
	}
	return sec, true
}
