package migrate_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/e2e/grafanastandin"
	"github.com/rebind-dev/rebind/pkg/migrate"
	"github.com/rebind-dev/rebind/pkg/preflight"
	"github.com/rebind-dev/rebind/pkg/volume"
)

// readFromSandbox reads a PV's grafana.db where the sandbox storage agent
// keeps its directory (what --offline-volume-root does on a host-path
// style driver).
func readFromSandbox(_ context.Context, pv *corev1.PersistentVolume) (string, func(), error) {
	dir, err := fixtures.VolumeDir(sb.StorageRoot(), pv)
	return filepath.Join(dir, grafanastandin.DBFile), nil, err
}

// uninstall does what `helm uninstall` does to the release: its
// StatefulSet, Services and Secret go, and so does its claim.
func uninstall(t *testing.T, e *grafanaEnv) {
	t.Helper()
	ns, name := e.Rel.Namespace, e.Rel.FullName()
	bg := metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationForeground)}
	if err := sb.Kube.AppsV1().StatefulSets(ns).Delete(e.Ctx, name, bg); err != nil {
		t.Fatal(err)
	}
	for _, svc := range []string{name, name + "-headless"} {
		_ = sb.Kube.CoreV1().Services(ns).Delete(e.Ctx, svc, metav1.DeleteOptions{})
	}
	_ = sb.Kube.CoreV1().Secrets(ns).Delete(e.Ctx, name, metav1.DeleteOptions{})
	deleteClaim(t, e, e.Rel.Claim(0))
}

