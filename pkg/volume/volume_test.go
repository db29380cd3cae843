package volume

import (
	"context"
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"
)

func pv(class, size string, modes ...corev1.PersistentVolumeAccessMode) *corev1.PersistentVolume {
	return &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "pv-1"},
		Spec: corev1.PersistentVolumeSpec{
			StorageClassName: class,
			Capacity:         corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)},
			AccessModes:      modes,
		},
	}
}

func TestCheckFits(t *testing.T) {
	rwo := []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
	block := corev1.PersistentVolumeBlock
	tests := []struct {
		name    string
		pv      *corev1.PersistentVolume
		shape   ClaimShape
		wantErr string
	}{
		{"fits", pv("standard", "10Gi", corev1.ReadWriteOnce), ClaimShape{Name: "c", StorageClassName: "standard", Request: resource.MustParse("10Gi"), AccessModes: rwo, VolumeMode: corev1.PersistentVolumeFilesystem}, ""},
		{"larger PV fits", pv("standard", "20Gi", corev1.ReadWriteOnce), ClaimShape{Name: "c", StorageClassName: "standard", Request: resource.MustParse("10Gi"), AccessModes: rwo, VolumeMode: corev1.PersistentVolumeFilesystem}, ""},
		{"class mismatch", pv("standard", "10Gi", corev1.ReadWriteOnce), ClaimShape{Name: "c", StorageClassName: "premium", Request: resource.MustParse("10Gi"), AccessModes: rwo, VolumeMode: corev1.PersistentVolumeFilesystem}, "storageClassName differs"},
		{"empty claim class does not match classless PV after defaulting", pv("", "10Gi", corev1.ReadWriteOnce), ClaimShape{Name: "c", StorageClassName: "standard", Request: resource.MustParse("10Gi"), AccessModes: rwo, VolumeMode: corev1.PersistentVolumeFilesystem}, "storageClassName differs"},
		{"too small", pv("standard", "5Gi", corev1.ReadWriteOnce), ClaimShape{Name: "c", StorageClassName: "standard", Request: resource.MustParse("10Gi"), AccessModes: rwo, VolumeMode: corev1.PersistentVolumeFilesystem}, "smaller than the request"},
		{"missing access mode", pv("standard", "10Gi", corev1.ReadWriteOnce), ClaimShape{Name: "c", StorageClassName: "standard", Request: resource.MustParse("10Gi"), AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}, VolumeMode: corev1.PersistentVolumeFilesystem}, "access mode ReadWriteMany"},
		{"volume mode", func() *corev1.PersistentVolume {
			p := pv("standard", "10Gi", corev1.ReadWriteOnce)
			p.Spec.VolumeMode = &block
			return p
		}(), ClaimShape{Name: "c", StorageClassName: "standard", Request: resource.MustParse("10Gi"), AccessModes: rwo, VolumeMode: corev1.PersistentVolumeFilesystem}, "volumeMode differs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckFits(tt.pv, tt.shape)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected: %v", err)
				}
				return
			}
			var inc *Incompatible
			if !errors.As(err, &inc) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("want Incompatible containing %q, got %v", tt.wantErr, err)
			}
		})
	}
}

