package migrate_test

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// dumpNS logs the claims, PVs, pods and events of a namespace, so that a
// failed migration test shows why the binder or scheduler stalled.
func dumpNS(t testing.TB, ns string) {
	pvcs, _ := sb.Kube.CoreV1().PersistentVolumeClaims(ns).List(t.Context(), metav1.ListOptions{})
	for _, c := range pvcs.Items {
		t.Logf("PVC %s phase=%s vol=%s del=%v", c.Name, c.Status.Phase, c.Spec.VolumeName, c.DeletionTimestamp)
	}
	pvs, _ := sb.Kube.CoreV1().PersistentVolumes().List(t.Context(), metav1.ListOptions{})
	for _, p := range pvs.Items {
		if p.Spec.ClaimRef != nil && p.Spec.ClaimRef.Namespace == ns {
			t.Logf("PV %s phase=%s ref=%s/%s", p.Name, p.Status.Phase, p.Spec.ClaimRef.Name, p.Spec.ClaimRef.UID)
		}
	}
	pods, _ := sb.Kube.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{})
	for _, p := range pods.Items {
		t.Logf("POD %s phase=%s node=%s conds=%v", p.Name, p.Status.Phase, p.Spec.NodeName, p.Status.Conditions)
	}
	evs, _ := sb.Kube.CoreV1().Events(ns).List(t.Context(), metav1.ListOptions{})
	for _, e := range evs.Items {
		t.Logf("EV %s %s %s: %s", e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, e.Message)
	}
}
