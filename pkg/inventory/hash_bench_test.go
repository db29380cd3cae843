package inventory

import (
	"fmt"
	"strings"
	"testing"
)

// benchSpec is a dashboard shaped like the stand-in's seeded ones (and
// like a typical exported dashboard): panels with queries, thresholds,
// floats and a few escapes.
func benchSpec(panels int) []byte {
	var b strings.Builder
	b.WriteString(`{"annotations":{"list":[{"builtIn":1,"enable":true,"name":"Annotations & Alerts","type":"dashboard"}]},"description":"seeded \u00e9\u00e8 \"quoted\" <tag> & 0.000123","editable":true,"fiscalYearStartMonth":0,"graphTooltip":0,"id":42,"panels":[`)
	for p := 0; p < panels; p++ {
		if p > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"datasource":{"type":"prometheus","uid":"prom-main"},"fieldConfig":{"defaults":{"decimals":%d,"thresholds":{"mode":"absolute","steps":[{"color":"green","value":null},{"color":"red","value":%g}]},"unit":"percentunit"},"overrides":[]},"gridPos":{"h":8,"w":12,"x":%d,"y":%d},"id":%d,"options":{"legend":{"displayMode":"list","placement":"bottom","showLegend":true},"tooltip":{"mode":"single"}},"targets":[{"expr":"sum(rate(http_requests_total{job=\"api\",code=~\"5..\"}[5m])) / sum(rate(http_requests_total{job=\"api\"}[5m]))","refId":"A"}],"title":"api p%d","type":"timeseries"}`, p%4, float64(p*37)/8, (p%2)*12, (p/2)*8, p+1, p+1)
	}
	b.WriteString(`],"refresh":"30s","schemaVersion":39,"tags":["team-a","prod"],"templating":{"list":[{"name":"cluster","query":"label_values(up, cluster)","refresh":1,"type":"query"}]},"time":{"from":"now-6h","to":"now"},"timezone":"browser","title":"Bench dashboard","uid":"bench","version":1,"weekStart":""}`)
	return []byte(b.String())
}

// BenchmarkHashDashboardSpec is the per-dashboard cost of the /apis path.
func BenchmarkHashDashboardSpec(b *testing.B) {
	spec := benchSpec(6)
	b.SetBytes(int64(len(spec)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := HashDashboardSpec(spec, "bench"); err != nil {
			b.Fatal(err)
		}
	}
}
