package sandbox_test

import (
	"context"
	"io"
	"testing"
	"time"

	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/sandbox"
	"github.com/rebind-dev/rebind/pkg/kube"
	"github.com/rebind-dev/rebind/pkg/velero"
)

// TestVeleroBackupOutlivesItsCluster: two sandboxes on one S3 store, as two
// clusters of one cloud account. A Backup taken by the real Velero of A is
// synced into B's Velero after A is stopped (lost), and restored there.
// The foundation of disaster recovery into another cluster; volume data
// across clusters (Options.SnapshotRoot) and rebind's DR commands are
// tested in e2e/dr.
func TestVeleroBackupOutlivesItsCluster(t *testing.T) {
	e2eutil.NeedSandbox(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	store, err := sandbox.StartObjectStore(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Stop()
	start := func() *sandbox.Sandbox {
		s, err := sandbox.Start(ctx, sandbox.Options{ObjectStore: store.URL, Progress: io.Discard})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a := start()
	defer a.Stop()
	b := start()
	defer b.Stop()
	client := func(s *sandbox.Sandbox) *velero.Client {
		dyn, err := dynamic.NewForConfig(s.RESTConfig)
		if err != nil {
			t.Fatal(err)
		}
		return &velero.Client{Dyn: dyn, Kube: s.Kube, Namespace: sandbox.VeleroNamespace, Log: zap.NewNop()}
	}
	va, vb := client(a), client(b)

	const ns, backup = "dr-source", "dr-1"
	if _, err := a.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"dashboards": "42"}
	if _, err := a.Kube.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "baseline"}, Data: want}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := va.CreateBackup(ctx, velero.BackupRequest{Name: backup, Namespace: ns}); err != nil {
		t.Fatal(err)
	}
	if _, err := va.WaitBackup(ctx, backup, velero.Wait{Pickup: 30 * time.Second, Timeout: 2 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}

	// B's backup sync (every 5 s in the sandbox) brings the Backup in.
	_, err = kube.Until(ctx, time.Minute, "Backup "+backup+" synced into cluster B", kube.NamedLW(vb.Dyn.Resource(velero.BackupsGVR).Namespace(sandbox.VeleroNamespace), backup),
		func(u *unstructured.Unstructured, exists bool) (bool, error) {
			if !exists {
				return false, nil
			}
			phase, _, _ := unstructured.NestedString(u.Object, "status", "phase")
			return phase == string(velerov1.BackupPhaseCompleted), nil
		}, func(*unstructured.Unstructured) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vb.CreateRestore(ctx, velero.RestoreRequest{Name: "dr-restore", BackupName: backup, Namespace: ns, Into: ns}); err != nil {
		t.Fatal(err)
	}
	if _, err := vb.WaitRestore(ctx, "dr-restore", velero.Wait{Pickup: 30 * time.Second, Timeout: 2 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	cm, err := b.Kube.CoreV1().ConfigMaps(ns).Get(ctx, "baseline", metav1.GetOptions{})
	if err != nil || cm.Data["dashboards"] != want["dashboards"] {
		t.Fatalf("restored in B: %v %+v", err, cm)
	}
}