// TestClaimRefStates covers every claimRef state a PV can be in, seen from
// the claim rebind wants (ns/storage-grafana-0): how it is classified,
// whether it may be reserved, and what Reserve leaves on the PV.
func TestClaimRefStates(t *testing.T) {
	const ns, us = "ns", "storage-grafana-0"
	liveOther := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "other", UID: "uid-other"}}
	liveUs := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: us, UID: "uid-us"}}
	tests := []struct {
		name      string
		claimRef  *corev1.ObjectReference
		claims    []*corev1.PersistentVolumeClaim
		want      RefState
		refused   bool // CheckReservable and Reserve refuse, PV untouched
		wantAfter *corev1.ObjectReference
	}{
		{"none", nil, nil, RefNone, false, &corev1.ObjectReference{Namespace: ns, Name: us}},
		{"reserved (no uid) for us, claim not created yet", &corev1.ObjectReference{Namespace: ns, Name: us}, nil, RefReservedForUs, false, &corev1.ObjectReference{Namespace: ns, Name: us}},
		{"bound (uid) to our live claim", &corev1.ObjectReference{Namespace: ns, Name: us, UID: "uid-us"}, []*corev1.PersistentVolumeClaim{liveUs}, RefBoundToUs, false, &corev1.ObjectReference{Namespace: ns, Name: us, UID: "uid-us"}},
		{"stale uid of a deleted claim of our name", &corev1.ObjectReference{Namespace: ns, Name: us, UID: "dead"}, nil, RefStale, false, &corev1.ObjectReference{Namespace: ns, Name: us}},
		{"stale uid: our name reused by a new claim", &corev1.ObjectReference{Namespace: ns, Name: us, UID: "dead"}, []*corev1.PersistentVolumeClaim{liveUs}, RefStale, false, &corev1.ObjectReference{Namespace: ns, Name: us}},
		{"stale uid of a deleted other claim", &corev1.ObjectReference{Namespace: ns, Name: "gone", UID: "dead"}, nil, RefStale, false, &corev1.ObjectReference{Namespace: ns, Name: us}},
		{"stale uid: other name reused by a new claim", &corev1.ObjectReference{Namespace: ns, Name: "other", UID: "older"}, []*corev1.PersistentVolumeClaim{liveOther}, RefStale, false, &corev1.ObjectReference{Namespace: ns, Name: us}},
		{"reserved (no uid) for another claim that does not exist yet", &corev1.ObjectReference{Namespace: "other-ns", Name: "someone-else"}, nil, RefReservedElsewhere, true, nil},
		{"reserved (no uid) for another live claim", &corev1.ObjectReference{Namespace: ns, Name: "other"}, []*corev1.PersistentVolumeClaim{liveOther}, RefReservedElsewhere, true, nil},
		{"bound (uid) to another live claim", &corev1.ObjectReference{Namespace: ns, Name: "other", UID: "uid-other"}, []*corev1.PersistentVolumeClaim{liveOther}, RefBoundElsewhere, true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			p := pv("standard", "1Gi")
			p.Spec.PersistentVolumeReclaimPolicy = corev1.PersistentVolumeReclaimRetain
			p.Spec.ClaimRef = tt.claimRef.DeepCopy()
			objs := []runtime.Object{p}
			for _, c := range tt.claims {
				objs = append(objs, c)
			}
			k := fake.NewSimpleClientset(objs...)
			st, err := ClassifyClaimRef(ctx, k, p, ns, us)
			if err != nil || st != tt.want {
				t.Fatalf("ClassifyClaimRef = %v, %v; want %v", st, err, tt.want)
			}
			err = CheckReservable(ctx, k, p, ns, us)
			var he *HeldElsewhereError
			if errors.As(err, &he) != tt.refused {
				t.Fatalf("CheckReservable = %v, refused want %v", err, tt.refused)
			}
			if tt.refused && (!strings.Contains(err.Error(), p.Name) || !strings.Contains(err.Error(), tt.claimRef.Namespace+"/"+tt.claimRef.Name)) {
				t.Fatalf("refusal must name the PV and the other claim: %v", err)
			}
			before, _ := k.CoreV1().PersistentVolumes().Get(ctx, p.Name, metav1.GetOptions{})
			err = Reserve(ctx, k, p.Name, ns, us, false)
			if (err != nil) != tt.refused {
				t.Fatalf("Reserve = %v, refused want %v", err, tt.refused)
			}
			after, _ := k.CoreV1().PersistentVolumes().Get(ctx, p.Name, metav1.GetOptions{})
			if tt.refused {
				if after.ResourceVersion != before.ResourceVersion || !equality.Semantic.DeepEqual(after.Spec.ClaimRef, tt.claimRef) {
					t.Fatalf("a refused Reserve changed the PV: claimRef %+v", after.Spec.ClaimRef)
				}
				return
			}
			if !equality.Semantic.DeepEqual(after.Spec.ClaimRef.DeepCopy(), withKind(tt.wantAfter, after.Spec.ClaimRef)) {
				t.Fatalf("claimRef after Reserve = %+v, want %+v", after.Spec.ClaimRef, tt.wantAfter)
			}
		})
	}
}

// withKind fills in the kind and apiVersion Reserve writes, when the
// expected claimRef is one Reserve wrote.
func withKind(want, got *corev1.ObjectReference) *corev1.ObjectReference {
	w := want.DeepCopy()
	if got != nil {
		w.Kind, w.APIVersion = got.Kind, got.APIVersion
	}
	return w
}

