package discovery

import (
	"context"
	"errors"
	"strings"
	"testing"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapfake "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned/fake"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/rebind-dev/rebind/pkg/kube"
)

func snapClass(name, driver string, isDefault bool) snapv1.VolumeSnapshotClass {
	c := snapv1.VolumeSnapshotClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Driver: driver}
	if isDefault {
		c.Annotations = map[string]string{AnnDefaultSnapClass: "true"}
	}
	return c
}

func TestPickSnapshotClass(t *testing.T) {
	classes := []snapv1.VolumeSnapshotClass{
		snapClass("a-default", "a.csi", true), snapClass("a-other", "a.csi", false),
		snapClass("b-only", "b.csi", false), snapClass("c1", "c.csi", false), snapClass("c2", "c.csi", false),
	}
	tests := []struct {
		name, driver, requested, want string
	}{
		{"the driver's default wins", "a.csi", "", "a-default"},
		{"a requested class of the driver", "a.csi", "a-other", "a-other"},
		{"a requested class of another driver is refused", "a.csi", "b-only", ""},
		{"the only class of a driver", "b.csi", "", "b-only"},
		{"several classes and no default: no guess", "c.csi", "", ""},
		{"a driver without classes", "d.csi", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := pickSnapshotClass(classes, tt.driver, tt.requested); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func sts(name, release, app string) *appsv1.StatefulSet {
	return &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "mon",
		Labels:      map[string]string{LabelInstance: release, LabelName: app},
		Annotations: map[string]string{AnnHelmReleaseName: release}}}
}

func dep(name, release, app, image string) *appsv1.Deployment {
	return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "mon",
		Labels: map[string]string{LabelInstance: release, LabelName: app}, Annotations: map[string]string{AnnHelmReleaseName: release}},
		Spec: appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: image}}}}}}
}

func TestFindWorkloadByRelease(t *testing.T) {
	grafanaImage := "docker.io/grafana/grafana:11.4.1"
	tests := []struct {
		name    string
		objects []runtime.Object
		opts    Options
		want    string // "StatefulSet NAME" or "Deployment NAME", or an error substring
		wantErr bool
	}{
		{"release grafana", []runtime.Object{sts("grafana", "grafana", "grafana")}, Options{Release: "grafana"}, "StatefulSet grafana", false},
		{"release mon gives mon-grafana", []runtime.Object{sts("mon-grafana", "mon", "grafana")}, Options{Release: "mon"}, "StatefulSet mon-grafana", false},
		{"Deployment mode (the chart's default)", []runtime.Object{dep("grafana", "grafana", "grafana", grafanaImage)}, Options{Release: "grafana"}, "Deployment grafana", false},
		{"kube-prometheus-stack subchart among other Deployments", []runtime.Object{
			dep("kps-grafana", "kps", "grafana", grafanaImage), dep("kps-kube-state-metrics", "kps", "kube-state-metrics", "registry.k8s.io/kube-state-metrics:v2"),
			dep("kps-operator", "kps", "kube-prometheus-stack-prometheus-operator", "quay.io/prometheus-operator/prometheus-operator:v0.80")},
			Options{Release: "kps"}, "Deployment kps-grafana", false},
		{"nameOverride: found by image", []runtime.Object{dep("dash", "r", "dashboards", grafanaImage)}, Options{Release: "r"}, "Deployment dash", false},
		{"unknown release", nil, Options{Release: "nope"}, `no Grafana StatefulSet or Deployment of Helm release "nope"`, true},
		{"two StatefulSets need --statefulset", []runtime.Object{sts("a", "r", "grafana"), sts("b", "r", "grafana")}, Options{Release: "r"}, "pass --statefulset or --deployment", true},
		{"a StatefulSet and a Deployment", []runtime.Object{sts("a", "r", "grafana"), dep("b", "r", "grafana", grafanaImage)}, Options{Release: "r"}, "Deployment b, StatefulSet a", true},
		{"no target at all", nil, Options{}, "pass --release", true},
		{"by name", []runtime.Object{sts("x", "r", "grafana")}, Options{StatefulSet: "x"}, "StatefulSet x", false},
		{"Deployment by name", []runtime.Object{dep("x", "r", "grafana", grafanaImage)}, Options{Deployment: "x"}, "Deployment x", false},
		{"by unknown name", nil, Options{StatefulSet: "x"}, "kubectl get statefulsets -n mon", true},
		{"Deployment by unknown name", nil, Options{Deployment: "x"}, "kubectl get deployments -n mon", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &kube.Clients{Kube: fake.NewSimpleClientset(tt.objects...), Snap: snapfake.NewSimpleClientset()}
			o := tt.opts
			o.Namespace, o.AppName = "mon", "grafana"
			s, d, err := findWorkload(context.Background(), c, o)
			if tt.wantErr {
				var nf *NotFoundError
				if !errors.As(err, &nf) || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("want NotFoundError with %q, got %v", tt.want, err)
				}
				return
			}
			got := ""
			switch {
			case s != nil:
				got = "StatefulSet " + s.Name
			case d != nil:
				got = "Deployment " + d.Name
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v; want %s", got, err, tt.want)
			}
			// Workload finds the same, and nothing of its volumes.
			w, err := Workload(context.Background(), c, o)
			if err != nil || w.KindName()+" "+w.Name() != tt.want || w.AdminSecret != w.Name() || len(w.Ordinals) != 0 {
				t.Fatalf("Workload: %+v, %v; want %s", w, err, tt.want)
			}
		})
	}
}

