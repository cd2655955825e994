package alerts

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmlineage/vmlineage/agent/alerts/alertstest"
	"github.com/vmlineage/vmlineage/plugins"
)

// ExportAlerts reads every kind of row a log can hold: packed by this
// version, text by an earlier one, and one that cannot be read (named in
// the line's error, the others still exported, the count in the error).
func TestExportAlerts(t *testing.T) {
	st := alertstest.ThreatModel(t)
	ctx := context.Background()
	svc, err := NewService(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	at := alertstest.At(600)
	vm := alertstest.VMUUID["vm1"]
	vms := []plugins.AlertVM{{UUID: vm, Field: "host.name", Value: "vm1"}}
	p := svc.log.begin("new-1", at)
	svc.log.admit(p)
	svc.log.resolve(p, vms)
	svc.log.finish(p, &alertRow{id: "new-1", timeMS: at.UnixMilli(), received: at.UnixMilli(), source: "syslog", json: `{"event":{"id":"new-1"}}`, enriched: []byte(sampleEnriched), vms: vms})
	svc.Close()
	path := AlertsPath(st.Path())
	adb, err := openAlertDB(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	var stored []byte
	if err := adb.QueryRow("SELECT json FROM alerts WHERE id='new-1'").Scan(&stored); err != nil || !isPacked(stored) {
		t.Fatalf("new row not packed: %q %v", stored, err)
	}
	for _, q := range []string{
		`INSERT INTO alerts(id,time_ms,received_ms,source,matched,json,enriched) VALUES('old-1',1,2,'stdin',0,'{"event":{"id":"old-1"}}',NULL)`,
		`INSERT INTO alerts(id,time_ms,received_ms,source,matched,json,enriched) VALUES('bad-1',3,4,'http',0,'{"event":{"id":"bad-1"}}',X'28B52FFD00DEADBEEF')`,
	} {
		if _, err := adb.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	adb.Close()
	var got []StoredAlert
	err = ExportAlerts(ctx, path, ExportFilter{}, func(a StoredAlert) error { got = append(got, a); return nil })
	if err == nil || !strings.Contains(err.Error(), "1 stored alerts") {
		t.Fatalf("export error %v, want one alert counted as unreadable", err)
	}
	if len(got) != 3 {
		t.Fatalf("%d alerts exported, want 3: %+v", len(got), got)
	}
	if a := got[0]; a.ID != "new-1" || string(a.Enriched) != sampleEnriched || string(a.Alert) != `{"event":{"id":"new-1"}}` ||
		len(a.VMs) != 1 || a.VMs[0].UUID != vm || !a.Time.Equal(at) || a.Source != "syslog" || !a.Matched || a.Error != "" {
		t.Errorf("packed row: %+v", a)
	}
	if a := got[1]; a.ID != "old-1" || string(a.Alert) != `{"event":{"id":"old-1"}}` || a.Enriched != nil || a.Error != "" {
		t.Errorf("text row: %+v", a)
	}
	if a := got[2]; a.ID != "bad-1" || string(a.Alert) != `{"event":{"id":"bad-1"}}` || !strings.Contains(a.Error, "enriched alert: stored alert document cannot be unpacked (9 bytes)") {
		t.Errorf("damaged row: %+v", a)
	}
	got = nil
	if err := ExportAlerts(ctx, path, ExportFilter{VMUUID: vm}, func(a StoredAlert) error { got = append(got, a); return nil }); err != nil || len(got) != 1 || got[0].ID != "new-1" {
		t.Errorf("by VM: %d alerts, %v", len(got), err)
	}
	if err := ExportAlerts(ctx, filepath.Join(t.TempDir(), "none.db"), ExportFilter{}, func(StoredAlert) error { return nil }); err == nil || !strings.Contains(err.Error(), "no alert log at") {
		t.Errorf("missing log: %v", err)
	}
}
