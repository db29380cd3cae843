package grafanastandin

// Schema v2 dashboards (conformance §4 "Schema v2 dashboards on the legacy
// endpoint", §8 "Object shape"): their spec holds `elements` (panels by
// name) and a `layout` referring to them, where a classic dashboard has a
// flat `panels` array. The conversions below are the stand-in's own,
// simplified and lossy on purpose, following the rules Grafana documents
// for v2 -> v1 (apps/dashboard/pkg/migration/conversion/
// v2_to_v1_layout_conversion.md @ v12.4.0: a RowsLayout becomes row panels
// followed by the row's panels, y shifted below the row header; tabs become
// expanded rows).
//
// v2-only fields have no classic equivalent and are dropped: a row's
// conditionalRendering and fillScreen, a grid item's repeat, a panel's
// queryOptions. So a hash of the classic answer cannot see a change in
// them; only /apis in a v2 version or `resource.value` can.

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
)

// latestSchemaVersion is what a converted dashboard reports
// (schemaversion/migrations.go LATEST_VERSION @ v12.4.0).
const latestSchemaVersion = 42

var cursorSyncs = []string{"Off", "Crosshair", "Tooltip"}

// seedV2Spec builds a plausible v2 dashboard spec: RowsLayout rows of
// GridLayout items, each row shown only for one cluster value (a
// conditionalRendering rule, v2-only).
func seedV2Spec(rng *rand.Rand, title string, tags []string) map[string]any {
	elements := map[string]any{}
	var rows []any
	nRows := 1 + rng.IntN(2)
	id := 0
	for r := 0; r < nRows; r++ {
		var items []any
		for p := 0; p < 2+rng.IntN(3); p++ {
			id++
			metric := seedWords[rng.IntN(len(seedWords))]
			name := fmt.Sprintf("panel-%d", id)
			elements[name] = map[string]any{"kind": "Panel", "spec": map[string]any{
				"id": id, "title": fmt.Sprintf("%s v2 p%d", metric, id), "description": "", "links": []any{},
				"data": map[string]any{"kind": "QueryGroup", "spec": map[string]any{
					"queries": []any{map[string]any{"kind": "PanelQuery", "spec": map[string]any{
						"refId": "A", "hidden": false,
						"query": map[string]any{"kind": "DataQuery", "group": "prometheus", "version": "v0",
							"datasource": map[string]any{"name": "prom-main"},
							"spec":       map[string]any{"expr": fmt.Sprintf(`sum(rate(http_requests_total{job="%s"}[5m]))`, metric)}},
					}}},
					"transformations": []any{},
					"queryOptions":    map[string]any{},
				}},
				"vizConfig": map[string]any{"kind": "VizConfig", "group": []string{"timeseries", "stat", "gauge"}[rng.IntN(3)], "version": "12.4.0",
					"spec": map[string]any{
						"options":     map[string]any{"legend": map[string]any{"displayMode": "list", "placement": "bottom", "showLegend": true}},
						"fieldConfig": map[string]any{"defaults": map[string]any{"unit": "reqps", "decimals": rng.IntN(4)}, "overrides": []any{}},
					}},
			}}
			items = append(items, map[string]any{"kind": "GridLayoutItem", "spec": map[string]any{
				"x": (p % 2) * 12, "y": (p / 2) * 8, "width": 12, "height": 8,
				"element": map[string]any{"kind": "ElementReference", "name": name},
			}})
		}
		rows = append(rows, map[string]any{"kind": "RowsLayoutRow", "spec": map[string]any{
			"title": fmt.Sprintf("Row %d", r+1), "collapse": false,
			"conditionalRendering": map[string]any{"kind": "ConditionalRenderingGroup", "spec": map[string]any{
				"visibility": "show", "condition": "and",
				"items": []any{map[string]any{"kind": "ConditionalRenderingVariable", "spec": map[string]any{
					"variable": "cluster", "operator": "equals", "value": []string{"prod", "staging", "dev"}[rng.IntN(3)],
				}}},
			}},
			"layout": map[string]any{"kind": "GridLayout", "spec": map[string]any{"items": items}},
		}})
	}
	return map[string]any{
		"title": title, "description": fmt.Sprintf("seeded v2 %g", rng.Float64()*1e-3), "tags": tags,
		"cursorSync": cursorSyncs[rng.IntN(3)], "editable": true, "liveNow": false, "preload": false, "links": []any{},
		"annotations": []any{map[string]any{"kind": "AnnotationQuery", "spec": map[string]any{
			"builtIn": true, "enable": true, "hide": true, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts",
			"query": map[string]any{"kind": "DataQuery", "group": "grafana", "version": "v0", "datasource": map[string]any{"name": "-- Grafana --"}, "spec": map[string]any{}},
		}}},
		"timeSettings": map[string]any{"timezone": "browser", "from": "now-6h", "to": "now", "autoRefresh": "30s",
			"autoRefreshIntervals": []any{"5s", "10s", "30s", "1m", "5m", "15m", "30m", "1h", "2h", "1d"}, "hideTimepicker": false, "fiscalYearStartMonth": 0},
		"variables": []any{map[string]any{"kind": "QueryVariable", "spec": map[string]any{
			"name": "cluster", "refresh": "onDashboardLoad", "hide": "dontHide", "skipUrlSync": false, "multi": false, "includeAll": false,
			"query": map[string]any{"kind": "DataQuery", "group": "prometheus", "version": "v0", "datasource": map[string]any{"name": "prom-main"},
				"spec": map[string]any{"query": "label_values(up, cluster)"}},
		}}},
		"elements": elements,
		"layout":   map[string]any{"kind": "RowsLayout", "spec": map[string]any{"rows": rows}},
	}
}

