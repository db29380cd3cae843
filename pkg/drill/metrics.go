package drill

import (
	"context"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

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

// targetLabels name a drill's target on every series of a file or scrape;
// a Pushgateway puts them in the group instead.
var targetLabels = []string{"namespace", "statefulset"}

// LastSuccess returns the previous success time of a target, for a failed
// run that must keep reporting when the last good drill was.
type LastSuccess func(namespace, statefulset string) (float64, bool)

// Metrics holds the drill gauges, one series per target. It is safe for
// concurrent use: a long-running drill updates it while Prometheus scrapes.
type Metrics struct {
	reg                                                          *prometheus.Registry
	labelled                                                     bool
	success, duration, checked, lost, leftovers, lastRun, lastOK *prometheus.GaugeVec
}

// NewMetrics returns empty gauges labelled by namespace and statefulset.
func NewMetrics() *Metrics { return newMetrics(targetLabels) }

func newMetrics(labels []string) *Metrics {
	reg := prometheus.NewRegistry()
	g := func(name, help string) *prometheus.GaugeVec {
		v := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
		reg.MustRegister(v)
		return v
	}
	return &Metrics{
		reg:       reg,
		labelled:  len(labels) > 0,
		success:   g(MetricSuccess, "1 if the last restore drill of the StatefulSet passed, else 0."),
		duration:  g(MetricDuration, "Duration of the last restore drill in seconds."),
		checked:   g(MetricChecked, "Dashboards compared by the last restore drill."),
		lost:      g(MetricLost, "Dashboards missing or changed in the last restore drill's restored copy."),
		leftovers: g(MetricLeftovers, "Objects the last restore drill could not clean up."),
		lastRun:   g(MetricLastRun, "Unix time the last restore drill finished."),
		lastOK:    g(MetricLastSuccess, "Unix time of the last restore drill that passed."),
	}
}

// Gatherer is what a file, a push or a scrape reads.
func (m *Metrics) Gatherer() prometheus.Gatherer { return m.reg }

// Observe records one target's result. A failed target's last-success
// timestamp stays what it was (an earlier round of a long-running drill),
// or comes from prev: a failure never makes the last success look recent
// or vanish.
func (m *Metrics) Observe(r *Result, prev LastSuccess) {
	var l []string
	if m.labelled {
		l = []string{r.Namespace, r.StatefulSet}
	}
	ok := 0.0
	if r.Outcome == Passed {
		ok = 1
	}
	finished := float64(r.FinishedAt.UnixMilli()) / 1000
	m.success.WithLabelValues(l...).Set(ok)
	m.duration.WithLabelValues(l...).Set(r.durationSeconds())
	m.checked.WithLabelValues(l...).Set(float64(r.Checked))
	m.lost.WithLabelValues(l...).Set(float64(r.Lost))
	m.leftovers.WithLabelValues(l...).Set(float64(len(r.Leftovers)))
	m.lastRun.WithLabelValues(l...).Set(finished)
	switch {
	case r.Outcome == Passed:
		m.lastOK.WithLabelValues(l...).Set(finished)
	case prev != nil:
		if last, have := prev(r.Namespace, r.StatefulSet); have {
			m.lastOK.WithLabelValues(l...).Set(last)
		}
	}
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
	m := newMetrics(nil)
	m.Observe(r, nil)
	return report.Push(ctx, client, url, PushJob,
		[][2]string{{"namespace", r.Namespace}, {"statefulset", r.StatefulSet}}, m.Gatherer(), r.Outcome == Passed)
}

// WriteMetricsFile writes every target's metrics to path, replacing it,
// and keeps the last success of targets that failed this time from the
// file's previous content.
func WriteMetricsFile(path string, results []*Result) error {
	m := NewMetrics()
	prev := FileLastSuccess(path)
	for _, r := range results {
		m.Observe(r, prev)
	}
	return report.WriteMetricsFile(path, m.Gatherer())
}