// TestDiscoverDeployment: the claim comes from the pod's data volume, an
// existingClaim included; a Deployment without a claim is refused with the
// fix.
func TestDiscoverDeployment(t *testing.T) {
	withVolume := func(v corev1.Volume) *appsv1.Deployment {
		d := dep("grafana", "grafana", "grafana", "grafana/grafana:11.4.1")
		d.Spec.Template.Spec.Volumes = []corev1.Volume{v}
		return d
	}
	claimVol := func(claim string) corev1.Volume {
		return corev1.Volume{Name: "storage", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}}
	}
	pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "my-claim", Namespace: "mon"}, Spec: corev1.PersistentVolumeClaimSpec{VolumeName: "pv-1"}}
	pv := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pv-1"}, Spec: corev1.PersistentVolumeSpec{StorageClassName: "standard",
		PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: "d.csi", VolumeHandle: "h"}}}}
	for _, tc := range []struct {
		name    string
		dep     *appsv1.Deployment
		wantErr string
	}{
		{"existingClaim", withVolume(claimVol("my-claim")), ""},
		{"emptyDir", withVolume(corev1.Volume{Name: "storage", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}), "emptyDir"},
		{"no data volume", withVolume(corev1.Volume{Name: "config"}), "--claim-template"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &kube.Clients{Kube: fake.NewSimpleClientset(tc.dep, pvc, pv), Snap: snapfake.NewSimpleClientset()}
			tg, err := Discover(context.Background(), c, Options{Namespace: "mon", Release: "grafana"})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want an error with %q, got %v", tc.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			o := tg.Ordinals[0]
			if !tg.IsDeployment() || len(tg.Ordinals) != 1 || o.Claim != "my-claim" || o.PV == nil || o.PV.Name != "pv-1" || !o.CSI || o.Pod != "grafana" {
				t.Fatalf("target %+v ordinal %+v", tg, o)
			}
			if tpl := tg.Template(); tpl == nil || tpl.Spec.VolumeName != "" {
				t.Fatalf("template %+v: the claim's spec without its volume", tpl)
			}
		})
	}
}

func TestClaimName(t *testing.T) {
	if got := ClaimName("storage", "mon-grafana", 1); got != "storage-mon-grafana-1" {
		t.Fatal(got)
	}
}
