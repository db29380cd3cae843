package storage

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"
)

const (
	// fsTypeParam is the StorageClass parameter external-provisioner reads the
	// filesystem type from.
	fsTypeParam   = "csi.storage.k8s.io/fstype"
	defaultFSType = "ext4"
	// provisionerIdentityKey is the volume attribute external-provisioner stamps
	// on every PV it makes; tools that recognise CSI PVs may look for it.
	provisionerIdentityKey = "storage.kubernetes.io/csiProvisionerIdentity"

	snapshotGroup = "snapshot.storage.k8s.io"
)

// provisioner implements controller.Provisioner for both drivers: the class's
// provisioner field says which driver a volume belongs to.
type provisioner struct {
	a        *Agent
	identity string
}

var _ controller.Provisioner = (*provisioner)(nil)

// refuse marks a request that can never succeed as it stands. InvalidArgument is
// what a CSI driver answers in that case; the provisioning library then emits a
// ProvisioningFailed event on the claim and slows its retries down.
func refuse(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, format, args...)
}

func (p *provisioner) Provision(ctx context.Context, opts controller.ProvisionOptions) (*corev1.PersistentVolume, controller.ProvisioningState, error) {
	claim, class := opts.PVC, opts.StorageClass
	driver := class.Provisioner
	if !isOurDriver(driver) {
		return nil, controller.ProvisioningFinished, &controller.IgnoredError{Reason: "provisioner " + driver + " is not played by the sandbox agent"}
	}
	if claim.Spec.VolumeMode != nil && *claim.Spec.VolumeMode == corev1.PersistentVolumeBlock {
		return nil, controller.ProvisioningFinished, refuse("block volumes are not supported")
	}
	reqQty, ok := claim.Spec.Resources.Requests[corev1.ResourceStorage]
	if !ok {
		return nil, controller.ProvisioningFinished, refuse("claim %s/%s has no storage request", claim.Namespace, claim.Name)
	}
	requested := reqQty.Value()

	src, err := p.sourceDir(ctx, opts, requested)
	if err != nil {
		return nil, controller.ProvisioningFinished, err
	}

	// The PV name is derived from the claim UID, so a retried Provision for the
	// same claim lands on the same directory instead of leaking a new one.
	handle := opts.PVName
	dir, err := p.a.volumePath(handle)
	if err != nil {
		return nil, controller.ProvisioningFinished, err
	}
	if err := materialize(src, dir); err != nil {
		return nil, controller.ProvisioningFinished, fmt.Errorf("creating volume directory: %w", err)
	}

	reclaim := corev1.PersistentVolumeReclaimDelete
	if class.ReclaimPolicy != nil {
		reclaim = *class.ReclaimPolicy
	}
	fsType := class.Parameters[fsTypeParam]
	if fsType == "" {
		fsType = defaultFSType
	}
	volumeMode := corev1.PersistentVolumeFilesystem
	if claim.Spec.VolumeMode != nil {
		volumeMode = *claim.Spec.VolumeMode
	}
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: opts.PVName},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: *resource.NewQuantity(requested, reqQty.Format)},
			AccessModes:                   claim.Spec.AccessModes,
			PersistentVolumeReclaimPolicy: reclaim,
			MountOptions:                  class.MountOptions,
			VolumeMode:                    &volumeMode,
			PersistentVolumeSource: corev1.PersistentVolumeSource{
				CSI: &corev1.CSIPersistentVolumeSource{
					Driver:           driver,
					VolumeHandle:     handle,
					FSType:           fsType,
					VolumeAttributes: map[string]string{provisionerIdentityKey: p.identity + "-" + driver},
				},
			},
		},
	}
	p.a.log.Info("provisioned volume",
		zap.String("claim", claim.Namespace+"/"+claim.Name), zap.String("pv", pv.Name),
		zap.String("driver", driver), zap.String("class", class.Name), zap.Bool("fromSource", src != ""))
	return pv, controller.ProvisioningFinished, nil
}

