package migrate_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/pkg/volume"
)

// TestReleaseDeletedClaim pins when rebind drops the pvc-protection
// finalizer of a claim it deleted, ahead of kube-controller-manager: only
// when no scheduled pod names the claim. A pod that may mount it keeps it,
// and the error names that pod; the claim keeps its finalizer.
func TestReleaseDeletedClaim(t *testing.T) {
	e2eutil.NeedSandbox(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nodes, err := sb.Kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil || len(nodes.Items) == 0 {
		t.Fatalf("no node to place a pod on: %v", err)
	}
	for _, tc := range []struct {
		name string
		// pod, when not "", is a pod naming the claim: on a node
		// (scheduled) or held off every node.
		pod       string
		scheduled bool
		// stop: the pod is deleted after the release started, as the
		// stop-pods step does with the release it starts.
		stop     bool
		released bool
	}{
		{name: "no pod names it", released: true},
		{name: "a stray pod still mounts it", pod: "debug-shell", scheduled: true},
		{name: "a pod never scheduled cannot mount it", pod: "pending", released: true},
		{name: "released once its pod is gone", pod: "grafana-0", scheduled: true, stop: true, released: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := sb.NewNamespace(t)
			claims := sb.Kube.CoreV1().PersistentVolumeClaims(ns)
			// A class nobody provisions: the claim stays Pending, which
			// is all the protection finalizer needs.
			c, err := claims.Create(ctx, &corev1.PersistentVolumeClaim{
				ObjectMeta: metav1.ObjectMeta{Name: "storage-grafana-0"},
				Spec: corev1.PersistentVolumeClaimSpec{
					AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
					StorageClassName: ptr.To("nobody-provisions-this"),
					Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
				},
			}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(c.Finalizers, volume.PVCProtectionFinalizer) {
				t.Fatalf("claim created without %s: %v", volume.PVCProtectionFinalizer, c.Finalizers)
			}
			if tc.pod != "" {
				pod := &corev1.Pod{
					ObjectMeta: metav1.ObjectMeta{Name: tc.pod},
					Spec: corev1.PodSpec{
						Containers: []corev1.Container{{Name: "sh", Image: "busybox"}},
						Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
							PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: c.Name}}}},
					},
				}
				if tc.scheduled {
					pod.Spec.NodeName = nodes.Items[0].Name
				} else {
					pod.Spec.NodeSelector = map[string]string{"rebind.dev/no-such-node": "true"}
				}
				if _, err := sb.Kube.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			if err := claims.Delete(ctx, c.Name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			var waited bool
			if tc.stop {
				r := volume.StartRelease(ctx, sb.Kube, ns, c.Name, c.UID, 30*time.Second)
				// While the pod runs, the release holds.
				early, cancelEarly := context.WithTimeout(ctx, 500*time.Millisecond)
				_, err := r.Wait(early)
				cancelEarly()
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("release while pod %s still runs: %v; want it held", tc.pod, err)
				}
				if cur, err := claims.Get(ctx, c.Name, metav1.GetOptions{}); err != nil || !slices.Contains(cur.Finalizers, volume.PVCProtectionFinalizer) {
					t.Fatalf("claim while pod %s still runs: %v, finalizers %v; want it kept", tc.pod, err, cur.GetFinalizers())
				}
				if err := sb.Kube.CoreV1().Pods(ns).Delete(ctx, tc.pod, metav1.DeleteOptions{}); err != nil {
					t.Fatal(err)
				}
				waited, err = r.Wait(ctx)
			} else {
				waited, err = volume.ReleaseDeletedClaim(ctx, sb.Kube, ns, c.Name, c.UID, 3*time.Second)
			}
			cur, gerr := claims.Get(ctx, c.Name, metav1.GetOptions{})
			if tc.released {
				if err != nil || !waited {
					t.Fatalf("ReleaseDeletedClaim: waited %v, %v; want the claim released", waited, err)
				}
				if !apierrors.IsNotFound(gerr) {
					t.Fatalf("claim after the release: %v, finalizers %v; want it gone", gerr, cur.GetFinalizers())
				}
				t.Logf("released in %v", time.Since(start).Round(time.Millisecond))
				return
			}
			var held *volume.StillMounted
			if !errors.As(err, &held) || !strings.Contains(err.Error(), tc.pod) {
				t.Fatalf("ReleaseDeletedClaim: %v; want a StillMounted error naming pod %s", err, tc.pod)
			}
			if gerr != nil || cur.UID != c.UID || !slices.Contains(cur.Finalizers, volume.PVCProtectionFinalizer) {
				t.Fatalf("claim after the refusal: %v, finalizers %v; want it kept with %s", gerr, cur.GetFinalizers(), volume.PVCProtectionFinalizer)
			}
		})
	}
}
