package migrate

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rebind-dev/rebind/pkg/discovery"
)

// restoreSelector limits rebind's Velero Restore to the target's claims,
// so that other claims of the namespace stay out of the staging namespace.
// A StatefulSet's controller labels its claims with the pod selector. A
// Deployment's one claim is the chart's (templates/pvc.yaml carries the
// selector labels) or the user's (persistence.existingClaim: its own
// labels, as they were when it was backed up, since the claim is read
// before anything changes); with no label at all every claim of the
// namespace is restored into the staging namespace, where only the
// target's is adopted (the others are reported, not deleted).
func restoreSelector(t *discovery.Target) *metav1.LabelSelector {
	if !t.IsDeployment() {
		if ls := t.StatefulSet.Spec.Selector; ls != nil && len(ls.MatchLabels) > 0 {
			return &metav1.LabelSelector{MatchLabels: ls.MatchLabels}
		}
		return nil
	}
	claim := t.Ordinals[0].PVC
	if claim == nil || len(claim.Labels) == 0 {
		return nil
	}
	if ls := t.Deployment.Spec.Selector; ls != nil && len(ls.MatchLabels) > 0 {
		carries := true
		for k, v := range ls.MatchLabels {
			if claim.Labels[k] != v {
				carries = false
			}
		}
		if carries {
			return &metav1.LabelSelector{MatchLabels: ls.MatchLabels}
		}
	}
	return &metav1.LabelSelector{MatchLabels: claim.Labels}
}
