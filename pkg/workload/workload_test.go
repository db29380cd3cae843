package workload

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// TestSanitizeKeepsOwnershipAndDropsServerFields: the recreated StatefulSet
// must still belong to the Helm release, and must be creatable.
func TestSanitizeKeepsOwnershipAndDropsServerFields(t *testing.T) {
	in := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "grafana", Namespace: "mon", UID: "u1", ResourceVersion: "42", Generation: 3,
			CreationTimestamp: metav1.Now(),
			Labels:            map[string]string{"app.kubernetes.io/managed-by": "Helm"},
			Annotations:       map[string]string{"meta.helm.sh/release-name": "grafana"},
			ManagedFields:     []metav1.ManagedFieldsEntry{{Manager: "helm"}}},
		Spec: appsv1.StatefulSetSpec{Replicas: ptr.To(int32(2)), VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{
			ObjectMeta: metav1.ObjectMeta{Name: "storage", CreationTimestamp: metav1.Now()},
			Status:     corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimPending},
		}}},
		Status: appsv1.StatefulSetStatus{ReadyReplicas: 2},
	}
	out := Sanitize(in)
	if out.UID != "" || out.ResourceVersion != "" || out.Generation != 0 || !out.CreationTimestamp.IsZero() || out.ManagedFields != nil {
		t.Errorf("server-owned metadata kept: %+v", out.ObjectMeta)
	}
	if out.Labels["app.kubernetes.io/managed-by"] != "Helm" || out.Annotations["meta.helm.sh/release-name"] != "grafana" {
		t.Errorf("Helm ownership lost: %v %v", out.Labels, out.Annotations)
	}
	if out.Status.ReadyReplicas != 0 || out.Spec.VolumeClaimTemplates[0].Status.Phase != "" || !out.Spec.VolumeClaimTemplates[0].CreationTimestamp.IsZero() {
		t.Errorf("status kept")
	}
	if *out.Spec.Replicas != 2 || in.UID != "u1" {
		t.Errorf("spec changed or input mutated")
	}
	raw, err := Encode(out)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Decode(raw)
	if err != nil || back.Name != "grafana" {
		t.Fatalf("round trip: %v %v", back, err)
	}
}
