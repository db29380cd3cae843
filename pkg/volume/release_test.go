package volume

import (
	"context"
	"errors"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// dropProtection removes only the protection finalizer, and answers to
// everything the update can meet: a missing right leaves the claim to the
// controller, a conflict reads the claim again.
func TestDropProtection(t *testing.T) {
	gr := schema.GroupResource{Resource: "persistentvolumeclaims"}
	claim := func(uid string, finalizers ...string) *corev1.PersistentVolumeClaim {
		return &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{
			Name: "storage-grafana-0", Namespace: "mon", UID: "u1", ResourceVersion: "7",
			DeletionTimestamp: &metav1.Time{}, Finalizers: finalizers,
		}}
	}
	for _, tc := range []struct {
		name       string
		stored     *corev1.PersistentVolumeClaim // what a read after a conflict finds; nil: gone
		updateErr  error
		finalizers []string
		done       bool
		next       []string // finalizers of next; nil: no next
		err        bool
	}{
		{name: "released", finalizers: []string{PVCProtectionFinalizer}, done: true},
		{name: "another finalizer stays", finalizers: []string{PVCProtectionFinalizer, "example.com/backup"}, done: true, next: []string{"example.com/backup"}},
		{name: "no right to update: wait for the controller", updateErr: apierrors.NewForbidden(gr, "storage-grafana-0", nil), finalizers: []string{PVCProtectionFinalizer}, done: true, next: []string{PVCProtectionFinalizer}},
		{name: "gone meanwhile", updateErr: apierrors.NewNotFound(gr, "storage-grafana-0"), finalizers: []string{PVCProtectionFinalizer}, done: true},
		{name: "conflict, controller released it", updateErr: apierrors.NewConflict(gr, "storage-grafana-0", nil), finalizers: []string{PVCProtectionFinalizer}, done: true},
		{name: "conflict, still protected: test again", updateErr: apierrors.NewConflict(gr, "storage-grafana-0", nil), stored: claim("u1", PVCProtectionFinalizer, "example.com/x"), finalizers: []string{PVCProtectionFinalizer}, next: []string{PVCProtectionFinalizer, "example.com/x"}},
		{name: "conflict, only another finalizer left", updateErr: apierrors.NewConflict(gr, "storage-grafana-0", nil), stored: claim("u1", "example.com/x"), finalizers: []string{PVCProtectionFinalizer}, done: true, next: []string{"example.com/x"}},
		{name: "other error", updateErr: apierrors.NewInternalError(errors.New("etcd unavailable")), finalizers: []string{PVCProtectionFinalizer}, err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var objs []runtime.Object
			if tc.stored != nil {
				objs = append(objs, tc.stored)
			}
			k := fake.NewSimpleClientset(objs...)
			k.PrependReactor("update", "persistentvolumeclaims", func(a k8stesting.Action) (bool, runtime.Object, error) {
				obj := a.(k8stesting.UpdateAction).GetObject().(*corev1.PersistentVolumeClaim)
				// Conditional on the version the pods were checked against.
				if obj.ResourceVersion != "7" {
					t.Errorf("update without the claim's resourceVersion: %q", obj.ResourceVersion)
				}
				if tc.updateErr != nil {
					return true, nil, tc.updateErr
				}
				return true, obj, nil
			})
			done, next, err := dropProtection(context.Background(), k, claim("u1", tc.finalizers...))
			if (err != nil) != tc.err || done != tc.done {
				t.Fatalf("done %v, err %v; want done %v, error %v", done, err, tc.done, tc.err)
			}
			switch {
			case tc.next == nil && next != nil:
				t.Fatalf("next has finalizers %v; want none", next.Finalizers)
			case tc.next != nil && (next == nil || !slices.Equal(next.Finalizers, tc.next)):
				t.Fatalf("next %v; want finalizers %v", next, tc.next)
			}
		})
	}
}

// The pvc-protection controller's test: only a scheduled pod can mount.
func TestPodNamesClaim(t *testing.T) {
	vol := func(name string, src corev1.VolumeSource) corev1.Volume {
		return corev1.Volume{Name: name, VolumeSource: src}
	}
	claimVol := vol("data", corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "storage-grafana-0"}})
	for _, tc := range []struct {
		name string
		pod  corev1.Pod
		want bool
	}{
		{"scheduled, names it", corev1.Pod{Spec: corev1.PodSpec{NodeName: "n1", Volumes: []corev1.Volume{claimVol}}}, true},
		{"terminating still counts", corev1.Pod{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &metav1.Time{}}, Spec: corev1.PodSpec{NodeName: "n1", Volumes: []corev1.Volume{claimVol}}}, true},
		{"not scheduled", corev1.Pod{Spec: corev1.PodSpec{Volumes: []corev1.Volume{claimVol}}}, false},
		{"another claim", corev1.Pod{Spec: corev1.PodSpec{NodeName: "n1", Volumes: []corev1.Volume{vol("data", corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "other"}})}}}, false},
		{"ephemeral volume of that name", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "storage"}, Spec: corev1.PodSpec{NodeName: "n1", Volumes: []corev1.Volume{vol("grafana-0", corev1.VolumeSource{Ephemeral: &corev1.EphemeralVolumeSource{}})}}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := podNamesClaim(&tc.pod, "storage-grafana-0"); got != tc.want {
				t.Errorf("podNamesClaim = %v, want %v", got, tc.want)
			}
		})
	}
}
