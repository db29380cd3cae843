package report

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// registry holds one gauge g{namespace,statefulset} (or unlabelled) with
// value v, the shape the drill's metrics have.
func registry(t *testing.T, labels map[string]string, v float64) *prometheus.Registry {
	t.Helper()
	names := make([]string, 0, len(labels))
	values := make([]string, 0, len(labels))
	for _, k := range []string{"namespace", "statefulset"} {
		if val, ok := labels[k]; ok {
			names, values = append(names, k), append(values, val)
		}
	}
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "g", Help: "help with \\ and\nnewline"}, names)
	g.WithLabelValues(values...).Set(v)
	reg := prometheus.NewRegistry()
	reg.MustRegister(g)
	return reg
}

func TestMetricsFileAndReadGauge(t *testing.T) {
	path := filepath.Join(t.TempDir(), "drill.prom")
	l := map[string]string{"namespace": "monitoring", "statefulset": `gra"fa\na`}
	if err := WriteMetricsFile(path, registry(t, l, 1700000000.25)); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
	// The file is what node_exporter's textfile collector parses.
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(f)
	if err != nil {
		t.Fatalf("the file does not parse: %v", err)
	}
	if fam := fams["g"]; fam == nil || fam.GetType() != dto.MetricType_GAUGE || len(fam.GetMetric()) != 1 || fam.GetHelp() != "help with \\ and\nnewline" {
		t.Fatalf("family g: %v", fam)
	}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
		ok     bool
	}{
		{"same labels", l, 1700000000.25, true},
		{"other target", map[string]string{"namespace": "x", "statefulset": l["statefulset"]}, 0, false},
		{"fewer labels", map[string]string{"namespace": "monitoring"}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, ok := ReadGauge(path, "g", tc.labels)
			if v != tc.want || ok != tc.ok {
				t.Errorf("got %v %v", v, ok)
			}
		})
	}
	if _, ok := ReadGauge(filepath.Join(t.TempDir(), "missing.prom"), "g", l); ok {
		t.Error("a missing file has a gauge")
	}
}

func TestPush(t *testing.T) {
	type got struct {
		method, path string
		fams         map[string]*dto.MetricFamily
		err          error
	}
	for _, tc := range []struct {
		name    string
		replace bool
		labels  map[string]string
		status  int
		wantErr string
		method  string
	}{
		{"put accepted", true, nil, 200, "", http.MethodPut},
		{"post accepted", false, nil, 202, "", http.MethodPost},
		{"rejected", true, nil, 400, "400", http.MethodPut},
		{"grouping label on a metric", true, map[string]string{"namespace": "mon"}, 200, "grouping label", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch := make(chan got, 1)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				g := got{method: r.Method, path: r.URL.EscapedPath(), fams: map[string]*dto.MetricFamily{}}
				dec := expfmt.NewDecoder(r.Body, expfmt.ResponseFormat(r.Header))
				for {
					var mf dto.MetricFamily
					if err := dec.Decode(&mf); err != nil {
						if err.Error() != "EOF" {
							g.err = err
						}
						break
					}
					g.fams[mf.GetName()] = &mf
				}
				ch <- g
				w.WriteHeader(tc.status)
			}))
			defer srv.Close()
			err := Push(context.Background(), nil, srv.URL+"/", "rebind_drill", [][2]string{{"namespace", "mon"}, {"statefulset", "grafana"}},
				registry(t, tc.labels, 1), tc.replace)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if tc.method == "" {
				return // refused before sending
			}
			g := <-ch
			if g.err != nil {
				t.Fatalf("body does not decode: %v", g.err)
			}
			// The Pushgateway reads the grouping as label pairs, in any order.
			rest, ok := strings.CutPrefix(g.path, "/metrics/job/rebind_drill/")
			parts := strings.Split(rest, "/")
			group := map[string]string{}
			for i := 0; ok && i+1 < len(parts); i += 2 {
				group[parts[i]] = parts[i+1]
			}
			if g.method != tc.method || !ok || len(parts) != 4 || group["namespace"] != "mon" || group["statefulset"] != "grafana" {
				t.Errorf("%s %s", g.method, g.path)
			}
			if fam := g.fams["g"]; fam == nil || len(fam.GetMetric()) != 1 || fam.GetMetric()[0].GetGauge().GetValue() != 1 {
				t.Errorf("pushed %v", g.fams)
			}
		})
	}
}

func TestServeMetrics(t *testing.T) {
	reg := registry(t, map[string]string{"namespace": "mon", "statefulset": "grafana"}, 3)
	s, err := ServeMetrics("127.0.0.1:0", reg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	want := `# HELP g help with \\ and\nnewline
# TYPE g gauge
g{namespace="mon",statefulset="grafana"} 3
`
	if err := testutil.ScrapeAndCompare("http://"+s.Addr()+"/metrics", strings.NewReader(want), "g"); err != nil {
		t.Fatal(err)
	}
	if _, err := ServeMetrics(s.Addr(), reg); err == nil || !strings.Contains(err.Error(), "--metrics-addr") {
		t.Fatalf("second server on the same address: %v", err)
	}
}
