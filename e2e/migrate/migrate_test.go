package migrate_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/pkg/migrate"
	"github.com/rebind-dev/rebind/pkg/snapshot"
	"github.com/rebind-dev/rebind/pkg/workload"
)

func TestReuse(t *testing.T) {
	e2eutil.NeedSandbox(t)
	for _, tc := range []struct {
		name     string
		release  string
		replicas int32
	}{
		{"release grafana, 1 replica", "grafana", 1},
		{"release mon, 2 replicas", "mon", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := deployGrafana(t, fixtures.Release{Name: tc.release, Replicas: tc.replicas, StorageClass: "standard"}, 12)
			var before []*corev1.PersistentVolume
			for i := 0; i < int(tc.replicas); i++ {
				before = append(before, e.BoundPV(i))
				if before[i].Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
					t.Fatalf("fixture PV should start with Delete")
				}
			}
			pvs := pvState(e)
			claims, pods := uidsOf(t, e)
			released := watchReleased(t, before)

			rep, err := e.Migrator().Run(e.Ctx, e.options(migrate.Reuse), migrate.Apply)
			if err != nil {
				dumpNS(t, e.Rel.Namespace)
				t.Fatal(err)
			}
			e.AssertVerified(rep)
			// Reusing the volumes the claims are bound to keeps the claims
			// and the pods: the new StatefulSet adopts both, Grafana never
			// stops and no volume is released, even for a moment.
			if c, p := uidsOf(t, e); !slices.Equal(c, claims) || !slices.Equal(p, pods) {
				t.Errorf("claims %v -> %v, pods %v -> %v: want both kept", claims, c, pods, p)
			}
			if pv := released(); pv != "" {
				t.Errorf("PersistentVolume %s left Bound during the run", pv)
			}
			for i := 0; i < int(tc.replicas); i++ {
				pv := e.BoundPV(i)
				if pv.Name != before[i].Name {
					t.Errorf("ordinal %d moved from %s to %s", i, before[i].Name, pv.Name)
				}
				if pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
					t.Errorf("PV %s reclaim policy %s, want Delete restored", pv.Name, pv.Spec.PersistentVolumeReclaimPolicy)
				}
			}
			sts, err := sb.Kube.AppsV1().StatefulSets(e.Rel.Namespace).Get(e.Ctx, e.Rel.FullName(), metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if sts.Annotations["meta.helm.sh/release-name"] != tc.release || sts.Labels["app.kubernetes.io/managed-by"] != "Helm" {
				t.Errorf("Helm ownership metadata lost: %v %v", sts.Labels, sts.Annotations)
			}
			vn := sts.Spec.VolumeClaimTemplates[0].Spec.VolumeName
			if (tc.replicas == 1) != (vn != "") {
				t.Errorf("template volumeName %q with %d replicas", vn, tc.replicas)
			}
			if rep.Downtime != 0 {
				t.Errorf("downtime %v reported, but no pod stopped", rep.Downtime)
			}
			assertNoPVDeleted(t, pvs)
		})
	}
}

