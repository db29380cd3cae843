package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snaplisters "github.com/kubernetes-csi/external-snapshotter/client/v8/listers/volumesnapshot/v1"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
	"k8s.io/client-go/util/workqueue"
)

// The names the common snapshot controller and the csi-snapshotter sidecar agree
// on (external-snapshotter pkg/utils).
const (
	// contentFinalizer is added by the common controller to a bound content; the
	// sidecar removes it once the snapshot is gone from the storage (or retained).
	contentFinalizer = "snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection"
	// annBeingDeleted is set by the common controller when the VolumeSnapshot is
	// being deleted: only then may the sidecar act on the content's deletion.
	annBeingDeleted = "snapshot.storage.kubernetes.io/volumesnapshot-being-deleted"
	// annBeingCreated is the sidecar's own marker while a cut is in flight; the
	// common controller will not delete a content that carries it, so a snapshot
	// is never leaked on the storage by a deletion racing its creation.
	annBeingCreated = "snapshot.storage.kubernetes.io/volumesnapshot-being-created"

	pvHandleIndex = "csiVolumeHandle"
)

// snapshotMeta is written next to a snapshot directory: a pre-provisioned
// content pointing at the handle later still gets an honest restoreSize.
type snapshotMeta struct {
	SourceVolumeHandle string `json:"sourceVolumeHandle"`
	RestoreSize        int64  `json:"restoreSize"`
	CreationTime       int64  `json:"creationTime"`
}

// snapshotter plays the csi-snapshotter sidecar for both drivers.
type snapshotter struct {
	a        *Agent
	contents snaplisters.VolumeSnapshotContentLister
	pvs      cache.Indexer
	queue    workqueue.TypedRateLimitingInterface[string]
}

func indexPVByHandle(obj any) ([]string, error) {
	pv, ok := obj.(*corev1.PersistentVolume)
	if !ok || pv.Spec.CSI == nil {
		return nil, nil
	}
	return []string{pv.Spec.CSI.Driver + "/" + pv.Spec.CSI.VolumeHandle}, nil
}

func (s *snapshotter) enqueue(obj any) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	c, ok := obj.(*snapv1.VolumeSnapshotContent)
	if !ok || !isOurDriver(c.Spec.Driver) {
		return
	}
	s.queue.Add(c.Name)
}

func (s *snapshotter) handlers() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    s.enqueue,
		UpdateFunc: func(_, obj any) { s.enqueue(obj) },
		DeleteFunc: func(obj any) {
			if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = tomb.Obj
			}
			if c, ok := obj.(*snapv1.VolumeSnapshotContent); ok {
				s.queue.Forget(c.Name)
			}
		},
	}
}

func (s *snapshotter) worker(ctx context.Context) {
	for {
		name, quit := s.queue.Get()
		if quit {
			return
		}
		err := s.syncByName(ctx, name)
		switch {
		case err == nil:
			s.queue.Forget(name)
		case ctx.Err() != nil:
		default:
			s.a.log.Warn("snapshot content sync failed; will retry", zap.String("content", name), zap.Error(err))
			s.queue.AddRateLimited(name)
		}
		s.queue.Done(name)
	}
}

func (s *snapshotter) syncByName(ctx context.Context, name string) error {
	content, err := s.contents.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	return s.sync(ctx, content.DeepCopy())
}

// sync follows the sidecar's syncContent: deletion first, then cutting a
// dynamic snapshot, then checking a pre-provisioned one.
func (s *snapshotter) sync(ctx context.Context, content *snapv1.VolumeSnapshotContent) error {
	if shouldDelete(content) {
		if content.Spec.DeletionPolicy == snapv1.VolumeSnapshotContentDelete &&
			content.Status != nil && content.Status.SnapshotHandle != nil {
			if err := s.deleteSnapshot(ctx, content); err != nil {
				return err
			}
		}
		return s.removeFinalizer(ctx, content.Name)
	}
	if content.DeletionTimestamp != nil {
		// Deleted, but the common controller has not handed it over yet (or a
		// cut is still in flight): the next update brings it back here.
		return nil
	}
	if content.Status != nil && content.Status.ReadyToUse != nil && *content.Status.ReadyToUse {
		if metav1.HasAnnotation(content.ObjectMeta, annBeingCreated) {
			return s.setAnnotation(ctx, content.Name, annBeingCreated, false)
		}
		return nil
	}
	switch {
	case content.Spec.Source.VolumeHandle != nil:
		if content.Status != nil && content.Status.SnapshotHandle != nil {
			// Cut earlier; only the ready flag went missing.
			return s.checkExisting(ctx, content, *content.Status.SnapshotHandle)
		}
		return s.cut(ctx, content)
	case content.Spec.Source.SnapshotHandle != nil:
		return s.checkExisting(ctx, content, *content.Spec.Source.SnapshotHandle)
	}
	return nil
}