// sourceDir validates the claim's data source the way external-provisioner and
// a CSI driver would, and returns the directory to copy from ("" for an empty
// volume).
func (p *provisioner) sourceDir(ctx context.Context, opts controller.ProvisionOptions, requested int64) (string, error) {
	claim := opts.PVC
	var group, kind, name, ns string
	switch {
	case claim.Spec.DataSourceRef != nil:
		r := claim.Spec.DataSourceRef
		kind, name = r.Kind, r.Name
		if r.APIGroup != nil {
			group = *r.APIGroup
		}
		if r.Namespace != nil {
			ns = *r.Namespace
		}
	case claim.Spec.DataSource != nil:
		r := claim.Spec.DataSource
		kind, name = r.Kind, r.Name
		if r.APIGroup != nil {
			group = *r.APIGroup
		}
	default:
		return "", nil
	}
	if ns != "" && ns != claim.Namespace {
		return "", refuse("cross-namespace data sources are not supported (%s/%s)", ns, name)
	}
	switch {
	case group == snapshotGroup && kind == "VolumeSnapshot":
		return p.snapshotSource(ctx, opts, name, requested)
	case group == "" && kind == "PersistentVolumeClaim":
		return p.cloneSource(ctx, opts, name, requested)
	default:
		// A volume populator owns other kinds; leave the claim to it.
		return "", &controller.IgnoredError{Reason: fmt.Sprintf("data source %s/%s is not handled by the sandbox agent", group, kind)}
	}
}

func (p *provisioner) snapshotSource(ctx context.Context, opts controller.ProvisionOptions, name string, requested int64) (string, error) {
	claim, driver := opts.PVC, opts.StorageClass.Provisioner
	snap, err := p.a.snap.SnapshotV1().VolumeSnapshots(claim.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("getting VolumeSnapshot %s/%s: %w", claim.Namespace, name, err)
	}
	content, err := p.boundContent(ctx, snap)
	if err != nil {
		return "", err
	}
	return checkSnapshotRestore(p.a, snap, content, driver, requested)
}

func (p *provisioner) boundContent(ctx context.Context, snap *snapv1.VolumeSnapshot) (*snapv1.VolumeSnapshotContent, error) {
	if snap.Status == nil || snap.Status.BoundVolumeSnapshotContentName == nil || *snap.Status.BoundVolumeSnapshotContentName == "" {
		return nil, fmt.Errorf("VolumeSnapshot %s/%s is not bound to a VolumeSnapshotContent yet", snap.Namespace, snap.Name)
	}
	content, err := p.a.snap.SnapshotV1().VolumeSnapshotContents().Get(ctx, *snap.Status.BoundVolumeSnapshotContentName, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("getting VolumeSnapshotContent %s: %w", *snap.Status.BoundVolumeSnapshotContentName, err)
	}
	return content, nil
}

// checkSnapshotRestore holds the rules a restore must pass. Errors that may
// clear up on their own (not ready yet) are plain errors so the claim is
// retried soon; the rest are refusals.
func checkSnapshotRestore(a *Agent, snap *snapv1.VolumeSnapshot, content *snapv1.VolumeSnapshotContent, driver string, requested int64) (string, error) {
	key := snap.Namespace + "/" + snap.Name
	if snap.DeletionTimestamp != nil {
		return "", refuse("VolumeSnapshot %s is being deleted", key)
	}
	if content.DeletionTimestamp != nil {
		return "", refuse("VolumeSnapshotContent %s is being deleted", content.Name)
	}
	if content.Spec.VolumeSnapshotRef.UID != snap.UID {
		return "", fmt.Errorf("VolumeSnapshotContent %s is not bound to VolumeSnapshot %s", content.Name, key)
	}
	if content.Spec.Driver != driver {
		return "", refuse("VolumeSnapshotContent %s belongs to driver %s; the StorageClass provisioner %s cannot restore it", content.Name, content.Spec.Driver, driver)
	}
	if snap.Status == nil || snap.Status.ReadyToUse == nil || !*snap.Status.ReadyToUse {
		return "", fmt.Errorf("VolumeSnapshot %s is not ready to use yet", key)
	}
	if content.Status == nil || content.Status.SnapshotHandle == nil {
		return "", fmt.Errorf("VolumeSnapshotContent %s has no snapshot handle yet", content.Name)
	}
	var restoreSize int64
	if content.Status.RestoreSize != nil {
		restoreSize = *content.Status.RestoreSize
	} else if snap.Status.RestoreSize != nil {
		restoreSize = snap.Status.RestoreSize.Value()
	}
	if requested < restoreSize {
		return "", refuse("requested volume size %d is less than the size %d of the source snapshot %s", requested, restoreSize, key)
	}
	dir, err := a.snapshotPath(*content.Status.SnapshotHandle)
	if err != nil {
		return "", refuse("VolumeSnapshotContent %s: %v", content.Name, err)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return "", refuse("snapshot %s of VolumeSnapshotContent %s does not exist on the storage", *content.Status.SnapshotHandle, content.Name)
	}
	return dir, nil
}

