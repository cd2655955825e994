package webui

import (
	"context"
	"fmt"
	"testing"

	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/record"
)

// A VM with more than 5000 records: /api/vm keeps the newest 5000 (its
// latest destroy among them) and says the timeline is cut.
func TestTimelineKeepsTheNewest(t *testing.T) {
	st := threatModelStore(t)
	vm5 := tmClones[4]
	err := st.Update(context.Background(), func(tx *lineage.Tx) error {
		for i := 0; i < 5000; i++ {
			short := fmt.Sprintf("%012x", 0xbeef000000+i)
			r := &record.Record{ID: record.ID(tmPool, short, 0), PoolUUID: tmPool, HostUUID: tmXen3, VMUUID: vm5.uuid, VMName: "vm5",
				Activity: record.Activity("other"), Operation: "call_plugin", Start: at(200 + float64(i)), End: at(200.5 + float64(i)),
				Result: record.Success, TaskID: short, Source: record.SourceXAPI}
			if _, err := tx.PutRecord(r); err != nil {
				return err
			}
		}
		// the newest, interesting record: vm5 destroyed afterwards
		short := "ffffffffffff"
		r := &record.Record{ID: record.ID(tmPool, short, 0), PoolUUID: tmPool, HostUUID: tmXen1, VMUUID: vm5.uuid, VMName: "vm5",
			Activity: record.Activity("destroy"), Start: at(9000), End: at(9001), Result: record.Success, TaskID: short, Source: record.SourceXAPI}
		_, err := tx.PutRecord(r)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	ts := newTestServer(t, st, Options{})
	var d VMResponse
	get(t, ts, "/api/vm/"+vm5.uuid, "", 200, &d)
	last := d.Timeline[len(d.Timeline)-1]
	t.Logf("timeline entries: %d; last shown: %s at %s", len(d.Timeline), last.Activity, record.FormatTime(last.Start))
	if last.Activity != "destroy" {
		t.Errorf("the newest record (destroy at %s) is missing from /api/vm; timeline ends with %s at %s",
			record.FormatTime(at(9000)), last.Activity, record.FormatTime(last.Start))
	}
	if len(d.Timeline) != maxTimeline || !d.TimelineTruncated {
		t.Errorf("timeline of %d entries, truncated %v; want %d and true", len(d.Timeline), d.TimelineTruncated, maxTimeline)
	}
	for i := 1; i < len(d.Timeline); i++ {
		if d.Timeline[i].Start.Before(d.Timeline[i-1].Start) {
			t.Fatalf("timeline not oldest first at %d", i)
		}
	}
}