// shouldDelete mirrors the sidecar: an unbound pre-provisioned content may go at
// once; any other content only once the common controller marked its snapshot
// as being deleted, and never while a cut is in flight.
func shouldDelete(c *snapv1.VolumeSnapshotContent) bool {
	if c.DeletionTimestamp == nil {
		return false
	}
	if c.Spec.Source.SnapshotHandle != nil && c.Spec.VolumeSnapshotRef.UID == "" {
		return true
	}
	if metav1.HasAnnotation(c.ObjectMeta, annBeingCreated) {
		return false
	}
	return metav1.HasAnnotation(c.ObjectMeta, annBeingDeleted)
}

// cut copies the source volume's directory into a new snapshot directory BEFORE
// anything reports it ready: readyToUse must mean the data is really there.
func (s *snapshotter) cut(ctx context.Context, content *snapv1.VolumeSnapshotContent) error {
	if content.Spec.VolumeSnapshotClassName == nil {
		return s.fail(ctx, content, "SnapshotCreationFailed", errors.New("cannot take a dynamic snapshot without a VolumeSnapshotClass"))
	}
	volHandle := *content.Spec.Source.VolumeHandle
	srcDir, err := s.a.volumePath(volHandle)
	if err != nil {
		return s.fail(ctx, content, "SnapshotCreationFailed", err)
	}
	if fi, err := os.Stat(srcDir); err != nil || !fi.IsDir() {
		return s.fail(ctx, content, "SnapshotCreationFailed", fmt.Errorf("source volume %s does not exist on the storage", volHandle))
	}
	if err := s.setAnnotation(ctx, content.Name, annBeingCreated, true); err != nil {
		return err
	}

	// Derived from the content UID so a retry after a crash reuses the copy it
	// already made rather than leaking it.
	handle := "snapshot-" + string(content.UID)
	dst, err := s.a.snapshotPath(handle)
	if err != nil {
		return err
	}
	if err := materialize(srcDir, dst); err != nil {
		return fmt.Errorf("copying volume %s: %w", volHandle, err)
	}
	meta := snapshotMeta{SourceVolumeHandle: volHandle, RestoreSize: s.sourceCapacity(content.Spec.Driver, volHandle), CreationTime: time.Now().UnixNano()}
	if prev, err := readMeta(dst); err == nil {
		meta = prev
	} else if err := writeMeta(dst, meta); err != nil {
		return err
	}
	if err := s.setReady(ctx, content.Name, handle, meta); err != nil {
		return err
	}
	s.a.log.Info("cut snapshot", zap.String("content", content.Name), zap.String("volumeHandle", volHandle),
		zap.String("snapshotHandle", handle), zap.Int64("restoreSize", meta.RestoreSize))
	return s.setAnnotation(ctx, content.Name, annBeingCreated, false)
}

// sourceCapacity is the capacity of the PV behind a volume handle: a restored
// volume must be at least as large as the volume the snapshot was cut from.
func (s *snapshotter) sourceCapacity(driver, handle string) int64 {
	objs, err := s.pvs.ByIndex(pvHandleIndex, driver+"/"+handle)
	if err != nil {
		return 0
	}
	for _, o := range objs {
		if q, ok := o.(*corev1.PersistentVolume).Spec.Capacity[corev1.ResourceStorage]; ok {
			return q.Value()
		}
	}
	return 0
}

// checkExisting marks a content ready when its snapshot directory exists.
func (s *snapshotter) checkExisting(ctx context.Context, content *snapv1.VolumeSnapshotContent, handle string) error {
	dir, err := s.a.snapshotPath(handle)
	if err != nil {
		return s.fail(ctx, content, "SnapshotContentCheckandUpdateFailed", err)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return s.fail(ctx, content, "SnapshotContentCheckandUpdateFailed", fmt.Errorf("snapshot %s does not exist on the storage", handle))
	}
	meta, err := readMeta(dir)
	if err != nil {
		size, err := treeSize(dir)
		if err != nil {
			return err
		}
		var created int64
		if fi, err := os.Stat(dir); err == nil {
			created = fi.ModTime().UnixNano()
		}
		meta = snapshotMeta{RestoreSize: size, CreationTime: created}
	}
	return s.setReady(ctx, content.Name, handle, meta)
}

func metaPath(dir string) string { return dir + ".json" }

func readMeta(dir string) (snapshotMeta, error) {
	var m snapshotMeta
	b, err := os.ReadFile(metaPath(dir))
	if err != nil {
		return m, err
	}
	return m, json.Unmarshal(b, &m)
}

