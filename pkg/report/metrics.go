package report

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Sample is one value of a metric with its labels.
type Sample struct {
	Labels map[string]string
	Value  float64
}

// Family is one metric name with its HELP, TYPE and samples. The Prometheus
// client library would bring a dependency tree for what is a few lines of
// text; this writer emits the text exposition format (version 0.0.4) that
// both node_exporter's textfile collector and the Pushgateway read.
type Family struct {
	Name    string
	Help    string
	Type    string // gauge or counter
	Samples []Sample
}

// WriteMetrics writes families in the text exposition format. Families and
// samples keep the order given so diffs between runs stay readable.
func WriteMetrics(w io.Writer, fams []Family) error {
	bw := bufio.NewWriter(w)
	for _, f := range fams {
		if len(f.Samples) == 0 {
			continue
		}
		fmt.Fprintf(bw, "# HELP %s %s\n", f.Name, escapeHelp(f.Help))
		fmt.Fprintf(bw, "# TYPE %s %s\n", f.Name, f.Type)
		for _, s := range f.Samples {
			bw.WriteString(f.Name)
			writeLabels(bw, s.Labels)
			bw.WriteByte(' ')
			bw.WriteString(formatValue(s.Value))
			bw.WriteByte('\n')
		}
	}
	return bw.Flush()
}

func writeLabels(w *bufio.Writer, labels map[string]string) {
	if len(labels) == 0 {
		return
	}
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	w.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			w.WriteByte(',')
		}
		fmt.Fprintf(w, "%s=\"%s\"", k, escapeLabel(labels[k]))
	}
	w.WriteByte('}')
}

var (
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
)

func escapeLabel(s string) string { return labelEscaper.Replace(s) }
func escapeHelp(s string) string  { return helpEscaper.Replace(s) }

func formatValue(v float64) string {
	switch {
	case math.IsNaN(v):
		return "NaN"
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// WriteMetricsFile replaces path atomically: node_exporter's textfile
// collector may read it at any moment and must never see half a file.
func WriteMetricsFile(path string, fams []Family) error {
	var buf bytes.Buffer
	if err := WriteMetrics(&buf, fams); err != nil {
		return err
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing metrics to %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(buf.Bytes()); err != nil {
		tmp.Close()
		return fmt.Errorf("writing metrics to %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing metrics to %s: %w", path, err)
	}
	return nil
}

// ReadGauge finds the value of name with exactly these labels in a text
// exposition file written earlier; ok is false when it is not there.
func ReadGauge(path, name string, labels map[string]string) (v float64, ok bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	var want strings.Builder
	bw := bufio.NewWriter(&want)
	bw.WriteString(name)
	writeLabels(bw, labels)
	bw.WriteByte(' ')
	_ = bw.Flush()
	prefix := want.String()
	for _, line := range strings.Split(string(b), "\n") {
		if rest, found := strings.CutPrefix(line, prefix); found {
			f, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err == nil {
				return f, true
			}
		}
	}
	return 0, false
}

// Push sends families to a Prometheus Pushgateway as the group
// job/<job>/<label>/<value>/... PUT replaces every metric of the group;
// POST replaces only the metrics of the names sent, which keeps a metric
// left out on purpose (a last-success timestamp after a failure) in place.
func Push(ctx context.Context, client *http.Client, baseURL, method, job string, grouping [][2]string, fams []Family) error {
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	u := strings.TrimRight(baseURL, "/") + "/metrics/job/" + url.PathEscape(job)
	for _, kv := range grouping {
		u += "/" + url.PathEscape(kv[0]) + "/" + url.PathEscape(kv[1])
	}
	var buf bytes.Buffer
	if err := WriteMetrics(&buf, fams); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, method, u, &buf)
	if err != nil {
		return fmt.Errorf("pushgateway URL %q: %w", baseURL, err)
	}
	req.Header.Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("pushing metrics to %s: %w", u, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("pushing metrics to %s: %s: %s", u, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}
