package volume

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"
)

func TestProvisionedFor(t *testing.T) {
	claimAt := metav1.NewTime(time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC))
	c := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "staging", UID: "u1", CreationTimestamp: claimAt}}
	mk := func(name string, created time.Time, uid string) *corev1.PersistentVolume {
		p := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(created)}}
		if uid != "" {
			p.Spec.ClaimRef = &corev1.ObjectReference{Name: "staging", UID: types.UID(uid)}
		}
		return p
	}
	before := Candidates{"old-available": false}
	tests := []struct {
		name string
		pv   *corev1.PersistentVolume
		want bool
	}{
		{"provisioned after the claim", mk("pvc-u1", claimAt.Add(time.Second), "u1"), true},
		{"provisioned in the claim's second", mk("pvc-u1", claimAt.Time, "u1"), true},
		{"an Available PV listed before the claim", mk("old-available", claimAt.Add(time.Second), "u1"), false},
		{"a PV older than the claim", mk("older", claimAt.Add(-time.Hour), "u1"), false},
		{"bound to another claim", mk("pvc-u2", claimAt.Add(time.Second), "u2"), false},
		{"not bound", mk("free", claimAt.Add(time.Second), ""), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ProvisionedFor(tt.pv, c, before); got != tt.want {
				t.Fatalf("ProvisionedFor = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestGiveBackNeverReleasedWithDelete: a PV whose status says Released with
// policy Delete is deleted by CSI provisioners whatever its claimRef says;
// GiveBack must clear the claimRef first and put Delete back only once the
// PV is Available, and end with the PV exactly as it was found.
func TestGiveBackNeverReleasedWithDelete(t *testing.T) {
	ctx := context.Background()
	p := pv("standard", "1Gi")
	p.Annotations = map[string]string{"owner": "team-b", AnnBoundByController: "yes"}
	p.Spec.PersistentVolumeReclaimPolicy = corev1.PersistentVolumeReclaimDelete
	p.Spec.ClaimRef = &corev1.ObjectReference{Namespace: "ns", Name: "staging", UID: "u1"}
	p.Status.Phase = corev1.VolumeBound
	claim := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "staging", UID: "u1"}}
	k := fake.NewSimpleClientset(p, claim)
	pvs := corev1.SchemeGroupVersion.WithResource("persistentvolumes")
	var writes []*corev1.PersistentVolume
	k.PrependReactor("update", "persistentvolumes", func(a clienttesting.Action) (bool, runtime.Object, error) {
		w := a.(clienttesting.UpdateAction).GetObject().(*corev1.PersistentVolume).DeepCopy()
		writes = append(writes, w)
		// Play the PV binder: a PV without claimRef becomes Available.
		if w.Spec.ClaimRef == nil {
			w.Status.Phase = corev1.VolumeAvailable
		}
		return true, w, k.Tracker().Update(pvs, w, "")
	})
	k.PrependReactor("delete", "persistentvolumeclaims", func(a clienttesting.Action) (bool, runtime.Object, error) {
		// The binder marks the PV Released once its claim is gone.
		cur, _ := k.Tracker().Get(pvs, "", p.Name)
		rel := cur.(*corev1.PersistentVolume).DeepCopy()
		rel.Status.Phase = corev1.VolumeReleased
		_ = k.Tracker().Update(pvs, rel, "")
		return false, nil, nil
	})
	m := MistakenBinding{PV: p.Name, ClaimNamespace: "ns", Claim: "staging", ClaimUID: "u1", ReclaimPolicy: corev1.PersistentVolumeReclaimDelete}
	if err := m.GiveBack(ctx, k, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	for i, w := range writes {
		if w.Status.Phase == corev1.VolumeReleased && w.Spec.PersistentVolumeReclaimPolicy == corev1.PersistentVolumeReclaimDelete {
			t.Fatalf("write %d left the PV Released with policy Delete: a CSI provisioner would delete it", i)
		}
	}
	got, _ := k.CoreV1().PersistentVolumes().Get(ctx, p.Name, metav1.GetOptions{})
	if got.Spec.ClaimRef != nil || got.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete || got.Annotations[AnnBoundByController] != "" || got.Annotations["owner"] != "team-b" {
		t.Fatalf("not given back as found: claimRef %v policy %s annotations %v", got.Spec.ClaimRef, got.Spec.PersistentVolumeReclaimPolicy, got.Annotations)
	}
	if err := m.GiveBack(ctx, k, 5*time.Second); err != nil {
		t.Fatalf("second GiveBack (resumed run): %v", err)
	}
}