// TestReserveIsConditional: a PV changed by someone else between rebind's
// read and its write (here: reserved for another claim) is re-read and
// refused, never overwritten.
func TestReserveIsConditional(t *testing.T) {
	ctx := context.Background()
	p := pv("standard", "1Gi")
	p.ResourceVersion = "1"
	p.Spec.PersistentVolumeReclaimPolicy = corev1.PersistentVolumeReclaimRetain
	p.Spec.ClaimRef = &corev1.ObjectReference{Namespace: "ns", Name: "old", UID: "dead"}
	k := fake.NewSimpleClientset(p)
	raced := false
	k.PrependReactor("update", "persistentvolumes", func(a clienttesting.Action) (bool, runtime.Object, error) {
		if raced {
			return false, nil, nil
		}
		raced = true
		// Another party reserves the PV first; our write carries the old
		// resourceVersion and must fail with a conflict.
		other := p.DeepCopy()
		other.ResourceVersion = "2"
		other.Spec.ClaimRef = &corev1.ObjectReference{Namespace: "other", Name: "someone-else"}
		if err := k.Tracker().Update(corev1.SchemeGroupVersion.WithResource("persistentvolumes"), other, ""); err != nil {
			t.Fatal(err)
		}
		return true, nil, apierrors.NewConflict(corev1.Resource("persistentvolumes"), p.Name, errors.New("the object has been modified"))
	})
	err := Reserve(ctx, k, p.Name, "ns", "storage-grafana-0", false)
	var he *HeldElsewhereError
	if !errors.As(err, &he) || !he.Reserved || he.Owner != "other/someone-else" {
		t.Fatalf("want the re-read refused as reserved for other/someone-else, got %v", err)
	}
	got, _ := k.CoreV1().PersistentVolumes().Get(ctx, p.Name, metav1.GetOptions{})
	if got.Spec.ClaimRef.Name != "someone-else" {
		t.Fatalf("the other party's reservation was overwritten: %+v", got.Spec.ClaimRef)
	}
}

func TestSetReclaimPolicyIfGuard(t *testing.T) {
	ctx := context.Background()
	p := pv("standard", "1Gi")
	p.Spec.PersistentVolumeReclaimPolicy = corev1.PersistentVolumeReclaimRetain
	p.Status.Phase = corev1.VolumeBound
	p.Spec.ClaimRef = &corev1.ObjectReference{Namespace: "other", Name: "someone-else"}
	k := fake.NewSimpleClientset(p)
	_, err := SetReclaimPolicyIf(ctx, k, p.Name, corev1.PersistentVolumeReclaimDelete, ClaimedBy("ns", "storage-grafana-0"), false)
	if err == nil || !strings.Contains(err.Error(), "other/someone-else") {
		t.Fatalf("Delete on a PV another claim holds must be refused naming it, got %v", err)
	}
	got, _ := k.CoreV1().PersistentVolumes().Get(ctx, p.Name, metav1.GetOptions{})
	if got.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimRetain {
		t.Fatalf("policy changed to %s", got.Spec.PersistentVolumeReclaimPolicy)
	}
}

func TestReserveRefusesDeleteAndKeepsNamespaceNameOnly(t *testing.T) {
	ctx := context.Background()
	p := pv("standard", "1Gi")
	p.Spec.PersistentVolumeReclaimPolicy = corev1.PersistentVolumeReclaimDelete
	p.Spec.ClaimRef = &corev1.ObjectReference{Namespace: "ns", Name: "old", UID: "dead", ResourceVersion: "7"}
	p.Annotations = map[string]string{AnnBoundByController: "yes"}
	k := fake.NewSimpleClientset(p)
	if err := Reserve(ctx, k, "pv-1", "ns", "storage-grafana-0", false); err == nil || !strings.Contains(err.Error(), "Retain first") {
		t.Fatalf("reserving a Delete PV must be refused, got %v", err)
	}
	if _, err := SetReclaimPolicy(ctx, k, "pv-1", corev1.PersistentVolumeReclaimRetain, false); err != nil {
		t.Fatal(err)
	}
	if err := Reserve(ctx, k, "pv-1", "ns", "storage-grafana-0", false); err != nil {
		t.Fatal(err)
	}
	got, _ := k.CoreV1().PersistentVolumes().Get(ctx, "pv-1", metav1.GetOptions{})
	ref := got.Spec.ClaimRef
	if ref == nil || ref.Name != "storage-grafana-0" || ref.Namespace != "ns" || ref.UID != "" || ref.ResourceVersion != "" {
		t.Fatalf("claimRef = %+v, want namespace/name only", ref)
	}
	if _, ok := got.Annotations[AnnBoundByController]; ok {
		t.Fatalf("bound-by-controller annotation kept")
	}
}

func TestSetReclaimPolicyRefusesDeleteOnReleased(t *testing.T) {
	p := pv("standard", "1Gi")
	p.Spec.PersistentVolumeReclaimPolicy = corev1.PersistentVolumeReclaimRetain
	p.Status.Phase = corev1.VolumeReleased
	k := fake.NewSimpleClientset(p)
	if _, err := SetReclaimPolicy(context.Background(), k, "pv-1", corev1.PersistentVolumeReclaimDelete, false); err == nil {
		t.Fatal("Delete on a Released PV would destroy it; must be refused")
	}
}
