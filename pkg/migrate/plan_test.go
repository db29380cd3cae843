package migrate

import (
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/rebind-dev/rebind/pkg/discovery"
)

func testSpec(strategy Strategy, replicas int, quiesce, existingSnap bool) *Spec {
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "grafana", Namespace: "ns", Labels: map[string]string{LabelChart: "grafana-8.14.0"}},
		Spec: appsv1.StatefulSetSpec{Replicas: ptr.To(int32(replicas)), VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{
			ObjectMeta: metav1.ObjectMeta{Name: "storage"},
			Spec:       corev1.PersistentVolumeClaimSpec{Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}},
		}}},
	}
	t := &discovery.Target{Namespace: "ns", Release: "grafana", StatefulSet: sts, ClaimTemplate: "storage"}
	for i := 0; i < replicas; i++ {
		name := discovery.ClaimName("storage", "grafana", i)
		t.Ordinals = append(t.Ordinals, discovery.Ordinal{Index: i, Claim: name, Pod: "grafana-" + string(rune('0'+i)),
			PVC: &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: name}},
			PV:  &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pv-" + string(rune('a'+i))}}})
	}
	return &Spec{RunID: "r1", Strategy: strategy, Target: t, ToClass: "premium", Size: "1Gi", Quiesce: quiesce, ExistingSnap: existingSnap, VolumeName: replicas == 1}
}

func keepClaims(s *Spec) *Spec {
	s.KeepClaims = true
	return s
}

func withHelm(s *Spec) *Spec {
	s.Redeploy = RedeployHelm
	return s
}

func stepIDs(s *Spec) []string {
	var ids []string
	for _, st := range buildPlan(&env{spec: s}).Steps {
		ids = append(ids, st.ID())
	}
	return ids
}

// TestPlanOrder pins the data-safety order of every plan shape: Retain
// before any deletion, slow work before the outage unless quiesced,
// the swap only after the pods are gone, verification before the policy
// goes back.
func TestPlanOrder(t *testing.T) {
	tests := []struct {
		name string
		spec *Spec
		want string
	}{
		{"reuse, 1 replica: the claim is kept, the pods never stop", keepClaims(testSpec(Reuse, 1, false, false)),
			"baseline retain/pv-a delete-statefulset redeploy verify reclaim-policy"},
		{"reuse, 2 replicas", keepClaims(testSpec(Reuse, 2, false, false)),
			"baseline retain/pv-a retain/pv-b delete-statefulset redeploy verify reclaim-policy"},
		{"reuse with helm", withHelm(keepClaims(testSpec(Reuse, 1, false, false))),
			"baseline retain/pv-a helm-revision delete-statefulset redeploy verify reclaim-policy"},
		{"reuse from a journal written before claims were kept: the swap it planned", testSpec(Reuse, 1, false, false),
			"baseline retain/pv-a delete-statefulset release-claim/0 stop-pods reserve/0 claim/0 redeploy verify reclaim-policy"},
		{"reuse, 2 replicas, from an older journal", testSpec(Reuse, 2, false, false),
			"baseline retain/pv-a retain/pv-b delete-statefulset release-claim/0 release-claim/1 stop-pods reserve/0 claim/0 reserve/1 claim/1 redeploy verify reclaim-policy"},
		{"restore, crash-consistent: snapshot and restore while serving", testSpec(Restore, 1, false, false),
			"baseline retain/pv-a snapshot/0 restore/0 reserve/0 delete-statefulset release-claim/0 stop-pods claim/0 redeploy verify reclaim-policy"},
		{"restore, quiesced: scale down first", testSpec(Restore, 1, true, false),
			"baseline retain/pv-a scale-down snapshot/0 restore/0 reserve/0 delete-statefulset release-claim/0 claim/0 redeploy verify reclaim-policy"},
		{"helm redeploy: the revision is recorded before the StatefulSet goes, so its undo runs after the original is back", withHelm(testSpec(Restore, 1, false, false)),
			"baseline retain/pv-a snapshot/0 restore/0 reserve/0 helm-revision delete-statefulset release-claim/0 stop-pods claim/0 redeploy verify reclaim-policy"},
		{"restore from an existing snapshot takes none", testSpec(Restore, 1, false, true),
			"baseline retain/pv-a restore/0 reserve/0 delete-statefulset release-claim/0 stop-pods claim/0 redeploy verify reclaim-policy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := strings.Join(stepIDs(tt.spec), " ")
			if got != tt.want {
				t.Fatalf("plan\n got: %s\nwant: %s", got, tt.want)
			}
			ids := stepIDs(tt.spec)
			firstDelete := slices.IndexFunc(ids, func(id string) bool {
				return id == "delete-statefulset" || strings.HasPrefix(id, "release-claim/")
			})
			for i, id := range ids {
				if strings.HasPrefix(id, "retain/") && i > firstDelete {
					t.Errorf("%s comes after a deletion", id)
				}
			}
		})
	}
}

