package drill_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/pkg/drill"
	"github.com/rebind-dev/rebind/pkg/inventory"
)

// viaProxy is what rebind prints when it reaches Grafana through the API
// server's pod proxy.
const viaProxy = "reached through the API server's pod proxy"

// TestInventoryVerifyPodProxy runs `rebind inventory` and `rebind verify`
// with nothing but a kubeconfig (no --grafana-url): the release's Grafana is
// reached through the real API server's pod proxy (the sandbox's pod network
// behind it), for a StatefulSet (by ordinal) and a Deployment (its current
// pod). The inventory equals what the Grafana serves at its own URL;
// verify passes against it, and fails once the volume loses dashboards.
func TestInventoryVerifyPodProxy(t *testing.T) {
	e2eutil.NeedSandbox(t)
	bin := e2eutil.BuildRebind(t)
	for _, rel := range []fixtures.Release{{Name: "grafana", Replicas: 2}, {Name: "grafana", Deployment: true, Replicas: 1}} {
		name := "StatefulSet"
		if rel.Deployment {
			name = "Deployment"
		}
		t.Run(name, func(t *testing.T) {
			r := deployGrafana(t, rel, 4)
			ns := r.Rel.Namespace
			ord := 0
			args := []string{"-n", ns, "--release", r.Rel.Name}
			if !rel.Deployment {
				ord = 1 // the other replica: its own volume, its own dashboards
				args = append(args, "--ordinal", "1")
			}
			file := filepath.Join(t.TempDir(), "baseline.json")
			res := e2eutil.RunRebind(t, bin, sb.Kubeconfig, append([]string{"inventory", "-o", file}, args...)...)
			if res.Code != 0 || !strings.Contains(res.Stderr, viaProxy) {
				t.Fatalf("inventory: exit %d, want 0 through the pod proxy:\n%s\n%s", res.Code, res.Stdout, res.Stderr)
			}
			got, err := inventory.LoadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			want := r.Inventory(ord)
			e2eutil.AssertSameDashboards(t, want, got)
			if got.Totals().Dashboards != r.Dashboards[ord] {
				t.Fatalf("inventory holds %d dashboards, ordinal %d was seeded with %d", got.Totals().Dashboards, ord, r.Dashboards[ord])
			}

			res = e2eutil.RunRebind(t, bin, sb.Kubeconfig, append([]string{"verify", "--baseline", file}, args...)...)
			if res.Code != 0 || !strings.Contains(res.Stderr, viaProxy) {
				t.Fatalf("verify: exit %d, want 0:\n%s\n%s", res.Code, res.Stdout, res.Stderr)
			}

			// The volume loses two dashboards: verify through the proxy
			// says so.
			dir, err := fixtures.VolumeDir(sb.StorageRoot(), r.BoundPV(ord))
			if err != nil {
				t.Fatal(err)
			}
			if err := e2eutil.DeleteSomeDashboards(filepath.Join(dir, "grafana.db"), 2); err != nil {
				t.Fatal(err)
			}
			res = e2eutil.RunRebind(t, bin, sb.Kubeconfig, append([]string{"verify", "--baseline", file}, args...)...)
			if res.Code != 1 || !strings.Contains(res.Stdout, "2 missing") {
				t.Fatalf("verify after losing 2 dashboards: exit %d, want 1 naming them:\n%s\n%s", res.Code, res.Stdout, res.Stderr)
			}
		})
	}
}

// TestInventoryPodProxyAsServiceAccount runs `rebind inventory` as the
// ServiceAccount of manifests/rbac-migrate.yaml with a token kubeconfig:
// the token is the Authorization header the API server keeps for itself,
// and Grafana's session cookie passes its pod proxy. Without `get
// pods/proxy` it is refused naming the verb (exit 2).
func TestInventoryPodProxyAsServiceAccount(t *testing.T) {
	e2eutil.NeedSandbox(t)
	a := migrateAccounts(t)
	r, ns, full, less := a.release, a.ns, a.full, a.less
	run := func(sa string) e2eutil.CLIResult { return a.run(sa, "inventory", "-n", ns, "--release", "grafana") }
	if res := run(less); res.Code != 2 || !strings.Contains(res.Stderr, "not allowed to get pods/proxy in namespace "+ns) {
		t.Fatalf("without get pods/proxy: exit %d, want 2 naming it:\n%s", res.Code, res.Stderr)
	}
	res := run(full)
	if res.Code != 0 {
		t.Fatalf("as %s: exit %d\n%s", full, res.Code, res.Stderr)
	}
	var got inventory.Inventory
	if err := json.Unmarshal([]byte(res.Stdout), &got); err != nil {
		t.Fatalf("inventory JSON: %v\n%s", err, res.Stdout)
	}
	e2eutil.AssertSameDashboards(t, r.Inventory(0), &got)
}

