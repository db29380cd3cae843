package workload

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/rebind-dev/rebind/pkg/kube"
)

// A Deployment-mode Grafana (the chart's default, persistence.type: pvc) is
// never deleted: its one claim is swapped while it is scaled to 0. Scaling
// to 0 and back, rather than letting a RollingUpdate replace the pod, also
// means two pods never share a ReadWriteOnce volume.

// ScaleDeployment sets the replicas of the Deployment of that name only
// while it is the one with uid, writing with the resourceVersion it read.
func ScaleDeployment(ctx context.Context, k kubernetes.Interface, ns, name string, uid types.UID, replicas int32) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		d, err := k.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("reading Deployment %s/%s: %w", ns, name, err)
		}
		if uid != "" && d.UID != uid {
			return fmt.Errorf("Deployment %s/%s was recreated by someone else (uid %s, rebind started with %s); rebind leaves it alone", ns, name, d.UID, uid)
		}
		if ptr.Deref(d.Spec.Replicas, 1) == replicas {
			return nil
		}
		d.Spec.Replicas = ptr.To(replicas)
		_, err = k.AppsV1().Deployments(ns).Update(ctx, d, metav1.UpdateOptions{})
		return err
	})
}

// WaitDeploymentReady waits until the controller has seen the latest spec
// and every replica is updated, ready, and the only one.
func WaitDeploymentReady(ctx context.Context, k kubernetes.Interface, ns, name string, timeout time.Duration) error {
	_, err := kube.Until(ctx, timeout, fmt.Sprintf("Deployment %s/%s to be Ready", ns, name), kube.NamedLW(k.AppsV1().Deployments(ns), name),
		func(d *appsv1.Deployment, exists bool) (bool, error) {
			if !exists {
				return false, fmt.Errorf("Deployment %s/%s disappeared", ns, name)
			}
			want := ptr.Deref(d.Spec.Replicas, 1)
			st := d.Status
			return st.ObservedGeneration >= d.Generation && st.UpdatedReplicas == want && st.ReadyReplicas == want && st.Replicas == want, nil
		}, func(d *appsv1.Deployment) string {
			return fmt.Sprintf("%d/%d ready, %d updated, %d in all", d.Status.ReadyReplicas, ptr.Deref(d.Spec.Replicas, 1), d.Status.UpdatedReplicas, d.Status.Replicas)
		})
	return err
}

// WaitNoPods waits until no pod matches the selector in ns: a Deployment
// scaled to 0 has stopped serving, and no pod holds its volume any more.
func WaitNoPods(ctx context.Context, k kubernetes.Interface, ns string, sel *metav1.LabelSelector, timeout time.Duration) error {
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return err
	}
	if s.Empty() {
		return fmt.Errorf("refusing to wait on an empty pod selector in %s", ns)
	}
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector = s.String()
			return k.CoreV1().Pods(ns).List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = s.String()
			return k.CoreV1().Pods(ns).Watch(ctx, o)
		},
	}
	_, err = kube.UntilSet(ctx, timeout, fmt.Sprintf("the pods of %s in %s to terminate", s, ns), lw,
		func(pods map[string]*corev1.Pod) (bool, error) { return len(pods) == 0, nil },
		func(pods map[string]*corev1.Pod) string { return fmt.Sprintf("%d pod(s) left", len(pods)) })
	return err
}

// PodsOf lists the pods of a selector.
func PodsOf(ctx context.Context, k kubernetes.Interface, ns string, sel *metav1.LabelSelector) ([]corev1.Pod, error) {
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return nil, err
	}
	if s.Empty() {
		s = labels.Nothing()
	}
	list, err := k.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: s.String()})
	if err != nil {
		return nil, err
	}
	return list.Items, nil
}
