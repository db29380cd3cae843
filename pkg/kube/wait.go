package kube

import (
	"context"
	"errors"
	"fmt"
	"time"

	snapclient "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	"github.com/rebind-dev/rebind/pkg/waits"
	"k8s.io/apimachinery/pkg/api/meta"
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
//
// It lists once and then watches from the list's resourceVersion, instead
// of client-go's UntilWithSync, whose cache-sync poll adds 100 ms to every
// wait: a migration makes a dozen waits while Grafana is down.
func Until[T runtime.Object](ctx context.Context, timeout time.Duration, what string, lw cache.ListerWatcher, cond Condition[T], describe func(T) string) (T, error) {
	defer waits.Begin(ctx, what)()
	var zero, last T
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	lwc := cache.ToListerWatcherWithContext(lw)
	check := func(obj runtime.Object, exists bool) (bool, error) {
		if !exists {
			last = zero
			return cond(zero, false)
		}
		o, ok := obj.(T)
		if !ok {
			return false, nil
		}
		last = o
		return cond(o, true)
	}
	err := relistUntil(ctx, wctx, timeout, what, func() (bool, error) { return untilOnce(wctx, lwc, check) }, func() string {
		if describe != nil && any(last) != any(zero) {
			return describe(last)
		}
		return ""
	})
	return last, err
}

// relistUntil runs one list-and-watch round after another until one
// decides: a watch that ends without a verdict (resourceVersion too old,
// server closed it) lists again. Out of time, it says what never happened
// and the last state seen.
func relistUntil(ctx, wctx context.Context, timeout time.Duration, what string, round func() (bool, error), lastSeen func() string) error {
	for {
		done, err := round()
		if done {
			return nil
		}
		if (err == nil || errors.Is(err, errRelist)) && wctx.Err() == nil {
			continue
		}
		if err != nil && wctx.Err() == nil {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		}
		return &TimeoutError{What: what, Timeout: timeout, LastSeen: lastSeen()}
	}
}

var errRelist = errors.New("relist")

func untilOnce(ctx context.Context, lw cache.ListerWatcherWithContext, check func(runtime.Object, bool) (bool, error)) (bool, error) {
	return listAndWatch(ctx, lw, func(items []runtime.Object) (bool, error) {
		if len(items) == 0 {
			return check(nil, false)
		}
		return check(items[0], true)
	}, func(typ watch.EventType, obj runtime.Object) (bool, error) {
		if typ == watch.Deleted {
			return check(nil, false)
		}
		return check(obj, true)
	})
}

// listAndWatch lists once and watches from the list's resourceVersion,
// handing the items and then each added, modified or deleted object to the
// callbacks until one decides. A watch that ends says errRelist.
//
// The list is a consistent read: one from the watch cache at any version
// (ResourceVersion "0") can be older than the caller's own last write, and
// a stale object can satisfy a condition the current one does not (a
// Deployment still at the replicas it had before a scale, "Ready" at 0; a
// claim created a moment ago, "gone"). Since Kubernetes 1.31 the API server
// serves consistent lists from its cache once that has caught up, so the
// price is small.
func listAndWatch(ctx context.Context, lw cache.ListerWatcherWithContext, onList func([]runtime.Object) (bool, error), onEvent func(watch.EventType, runtime.Object) (bool, error)) (bool, error) {
	list, err := lw.ListWithContext(ctx, metav1.ListOptions{})
	if err != nil {
		return false, err
	}
	items, err := meta.ExtractList(list)
	if err != nil {
		return false, err
	}
	if done, err := onList(items); done || err != nil {
		return done, err
	}
	la, err := meta.ListAccessor(list)
	if err != nil {
		return false, err
	}
	w, err := watchtools.NewRetryWatcherWithContext(ctx, la.GetResourceVersion(), lw)
	if err != nil {
		return false, err
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case ev, ok := <-w.ResultChan():
			if !ok || ev.Type == watch.Error {
				return false, errRelist
			}
			switch ev.Type {
			case watch.Added, watch.Modified, watch.Deleted:
				if done, err := onEvent(ev.Type, ev.Object); done || err != nil {
					return done, err
				}
			}
		}
	}
}

// Lister is what every typed (and the dynamic) client offers for one
// resource.
type Lister[L runtime.Object] interface {
	List(ctx context.Context, opts metav1.ListOptions) (L, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
}

// NamedLW selects one object by name with a field selector, so a wait
// receives events for that object only.
func NamedLW[L runtime.Object](c Lister[L], name string) cache.ListerWatcher {
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = sel
			return c.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = sel
			return c.Watch(ctx, o)
		},
	}
}

// ClaimLW selects one PersistentVolumeClaim.
func ClaimLW(kube kubernetes.Interface, ns, name string) cache.ListerWatcher {
	return NamedLW(kube.CoreV1().PersistentVolumeClaims(ns), name)
}

// PVLW selects one PersistentVolume.
func PVLW(kube kubernetes.Interface, name string) cache.ListerWatcher {
	return NamedLW(kube.CoreV1().PersistentVolumes(), name)
}

// StatefulSetLW selects one StatefulSet.
func StatefulSetLW(kube kubernetes.Interface, ns, name string) cache.ListerWatcher {
	return NamedLW(kube.AppsV1().StatefulSets(ns), name)
}

// PodLW selects one Pod.
func PodLW(kube kubernetes.Interface, ns, name string) cache.ListerWatcher {
	return NamedLW(kube.CoreV1().Pods(ns), name)
}

// SnapshotLW selects one VolumeSnapshot.
func SnapshotLW(snap snapclient.Interface, ns, name string) cache.ListerWatcher {
	return NamedLW(snap.SnapshotV1().VolumeSnapshots(ns), name)
}

// UntilSet watches every object lw selects until cond holds for the set,
// keyed by name. Like Until it lists once and watches from there.
func UntilSet[T runtime.Object](ctx context.Context, timeout time.Duration, what string, lw cache.ListerWatcher, cond func(map[string]T) (bool, error), describe func(map[string]T) string) (map[string]T, error) {
	defer waits.Begin(ctx, what)()
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	lwc := cache.ToListerWatcherWithContext(lw)
	set := map[string]T{}
	err := relistUntil(ctx, wctx, timeout, what, func() (bool, error) { return untilSetOnce(wctx, lwc, set, cond) }, func() string {
		if describe != nil {
			return describe(set)
		}
		return ""
	})
	return set, err
}

func untilSetOnce[T runtime.Object](ctx context.Context, lw cache.ListerWatcherWithContext, set map[string]T, cond func(map[string]T) (bool, error)) (bool, error) {
	name := func(obj runtime.Object) (T, string, bool) {
		o, ok := obj.(T)
		if !ok {
			return o, "", false
		}
		m, err := meta.Accessor(o)
		if err != nil {
			return o, "", false
		}
		return o, m.GetName(), true
	}
	return listAndWatch(ctx, lw, func(items []runtime.Object) (bool, error) {
		clear(set)
		for _, it := range items {
			if o, n, ok := name(it); ok {
				set[n] = o
			}
		}
		return cond(set)
	}, func(typ watch.EventType, obj runtime.Object) (bool, error) {
		o, n, ok := name(obj)
		if !ok {
			return false, nil
		}
		if typ == watch.Deleted {
			delete(set, n)
		} else {
			set[n] = o
		}
		return cond(set)
	})
}
