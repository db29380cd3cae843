// Package helm_test installs a Grafana-like chart with the Helm SDK, runs
// rebind migrations against it and checks that the next `helm upgrade`
// with the values rebind printed leaves the StatefulSet alone.
package helm_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/e2e/grafanastandin"
	"github.com/rebind-dev/rebind/e2e/sandbox"
	"github.com/rebind-dev/rebind/pkg/helmredeploy"
	"github.com/rebind-dev/rebind/pkg/migrate"
	"github.com/rebind-dev/rebind/pkg/report"
)

var sb *sandbox.Sandbox

func TestMain(m *testing.M) { os.Exit(e2eutil.RunMain(m, &sb, sandbox.Options{NoVelero: true})) }

const chartDir = "../charts/grafana-like"

// release is the chart installed with the Helm SDK, so that rebind's Helm
// redeploy and the user's next upgrade meet a real release history.
type release struct {
	*e2eutil.Grafana
	helm *helmredeploy.Helm
}

// install installs the chart with the Helm SDK and seeds the claim's volume.
func install(t *testing.T, perOrg int) *release {
	t.Helper()
	return installWith(t, perOrg, fixtures.Release{Name: "grafana", Replicas: 1}, nil)
}

// installWith installs rel with extra values merged into persistence.
func installWith(t *testing.T, perOrg int, rel fixtures.Release, persistence map[string]any) *release {
	t.Helper()
	// Release names here contain "grafana": the chart's full name is the
	// release name, as fixtures.Release computes it.
	r := &release{Grafana: e2eutil.NewGrafana(t, sb, rel)}
	ns := r.Rel.Namespace
	var err error
	if r.helm, err = helmredeploy.New(sb.RESTConfig, ns, nil); err != nil {
		t.Fatal(err)
	}
	if rel.ExistingClaim != "" {
		// persistence.existingClaim: the user's claim, made before the install.
		c := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: rel.ExistingClaim, Namespace: ns}, Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, StorageClassName: ptr.To("standard"),
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}}
		if _, err := sb.Kube.CoreV1().PersistentVolumeClaims(ns).Create(r.Ctx, c, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	inst := action.NewInstall(r.helm.Configuration())
	inst.ReleaseName, inst.Namespace = r.Rel.Name, ns
	p := map[string]any{"storageClassName": "standard"}
	for k, v := range persistence {
		p[k] = v
	}
	if _, err := inst.RunWithContext(r.Ctx, ch, map[string]any{
		"adminPassword": r.Rel.Password,
		"persistence":   p,
		"replicas":      r.Rel.Replicas,
	}); err != nil {
		t.Fatal(err)
	}
	r.Seed(grafanastandin.SeedSpec{Orgs: 2, FoldersPerOrg: 2, DashboardsPerOrg: perOrg, Seed: 7})
	return r
}

// targeting points the options at this release, with the suite's timeouts.
func (r *release) targeting(o migrate.Options) migrate.Options {
	o.Target.Namespace, o.Target.Release = r.Rel.Namespace, r.Rel.Name
	o.Timeouts = migrate.Timeouts{Wait: 90 * time.Second, Snapshot: 90 * time.Second, Verify: 60 * time.Second}
	return o
}

func (r *release) migrate(o migrate.Options) *report.Report {
	r.T.Helper()
	var out strings.Builder
	m := r.Migrator()
	m.Out = &out
	rep, err := m.Run(r.Ctx, r.targeting(o), migrate.Apply)
	r.T.Log(out.String())
	if err != nil {
		r.T.Fatal(err)
	}
	if rep.Outcome != report.Succeeded || len(rep.Verification) != 1 || !rep.Verification[0].OK || rep.Verification[0].Checked != r.Dashboards[0] {
		r.T.Fatalf("outcome %s, verification %+v", rep.Outcome, rep.Verification)
	}
	return rep
}

func (r *release) sts() *appsv1.StatefulSet {
	r.T.Helper()
	s, err := sb.Kube.AppsV1().StatefulSets(r.Rel.Namespace).Get(r.Ctx, r.Rel.FullName(), metav1.GetOptions{})
	if err != nil {
		r.T.Fatal(err)
	}
	return s
}

// upgrade is what a user runs next: `helm upgrade --reuse-values` with the
// values file rebind printed (nil: none).
func (r *release) upgrade(values map[string]any) error {
	ch, err := loader.Load(chartDir)
	if err != nil {
		return err
	}
	up := action.NewUpgrade(r.helm.Configuration())
	up.Namespace, up.ReuseValues = r.Rel.Namespace, true
	_, err = up.RunWithContext(r.Ctx, r.Rel.Name, ch, values)
	return err
}

// assertUpgradeKeeps runs the user's next upgrade and checks that the
// StatefulSet rebind left is the one that keeps running.
func (r *release) assertUpgradeKeeps(values map[string]any) {
	r.T.Helper()
	before := r.sts()
	if err := r.upgrade(values); err != nil {
		r.T.Fatalf("helm upgrade with rebind's values: %v", err)
	}
	after := r.sts()
	if after.UID != before.UID {
		r.T.Errorf("StatefulSet replaced: uid %s -> %s", before.UID, after.UID)
	}
	if !equality.Semantic.DeepEqual(before.Spec.VolumeClaimTemplates, after.Spec.VolumeClaimTemplates) {
		r.T.Errorf("claim template changed:\n%+v\n%+v", before.Spec.VolumeClaimTemplates, after.Spec.VolumeClaimTemplates)
	}
	if after.Generation != before.Generation {
		r.T.Errorf("StatefulSet spec changed (generation %d -> %d)", before.Generation, after.Generation)
	}
}

