// Package snapshot takes CSI VolumeSnapshots of claims and restores them
// into new claims.
package snapshot

import (
	"context"
	"errors"
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

// ErrorGrace is how long a snapshot may report an error before WaitReady
// takes it as final. The snapshot controller keeps retrying a failed
// creation and clears status.error once it succeeds (VolumeSnapshotStatus
// in external-snapshotter's v1 API); a passing error, such as its claim
// cache lagging behind a claim just created, is not the snapshot failing.
var ErrorGrace = 15 * time.Second

// WaitReady waits until the snapshot is readyToUse. An error the snapshot
// controller reports fails the wait once it has stood for ErrorGrace (or
// the timeout ends first); one it clears is forgotten.
func WaitReady(ctx context.Context, s snapclient.Interface, ns, name string, timeout time.Duration) (*snapv1.VolumeSnapshot, error) {
	deadline := time.Now().Add(timeout)
	var erredSince time.Time
	for {
		var failed error
		// Rounds of at most ErrorGrace: an error that stands is seen
		// again when the next round lists, even when nothing changes.
		vs, err := kube.Until(ctx, min(time.Until(deadline), ErrorGrace), fmt.Sprintf("VolumeSnapshot %s/%s to be readyToUse", ns, name), kube.SnapshotLW(s, ns, name),
			func(vs *snapv1.VolumeSnapshot, exists bool) (bool, error) {
				if !exists || vs.Status == nil {
					return false, nil
				}
				st := vs.Status
				if ptr.Deref(st.ReadyToUse, false) {
					return true, nil
				}
				if st.Error == nil || st.Error.Message == nil {
					erredSince = time.Time{}
					return false, nil
				}
				if erredSince.IsZero() {
					erredSince = time.Now()
				}
				if time.Since(erredSince) >= ErrorGrace || !time.Now().Before(deadline) {
					failed = fmt.Errorf("VolumeSnapshot %s/%s failed: %s", ns, name, *st.Error.Message)
					return false, failed
				}
				return false, nil
			}, func(vs *snapv1.VolumeSnapshot) string {
				if vs.Status == nil {
					return "no status yet (is the snapshot controller running?)"
				}
				d := fmt.Sprintf("readyToUse=%v content=%s", ptr.Deref(vs.Status.ReadyToUse, false), ptr.Deref(vs.Status.BoundVolumeSnapshotContentName, ""))
				if e := vs.Status.Error; e != nil && e.Message != nil {
					d += "; the snapshot controller reports: " + *e.Message
				}
				return d
			})
		var timedOut *kube.TimeoutError
		switch {
		case err == nil:
			return vs, nil
		case failed != nil:
			return nil, failed
		case !errors.As(err, &timedOut):
			return vs, err // the API refused, or ctx ended
		case !time.Now().Before(deadline):
			timedOut.Timeout = timeout
			return vs, timedOut
		}
		// A round ended without a verdict: look again.
	}
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