// Small accessors for decoded JSON.
func obj(v any) map[string]any { m, _ := v.(map[string]any); return m }
func arr(v any) []any          { a, _ := v.([]any); return a }
func str(v any) string         { s, _ := v.(string); return s }
func num(v any) float64        { f, _ := v.(float64); return f }

// v2ToClassic converts a v2 spec to a classic dashboard model (without id,
// uid, version), dropping what classic JSON cannot hold.
func v2ToClassic(spec []byte) ([]byte, error) {
	var in map[string]any
	if err := json.Unmarshal(spec, &in); err != nil {
		return nil, err
	}
	if _, ok := in["layout"]; !ok {
		return nil, fmt.Errorf("not a v2 dashboard spec: no layout")
	}
	out := map[string]any{
		"title": in["title"], "tags": orEmpty(in["tags"]), "editable": in["editable"], "links": orEmpty(in["links"]),
		"schemaVersion": latestSchemaVersion, "graphTooltip": max(0, slices.Index(cursorSyncs, str(in["cursorSync"]))),
	}
	for _, k := range []string{"description", "liveNow", "preload"} {
		if v, ok := in[k]; ok {
			out[k] = v
		}
	}
	ts := obj(in["timeSettings"])
	out["time"] = map[string]any{"from": ts["from"], "to": ts["to"]}
	out["timezone"], out["refresh"], out["fiscalYearStartMonth"] = ts["timezone"], ts["autoRefresh"], ts["fiscalYearStartMonth"]
	if w, ok := ts["weekStart"]; ok {
		out["weekStart"] = w
	}
	out["timepicker"] = map[string]any{"refresh_intervals": ts["autoRefreshIntervals"], "hidden": ts["hideTimepicker"]}
	var annos []any
	for _, a := range arr(in["annotations"]) {
		s := obj(obj(a)["spec"])
		q := obj(s["query"])
		an := map[string]any{"builtIn": boolInt(s["builtIn"]), "enable": s["enable"], "hide": s["hide"], "iconColor": s["iconColor"], "name": s["name"],
			"datasource": map[string]any{"type": q["group"], "uid": obj(q["datasource"])["name"]}}
		for k, v := range obj(q["spec"]) {
			an[k] = v
		}
		if s["builtIn"] == true {
			an["type"] = "dashboard"
		}
		annos = append(annos, an)
	}
	out["annotations"] = map[string]any{"list": orEmpty(annos)}
	var vars []any
	for _, v := range arr(in["variables"]) {
		s := obj(obj(v)["spec"])
		q := obj(s["query"])
		vars = append(vars, map[string]any{"name": s["name"], "type": strings.ToLower(strings.TrimSuffix(str(obj(v)["kind"]), "Variable")),
			"query": obj(q["spec"])["query"], "datasource": map[string]any{"type": q["group"], "uid": obj(q["datasource"])["name"]}})
	}
	out["templating"] = map[string]any{"list": orEmpty(vars)}
	c := v2conv{elements: obj(in["elements"]), nextID: maxPanelID(obj(in["elements"]))}
	panels, _, err := c.layout(obj(in["layout"]), 0)
	if err != nil {
		return nil, err
	}
	out["panels"] = orEmpty(panels)
	return json.Marshal(out)
}

type v2conv struct {
	elements map[string]any
	nextID   int // ids for row panels, after the largest panel id
}