// uidsOf lists the uids of e's claims and pods, by ordinal.
func uidsOf(t *testing.T, e *grafanaEnv) (claims, pods []types.UID) {
	t.Helper()
	for i := 0; i < int(e.Rel.Replicas); i++ {
		c, err := sb.Kube.CoreV1().PersistentVolumeClaims(e.Rel.Namespace).Get(e.Ctx, e.Rel.Claim(i), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		p, err := sb.Kube.CoreV1().Pods(e.Rel.Namespace).Get(e.Ctx, e.Rel.Pod(i), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		claims, pods = append(claims, c.UID), append(pods, p.UID)
	}
	return claims, pods
}

// watchReleased watches the PVs and returns a function naming the first of
// them seen in any phase but Bound since the call.
func watchReleased(t *testing.T, pvs []*corev1.PersistentVolume) func() string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	w, err := sb.Kube.CoreV1().PersistentVolumes().Watch(ctx, metav1.ListOptions{ResourceVersion: pvs[len(pvs)-1].ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	watched := map[string]bool{}
	for _, pv := range pvs {
		watched[pv.Name] = true
	}
	var mu sync.Mutex
	seen := ""
	go func() {
		for ev := range w.ResultChan() {
			pv, ok := ev.Object.(*corev1.PersistentVolume)
			if !ok || !watched[pv.Name] || pv.Status.Phase == corev1.VolumeBound {
				continue
			}
			mu.Lock()
			if seen == "" {
				seen = pv.Name + " (" + string(pv.Status.Phase) + ")"
			}
			mu.Unlock()
		}
	}()
	return func() string {
		mu.Lock()
		defer mu.Unlock()
		return seen
	}
}

func TestRestore(t *testing.T) {
	e2eutil.NeedSandbox(t)
	for _, tc := range []struct {
		name     string
		release  string
		replicas int32
		toClass  string
		quiesce  bool
	}{
		{"same class, release grafana", "grafana", 1, "", false},
		{"other class, release mon, 2 replicas", "mon", 2, "premium", false},
		{"other class, quiesced", "grafana", 1, "premium", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := deployGrafana(t, fixtures.Release{Name: tc.release, Replicas: tc.replicas}, 10)
			var old []string
			for i := 0; i < int(tc.replicas); i++ {
				old = append(old, e.BoundPV(i).Name)
			}
			pvs := pvState(e)
			o := e.options(migrate.Restore)
			o.ToClass, o.Quiesce = tc.toClass, tc.quiesce
			rep, err := e.Migrator().Run(e.Ctx, o, migrate.Apply)
			if err != nil {
				t.Fatal(err)
			}
			e.AssertVerified(rep)
			wantClass := tc.toClass
			if wantClass == "" {
				wantClass = "standard"
			}
			for i := 0; i < int(tc.replicas); i++ {
				pv := e.BoundPV(i)
				if pv.Name == old[i] {
					t.Errorf("ordinal %d still on its old PV", i)
				}
				if pv.Spec.StorageClassName != wantClass {
					t.Errorf("ordinal %d on class %s, want %s", i, pv.Spec.StorageClassName, wantClass)
				}
				if pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
					t.Errorf("new PV %s policy %s, want its original Delete back", pv.Name, pv.Spec.PersistentVolumeReclaimPolicy)
				}
				oldPV, err := sb.Kube.CoreV1().PersistentVolumes().Get(e.Ctx, old[i], metav1.GetOptions{})
				if err != nil {
					t.Fatalf("old PV %s gone: %v", old[i], err)
				}
				if oldPV.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimRetain {
					t.Errorf("old PV %s left with %s: a Released PV with Delete is destroyed", old[i], oldPV.Spec.PersistentVolumeReclaimPolicy)
				}
			}
			if len(rep.Leftovers) == 0 {
				t.Errorf("report should list the kept old PVs and snapshots")
			}
			sts, _ := sb.Kube.AppsV1().StatefulSets(e.Rel.Namespace).Get(e.Ctx, e.Rel.FullName(), metav1.GetOptions{})
			if got := ptr.Deref(sts.Spec.VolumeClaimTemplates[0].Spec.StorageClassName, ""); got != wantClass {
				t.Errorf("template class %q, want %q", got, wantClass)
			}
			assertNoPVDeleted(t, pvs)
		})
	}
}

// TestRestoreFromSnapshotAfterLoss is the disaster-recovery run: the volume
// is gone, Grafana came back empty, and an older snapshot plus an older
// inventory are all that is left.
func TestRestoreFromSnapshotAfterLoss(t *testing.T) {
	e2eutil.NeedSandbox(t)
	e := deployGrafana(t, fixtures.Release{Name: "grafana", Replicas: 1}, 15)
	ns := e.Rel.Namespace
	baseline := filepath.Join(t.TempDir(), "baseline.json")
	if err := e.Inventory(0).SaveFile(baseline); err != nil {
		t.Fatal(err)
	}
	if _, err := snapshot.Create(e.Ctx, sb.Snap, ns, "nightly", e.Rel.Claim(0), "hostpath-snapclass", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := snapshot.WaitReady(e.Ctx, sb.Snap, ns, "nightly", time.Minute); err != nil {
		t.Fatal(err)
	}

	// The loss: the claim and its Delete-policy PV go, data with them.
	lost := e.BoundPV(0).Name
	if err := workload.Scale(e.Ctx, sb.Kube, ns, e.Rel.FullName(), 0); err != nil {
		t.Fatal(err)
	}
	if err := workload.WaitPodGone(e.Ctx, sb.Kube, ns, e.Rel.Pod(0), time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := sb.Kube.CoreV1().PersistentVolumeClaims(ns).Delete(e.Ctx, e.Rel.Claim(0), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e2eutil.WaitPVGone(t, sb, lost)
	if err := workload.Scale(e.Ctx, sb.Kube, ns, e.Rel.FullName(), 1); err != nil {
		t.Fatal(err)
	}
	if err := workload.WaitReady(e.Ctx, sb.Kube, ns, e.Rel.FullName(), time.Minute); err != nil {
		t.Fatal(err)
	}
	if n := e.Inventory(0).Totals().Dashboards; n != 0 {
		t.Fatalf("after the loss Grafana should be empty, serves %d", n)
	}

	o := e.options(migrate.Restore)
	o.FromSnapshot, o.BaselineFile, o.ToClass = "nightly", baseline, "premium"
	rep, err := e.Migrator().Run(e.Ctx, o, migrate.Apply)
	if err != nil {
		t.Fatal(err)
	}
	e.AssertVerified(rep)
	// The user's snapshot is theirs: never deleted.
	if _, err := snapshot.Get(e.Ctx, sb.Snap, ns, "nightly"); err != nil {
		t.Errorf("existing snapshot removed: %v", err)
	}
}

func TestRollback(t *testing.T) {
	e2eutil.NeedSandbox(t)
	for _, tc := range []struct {
		name      string
		killAfter string // "" rolls back a completed migration
	}{
		{"after success", ""},
		{"mid-way, after the new claim exists", "claim/0"},
		{"mid-way, old claim deleted while the pod still serves", "release-claim/0"},
		{"mid-way, after the pods stopped", "stop-pods"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := deployGrafana(t, fixtures.Release{Name: "grafana", Replicas: 1}, 8)
			orig := e.BoundPV(0).Name
			base := e.Inventory(0)
			pvs := pvState(e)
			m := e.Migrator()
			killed := errors.New("killed by test")
			if tc.killAfter != "" {
				m.AfterStep = func(_ context.Context, id string) error {
					if id == tc.killAfter {
						return killed
					}
					return nil
				}
			}
			o := e.options(migrate.Restore)
			o.ToClass = "premium"
			_, err := m.Run(e.Ctx, o, migrate.Apply)
			if tc.killAfter == "" && err != nil {
				t.Fatal(err)
			}
			if tc.killAfter != "" && !errors.Is(err, killed) {
				t.Fatalf("want killed, got %v", err)
			}
			rep, err := e.Migrator().Rollback(e.Ctx, e.Rel.Namespace, e.Rel.FullName())
			if err != nil {
				t.Fatal(err)
			}
			if rep.Outcome != "rolled-back" {
				t.Fatalf("outcome %s", rep.Outcome)
			}
			if err := workload.WaitReady(e.Ctx, sb.Kube, e.Rel.Namespace, e.Rel.FullName(), time.Minute); err != nil {
				t.Fatal(err)
			}
			pv := e.BoundPV(0)
			if pv.Name != orig {
				t.Fatalf("after rollback on %s, want original %s", pv.Name, orig)
			}
			if pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
				t.Errorf("original PV policy %s, want Delete back", pv.Spec.PersistentVolumeReclaimPolicy)
			}
			e2eutil.AssertSameDashboards(t, base, e.Inventory(0))
			assertNoPVDeleted(t, pvs)
		})
	}
}

// TestKilledAfterEachStepConverges kills the run after every step in turn,
// re-running the same command each time, as an operator would after a
// crash: the run must converge with nothing lost.
func TestKilledAfterEachStepConverges(t *testing.T) {
	e2eutil.NeedSandbox(t)
	for _, strategy := range []migrate.Strategy{migrate.Reuse, migrate.Restore} {
		t.Run(string(strategy), func(t *testing.T) {
			e := deployGrafana(t, fixtures.Release{Name: "mon", Replicas: 1}, 6)
			pvs := pvState(e)
			o := e.options(strategy)
			if strategy == migrate.Restore {
				o.ToClass = "premium"
			}
			// Learn the step list from a dry run.
			planned, err := e.Migrator().Run(e.Ctx, o, migrate.PlanOnly)
			if err != nil {
				t.Fatal(err)
			}
			killed := errors.New("killed")
			for k, step := range planned.Steps {
				m := e.Migrator()
				kill := step.ID
				m.AfterStep = func(_ context.Context, id string) error {
					if id == kill {
						return killed
					}
					return nil
				}
				_, err := m.Run(e.Ctx, o, migrate.Apply)
				if k == len(planned.Steps)-1 {
					// Killed after the last step: the journal never said
					// Completed; the next run must find everything done.
					if !errors.Is(err, killed) {
						t.Fatalf("last step: want killed, got %v", err)
					}
					break
				}
				if !errors.Is(err, killed) {
					t.Fatalf("kill after %s: want killed, got %v", step.ID, err)
				}
			}
			rep, err := e.Migrator().Run(e.Ctx, o, migrate.Apply)
			if err != nil {
				t.Fatal(err)
			}
			e.AssertVerified(rep)
			for _, s := range rep.Steps {
				if s.Status != "skipped" {
					t.Errorf("final run re-did step %s (%s)", s.ID, s.Status)
				}
			}
			assertNoPVDeleted(t, pvs)
		})
	}
}

// TestVerificationFailureRollsBack damages the restored copy before the
// redeploy: verification must catch it and put the original volume back.
func TestVerificationFailure(t *testing.T) {
	e2eutil.NeedSandbox(t)
	for _, tc := range []struct {
		name       string
		noRollback bool
	}{
		{"rolls back automatically", false},
		{"--no-rollback keeps the new state until rebind rollback", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := deployGrafana(t, fixtures.Release{Name: "grafana", Replicas: 1}, 9)
			orig := e.BoundPV(0).Name
			base := e.Inventory(0)
			m := e.Migrator()
			m.AfterStep = e2eutil.DamageRestoredVolume(sb, e.Rel.Namespace, orig, func(dir string) error {
				return e2eutil.DeleteSomeDashboards(filepath.Join(dir, "grafana.db"), 3)
			})
			o := e.options(migrate.Restore)
			o.NoRollback = tc.noRollback
			rep, err := m.Run(e.Ctx, o, migrate.Apply)
			var verr *migrate.VerificationError
			if !errors.As(err, &verr) || len(rep.Verification) != 1 || rep.Verification[0].Lost != 3 {
				t.Fatalf("want a verification failure with 3 lost, got %v (verification %+v)", err, rep.Verification)
			}
			var rb *migrate.RolledBackError
			if tc.noRollback {
				if errors.As(err, &rb) || rep.Outcome != "failed" {
					t.Fatalf("--no-rollback rolled back: outcome %s, %v", rep.Outcome, err)
				}
				if pv := e.BoundPV(0); pv.Name == orig {
					t.Fatalf("--no-rollback should leave the restored volume in place for inspection")
				}
				if _, err := e.Migrator().Rollback(e.Ctx, e.Rel.Namespace, e.Rel.FullName()); err != nil {
					t.Fatal(err)
				}
			} else if !errors.As(err, &rb) || rep.Outcome != "rolled-back" {
				t.Fatalf("want RolledBackError, got outcome %s, %v", rep.Outcome, err)
			}
			if err := workload.WaitReady(e.Ctx, sb.Kube, e.Rel.Namespace, e.Rel.FullName(), time.Minute); err != nil {
				t.Fatal(err)
			}
			if pv := e.BoundPV(0); pv.Name != orig {
				t.Fatalf("after rollback on %s, want %s", pv.Name, orig)
			}
			e2eutil.AssertSameDashboards(t, base, e.Inventory(0))
		})
	}
}
