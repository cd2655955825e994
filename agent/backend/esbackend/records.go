package esbackend

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/vmlineage/vmlineage/agent/record"
)

// RecordFromECS reads a lifecycle record back from the ECS document the
// Elasticsearch output wrote (formats/ecs; README "ECS fields"), nested
// or with dotted keys. What ECS does not carry (the actor's track id) is
// left empty.
func RecordFromECS(src []byte) (record.Record, error) {
	var doc map[string]any
	if err := json.Unmarshal(src, &doc); err != nil {
		return record.Record{}, err
	}
	s := func(path string) string {
		v, _ := lookup(doc, path).(string)
		return v
	}
	t := func(path string) (time.Time, error) {
		v := s(path)
		if v == "" {
			return time.Time{}, nil
		}
		tt, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return time.Time{}, fmt.Errorf("%s %q: %w", path, v, err)
		}
		return tt.UTC(), nil
	}
	r := record.Record{ID: s("event.id"), PoolUUID: s("xen.pool.uuid"), HostUUID: s("xen.host.uuid"), HostName: s("observer.hostname"),
		VMUUID: s("cloud.instance.id"), VMName: s("cloud.instance.name"), ParentVMUUID: s("vmlineage.parent.uuid"),
		Activity: record.Activity(s("vmlineage.activity")), Operation: s("xen.operation"), Result: record.Result(s("xen.result")),
		Error: s("error.message"), TaskUUID: s("xen.task.uuid"), TaskID: s("xen.task.id"), Source: record.Source(s("xen.source")),
		DestinationHostUUID: s("xen.destination_host.uuid"), SnapshotUUID: s("xen.vm.snapshot_uuid")}
	if r.PoolUUID == "" {
		r.PoolUUID = s("orchestrator.cluster.id")
	}
	if r.VMUUID == "" {
		r.VMUUID = s("host.id")
	}
	var err error
	if r.Start, err = t("event.start"); err != nil {
		return r, err
	}
	if r.End, err = t("event.end"); err != nil {
		return r, err
	}
	if u, ok := lookup(doc, "xen.unknown").([]any); ok {
		for _, x := range u {
			if xs, ok := x.(string); ok {
				r.Unknown = append(r.Unknown, xs)
			}
		}
	}
	if name := s("user.name"); name != "" || s("user.id") != "" {
		r.Actor = &record.Actor{Name: name, SubjectID: s("user.id"), ClientIP: s("source.ip")}
	}
	if r.ID == "" || r.VMUUID == "" || r.Activity == "" || r.Start.IsZero() {
		return r, fmt.Errorf("not a vmlineage record (event.id %q, cloud.instance.id %q, vmlineage.activity %q, event.start %q)",
			r.ID, r.VMUUID, r.Activity, s("event.start"))
	}
	return r, nil
}

// lookup finds a field by its dotted name in nested or flattened form.
func lookup(m map[string]any, path string) any {
	if v, ok := m[path]; ok {
		return v
	}
	for i := len(path) - 1; i > 0; i-- {
		if path[i] != '.' {
			continue
		}
		if sub, ok := m[path[:i]].(map[string]any); ok {
			if v := lookup(sub, path[i+1:]); v != nil {
				return v
			}
		}
	}
	return nil
}
