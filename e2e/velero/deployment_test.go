package velero_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/e2e/sandbox"
	"github.com/rebind-dev/rebind/pkg/migrate"
	"github.com/rebind-dev/rebind/pkg/report"
	"github.com/rebind-dev/rebind/pkg/velero"
)

// podCounter records the most pods of a release's Deployment alive at
// once (not being deleted) while a run goes on: with a ReadWriteOnce
// claim there must never be two.
type podCounter struct {
	mu   sync.Mutex
	max  int
	stop func()
}

func countPods(t *testing.T, e *grafanaEnv) *podCounter {
	t.Helper()
	ctx, cancel := context.WithCancel(e.Ctx)
	pc := &podCounter{}
	done := make(chan struct{})
	sel := "app.kubernetes.io/instance=" + e.Rel.Name
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if pods, err := sb.Kube.CoreV1().Pods(e.Rel.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel}); err == nil {
				n := 0
				for _, p := range pods.Items {
					if p.DeletionTimestamp == nil && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
						n++
					}
				}
				pc.mu.Lock()
				pc.max = max(pc.max, n)
				pc.mu.Unlock()
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	pc.stop = func() { cancel(); <-done }
	return pc
}

func (pc *podCounter) Max() int {
	pc.stop()
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return pc.max
}

