// Package kibana holds vmlineage's Kibana saved objects: a data view for
// logs-vmlineage.lifecycle-*, visualizations, a saved search and a dashboard,
// as the NDJSON file that Kibana's saved objects import API takes
// (POST /api/saved_objects/_import, header kbn-xsrf).
//
// The objects are written in Kibana 7.17's format (legacy migrationVersion,
// panel references named panel_N) so that every Kibana from 7.17 through 8.x
// runs its own migrations on import: saved objects import only into the same
// or a newer version. vmlineage.ndjson is generated from Objects by
// `go generate` (gen_test.go checks that the file is current).
package kibana

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
)

//go:generate go test -run TestGenerate . -args -update

// NDJSON is the saved objects file, ready to POST to /api/saved_objects/_import.
//
//go:embed vmlineage.ndjson
var NDJSON []byte

// DataViewID is the id of the data view every object refers to.
const DataViewID = "vmlineage-lifecycle"

// IndexPattern is what the data view matches.
const IndexPattern = "logs-vmlineage.lifecycle-*"

// Object is one saved object as the import API takes it.
type Object struct {
	Type                 string            `json:"type"`
	ID                   string            `json:"id"`
	Attributes           map[string]any    `json:"attributes"`
	References           []Reference       `json:"references"`
	MigrationVersion     map[string]string `json:"migrationVersion,omitempty"`
	CoreMigrationVersion string            `json:"coreMigrationVersion,omitempty"`
}

// Reference points from one saved object to another.
type Reference struct {
	Name string `json:"name"`
	Type string `json:"type"`
	ID   string `json:"id"`
}

const (
	migratedFrom = "7.17.0"
	searchRef    = "kibanaSavedObjectMeta.searchSourceJSON.index"
)

