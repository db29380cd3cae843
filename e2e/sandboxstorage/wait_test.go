package sandboxstorage

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
)

// lister adapts a typed client's List and Watch to a ListerWatcher.
type lister[L runtime.Object] struct {
	list  func(context.Context, metav1.ListOptions) (L, error)
	watch func(context.Context, metav1.ListOptions) (watch.Interface, error)
}

func (l lister[L]) lw(fieldSelector string) *cache.ListWatch {
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = fieldSelector
			return l.list(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = fieldSelector
			return l.watch(ctx, o)
		},
	}
}

func byName(name string) string { return fields.OneTermEqualSelector("metadata.name", name).String() }

// until watches the objects lw lists until cond holds for one of them.
func until[T runtime.Object](ctx context.Context, t *testing.T, what string, lw *cache.ListWatch, objType T, timeout time.Duration, cond func(T) bool) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last T
	ev, err := watchtools.UntilWithSync(ctx, lw, objType, nil, func(ev watch.Event) (bool, error) {
		obj, ok := ev.Object.(T)
		if !ok || ev.Type == watch.Deleted {
			return false, nil
		}
		last = obj
		return cond(obj), nil
	})
	if err != nil {
		t.Fatalf("waiting for %s: %v; last seen: %s", what, err, describe(last))
	}
	return ev.Object.(T)
}

// untilGone waits until lw lists nothing (an object that never existed counts
// as gone).
func untilGone(ctx context.Context, t *testing.T, what string, lw *cache.ListWatch, objType runtime.Object, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	_, err := watchtools.UntilWithSync(ctx, lw, objType,
		func(store cache.Store) (bool, error) { return len(store.List()) == 0, nil },
		func(ev watch.Event) (bool, error) { return ev.Type == watch.Deleted, nil })
	if err != nil {
		t.Fatalf("waiting for %s to be gone: %v", what, err)
	}
}

func describe(obj runtime.Object) string {
	switch o := obj.(type) {
	case *corev1.PersistentVolumeClaim:
		if o == nil {
			return "nothing"
		}
		return fmt.Sprintf("claim %s phase %s volume %q", o.Name, o.Status.Phase, o.Spec.VolumeName)
	case *snapv1.VolumeSnapshot:
		if o == nil || o.Status == nil {
			return "snapshot without status"
		}
		msg := ""
		if o.Status.Error != nil && o.Status.Error.Message != nil {
			msg = *o.Status.Error.Message
		}
		return fmt.Sprintf("snapshot %s ready=%v error=%q", o.Name, o.Status.ReadyToUse != nil && *o.Status.ReadyToUse, msg)
	case *appsv1.StatefulSet:
		if o == nil {
			return "nothing"
		}
		return fmt.Sprintf("statefulset %s ready %d/%d", o.Name, o.Status.ReadyReplicas, o.Status.Replicas)
	}
	return fmt.Sprintf("%v", obj)
}

// waitHTTP polls url until it answers want: an HTTP endpoint offers nothing
// to watch.
func waitHTTP(ctx context.Context, t *testing.T, url, user, pw string, want int) []byte {
	t.Helper()
	var last string
	var body []byte
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false, err
		}
		if user != "" {
			req.SetBasicAuth(user, pw)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			last = err.Error()
			return false, nil
		}
		defer resp.Body.Close()
		body, _ = io.ReadAll(resp.Body)
		last = fmt.Sprintf("%d %s", resp.StatusCode, body)
		return resp.StatusCode == want, nil
	})
	if err != nil {
		t.Fatalf("GET %s: want %d; last: %s", url, want, last)
	}
	return body
}