// cloneSource applies external-provisioner's cloning rules: same namespace,
// same class, a bound source of the same driver, no smaller than the source.
func (p *provisioner) cloneSource(ctx context.Context, opts controller.ProvisionOptions, name string, requested int64) (string, error) {
	claim, class := opts.PVC, opts.StorageClass
	src, err := p.a.kube.CoreV1().PersistentVolumeClaims(claim.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("getting source claim %s/%s: %w", claim.Namespace, name, err)
	}
	if src.DeletionTimestamp != nil {
		return "", refuse("source claim %s/%s is being deleted", src.Namespace, src.Name)
	}
	if src.Spec.StorageClassName == nil || *src.Spec.StorageClassName != class.Name {
		return "", refuse("the source claim %s/%s and the new claim must be in the same StorageClass for cloning", src.Namespace, src.Name)
	}
	if src.Status.Phase != corev1.ClaimBound || src.Spec.VolumeName == "" {
		return "", fmt.Errorf("source claim %s/%s is not bound yet", src.Namespace, src.Name)
	}
	pv, err := p.a.kube.CoreV1().PersistentVolumes().Get(ctx, src.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("getting source volume %s: %w", src.Spec.VolumeName, err)
	}
	if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != class.Provisioner {
		return "", refuse("source volume %s does not belong to driver %s", pv.Name, class.Provisioner)
	}
	if capQty, ok := pv.Spec.Capacity[corev1.ResourceStorage]; ok && requested < capQty.Value() {
		return "", refuse("requested volume size %d is less than the size %d of the source claim %s/%s", requested, capQty.Value(), src.Namespace, src.Name)
	}
	dir, ok := p.a.VolumeDir(pv)
	if !ok {
		return "", refuse("source volume %s has no directory on the storage", pv.Name)
	}
	return dir, nil
}

// Delete removes the volume directory. Only volumes this agent could have made
// are touched; anything else is left to its own provisioner.
func (p *provisioner) Delete(ctx context.Context, pv *corev1.PersistentVolume) error {
	if pv.Spec.CSI == nil || !isOurDriver(pv.Spec.CSI.Driver) {
		return &controller.IgnoredError{Reason: "not a sandbox agent volume"}
	}
	dir, err := p.a.volumePath(pv.Spec.CSI.VolumeHandle)
	if err != nil {
		return &controller.IgnoredError{Reason: err.Error()}
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("removing volume directory: %w", err)
	}
	p.a.log.Info("deleted volume", zap.String("pv", pv.Name), zap.String("handle", pv.Spec.CSI.VolumeHandle))
	return nil
}

func newIdentity() string {
	// external-provisioner uses "<start time ms>-<random>-<driver>"; the start
	// time alone is unique enough for one sandbox.
	return strconv.FormatInt(time.Now().UnixMilli(), 10) + "-" + strconv.Itoa(os.Getpid())
}