// deleteClaim deletes claim name of e's namespace, waits until it is gone
// and returns it as it was.
func deleteClaim(t *testing.T, e *grafanaEnv, name string) *corev1.PersistentVolumeClaim {
	t.Helper()
	ns := e.Rel.Namespace
	c, err := sb.Kube.CoreV1().PersistentVolumeClaims(ns).Get(e.Ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := sb.Kube.CoreV1().PersistentVolumeClaims(ns).Delete(e.Ctx, c.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := volume.WaitClaimGone(e.Ctx, sb.Kube, ns, c.Name, c.UID, time.Minute); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestFromPVAfterUninstall: the operator set Retain and uninstalled the
// release; its PV is Released, its claimRef still naming the dead claim's
// uid. A reinstall runs on a new, empty volume. `migrate --strategy reuse
// --from-pv` binds the release to the old PV and verifies every dashboard
// against that PV's own grafana.db, read offline before the swap.
func TestFromPVAfterUninstall(t *testing.T) {
	e2eutil.NeedSandbox(t)
	e := deployGrafana(t, fixtures.Release{Name: "grafana", Replicas: 1}, 6)
	old := e.BoundPV(0)
	base := e.Inventory(0)
	if _, err := volume.SetReclaimPolicy(e.Ctx, sb.Kube, old.Name, corev1.PersistentVolumeReclaimRetain, false); err != nil {
		t.Fatal(err)
	}
	uninstall(t, e)
	if pv, err := volume.WaitPVPhase(e.Ctx, sb.Kube, old.Name, time.Minute, corev1.VolumeReleased); err != nil || pv.Spec.ClaimRef == nil || pv.Spec.ClaimRef.UID == "" {
		t.Fatalf("old PV after uninstall: %+v %v", pv, err)
	}
	if err := e.Rel.Deploy(e.Ctx, sb.Kube); err != nil {
		t.Fatal(err)
	}
	if err := e.WaitReady(2 * time.Minute); err != nil {
		t.Fatal(err)
	}
	empty := e.BoundPV(0)
	if got := e.Inventory(0).Totals().Dashboards; got != 0 {
		t.Fatalf("the reinstall serves %d dashboards, want a fresh empty Grafana", got)
	}

	// Without a reference the run is refused: the Grafana now is empty.
	o := e.options(migrate.Reuse)
	o.FromPV = old.Name
	before := e.ClusterState()
	_, err := e.Migrator().Run(e.Ctx, o, migrate.Apply)
	var pf *preflight.Error
	if !errors.As(err, &pf) || !strings.Contains(err.Error(), "--offline-volume-root") {
		t.Fatalf("want a refusal asking for a reference, got %v", err)
	}
	if after := e.ClusterState(); after != before {
		t.Fatalf("a refused run changed the cluster:\n%s\n---\n%s", before, after)
	}

	o.ReadDB = readFromSandbox
	rep, err := e.Migrator().Run(e.Ctx, o, migrate.Apply)
	if err != nil {
		t.Fatal(err)
	}
	e.AssertVerified(rep)
	if pv := e.BoundPV(0); pv.Name != old.Name {
		t.Fatalf("the release runs on %s, want the old %s", pv.Name, old.Name)
	}
	e2eutil.AssertSameDashboards(t, base, e.Inventory(0))
	if !strings.Contains(strings.Join(rep.Leftovers, "\n"), empty.Name) {
		t.Errorf("the reinstall's empty PV %s is not reported as kept: %v", empty.Name, rep.Leftovers)
	}
}

// TestFromPVReleasedWithDeleteIsProtectedFirst: a Released PV whose policy
// is still Delete (its deleter has not got to it: here no provisioner
// serves its driver) gets Retain as the very first change; a rollback
// from there leaves it Retain, since Delete on an unbound PV destroys it.
func TestFromPVReleasedWithDeleteIsProtectedFirst(t *testing.T) {
	e2eutil.NeedSandbox(t)
	e := deployGrafana(t, fixtures.Release{Name: "grafana", Replicas: 1}, 4)
	name := "manual-" + e.Rel.Namespace
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeSpec{
			StorageClassName:              "standard",
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimDelete,
			ClaimRef:                      &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: e.Rel.Namespace, Name: "uninstalled-claim", UID: "dead-claim-uid"},
			PersistentVolumeSource:        corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: "manual.csi.rebind.test", VolumeHandle: name}},
		},
	}
	if _, err := sb.Kube.CoreV1().PersistentVolumes().Create(e.Ctx, pv, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = sb.Kube.CoreV1().PersistentVolumes().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	if _, err := volume.WaitPVPhase(e.Ctx, sb.Kube, name, time.Minute, corev1.VolumeReleased, corev1.VolumeFailed); err != nil {
		t.Fatal(err)
	}
	o := e.options(migrate.Reuse)
	o.FromPV, o.ReadDB = name, readFromSandbox
	m := e.Migrator()
	killed := errors.New("killed")
	var first string
	m.AfterStep = func(ctx context.Context, id string) error {
		first = id
		return killed
	}
	if _, err := m.Run(e.Ctx, o, migrate.Apply); !errors.Is(err, killed) {
		t.Fatalf("want killed after the first step, got %v", err)
	}
	got, err := sb.Kube.CoreV1().PersistentVolumes().Get(e.Ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if first != "retain/"+name || got.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimRetain {
		t.Fatalf("first step %s left policy %s; want retain/%s and Retain", first, got.Spec.PersistentVolumeReclaimPolicy, name)
	}
	if _, err := e.Migrator().Rollback(e.Ctx, e.Rel.Namespace, e.Rel.FullName()); err != nil {
		t.Fatal(err)
	}
	got, err = sb.Kube.CoreV1().PersistentVolumes().Get(e.Ctx, name, metav1.GetOptions{})
	if err != nil || got.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimRetain {
		t.Fatalf("after rollback: %v, policy %s; want the Released PV kept with Retain", err, got.Spec.PersistentVolumeReclaimPolicy)
	}
}

// TestFromPVHeldByAnotherClaimIsRefused: a PV reserved for another claim
// (claimRef without uid) or bound to a live one is refused naming it, and
// nothing changes.
func TestFromPVHeldByAnotherClaimIsRefused(t *testing.T) {
	e2eutil.NeedSandbox(t)
	e := deployGrafana(t, fixtures.Release{Name: "grafana", Replicas: 1}, 3)
	other := deployGrafana(t, fixtures.Release{Name: "other-grafana", Replicas: 1}, 3)
	taken := other.BoundPV(0)
	reserved := e2eutil.StrangerPV(t, sb, "reserved-"+e.Rel.Namespace, "standard")
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pv, err := sb.Kube.CoreV1().PersistentVolumes().Get(e.Ctx, reserved.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		pv.Spec.ClaimRef = &corev1.ObjectReference{Namespace: "team-b", Name: "their-claim"}
		_, err = sb.Kube.CoreV1().PersistentVolumes().Update(e.Ctx, pv, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ pv, owner string }{
		{taken.Name, other.Rel.Namespace + "/" + other.Rel.Claim(0)},
		{reserved.Name, "team-b/their-claim"},
		{"no-such-pv", ""},
	} {
		t.Run(tc.pv, func(t *testing.T) {
			before := e.ClusterState()
			o := e.options(migrate.Reuse)
			o.FromPV, o.ReadDB = tc.pv, readFromSandbox
			_, err := e.Migrator().Run(e.Ctx, o, migrate.Apply)
			var pf *preflight.Error
			if !errors.As(err, &pf) || !strings.Contains(err.Error(), "PersistentVolume "+tc.pv) || !strings.Contains(err.Error(), tc.owner) {
				t.Fatalf("want a refusal naming %s and %q, got %v", tc.pv, tc.owner, err)
			}
			if after := e.ClusterState(); after != before {
				t.Fatalf("a refused run changed the cluster:\n%s\n---\n%s", before, after)
			}
			if pv, err := sb.Kube.CoreV1().PersistentVolumes().Get(e.Ctx, tc.pv, metav1.GetOptions{}); err == nil && pv.Spec.PersistentVolumeReclaimPolicy == corev1.PersistentVolumeReclaimRetain && tc.pv == taken.Name {
				t.Errorf("the other release's PV %s was changed", tc.pv)
			} else if err != nil && !apierrors.IsNotFound(err) {
				t.Fatal(err)
			}
		})
	}
}
