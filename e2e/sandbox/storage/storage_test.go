package storage

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapfake "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned/fake"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	kubefake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"
)

func newTestAgent(t *testing.T, kubeObjs []runtime.Object, snapObjs []runtime.Object) *Agent {
	t.Helper()
	a, err := New(Config{Root: t.TempDir(), Kube: kubefake.NewClientset(kubeObjs...), Snap: snapfake.NewSimpleClientset(snapObjs...)})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func class(name, driver string) *storagev1.StorageClass {
	retain := corev1.PersistentVolumeReclaimRetain
	return &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Provisioner: driver, ReclaimPolicy: &retain}
}

func claim(name, size string, source *corev1.TypedObjectReference) *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID("uid-" + name)},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:     corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)}},
			DataSourceRef: source,
		},
	}
}

func snapshotRef(name string) *corev1.TypedObjectReference {
	g := snapshotGroup
	return &corev1.TypedObjectReference{APIGroup: &g, Kind: "VolumeSnapshot", Name: name}
}

// readySnapshot returns a VolumeSnapshot bound to a ready content of driver,
// with a snapshot directory holding one file.
func readySnapshot(t *testing.T, a *Agent, driver string, restoreSize int64) (*snapv1.VolumeSnapshot, *snapv1.VolumeSnapshotContent) {
	t.Helper()
	handle := "snapshot-1"
	dir, _ := a.snapshotPath(handle)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "grafana.db"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	ready := true
	contentName := "snapcontent-1"
	snap := &snapv1.VolumeSnapshot{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "snap", UID: "snap-uid"},
		Status:     &snapv1.VolumeSnapshotStatus{BoundVolumeSnapshotContentName: &contentName, ReadyToUse: &ready},
	}
	content := &snapv1.VolumeSnapshotContent{
		ObjectMeta: metav1.ObjectMeta{Name: contentName},
		Spec: snapv1.VolumeSnapshotContentSpec{
			Driver:            driver,
			VolumeSnapshotRef: corev1.ObjectReference{Namespace: "ns", Name: "snap", UID: "snap-uid"},
		},
		Status: &snapv1.VolumeSnapshotContentStatus{SnapshotHandle: &handle, ReadyToUse: &ready, RestoreSize: &restoreSize},
	}
	return snap, content
}

func TestProvisionEmptyVolume(t *testing.T) {
	a := newTestAgent(t, nil, nil)
	p := &provisioner{a: a, identity: "test"}
	pv, state, err := p.Provision(context.Background(), controller.ProvisionOptions{
		StorageClass: class("premium", DriverName), PVName: "pvc-1", PVC: claim("c", "2Gi", nil),
	})
	if err != nil || state != controller.ProvisioningFinished {
		t.Fatalf("Provision: %v %v", state, err)
	}
	if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != DriverName || pv.Spec.CSI.VolumeHandle != "pvc-1" || pv.Spec.CSI.FSType != "ext4" {
		t.Fatalf("CSI source = %+v", pv.Spec.CSI)
	}
	if q := pv.Spec.Capacity[corev1.ResourceStorage]; q.Cmp(resource.MustParse("2Gi")) != 0 {
		t.Fatalf("capacity = %s", q.String())
	}
	if pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimRetain {
		t.Fatalf("reclaim = %s", pv.Spec.PersistentVolumeReclaimPolicy)
	}
	dir, ok := a.VolumeDir(pv)
	if !ok {
		t.Fatal("VolumeDir: no directory")
	}
	if err := p.Delete(context.Background(), pv); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("directory survived Delete: %v", err)
	}
}

