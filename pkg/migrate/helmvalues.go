package migrate

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// LabelChart is set by Helm charts following the usual helpers.
const LabelChart = "helm.sh/chart"

// chartHasVolumeName says whether a Grafana chart version renders
// persistence.volumeName into the StatefulSet's claim template (8.14.0+).
// ok is false when the version is unknown.
func chartHasVolumeName(chart string) (has, ok bool) {
	v := strings.TrimPrefix(chart, "grafana-")
	parts := strings.SplitN(strings.SplitN(v, "-", 2)[0], ".", 3)
	if len(parts) < 2 {
		return false, false
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil {
		return false, false
	}
	return major > 8 || (major == 8 && minor >= 14), true
}

// helmValues are the values a later `helm upgrade` needs so that it renders
// the StatefulSet rebind created, plus notes on what the chart cannot say.
func helmValues(s *Spec, e *env) (map[string]any, []string) {
	if s.Install != nil {
		return installNotes(s)
	}
	if s.ToKind != "" {
		return switchValues(s, e) // tokind.go
	}
	if s.Target.IsDeployment() {
		return deploymentValues(s, e)
	}
	persistence := map[string]any{"storageClassName": s.ToClass, "size": s.Size}
	var notes []string
	chart := s.Target.StatefulSet.Labels[LabelChart]
	has, known := chartHasVolumeName(chart)
	if s.VolumeName {
		pv := "<restored PV name>"
		if e != nil && e.j != nil {
			if name, err := e.pvFor(0); err == nil {
				pv = name
			}
		} else if s.Strategy == Reuse {
			pv = s.Target.Ordinals[0].PV.Name
		}
		switch {
		case known && !has:
			notes = append(notes, fmt.Sprintf("chart %s has no persistence.volumeName (added in 8.14.0): the pre-bound claim %s keeps the binding; do not delete it", chart, s.Target.Ordinals[0].Claim))
		default:
			persistence["volumeName"] = pv
			if !known {
				notes = append(notes, "persistence.volumeName needs Grafana chart 8.14.0 or later; on older charts the pre-bound claim keeps the binding")
			}
		}
	} else {
		notes = append(notes, fmt.Sprintf("%d replicas: volumeName cannot be set in the claim template (it would apply to every replica); each ordinal's claim is pre-bound instead, keep those claims", s.replicas()))
	}
	if s.Redeploy == RedeployHelm {
		notes = append(notes, fmt.Sprintf("these values were applied to release %s by rebind's `helm upgrade`", s.Target.Release))
	}
	return map[string]any{"persistence": persistence}, notes
}

// deploymentValues: in Deployment mode the chart renders the claim
// <fullname> itself (templates/pvc.yaml) with persistence.volumeName,
// storageClassName and size; a claim's spec is immutable, so the next
// upgrade must render what rebind created. A claim of the user's
// (persistence.existingClaim) is not rendered: nothing to change.
func deploymentValues(s *Spec, e *env) (map[string]any, []string) {
	o := s.Target.Ordinals[0]
	pv := "<restored PV name>"
	if e != nil && e.j != nil {
		if name, err := e.pvFor(0); err == nil {
			pv = name
		}
	} else if s.Strategy == Reuse && o.PV != nil {
		pv = o.PV.Name
	}
	values := map[string]any{}
	var notes []string
	if helmManaged(o.PVC) {
		values["persistence"] = map[string]any{"volumeName": pv, "storageClassName": s.ToClass, "size": s.Size}
	} else {
		values["persistence"] = map[string]any{"existingClaim": o.Claim}
		notes = append(notes, fmt.Sprintf("claim %s is not Helm's (persistence.existingClaim): it now names PersistentVolume %s; nothing else to change in the values", o.Claim, pv))
	}
	if rollingUpdateRWO(s) {
		values["deploymentStrategy"] = map[string]any{"type": "Recreate"}
	}
	if s.Target.Release != "" && s.name() == s.Target.Release+"-grafana" {
		notes = append(notes, "if Grafana is a subchart of release "+s.Target.Release+" (kube-prometheus-stack), put these values under `grafana:`")
	}
	return values, notes
}

// helmManaged says whether Helm owns a claim (the chart's pvc.yaml).
func helmManaged(c *corev1.PersistentVolumeClaim) bool {
	return c != nil && c.Annotations["meta.helm.sh/release-name"] != ""
}

// rollingUpdateRWO: the chart's default deploymentStrategy (RollingUpdate)
// starts the new pod before the old one stops; with a ReadWriteOnce claim
// on another node it cannot attach, and the upgrade hangs.
func rollingUpdateRWO(s *Spec) bool {
	d := s.Target.Deployment
	if d == nil || d.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType {
		return false
	}
	tpl := s.Target.Template()
	return tpl != nil && slices.Contains(tpl.Spec.AccessModes, corev1.ReadWriteOnce)
}