func TestPlanOptionsDropSteps(t *testing.T) {
	s := testSpec(Reuse, 1, false, false)
	s.SkipVerify, s.KeepRetain = true, true
	ids := stepIDs(s)
	for _, unwanted := range []string{"baseline", "verify", "reclaim-policy"} {
		if slices.Contains(ids, unwanted) {
			t.Errorf("%s planned despite the options: %v", unwanted, ids)
		}
	}
}

func TestChartHasVolumeName(t *testing.T) {
	tests := []struct {
		chart     string
		has, know bool
	}{
		{"grafana-8.14.0", true, true},
		{"grafana-8.15.2", true, true},
		{"grafana-9.0.0", true, true},
		{"grafana-8.8.2", false, true},
		{"grafana-7.3.11", false, true},
		{"grafana-8.14.0-rc.1", true, true},
		{"", false, false},
		{"custom", false, false},
	}
	for _, tt := range tests {
		has, known := chartHasVolumeName(tt.chart)
		if has != tt.has || known != tt.know {
			t.Errorf("%q: has=%v known=%v, want %v %v", tt.chart, has, known, tt.has, tt.know)
		}
	}
}

func TestHelmValues(t *testing.T) {
	tests := []struct {
		name       string
		spec       *Spec
		chart      string
		wantVName  bool
		wantNoteOn string
	}{
		{"one replica, new chart: volumeName", testSpec(Reuse, 1, false, false), "grafana-8.14.0", true, ""},
		{"one replica, old chart: pre-bound claim", testSpec(Reuse, 1, false, false), "grafana-8.8.2", false, "has no persistence.volumeName"},
		{"two replicas: never volumeName", testSpec(Reuse, 2, false, false), "grafana-8.14.0", false, "cannot be set in the claim template"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.spec.Target.StatefulSet.Labels[LabelChart] = tt.chart
			values, notes := helmValues(tt.spec, nil)
			p := values["persistence"].(map[string]any)
			_, has := p["volumeName"]
			if has != tt.wantVName {
				t.Errorf("volumeName present=%v, want %v (%v)", has, tt.wantVName, p)
			}
			if p["storageClassName"] != "premium" {
				t.Errorf("storageClassName = %v", p["storageClassName"])
			}
			if tt.wantNoteOn != "" && !strings.Contains(strings.Join(notes, "\n"), tt.wantNoteOn) {
				t.Errorf("notes %v lack %q", notes, tt.wantNoteOn)
			}
		})
	}
}

// TestDescribeWithoutJournal: a plan is printed (plan, --dry-run) before
// any journal exists; describing a step must not need one.
func TestDescribeWithoutJournal(t *testing.T) {
	for _, spec := range []*Spec{testSpec(Reuse, 1, false, false), testSpec(Restore, 2, false, false), testSpec(Restore, 1, true, false),
		deploymentSpec(Restore), deploymentSpec(Reuse)} {
		for _, s := range buildPlan(&env{spec: spec}).Steps {
			if s.Describe() == "" {
				t.Errorf("step %s describes nothing", s.ID())
			}
		}
	}
}

// deploymentSpec is a Deployment-mode release: one claim, named like the
// Deployment.
func deploymentSpec(strategy Strategy) *Spec {
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "grafana", Namespace: "ns"}, Spec: appsv1.DeploymentSpec{Replicas: ptr.To(int32(1))}}
	claim := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "grafana"},
		Spec: corev1.PersistentVolumeClaimSpec{Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}}
	t := &discovery.Target{Namespace: "ns", Release: "grafana", Kind: discovery.KindDeployment, Deployment: d, ClaimTemplate: "storage",
		Ordinals: []discovery.Ordinal{{Index: 0, Claim: "grafana", Pod: "grafana", PVC: claim, PV: &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pv-a"}}}}}
	return &Spec{RunID: "r1", Strategy: strategy, Target: t, ToClass: "premium", Size: "1Gi"}
}

// TestPlanOrderOtherShapes: a Deployment keeps its shape of plan (never
// deleted: its replicas are recorded, it is scaled to 0 and back), and a
// PV taken with --from-pv is retained before anything else.
func TestPlanOrderOtherShapes(t *testing.T) {
	fromPV := testSpec(Reuse, 1, false, false)
	fromPV.FromPVs = []string{"kept-pv"}
	for _, tc := range []struct {
		name string
		spec *Spec
		want string
	}{
		{"Deployment, restore", deploymentSpec(Restore),
			"baseline retain/pv-a snapshot/0 restore/0 reserve/0 deployment-replicas release-claim/0 stop-pods claim/0 redeploy verify reclaim-policy"},
		{"Deployment, reuse", deploymentSpec(Reuse),
			"baseline retain/pv-a deployment-replicas release-claim/0 stop-pods reserve/0 claim/0 redeploy verify reclaim-policy"},
		{"--from-pv", fromPV,
			"retain/kept-pv baseline retain/pv-a delete-statefulset release-claim/0 stop-pods reserve/0 claim/0 redeploy verify reclaim-policy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := strings.Join(stepIDs(tc.spec), " "); got != tc.want {
				t.Fatalf("plan\n got %s\nwant %s", got, tc.want)
			}
		})
	}
}
