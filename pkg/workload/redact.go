package workload

import (
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Redacted replaces a literal env value in a copy of a workload that is
// kept where anyone allowed to read ConfigMaps can read it (the journal).
const Redacted = "(redacted by rebind)"

// AnnLastApplied is kubectl's copy of the whole object as last applied:
// env values included.
const AnnLastApplied = corev1.LastAppliedConfigAnnotation

// RedactStatefulSet returns a copy of the StatefulSet without what may be a
// secret: literal env values of every container and kubectl's
// last-applied-configuration annotation. managedFields go too: they name
// every field set (the annotation among them) and recreating never uses
// them. The copy cannot recreate the StatefulSet: it is for reading, not
// for applying.
func RedactStatefulSet(in *appsv1.StatefulSet) *appsv1.StatefulSet {
	if in == nil {
		return nil
	}
	s := in.DeepCopy()
	DropLastApplied(&s.ObjectMeta)
	s.ManagedFields = nil
	RedactPodTemplate(&s.Spec.Template)
	for i := range s.Spec.VolumeClaimTemplates {
		DropLastApplied(&s.Spec.VolumeClaimTemplates[i].ObjectMeta)
	}
	return s
}

// RedactDeployment is RedactStatefulSet for a Deployment.
func RedactDeployment(in *appsv1.Deployment) *appsv1.Deployment {
	if in == nil {
		return nil
	}
	d := in.DeepCopy()
	DropLastApplied(&d.ObjectMeta)
	d.ManagedFields = nil
	RedactPodTemplate(&d.Spec.Template)
	return d
}

// RedactPodTemplate replaces, in place, the literal value of every env
// variable of every container, init container and ephemeral container
// with Redacted, and drops the template's last-applied annotation.
// References (valueFrom, envFrom) name where a value lives, not the value,
// and stay.
func RedactPodTemplate(t *corev1.PodTemplateSpec) {
	DropLastApplied(&t.ObjectMeta)
	redact := func(env []corev1.EnvVar) {
		for i := range env {
			if env[i].Value != "" {
				env[i].Value = Redacted
			}
		}
	}
	for i := range t.Spec.InitContainers {
		redact(t.Spec.InitContainers[i].Env)
	}
	for i := range t.Spec.Containers {
		redact(t.Spec.Containers[i].Env)
	}
	for i := range t.Spec.EphemeralContainers {
		redact(t.Spec.EphemeralContainers[i].Env)
	}
}

// DropLastApplied removes kubectl's last-applied-configuration annotation.
func DropLastApplied(m *metav1.ObjectMeta) {
	if _, ok := m.Annotations[AnnLastApplied]; !ok {
		return
	}
	a := make(map[string]string, len(m.Annotations)-1)
	for k, v := range m.Annotations {
		if k != AnnLastApplied {
			a[k] = v
		}
	}
	m.Annotations = a
}

// IsRedacted says whether a pod template carries a value Redacted put
// there: such a template must never be applied.
func IsRedacted(t *corev1.PodTemplateSpec) bool {
	check := func(env []corev1.EnvVar) bool {
		for _, e := range env {
			if e.Value == Redacted {
				return true
			}
		}
		return false
	}
	for _, c := range t.Spec.InitContainers {
		if check(c.Env) {
			return true
		}
	}
	for _, c := range t.Spec.Containers {
		if check(c.Env) {
			return true
		}
	}
	for _, c := range t.Spec.EphemeralContainers {
		if check(c.Env) {
			return true
		}
	}
	return false
}
