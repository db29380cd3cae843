package helm_test

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/pkg/migrate"
	"github.com/rebind-dev/rebind/pkg/report"
	"github.com/rebind-dev/rebind/pkg/workload"
)

// installDeployment installs the chart in its Deployment mode (the
// upstream default: a Deployment and the claim <fullname> of pvc.yaml).
func installDeployment(t *testing.T, perOrg int) *release {
	t.Helper()
	return installWith(t, perOrg, fixtures.Release{Name: "grafana", Replicas: 1, Deployment: true}, map[string]any{"type": "pvc"})
}

func (r *release) claim() *corev1.PersistentVolumeClaim {
	r.T.Helper()
	c, err := sb.Kube.CoreV1().PersistentVolumeClaims(r.Rel.Namespace).Get(r.Ctx, r.Rel.FullName(), metav1.GetOptions{})
	if err != nil {
		r.T.Fatal(err)
	}
	return c
}

func (r *release) waitDeploymentReady() {
	r.T.Helper()
	if err := workload.WaitDeploymentReady(r.Ctx, sb.Kube, r.Rel.Namespace, r.Rel.FullName(), time.Minute); err != nil {
		r.T.Fatal(err)
	}
}

// TestDeploymentModeRedeployWithHelm: --redeploy helm on the chart's
// Deployment mode. rebind keeps the Deployment, swaps the claim onto the
// restored volume and upgrades the release with the values that render
// that claim, so the release record and the cluster agree: the user's
// next plain `helm upgrade` changes neither claim nor Deployment.
func TestDeploymentModeRedeployWithHelm(t *testing.T) {
	e2eutil.NeedSandbox(t)
	r := installDeployment(t, 5)
	rep := r.migrate(migrate.Options{Strategy: migrate.Restore, ToClass: "premium", Redeploy: migrate.RedeployHelm})
	c := r.claim()
	if c.Spec.VolumeName != rep.VolumesAfter[0].PV || c.Spec.StorageClassName == nil || *c.Spec.StorageClassName != "premium" {
		t.Fatalf("claim on %q class %v; want %s, premium", c.Spec.VolumeName, c.Spec.StorageClassName, rep.VolumesAfter[0].PV)
	}
	rel, err := r.helm.Release(r.Rel.Name)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := rel.Config["persistence"].(map[string]any)
	if rel.Version != 2 || p["volumeName"] != rep.VolumesAfter[0].PV || p["storageClassName"] != "premium" || p["type"] != "pvc" {
		t.Errorf("release revision %d, values %v; want rebind's revision 2 with the claim's persistence values", rel.Version, rel.Config)
	}
	if len(rep.Warnings) != 0 {
		t.Errorf("a Helm redeploy needs no warning: %v", rep.Warnings)
	}
	d, err := sb.Kube.AppsV1().Deployments(r.Rel.Namespace).Get(r.Ctx, r.Rel.FullName(), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Spec.Strategy.Type != "Recreate" {
		t.Errorf("Deployment strategy %s: the upgrade should have applied Recreate (RollingUpdate with a ReadWriteOnce claim)", d.Spec.Strategy.Type)
	}
	// The user's next upgrade, with no values of their own.
	if err := r.upgrade(nil); err != nil {
		t.Fatalf("plain helm upgrade after rebind's: %v", err)
	}
	if c2 := r.claim(); c2.UID != c.UID || c2.Spec.VolumeName != c.Spec.VolumeName {
		t.Errorf("claim changed by the upgrade: %s on %s -> %s on %s", c.UID, c.Spec.VolumeName, c2.UID, c2.Spec.VolumeName)
	}
	r.waitDeploymentReady()
	if got := r.Inventory(0).Totals().Dashboards; got != r.Dashboards[0] {
		t.Errorf("after the upgrade Grafana serves %d dashboards, want %d", got, r.Dashboards[0])
	}
}

// TestDeploymentModeHelmRollback rolls back a Deployment-mode --redeploy
// helm migration, after success and right after rebind's upgrade: the
// original claim and volume serve every dashboard, the release holds its
// values from before, and a plain `helm upgrade` works again.
func TestDeploymentModeHelmRollback(t *testing.T) {
	e2eutil.NeedSandbox(t)
	for _, tc := range helmRollbackPoints {
		t.Run(tc.name, func(t *testing.T) {
			r := installDeployment(t, 4)
			origPV := r.claim().Spec.VolumeName
			base := r.Inventory(0)
			r.migrateKilledAfter(migrate.Options{Strategy: migrate.Restore, ToClass: "premium", Redeploy: migrate.RedeployHelm}, tc.killAfter)
			rep, err := r.Migrator().Rollback(r.Ctx, r.Rel.Namespace, r.Rel.FullName())
			if err != nil {
				t.Fatal(err)
			}
			if rep.Outcome != report.RolledBack {
				t.Fatalf("outcome %s, warnings %v", rep.Outcome, rep.Warnings)
			}
			r.waitDeploymentReady()
			if pv := r.claim().Spec.VolumeName; pv != origPV {
				t.Errorf("claim on %s, want the original %s", pv, origPV)
			}
			rel, err := r.helm.Release(r.Rel.Name)
			if err != nil {
				t.Fatal(err)
			}
			p, _ := rel.Config["persistence"].(map[string]any)
			if rel.Version != 3 || p["storageClassName"] != "standard" || p["volumeName"] != nil {
				t.Errorf("release after rollback: revision %d, persistence %v; want revision 3 with the original values", rel.Version, p)
			}
			e2eutil.AssertSameDashboards(t, base, r.Inventory(0))
			if err := r.upgrade(nil); err != nil {
				t.Errorf("plain helm upgrade after the rollback: %v", err)
			}
			if pv := r.claim().Spec.VolumeName; pv != origPV {
				t.Errorf("after the upgrade the claim is on %s, want %s", pv, origPV)
			}
		})
	}
}

// TestDeploymentModeHelmRollbackWithoutLookup: a chart that does not look
// the claim's volumeName up (upstream before 2024-03, or
// persistence.lookupVolumeName=false) cannot render the restored claim from
// the old values. The rollback still returns the volume and says exactly
// which upgrade makes the release render it; that upgrade works.
func TestDeploymentModeHelmRollbackWithoutLookup(t *testing.T) {
	e2eutil.NeedSandbox(t)
	r := installWith(t, 3, fixtures.Release{Name: "grafana", Replicas: 1, Deployment: true}, map[string]any{"type": "pvc", "lookupVolumeName": false})
	origPV := r.claim().Spec.VolumeName
	r.migrate(migrate.Options{Strategy: migrate.Restore, ToClass: "premium", Redeploy: migrate.RedeployHelm})
	rep, err := r.Migrator().Rollback(r.Ctx, r.Rel.Namespace, r.Rel.FullName())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Outcome != report.RolledBack {
		t.Fatalf("outcome %s", rep.Outcome)
	}
	want := "--set persistence.volumeName=" + origPV + ",persistence.storageClassName=standard"
	if len(rep.Warnings) != 1 || !strings.Contains(rep.Warnings[0], want) {
		t.Fatalf("warnings %q, want one naming %q", rep.Warnings, want)
	}
	r.waitDeploymentReady()
	if pv := r.claim().Spec.VolumeName; pv != origPV {
		t.Errorf("claim on %s, want the original %s", pv, origPV)
	}
	if err := r.upgrade(map[string]any{"persistence": map[string]any{"volumeName": origPV, "storageClassName": "standard"}}); err != nil {
		t.Errorf("the upgrade the warning names: %v", err)
	}
	if pv := r.claim().Spec.VolumeName; pv != origPV {
		t.Errorf("after the upgrade the claim is on %s, want %s", pv, origPV)
	}
}
