package drill

import (
	"context"
	"errors"
	"fmt"
	"time"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/rebind-dev/rebind/pkg/kube"
)

// waitGone watches until the selected object no longer exists; describe
// explains what still holds it when the wait times out.
func waitGone(ctx context.Context, timeout time.Duration, what string, lw cache.ListerWatcher, exemplar runtime.Object, describe func(runtime.Object) string) error {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last runtime.Object
	_, err := watchtools.UntilWithSync(wctx, lw, exemplar, func(store cache.Store) (bool, error) {
		items := store.List()
		if len(items) == 0 {
			return true, nil
		}
		last = items[0].(runtime.Object)
		return false, nil
	}, func(ev watch.Event) (bool, error) {
		if ev.Type == watch.Deleted {
			return true, nil
		}
		last = ev.Object
		return false, nil
	})
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("waiting for %s to be deleted: %w", what, ctx.Err())
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, watchtools.ErrWatchClosed) || wctx.Err() != nil {
		te := &kube.TimeoutError{What: what + " to be deleted", Timeout: timeout}
		if last != nil && describe != nil {
			te.LastSeen = describe(last)
		}
		return te
	}
	return err
}

func describeNamespace(o runtime.Object) string {
	ns, ok := o.(*corev1.Namespace)
	if !ok {
		return ""
	}
	s := "phase " + string(ns.Status.Phase)
	for _, c := range ns.Status.Conditions {
		if c.Status == corev1.ConditionTrue && c.Message != "" {
			s += "; " + c.Message
		}
	}
	return s
}

func describeContent(o runtime.Object) string {
	c, ok := o.(*snapv1.VolumeSnapshotContent)
	if !ok {
		return ""
	}
	return fmt.Sprintf("finalizers %v", c.Finalizers)
}

func describePV(o runtime.Object) string {
	pv, ok := o.(*corev1.PersistentVolume)
	if !ok {
		return ""
	}
	return fmt.Sprintf("phase %s, reclaim policy %s, finalizers %v", pv.Status.Phase, pv.Spec.PersistentVolumeReclaimPolicy, pv.Finalizers)
}

func describeSnapshot(o runtime.Object) string {
	vs, ok := o.(*snapv1.VolumeSnapshot)
	if !ok {
		return ""
	}
	return fmt.Sprintf("finalizers %v", vs.Finalizers)
}

// pollGone reads one object until it is gone, for resources the drill may
// get by name but not list or watch.
func pollGone(ctx context.Context, timeout time.Duration, what string, get func(context.Context) (runtime.Object, error), describe func(runtime.Object) string) error {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var last runtime.Object
	for {
		obj, err := get(wctx)
		switch {
		case apierrors.IsNotFound(err):
			return nil
		case err == nil:
			last = obj
		case wctx.Err() == nil:
			return fmt.Errorf("reading %s: %w", what, err)
		}
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				return fmt.Errorf("waiting for %s to be deleted: %w", what, ctx.Err())
			}
			te := &kube.TimeoutError{What: what + " to be deleted", Timeout: timeout}
			if last != nil && describe != nil {
				te.LastSeen = describe(last)
			}
			return te
		case <-tick.C:
		}
	}
}
