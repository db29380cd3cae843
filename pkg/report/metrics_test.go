package report

import (
	"context"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteMetrics(t *testing.T) {
	for _, tc := range []struct {
		name string
		fams []Family
		want string
	}{
		{"empty family is skipped", []Family{{Name: "a", Type: "gauge", Help: "h"}}, ""},
		{"labels sorted and escaped", []Family{{Name: "x", Type: "gauge", Help: "line1\nline2 \\",
			Samples: []Sample{{Labels: map[string]string{"b": `q"uo\te`, "a": "1\n2"}, Value: 1.5}}}},
			"# HELP x line1\\nline2 \\\\\n# TYPE x gauge\nx{a=\"1\\n2\",b=\"q\\\"uo\\\\te\"} 1.5\n"},
		{"no labels, special values", []Family{{Name: "y", Type: "counter", Help: "h",
			Samples: []Sample{{Value: math.Inf(1)}, {Value: math.NaN()}, {Value: 1e21}}}},
			"# HELP y h\n# TYPE y counter\ny +Inf\ny NaN\ny 1e+21\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b strings.Builder
			if err := WriteMetrics(&b, tc.fams); err != nil {
				t.Fatal(err)
			}
			if b.String() != tc.want {
				t.Errorf("got\n%q\nwant\n%q", b.String(), tc.want)
			}
		})
	}
}

func TestMetricsFileAndReadGauge(t *testing.T) {
	path := filepath.Join(t.TempDir(), "drill.prom")
	l := map[string]string{"namespace": "monitoring", "statefulset": "grafana"}
	fams := []Family{{Name: "g", Type: "gauge", Help: "h", Samples: []Sample{{Labels: l, Value: 1700000000.25}}}}
	if err := WriteMetricsFile(path, fams); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
		ok     bool
	}{
		{"same labels", l, 1700000000.25, true},
		{"other target", map[string]string{"namespace": "x", "statefulset": "grafana"}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, ok := ReadGauge(path, "g", tc.labels)
			if v != tc.want || ok != tc.ok {
				t.Errorf("got %v %v", v, ok)
			}
		})
	}
}

func TestPush(t *testing.T) {
	type got struct{ method, path, body, ctype string }
	for _, tc := range []struct {
		name    string
		method  string
		status  int
		wantErr bool
	}{
		{"put accepted", http.MethodPut, 200, false},
		{"post accepted", http.MethodPost, 202, false},
		{"rejected", http.MethodPut, 400, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch := make(chan got, 1)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				ch <- got{r.Method, r.URL.EscapedPath(), string(b), r.Header.Get("Content-Type")}
				w.WriteHeader(tc.status)
			}))
			defer srv.Close()
			fams := []Family{{Name: "g", Type: "gauge", Help: "h", Samples: []Sample{{Value: 1}}}}
			err := Push(context.Background(), nil, srv.URL+"/", tc.method, "rebind_drill", [][2]string{{"namespace", "mon"}, {"statefulset", "grafana"}}, fams)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v", err)
			}
			g := <-ch
			if g.method != tc.method || g.path != "/metrics/job/rebind_drill/namespace/mon/statefulset/grafana" || !strings.Contains(g.body, "g 1\n") || !strings.HasPrefix(g.ctype, "text/plain; version=0.0.4") {
				t.Errorf("got %+v", g)
			}
		})
	}
}
