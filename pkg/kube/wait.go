package kube

import (
	"context"
	"errors"
	"fmt"
	"time"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapclient "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
)

// TimeoutError says what never happened and the last state seen, which is
// usually the clue to the fix (a claim Pending on a class mismatch, say).
type TimeoutError struct {
	What     string
	Timeout  time.Duration
	LastSeen string
}

func (e *TimeoutError) Error() string {
	msg := fmt.Sprintf("timed out after %s waiting for %s", e.Timeout, e.What)
	if e.LastSeen != "" {
		msg += "; last seen: " + e.LastSeen
	}
	return msg
}

// Condition decides on the latest version of an object; exists is false
// once it is gone (obj is then the zero value).
type Condition[T runtime.Object] func(obj T, exists bool) (done bool, err error)

// Until watches one object (lw must select it by name) until cond holds.
// describe renders the last seen object for a timeout message.
func Until[T runtime.Object](ctx context.Context, timeout time.Duration, what string, lw cache.ListerWatcher, cond Condition[T], describe func(T) string) (T, error) {
	var zero, last T
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var exemplar T
	objType := newOf(exemplar)
	pre := func(store cache.Store) (bool, error) {
		items := store.List()
		if len(items) == 0 {
			return cond(zero, false)
		}
		last = items[0].(T)
		return cond(last, true)
	}
	_, err := watchtools.UntilWithSync(wctx, lw, objType, pre, func(ev watch.Event) (bool, error) {
		if ev.Type == watch.Deleted {
			last = zero
			return cond(zero, false)
		}
		obj, ok := ev.Object.(T)
		if !ok {
			return false, nil
		}
		last = obj
		return cond(obj, true)
	})
	if err != nil {
		if ctx.Err() == nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, watchtools.ErrWatchClosed) || wctx.Err() != nil) {
			te := &TimeoutError{What: what, Timeout: timeout}
			if describe != nil && any(last) != any(zero) {
				te.LastSeen = describe(last)
			}
			return last, te
		}
		if ctx.Err() != nil {
			return last, fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		}
		return last, err
	}
	return last, nil
}

func newOf(t runtime.Object) runtime.Object {
	switch any(t).(type) {
	case *corev1.PersistentVolumeClaim:
		return &corev1.PersistentVolumeClaim{}
	case *corev1.PersistentVolume:
		return &corev1.PersistentVolume{}
	case *appsv1.StatefulSet:
		return &appsv1.StatefulSet{}
	case *corev1.Pod:
		return &corev1.Pod{}
	case *snapv1.VolumeSnapshot:
		return &snapv1.VolumeSnapshot{}
	}
	panic(fmt.Sprintf("kube.Until: unsupported type %T", t))
}

func byName(name string) func(*metav1.ListOptions) {
	return func(o *metav1.ListOptions) { o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String() }
}

// ClaimLW selects one PersistentVolumeClaim.
func ClaimLW(kube kubernetes.Interface, ns, name string) cache.ListerWatcher {
	f := byName(name)
	c := kube.CoreV1().PersistentVolumeClaims(ns)
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			f(&o)
			return c.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			f(&o)
			return c.Watch(ctx, o)
		},
	}
}

// PVLW selects one PersistentVolume.
func PVLW(kube kubernetes.Interface, name string) cache.ListerWatcher {
	f := byName(name)
	c := kube.CoreV1().PersistentVolumes()
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			f(&o)
			return c.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			f(&o)
			return c.Watch(ctx, o)
		},
	}
}

// StatefulSetLW selects one StatefulSet.
func StatefulSetLW(kube kubernetes.Interface, ns, name string) cache.ListerWatcher {
	f := byName(name)
	c := kube.AppsV1().StatefulSets(ns)
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			f(&o)
			return c.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			f(&o)
			return c.Watch(ctx, o)
		},
	}
}

// PodLW selects one Pod.
func PodLW(kube kubernetes.Interface, ns, name string) cache.ListerWatcher {
	f := byName(name)
	c := kube.CoreV1().Pods(ns)
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			f(&o)
			return c.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			f(&o)
			return c.Watch(ctx, o)
		},
	}
}

// SnapshotLW selects one VolumeSnapshot.
func SnapshotLW(snap snapclient.Interface, ns, name string) cache.ListerWatcher {
	f := byName(name)
	c := snap.SnapshotV1().VolumeSnapshots(ns)
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			f(&o)
			return c.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			f(&o)
			return c.Watch(ctx, o)
		},
	}
}