func writeMeta(dir string, m snapshotMeta) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return os.WriteFile(metaPath(dir), b, 0o644)
}

// setReady fills the status fields the sidecar owns, keeping any already set
// (the sidecar never rewrites a handle or creation time once recorded).
func (s *snapshotter) setReady(ctx context.Context, name, handle string, m snapshotMeta) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		c, err := s.a.snap.SnapshotV1().VolumeSnapshotContents().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		st := c.Status
		if st == nil {
			st = &snapv1.VolumeSnapshotContentStatus{}
		}
		if st.SnapshotHandle == nil {
			st.SnapshotHandle = &handle
		}
		if st.CreationTime == nil {
			t := m.CreationTime
			if t == 0 {
				t = time.Now().UnixNano()
			}
			st.CreationTime = &t
		}
		if st.RestoreSize == nil && m.RestoreSize > 0 {
			size := m.RestoreSize
			st.RestoreSize = &size
		}
		ready := true
		st.ReadyToUse = &ready
		st.Error = nil
		c.Status = st
		_, err = s.a.snap.SnapshotV1().VolumeSnapshotContents().UpdateStatus(ctx, c, metav1.UpdateOptions{})
		return err
	})
}

// fail records the error on the content (which the common controller copies to
// the VolumeSnapshot, where users look) and returns it so the content is retried.
func (s *snapshotter) fail(ctx context.Context, content *snapv1.VolumeSnapshotContent, reason string, cause error) error {
	msg := cause.Error()
	if content.Status != nil && content.Status.Error != nil && content.Status.Error.Message != nil && *content.Status.Error.Message == msg {
		return fmt.Errorf("%s: %w", reason, cause)
	}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		c, err := s.a.snap.SnapshotV1().VolumeSnapshotContents().Get(ctx, content.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if c.Status == nil {
			c.Status = &snapv1.VolumeSnapshotContentStatus{}
		}
		notReady := false
		now := metav1.Now()
		c.Status.ReadyToUse = &notReady
		c.Status.Error = &snapv1.VolumeSnapshotError{Time: &now, Message: &msg}
		_, err = s.a.snap.SnapshotV1().VolumeSnapshotContents().UpdateStatus(ctx, c, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		s.a.log.Warn("recording snapshot error failed", zap.String("content", content.Name), zap.Error(err))
	}
	return fmt.Errorf("%s: %w", reason, cause)
}

// deleteSnapshot removes the data, then clears the handle from the status: a
// content whose handle is gone is known to hold nothing on the storage, so the
// finalizer may go even if this process dies right after.
func (s *snapshotter) deleteSnapshot(ctx context.Context, content *snapv1.VolumeSnapshotContent) error {
	handle := *content.Status.SnapshotHandle
	if dir, err := s.a.snapshotPath(handle); err == nil {
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("removing snapshot %s: %w", handle, err)
		}
		if err := os.Remove(metaPath(dir)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("removing snapshot %s metadata: %w", handle, err)
		}
	}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		c, err := s.a.snap.SnapshotV1().VolumeSnapshotContents().Get(ctx, content.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if c.Status != nil {
			c.Status.SnapshotHandle = nil
			c.Status.ReadyToUse = nil
			c.Status.CreationTime = nil
			c.Status.RestoreSize = nil
		}
		_, err = s.a.snap.SnapshotV1().VolumeSnapshotContents().UpdateStatus(ctx, c, metav1.UpdateOptions{})
		return err
	})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	s.a.log.Info("deleted snapshot", zap.String("content", content.Name), zap.String("snapshotHandle", handle))
	return nil
}

func (s *snapshotter) removeFinalizer(ctx context.Context, name string) error {
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		c, err := s.a.snap.SnapshotV1().VolumeSnapshotContents().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !slices.Contains(c.Finalizers, contentFinalizer) {
			return nil
		}
		c.Finalizers = slices.DeleteFunc(c.Finalizers, func(f string) bool { return f == contentFinalizer })
		_, err = s.a.snap.SnapshotV1().VolumeSnapshotContents().Update(ctx, c, metav1.UpdateOptions{})
		return err
	})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

func (s *snapshotter) setAnnotation(ctx context.Context, name, key string, present bool) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		c, err := s.a.snap.SnapshotV1().VolumeSnapshotContents().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if metav1.HasAnnotation(c.ObjectMeta, key) == present {
			return nil
		}
		if present {
			metav1.SetMetaDataAnnotation(&c.ObjectMeta, key, "yes")
		} else {
			delete(c.Annotations, key)
		}
		_, err = s.a.snap.SnapshotV1().VolumeSnapshotContents().Update(ctx, c, metav1.UpdateOptions{})
		return err
	})
}
