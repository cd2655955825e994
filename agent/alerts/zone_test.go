package alerts

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

func mustZone(t *testing.T, name string) *time.Location {
	t.Helper()
	z, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return z
}

// TestZonelessTimesTakeTheSensorsZone: a sensor writing local time without
// a zone (an RFC 3164 header, a CEF date without one) is read in the zone
// configured for it (alerts.timezone), summer time included; a time with a
// zone or in epoch milliseconds is not moved.
func TestZonelessTimesTakeTheSensorsZone(t *testing.T) {
	berlin, ny := mustZone(t, "Europe/Berlin"), mustZone(t, "America/New_York")
	now := time.Date(2024, 12, 4, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		line string
		loc  *time.Location
		want time.Time
	}{
		{"CEF:0|V|P|1|s|n|3|rt=Mar 01 2024 09:11:00 dvchost=vm1", berlin, time.Date(2024, 3, 1, 8, 11, 0, 0, time.UTC)},
		{"CEF:0|V|P|1|s|n|3|rt=Jul 01 2024 09:11:00 dvchost=vm1", berlin, time.Date(2024, 7, 1, 7, 11, 0, 0, time.UTC)},
		{"CEF:0|V|P|1|s|n|3|end=Dec 04 09:11:00 dvchost=vm1", ny, time.Date(2024, 12, 4, 14, 11, 0, 0, time.UTC)},
		{"CEF:0|V|P|1|s|n|3|rt=Mar 01 2024 09:11:00 UTC dvchost=vm1", berlin, time.Date(2024, 3, 1, 9, 11, 0, 0, time.UTC)},
		{"CEF:0|V|P|1|s|n|3|rt=1709284260000 dvchost=vm1", berlin, time.Date(2024, 3, 1, 9, 11, 0, 0, time.UTC)},
		{"CEF:0|V|P|1|s|n|3|rt=Mar 01 2024 09:11:00 dvchost=vm1", nil, time.Date(2024, 3, 1, 9, 11, 0, 0, time.UTC)},
	} {
		a, err := ParseCEFIn(c.line, now, c.loc)
		if err != nil || !a.Time.Equal(c.want) {
			t.Errorf("%s in %v: %v, %v; want %s", c.line, c.loc, a.Time, err, c.want)
		}
	}
	a, err := ParseSyslogCEFIn([]byte("<13>Dec  4 10:00:00 sensor1 CEF:0|V|P|1|s|n|3|dvchost=vm1"), now, ny)
	if err != nil || !a.Time.Equal(time.Date(2024, 12, 4, 15, 0, 0, 0, time.UTC)) {
		t.Fatalf("RFC 3164 header in New York: %v, %v", a.Time, err)
	}
	if len(a.Notes) != 1 || !strings.Contains(a.Notes[0], "taken as America/New_York") {
		t.Errorf("notes %q", a.Notes)
	}
	// The default stays UTC.
	if a, _ := ParseSyslogCEF([]byte("<13>Dec  4 10:00:00 sensor1 CEF:0|V|P|1|s|n|3|dvchost=vm1"), now); !a.Time.Equal(time.Date(2024, 12, 4, 10, 0, 0, 0, time.UTC)) || !strings.Contains(a.Notes[0], "taken as UTC") {
		t.Errorf("default zone: %v %q", a.Time, a.Notes)
	}
}

// The listener reads what comes over its socket in its Zone.
func TestSyslogListenerReadsInItsZone(t *testing.T) {
	var mu sync.Mutex
	var got []time.Time
	l := &SyslogListener{Zone: mustZone(t, "Asia/Tokyo"), Handle: func(_ context.Context, a *Alert) ([]byte, error) {
		mu.Lock()
		got = append(got, a.Time)
		mu.Unlock()
		return nil, nil
	}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go l.ServeUDP(ctx, pc)
	u, err := net.Dial("udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	u.Write([]byte("<134>1 - av1 av - - - CEF:0|Acme|AV|1|v|Virus|9|dvchost=vm1 rt=Mar 01 2024 09:00:00"))
	waitUntil(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 1 })
	if want := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC); !got[0].Equal(want) {
		t.Fatalf("alert time %s, want %s (09:00 in Tokyo)", got[0], want)
	}
}
