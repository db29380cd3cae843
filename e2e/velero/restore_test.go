package velero_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/e2e/sandbox"
	"github.com/rebind-dev/rebind/pkg/migrate"
	"github.com/rebind-dev/rebind/pkg/preflight"
	"github.com/rebind-dev/rebind/pkg/report"
	"github.com/rebind-dev/rebind/pkg/velero"
)

// csiBackup takes a Backup of the release's namespace on the real server:
// volumes as CSI snapshots, no data mover.
func csiBackup(t *testing.T, e *grafanaEnv) string {
	t.Helper()
	// An item holdRestores can restore: whatever else the namespace holds
	// may not exist yet when the backup is taken (the default
	// ServiceAccount comes from a controller).
	marker := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "hold-marker", Namespace: e.Rel.Namespace, Labels: map[string]string{holdLabel: "true"}}}
	if _, err := sb.Kube.CoreV1().ConfigMaps(e.Rel.Namespace).Create(e.Ctx, marker, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	v := velero.New(e.Clients, "", nil)
	name := "csi-" + e.Rel.Namespace
	if _, err := v.CreateBackup(e.Ctx, velero.BackupRequest{Name: name, Namespace: e.Rel.Namespace}); err != nil {
		t.Fatal(err)
	}
	b, err := v.WaitBackup(e.Ctx, name, velero.Wait{Pickup: 15 * time.Second, Timeout: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if b.Status.CSIVolumeSnapshotsCompleted == 0 {
		t.Fatalf("backup %s has no CSI snapshot: %+v", name, b.Status)
	}
	return name
}

// checkRestoredInto asserts every ordinal runs on a restored PV of class
// premium (same driver), the mapping is gone and no staging is left.
func checkRestoredInto(t *testing.T, e *grafanaEnv, rep *report.Report, old []string) {
	t.Helper()
	e.AssertVerified(rep)
	for i := range old {
		pv := e.BoundPV(i)
		if pv.Name == old[i] || pv.Spec.StorageClassName != sandbox.StorageClassPremium || pv.Spec.CSI == nil || pv.Spec.CSI.Driver != sandbox.DriverName {
			t.Errorf("ordinal %d on PV %s class %s (old %s), want a restored %s volume", i, pv.Name, pv.Spec.StorageClassName, old[i], sandbox.StorageClassPremium)
		}
	}
	if mapped, err := velero.New(e.Clients, "", nil).MappedClass(e.Ctx, "standard"); err != nil || mapped != "" {
		t.Errorf("storage-class mapping left in place: %q %v", mapped, err)
	}
	if _, err := sb.Kube.CoreV1().Namespaces().Get(e.Ctx, "rebind-"+rep.RunID+"-"+e.Rel.Namespace, metav1.GetOptions{}); err == nil {
		ns, _ := sb.Kube.CoreV1().Namespaces().Get(e.Ctx, "rebind-"+rep.RunID+"-"+e.Rel.Namespace, metav1.GetOptions{})
		if ns.DeletionTimestamp == nil {
			t.Errorf("staging namespace %s left behind", ns.Name)
		}
	}
}

func boundPVs(e *grafanaEnv, replicas int) []string {
	var out []string
	for i := range replicas {
		out = append(out, e.BoundPV(i).Name)
	}
	return out
}

// TestVeleroRestoreRealServer restores Grafana's claims from a CSI-snapshot
// Backup of the real Velero server into another class of the same driver,
// through Velero's change-storage-class mapping.
func TestVeleroRestoreRealServer(t *testing.T) {
	e2eutil.NeedSandbox(t)
	e := deployGrafana(t, fixtures.Release{Name: "grafana", Replicas: 1, StorageClass: "standard"}, 6)
	backup := csiBackup(t, e)
	old := boundPVs(e, 1)
	o := e.options(migrate.VeleroRestore)
	o.FromBackup, o.ToClass = backup, sandbox.StorageClassPremium
	rep, err := e.Migrator().Run(e.Ctx, o, migrate.Apply)
	if err != nil {
		t.Fatal(err)
	}
	checkRestoredInto(t, e, rep, old)
	r, err := velero.New(e.Clients, "", nil).GetRestore(e.Ctx, "rebind-grafana-"+rep.RunID)
	if err != nil || r.Status.Phase != velerov1.RestorePhaseCompleted {
		t.Errorf("rebind's Restore: %v %+v", err, r)
	}
}

// TestVeleroRestoreRefusedBackups: a backup that cannot serve the move is
// refused before anything changes, naming the fix.
func TestVeleroRestoreRefusedBackups(t *testing.T) {
	e2eutil.NeedSandbox(t)
	e := deployGrafana(t, fixtures.Release{Name: "grafana", Replicas: 1, StorageClass: "standard"}, 3)
	backup := csiBackup(t, e)
	for _, tc := range []struct {
		name    string
		prepare func(o *migrate.Options)
		want    []string
	}{
		{"CSI snapshots into another driver", func(o *migrate.Options) { o.ToClass = sandbox.StorageClassOther }, []string{
			"holds the volumes as CSI snapshots of driver " + sandbox.DriverName, "StorageClass " + sandbox.StorageClassOther + " is provisioned by " + sandbox.OtherDriverName,
			"restore into a class of driver " + sandbox.DriverName, "--snapshot-move-data"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.workloadState()
			o := e.options(migrate.VeleroRestore)
			o.FromBackup = backup
			tc.prepare(&o)
			_, err := e.Migrator().Run(e.Ctx, o, migrate.Apply)
			var pf *preflight.Error
			if !errors.As(err, &pf) {
				t.Fatalf("want a preflight refusal, got %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if e.Journals() != 0 {
				t.Error("a refused run left a journal")
			}
			if after := e.workloadState(); after != before {
				t.Errorf("workload changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
}

// holdRestores makes the real server busy with another Restore for as long
// as the test wants: that Restore maps the backup's namespace onto a
// namespace held in Terminating by a finalizer, and Velero waits for a
// terminating namespace to go before it restores into it
// (pkg/util/kube EnsureNamespaceExistsAndIsReady). Velero runs one Restore
// at a time, so every Restore created meanwhile queues behind it. release
// lets it go.
func holdRestores(t *testing.T, e *grafanaEnv, backup string) (blocker string, release func()) {
	t.Helper()
	ctx := e.Ctx
	held := sb.NewNamespace(t)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "hold", Namespace: held, Finalizers: []string{"rebind.test/hold"}}}
	if _, err := sb.Kube.CoreV1().ConfigMaps(held).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := sb.Kube.CoreV1().Namespaces().Delete(ctx, held, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			c, err := sb.Kube.CoreV1().ConfigMaps(held).Get(context.Background(), "hold", metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return
			}
			if err != nil {
				t.Error(err)
				return
			}
			c.Finalizers = nil
			if _, err := sb.Kube.CoreV1().ConfigMaps(held).Update(context.Background(), c, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) {
				t.Error(err)
			}
		})
	}
	t.Cleanup(release)
	v := velero.New(e.Clients, "", nil)
	blocker = "hold-" + e.Rel.Namespace
	if _, err := v.CreateRestore(ctx, velero.RestoreRequest{Name: blocker, BackupName: backup, Namespace: e.Rel.Namespace, Into: held,
		Resources: []string{"configmaps"}, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{holdLabel: "true"}}}); err != nil {
		t.Fatal(err)
	}
	waitRestorePhase(t, e, blocker, velerov1.RestorePhaseInProgress)
	return blocker, release
}

const holdLabel = "rebind.test/hold-marker"

func waitRestorePhase(t *testing.T, e *grafanaEnv, name string, want velerov1.RestorePhase) {
	t.Helper()
	v := velero.New(e.Clients, "", nil)
	ctx, cancel := context.WithTimeout(e.Ctx, time.Minute)
	defer cancel()
	for {
		r, err := v.GetRestore(ctx, name)
		if err == nil && r.Status.Phase == want {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("Restore %s never reached %s: %v %+v", name, want, err, r)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// TestVeleroRestoreQueued: rebind's Restore queues behind another one the
// real server is running. rebind waits for it past the pickup limit (which
// only means "no server" when no Restore runs), with the mapping in place,
// and completes once the other Restore is done.
func TestVeleroRestoreQueued(t *testing.T) {
	e2eutil.NeedSandbox(t)
	e := deployGrafana(t, fixtures.Release{Name: "grafana", Replicas: 1, StorageClass: "standard"}, 5)
	backup := csiBackup(t, e)
	old := boundPVs(e, 1)
	blocker, release := holdRestores(t, e, backup)

	o := e.options(migrate.VeleroRestore)
	o.FromBackup, o.ToClass = backup, sandbox.StorageClassPremium
	o.Timeouts.VeleroPickup, o.Timeouts.VeleroRestore = 3*time.Second, 3*time.Minute
	type result struct {
		rep *report.Report
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := e.Migrator().Run(e.Ctx, o, migrate.Apply)
		done <- result{rep, err}
	}()

	// Queued for well past the pickup limit: still there, still mapped.
	v := velero.New(e.Clients, "", nil)
	time.Sleep(4 * o.Timeouts.VeleroPickup)
	list, err := v.Dyn.Resource(velero.RestoresGVR).Namespace(velero.DefaultNamespace).List(e.Ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=rebind"})
	if err != nil {
		t.Fatal(err)
	}
	var mine string
	for _, u := range list.Items {
		// Earlier tests' Restores are there too: this one restores from
		// this test's backup.
		if backupName, _, _ := unstructured.NestedString(u.Object, "spec", "backupName"); backupName == backup && strings.HasPrefix(u.GetName(), "rebind-") {
			if phase, _, _ := unstructured.NestedString(u.Object, "status", "phase"); phase != "" {
				t.Errorf("rebind's Restore %s ran (%s) while %s held the server", u.GetName(), phase, blocker)
			}
			mine = u.GetName()
		}
	}
	if mine == "" {
		select {
		case r := <-done:
			t.Fatalf("rebind gave up on its queued Restore: %v", r.err)
		default:
			t.Fatalf("rebind's Restore not found among %d", len(list.Items))
		}
	}
	if mapped, err := v.MappedClass(e.Ctx, "standard"); err != nil || mapped != sandbox.StorageClassPremium {
		t.Errorf("mapping while queued: %q %v", mapped, err)
	}
	released := time.Now().Truncate(time.Second) // Velero's timestamps have seconds only
	release()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	checkRestoredInto(t, e, r.rep, old)
	// The other Restore's completion comes from Velero's finalizer
	// controller, which may run after the next Restore has started: what
	// counts is that rebind's did not start while the other was held.
	m, err := v.GetRestore(e.Ctx, mine)
	if err != nil || m.Status.StartTimestamp == nil || m.Status.StartTimestamp.Time.Before(released) {
		t.Errorf("rebind's Restore started before %s released the server (%s): %v %+v", blocker, released, err, m)
	}
}

// TestVeleroRestoreTimeoutKeepsAndResumes: when --velero-restore-timeout
// passes with rebind's Restore still queued, the run stops with the
// Restore and its mapping left in place (Velero will run it: without the
// mapping it would restore into the original class); the same command
// run again once the queue moves waits for it and completes. A rollback
// while it is still queued deletes it and puts the mapping back.
func TestVeleroRestoreTimeoutKeepsAndResumes(t *testing.T) {
	e2eutil.NeedSandbox(t)
	for _, tc := range []struct {
		name     string
		rollback bool
	}{
		{"resume", false},
		{"rollback while queued", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := deployGrafana(t, fixtures.Release{Name: "grafana", Replicas: 1, StorageClass: "standard"}, 4)
			backup := csiBackup(t, e)
			old := boundPVs(e, 1)
			_, release := holdRestores(t, e, backup)
			v := velero.New(e.Clients, "", nil)

			o := e.options(migrate.VeleroRestore)
			o.FromBackup, o.ToClass = backup, sandbox.StorageClassPremium
			o.Timeouts.VeleroRestore = 8 * time.Second
			rep, err := e.Migrator().Run(e.Ctx, o, migrate.Apply)
			var running *velero.StillRunningError
			if !errors.As(err, &running) {
				t.Fatalf("want the Restore reported still queued, got %v", err)
			}
			for _, w := range []string{"still queued", "re-run the same command", "--velero-restore-timeout"} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if _, err := v.GetRestore(e.Ctx, running.Name); err != nil {
				t.Errorf("queued Restore: %v", err)
			}
			if mapped, err := v.MappedClass(e.Ctx, "standard"); err != nil || mapped != sandbox.StorageClassPremium {
				t.Errorf("mapping after the timeout: %q %v, want it kept for the queued Restore", mapped, err)
			}
			if got := e.BoundPV(0).Name; got != old[0] {
				t.Errorf("workload moved to %s", got)
			}

			if tc.rollback {
				if _, err := e.Migrator().Rollback(e.Ctx, e.Rel.Namespace, e.Rel.FullName()); err != nil {
					t.Fatal(err)
				}
				if _, err := v.GetRestore(e.Ctx, running.Name); !apierrors.IsNotFound(errors.Unwrap(err)) {
					t.Errorf("queued Restore after rollback: %v, want it deleted", err)
				}
				if mapped, err := v.MappedClass(e.Ctx, "standard"); err != nil || mapped != "" {
					t.Errorf("mapping after rollback: %q %v", mapped, err)
				}
				release()
				if got := e.BoundPV(0).Name; got != old[0] {
					t.Errorf("rolled back onto %s, want %s", got, old[0])
				}
				return
			}
			release()
			o.Timeouts.VeleroRestore = 2 * time.Minute
			rep, err = e.Migrator().Run(e.Ctx, o, migrate.Apply)
			if err != nil {
				t.Fatal(err)
			}
			checkRestoredInto(t, e, rep, old)
		})
	}
}