func TestRedeployWithHelm(t *testing.T) {
	e2eutil.NeedSandbox(t)
	r := install(t, 6)
	orig := r.sts()
	rep := r.migrate(migrate.Options{Strategy: migrate.Restore, ToClass: "premium", Redeploy: migrate.RedeployHelm})
	sts := r.sts()
	if sts.UID == orig.UID {
		t.Fatal("StatefulSet was not recreated")
	}
	tpl := sts.Spec.VolumeClaimTemplates[0].Spec
	if tpl.StorageClassName == nil || *tpl.StorageClassName != "premium" || tpl.VolumeName != rep.VolumesAfter[0].PV {
		t.Errorf("template class %v volumeName %q, want premium and %s", tpl.StorageClassName, tpl.VolumeName, rep.VolumesAfter[0].PV)
	}
	rel, err := r.helm.Release(r.Rel.Name)
	if err != nil {
		t.Fatal(err)
	}
	if rel.Version != 2 {
		t.Errorf("release revision %d, want 2 (rebind's upgrade)", rel.Version)
	}
	p, _ := rel.Config["persistence"].(map[string]any)
	if p["volumeName"] != rep.VolumesAfter[0].PV || p["storageClassName"] != "premium" {
		t.Errorf("release values %v", rel.Config)
	}
	if _, ok := rel.Config["adminPassword"]; !ok {
		t.Errorf("user values lost: %v", rel.Config)
	}
	if len(rep.Warnings) != 0 {
		t.Errorf("a Helm redeploy needs no warning: %v", rep.Warnings)
	}
	r.assertUpgradeKeeps(rep.HelmValues)
}

func TestDirectRedeployWarnsAndValuesHold(t *testing.T) {
	e2eutil.NeedSandbox(t)
	r := install(t, 5)
	rep := r.migrate(migrate.Options{Strategy: migrate.Restore, ToClass: "premium"})
	if len(rep.Warnings) == 0 || !strings.Contains(rep.Warnings[0], "helm upgrade grafana") {
		t.Fatalf("want the helm upgrade warning, got %v", rep.Warnings)
	}
	var summary strings.Builder
	rep.WriteSummary(&summary)
	if !strings.Contains(summary.String(), "WARNING: the StatefulSet was recreated directly") {
		t.Errorf("summary lacks the warning:\n%s", summary.String())
	}
	// Without the values Helm renders the old claim template: refused.
	if err := r.upgrade(nil); err == nil || !strings.Contains(err.Error(), "field is immutable") {
		t.Errorf("helm upgrade without rebind's values: %v, want the immutable-field refusal", err)
	}
	r.assertUpgradeKeeps(rep.HelmValues)
}

// TestDeploymentModeUpgradeWithValues: the chart's default Deployment mode,
// installed by Helm (its claim <fullname> is Helm's, from pvc.yaml). After
// a restore into another class, a plain upgrade without rebind's values is
// refused (Helm renders the old claim spec, which is immutable), and the
// user's next upgrade with them succeeds, leaving claim and Deployment as
// rebind left them.
func TestDeploymentModeUpgradeWithValues(t *testing.T) {
	e2eutil.NeedSandbox(t)
	r := installWith(t, 5, fixtures.Release{Name: "grafana", Replicas: 1, Deployment: true}, map[string]any{"type": "pvc"})
	rep := r.migrate(migrate.Options{Strategy: migrate.Restore, ToClass: "premium"})
	claim := func() (string, string, int64) {
		c, err := sb.Kube.CoreV1().PersistentVolumeClaims(r.Rel.Namespace).Get(r.Ctx, r.Rel.FullName(), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		d, err := sb.Kube.AppsV1().Deployments(r.Rel.Namespace).Get(r.Ctx, r.Rel.FullName(), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return string(c.UID), c.Spec.VolumeName, d.Generation
	}
	uid, pv, gen := claim()
	if pv != rep.VolumesAfter[0].PV {
		t.Fatalf("claim on %s, report says %s", pv, rep.VolumesAfter[0].PV)
	}
	if err := r.upgrade(nil); err == nil || !strings.Contains(err.Error(), "immutable") {
		t.Errorf("helm upgrade without rebind's values: %v, want the immutable-field refusal", err)
	}
	if err := r.upgrade(rep.HelmValues); err != nil {
		t.Fatalf("helm upgrade with rebind's values %v: %v", rep.HelmValues, err)
	}
	uid2, pv2, gen2 := claim()
	if uid2 != uid || pv2 != pv {
		t.Errorf("claim changed by the upgrade: %s on %s -> %s on %s", uid, pv, uid2, pv2)
	}
	// Recreate comes with the values (RollingUpdate with a ReadWriteOnce
	// claim): the pod template is unchanged, so no new pod either.
	if gen2 != gen+1 {
		t.Logf("Deployment generation %d -> %d", gen, gen2)
	}
	if err := r.WaitReady(time.Minute); err != nil {
		t.Fatal(err)
	}
	if got := r.Inventory(0).Totals().Dashboards; got != r.Dashboards[0] {
		t.Errorf("after the upgrade Grafana serves %d dashboards, want %d", got, r.Dashboards[0])
	}
}
