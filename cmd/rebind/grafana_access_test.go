package main

import (
	"context"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/rebind-dev/rebind/pkg/kube"
)

func TestGrafanaTargets(t *testing.T) {
	tmpl := func(port int32) corev1.PodTemplateSpec {
		return corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{
			{Name: "grafana", Ports: []corev1.ContainerPort{{Name: "grafana", ContainerPort: port}}}}}}
	}
	cs := fake.NewClientset(
		&appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "mon-grafana", Namespace: "mon"}, Spec: appsv1.StatefulSetSpec{Template: tmpl(3001)}},
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "kps-grafana", Namespace: "mon"}, Spec: appsv1.DeploymentSpec{Template: tmpl(3002)}},
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "grafana-2", Namespace: "mon"}, Spec: appsv1.DeploymentSpec{Template: tmpl(3003)}},
	)
	g := &grafanaTargets{clients: &kube.Clients{Kube: cs}, ns: "mon", known: map[string]grafanaTarget{}}
	for _, tc := range []struct {
		key  string
		want grafanaTarget
	}{
		{"mon-grafana-1", grafanaTarget{port: 3001}},
		{"kps-grafana", grafanaTarget{deployment: true, port: 3002}},
		{"grafana-2", grafanaTarget{deployment: true, port: 3003}}, // a Deployment whose name ends in a number
		{"other-0", grafanaTarget{port: 3000}},
		{"gone", grafanaTarget{deployment: true, port: 3000}},
	} {
		if got := g.lookup(context.Background(), tc.key); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.key, got, tc.want)
		}
	}
	// Known answers stay when the workload is gone (the swap deletes a
	// StatefulSet for a moment).
	if err := cs.AppsV1().StatefulSets("mon").Delete(context.Background(), "mon-grafana", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := g.lookup(context.Background(), "mon-grafana-1"); got.port != 3001 {
		t.Errorf("after the StatefulSet went: %+v", got)
	}
}
