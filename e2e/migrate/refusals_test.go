package migrate_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/pkg/kube"
	"github.com/rebind-dev/rebind/pkg/migrate"
	"github.com/rebind-dev/rebind/pkg/preflight"
)

// refusedUnchanged runs o, wants a preflight refusal naming every want,
// and the cluster as it was.
func refusedUnchanged(t *testing.T, e *grafanaEnv, o migrate.Options, want ...string) {
	t.Helper()
	before := e.ClusterState()
	_, err := e.Migrator().Run(e.Ctx, o, migrate.Apply)
	var pf *preflight.Error
	if !errors.As(err, &pf) {
		t.Fatalf("want a preflight refusal, got %v", err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q:\n%v", w, err)
		}
	}
	if after := e.ClusterState(); after != before {
		t.Errorf("the refused run changed the cluster:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestOptionRefusalsChangeNothing: every refusal of the options (each
// also unit-tested in pkg/migrate) happens against a live release before
// anything changes, names the flag and the fix. The last one is a resume
// with other options than the unfinished run recorded.
func TestOptionRefusalsChangeNothing(t *testing.T) {
	e2eutil.NeedSandbox(t)
	e := deployGrafana(t, fixtures.Release{Name: "grafana", Replicas: 2}, 2)
	for _, tc := range []struct {
		name   string
		change func(o *migrate.Options)
		want   []string
	}{
		{"malformed --size", func(o *migrate.Options) { o.Strategy, o.Size = migrate.Restore, "10GB" }, []string{"--size", `"10GB" is not a Kubernetes quantity`, "such as 10Gi"}},
		{"zero --size", func(o *migrate.Options) { o.Size = "0" }, []string{"--size", `"0" is not a positive size`}},
		{"negative --size", func(o *migrate.Options) { o.Strategy, o.Size = migrate.Restore, "-1Gi" }, []string{"--size", `"-1Gi" is not a positive size`}},
		{"unknown --strategy", func(o *migrate.Options) { o.Strategy = "copy" }, []string{"--strategy", `unknown strategy "copy"`, "use reuse, restore or velero-restore"}},
		{"--from-snapshot without {ordinal}", func(o *migrate.Options) {
			o.Strategy, o.FromSnapshot, o.SkipVerify = migrate.Restore, "nightly", true
		}, []string{"--from-snapshot", "names one snapshot for 2 replicas", "put {ordinal} in the name"}},
		{"--from-snapshot without --baseline", func(o *migrate.Options) {
			o.Strategy, o.FromSnapshot = migrate.Restore, "nightly-{ordinal}"
		}, []string{"--from-snapshot", "needs a baseline", "--baseline FILE"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := e.options(migrate.Reuse)
			tc.change(&o)
			refusedUnchanged(t, e, o, tc.want...)
		})
	}

	t.Run("resume with other options", func(t *testing.T) {
		o := e.options(migrate.Restore)
		o.ToClass = "premium"
		m := e.Migrator()
		stopped := errors.New("stopped by test")
		m.AfterStep = func(context.Context, string) error { return stopped }
		if _, err := m.Run(e.Ctx, o, migrate.Apply); !errors.Is(err, stopped) {
			t.Fatalf("want the stop, got %v", err)
		}
		changed := o
		changed.Size, changed.ToClass = "5Gi", "standard"
		refusedUnchanged(t, e, changed, "ConfigMap "+e.Rel.Namespace+"/rebind-journal-grafana", "was started with other options",
			"--size 5Gi (recorded", "--to-storage-class standard (recorded premium)", "re-run it with the recorded options", "rebind rollback -n "+e.Rel.Namespace)
		// The recorded options still resume it.
		rep, err := e.Migrator().Run(e.Ctx, o, migrate.Apply)
		if err != nil {
			t.Fatal(err)
		}
		e.AssertVerified(rep)
	})
}

// TestZeroReplicasRefused: a workload scaled to 0 gives no ordinal to
// move; refused before anything changes, naming the scale command.
func TestZeroReplicasRefused(t *testing.T) {
	e2eutil.NeedSandbox(t)
	e := deployGrafana(t, fixtures.Release{Name: "grafana", Replicas: 1}, 2)
	ns, name := e.Rel.Namespace, e.Rel.FullName()
	if _, err := sb.Kube.AppsV1().StatefulSets(ns).UpdateScale(e.Ctx, name, &autoscalingv1.Scale{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: autoscalingv1.ScaleSpec{Replicas: 0}}, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Settled: the controller writes no more status, so the fingerprint
	// sees only rebind's doing.
	if _, err := kube.Until(e.Ctx, time.Minute, "StatefulSet scaled to 0", kube.StatefulSetLW(sb.Kube, ns, name),
		func(s *appsv1.StatefulSet, exists bool) (bool, error) {
			return exists && s.Status.ObservedGeneration == s.Generation && s.Status.Replicas == 0 && s.Status.CurrentReplicas == 0, nil
		}, nil); err != nil {
		t.Fatal(err)
	}
	refusedUnchanged(t, e, e.options(migrate.Reuse), "StatefulSet "+ns+"/"+name, "has 0 replicas", "kubectl scale statefulset "+name+" -n "+ns+" --replicas=1")
}
