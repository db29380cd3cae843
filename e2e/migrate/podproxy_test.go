package migrate_test

import (
	"strings"
	"testing"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/pkg/report"
)

// TestPodProxyWithOnlyAKubeconfig runs the binary from outside the cluster
// with nothing but the kubeconfig: no Grafana URL. Grafana is reached
// through the real API server's pod proxy (the sandbox's pod network
// carries the last hop to the pod IP), the chart's Secret gives the
// credentials, and every dashboard of every pod is verified after the
// swap, on the new pod of the same name (StatefulSet) or the Deployment's
// new pod under a new name.
func TestPodProxyWithOnlyAKubeconfig(t *testing.T) {
	e2eutil.NeedSandbox(t)
	bin := e2eutil.BuildRebind(t)
	for _, tc := range []struct {
		name string
		rel  fixtures.Release
	}{
		{"statefulset with 2 replicas", fixtures.Release{Name: "mon", Replicas: 2}},
		{"deployment", fixtures.Release{Name: "kps", Replicas: 1, Deployment: true, Subchart: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := deployGrafana(t, tc.rel, 3)
			ns := e.Rel.Namespace
			r := runRebind(t, bin, "migrate", "-n", ns, "--release", tc.rel.Name, "--strategy", "restore", "--to-storage-class", "premium",
				"-o", "json", "--wait-timeout", "1m", "--verify-timeout", "1m")
			if r.Code != 0 {
				t.Fatalf("migrate: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
			}
			if !strings.Contains(r.Stderr, "reached through the API server's pod proxy") {
				t.Errorf("no word of the pod proxy:\n%s", r.Stderr)
			}
			rep := r.Report(t)
			if rep.Outcome != report.Succeeded || len(rep.Verification) != int(tc.rel.Replicas) {
				t.Fatalf("outcome %s, %d verifications, want %d", rep.Outcome, len(rep.Verification), tc.rel.Replicas)
			}
			for i, v := range rep.Verification {
				if !v.OK || v.Checked != e.Dashboards[i] || v.Checked == 0 {
					t.Errorf("verification %d: ok %v, checked %d of %d", i, v.OK, v.Checked, e.Dashboards[i])
				}
			}
			for i := range int(tc.rel.Replicas) {
				if pv := e.BoundPV(i); pv.Spec.StorageClassName != "premium" {
					t.Errorf("ordinal %d on %s of class %s, want premium", i, pv.Name, pv.Spec.StorageClassName)
				}
			}
		})
	}
}

// TestPodProxyRefusesTokens: a Grafana token travels in the Authorization
// header, which the pod proxy keeps for the API server; refused before
// anything changes, naming the ways out.
func TestPodProxyRefusesTokens(t *testing.T) {
	e2eutil.NeedSandbox(t)
	bin := e2eutil.BuildRebind(t)
	e := deployGrafana(t, fixtures.Release{Name: "grafana", Replicas: 1}, 2)
	before := e.ClusterState()
	r := runRebind(t, bin, "migrate", "-n", e.Rel.Namespace, "--release", "grafana", "--strategy", "restore", "--to-storage-class", "premium",
		"--grafana-token", "glsa_org1")
	if r.Code != 2 || !strings.Contains(r.Stderr, "pod proxy") || !strings.Contains(r.Stderr, "--grafana-url") {
		t.Fatalf("exit %d, want 2 naming the pod proxy and --grafana-url:\n%s", r.Code, r.Stderr)
	}
	if after := e.ClusterState(); after != before {
		t.Fatalf("cluster changed:\n%s\n---\n%s", before, after)
	}
}
