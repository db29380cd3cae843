// Package snapshot takes CSI VolumeSnapshots of claims and restores them
// into new claims.
package snapshot

import (
	"context"
	"fmt"
	"time"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapclient "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/rebind-dev/rebind/pkg/kube"
)

// Group is the API group a claim's dataSource names.
const Group = "snapshot.storage.k8s.io"

// Create makes a VolumeSnapshot of a claim, or returns the existing one of
// that name when it snapshots the same claim (a resumed run).
func Create(ctx context.Context, s snapclient.Interface, ns, name, claim, class string, labels map[string]string) (*snapv1.VolumeSnapshot, error) {
	vs := &snapv1.VolumeSnapshot{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: snapv1.VolumeSnapshotSpec{
			Source:                  snapv1.VolumeSnapshotSource{PersistentVolumeClaimName: ptr.To(claim)},
			VolumeSnapshotClassName: ptr.To(class),
		},
	}
	got, err := s.SnapshotV1().VolumeSnapshots(ns).Create(ctx, vs, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		got, err = s.SnapshotV1().VolumeSnapshots(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil && ptr.Deref(got.Spec.Source.PersistentVolumeClaimName, "") != claim {
			return nil, fmt.Errorf("VolumeSnapshot %s/%s exists but snapshots claim %q, not %q: delete or rename it", ns, name, ptr.Deref(got.Spec.Source.PersistentVolumeClaimName, ""), claim)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("creating VolumeSnapshot %s/%s of claim %s: %w", ns, name, claim, err)
	}
	return got, nil
}

// WaitReady waits until the snapshot is readyToUse, failing at once when
// the snapshot controller reports an error (a non-CSI volume, say).
func WaitReady(ctx context.Context, s snapclient.Interface, ns, name string, timeout time.Duration) (*snapv1.VolumeSnapshot, error) {
	return kube.Until(ctx, timeout, fmt.Sprintf("VolumeSnapshot %s/%s to be readyToUse", ns, name), kube.SnapshotLW(s, ns, name),
		func(vs *snapv1.VolumeSnapshot, exists bool) (bool, error) {
			if !exists {
				return false, nil
			}
			if st := vs.Status; st != nil {
				if st.Error != nil && st.Error.Message != nil && !ptr.Deref(st.ReadyToUse, false) {
					return false, fmt.Errorf("VolumeSnapshot %s/%s failed: %s", ns, name, *st.Error.Message)
				}
				return ptr.Deref(st.ReadyToUse, false), nil
			}
			return false, nil
		}, func(vs *snapv1.VolumeSnapshot) string {
			if vs.Status == nil {
				return "no status yet (is the snapshot controller running?)"
			}
			return fmt.Sprintf("readyToUse=%v content=%s", ptr.Deref(vs.Status.ReadyToUse, false), ptr.Deref(vs.Status.BoundVolumeSnapshotContentName, ""))
		})
}

// Get reads a snapshot with an actionable error when it is missing.
func Get(ctx context.Context, s snapclient.Interface, ns, name string) (*snapv1.VolumeSnapshot, error) {
	vs, err := s.SnapshotV1().VolumeSnapshots(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("VolumeSnapshot %s/%s not found: list them with `kubectl get volumesnapshots -n %s`", ns, name, ns)
	}
	if err != nil {
		return nil, fmt.Errorf("reading VolumeSnapshot %s/%s: %w", ns, name, err)
	}
	return vs, nil
}

// RequireReady fails unless the snapshot exists and is readyToUse.
func RequireReady(ctx context.Context, s snapclient.Interface, ns, name string) error {
	vs, err := Get(ctx, s, ns, name)
	if err != nil {
		return err
	}
	if vs.Status == nil || !ptr.Deref(vs.Status.ReadyToUse, false) {
		return fmt.Errorf("VolumeSnapshot %s/%s is not readyToUse", ns, name)
	}
	return nil
}

// Driver returns the CSI driver that holds a snapshot's data.
func Driver(ctx context.Context, s snapclient.Interface, vs *snapv1.VolumeSnapshot) (string, error) {
	if vs.Status == nil || vs.Status.BoundVolumeSnapshotContentName == nil {
		return "", fmt.Errorf("VolumeSnapshot %s/%s is not bound to a VolumeSnapshotContent yet", vs.Namespace, vs.Name)
	}
	c, err := s.SnapshotV1().VolumeSnapshotContents().Get(ctx, *vs.Status.BoundVolumeSnapshotContentName, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("reading VolumeSnapshotContent %s: %w", *vs.Status.BoundVolumeSnapshotContentName, err)
	}
	return c.Spec.Driver, nil
}

// RestoreSize is the minimum size of a claim restored from the snapshot.
func RestoreSize(vs *snapv1.VolumeSnapshot) resource.Quantity {
	if vs.Status != nil && vs.Status.RestoreSize != nil {
		return *vs.Status.RestoreSize
	}
	return resource.Quantity{}
}

// RestoreClaim is a claim provisioned from a snapshot.
type RestoreClaim struct {
	Namespace, Name, Snapshot, StorageClass string
	Size                                    resource.Quantity
	AccessModes                             []corev1.PersistentVolumeAccessMode
	VolumeMode                              *corev1.PersistentVolumeMode
	Labels                                  map[string]string
}

// Claim renders the claim object.
func (r RestoreClaim) Claim() *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: r.Name, Namespace: r.Namespace, Labels: r.Labels},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      r.AccessModes,
			StorageClassName: ptr.To(r.StorageClass),
			VolumeMode:       r.VolumeMode,
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: r.Size}},
			DataSource:       &corev1.TypedLocalObjectReference{APIGroup: ptr.To(Group), Kind: "VolumeSnapshot", Name: r.Snapshot},
		},
	}
}

// CreateRestoreClaim creates the claim, or accepts an existing one restored
// from the same snapshot.
func CreateRestoreClaim(ctx context.Context, k kubernetes.Interface, r RestoreClaim, dryRun bool) (*corev1.PersistentVolumeClaim, error) {
	opts := metav1.CreateOptions{}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	got, err := k.CoreV1().PersistentVolumeClaims(r.Namespace).Create(ctx, r.Claim(), opts)
	if apierrors.IsAlreadyExists(err) {
		got, err = k.CoreV1().PersistentVolumeClaims(r.Namespace).Get(ctx, r.Name, metav1.GetOptions{})
		if err == nil && (got.Spec.DataSource == nil || got.Spec.DataSource.Name != r.Snapshot) {
			return nil, fmt.Errorf("claim %s/%s exists but is not restored from VolumeSnapshot %s: delete or rename it", r.Namespace, r.Name, r.Snapshot)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("creating claim %s/%s from VolumeSnapshot %s: %w", r.Namespace, r.Name, r.Snapshot, err)
	}
	return got, nil
}
