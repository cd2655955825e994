package xensource

import "time"

// YearInferer gives year-less syslog stamps a full time. The traditional
// rsyslog format has neither year nor zone (reference §2), so it needs a
// reference time that is at or after the lines (the file's mtime for a
// replayed file, now for a live tail) and the host's zone.
//
// The first stamp takes the reference year, or the year before when that
// would put it more than Slack after the reference (a file written across
// New Year and read on 2 January starts in December of the year before).
// Within one stream, time only moves forward: a stamp more than Wrap
// earlier than the previous one (December → January) starts the next year.
// Smaller steps back are clock corrections and keep the year.
type YearInferer struct {
	Ref   time.Time      // reference: file mtime or now
	Loc   *time.Location // zone of the stamps; nil means UTC
	Slack time.Duration  // tolerated lead over Ref (default 24h: clock skew, zones)
	Wrap  time.Duration  // backwards jump that means a new year (default 60 days)

	year int
	last time.Time

	// The previous stamp and its result: most lines share their second.
	prevSt Stamp
	prevT  time.Time
	prevOK bool
	zone   *time.Location // last FixedZone built, by offset
	zoneAt int
}

// NewYearInferer returns an inferer for lines written before ref in loc.
func NewYearInferer(ref time.Time, loc *time.Location) *YearInferer {
	return &YearInferer{Ref: ref, Loc: loc}
}

// Infer returns the full time of st. Stamps that carry their year and zone
// (RFC 3339) are returned as they are and also anchor later year-less ones.
func (y *YearInferer) Infer(st Stamp) time.Time {
	if y.prevOK && st == y.prevSt {
		return y.prevT
	}
	t := y.infer(st)
	y.prevSt, y.prevT, y.prevOK = st, t, true
	return t
}

func (y *YearInferer) infer(st Stamp) time.Time {
	loc := y.Loc
	if loc == nil {
		loc = time.UTC
	}
	if st.Year != 0 {
		if st.HasZone {
			if y.zone == nil || y.zoneAt != st.Offset {
				y.zone, y.zoneAt = time.FixedZone("", st.Offset), st.Offset
			}
			loc = y.zone
		}
		t := time.Date(st.Year, st.Month, st.Day, st.Hour, st.Minute, st.Second, st.Nanos, loc)
		y.year, y.last = st.Year, t
		return t
	}
	slack, wrap := y.Slack, y.Wrap
	if slack == 0 {
		slack = 24 * time.Hour
	}
	if wrap == 0 {
		wrap = 60 * 24 * time.Hour
	}
	if y.year == 0 {
		ref := y.Ref
		if ref.IsZero() {
			ref = time.Now()
		}
		ref = ref.In(loc)
		y.year = ref.Year()
		if t := st.at(y.year, loc); t.Sub(ref) > slack {
			y.year--
		}
	}
	t := st.at(y.year, loc)
	if !y.last.IsZero() && y.last.Sub(t) > wrap {
		y.year++
		t = st.at(y.year, loc)
	}
	y.last = t
	return t
}

func (st Stamp) at(year int, loc *time.Location) time.Time {
	// Feb 29 of a non-leap year would roll over to Mar 1 and break the
	// ordering; clamp it to Feb 28 instead.
	if st.Month == time.February && st.Day == 29 && !leap(year) {
		return time.Date(year, time.February, 28, st.Hour, st.Minute, st.Second, st.Nanos, loc)
	}
	return time.Date(year, st.Month, st.Day, st.Hour, st.Minute, st.Second, st.Nanos, loc)
}

func leap(y int) bool { return y%4 == 0 && (y%100 != 0 || y%400 == 0) }
