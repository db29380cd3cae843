package report

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/push"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// WriteMetricsFile writes what g gathers to path in the text exposition
// format, replacing the file atomically: node_exporter's textfile collector
// may read it at any moment and must never see half a file.
func WriteMetricsFile(path string, g prometheus.Gatherer) error {
	if err := prometheus.WriteToTextfile(path, g); err != nil {
		return fmt.Errorf("writing metrics to %s: %w", path, err)
	}
	return nil
}

// ReadGauge finds the value of the gauge name with exactly these labels in a
// text exposition file written earlier; ok is false when it is not there
// or the file does not parse.
func ReadGauge(path, name string, labels map[string]string) (v float64, ok bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(f)
	if err != nil {
		return 0, false
	}
	fam, found := fams[name]
	if !found {
		return 0, false
	}
	for _, m := range fam.GetMetric() {
		if sameLabels(m.GetLabel(), labels) && m.GetGauge() != nil {
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

func sameLabels(got []*dto.LabelPair, want map[string]string) bool {
	if len(got) != len(want) {
		return false
	}
	for _, l := range got {
		if v, ok := want[l.GetName()]; !ok || v != l.GetValue() {
			return false
		}
	}
	return true
}

// Push sends what g gathers to a Prometheus Pushgateway as the group
// job/<job>/<label>/<value>/... (the metrics must not carry the grouping
// labels themselves). replace (PUT) replaces every metric of the group;
// otherwise (POST) only the metrics of the names sent are replaced, which
// keeps a metric left out on purpose (a last-success timestamp after a
// failure) in place.
func Push(ctx context.Context, client *http.Client, baseURL, job string, grouping [][2]string, g prometheus.Gatherer, replace bool) error {
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	p := push.New(baseURL, job).Gatherer(g).Client(client)
	for _, kv := range grouping {
		p = p.Grouping(kv[0], kv[1])
	}
	var err error
	if replace {
		err = p.PushContext(ctx)
	} else {
		err = p.AddContext(ctx)
	}
	if err != nil {
		return fmt.Errorf("pushing metrics to %s: %w", baseURL, err)
	}
	return nil
}

// MetricsServer serves /metrics for Prometheus to scrape while a
// long-running command runs.
type MetricsServer struct {
	srv *http.Server
	ln  net.Listener
}

// ServeMetrics listens on addr (host:port; port 0 picks one) and serves
// what g gathers at /metrics until Close.
func ServeMetrics(addr string, g prometheus.Gatherer) (*MetricsServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	s := &MetricsServer{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, ln: ln}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// Addr is the address the server listens on.
func (s *MetricsServer) Addr() string { return s.ln.Addr().String() }

// Close stops the server, letting scrapes in flight finish.
func (s *MetricsServer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