// TestVeleroRestoreDeployment: --strategy velero-restore on Deployment-mode
// releases (the chart's default), from a CSI-snapshot Backup of the real
// Velero server into another class: release grafana, kps with the subchart
// naming (kps-grafana), and one with the user's own claim
// (persistence.existingClaim). The Deployment is kept (same uid) and
// scaled to 0 and back, never two pods at once; the claim is replaced by
// one on the volume Velero restored; every dashboard verified. The
// existingClaim release is then rolled back to its original volume.
func TestVeleroRestoreDeployment(t *testing.T) {
	e2eutil.NeedSandbox(t)
	for _, tc := range []struct {
		name     string
		rel      fixtures.Release
		rollback bool
	}{
		{"grafana", fixtures.Release{Name: "grafana", Replicas: 1, Deployment: true, StorageClass: "standard"}, false},
		{"kps subchart", fixtures.Release{Name: "kps", Replicas: 1, Deployment: true, Subchart: true, StorageClass: "standard"}, false},
		{"existingClaim", fixtures.Release{Name: "grafana", Replicas: 1, Deployment: true, ExistingClaim: "grafana-data", StorageClass: "standard"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := deployGrafana(t, tc.rel, 5)
			base := e.Inventory(0)
			backup := csiBackup(t, e)
			old := boundPVs(e, 1)
			dep, err := sb.Kube.AppsV1().Deployments(e.Rel.Namespace).Get(e.Ctx, e.Rel.FullName(), metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			o := e.options(migrate.VeleroRestore)
			o.FromBackup, o.ToClass = backup, sandbox.StorageClassPremium
			pods := countPods(t, e)
			start := time.Now()
			rep, err := e.Migrator().Run(e.Ctx, o, migrate.Apply)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("velero-restore of Deployment %s: %s, downtime %s", e.Rel.FullName(), time.Since(start).Round(time.Millisecond), time.Duration(rep.Downtime).Round(time.Millisecond))
			if n := pods.Max(); n > 1 {
				t.Errorf("%d pods of the Deployment alive at once on a ReadWriteOnce claim", n)
			}
			checkRestoredInto(t, e, rep, old)
			e2eutil.AssertSameDashboards(t, base, e.Inventory(0))
			after, err := sb.Kube.AppsV1().Deployments(e.Rel.Namespace).Get(e.Ctx, e.Rel.FullName(), metav1.GetOptions{})
			if err != nil || after.UID != dep.UID {
				t.Fatalf("Deployment after the run: %v, uid %s; want the same Deployment (uid %s)", err, after.UID, dep.UID)
			}
			if !tc.rollback {
				return
			}
			if _, err := e.Migrator().Rollback(e.Ctx, e.Rel.Namespace, e.Rel.FullName()); err != nil {
				t.Fatal(err)
			}
			if err := e.WaitReady(time.Minute); err != nil {
				t.Fatal(err)
			}
			if pv := e.BoundPV(0); pv.Name != old[0] {
				t.Fatalf("after rollback on %s, want the original %s", pv.Name, old[0])
			}
			e2eutil.AssertSameDashboards(t, base, e.Inventory(0))
		})
	}
}

// TestVeleroRestoreDeploymentKilledAfterEveryStep: a run stopped right
// after each step in turn (each re-run resumes, finishes one more step and
// is stopped again) converges to the clean result: the claim on the
// restored volume, every dashboard verified, the mapping put back, the
// original volume kept with Retain.
func TestVeleroRestoreDeploymentKilledAfterEveryStep(t *testing.T) {
	e2eutil.NeedSandbox(t)
	e := deployGrafana(t, fixtures.Release{Name: "grafana", Replicas: 1, Deployment: true, StorageClass: "standard"}, 4)
	backup := csiBackup(t, e)
	old := boundPVs(e, 1)
	o := e.options(migrate.VeleroRestore)
	o.FromBackup, o.ToClass = backup, sandbox.StorageClassPremium
	killed := errors.New("killed")
	seen := map[string]bool{}
	var stops []string
	var rep *report.Report
	pods := countPods(t, e)
	for attempt := 0; ; attempt++ {
		if attempt > 30 {
			t.Fatalf("no convergence after %d runs (stopped after %v)", attempt, stops)
		}
		m := e.Migrator()
		m.AfterStep = func(_ context.Context, id string) error {
			if seen[id] {
				return nil
			}
			seen[id] = true
			stops = append(stops, id)
			return killed
		}
		var err error
		rep, err = m.Run(e.Ctx, o, migrate.Apply)
		if err == nil {
			break
		}
		if !errors.Is(err, killed) {
			t.Fatalf("run %d (after %v): %v", attempt, stops, err)
		}
	}
	t.Logf("stopped after each of %d steps: %v", len(stops), stops)
	if n := pods.Max(); n > 1 {
		t.Errorf("%d pods of the Deployment alive at once on a ReadWriteOnce claim", n)
	}
	checkRestoredInto(t, e, rep, old)
	pv, err := sb.Kube.CoreV1().PersistentVolumes().Get(e.Ctx, old[0], metav1.GetOptions{})
	if err != nil || pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimRetain {
		t.Errorf("original PV %s: %v, policy %v; want it kept with Retain", old[0], err, pv.Spec.PersistentVolumeReclaimPolicy)
	}
}

// TestVeleroRestoreDeploymentRollbackMidway: a run stopped after the
// restore, after the old claim was released and in the outage (the new
// claim made) is rolled back: the Deployment runs on its original volume
// again with every dashboard, the storage-class mapping is gone, the
// restored volume is kept (Retain) and reported.
func TestVeleroRestoreDeploymentRollbackMidway(t *testing.T) {
	e2eutil.NeedSandbox(t)
	for _, stopAfter := range []string{"velero-restore", "release-claim/0", "claim/0"} {
		t.Run(stopAfter, func(t *testing.T) {
			e := deployGrafana(t, fixtures.Release{Name: "grafana", Replicas: 1, Deployment: true, StorageClass: "standard"}, 3)
			base := e.Inventory(0)
			backup := csiBackup(t, e)
			old := boundPVs(e, 1)
			o := e.options(migrate.VeleroRestore)
			o.FromBackup, o.ToClass = backup, sandbox.StorageClassPremium
			killed := errors.New("killed")
			m := e.Migrator()
			m.AfterStep = func(_ context.Context, id string) error {
				if id == stopAfter {
					return killed
				}
				return nil
			}
			if _, err := m.Run(e.Ctx, o, migrate.Apply); !errors.Is(err, killed) {
				t.Fatalf("want the run stopped after %s, got %v", stopAfter, err)
			}
			rep, err := e.Migrator().Rollback(e.Ctx, e.Rel.Namespace, e.Rel.FullName())
			if err != nil {
				t.Fatal(err)
			}
			if err := e.WaitReady(time.Minute); err != nil {
				t.Fatal(err)
			}
			if pv := e.BoundPV(0); pv.Name != old[0] {
				t.Fatalf("after rollback on %s, want the original %s", pv.Name, old[0])
			}
			e2eutil.AssertSameDashboards(t, base, e.Inventory(0))
			if mapped, err := velero.New(e.Clients, "", nil).MappedClass(e.Ctx, "standard"); err != nil || mapped != "" {
				t.Errorf("storage-class mapping left in place: %q %v", mapped, err)
			}
			if len(rep.Leftovers) == 0 {
				t.Errorf("the restored volume is not reported as kept: %+v", rep)
			}
		})
	}
}
