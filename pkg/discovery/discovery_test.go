package discovery

import (
	"context"
	"errors"
	"strings"
	"testing"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapfake "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned/fake"
	appsv1 "k8s.io/api/apps/v1"
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

func TestFindStatefulSetByRelease(t *testing.T) {
	tests := []struct {
		name    string
		objects []runtime.Object
		opts    Options
		want    string // StatefulSet name, or an error substring
		wantErr bool
	}{
		{"release grafana", []runtime.Object{sts("grafana", "grafana", "grafana")}, Options{Namespace: "mon", Release: "grafana", AppName: "grafana"}, "grafana", false},
		{"release mon gives mon-grafana", []runtime.Object{sts("mon-grafana", "mon", "grafana")}, Options{Namespace: "mon", Release: "mon", AppName: "grafana"}, "mon-grafana", false},
		{"unknown release", nil, Options{Namespace: "mon", Release: "nope", AppName: "grafana"}, `no StatefulSet of Helm release "nope"`, true},
		{"a Deployment-mode release says how to switch", []runtime.Object{&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "grafana", Namespace: "mon", Labels: map[string]string{LabelInstance: "grafana"}}}},
			Options{Namespace: "mon", Release: "grafana", AppName: "grafana"}, "persistence.type=statefulset", true},
		{"two StatefulSets need --statefulset", []runtime.Object{sts("a", "r", "grafana"), sts("b", "r", "grafana")}, Options{Namespace: "mon", Release: "r", AppName: "grafana"}, "pass --statefulset", true},
		{"no target at all", nil, Options{Namespace: "mon"}, "pass --release", true},
		{"by name", []runtime.Object{sts("x", "r", "grafana")}, Options{Namespace: "mon", StatefulSet: "x"}, "x", false},
		{"by unknown name", nil, Options{Namespace: "mon", StatefulSet: "x"}, "kubectl get statefulsets -n mon", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &kube.Clients{Kube: fake.NewSimpleClientset(tt.objects...), Snap: snapfake.NewSimpleClientset()}
			got, err := findStatefulSet(context.Background(), c, tt.opts)
			if tt.wantErr {
				var nf *NotFoundError
				if !errors.As(err, &nf) || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("want NotFoundError with %q, got %v", tt.want, err)
				}
				return
			}
			if err != nil || got.Name != tt.want {
				t.Fatalf("got %v, %v; want %s", got, err, tt.want)
			}
		})
	}
}

func TestClaimName(t *testing.T) {
	if got := ClaimName("storage", "mon-grafana", 1); got != "storage-mon-grafana-1" {
		t.Fatal(got)
	}
}
