package drill_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/pkg/drill"
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
	gauge := func(t *testing.T, name string) string {
		t.Helper()
		b, err := os.ReadFile(metrics)
		if err != nil {
			t.Fatal(err)
		}
		prefix := name + `{namespace="` + ns + `",statefulset="` + r.Rel.FullName() + `"} `
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, prefix); ok {
				return v
			}
		}
		t.Fatalf("metrics file has no %s:\n%s", prefix, b)
		return ""
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
		if v := gauge(t, "rebind_drill_success"); v != "1" {
			t.Errorf("rebind_drill_success %s, want 1", v)
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
		if v := gauge(t, "rebind_drill_success"); v != "0" {
			t.Errorf("rebind_drill_success %s, want 0", v)
		}
		if v := gauge(t, "rebind_drill_dashboards_lost"); v != "3" {
			t.Errorf("rebind_drill_dashboards_lost %s, want 3", v)
		}
		assertNothingLeft(t, before, res)
	})
}