func TestRestoreRules(t *testing.T) {
	tests := []struct {
		name          string
		contentDriver string
		classDriver   string
		request       string
		wantRefused   string
	}{
		{name: "same driver, big enough", contentDriver: DriverName, classDriver: DriverName, request: "1Gi"},
		{name: "other driver", contentDriver: DriverName, classDriver: OtherDriverName, request: "1Gi", wantRefused: "cannot restore"},
		{name: "too small", contentDriver: DriverName, classDriver: DriverName, request: "512Mi", wantRefused: "less than the size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newTestAgent(t, nil, nil)
			snap, content := readySnapshot(t, a, tt.contentDriver, 1<<30)
			a.snap = snapfake.NewSimpleClientset(snap, content)
			p := &provisioner{a: a, identity: "test"}
			pv, _, err := p.Provision(context.Background(), controller.ProvisionOptions{
				StorageClass: class("c", tt.classDriver), PVName: "pvc-r", PVC: claim("r", tt.request, snapshotRef("snap")),
			})
			if tt.wantRefused != "" {
				if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tt.wantRefused) {
					t.Fatalf("want refusal %q, got %v", tt.wantRefused, err)
				}
				if _, err := os.Stat(filepath.Join(volumesDir(a.root), "pvc-r")); !os.IsNotExist(err) {
					t.Fatalf("refused restore left a directory: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			dir, _ := a.VolumeDir(pv)
			if b, err := os.ReadFile(filepath.Join(dir, "grafana.db")); err != nil || string(b) != "data" {
				t.Fatalf("restored data = %q, %v", b, err)
			}
		})
	}
}

func TestRestoreWaitsForReadySnapshot(t *testing.T) {
	a := newTestAgent(t, nil, nil)
	snap, content := readySnapshot(t, a, DriverName, 1)
	notReady := false
	snap.Status.ReadyToUse = &notReady
	a.snap = snapfake.NewSimpleClientset(snap, content)
	p := &provisioner{a: a}
	_, _, err := p.Provision(context.Background(), controller.ProvisionOptions{
		StorageClass: class("c", DriverName), PVName: "pvc-w", PVC: claim("w", "1Gi", snapshotRef("snap")),
	})
	// Not ready is temporary: a plain error, retried soon, not a refusal.
	if err == nil || status.Code(err) == codes.InvalidArgument {
		t.Fatalf("want a retryable error, got %v", err)
	}
}

func newTestSnapshotter(a *Agent, pvs ...*corev1.PersistentVolume) *snapshotter {
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{pvHandleIndex: indexPVByHandle})
	for _, pv := range pvs {
		_ = idx.Add(pv)
	}
	return &snapshotter{a: a, pvs: idx}
}

