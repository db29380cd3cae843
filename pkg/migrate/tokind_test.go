package migrate

import (
	"fmt"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"

	"github.com/rebind-dev/rebind/pkg/discovery"
)

// switchFromDeployment is a Deployment-mode target: claim grafana on pv-a, Helm's
// (existing false) or the user's existingClaim.
func switchFromDeployment(strategy Strategy, existingClaim bool) *Spec {
	claim := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "grafana", Annotations: map[string]string{"meta.helm.sh/release-name": "grafana"}},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}}}
	name := "grafana"
	if existingClaim {
		name, claim.Name, claim.Annotations = "grafana-data", "grafana-data", nil
	}
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "grafana", Namespace: "ns"}, Spec: appsv1.DeploymentSpec{Replicas: ptr.To(int32(1))}}
	t := &discovery.Target{Namespace: "ns", Release: "grafana", Kind: discovery.KindDeployment, Deployment: d, ClaimTemplate: "storage",
		Ordinals: []discovery.Ordinal{{Claim: name, Pod: "grafana", PVC: claim, PV: &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pv-a"}}}}}
	return &Spec{RunID: "r1", Strategy: strategy, Target: t, ToClass: "premium", Size: "1Gi", VolumeName: true, Redeploy: RedeployHelm, ToKind: ToStatefulSet}
}

func switching(s *Spec, kind string) *Spec {
	s.Redeploy, s.ToKind = RedeployHelm, kind
	return s
}

// TestSwitchPlanOrder pins the order a --to-kind rollback depends on: the
// old workload's step before the revision is recorded (its undo waits for
// the workload Helm renders again), the revision before the old claim is
// deleted (the Helm revert runs once the old claim has its volume back),
// the new claim before the upgrade, verification on the new kind.
func TestSwitchPlanOrder(t *testing.T) {
	for _, tt := range []struct {
		name string
		spec *Spec
		want string
	}{
		{"deployment to statefulset, reuse", switchFromDeployment(Reuse, false),
			"baseline retain/pv-a deployment-replicas helm-revision release-claim/0 stop-pods reserve/0 claim/0 redeploy verify reclaim-policy"},
		{"deployment to statefulset, restore: copy reserved while serving", switchFromDeployment(Restore, false),
			"baseline retain/pv-a snapshot/0 restore/0 reserve/0 deployment-replicas helm-revision release-claim/0 stop-pods claim/0 redeploy verify reclaim-policy"},
		{"statefulset to deployment, reuse", switching(testSpec(Reuse, 1, false, false), ToDeployment),
			"baseline retain/pv-a delete-statefulset helm-revision release-claim/0 stop-pods reserve/0 claim/0 redeploy verify reclaim-policy"},
		{"statefulset to deployment, restore from a snapshot of the user's", switching(testSpec(Restore, 1, false, true), ToDeployment),
			"baseline retain/pv-a restore/0 reserve/0 delete-statefulset helm-revision release-claim/0 stop-pods claim/0 redeploy verify reclaim-policy"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := strings.Join(stepIDs(tt.spec), " "); got != tt.want {
				t.Fatalf("plan\n got: %s\nwant: %s", got, tt.want)
			}
		})
	}
}

// TestSwitchNames: the claim and the Grafana the new kind has, as the
// chart names them.
func TestSwitchNames(t *testing.T) {
	for _, tt := range []struct {
		name              string
		spec              *Spec
		claim, pod, chart string
		claims            []string
	}{
		{"to statefulset", switchFromDeployment(Reuse, false), "storage-grafana-0", "grafana-0", "statefulset", []string{"storage-grafana-0", "grafana"}},
		{"to deployment", switching(testSpec(Reuse, 1, false, false), ToDeployment), "grafana", "grafana", "pvc", []string{"grafana", "storage-grafana-0"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.spec
			if s.newClaim(0) != tt.claim || s.newPod(0) != tt.pod || chartType(s.ToKind) != tt.chart || strings.Join(s.claimsOf(0), ",") != strings.Join(tt.claims, ",") {
				t.Errorf("claim %s pod %s type %s claims %v; want %s %s %s %v", s.newClaim(0), s.newPod(0), chartType(s.ToKind), s.claimsOf(0), tt.claim, tt.pod, tt.chart, tt.claims)
			}
		})
	}
}

func TestNormalizeKind(t *testing.T) {
	for in, want := range map[string]string{"statefulset": ToStatefulSet, "StatefulSet": ToStatefulSet, "sts": ToStatefulSet,
		"deployment": ToDeployment, "Deployment": ToDeployment, "pvc": ToDeployment, "": "", "daemonset": ""} {
		if got := normalizeKind(in); got != want {
			t.Errorf("normalizeKind(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestSwitchValues: the values rebind's upgrade applies.
func TestSwitchValues(t *testing.T) {
	for _, tt := range []struct {
		name string
		spec *Spec
		want string
	}{
		{"to statefulset", switchFromDeployment(Reuse, false),
			"map[persistence:map[size:1Gi storageClassName:premium type:statefulset volumeName:pv-a]]"},
		{"to statefulset from the user's existingClaim: the chart renders no StatefulSet while it is set", switchFromDeployment(Reuse, true),
			"map[persistence:map[existingClaim: size:1Gi storageClassName:premium type:statefulset volumeName:pv-a]]"},
		{"to deployment: Recreate with a ReadWriteOnce claim", func() *Spec {
			s := switching(testSpec(Reuse, 1, false, false), ToDeployment)
			s.Target.StatefulSet.Spec.VolumeClaimTemplates[0].Spec.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
			return s
		}(), "map[deploymentStrategy:map[type:Recreate] persistence:map[size:1Gi storageClassName:premium type:pvc volumeName:pv-a]]"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			v, notes := helmValues(tt.spec, &env{spec: tt.spec})
			if got := fmt.Sprint(v); got != tt.want {
				t.Errorf("values\n got %s\nwant %s", got, tt.want)
			}
			if len(notes) == 0 || !strings.Contains(notes[0], tt.spec.newClaim(0)) {
				t.Errorf("notes %q do not name the new claim", notes)
			}
		})
	}
}

// TestRendersSwitch: what the preflight accepts of a rendered release.
func TestRendersSwitch(t *testing.T) {
	obj := func(kind, name string, spec map[string]any) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{"kind": kind, "metadata": map[string]any{"name": name}, "spec": spec}}
	}
	sts := func(name, tpl string) *unstructured.Unstructured {
		return obj("StatefulSet", name, map[string]any{"volumeClaimTemplates": []any{map[string]any{"metadata": map[string]any{"name": tpl}}}})
	}
	dep := func(name, claim string) *unstructured.Unstructured {
		return obj("Deployment", name, map[string]any{"template": map[string]any{"spec": map[string]any{"volumes": []any{
			map[string]any{"name": "storage", "persistentVolumeClaim": map[string]any{"claimName": claim}}}}}})
	}
	toSTS := switchFromDeployment(Reuse, false)
	toDep := switching(testSpec(Reuse, 1, false, false), ToDeployment)
	for _, tt := range []struct {
		name string
		spec *Spec
		objs []*unstructured.Unstructured
		want string // "" or a part of the refusal
	}{
		{"statefulset as the chart renders it", toSTS, []*unstructured.Unstructured{sts("grafana", "storage")}, ""},
		{"another claim template", toSTS, []*unstructured.Unstructured{sts("grafana", "data")}, `without claim template "storage"`},
		{"a subchart renders nothing new (values not under grafana:)", toSTS, []*unstructured.Unstructured{dep("grafana", "grafana")}, "renders no StatefulSet named grafana"},
		{"old and new kind both", toSTS, []*unstructured.Unstructured{dep("grafana", "grafana"), sts("grafana", "storage")}, "still renders Deployment grafana"},
		{"deployment as the chart renders it", toDep, []*unstructured.Unstructured{dep("grafana", "grafana")}, ""},
		{"two replicas of the new kind", toSTS, []*unstructured.Unstructured{func() *unstructured.Unstructured {
			o := sts("grafana", "storage")
			o.Object["spec"].(map[string]any)["replicas"] = int64(2)
			return o
		}()}, "with 2 replicas"},
		{"deployment on another claim", toDep, []*unstructured.Unstructured{dep("grafana", "other")}, `mounts claim "other", not "grafana"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := rendersSwitch(tt.objs, tt.spec)
			if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
				t.Errorf("rendersSwitch = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestSameRequestToKind: a switch resumes only with the same --to-kind
// (in any of the chart's spellings), and a migration within one kind is
// not resumed as a switch.
func TestSameRequestToKind(t *testing.T) {
	for _, tt := range []struct {
		name     string
		recorded string
		asked    string
		refused  bool
	}{
		{"same kind", ToStatefulSet, "statefulset", false},
		{"the chart's other spelling", ToStatefulSet, "StatefulSet", false},
		{"resumed without --to-kind", ToStatefulSet, "", true},
		{"the other kind", ToStatefulSet, "deployment", true},
		{"a plain run asked to switch", "", "statefulset", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := switchFromDeployment(Reuse, false)
			s.ToKind = tt.recorded
			o := Options{Strategy: Reuse, Redeploy: RedeployHelm, ToKind: tt.asked}
			err := sameRequest(s, o)
			if (err != nil) != tt.refused || (err != nil && !strings.Contains(err.Error(), "--to-kind")) {
				t.Errorf("sameRequest = %v, refused want %v", err, tt.refused)
			}
		})
	}
}
