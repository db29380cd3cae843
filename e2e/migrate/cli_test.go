package migrate_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/fixtures"
)

func runRebind(t *testing.T, bin string, args ...string) e2eutil.CLIResult {
	t.Helper()
	return e2eutil.RunRebind(t, bin, sb.Kubeconfig, args...)
}

// TestCLI drives the binary as an operator would: a refused run (exit 2,
// nothing changed), a server-side dry run (nothing changed), a migration
// with a JSON report (exit 0), and a rollback.
func TestCLI(t *testing.T) {
	e2eutil.NeedSandbox(t)
	bin := e2eutil.BuildRebind(t)
	e := deployGrafana(t, fixtures.Release{Name: "mon", Replicas: 1}, 7)
	ns := e.Rel.Namespace
	orig := e.BoundPV(0).Name
	target := []string{"-n", ns, "--release", "mon", "--grafana-pod-url", e.Rel.Pod(0) + "=" + sb.PodURL(ns, e.Rel.Pod(0))}

	before := e.ClusterState()
	r := runRebind(t, bin, append([]string{"migrate", "--strategy", "restore", "--to-storage-class", "gold"}, target...)...)
	if r.Code != 2 || !strings.Contains(r.Stderr, "StorageClass gold") {
		t.Fatalf("missing class: exit %d, stderr:\n%s", r.Code, r.Stderr)
	}
	r = runRebind(t, bin, append([]string{"migrate", "--strategy", "restore", "--to-storage-class", "premium", "--dry-run=server"}, target...)...)
	if r.Code != 0 || !strings.Contains(r.Stdout, "accepted by the API server (dry run)") {
		t.Fatalf("server dry run: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	if after := e.ClusterState(); after != before {
		t.Fatalf("refused run or dry run changed the cluster:\n%s\n---\n%s", before, after)
	}

	values := filepath.Join(t.TempDir(), "values.yaml")
	r = runRebind(t, bin, append([]string{"migrate", "--strategy", "restore", "--to-storage-class", "premium", "-o", "json", "--values-out", values, "--wait-timeout", "1m"}, target...)...)
	if r.Code != 0 {
		t.Fatalf("migrate: exit %d\n%s", r.Code, r.Stderr)
	}
	var rep struct {
		Outcome      string `json:"outcome"`
		Verification []struct {
			OK      bool `json:"ok"`
			Checked int  `json:"checked"`
		} `json:"verification"`
		VolumesAfter []struct{ PV, StorageClass string } `json:"volumesAfter"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, r.Stdout)
	}
	if rep.Outcome != "succeeded" || len(rep.Verification) != 1 || !rep.Verification[0].OK || rep.Verification[0].Checked != e.Dashboards[0] {
		t.Fatalf("report: %+v", rep)
	}
	if rep.VolumesAfter[0].StorageClass != "premium" {
		t.Fatalf("volumes after: %+v", rep.VolumesAfter)
	}
	v, err := os.ReadFile(values)
	if err != nil || !strings.Contains(string(v), "volumeName: \""+rep.VolumesAfter[0].PV+"\"") || !strings.Contains(string(v), "storageClassName: \"premium\"") {
		t.Fatalf("values file: %v\n%s", err, v)
	}

	r = runRebind(t, bin, "rollback", "-n", ns, "--statefulset", e.Rel.FullName())
	if r.Code != 0 {
		t.Fatalf("rollback: exit %d\n%s", r.Code, r.Stderr)
	}
	if pv := e.BoundPV(0); pv.Name != orig || pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
		t.Fatalf("after rollback on %s (%s), want %s with Delete", pv.Name, pv.Spec.PersistentVolumeReclaimPolicy, orig)
	}
}