func TestSnapshotCutAndDelete(t *testing.T) {
	ctx := context.Background()
	a := newTestAgent(t, nil, nil)
	volDir, _ := a.volumePath("pvc-src")
	if err := os.MkdirAll(filepath.Join(volDir, "plugins"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(volDir, "grafana.db"), []byte("v1"), 0o640); err != nil {
		t.Fatal(err)
	}
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "pvc-src"},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:               corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: DriverName, VolumeHandle: "pvc-src"}},
		},
	}
	handle, className := "pvc-src", "hostpath-snapclass"
	content := &snapv1.VolumeSnapshotContent{
		ObjectMeta: metav1.ObjectMeta{Name: "content", UID: "cuid", Finalizers: []string{contentFinalizer}},
		Spec: snapv1.VolumeSnapshotContentSpec{
			Driver: DriverName, DeletionPolicy: snapv1.VolumeSnapshotContentDelete,
			VolumeSnapshotClassName: &className,
			Source:                  snapv1.VolumeSnapshotContentSource{VolumeHandle: &handle},
			VolumeSnapshotRef:       corev1.ObjectReference{Namespace: "ns", Name: "snap", UID: "suid"},
		},
	}
	client := snapfake.NewSimpleClientset(content)
	a.snap = client
	s := newTestSnapshotter(a, pv)
	if err := s.sync(ctx, content); err != nil {
		t.Fatal(err)
	}
	got, _ := client.SnapshotV1().VolumeSnapshotContents().Get(ctx, "content", metav1.GetOptions{})
	st := got.Status
	if st == nil || st.ReadyToUse == nil || !*st.ReadyToUse || st.SnapshotHandle == nil || st.RestoreSize == nil || *st.RestoreSize != 1<<30 || st.CreationTime == nil {
		t.Fatalf("status = %+v", st)
	}
	if metav1.HasAnnotation(got.ObjectMeta, annBeingCreated) {
		t.Fatal("being-created annotation left behind")
	}
	snapDir, _ := a.snapshotPath(*st.SnapshotHandle)
	if b, err := os.ReadFile(filepath.Join(snapDir, "grafana.db")); err != nil || string(b) != "v1" {
		t.Fatalf("snapshot data = %q, %v", b, err)
	}
	// The snapshot is a copy: later writes to the volume do not reach it.
	_ = os.WriteFile(filepath.Join(volDir, "grafana.db"), []byte("v2"), 0o640)
	if b, _ := os.ReadFile(filepath.Join(snapDir, "grafana.db")); string(b) != "v1" {
		t.Fatalf("snapshot changed with its volume: %q", b)
	}

	// Deleted but not yet handed over by the common controller: keep everything.
	now := metav1.Now()
	got.DeletionTimestamp = &now
	if err := s.sync(ctx, got.DeepCopy()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(snapDir); err != nil {
		t.Fatalf("snapshot removed before the common controller asked: %v", err)
	}

	metav1.SetMetaDataAnnotation(&got.ObjectMeta, annBeingDeleted, "yes")
	if _, err := client.SnapshotV1().VolumeSnapshotContents().Update(ctx, got, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.sync(ctx, got.DeepCopy()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(snapDir); !os.IsNotExist(err) {
		t.Fatalf("snapshot directory survived deletion: %v", err)
	}
	final, _ := client.SnapshotV1().VolumeSnapshotContents().Get(ctx, "content", metav1.GetOptions{})
	if len(final.Finalizers) != 0 || final.Status.SnapshotHandle != nil {
		t.Fatalf("after delete: finalizers %v, handle %v", final.Finalizers, final.Status.SnapshotHandle)
	}
}

func TestPreProvisionedContent(t *testing.T) {
	ctx := context.Background()
	a := newTestAgent(t, nil, nil)
	handle := "imported"
	content := &snapv1.VolumeSnapshotContent{
		ObjectMeta: metav1.ObjectMeta{Name: "pre"},
		Spec: snapv1.VolumeSnapshotContentSpec{
			Driver: DriverName, DeletionPolicy: snapv1.VolumeSnapshotContentRetain,
			Source: snapv1.VolumeSnapshotContentSource{SnapshotHandle: &handle},
		},
	}
	client := snapfake.NewSimpleClientset(content)
	a.snap = client
	s := newTestSnapshotter(a)
	if err := s.sync(ctx, content); err == nil {
		t.Fatal("missing snapshot directory reported no error")
	}
	got, _ := client.SnapshotV1().VolumeSnapshotContents().Get(ctx, "pre", metav1.GetOptions{})
	if got.Status == nil || got.Status.Error == nil || *got.Status.ReadyToUse {
		t.Fatalf("want error status, got %+v", got.Status)
	}
	dir, _ := a.snapshotPath(handle)
	_ = os.MkdirAll(dir, 0o755)
	_ = os.WriteFile(filepath.Join(dir, "f"), []byte("12345"), 0o644)
	if err := s.sync(ctx, got); err != nil {
		t.Fatal(err)
	}
	got, _ = client.SnapshotV1().VolumeSnapshotContents().Get(ctx, "pre", metav1.GetOptions{})
	if !*got.Status.ReadyToUse || *got.Status.SnapshotHandle != handle || *got.Status.RestoreSize != 5 || got.Status.Error != nil {
		t.Fatalf("status = %+v", got.Status)
	}
}

func TestHandlesStayInsideRoot(t *testing.T) {
	a := newTestAgent(t, nil, nil)
	for _, h := range []string{"", "..", "../x", "a/b", ".hidden", "/abs"} {
		if _, err := a.volumePath(h); err == nil {
			t.Errorf("handle %q accepted", h)
		}
	}
	pv := &corev1.PersistentVolume{Spec: corev1.PersistentVolumeSpec{PersistentVolumeSource: corev1.PersistentVolumeSource{
		CSI: &corev1.CSIPersistentVolumeSource{Driver: "other.csi.example", VolumeHandle: "x"}}}}
	if _, ok := a.VolumeDir(pv); ok {
		t.Error("VolumeDir accepted a foreign driver")
	}
}

// TestSharedSnapshotRoot: two agents on one SnapshotRoot see each other's
// snapshots (a pre-provisioned content naming the handle one cut is ready
// for the other), while their volumes stay apart.
func TestSharedSnapshotRoot(t *testing.T) {
	ctx := context.Background()
	shared := t.TempDir()
	agent := func() *Agent {
		a, err := New(Config{Root: t.TempDir(), SnapshotRoot: shared, Kube: kubefake.NewClientset(), Snap: snapfake.NewSimpleClientset()})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	a, b := agent(), agent()
	handle := "snapshot-from-a"
	dirA, err := a.snapshotPath(handle)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(dirA) != shared {
		t.Fatalf("snapshot of A at %s, not under %s", dirA, shared)
	}
	if err := os.MkdirAll(dirA, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dirA, "grafana.db"), []byte("abc"), 0o644); err != nil {
		t.Fatal(err)
	}
	content := &snapv1.VolumeSnapshotContent{
		ObjectMeta: metav1.ObjectMeta{Name: "restored-in-b"},
		Spec: snapv1.VolumeSnapshotContentSpec{Driver: DriverName, DeletionPolicy: snapv1.VolumeSnapshotContentRetain,
			Source: snapv1.VolumeSnapshotContentSource{SnapshotHandle: &handle}},
	}
	client := snapfake.NewSimpleClientset(content)
	b.snap = client
	if err := newTestSnapshotter(b).sync(ctx, content); err != nil {
		t.Fatal(err)
	}
	got, _ := client.SnapshotV1().VolumeSnapshotContents().Get(ctx, content.Name, metav1.GetOptions{})
	if got.Status == nil || !*got.Status.ReadyToUse || *got.Status.RestoreSize != 3 {
		t.Fatalf("B does not see A's snapshot: %+v", got.Status)
	}
	va, _ := a.volumePath("v")
	vb, _ := b.volumePath("v")
	if va == vb {
		t.Errorf("volumes share %s", va)
	}
}
