package velerostandin

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func (s *StandIn) getBackup(ctx context.Context, name string) (*velerov1.Backup, error) {
	u, err := s.cfg.Dyn.Resource(backupsGVR).Namespace(Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	b := &velerov1.Backup{}
	return b, fromUnstructured(u, b)
}

func (s *StandIn) updateBackup(ctx context.Context, b *velerov1.Backup) (*velerov1.Backup, error) {
	u, err := toUnstructured(b)
	if err != nil {
		return nil, err
	}
	// Velero's Backup CRD has no status subresource: status goes with Update.
	got, err := s.cfg.Dyn.Resource(backupsGVR).Namespace(Namespace).Update(ctx, u, metav1.UpdateOptions{})
	if err != nil {
		return nil, err
	}
	out := &velerov1.Backup{}
	return out, fromUnstructured(got, out)
}

func (s *StandIn) syncBackup(ctx context.Context, name string) error {
	b, err := s.getBackup(ctx, name)
	if err != nil {
		return ignoreNotFound(err)
	}
	if b.Status.Phase != "" && b.Status.Phase != velerov1.BackupPhaseNew {
		return nil
	}
	now := metav1.Now()
	b.Status.Phase, b.Status.StartTimestamp = velerov1.BackupPhaseInProgress, &now
	b.Status.Version, b.Status.FormatVersion = 1, "1.1.0"
	if b, err = s.updateBackup(ctx, b); err != nil {
		return err
	}

	res := s.backup(ctx, b)
	done := metav1.Now()
	b.Status.CompletionTimestamp = &done
	b.Status.Errors, b.Status.Warnings = res.errors, res.warnings
	b.Status.Progress = &velerov1.BackupProgress{TotalItems: res.items, ItemsBackedUp: res.backedUp}
	b.Status.VolumeSnapshotsAttempted, b.Status.VolumeSnapshotsCompleted = res.volumes, res.volumesDone
	ttl := b.Spec.TTL.Duration
	if ttl == 0 {
		ttl = 720 * time.Hour
	}
	exp := metav1.NewTime(done.Add(ttl))
	b.Status.Expiration = &exp
	switch {
	case res.failure != "":
		b.Status.Phase, b.Status.FailureReason = velerov1.BackupPhaseFailed, res.failure
	case res.errors > 0:
		b.Status.Phase = velerov1.BackupPhasePartiallyFailed
	default:
		b.Status.Phase = velerov1.BackupPhaseCompleted
	}
	_, err = s.updateBackup(ctx, b)
	s.log.Info("backup finished", zap.String("backup", name), zap.String("phase", string(b.Status.Phase)),
		zap.Int("volumes", res.volumesDone), zap.Int("errors", res.errors), zap.String("failureReason", res.failure))
	return err
}

type backupResult struct {
	items, backedUp, volumes, volumesDone, errors, warnings int
	failure                                                 string
}

func (s *StandIn) backup(ctx context.Context, b *velerov1.Backup) backupResult {
	var res backupResult
	dir := s.backupDir(b.Name)
	if err := os.RemoveAll(dir); err != nil {
		res.failure = err.Error()
		return res
	}
	namespaces := b.Spec.IncludedNamespaces
	if len(namespaces) == 0 || slices.Contains(namespaces, "*") {
		list, err := s.cfg.Kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
		if err != nil {
			res.failure = err.Error()
			return res
		}
		namespaces = nil
		for _, ns := range list.Items {
			namespaces = append(namespaces, ns.Name)
		}
	}
	selector := ""
	if b.Spec.LabelSelector != nil {
		sel, err := metav1.LabelSelectorAsSelector(b.Spec.LabelSelector)
		if err != nil {
			res.failure = "invalid label selector: " + err.Error()
			return res
		}
		selector = sel.String()
	}
	var index []record
	for _, ns := range namespaces {
		if slices.Contains(b.Spec.ExcludedNamespaces, ns) {
			continue
		}
		claims, err := s.cfg.Kube.CoreV1().PersistentVolumeClaims(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			res.failure = err.Error()
			return res
		}
		for i := range claims.Items {
			c := &claims.Items[i]
			res.items++
			if reason, ok := c.Annotations[FailAnnotation]; ok {
				res.failure = fmt.Sprintf("claim %s/%s: %s", ns, c.Name, reason)
				return res
			}
			if c.Spec.VolumeName == "" {
				res.warnings++ // an unbound claim has no data to back up
				continue
			}
			res.volumes++
			pv, err := s.cfg.Kube.CoreV1().PersistentVolumes().Get(ctx, c.Spec.VolumeName, metav1.GetOptions{})
			if err != nil || pv.Spec.CSI == nil {
				res.errors++
				continue
			}
			src := filepath.Join(s.cfg.StorageRoot, "volumes", pv.Spec.CSI.VolumeHandle)
			if fi, err := os.Stat(src); err != nil || !fi.IsDir() {
				res.errors++
				continue
			}
			rel := filepath.Join("volumes", ns, c.Name)
			if err := os.MkdirAll(filepath.Join(dir, "volumes", ns), 0o755); err != nil {
				res.errors++
				continue
			}
			if err := copyDir(src, filepath.Join(dir, rel)); err != nil {
				s.log.Warn("copying volume", zap.String("claim", ns+"/"+c.Name), zap.Error(err))
				res.errors++
				continue
			}
			index = append(index, record{Namespace: ns, Claim: c, Volume: pv, DataDir: rel})
			res.backedUp++
			res.volumesDone++
		}
	}
	if err := writeJSON(filepath.Join(dir, "index.json"), index); err != nil {
		res.failure = err.Error()
	}
	return res
}
