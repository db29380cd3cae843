package drill

import (
	"context"
	"net/http"

	"github.com/rebind-dev/rebind/pkg/report"
)

// Metric names, documented for alerting rules such as
// time() - rebind_drill_last_success_timestamp_seconds > 2 * 86400.
const (
	MetricSuccess     = "rebind_drill_success"
	MetricDuration    = "rebind_drill_duration_seconds"
	MetricChecked     = "rebind_drill_dashboards_checked"
	MetricLost        = "rebind_drill_dashboards_lost"
	MetricLastRun     = "rebind_drill_last_run_timestamp_seconds"
	MetricLastSuccess = "rebind_drill_last_success_timestamp_seconds"
	MetricLeftovers   = "rebind_drill_leftover_objects"
)

// PushJob is the Pushgateway job name of drill metrics.
const PushJob = "rebind_drill"

// LastSuccess returns the previous success time of a target, for a failed
// run that must keep reporting when the last good drill was.
type LastSuccess func(namespace, statefulset string) (float64, bool)

// Metrics renders results as gauges, one series per target. A failed
// target's last-success timestamp comes from prev (when known), so a
// failure never makes the last success look recent or vanish.
func Metrics(results []*Result, prev LastSuccess) []report.Family {
	fams := []report.Family{
		{Name: MetricSuccess, Type: "gauge", Help: "1 if the last restore drill of the StatefulSet passed, else 0."},
		{Name: MetricDuration, Type: "gauge", Help: "Duration of the last restore drill in seconds."},
		{Name: MetricChecked, Type: "gauge", Help: "Dashboards compared by the last restore drill."},
		{Name: MetricLost, Type: "gauge", Help: "Dashboards missing or changed in the last restore drill's restored copy."},
		{Name: MetricLeftovers, Type: "gauge", Help: "Objects the last restore drill could not clean up."},
		{Name: MetricLastRun, Type: "gauge", Help: "Unix time the last restore drill finished."},
		{Name: MetricLastSuccess, Type: "gauge", Help: "Unix time of the last restore drill that passed."},
	}
	for _, r := range results {
		l := map[string]string{"namespace": r.Namespace, "statefulset": r.StatefulSet}
		ok := 0.0
		if r.Outcome == Passed {
			ok = 1
		}
		finished := float64(r.FinishedAt.UnixMilli()) / 1000
		vals := []float64{ok, r.durationSeconds(), float64(r.Checked), float64(r.Lost), float64(len(r.Leftovers)), finished}
		for i, v := range vals {
			fams[i].Samples = append(fams[i].Samples, report.Sample{Labels: l, Value: v})
		}
		last, have := finished, r.Outcome == Passed
		if !have && prev != nil {
			last, have = prev(r.Namespace, r.StatefulSet)
		}
		if have {
			fams[6].Samples = append(fams[6].Samples, report.Sample{Labels: l, Value: last})
		}
	}
	return fams
}

func (r *Result) durationSeconds() float64 {
	return r.FinishedAt.Sub(r.StartedAt).Seconds()
}

// FileLastSuccess reads last-success timestamps from a metrics file an
// earlier run wrote.
func FileLastSuccess(path string) LastSuccess {
	return func(ns, sts string) (float64, bool) {
		return report.ReadGauge(path, MetricLastSuccess, map[string]string{"namespace": ns, "statefulset": sts})
	}
}

// Push sends one target's metrics to a Pushgateway, grouped by namespace
// and StatefulSet. A passed drill replaces the group (PUT); a failed one
// uses POST, which replaces only the metrics sent and so leaves the last
// success timestamp of the previous good drill in place.
func Push(ctx context.Context, client *http.Client, url string, r *Result) error {
	method := http.MethodPut
	if r.Outcome != Passed {
		method = http.MethodPost
	}
	return report.Push(ctx, client, url, method, PushJob,
		[][2]string{{"namespace", r.Namespace}, {"statefulset", r.StatefulSet}}, Metrics([]*Result{r}, nil))
}

// WriteMetricsFile writes every target's metrics to path, replacing it,
// and keeps the last success of targets that failed this time from the
// file's previous content.
func WriteMetricsFile(path string, results []*Result) error {
	return report.WriteMetricsFile(path, Metrics(results, FileLastSuccess(path)))
}