// TestDrillOnlinePodProxy runs an online `rebind drill` with nothing but a
// kubeconfig: production's Grafana and the restored copy's, in the scratch
// namespace, are both reached through the API server's pod proxy (the copy's
// pod gets its address from kwok like any pod, and the sandbox's pod
// network serves the Grafana runner's backend for it). Then as the
// rebind-drill ServiceAccount with a token kubeconfig: refused naming
// pods/proxy with rbac-drill.yaml alone, passing with
// rbac-drill-pod-proxy.yaml on top.
func TestDrillOnlinePodProxy(t *testing.T) {
	e2eutil.NeedSandbox(t)
	bin := e2eutil.BuildRebind(t)
	drillRun := func(t *testing.T, kubeconfig string, r *release, scratch string, wantCode int) (*drill.Result, e2eutil.CLIResult) {
		t.Helper()
		res := e2eutil.RunRebind(t, bin, kubeconfig, "drill", "-n", r.Rel.Namespace, "--release", r.Rel.Name, "--scratch-namespace", scratch,
			"--wait-timeout", "90s", "--snapshot-timeout", "90s", "--verify-timeout", "60s", "-o", "json")
		var rep drillReport
		if err := json.Unmarshal([]byte(res.Stdout), &rep); err != nil || len(rep.Results) != 1 {
			t.Fatalf("exit %d, JSON report: %v\n%s\n%s", res.Code, err, res.Stdout, res.Stderr)
		}
		if res.Code != wantCode {
			t.Fatalf("exit %d, want %d\n%s\n%s", res.Code, wantCode, res.Stdout, res.Stderr)
		}
		return rep.Results[0], res
	}

	t.Run("admin kubeconfig", func(t *testing.T) {
		r := deployGrafana(t, fixtures.Release{Name: "grafana", Replicas: 1}, 4)
		before := takeState(t, r.Rel.Namespace)
		res, out := drillRun(t, sb.Kubeconfig, r, r.scratch(), 0)
		t.Logf("online drill through the pod proxy: %s", time.Duration(res.Duration))
		if res.Outcome != drill.Passed || res.Mode != "online" || res.Checked != r.total() || res.Lost != 0 || !strings.Contains(out.Stderr, viaProxy) {
			t.Errorf("result: %s %s checked %d of %d, lost %d (%s)\n%s", res.Outcome, res.Mode, res.Checked, r.total(), res.Lost, res.Error, out.Stderr)
		}
		assertNothingLeft(t, before, res)
	})

	t.Run("ServiceAccount", func(t *testing.T) {
		ns := sb.NewNamespace(t)
		full := applyRBAC(t, "rbac-drill.yaml", ns, "full-"+ns, nil)
		applyRBAC(t, "rbac-drill-pod-proxy.yaml", ns, "full-"+ns, nil)
		less := applyRBAC(t, "rbac-drill.yaml", ns, "less-"+ns, nil)
		r := deployGrafana(t, fixtures.Release{Name: "grafana", Namespace: ns, Replicas: 1}, 4)
		kc := func(sa string) string {
			path, err := sb.ServiceAccountKubeconfig(context.Background(), ns, sa)
			if err != nil {
				t.Fatal(err)
			}
			return path
		}

		before := takeState(t, ns)
		res, _ := drillRun(t, kc(less), r, scratchFor("less-"+ns), 2)
		if res.Outcome != drill.Refused || !strings.Contains(res.Error, "not allowed to get pods/proxy in namespace "+ns) ||
			!strings.Contains(res.Error, "not allowed to get pods/proxy in namespace "+scratchFor("less-"+ns)) || !strings.Contains(res.Error, "rbac-drill-pod-proxy.yaml") {
			t.Errorf("without the pod proxy add-on: %s: %s", res.Outcome, res.Error)
		}
		assertNothingLeft(t, before, res)

		before = takeState(t, ns)
		res, _ = drillRun(t, kc(full), r, scratchFor("full-"+ns), 0)
		if res.Outcome != drill.Passed || res.Checked != r.total() {
			t.Errorf("as %s: %s checked %d of %d (%s)", full, res.Outcome, res.Checked, r.total(), res.Error)
		}
		assertNothingLeft(t, before, res)
	})
}

// proxyAccounts is a release and two ServiceAccounts of
// manifests/rbac-migrate.yaml in its namespace: full as shipped, less
// without `get pods/proxy`; run runs the binary as one of them with a
// token kubeconfig.
type proxyAccounts struct {
	release    *release
	ns         string
	full, less string
	run        func(sa string, args ...string) e2eutil.CLIResult
}

func migrateAccounts(t *testing.T) proxyAccounts {
	t.Helper()
	bin := e2eutil.BuildRebind(t)
	ns := sb.NewNamespace(t)
	a := proxyAccounts{ns: ns,
		full: applyRBAC(t, "rbac-migrate.yaml", ns, "full-"+ns, nil),
		less: applyRBAC(t, "rbac-migrate.yaml", ns, "less-"+ns, &dropVerb{"Role", "rebind-migrate", "pods/proxy", "get"})}
	a.release = deployGrafana(t, fixtures.Release{Name: "grafana", Namespace: ns, Replicas: 1}, 4)
	a.run = func(sa string, args ...string) e2eutil.CLIResult {
		t.Helper()
		kc, err := sb.ServiceAccountKubeconfig(context.Background(), ns, sa)
		if err != nil {
			t.Fatal(err)
		}
		return e2eutil.RunRebind(t, bin, kc, args...)
	}
	return a
}
