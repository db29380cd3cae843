package velero_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/e2e/sandbox"
	"github.com/rebind-dev/rebind/pkg/journal"
	"github.com/rebind-dev/rebind/pkg/migrate"
	"github.com/rebind-dev/rebind/pkg/plan"
	"github.com/rebind-dev/rebind/pkg/preflight"
	"github.com/rebind-dev/rebind/pkg/velero"
)

func TestBackupBeforeMigration(t *testing.T) {
	e2eutil.NeedSandbox(t)
	for _, tc := range []struct {
		name     string
		strategy migrate.Strategy
		toClass  string
	}{
		{"reuse", migrate.Reuse, ""},
		{"restore into premium", migrate.Restore, "premium"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := deployGrafana(t, fixtures.Release{Name: "grafana", Replicas: 1, StorageClass: "standard"}, 9)
			o := e.options(tc.strategy)
			o.ToClass, o.Backup = tc.toClass, migrate.BackupVelero
			rep, err := e.Migrator().Run(e.Ctx, o, migrate.Apply)
			if err != nil {
				t.Fatal(err)
			}
			e.AssertVerified(rep)
			if rep.VeleroBackup == "" {
				t.Fatal("report names no Velero backup")
			}
			b, err := velero.New(e.Clients, "", nil).GetBackup(e.Ctx, rep.VeleroBackup)
			if err != nil {
				t.Fatal(err)
			}
			// The real server backs up the whole namespace, and the volume
			// as a CSI snapshot (no data mover without --snapshot-move-data).
			if b.Status.Phase != velerov1.BackupPhaseCompleted || b.Status.CSIVolumeSnapshotsCompleted != 1 || ptr.Deref(b.Spec.SnapshotMoveData, false) {
				t.Errorf("backup %s: phase %s, CSI snapshots %d of %d, snapshotMoveData %v", b.Name, b.Status.Phase,
					b.Status.CSIVolumeSnapshotsCompleted, b.Status.CSIVolumeSnapshotsAttempted, b.Spec.SnapshotMoveData)
			}
			if len(b.Spec.IncludedNamespaces) != 1 || b.Spec.IncludedNamespaces[0] != e.Rel.Namespace {
				t.Errorf("backup included %v", b.Spec.IncludedNamespaces)
			}
			// The backup comes before anything changes.
			idx := map[string]int{}
			for i, s := range rep.Steps {
				idx[s.ID] = i
			}
			bi, ok := idx["velero-backup"]
			if !ok || bi > idx["retain/"+rep.VolumesBefore[0].PV] {
				t.Errorf("velero-backup step at %d, retain at %d: %+v", bi, idx["retain/"+rep.VolumesBefore[0].PV], rep.Steps)
			}
			j, err := journal.Load(e.Ctx, sb.Kube, e.Rel.Namespace, e.Rel.FullName())
			if err != nil || j == nil {
				t.Fatalf("journal: %v", err)
			}
			if v, _ := j.Value("velero/backup"); v != rep.VeleroBackup {
				t.Errorf("journal records backup %q, report %q", v, rep.VeleroBackup)
			}
		})
	}
}

// TestVeleroRestoreAcrossDrivers moves Grafana from the hostpath driver to
// another driver, which no CSI snapshot can do, through a Velero backup
// whose data was moved by Velero's node-agent data mover. The data mover
// runs in pods, which kwok does not run: this is the one test against the
// Velero stand-in (sandbox.DataMoverNamespace), every other against the
// real server.
func TestVeleroRestoreAcrossDrivers(t *testing.T) {
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
			e := deployGrafana(t, fixtures.Release{Name: tc.release, Replicas: tc.replicas, StorageClass: "standard"}, 7)
			v := velero.New(e.Clients, sandbox.DataMoverNamespace, nil)
			backup := "nightly-" + e.Rel.Namespace
			if _, err := v.CreateBackup(e.Ctx, velero.BackupRequest{Name: backup, Namespace: e.Rel.Namespace, MoveData: true}); err != nil {
				t.Fatal(err)
			}
			if _, err := v.WaitBackup(e.Ctx, backup, velero.Wait{Pickup: 15 * time.Second, Timeout: time.Minute}); err != nil {
				t.Fatal(err)
			}
			var old []string
			for i := 0; i < int(tc.replicas); i++ {
				old = append(old, e.BoundPV(i).Name)
			}

			o := e.options(migrate.VeleroRestore)
			o.FromBackup, o.ToClass, o.VeleroNamespace = backup, sandbox.StorageClassOther, sandbox.DataMoverNamespace
			rep, err := e.Migrator().Run(e.Ctx, o, migrate.Apply)
			if err != nil {
				t.Fatal(err)
			}
			e.AssertVerified(rep)
			for i := 0; i < int(tc.replicas); i++ {
				pv := e.BoundPV(i)
				if pv.Name == old[i] {
					t.Errorf("ordinal %d still on its old PV", i)
				}
				if pv.Spec.StorageClassName != sandbox.StorageClassOther || pv.Spec.CSI == nil || pv.Spec.CSI.Driver != sandbox.OtherDriverName {
					t.Errorf("ordinal %d on class %s driver %+v, want %s/%s", i, pv.Spec.StorageClassName, pv.Spec.CSI, sandbox.StorageClassOther, sandbox.OtherDriverName)
				}
				if pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
					t.Errorf("restored PV %s policy %s, want its original Delete back", pv.Name, pv.Spec.PersistentVolumeReclaimPolicy)
				}
				oldPV, err := sb.Kube.CoreV1().PersistentVolumes().Get(e.Ctx, old[i], metav1.GetOptions{})
				if err != nil || oldPV.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimRetain {
					t.Errorf("old PV %s: %v, want it kept with Retain", old[i], err)
				}
			}
			// Nothing of the staging namespace may run or stay.
			for _, r := range rep.Steps {
				if r.ID == "velero-restore" && r.Status != "done" {
					t.Errorf("velero-restore step %s", r.Status)
				}
			}
			staging, err := sb.Kube.CoreV1().Namespaces().List(e.Ctx, metav1.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, ns := range staging.Items {
				if strings.HasPrefix(ns.Name, "rebind-"+rep.RunID) && ns.DeletionTimestamp == nil {
					t.Errorf("staging namespace %s left behind", ns.Name)
				}
			}
			if mapped, err := v.MappedClass(e.Ctx, "standard"); err != nil || mapped != "" {
				t.Errorf("storage-class mapping left in place: %q %v", mapped, err)
			}
		})
	}
}

