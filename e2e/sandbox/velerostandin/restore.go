package velerostandin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/uuid"
)

func ignoreNotFound(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

func (s *StandIn) updateRestore(ctx context.Context, r *velerov1.Restore) (*velerov1.Restore, error) {
	u, err := toUnstructured(r)
	if err != nil {
		return nil, err
	}
	got, err := s.cfg.Dyn.Resource(restoresGVR).Namespace(Namespace).Update(ctx, u, metav1.UpdateOptions{})
	if err != nil {
		return nil, err
	}
	out := &velerov1.Restore{}
	return out, fromUnstructured(got, out)
}

func (s *StandIn) syncRestore(ctx context.Context, name string) error {
	u, err := s.cfg.Dyn.Resource(restoresGVR).Namespace(Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return ignoreNotFound(err)
	}
	r := &velerov1.Restore{}
	if err := fromUnstructured(u, r); err != nil {
		return err
	}
	if r.Status.Phase != "" && r.Status.Phase != velerov1.RestorePhaseNew {
		return nil
	}
	index, verr := s.loadIndex(ctx, r.Spec.BackupName)
	if verr != nil {
		r.Status.Phase, r.Status.ValidationErrors = velerov1.RestorePhaseFailedValidation, []string{verr.Error()}
		_, err := s.updateRestore(ctx, r)
		return err
	}
	now := metav1.Now()
	r.Status.Phase, r.Status.StartTimestamp = velerov1.RestorePhaseInProgress, &now
	if r, err = s.updateRestore(ctx, r); err != nil {
		return err
	}
	restored, errs, warns := s.restore(ctx, r, index)
	done := metav1.Now()
	r.Status.CompletionTimestamp = &done
	r.Status.Errors, r.Status.Warnings = errs, warns
	r.Status.Progress = &velerov1.RestoreProgress{TotalItems: len(index), ItemsRestored: restored}
	r.Status.Phase = velerov1.RestorePhaseCompleted
	if errs > 0 {
		r.Status.Phase = velerov1.RestorePhasePartiallyFailed
	}
	_, err = s.updateRestore(ctx, r)
	s.log.Info("restore finished", zap.String("restore", name), zap.String("phase", string(r.Status.Phase)),
		zap.Int("claims", restored), zap.Int("errors", errs), zap.Int("warnings", warns))
	return err
}

func (s *StandIn) loadIndex(ctx context.Context, backup string) ([]record, error) {
	if backup == "" {
		return nil, errors.New("backupName is required")
	}
	b, err := s.getBackup(ctx, backup)
	if err != nil {
		return nil, fmt.Errorf("backup %s: %v", backup, err)
	}
	if b.Status.Phase != velerov1.BackupPhaseCompleted && b.Status.Phase != velerov1.BackupPhasePartiallyFailed {
		return nil, fmt.Errorf("backup %s is %s, not restorable", backup, b.Status.Phase)
	}
	raw, err := os.ReadFile(filepath.Join(s.backupDir(backup), "index.json"))
	if err != nil {
		return nil, fmt.Errorf("backup %s has no data in the store: %v", backup, err)
	}
	var index []record
	return index, json.Unmarshal(raw, &index)
}

// classMapping reads the change-storage-class plugin ConfigMap, found by
// its labels as Velero does.
func (s *StandIn) classMapping(ctx context.Context) (map[string]string, error) {
	list, err := s.cfg.Kube.CoreV1().ConfigMaps(Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: "velero.io/change-storage-class=RestoreItemAction,velero.io/plugin-config"})
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, cm := range list.Items {
		for k, v := range cm.Data {
			out[k] = v
		}
	}
	return out, nil
}

func wants(list []string, v string) bool {
	return len(list) == 0 || slices.Contains(list, "*") || slices.Contains(list, v)
}