// jsonString is a legacy attribute Kibana keeps as a JSON-encoded string.
func jsonString(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func searchSource(query string) map[string]any {
	return map[string]any{"searchSourceJSON": jsonString(map[string]any{
		"query":        map[string]any{"query": query, "language": "kuery"},
		"filter":       []any{},
		"indexRefName": searchRef,
	})}
}

func dataViewRef() []Reference {
	return []Reference{{Name: searchRef, Type: "index-pattern", ID: DataViewID}}
}

func count() map[string]any {
	return map[string]any{"id": "1", "enabled": true, "type": "count", "schema": "metric", "params": map[string]any{}}
}

func terms(id, schema, field string, size int, orderBy string) map[string]any {
	return map[string]any{"id": id, "enabled": true, "type": "terms", "schema": schema, "params": map[string]any{
		"field": field, "size": size, "order": "desc", "orderBy": orderBy,
		"otherBucket": false, "missingBucket": false,
	}}
}

func dateHistogram(id string) map[string]any {
	return map[string]any{"id": id, "enabled": true, "type": "date_histogram", "schema": "segment", "params": map[string]any{
		"field": "@timestamp", "interval": "auto", "min_doc_count": 1, "extended_bounds": map[string]any{},
	}}
}

// xyParams are the vislib parameters of a bar chart (vertical or horizontal).
func xyParams(kind string, horizontal bool) map[string]any {
	catPos, valPos := "bottom", "left"
	if horizontal {
		catPos, valPos = "left", "bottom"
	}
	return map[string]any{
		"type": kind,
		"grid": map[string]any{"categoryLines": false},
		"categoryAxes": []any{map[string]any{"id": "CategoryAxis-1", "type": "category", "position": catPos, "show": true,
			"style": map[string]any{}, "scale": map[string]any{"type": "linear"},
			"labels": map[string]any{"show": true, "filter": true, "truncate": 100}, "title": map[string]any{}}},
		"valueAxes": []any{map[string]any{"id": "ValueAxis-1", "name": "LeftAxis-1", "type": "value", "position": valPos, "show": true,
			"style": map[string]any{}, "scale": map[string]any{"type": "linear", "mode": "normal"},
			"labels": map[string]any{"show": true, "rotate": 0, "filter": false, "truncate": 100},
			"title":  map[string]any{"text": "Count"}}},
		"seriesParams": []any{map[string]any{"show": true, "type": "histogram", "mode": "stacked",
			"data": map[string]any{"label": "Count", "id": "1"}, "valueAxis": "ValueAxis-1",
			"drawLinesBetweenPoints": true, "lineWidth": 2, "showCircles": true}},
		"addTooltip": true, "addLegend": true, "legendPosition": "right", "times": []any{}, "addTimeMarker": false,
		"labels": map[string]any{"show": false}, "thresholdLine": map[string]any{"show": false, "value": 10, "width": 1, "style": "full", "color": "#E7664C"},
	}
}

func tableParams() map[string]any {
	return map[string]any{"perPage": 10, "showPartialRows": false, "showMetricsAtAllLevels": false,
		"showTotal": false, "totalFunc": "sum", "percentageCol": ""}
}

func visualization(id, title, description, query, kind string, params map[string]any, aggs ...map[string]any) Object {
	aggList := make([]any, len(aggs))
	for i, a := range aggs {
		aggList[i] = a
	}
	return Object{
		Type: "visualization", ID: id,
		Attributes: map[string]any{
			"title":                 title,
			"description":           description,
			"visState":              jsonString(map[string]any{"title": title, "type": kind, "aggs": aggList, "params": params}),
			"uiStateJSON":           "{}",
			"version":               1,
			"kibanaSavedObjectMeta": searchSource(query),
		},
		References:           dataViewRef(),
		MigrationVersion:     map[string]string{"visualization": migratedFrom},
		CoreMigrationVersion: migratedFrom,
	}
}

// Objects returns every saved object of the bundle, the data view first and
// the dashboard last.
func Objects() []Object {
	dataView := Object{
		Type: "index-pattern", ID: DataViewID,
		Attributes: map[string]any{
			"title":         IndexPattern,
			"timeFieldName": "@timestamp",
			"fields":        "[]", // Kibana reads the mapping on first use
		},
		References:           []Reference{},
		MigrationVersion:     map[string]string{"index-pattern": "7.11.0"},
		CoreMigrationVersion: migratedFrom,
	}
	overTime := visualization("vmlineage-activity-over-time", "vmlineage: lifecycle activity over time",
		"Lifecycle records per interval, split by activity.", "", "histogram", xyParams("histogram", false),
		count(), dateHistogram("2"), terms("3", "group", "event.action", 20, "1"))
	byHost := visualization("vmlineage-activity-by-host", "vmlineage: activity by Xen host",
		"Lifecycle records per XAPI host (observer), split by activity.", "", "horizontal_bar", xyParams("histogram", true),
		count(), terms("2", "segment", "observer.hostname", 20, "1"), terms("3", "group", "event.action", 10, "1"))
	byActivity := visualization("vmlineage-activity-by-type", "vmlineage: activity by type",
		"Share of each lifecycle activity.", "", "pie",
		map[string]any{"type": "pie", "addTooltip": true, "addLegend": true, "legendPosition": "right", "isDonut": true,
			"labels": map[string]any{"show": true, "values": true, "last_level": true, "truncate": 100}},
		count(), terms("2", "segment", "event.action", 20, "1"))
	failures := visualization("vmlineage-failures", "vmlineage: failed, cancelled and denied operations",
		"Operations whose outcome is failure, by VM, action, reason and XAPI error code.", "event.outcome:failure", "table", tableParams(),
		count(), terms("2", "bucket", "host.name", 20, "1"), terms("3", "bucket", "event.action", 10, "1"),
		terms("4", "bucket", "xen.result", 5, "1"), terms("5", "bucket", "error.code", 10, "1"))
	families := visualization("vmlineage-largest-families", "vmlineage: largest VM families",
		"Family roots with the most distinct VMs (host.id) in the time range.", "", "table", tableParams(),
		map[string]any{"id": "1", "enabled": true, "type": "cardinality", "schema": "metric",
			"params": map[string]any{"field": "host.id", "customLabel": "VMs"}},
		terms("2", "bucket", "vmlineage.family_root", 20, "1"))
	recent := Object{
		Type: "search", ID: "vmlineage-recent-clones-destroys",
		Attributes: map[string]any{
			"title":       "vmlineage: recent clones, copies, exports and destroys",
			"description": "The operations that move or erase a VM's data.",
			"columns":     []any{"host.name", "event.action", "event.outcome", "vmlineage.parent.name", "observer.hostname", "user.name", "message"},
			"sort":        []any{[]any{"@timestamp", "desc"}},
			"version":     1,
			"kibanaSavedObjectMeta": searchSource(
				`event.action:("vm-clone" or "vm-copy" or "vm-export" or "vm-destroy")`),
		},
		References:           dataViewRef(),
		MigrationVersion:     map[string]string{"search": "7.9.3"},
		CoreMigrationVersion: migratedFrom,
	}

	type panel struct {
		obj        Object
		x, y, w, h int
	}
	panels := []panel{
		{overTime, 0, 0, 48, 12},
		{byHost, 0, 12, 24, 14},
		{byActivity, 24, 12, 24, 14},
		{failures, 0, 26, 24, 15},
		{families, 24, 26, 24, 15},
		{recent, 0, 41, 48, 18},
	}
	var panelsJSON []any
	var refs []Reference
	for i, p := range panels {
		idx := fmt.Sprint(i + 1)
		ref := fmt.Sprintf("panel_%d", i)
		panelsJSON = append(panelsJSON, map[string]any{
			"version":          migratedFrom,
			"gridData":         map[string]any{"x": p.x, "y": p.y, "w": p.w, "h": p.h, "i": idx},
			"panelIndex":       idx,
			"embeddableConfig": map[string]any{},
			"panelRefName":     ref,
		})
		refs = append(refs, Reference{Name: ref, Type: p.obj.Type, ID: p.obj.ID})
	}
	dashboard := Object{
		Type: "dashboard", ID: "vmlineage-lifecycle-overview",
		Attributes: map[string]any{
			"title":       "vmlineage: VM lifecycle overview",
			"description": "Lifecycle activity of Xen VMs traced by vmlineage: over time, by host, by activity, failures, largest families, recent clones and destroys.",
			"panelsJSON":  jsonString(panelsJSON),
			"optionsJSON": jsonString(map[string]any{"hidePanelTitles": false, "useMargins": true}),
			"timeRestore": true,
			"timeFrom":    "now-7d",
			"timeTo":      "now",
			"refreshInterval": map[string]any{
				"pause": true, "value": 0,
			},
			"version": 1,
			"kibanaSavedObjectMeta": map[string]any{"searchSourceJSON": jsonString(map[string]any{
				"query": map[string]any{"query": "", "language": "kuery"}, "filter": []any{}})},
		},
		References:           refs,
		MigrationVersion:     map[string]string{"dashboard": migratedFrom},
		CoreMigrationVersion: migratedFrom,
	}
	out := []Object{dataView}
	for _, p := range panels {
		out = append(out, p.obj)
	}
	return append(out, dashboard)
}

// Marshal writes objects as NDJSON, one object per line.
func Marshal(objects []Object) []byte {
	var buf bytes.Buffer
	for _, o := range objects {
		b, err := json.Marshal(o)
		if err != nil {
			panic(err)
		}
		buf.Write(b)
		buf.WriteByte('\n')
	}
	return buf.Bytes()
}
