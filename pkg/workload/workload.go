// Package workload scales, removes and recreates the StatefulSet around a
// volume swap. volumeClaimTemplates are immutable, so changing the claim
// template means deleting the StatefulSet with orphan propagation (its pods
// are already gone, its claims stay) and creating it again.
package workload

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/rebind-dev/rebind/pkg/kube"
)

// Scale sets the StatefulSet's replicas through the scale subresource, so
// that nothing else in the object is rewritten.
func Scale(ctx context.Context, k kubernetes.Interface, ns, name string, replicas int32) error {
	patch := fmt.Sprintf(`{"spec":{"replicas":%d}}`, replicas)
	_, err := k.AppsV1().StatefulSets(ns).Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}, "scale")
	if err != nil {
		return fmt.Errorf("scaling StatefulSet %s/%s to %d: %w", ns, name, replicas, err)
	}
	return nil
}

// WaitPodGone waits until the named pod no longer exists. A pod that still
// runs keeps its volume mounted and the controller may recreate its claim.
func WaitPodGone(ctx context.Context, k kubernetes.Interface, ns, pod string, timeout time.Duration) error {
	_, err := kube.Until(ctx, timeout, fmt.Sprintf("pod %s/%s to terminate", ns, pod), kube.PodLW(k, ns, pod),
		func(_ *corev1.Pod, exists bool) (bool, error) { return !exists, nil },
		func(p *corev1.Pod) string {
			return fmt.Sprintf("phase %s, deletionTimestamp %v", p.Status.Phase, p.DeletionTimestamp)
		})
	return err
}

// WaitPodReady waits until the named pod exists and is Ready.
func WaitPodReady(ctx context.Context, k kubernetes.Interface, ns, pod string, timeout time.Duration) (*corev1.Pod, error) {
	return kube.Until(ctx, timeout, fmt.Sprintf("pod %s/%s to be Ready", ns, pod), kube.PodLW(k, ns, pod),
		func(p *corev1.Pod, exists bool) (bool, error) {
			return exists && p.DeletionTimestamp == nil && podReady(p), nil
		}, describePod)
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func describePod(p *corev1.Pod) string {
	s := "phase " + string(p.Status.Phase)
	for _, c := range p.Status.Conditions {
		if c.Status != corev1.ConditionTrue && c.Message != "" {
			s += fmt.Sprintf(", %s: %s", c.Type, c.Message)
		}
	}
	return s
}

// WaitReady waits until the StatefulSet's controller has seen its latest
// spec and all replicas are ready.
func WaitReady(ctx context.Context, k kubernetes.Interface, ns, name string, timeout time.Duration) error {
	_, err := kube.Until(ctx, timeout, fmt.Sprintf("StatefulSet %s/%s to be Ready", ns, name), kube.StatefulSetLW(k, ns, name),
		func(s *appsv1.StatefulSet, exists bool) (bool, error) {
			if !exists {
				return false, nil
			}
			want := ptr.Deref(s.Spec.Replicas, 1)
			return s.Status.ObservedGeneration >= s.Generation && s.Status.ReadyReplicas == want && s.Status.Replicas == want, nil
		}, func(s *appsv1.StatefulSet) string {
			return fmt.Sprintf("%d/%d ready", s.Status.ReadyReplicas, ptr.Deref(s.Spec.Replicas, 1))
		})
	return err
}

// RequestOrphanDelete asks for the StatefulSet's deletion with orphan
// propagation without waiting for the garbage collector.
func RequestOrphanDelete(ctx context.Context, k kubernetes.Interface, ns, name string, uid types.UID) error {
	opts := metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationOrphan)}
	if uid != "" {
		// Never delete a StatefulSet someone recreated under the same name.
		opts.Preconditions = &metav1.Preconditions{UID: &uid}
	}
	err := k.AppsV1().StatefulSets(ns).Delete(ctx, name, opts)
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("deleting StatefulSet %s/%s (orphan): %w", ns, name, err)
	}
	return nil
}

// WaitGone waits until no StatefulSet with that uid exists under the name.
func WaitGone(ctx context.Context, k kubernetes.Interface, ns, name string, uid types.UID, timeout time.Duration) error {
	_, err := kube.Until(ctx, timeout, fmt.Sprintf("StatefulSet %s/%s to be deleted", ns, name), kube.StatefulSetLW(k, ns, name),
		func(s *appsv1.StatefulSet, exists bool) (bool, error) {
			return !exists || (uid != "" && s.UID != uid), nil
		},
		func(s *appsv1.StatefulSet) string { return fmt.Sprintf("finalizers %v", s.Finalizers) })
	return err
}

// DeleteOrphan deletes the StatefulSet but leaves its dependents (claims and
// any pod) in place, then waits until it is gone.
func DeleteOrphan(ctx context.Context, k kubernetes.Interface, ns, name string, uid types.UID, timeout time.Duration) error {
	if err := RequestOrphanDelete(ctx, k, ns, name, uid); err != nil {
		return err
	}
	return WaitGone(ctx, k, ns, name, uid, timeout)
}

// Sanitize turns a live StatefulSet into a manifest that can be created
// again: server-owned fields go, everything the user or Helm set stays
// (labels, annotations including Helm's ownership, the pod template).
func Sanitize(in *appsv1.StatefulSet) *appsv1.StatefulSet {
	s := in.DeepCopy()
	s.ObjectMeta = metav1.ObjectMeta{
		Name: s.Name, Namespace: s.Namespace, Labels: s.Labels, Annotations: s.Annotations,
		OwnerReferences: s.OwnerReferences, Finalizers: s.Finalizers,
	}
	s.Status = appsv1.StatefulSetStatus{}
	for i := range s.Spec.VolumeClaimTemplates {
		t := &s.Spec.VolumeClaimTemplates[i]
		t.ObjectMeta = metav1.ObjectMeta{Name: t.Name, Labels: t.Labels, Annotations: t.Annotations}
		t.Status = corev1.PersistentVolumeClaimStatus{}
	}
	return s
}

// Encode and Decode keep a manifest in the journal.
func Encode(s *appsv1.StatefulSet) (string, error) {
	b, err := json.Marshal(s)
	return string(b), err
}

func Decode(raw string) (*appsv1.StatefulSet, error) {
	var s appsv1.StatefulSet
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		return nil, err
	}
	return &s, nil
}
