package drill

import (
	"strings"
	"testing"
	"time"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	"github.com/prometheus/client_golang/prometheus/testutil"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func TestScratchNamespaceName(t *testing.T) {
	for _, tc := range []struct{ sts, want string }{
		{"grafana", "rebind-drill-grafana-abc123"},
		{strings.Repeat("a", 70), "rebind-drill-" + strings.Repeat("a", 43) + "-abc123"},
		{strings.Repeat("a", 42) + "-b", "rebind-drill-" + strings.Repeat("a", 42) + "-abc123"},
	} {
		got := ScratchNamespaceName(tc.sts, "abc123")
		if got != tc.want || len(got) > 63 {
			t.Errorf("%s: got %s (%d)", tc.sts, got, len(got))
		}
	}
}

func TestReferencedObjects(t *testing.T) {
	opt := ptr.To(true)
	spec := &corev1.PodSpec{
		Volumes: []corev1.Volume{
			{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "grafana"}}}},
			{Name: "p", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
				{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "extra"}, Optional: opt}}}}}},
		},
		InitContainers: []corev1.Container{{Name: "init", EnvFrom: []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "env"}, Optional: opt}}}}},
		Containers: []corev1.Container{{Name: "grafana", Env: []corev1.EnvVar{
			{Name: "U", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "grafana"}, Key: "admin-user"}}},
			{Name: "X", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "extra"}, Key: "k"}}},
			{Name: "plain", Value: "v"},
		}}},
		ImagePullSecrets: []corev1.LocalObjectReference{{Name: "regcred"}},
	}
	got := referencedObjects(spec)
	want := []objectRef{{"ConfigMap", "env", true}, {"ConfigMap", "grafana", false}, {"Secret", "extra", false}, {"Secret", "grafana", false}, {"Secret", "regcred", true}}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("%d: got %+v want %+v", i, got[i], want[i])
		}
	}
}

func TestScratchStatefulSet(t *testing.T) {
	prod := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "grafana", Namespace: "monitoring", UID: "u", ResourceVersion: "9",
			Labels:      map[string]string{"app.kubernetes.io/name": "grafana", "app.kubernetes.io/managed-by": "Helm"},
			Annotations: map[string]string{"meta.helm.sh/release-name": "grafana"}},
		Spec: appsv1.StatefulSetSpec{
			Replicas: ptr.To(int32(1)), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/name": "grafana"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app.kubernetes.io/name": "grafana"}},
				Spec: corev1.PodSpec{ServiceAccountName: "grafana"}},
			PersistentVolumeClaimRetentionPolicy: &appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{WhenDeleted: appsv1.DeletePersistentVolumeClaimRetentionPolicyType},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{ObjectMeta: metav1.ObjectMeta{Name: "storage"},
				Spec: corev1.PersistentVolumeClaimSpec{StorageClassName: ptr.To("standard"), VolumeName: "old"}}},
		},
	}
	for _, tc := range []struct {
		name   string
		wantVN string
	}{
		// Production's template names its volume (after a migrate); the
		// copy's never does: its claims exist, bound to the restored
		// volumes, and a claim naming a volume could take someone else's.
		{"no claim template names a volume", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := scratchStatefulSet(prod, "storage", "scratch", "premium", "r1")
			if s.Namespace != "scratch" || s.Name != "grafana" || s.UID != "" || s.ResourceVersion != "" {
				t.Errorf("meta %+v", s.ObjectMeta)
			}
			if s.Labels[LabelManagedBy] != ManagedBy || s.Annotations["meta.helm.sh/release-name"] != "" || s.Annotations[AnnDrillOf] != "monitoring/grafana" {
				t.Errorf("ownership %v %v", s.Labels, s.Annotations)
			}
			if s.Spec.Selector.MatchLabels[LabelRun] != "r1" || s.Spec.Template.Labels[LabelRun] != "r1" {
				t.Errorf("selector %v template %v", s.Spec.Selector.MatchLabels, s.Spec.Template.Labels)
			}
			if s.Spec.Template.Spec.ServiceAccountName != "" || ptr.Deref(s.Spec.Template.Spec.AutomountServiceAccountToken, true) {
				t.Errorf("service account kept")
			}
			tpl := s.Spec.VolumeClaimTemplates[0].Spec
			if *tpl.StorageClassName != "premium" || tpl.VolumeName != tc.wantVN || s.Spec.PersistentVolumeClaimRetentionPolicy != nil {
				t.Errorf("template %+v", tpl)
			}
			if prod.Spec.Selector.MatchLabels[LabelRun] != "" || prod.Labels[LabelRun] != "" {
				t.Fatal("production object modified")
			}
		})
	}
}

func TestPreProvisionedContentIsRetain(t *testing.T) {
	c := preProvisionedContent("c", "scratch", "storage-grafana-0", "drv", "h", "cls", "r", "monitoring/snap")
	if c.Spec.DeletionPolicy != snapv1.VolumeSnapshotContentRetain || *c.Spec.Source.SnapshotHandle != "h" || c.Spec.Source.VolumeHandle != nil ||
		c.Spec.VolumeSnapshotRef.Namespace != "scratch" || c.Spec.VolumeSnapshotRef.Name != "storage-grafana-0" {
		t.Errorf("%+v", c.Spec)
	}
	if c.Labels[LabelRun] != "r" || c.Labels[LabelManagedBy] != ManagedBy || c.Annotations[AnnSourceSnapshot] != "monitoring/snap" {
		t.Errorf("labels %v annotations %v", c.Labels, c.Annotations)
	}
	vs := boundSnapshot("scratch", "storage-grafana-0", "c", "cls", "r")
	if *vs.Spec.Source.VolumeSnapshotContentName != "c" || vs.Spec.Source.PersistentVolumeClaimName != nil {
		t.Errorf("%+v", vs.Spec)
	}
}

