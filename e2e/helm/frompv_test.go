package helm_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	helmrelease "helm.sh/helm/v3/pkg/release"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/e2e/grafanastandin"
	"github.com/rebind-dev/rebind/pkg/inventory"
	"github.com/rebind-dev/rebind/pkg/migrate"
	"github.com/rebind-dev/rebind/pkg/preflight"
	"github.com/rebind-dev/rebind/pkg/report"
	"github.com/rebind-dev/rebind/pkg/volume"
)

// readFromSandbox reads a PV's grafana.db where the sandbox storage agent
// keeps its directory (what --offline-volume-root does on a host-path
// style driver).
func readFromSandbox(_ context.Context, pv *corev1.PersistentVolume) (string, func(), error) {
	dir, err := fixtures.VolumeDir(sb.StorageRoot(), pv)
	return filepath.Join(dir, grafanastandin.DBFile), nil, err
}

// uninstalled is a release installed with the test chart, seeded, its PV
// set to Retain, then `helm uninstall`ed (Helm SDK): the PV is Released,
// its claimRef naming the dead claim's uid, and nothing points at it.
type uninstalled struct {
	*release
	pv       *corev1.PersistentVolume // as left by the uninstall
	base     *inventory.Inventory
	values   string // the release's values file, as the user keeps it
	persists map[string]any
}

