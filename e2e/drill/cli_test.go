package drill_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/pkg/drill"
	"github.com/rebind-dev/rebind/pkg/report"
	"github.com/rebind-dev/rebind/pkg/snapshot"
)

// drillReport is what `rebind drill -o json` prints.
type drillReport struct {
	Results []*drill.Result `json:"results"`
	Passed  int             `json:"passed"`
	Failed  int             `json:"failed"`
	Refused int             `json:"preflightFailed"`
}

// TestDrillCLI runs the binary the way the CronJob in manifests/ does, in
// offline mode (the storage agent's volume directory stands in for the CSI
// driver's data directory mounted into rebind's pod): a refused drill (exit
// 2, nothing created), a passing one (exit 0, JSON and metrics file), and
// one restoring a damaged backup (exit 1, the loss counted), each leaving
// nothing behind.
func TestDrillCLI(t *testing.T) {
	e2eutil.NeedSandbox(t)
	bin := e2eutil.BuildRebind(t)
	r := deployGrafana(t, fixtures.Release{Name: "grafana", Replicas: 1}, 4)
	ns := r.Rel.Namespace
	metrics := filepath.Join(t.TempDir(), "drill.prom")
	drillArgs := func(extra ...string) []string {
		return append([]string{"drill", "-n", ns, "--release", r.Rel.Name,
			"--grafana-pod-url", r.Rel.Pod(0) + "=" + sb.PodURL(ns, r.Rel.Pod(0)),
			"--offline", "--offline-volume-root", filepath.Join(sb.StorageRoot(), "volumes"),
			"--scratch-namespace", r.scratch(),
			"--wait-timeout", "90s", "--snapshot-timeout", "90s", "--metrics-file", metrics}, extra...)
	}
	run := func(t *testing.T, wantCode int, extra ...string) (drillReport, e2eutil.CLIResult) {
		t.Helper()
		res := e2eutil.RunRebind(t, bin, sb.Kubeconfig, drillArgs(extra...)...)
		if res.Code != wantCode {
			t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", res.Code, wantCode, res.Stdout, res.Stderr)
		}
		var rep drillReport
		if strings.HasPrefix(strings.TrimSpace(res.Stdout), "{") { // -o json
			if err := json.Unmarshal([]byte(res.Stdout), &rep); err != nil {
				t.Fatalf("JSON report: %v\n%s", err, res.Stdout)
			}
		}
		return rep, res
	}
	// gauge reads the metrics file with the Prometheus text parser.
	gauge := func(t *testing.T, name string) float64 {
		t.Helper()
		v, ok := report.ReadGauge(metrics, name, map[string]string{"namespace": ns, "statefulset": r.Rel.FullName()})
		if !ok {
			b, _ := os.ReadFile(metrics)
			t.Fatalf("metrics file has no %s of %s/%s:\n%s", name, ns, r.Rel.FullName(), b)
		}
		return v
	}

	t.Run("refused by preflight", func(t *testing.T) {
		before := takeState(t, ns)
		_, res := run(t, 2, "--restore-storage-class", "other-driver")
		if out := res.Stdout + res.Stderr; !strings.Contains(out, "StorageClass other-driver") {
			t.Errorf("the refusal does not name the class:\n%s", out)
		}
		assertNothingLeft(t, before)
	})

	t.Run("passes", func(t *testing.T) {
		before := takeState(t, ns)
		rep, _ := run(t, 0, "-o", "json")
		if rep.Passed != 1 || len(rep.Results) != 1 {
			t.Fatalf("report: %+v", rep)
		}
		res := rep.Results[0]
		if res.Outcome != drill.Passed || res.Mode != "offline" || res.Checked != r.total() || res.Lost != 0 || time.Duration(res.Duration) <= 0 {
			t.Errorf("result: outcome %s mode %s checked %d (want %d) lost %d duration %v", res.Outcome, res.Mode, res.Checked, r.total(), res.Lost, time.Duration(res.Duration))
		}
		if v := gauge(t, "rebind_drill_success"); v != 1 {
			t.Errorf("rebind_drill_success %v, want 1", v)
		}
		assertNothingLeft(t, before, res)
	})

	t.Run("damaged backup fails", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if _, err := snapshot.Create(ctx, sb.Snap, ns, "nightly", r.Rel.Claim(0), "hostpath-snapclass", nil); err != nil {
			t.Fatal(err)
		}
		vs, err := snapshot.WaitReady(ctx, sb.Snap, ns, "nightly", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		content, err := sb.Snap.SnapshotV1().VolumeSnapshotContents().Get(ctx, *vs.Status.BoundVolumeSnapshotContentName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// The backup, not production, loses three dashboards.
		db := filepath.Join(sb.StorageRoot(), "snapshots", *content.Status.SnapshotHandle, "grafana.db")
		if err := e2eutil.DeleteSomeDashboards(db, 3); err != nil {
			t.Fatal(err)
		}
		before := takeState(t, ns)
		rep, _ := run(t, 1, "--use-latest-snapshot", "-o", "json")
		if rep.Failed != 1 || len(rep.Results) != 1 {
			t.Fatalf("report: %+v", rep)
		}
		res := rep.Results[0]
		if res.Outcome != drill.Failed || res.Lost != 3 || res.Checked != r.total() || len(res.Snapshots) != 1 || res.Snapshots[0].Snapshot != "nightly" {
			t.Errorf("result: outcome %s lost %d checked %d snapshots %+v (%s)", res.Outcome, res.Lost, res.Checked, res.Snapshots, res.Error)
		}
		if v := gauge(t, "rebind_drill_success"); v != 0 {
			t.Errorf("rebind_drill_success %v, want 0", v)
		}
		if v := gauge(t, "rebind_drill_dashboards_lost"); v != 3 {
			t.Errorf("rebind_drill_dashboards_lost %v, want 3", v)
		}
		assertNothingLeft(t, before, res)
	})
}

// TestDrillLongRunningScrape runs the binary as a long-running drill
// (--every) and scrapes its --metrics-addr with the Prometheus parser
// while it runs, then stops it with SIGINT: exit 0, nothing left behind.
func TestDrillLongRunningScrape(t *testing.T) {
	e2eutil.NeedSandbox(t)
	bin := e2eutil.BuildRebind(t)
	r := deployGrafana(t, fixtures.Release{Name: "grafana", Replicas: 1}, 3)
	ns := r.Rel.Namespace
	before := takeState(t, ns)
	cmd := exec.Command(bin, "--kubeconfig", sb.Kubeconfig, "drill", "-n", ns, "--release", r.Rel.Name,
		"--grafana-pod-url", r.Rel.Pod(0)+"="+sb.PodURL(ns, r.Rel.Pod(0)),
		"--offline", "--offline-volume-root", filepath.Join(sb.StorageRoot(), "volumes"),
		"--scratch-namespace", r.scratch(), "--wait-timeout", "90s", "--snapshot-timeout", "90s",
		"--metrics-addr", "127.0.0.1:0", "--every", "1h")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill() }()
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var addr string
	deadline := time.After(3 * time.Minute)
	for done := false; !done; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("rebind ended early:\n%s", stderr.String())
			}
			if a, found := strings.CutPrefix(l, "drill: metrics at "); found {
				addr = a
			}
			done = strings.HasPrefix(l, "drill: 1 target(s): 1 passed")
		case <-deadline:
			t.Fatalf("no finished round in 3m:\n%s", stderr.String())
		}
	}
	go func() {
		for range lines { // keep the pipe drained
		}
	}()
	if addr == "" {
		t.Fatal("no metrics address printed")
	}
	resp, err := http.Get(addr)
	if err != nil {
		t.Fatal(err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("scrape does not parse: %v", err)
	}
	for name, want := range map[string]float64{drill.MetricSuccess: 1, drill.MetricChecked: float64(r.total()), drill.MetricLost: 0} {
		fam := fams[name]
		if fam == nil || len(fam.GetMetric()) != 1 || fam.GetMetric()[0].GetGauge().GetValue() != want {
			t.Errorf("%s: %v, want one series of %v", name, fam, want)
		}
	}
	if fam := fams[drill.MetricLastSuccess]; fam == nil || fam.GetMetric()[0].GetGauge().GetValue() < float64(time.Now().Add(-5*time.Minute).Unix()) {
		t.Errorf("last success %v", fam)
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("after SIGINT between rounds: %v\n%s", err, stderr.String())
	}
	assertNothingLeft(t, before)
}