func TestNewestReady(t *testing.T) {
	mk := func(name, claim string, ready bool, age time.Duration) snapv1.VolumeSnapshot {
		return snapv1.VolumeSnapshot{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(time.Now().Add(-age))},
			Spec:   snapv1.VolumeSnapshotSpec{Source: snapv1.VolumeSnapshotSource{PersistentVolumeClaimName: ptr.To(claim)}},
			Status: &snapv1.VolumeSnapshotStatus{ReadyToUse: ptr.To(ready), BoundVolumeSnapshotContentName: ptr.To("c-" + name)}}
	}
	list := []snapv1.VolumeSnapshot{mk("old", "a", true, time.Hour), mk("new-not-ready", "a", false, time.Minute), mk("mid", "a", true, 10*time.Minute), mk("other", "b", true, 0)}
	for _, tc := range []struct{ claim, want string }{{"a", "mid"}, {"b", "other"}, {"c", ""}} {
		got := newestReady(list, tc.claim)
		if (got == nil && tc.want != "") || (got != nil && got.Name != tc.want) {
			t.Errorf("%s: got %v", tc.claim, got)
		}
	}
}

func TestMetricsKeepLastSuccess(t *testing.T) {
	at := time.Unix(1700000000, 0)
	results := []*Result{
		{Namespace: "a", StatefulSet: "grafana", Outcome: Passed, Checked: 10, StartedAt: at.Add(-2 * time.Second), FinishedAt: at},
		{Namespace: "b", StatefulSet: "grafana", Outcome: Failed, Checked: 10, Lost: 3, StartedAt: at, FinishedAt: at},
		{Namespace: "c", StatefulSet: "grafana", Outcome: Errored, StartedAt: at, FinishedAt: at},
	}
	prev := func(ns, _ string) (float64, bool) { return 1600000000, ns == "b" }
	m := NewMetrics()
	for _, r := range results {
		m.Observe(r, prev)
	}
	// Parsed and compared by the Prometheus library, series by series.
	want := `
# HELP rebind_drill_success 1 if the last restore drill of the StatefulSet passed, else 0.
# TYPE rebind_drill_success gauge
rebind_drill_success{namespace="a",statefulset="grafana"} 1
rebind_drill_success{namespace="b",statefulset="grafana"} 0
rebind_drill_success{namespace="c",statefulset="grafana"} 0
# HELP rebind_drill_duration_seconds Duration of the last restore drill in seconds.
# TYPE rebind_drill_duration_seconds gauge
rebind_drill_duration_seconds{namespace="a",statefulset="grafana"} 2
rebind_drill_duration_seconds{namespace="b",statefulset="grafana"} 0
rebind_drill_duration_seconds{namespace="c",statefulset="grafana"} 0
# HELP rebind_drill_dashboards_lost Dashboards missing or changed in the last restore drill's restored copy.
# TYPE rebind_drill_dashboards_lost gauge
rebind_drill_dashboards_lost{namespace="a",statefulset="grafana"} 0
rebind_drill_dashboards_lost{namespace="b",statefulset="grafana"} 3
rebind_drill_dashboards_lost{namespace="c",statefulset="grafana"} 0
# HELP rebind_drill_last_success_timestamp_seconds Unix time of the last restore drill that passed.
# TYPE rebind_drill_last_success_timestamp_seconds gauge
rebind_drill_last_success_timestamp_seconds{namespace="a",statefulset="grafana"} 1.7e+09
rebind_drill_last_success_timestamp_seconds{namespace="b",statefulset="grafana"} 1.6e+09
`
	if err := testutil.GatherAndCompare(m.Gatherer(), strings.NewReader(want),
		MetricSuccess, MetricDuration, MetricLost, MetricLastSuccess); err != nil {
		t.Fatal(err)
	}

	// A later round of a long-running drill: b fails again with no file to
	// ask, and keeps the last success it had; a fails and keeps its own.
	m.Observe(&Result{Namespace: "a", StatefulSet: "grafana", Outcome: Failed, StartedAt: at, FinishedAt: at.Add(time.Hour)}, nil)
	m.Observe(&Result{Namespace: "b", StatefulSet: "grafana", Outcome: Failed, StartedAt: at, FinishedAt: at.Add(time.Hour)}, nil)
	for _, tc := range []struct {
		ns   string
		want float64
	}{{"a", 1700000000}, {"b", 1600000000}} {
		if got := testutil.ToFloat64(m.lastOK.WithLabelValues(tc.ns, "grafana")); got != tc.want {
			t.Errorf("%s: last success %v, want %v", tc.ns, got, tc.want)
		}
	}
}

func TestSummary(t *testing.T) {
	for _, tc := range []struct {
		r    Result
		want []string
	}{
		{Result{Namespace: "m", StatefulSet: "g", Outcome: Passed, Checked: 4}, []string{"drill of m/g PASSED", "4 dashboards checked, 0 lost"}},
		{Result{Namespace: "m", StatefulSet: "g", Outcome: Errored, Error: "boom\nmore", Leftovers: []string{"x"}}, []string{"ERROR", ": boom;", "1 object(s) left behind"}},
	} {
		got := tc.r.Summary()
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("%q lacks %q", got, w)
			}
		}
	}
}