func installThenUninstall(t *testing.T, deployment bool, perOrg int) *uninstalled {
	t.Helper()
	persistence := map[string]any{"type": "statefulset"}
	if deployment {
		persistence["type"] = "pvc"
	}
	r := installWith(t, perOrg, fixtures.Release{Name: "grafana", Replicas: 1, Deployment: deployment}, persistence)
	u := &uninstalled{release: r, base: r.Inventory(0), persists: persistence}
	pv := r.BoundPV(0)
	if _, err := volume.SetReclaimPolicy(r.Ctx, sb.Kube, pv.Name, corev1.PersistentVolumeReclaimRetain, false); err != nil {
		t.Fatal(err)
	}
	claim, err := sb.Kube.CoreV1().PersistentVolumeClaims(r.Rel.Namespace).Get(r.Ctx, r.Rel.Claim(0), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := action.NewUninstall(r.helm.Configuration()).Run(r.Rel.Name); err != nil {
		t.Fatal(err)
	}
	if !deployment {
		// A StatefulSet's claims are not Helm's: they outlive the
		// uninstall. Gone with them (as after a namespace cleanup), the PV
		// is what is left.
		if err := sb.Kube.CoreV1().PersistentVolumeClaims(r.Rel.Namespace).Delete(r.Ctx, claim.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := volume.WaitClaimGone(r.Ctx, sb.Kube, r.Rel.Namespace, claim.Name, claim.UID, time.Minute); err != nil {
		t.Fatal(err)
	}
	if u.pv, err = volume.WaitPVPhase(r.Ctx, sb.Kube, pv.Name, time.Minute, corev1.VolumeReleased); err != nil {
		t.Fatal(err)
	}
	if u.pv.Spec.ClaimRef == nil || u.pv.Spec.ClaimRef.UID != claim.UID {
		t.Fatalf("after the uninstall PV %s has claimRef %+v, want the dead claim's uid %s", pv.Name, u.pv.Spec.ClaimRef, claim.UID)
	}
	u.values = u.writeValues(nil)
	return u
}

// writeValues writes the release's values (as installWith installed them)
// with persistence overrides, to a file as a user passes with -f.
func (u *uninstalled) writeValues(over map[string]any) string {
	u.T.Helper()
	// persistence.enabled as the user's values must say it (the upstream
	// chart's default is false).
	p := map[string]any{"storageClassName": "standard", "enabled": true, "size": "1Gi"}
	for k, v := range u.persists {
		p[k] = v
	}
	for k, v := range over {
		p[k] = v
	}
	b, err := yaml.Marshal(map[string]any{"adminPassword": u.Rel.Password, "persistence": p})
	if err != nil {
		u.T.Fatal(err)
	}
	f := filepath.Join(u.T.TempDir(), "values.yaml")
	if err := os.WriteFile(f, b, 0o600); err != nil {
		u.T.Fatal(err)
	}
	return f
}

func (u *uninstalled) options(install *migrate.InstallOptions) migrate.Options {
	o := u.targeting(migrate.Options{Strategy: migrate.Reuse, FromPV: u.pv.Name, ReadDB: readFromSandbox, Install: install})
	if install != nil && !install.ValuesOnly {
		o.Redeploy = migrate.RedeployHelm
	}
	return o
}

func (u *uninstalled) currentPV() *corev1.PersistentVolume {
	u.T.Helper()
	pv, err := sb.Kube.CoreV1().PersistentVolumes().Get(u.Ctx, u.pv.Name, metav1.GetOptions{})
	if err != nil {
		u.T.Fatalf("PersistentVolume %s: %v", u.pv.Name, err)
	}
	return pv
}

// assertNoRelease: Helm knows no release of that name.
func (u *uninstalled) assertNoRelease() {
	u.T.Helper()
	if rel, err := u.helm.Exists(u.Rel.Name); err != nil || rel != nil {
		u.T.Fatalf("Helm release %s: %v %v, want none", u.Rel.Name, rel, err)
	}
}

// TestFromPVInstallAfterUninstall: the release is gone, its data on a
// Released PV. `rebind migrate --strategy reuse --from-pv PV --redeploy
// helm --chart ... -f values` installs the release onto that PV and
// verifies every dashboard against the PV's own grafana.db, read offline
// before anything changed; for both persistence types. The StatefulSet run
// is killed right after the install and resumed. A rollback then
// uninstalls what rebind installed and leaves the PV as found: Released
// for the dead claim, Retain.
func TestFromPVInstallAfterUninstall(t *testing.T) {
	e2eutil.NeedSandbox(t)
	for _, tc := range []struct {
		name          string
		deployment    bool
		existingClaim string
		killAfter     string
	}{
		{name: "statefulset", killAfter: "helm-install"},
		{name: "deployment", deployment: true, killAfter: "reserve/0"},
		// The values name a claim of the user's (persistence.existingClaim)
		// that is gone too: rebind creates it, pre-bound to the PV.
		{name: "existing-claim", deployment: true, existingClaim: "grafana-data", killAfter: "claim/0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := installThenUninstall(t, tc.deployment, 5)
			found := u.pv.Spec.ClaimRef.DeepCopy()
			values := u.values
			if tc.existingClaim != "" {
				values = u.writeValues(map[string]any{"existingClaim": tc.existingClaim})
				u.Rel.ExistingClaim = tc.existingClaim
			}
			o := u.options(&migrate.InstallOptions{Chart: chartDir, ValuesFiles: []string{values}})

			killed := errors.New("killed")
			m := u.Migrator()
			m.AfterStep = func(_ context.Context, id string) error {
				if id == tc.killAfter {
					return killed
				}
				return nil
			}
			if _, err := m.Run(u.Ctx, o, migrate.Apply); !errors.Is(err, killed) {
				t.Fatalf("want the run killed after %s, got %v", tc.killAfter, err)
			}
			start := time.Now()
			rep, err := u.Migrator().Run(u.Ctx, o, migrate.Apply)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("resumed run: %s", time.Since(start).Round(time.Millisecond))
			u.AssertVerified(rep)
			if pv := u.BoundPV(0); pv.Name != u.pv.Name {
				t.Fatalf("the release runs on %s, want %s", pv.Name, u.pv.Name)
			}
			u.waitReady()
			e2eutil.AssertSameDashboards(t, u.base, u.Inventory(0))
			rel, err := u.helm.Release(u.Rel.Name)
			if err != nil {
				t.Fatal(err)
			}
			p, _ := rel.Config["persistence"].(map[string]any)
			if rel.Info.Status != helmrelease.StatusDeployed || p["volumeName"] != u.pv.Name {
				t.Errorf("release %s at revision %d %s, values %v; want deployed with persistence.volumeName %s", rel.Name, rel.Version, rel.Info.Status, rel.Config, u.pv.Name)
			}
			if got := u.currentPV().Spec.PersistentVolumeReclaimPolicy; got != corev1.PersistentVolumeReclaimRetain {
				t.Errorf("PV policy %s after the run, want Retain (as found)", got)
			}
			// The user's next plain upgrade keeps the claim.
			if err := u.upgrade(nil); err != nil {
				t.Fatalf("plain helm upgrade after rebind's install: %v", err)
			}
			if pv := u.BoundPV(0); pv.Name != u.pv.Name {
				t.Fatalf("after the upgrade the release runs on %s, want %s", pv.Name, u.pv.Name)
			}

			// Rollback: uninstalled, the PV as found (no claim, the dead
			// claim's uid), Retain, never deleted.
			if _, err := u.Migrator().Rollback(u.Ctx, u.Rel.Namespace, u.Rel.FullName()); err == nil {
				t.Fatal("a release upgraded after rebind's install was uninstalled by the rollback; want a refusal naming the upgrade")
			} else if !strings.Contains(err.Error(), "upgraded it after rebind's install") {
				t.Fatalf("rollback refused for another reason: %v", err)
			}
			// The user uninstalls it, as the message says, and rolls back again.
			if _, err := action.NewUninstall(u.helm.Configuration()).Run(u.Rel.Name); err != nil {
				t.Fatal(err)
			}
			if _, err := u.Migrator().Rollback(u.Ctx, u.Rel.Namespace, u.Rel.FullName()); err != nil {
				t.Fatal(err)
			}
			u.assertNoRelease()
			pv := u.currentPV()
			if pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimRetain {
				t.Errorf("policy %s after rollback, want Retain", pv.Spec.PersistentVolumeReclaimPolicy)
			}
			if r := pv.Spec.ClaimRef; r == nil || r.UID != found.UID || r.Name != found.Name || r.Namespace != found.Namespace {
				t.Errorf("claimRef after rollback %+v, want as found %+v", r, found)
			}
			if _, err := sb.Kube.CoreV1().PersistentVolumeClaims(u.Rel.Namespace).Get(u.Ctx, u.Rel.Claim(0), metav1.GetOptions{}); err == nil {
				t.Errorf("claim %s still exists after the rollback", u.Rel.Claim(0))
			}
		})
	}
}

func (u *uninstalled) waitReady() {
	u.T.Helper()
	if err := u.WaitReady(time.Minute); err != nil {
		u.T.Fatal(err)
	}
}

// TestFromPVInstallRollbackRightAfter: a rollback of a completed install
// that nobody upgraded since uninstalls it and gives the PV back as found.
func TestFromPVInstallRollbackRightAfter(t *testing.T) {
	e2eutil.NeedSandbox(t)
	u := installThenUninstall(t, true, 3)
	found := u.pv.Spec.ClaimRef.DeepCopy()
	rep, err := u.Migrator().Run(u.Ctx, u.options(&migrate.InstallOptions{Chart: chartDir, ValuesFiles: []string{u.values}}), migrate.Apply)
	if err != nil {
		t.Fatal(err)
	}
	u.AssertVerified(rep)
	if _, err := u.Migrator().Rollback(u.Ctx, u.Rel.Namespace, u.Rel.FullName()); err != nil {
		t.Fatal(err)
	}
	u.assertNoRelease()
	pv := u.currentPV()
	if r := pv.Spec.ClaimRef; r == nil || r.UID != found.UID || pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimRetain {
		t.Errorf("after rollback: claimRef %+v policy %s, want %+v and Retain", r, pv.Spec.PersistentVolumeReclaimPolicy, found)
	}
	if _, err := volume.WaitPVPhase(u.Ctx, sb.Kube, pv.Name, time.Minute, corev1.VolumeReleased); err != nil {
		t.Errorf("PV after rollback: %v, want Released again", err)
	}
}

// TestFromPVValuesOutOnly: --values-out alone prepares the PV (Retain,
// reserved for the exact claim the chart will create, the stale uid
// replaced) and prints the values and the helm command, then stops; the
// run says nothing was verified. The user's install with those values
// (Helm SDK) then binds the claim to that PV and serves every dashboard.
func TestFromPVValuesOutOnly(t *testing.T) {
	e2eutil.NeedSandbox(t)
	u := installThenUninstall(t, false, 4)
	o := u.options(&migrate.InstallOptions{ValuesFiles: []string{u.values}, ValuesOnly: true, ValuesOut: "rebind-values.yaml"})
	o.ReadDB = nil
	rep, err := u.Migrator().Run(u.Ctx, o, migrate.Apply)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Outcome != report.Unverified || len(rep.Verification) != 0 {
		t.Fatalf("outcome %s, verification %+v: want unverified, nothing compared", rep.Outcome, rep.Verification)
	}
	if w := strings.Join(rep.Warnings, "\n"); !strings.Contains(w, "NOT verified") {
		t.Errorf("warnings %q do not say the run is unverified", w)
	}
	notes := strings.Join(rep.Notes, "\n")
	want := "helm install grafana grafana/grafana -n " + u.Rel.Namespace + " -f " + u.values + " -f rebind-values.yaml"
	if !strings.Contains(notes, want) {
		t.Errorf("notes %q lack the command %q", notes, want)
	}
	p, _ := rep.HelmValues["persistence"].(map[string]any)
	if p["volumeName"] != u.pv.Name {
		t.Fatalf("values %v, want persistence.volumeName %s", rep.HelmValues, u.pv.Name)
	}
	pv := u.currentPV()
	if r := pv.Spec.ClaimRef; r == nil || r.UID != "" || r.Name != u.Rel.Claim(0) || r.Namespace != u.Rel.Namespace || pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimRetain {
		t.Fatalf("PV after --values-out: claimRef %+v, policy %s; want reserved for %s (no uid), Retain", r, pv.Spec.PersistentVolumeReclaimPolicy, u.Rel.Claim(0))
	}
	u.assertNoRelease()

	// What the user does next, with the values rebind printed.
	ch, err := loadChart()
	if err != nil {
		t.Fatal(err)
	}
	inst := action.NewInstall(u.helm.Configuration())
	inst.ReleaseName, inst.Namespace = u.Rel.Name, u.Rel.Namespace
	p = map[string]any{"storageClassName": "standard", "volumeName": u.pv.Name}
	for k, v := range u.persists {
		p[k] = v
	}
	if _, err := inst.RunWithContext(u.Ctx, ch, map[string]any{"adminPassword": u.Rel.Password, "persistence": p}); err != nil {
		t.Fatal(err)
	}
	u.waitReady()
	if got := u.BoundPV(0); got.Name != u.pv.Name {
		t.Fatalf("the install runs on %s, want %s", got.Name, u.pv.Name)
	}
	e2eutil.AssertSameDashboards(t, u.base, u.Inventory(0))
}

// TestFromPVInstallRefusals: each bad input is refused before anything
// changes (cluster state and Helm asserted), naming the object and the fix.
func TestFromPVInstallRefusals(t *testing.T) {
	e2eutil.NeedSandbox(t)
	u := installThenUninstall(t, true, 2)
	other := installWith(t, 2, fixtures.Release{Name: "other-grafana", Replicas: 1}, nil)
	taken := other.BoundPV(0)
	for _, tc := range []struct {
		name  string
		o     func() migrate.Options
		wants []string
	}{
		{"pv bound to another claim", func() migrate.Options {
			o := u.options(&migrate.InstallOptions{Chart: chartDir, ValuesFiles: []string{u.values}})
			o.FromPV = taken.Name
			return o
		}, []string{"PersistentVolume " + taken.Name, other.Rel.Namespace + "/" + other.Rel.Claim(0)}},
		{"class mismatch", func() migrate.Options {
			return u.options(&migrate.InstallOptions{Chart: chartDir, ValuesFiles: []string{u.writeValues(map[string]any{"storageClassName": "premium"})}})
		}, []string{"PersistentVolume " + u.pv.Name, "storageClassName differs", `persistence.storageClassName="standard"`}},
		{"size mismatch", func() migrate.Options {
			return u.options(&migrate.InstallOptions{Chart: chartDir, ValuesFiles: []string{u.writeValues(map[string]any{"size": "5Gi"})}})
		}, []string{"PersistentVolume " + u.pv.Name, "smaller than the request 5Gi"}},
		{"no chart", func() migrate.Options {
			o := u.options(nil)
			o.Redeploy = migrate.RedeployHelm
			return o
		}, []string{"nothing points at PersistentVolume " + u.pv.Name, "--chart"}},
		{"chart without --redeploy helm", func() migrate.Options {
			o := u.options(&migrate.InstallOptions{Chart: chartDir, ValuesFiles: []string{u.values}})
			o.Redeploy = ""
			return o
		}, []string{"--chart", "needs --redeploy helm"}},
		{"--to-storage-class the chart does not ask for", func() migrate.Options {
			o := u.options(&migrate.InstallOptions{Chart: chartDir, ValuesFiles: []string{u.values}})
			o.ToClass = "premium"
			return o
		}, []string{"--to-storage-class", "persistence.storageClassName"}},
		{"namespace gone", func() migrate.Options {
			o := u.options(&migrate.InstallOptions{Chart: chartDir, ValuesFiles: []string{u.values}})
			o.Target.Namespace = u.Rel.Namespace + "-deleted"
			return o
		}, []string{"namespace " + u.Rel.Namespace + "-deleted", "kubectl create namespace"}},
		{"persistence off", func() migrate.Options {
			return u.options(&migrate.InstallOptions{Chart: chartDir, ValuesFiles: []string{u.writeValues(map[string]any{"enabled": false})}})
		}, []string{"renders no Grafana"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, otherBefore := u.ClusterState(), other.ClusterState()
			_, err := u.Migrator().Run(u.Ctx, tc.o(), migrate.Apply)
			if err == nil {
				t.Fatal("want a refusal")
			}
			var pf *preflight.Error
			if tc.name != "no chart" && !errors.As(err, &pf) {
				t.Errorf("want a preflight error, got %T: %v", err, err)
			}
			for _, w := range tc.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
			if after := u.ClusterState(); after != before {
				t.Errorf("a refused run changed the cluster:\n%s\n---\n%s", before, after)
			}
			if after := other.ClusterState(); after != otherBefore {
				t.Errorf("a refused run changed the other release:\n%s\n---\n%s", otherBefore, after)
			}
			u.assertNoRelease()
		})
	}
}

func loadChart() (*chart.Chart, error) { return loader.Load(chartDir) }

// TestFromPVInstallCLI drives the binary as the operator would after a
// `helm uninstall` of a Deployment-mode release: first --values-out alone
// (exit 0, outcome unverified, the values file and the helm command), then
// --redeploy helm --chart, verified against the PV's own grafana.db read
// under --offline-volume-root.
func TestFromPVInstallCLI(t *testing.T) {
	e2eutil.NeedSandbox(t)
	bin := e2eutil.BuildRebind(t)
	u := installThenUninstall(t, true, 4)
	ns := u.Rel.Namespace
	chartPath, err := filepath.Abs(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	common := []string{"migrate", "-n", ns, "--release", u.Rel.Name, "--strategy", "reuse", "--from-pv", u.pv.Name, "-f", u.values,
		"--grafana-pod-url", u.Rel.Pod(0) + "=" + sb.PodURL(ns, u.Rel.Pod(0)), "--wait-timeout", "1m", "-o", "json"}

	valuesOut := filepath.Join(t.TempDir(), "rebind-values.yaml")
	r := e2eutil.RunRebind(t, bin, sb.Kubeconfig, append(common, "--values-out", valuesOut)...)
	if r.Code != 0 {
		t.Fatalf("--values-out: exit %d\n%s", r.Code, r.Stderr)
	}
	if rep := r.Report(t); rep.Outcome != report.Unverified || !strings.Contains(strings.Join(rep.Notes, "\n"), "-f "+valuesOut) {
		t.Fatalf("--values-out report: outcome %s, notes %v", rep.Outcome, rep.Notes)
	}
	if v, err := os.ReadFile(valuesOut); err != nil || !strings.Contains(string(v), u.pv.Name) {
		t.Fatalf("values file: %v\n%s", err, v)
	}
	u.assertNoRelease()

	start := time.Now()
	r = e2eutil.RunRebind(t, bin, sb.Kubeconfig, append(common, "--redeploy", "helm", "--chart", chartPath, "--offline-volume-root", filepath.Join(sb.StorageRoot(), "volumes"))...)
	if r.Code != 0 {
		t.Fatalf("--chart: exit %d\n%s", r.Code, r.Stderr)
	}
	t.Logf("install onto %s through the binary: %s", u.pv.Name, time.Since(start).Round(time.Millisecond))
	u.AssertVerified(r.Report(t))
	if pv := u.BoundPV(0); pv.Name != u.pv.Name {
		t.Fatalf("the release runs on %s, want %s", pv.Name, u.pv.Name)
	}
	e2eutil.AssertSameDashboards(t, u.base, u.Inventory(0))
}

// TestFromPVInstallWithoutReferenceIsUnverified: no --baseline and no way
// to read the PV's database: the release is installed onto the PV, but the
// run ends "unverified", never a pass, and says why.
func TestFromPVInstallWithoutReferenceIsUnverified(t *testing.T) {
	e2eutil.NeedSandbox(t)
	u := installThenUninstall(t, false, 2)
	o := u.options(&migrate.InstallOptions{Chart: chartDir, ValuesFiles: []string{u.values}})
	o.ReadDB = nil
	rep, err := u.Migrator().Run(u.Ctx, o, migrate.Apply)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Outcome != report.Unverified || len(rep.Verification) != 0 {
		t.Fatalf("outcome %s, verification %+v; want unverified", rep.Outcome, rep.Verification)
	}
	if w := strings.Join(rep.Warnings, "\n"); !strings.Contains(w, "NOT verified") || !strings.Contains(w, "--offline-volume-root") {
		t.Errorf("warnings %q do not say why nothing was verified", w)
	}
	for _, s := range rep.Steps {
		if s.ID == "verify" || s.ID == "baseline" {
			t.Errorf("step %s ran without a reference", s.ID)
		}
	}
	if pv := u.BoundPV(0); pv.Name != u.pv.Name {
		t.Fatalf("the release runs on %s, want %s", pv.Name, u.pv.Name)
	}
}