// autoGridHeight is the stand-in's guess for the height of an AutoGrid
// cell ("standard" row height); Grafana computes it from rowHeightMode.
const autoGridHeight = 8

// layout converts a v2 layout placed at y into classic panels and returns
// them with the height they take. Rows become row panels followed by their
// panels (collapsed rows hold them), tabs become expanded rows, an
// AutoGridLayout is laid out maxColumnCount (default 3) wide; nested rows
// and tabs are flattened in order. An unknown layout kind fails the
// conversion (conformance §4: Grafana then serves the stored version).
func (c *v2conv) layout(l map[string]any, y int) ([]any, int, error) {
	spec := obj(l["spec"])
	switch str(l["kind"]) {
	case "GridLayout":
		return gridPanels([]any{}, c.elements, spec, y), gridHeight(spec), nil
	case "AutoGridLayout":
		cols := int(num(spec["maxColumnCount"]))
		if cols <= 0 {
			cols = 3
		}
		w := 24 / cols
		var items []any
		for i, it := range arr(spec["items"]) {
			items = append(items, map[string]any{"spec": map[string]any{
				"x": float64((i % cols) * w), "y": float64((i / cols) * autoGridHeight), "width": float64(w), "height": float64(autoGridHeight),
				"element": obj(obj(it)["spec"])["element"],
			}})
		}
		grid := map[string]any{"items": items}
		return gridPanels([]any{}, c.elements, grid, y), gridHeight(grid), nil
	case "RowsLayout", "TabsLayout":
		tabs := str(l["kind"]) == "TabsLayout"
		key := "rows"
		if tabs {
			key = "tabs"
		}
		panels, start := []any{}, y
		for _, row := range arr(spec[key]) {
			rs := obj(obj(row)["spec"])
			if !tabs && rs["hideHeader"] == true {
				inner, h, err := c.layout(obj(rs["layout"]), y)
				if err != nil {
					return nil, 0, err
				}
				panels, y = append(panels, inner...), y+h
				continue
			}
			c.nextID++
			collapsed := !tabs && rs["collapse"] == true
			rp := map[string]any{"type": "row", "id": c.nextID, "title": rs["title"], "collapsed": collapsed,
				"gridPos": map[string]any{"x": 0, "y": y, "w": 24, "h": 1}, "panels": []any{}}
			inner, h, err := c.layout(obj(rs["layout"]), y+1)
			if err != nil {
				return nil, 0, err
			}
			if collapsed {
				rp["panels"] = orEmpty(inner)
				panels, y = append(panels, rp), y+1
				continue
			}
			panels = append(append(panels, rp), inner...)
			y += 1 + h
		}
		return panels, y - start, nil
	}
	return nil, 0, fmt.Errorf("layout kind %q cannot be converted", str(l["kind"]))
}

func orEmpty(v any) any {
	if a, ok := v.([]any); ok && a != nil {
		return a
	}
	if s, ok := v.([]string); ok && s != nil {
		return s
	}
	return []any{}
}

func boolInt(v any) int {
	if v == true {
		return 1
	}
	return 0
}

func maxPanelID(elements map[string]any) int {
	n := 0
	for _, e := range elements {
		n = max(n, int(num(obj(obj(e)["spec"])["id"])))
	}
	return n
}

func gridHeight(grid map[string]any) int {
	h := 0
	for _, it := range arr(grid["items"]) {
		s := obj(obj(it)["spec"])
		h = max(h, int(num(s["y"])+num(s["height"])))
	}
	return h
}

// gridPanels appends the classic panels of a GridLayout, y shifted by dy.
func gridPanels(out []any, elements, grid map[string]any, dy int) []any {
	for _, it := range arr(grid["items"]) {
		s := obj(obj(it)["spec"])
		el := obj(elements[str(obj(s["element"])["name"])])
		ps := obj(el["spec"])
		viz := obj(ps["vizConfig"])
		p := map[string]any{
			"id": ps["id"], "type": viz["group"], "title": ps["title"], "description": ps["description"], "links": orEmpty(ps["links"]),
			"gridPos": map[string]any{"x": s["x"], "y": int(num(s["y"])) + dy, "w": s["width"], "h": s["height"]},
		}
		if v := str(viz["version"]); v != "" {
			p["pluginVersion"] = v
		}
		if ps["transparent"] == true {
			p["transparent"] = true
		}
		vs := obj(viz["spec"])
		p["options"], p["fieldConfig"] = vs["options"], vs["fieldConfig"]
		qg := obj(obj(ps["data"])["spec"])
		var targets []any
		for _, q := range arr(qg["queries"]) {
			qs := obj(obj(q)["spec"])
			dq := obj(qs["query"])
			ds := map[string]any{"type": dq["group"], "uid": obj(dq["datasource"])["name"]}
			t := map[string]any{"refId": qs["refId"], "datasource": ds}
			if qs["hidden"] == true {
				t["hide"] = true
			}
			for k, v := range obj(dq["spec"]) {
				t[k] = v
			}
			if p["datasource"] == nil {
				p["datasource"] = ds
			}
			targets = append(targets, t)
		}
		p["targets"] = orEmpty(targets)
		var trans []any
		for _, t := range arr(qg["transformations"]) {
			trans = append(trans, obj(t)["spec"])
		}
		p["transformations"] = orEmpty(trans)
		out = append(out, p)
	}
	return out
}

