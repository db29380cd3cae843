package kube

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// A wait must start from a consistent read. The API server answers
// ResourceVersion "0" from its watch cache at whatever version that holds,
// which can predate the caller's own write: a Deployment just scaled from 0
// to 1 was then still seen at 0 replicas, "Ready", and a migration went on
// with no pod serving (TestDeploymentMode, 1 run in 2 on a loaded machine).
// This pins what each wait asks the API server for.
func TestWaitsListConsistently(t *testing.T) {
	for _, tc := range []struct {
		name string
		wait func(lw cache.ListerWatcher) error
	}{
		{"Until", func(lw cache.ListerWatcher) error {
			_, err := Until(context.Background(), time.Second, "config map", lw, func(*corev1.ConfigMap, bool) (bool, error) { return true, nil }, nil)
			return err
		}},
		{"UntilSet", func(lw cache.ListerWatcher) error {
			_, err := UntilSet(context.Background(), time.Second, "config maps", lw, func(map[string]*corev1.ConfigMap) (bool, error) { return true, nil }, nil)
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var lists []metav1.ListOptions
			lw := &cache.ListWatch{
				ListWithContextFunc: func(_ context.Context, o metav1.ListOptions) (runtime.Object, error) {
					lists = append(lists, o)
					return &corev1.ConfigMapList{ListMeta: metav1.ListMeta{ResourceVersion: "7"}, Items: []corev1.ConfigMap{{ObjectMeta: metav1.ObjectMeta{Name: "a"}}}}, nil
				},
				WatchFuncWithContext: func(context.Context, metav1.ListOptions) (watch.Interface, error) {
					return watch.NewEmptyWatch(), nil
				},
			}
			if err := tc.wait(lw); err != nil {
				t.Fatal(err)
			}
			if len(lists) != 1 {
				t.Fatalf("%d lists, want 1", len(lists))
			}
			if o := lists[0]; o.ResourceVersion != "" || o.ResourceVersionMatch != "" {
				t.Errorf("listed with resourceVersion %q (match %q): a cached, possibly stale read", o.ResourceVersion, o.ResourceVersionMatch)
			}
		})
	}
}

// A fleet's clients keep one run's rate for each run, up to a ceiling.
func TestForParallelRuns(t *testing.T) {
	base, err := New(&rest.Config{Host: "https://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		runs  int
		qps   float32
		burst int
		same  bool
	}{{1, 50, 300, true}, {4, 200, 400, false}, {48, 400, 800, false}} {
		c, err := base.ForParallelRuns(tc.runs)
		if err != nil {
			t.Fatal(err)
		}
		if c.Config.QPS != tc.qps || c.Config.Burst != tc.burst || (c == base) != tc.same {
			t.Errorf("%d runs: qps %v burst %d (same clients %v), want %v %d %v", tc.runs, c.Config.QPS, c.Config.Burst, c == base, tc.qps, tc.burst, tc.same)
		}
	}
}
