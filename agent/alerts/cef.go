package alerts

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	syslog "github.com/leodido/go-syslog/v4"
	"github.com/leodido/go-syslog/v4/rfc3164"
	"github.com/leodido/go-syslog/v4/rfc5424"

	"github.com/vmlineage/vmlineage/formats/cef"
)

// ParseSyslogCEF reads one syslog message carrying a CEF alert: an RFC 5424
// or RFC 3164 header (or none) and then "CEF:…". The CEF part is found by
// its "CEF:" prefix rather than by the syslog parser's idea of where the
// message starts, because an RFC 3164 line without a tag makes "CEF" the
// tag (see the reference, integrations.md §1.6). now stands in for a
// missing time. Times without a zone are taken as UTC; ParseSyslogCEFIn
// takes them in another zone.
func ParseSyslogCEF(msg []byte, now time.Time) (*Alert, error) {
	return ParseSyslogCEFIn(msg, now, time.UTC)
}

// ParseSyslogCEFIn is ParseSyslogCEF with the zone of the times that carry
// none (an RFC 3164 header's, a CEF date without a zone): the sensors'
// zone, alerts.timezone in the configuration.
func ParseSyslogCEFIn(msg []byte, now time.Time, loc *time.Location) (*Alert, error) {
	if loc == nil {
		loc = time.UTC
	}
	if len(msg) > MaxAlertBytes {
		return nil, ErrTooLarge
	}
	msg = bytes.TrimRight(msg, "\r\n\x00")
	i := bytes.Index(msg, []byte("CEF:"))
	if i < 0 {
		return nil, fmt.Errorf("no CEF payload (no \"CEF:\") in %q", firstBytes(msg, 60))
	}
	var hostname string
	var hdrTime time.Time
	bsd := false
	if i > 0 {
		hostname, hdrTime, bsd = syslogHeader(msg, now, loc)
	}
	a, err := ParseCEFIn(string(msg[i:]), now, loc)
	if err != nil {
		return nil, err
	}
	if hostname != "" {
		ensureMap(ensureMap(a.Doc, "log"), "syslog")["hostname"] = hostname
	}
	if _, ok := a.Doc["@timestamp"]; !ok && !hdrTime.IsZero() {
		a.Time = hdrTime.UTC()
		a.Doc["@timestamp"] = timeString(a.Time)
		a.Notes = nil
		if bsd {
			a.Notes = append(a.Notes, "time from the RFC 3164 syslog header, which has no zone and no year: taken as "+loc.String()+", in the year nearest the receipt")
		}
		if _, ok := lookupString(a.Doc, "event.id"); !ok {
			a.ID = datedID(msg[i:], a.Time)
		}
	}
	return a, nil
}

var (
	p5424 = rfc5424.NewParser(rfc5424.WithBestEffort())
	p3164 = rfc3164.NewParser(rfc3164.WithBestEffort(), rfc3164.WithYear(rfc3164.CurrentYear{}), rfc3164.WithRFC3339())
)

// syslogHeader takes the sender and time from the header, best effort: a
// header the parsers cannot read only costs those two fields. bsd says the
// time is an RFC 3164 "Mmm dd hh:mm:ss": zone-less (taken in loc) and
// year-less, dated in the year nearest now (go-syslog's CurrentYear is the
// receiver's, a year ahead for an alert of Dec 31 read on Jan 1).
func syslogHeader(msg []byte, now time.Time, loc *time.Location) (string, time.Time, bool) {
	try := func(p syslog.Machine) (string, time.Time, bool) {
		m, err := p.Parse(msg)
		if m == nil || (err != nil && !m.Valid()) {
			return "", time.Time{}, false
		}
		switch x := m.(type) {
		case *rfc5424.SyslogMessage:
			return deref(x.Hostname), derefT(x.Timestamp), x.Timestamp != nil || x.Hostname != nil
		case *rfc3164.SyslogMessage:
			return deref(x.Hostname), derefT(x.Timestamp), x.Timestamp != nil || x.Hostname != nil
		}
		return "", time.Time{}, false
	}
	if h, t, ok := try(p5424); ok {
		return h, t, false
	}
	h, t, _ := try(p3164)
	if j := bytes.IndexByte(msg, '>'); !t.IsZero() && j >= 0 && j+1 < len(msg) && msg[j+1] >= 'A' && msg[j+1] <= 'Z' {
		// go-syslog reads the wall clock as UTC; it is the sender's.
		t = time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), loc)
		if y, err := nearestYear(t, now); err == nil {
			return h, y, true
		}
		return h, time.Time{}, false // Feb 29 of no near year: receipt time
	}
	return h, t, false
}

func deref(s *string) string {
	if s == nil || *s == "-" {
		return ""
	}
	return *s
}

func derefT(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}