func (s *StandIn) restore(ctx context.Context, r *velerov1.Restore, index []record) (restored, errs, warns int) {
	if !wants(r.Spec.IncludedResources, "persistentvolumeclaims") || slices.Contains(r.Spec.ExcludedResources, "persistentvolumeclaims") {
		return 0, 0, 0
	}
	mapping, err := s.classMapping(ctx)
	if err != nil {
		return 0, 1, 0
	}
	sel := labels.Everything()
	if r.Spec.LabelSelector != nil {
		if sel, err = metav1.LabelSelectorAsSelector(r.Spec.LabelSelector); err != nil {
			return 0, 1, 0
		}
	}
	for _, rec := range index {
		if !wants(r.Spec.IncludedNamespaces, rec.Namespace) || slices.Contains(r.Spec.ExcludedNamespaces, rec.Namespace) || !sel.Matches(labels.Set(rec.Claim.Labels)) {
			continue
		}
		ns := rec.Namespace
		if to, ok := r.Spec.NamespaceMapping[ns]; ok {
			ns = to
		}
		err := s.restoreClaim(ctx, r, rec, ns, mapping)
		switch {
		case errors.Is(err, errExists):
			warns++
		case err != nil:
			s.log.Warn("restoring claim", zap.String("claim", rec.Namespace+"/"+rec.Claim.Name), zap.Error(err))
			errs++
		default:
			restored++
		}
	}
	return restored, errs, warns
}

var errExists = errors.New("claim exists")

func (s *StandIn) restoreClaim(ctx context.Context, r *velerov1.Restore, rec record, ns string, mapping map[string]string) error {
	k := s.cfg.Kube
	if _, err := k.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns,
		Labels: map[string]string{velerov1.RestoreNameLabel: r.Name}}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	if _, err := k.CoreV1().PersistentVolumeClaims(ns).Get(ctx, rec.Claim.Name, metav1.GetOptions{}); err == nil {
		return errExists
	}
	class := ""
	if rec.Claim.Spec.StorageClassName != nil {
		class = *rec.Claim.Spec.StorageClassName
	}
	if to, ok := mapping[class]; ok {
		class = to
	}
	sc, err := k.StorageV1().StorageClasses().Get(ctx, class, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("storage class %q: %w", class, err)
	}
	pvName := "pvc-" + string(uuid.NewUUID())
	if err := copyDir(filepath.Join(s.backupDir(r.Spec.BackupName), rec.DataDir), filepath.Join(s.cfg.StorageRoot, "volumes", pvName)); err != nil {
		return err
	}
	lbl := map[string]string{velerov1.BackupNameLabel: r.Spec.BackupName, velerov1.RestoreNameLabel: r.Name}
	claimLabels := map[string]string{}
	for k, v := range rec.Claim.Labels {
		claimLabels[k] = v
	}
	for k, v := range lbl {
		claimLabels[k] = v
	}
	claim := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: rec.Claim.Name, Namespace: ns, Labels: claimLabels},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: rec.Claim.Spec.AccessModes, Resources: rec.Claim.Spec.Resources,
			StorageClassName: &class, VolumeMode: rec.Claim.Spec.VolumeMode, VolumeName: pvName,
		},
	}
	claim, err = k.CoreV1().PersistentVolumeClaims(ns).Create(ctx, claim, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	reclaim := corev1.PersistentVolumeReclaimDelete
	if sc.ReclaimPolicy != nil {
		reclaim = *sc.ReclaimPolicy
	}
	capacity := rec.Claim.Spec.Resources.Requests
	if rec.Volume != nil {
		capacity = rec.Volume.Spec.Capacity
	}
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: pvName, Labels: lbl,
			// The storage agent deletes what its driver provisioned: a
			// restored volume with reclaim policy Delete must go the same way.
			Annotations: map[string]string{"pv.kubernetes.io/provisioned-by": sc.Provisioner}},
		Spec: corev1.PersistentVolumeSpec{
			Capacity: capacity, AccessModes: rec.Claim.Spec.AccessModes, PersistentVolumeReclaimPolicy: reclaim,
			StorageClassName: class, VolumeMode: rec.Claim.Spec.VolumeMode,
			ClaimRef: &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: ns, Name: claim.Name, UID: claim.UID},
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
				Driver: sc.Provisioner, VolumeHandle: pvName, FSType: "ext4"}},
		},
	}
	_, err = k.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{})
	return err
}
