package e2eutil

import (
	"context"
	"maps"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rebind-dev/rebind/e2e/sandbox"
	"github.com/rebind-dev/rebind/pkg/kube"
	"github.com/rebind-dev/rebind/pkg/volume"
)

// StrangerPV creates someone else's Available volume in class, bigger than
// anything a test asks for, with the reclaim policy Delete that would
// destroy it along with any claim that took it. It is deleted when the
// test ends.
func StrangerPV(t testing.TB, sb *sandbox.Sandbox, name, class string) *corev1.PersistentVolume {
	t.Helper()
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"team": "b"}, Annotations: map[string]string{"owner": "team-b"}},
		Spec: corev1.PersistentVolumeSpec{
			StorageClassName:              class,
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("500Gi")},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimDelete,
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
				Driver: "hostpath.csi.rebind.test", VolumeHandle: name}},
		},
	}
	if _, err := sb.Kube.CoreV1().PersistentVolumes().Create(context.Background(), pv, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = sb.Kube.CoreV1().PersistentVolumes().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	got, err := volume.WaitPVPhase(context.Background(), sb.Kube, name, time.Minute, corev1.VolumeAvailable)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// WatchBound reports whether the PV was ever bound to a claim from now on.
func WatchBound(t testing.TB, sb *sandbox.Sandbox, pv string) func() bool {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var seen atomic.Bool
	go func() {
		_, _ = kube.Until(ctx, time.Hour, "PersistentVolume "+pv+" bound", kube.PVLW(sb.Kube, pv), func(p *corev1.PersistentVolume, exists bool) (bool, error) {
			if exists && p.Spec.ClaimRef != nil {
				seen.Store(true)
				return true, nil
			}
			return false, nil
		}, func(*corev1.PersistentVolume) string { return "" })
	}()
	return seen.Load
}

// AssertGivenBack checks the PV is Available again with exactly the spec,
// labels and annotations it had before.
func AssertGivenBack(t testing.TB, sb *sandbox.Sandbox, before *corev1.PersistentVolume) {
	t.Helper()
	pv, err := volume.WaitPVPhase(context.Background(), sb.Kube, before.Name, time.Minute, corev1.VolumeAvailable)
	if err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(pv.Spec, before.Spec) || !maps.Equal(pv.Labels, before.Labels) || !maps.Equal(pv.Annotations, before.Annotations) {
		t.Fatalf("someone else's PV %s is not as it was:\nbefore %+v %v\nafter  %+v %v", before.Name, before.Spec, before.Annotations, pv.Spec, pv.Annotations)
	}
}