// TestVeleroUnusableRefuses: with no usable Velero, or a backup that does
// not complete, the migration stops before it changes the workload.
func TestVeleroUnusableRefuses(t *testing.T) {
	e2eutil.NeedSandbox(t)
	for _, tc := range []struct {
		name      string
		release   fixtures.Release // default: grafana, 1 replica, class standard
		prepare   func(t *testing.T, e *grafanaEnv, o *migrate.Options)
		want      []string
		preflight bool // refused before a journal exists
	}{
		{
			name: "no Velero server in the namespace",
			prepare: func(_ *testing.T, e *grafanaEnv, o *migrate.Options) {
				o.VeleroNamespace = "no-velero-here"
			},
			want:      []string{"no Velero server runs in namespace no-velero-here", "--velero-namespace"},
			preflight: true,
		},
		{
			name: "velero-restore without Velero",
			prepare: func(_ *testing.T, e *grafanaEnv, o *migrate.Options) {
				o.Backup, o.Strategy, o.FromBackup, o.VeleroNamespace = "", migrate.VeleroRestore, "any", "no-velero-here"
			},
			want:      []string{"no Velero server runs in namespace no-velero-here"},
			preflight: true,
		},
		{
			name: "backup to restore does not exist",
			prepare: func(_ *testing.T, e *grafanaEnv, o *migrate.Options) {
				o.Backup, o.Strategy, o.FromBackup, o.ToClass = "", migrate.VeleroRestore, "never-taken", "premium"
			},
			want:      []string{"Velero Backup velero/never-taken", "not found", "velero backup get"},
			preflight: true,
		},
		{
			name: "location validated but no server picks the Backup up",
			prepare: func(t *testing.T, e *grafanaEnv, o *migrate.Options) {
				o.VeleroNamespace = availableLocationWithoutServer(t, e)
			},
			want: []string{"got no phase within", "no Velero server is processing namespace", "rebind changed nothing yet"},
		},
		{
			// The other driver has no VolumeSnapshotClass: Velero's CSI
			// plugin cannot snapshot the volume and the Backup ends
			// PartiallyFailed, which rebind does not trust.
			name:    "backup fails",
			release: fixtures.Release{Name: "grafana", Replicas: 1, StorageClass: sandbox.StorageClassOther},
			prepare: func(*testing.T, *grafanaEnv, *migrate.Options) {},
			want:    []string{"ended PartiallyFailed", "rebind changed nothing yet"},
		},
		{
			name: "--snapshot-move-data without node-agent",
			prepare: func(_ *testing.T, e *grafanaEnv, o *migrate.Options) {
				o.SnapshotMoveData = true
			},
			want:      []string{"--snapshot-move-data", "node-agent", "namespace velero does not run", "velero install --use-node-agent"},
			preflight: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rel := tc.release
			if rel.Name == "" {
				rel = fixtures.Release{Name: "grafana", Replicas: 1, StorageClass: "standard"}
			}
			e := deployGrafana(t, rel, 4)
			o := e.options(migrate.Reuse)
			o.Backup = migrate.BackupVelero
			tc.prepare(t, e, &o)
			before := e.workloadState()
			_, err := e.Migrator().Run(e.Ctx, o, migrate.Apply)
			if err == nil {
				t.Fatal("migration ran")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			var pf *preflight.Error
			if tc.preflight != errors.As(err, &pf) {
				t.Errorf("preflight error %v, want %v: %v", !tc.preflight, tc.preflight, err)
			}
			if tc.preflight && e.Journals() != 0 {
				t.Errorf("a refused run left a journal")
			}
			if after := e.workloadState(); after != before {
				t.Errorf("workload changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			var se *plan.StepError
			if !tc.preflight && (!errors.As(err, &se) || se.StepID != "velero-backup") {
				t.Errorf("want the velero-backup step to fail, got %v", err)
			}
		})
	}
}

// availableLocationWithoutServer makes a namespace that looks like Velero's
// (an Available location) but where nothing processes Backups.
func availableLocationWithoutServer(t *testing.T, e *grafanaEnv) string {
	t.Helper()
	ns := sb.NewNamespace(t)
	bsl := &velerov1.BackupStorageLocation{
		TypeMeta:   metav1.TypeMeta{APIVersion: "velero.io/v1", Kind: "BackupStorageLocation"},
		ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: ns},
		Spec: velerov1.BackupStorageLocationSpec{Provider: "aws", Default: true,
			StorageType: velerov1.StorageType{ObjectStorage: &velerov1.ObjectStorageLocation{Bucket: "b"}}},
	}
	bsl.Status.Phase = velerov1.BackupStorageLocationPhaseAvailable
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(bsl)
	if err != nil {
		t.Fatal(err)
	}
	// Velero's CRD has no status subresource: status is written with the object.
	if _, err := e.Clients.Dynamic.Resource(velero.LocationsGVR).Namespace(ns).Create(context.Background(), &unstructured.Unstructured{Object: m}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return ns
}
