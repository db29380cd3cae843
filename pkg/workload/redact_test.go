package workload

import (
	"encoding/json"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestRedactLeavesNoLiteralValue: no literal env value of any container and
// no last-applied-configuration survives; references and everything else
// stay; the input is not changed.
func TestRedactLeavesNoLiteralValue(t *testing.T) {
	ref := &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "grafana"}, Key: "admin-password"}}
	tpl := corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{AnnLastApplied: "planted-3", "checksum/secret": "abc"}},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "init", Env: []corev1.EnvVar{{Name: "A", Value: "planted-1"}}}},
			Containers: []corev1.Container{{Name: "grafana", Env: []corev1.EnvVar{
				{Name: "GF_DATABASE_PASSWORD", Value: "planted-2"}, {Name: "GF_SECURITY_ADMIN_PASSWORD", ValueFrom: ref}, {Name: "EMPTY"},
			}}},
		},
	}
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "grafana", UID: "u1", Annotations: map[string]string{AnnLastApplied: `{"env":"planted-4"}`, "meta.helm.sh/release-name": "grafana"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl", FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:metadata":{"f:annotations":{"f:planted-7":{}}}}`)}}}},
		Spec: appsv1.StatefulSetSpec{Template: tpl, VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{
			ObjectMeta: metav1.ObjectMeta{Name: "storage", Annotations: map[string]string{AnnLastApplied: "planted-5"}}}}},
	}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "grafana", Annotations: map[string]string{AnnLastApplied: "planted-6"}}, Spec: appsv1.DeploymentSpec{Template: *tpl.DeepCopy()}}

	for name, obj := range map[string]any{"StatefulSet": RedactStatefulSet(sts), "Deployment": RedactDeployment(dep)} {
		raw, _ := json.Marshal(obj)
		if strings.Contains(string(raw), "planted-") {
			t.Errorf("%s: a planted value survived:\n%s", name, raw)
		}
	}
	out := RedactStatefulSet(sts)
	c := out.Spec.Template.Spec.Containers[0]
	if c.Env[0].Value != Redacted || c.Env[1].ValueFrom == nil || c.Env[1].ValueFrom.SecretKeyRef.Key != "admin-password" || c.Env[2].Value != "" {
		t.Errorf("env after redaction: %+v", c.Env)
	}
	if out.ManagedFields != nil {
		t.Errorf("managedFields kept")
	}
	if out.Annotations["meta.helm.sh/release-name"] != "grafana" || out.Spec.Template.Annotations["checksum/secret"] != "abc" || out.UID != "u1" {
		t.Errorf("redaction dropped more than secrets: %v %v", out.Annotations, out.Spec.Template.Annotations)
	}
	if !IsRedacted(&out.Spec.Template) || IsRedacted(&sts.Spec.Template) {
		t.Errorf("IsRedacted: redacted %v, original %v", IsRedacted(&out.Spec.Template), IsRedacted(&sts.Spec.Template))
	}
	if sts.Spec.Template.Spec.Containers[0].Env[0].Value != "planted-2" || sts.Annotations[AnnLastApplied] == "" {
		t.Errorf("input changed")
	}
	if RedactStatefulSet(nil) != nil || RedactDeployment(nil) != nil {
		t.Errorf("nil in, non-nil out")
	}
}