// ParseCEF reads a CEF line (from "CEF:") into an alert whose document
// carries the ECS fields vmlineage matches on:
//
//	dvchost → host.name, dvc → host.ip, dvcmac → host.mac (the reporting
//	device: for a host sensor, the VM itself), src/dst → source.ip /
//	destination.ip, smac/dmac → source.mac / destination.mac, custom field
//	labelled "cloud.instance.id" or "vm_uuid" → cloud.instance.id,
//	rt/end/start (epoch ms or "MMM dd [yyyy] HH:mm:ss[.SSS] [zone]", see
//	parseCEFTime) → @timestamp.
//
// Every extension is also kept under cef.extensions, and the line under
// event.original. A date without a zone is taken as UTC (ParseCEFIn: in
// another zone).
func ParseCEF(line string, now time.Time) (*Alert, error) {
	return ParseCEFIn(line, now, time.UTC)
}

// ParseCEFIn is ParseCEF with the zone of the dates that carry none.
func ParseCEFIn(line string, now time.Time, loc *time.Location) (*Alert, error) {
	if len(line) > MaxAlertBytes {
		return nil, ErrTooLarge
	}
	ev, err := cef.Parse(line)
	if err != nil {
		return nil, err
	}
	doc := map[string]any{}
	event := map[string]any{"kind": "alert", "original": line}
	doc["event"] = event
	doc["observer"] = map[string]any{"vendor": ev.DeviceVendor, "product": ev.DeviceProduct, "version": ev.DeviceVersion}
	rule := map[string]any{"id": ev.SignatureID, "name": ev.Name}
	doc["rule"] = rule
	if n, err := strconv.Atoi(strings.TrimSpace(ev.Severity)); err == nil {
		event["severity"] = n
	} else if ev.Severity != "" {
		event["severity_name"] = ev.Severity
	}
	ext := map[string]any{}
	for _, f := range ev.Extensions {
		ext[f.Key] = f.Value
	}
	doc["cef"] = map[string]any{"version": ev.Version, "device_event_class_id": ev.SignatureID, "name": ev.Name,
		"severity": ev.Severity, "extensions": ext}
	get := func(k string) string { v, _ := ev.Get(k); return strings.TrimSpace(v) }
	set := func(obj, key, val string) {
		if val != "" {
			ensureMap(doc, obj)[key] = val
		}
	}
	setList := func(obj, key, val string) {
		if val != "" {
			ensureMap(doc, obj)[key] = []any{val}
		}
	}
	set("host", "name", get("dvchost"))
	setList("host", "ip", get("dvc"))
	setList("host", "mac", get("dvcmac"))
	set("source", "ip", get("src"))
	set("source", "mac", get("smac"))
	set("source", "domain", get("shost"))
	set("destination", "ip", get("dst"))
	set("destination", "mac", get("dmac"))
	set("destination", "domain", get("dhost"))
	if m := get("msg"); m != "" {
		doc["message"] = m
	}
	if v := get("act"); v != "" {
		event["action"] = v
	}
	if v := get("externalId"); v != "" {
		event["id"] = v
	}
	for _, label := range []string{"cloud.instance.id", "vm_uuid", "vmUUID"} {
		if v, ok := ev.Custom(label); ok && v != "" {
			ensureMap(doc, "cloud")["instance"] = map[string]any{"id": strings.TrimSpace(v)}
			break
		}
	}
	for _, k := range []string{"rt", "end", "start"} {
		if v := get(k); v != "" {
			t, err := parseCEFTime(v, now, loc)
			if err != nil {
				return nil, fmt.Errorf("cef: %s=%q: %w", k, v, err)
			}
			doc["@timestamp"] = timeString(t)
			break
		}
	}
	a, err := fromDoc(doc, []byte(line), now)
	if err == nil && doc["@timestamp"] == nil && doc["event"].(map[string]any)["id"] == nil {
		// Dated by its receipt alone: a sensor's retry comes later than
		// the first copy, so the window, not the instant, is the date.
		a.ID = datedID([]byte(line), a.Time.Truncate(resendWindow))
	}
	return a, err
}

// resendWindow: a CEF line dated only by its receipt (no time of its own,
// no syslog header time, no externalId) that comes again within the same
// window of the clock is taken for a re-send of the first (stored and
// counted once); in a later window it is another alert. A retry that
// straddles a window's end is stored twice; without a window every retry
// would be, and without the receipt in the digest the same line a day
// later would be merged with the first and not count in its own window.
const resendWindow = 10 * time.Minute

// datedID is the ID of a CEF alert that carries neither its own time nor
// an externalId: a digest of the line and of the time it is dated by
// (syslog header or receipt), so that the same line sent again at another
// time is another alert rather than a re-send stored and counted once.
func datedID(line []byte, t time.Time) string {
	h := sha256.New()
	h.Write(line)
	h.Write([]byte{0})
	h.Write([]byte(timeString(t)))
	return "sha256:" + hex.EncodeToString(h.Sum(nil)[:16])
}
