package volume

import (
	"context"
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
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

func TestCheckReservable(t *testing.T) {
	live := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "other", UID: "uid-live"}}
	tests := []struct {
		name     string
		claimRef *corev1.ObjectReference
		wantErr  bool
	}{
		{"free", nil, false},
		{"reserved for the same name", &corev1.ObjectReference{Namespace: "ns", Name: "storage-grafana-0"}, false},
		{"released by a deleted claim of the same name (stale uid)", &corev1.ObjectReference{Namespace: "ns", Name: "storage-grafana-0", UID: "dead"}, false},
		{"held by a deleted other claim", &corev1.ObjectReference{Namespace: "ns", Name: "gone", UID: "dead"}, false},
		{"bound to a live other claim", &corev1.ObjectReference{Namespace: "ns", Name: "other", UID: "uid-live"}, true},
		{"reserved (no uid) for a live other claim", &corev1.ObjectReference{Namespace: "ns", Name: "other"}, true},
		{"other claim name reused by a new claim (stale uid)", &corev1.ObjectReference{Namespace: "ns", Name: "other", UID: "older"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := fake.NewSimpleClientset(live)
			p := pv("standard", "1Gi")
			p.Spec.ClaimRef = tt.claimRef
			err := CheckReservable(context.Background(), k, p, "ns", "storage-grafana-0")
			var be *BoundElsewhereError
			if got := errors.As(err, &be); got != tt.wantErr {
				t.Fatalf("BoundElsewhereError=%v want %v (err %v)", got, tt.wantErr, err)
			}
		})
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
