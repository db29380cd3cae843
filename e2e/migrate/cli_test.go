package migrate_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/rebind-dev/rebind/e2e/fixtures"
)

// buildRebind compiles the real binary once per test binary.
func buildRebind(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "rebind")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/rebind-dev/rebind/cmd/rebind")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building rebind: %v\n%s", err, out)
	}
	return bin
}

type cliResult struct {
	code           int
	stdout, stderr string
}

func runRebind(t *testing.T, bin string, args ...string) cliResult {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"--kubeconfig", sb.Kubeconfig}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return cliResult{code: code, stdout: out.String(), stderr: errb.String()}
}

// TestCLI drives the binary as an operator would: a refused run (exit 2,
// nothing changed), a server-side dry run (nothing changed), a migration
// with a JSON report (exit 0), and a rollback.
func TestCLI(t *testing.T) {
	bin := buildRebind(t)
	e := deployGrafana(t, fixtures.Release{Name: "mon", Replicas: 1}, 7)
	ns := e.Rel.Namespace
	orig := e.BoundPV(0).Name
	target := []string{"-n", ns, "--release", "mon", "--grafana-pod-url", e.Rel.Pod(0) + "=" + sb.PodURL(ns, e.Rel.Pod(0))}

	before := e.ClusterState()
	r := runRebind(t, bin, append([]string{"migrate", "--strategy", "restore", "--to-storage-class", "gold"}, target...)...)
	if r.code != 2 || !strings.Contains(r.stderr, "StorageClass gold") {
		t.Fatalf("missing class: exit %d, stderr:\n%s", r.code, r.stderr)
	}
	r = runRebind(t, bin, append([]string{"migrate", "--strategy", "restore", "--to-storage-class", "premium", "--dry-run=server"}, target...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "accepted by the API server (dry run)") {
		t.Fatalf("server dry run: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if after := e.ClusterState(); after != before {
		t.Fatalf("refused run or dry run changed the cluster:\n%s\n---\n%s", before, after)
	}

	values := filepath.Join(t.TempDir(), "values.yaml")
	r = runRebind(t, bin, append([]string{"migrate", "--strategy", "restore", "--to-storage-class", "premium", "-o", "json", "--values-out", values, "--wait-timeout", "1m"}, target...)...)
	if r.code != 0 {
		t.Fatalf("migrate: exit %d\n%s", r.code, r.stderr)
	}
	var rep struct {
		Outcome      string `json:"outcome"`
		Verification []struct {
			OK      bool `json:"ok"`
			Checked int  `json:"checked"`
		} `json:"verification"`
		VolumesAfter []struct{ PV, StorageClass string } `json:"volumesAfter"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, r.stdout)
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
	if r.code != 0 {
		t.Fatalf("rollback: exit %d\n%s", r.code, r.stderr)
	}
	if pv := e.BoundPV(0); pv.Name != orig || pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
		t.Fatalf("after rollback on %s (%s), want %s with Delete", pv.Name, pv.Spec.PersistentVolumeReclaimPolicy, orig)
	}
}