// classicToV2 converts a classic model (without id, uid, version) to a v2
// spec: every non-row panel becomes an element in one GridLayout (row
// panels, and what only classic JSON holds, are dropped).
func classicToV2(spec []byte) ([]byte, error) {
	var in map[string]any
	if err := json.Unmarshal(spec, &in); err != nil {
		return nil, err
	}
	elements := map[string]any{}
	var items []any
	var flat []any
	for _, p := range arr(in["panels"]) {
		if str(obj(p)["type"]) == "row" {
			flat = append(flat, arr(obj(p)["panels"])...)
			continue
		}
		flat = append(flat, p)
	}
	for i, pv := range flat {
		p := obj(pv)
		id := p["id"]
		if id == nil {
			id = i + 1
		}
		name := fmt.Sprintf("panel-%v", id)
		var queries []any
		for _, tv := range arr(p["targets"]) {
			t := obj(tv)
			ds := obj(t["datasource"])
			if ds == nil {
				ds = obj(p["datasource"])
			}
			qspec := map[string]any{}
			for k, v := range t {
				if k != "refId" && k != "datasource" && k != "hide" {
					qspec[k] = v
				}
			}
			queries = append(queries, map[string]any{"kind": "PanelQuery", "spec": map[string]any{
				"refId": t["refId"], "hidden": t["hide"] == true,
				"query": map[string]any{"kind": "DataQuery", "group": ds["type"], "version": "v0", "datasource": map[string]any{"name": ds["uid"]}, "spec": qspec},
			}})
		}
		elements[name] = map[string]any{"kind": "Panel", "spec": map[string]any{
			"id": id, "title": p["title"], "description": orString(p["description"]), "links": orEmpty(p["links"]),
			"data": map[string]any{"kind": "QueryGroup", "spec": map[string]any{"queries": orEmpty(queries), "transformations": []any{}, "queryOptions": map[string]any{}}},
			"vizConfig": map[string]any{"kind": "VizConfig", "group": p["type"], "version": orString(p["pluginVersion"]),
				"spec": map[string]any{"options": orObj(p["options"]), "fieldConfig": orObj(p["fieldConfig"])}},
		}}
		gp := obj(p["gridPos"])
		items = append(items, map[string]any{"kind": "GridLayoutItem", "spec": map[string]any{
			"x": num(gp["x"]), "y": num(gp["y"]), "width": num(gp["w"]), "height": num(gp["h"]),
			"element": map[string]any{"kind": "ElementReference", "name": name},
		}})
	}
	tm := obj(in["time"])
	out := map[string]any{
		"title": in["title"], "description": orString(in["description"]), "tags": orEmpty(in["tags"]), "editable": in["editable"] != false,
		"cursorSync": cursorSyncs[min(max(int(num(in["graphTooltip"])), 0), 2)], "liveNow": in["liveNow"] == true, "preload": in["preload"] == true,
		"links": orEmpty(in["links"]), "annotations": []any{}, "variables": []any{},
		"timeSettings": map[string]any{"timezone": orString(in["timezone"]), "from": tm["from"], "to": tm["to"], "autoRefresh": orString(in["refresh"]),
			"autoRefreshIntervals": []any{"5s", "10s", "30s", "1m", "5m", "15m", "30m", "1h", "2h", "1d"}, "hideTimepicker": false,
			"fiscalYearStartMonth": num(in["fiscalYearStartMonth"])},
		"elements": elements,
		"layout":   map[string]any{"kind": "GridLayout", "spec": map[string]any{"items": orEmpty(items)}},
	}
	return json.Marshal(out)
}

func orString(v any) string { return str(v) }

func orObj(v any) any {
	if m := obj(v); m != nil {
		return m
	}
	return map[string]any{}
}
