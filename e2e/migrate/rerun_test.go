package migrate_test

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/pkg/migrate"
	"github.com/rebind-dev/rebind/pkg/report"
	"github.com/rebind-dev/rebind/pkg/volume"
	"github.com/rebind-dev/rebind/pkg/workload"
)

// TestIdenticalRerunAfterCompletion: the command of a run killed at its
// very end (journal Completed, exit code lost) is run again. It reports
// the completed run and changes nothing, instead of a second snapshot and
// volume; --again migrates anew.
func TestIdenticalRerunAfterCompletion(t *testing.T) {
	e2eutil.NeedSandbox(t)
	e := deployGrafana(t, fixtures.Release{Name: "grafana", Replicas: 1}, 4)
	o := e.options(migrate.Restore)
	o.ToClass = "premium"
	first, err := e.Migrator().Run(e.Ctx, o, migrate.Apply)
	if err != nil || first.Outcome != report.Succeeded {
		t.Fatalf("first run: %v, %+v", err, first)
	}
	before := e.ClusterState()
	again, err := e.Migrator().Run(e.Ctx, o, migrate.Apply)
	if err != nil || again.Outcome != report.Succeeded || again.RunID != first.RunID || len(again.Notes) != 1 || !strings.Contains(again.Notes[0], "nothing to do; pass --again") {
		t.Fatalf("identical re-run: %v, run %s (first %s), notes %q", err, again.RunID, first.RunID, again.Notes)
	}
	if after := e.ClusterState(); after != before {
		t.Fatalf("the identical re-run changed the cluster:\n%s\n---\n%s", before, after)
	}

	o.Again = true
	third, err := e.Migrator().Run(e.Ctx, o, migrate.Apply)
	if err != nil || third.Outcome != report.Succeeded || third.RunID == first.RunID || third.VolumesAfter[0].PV == first.VolumesAfter[0].PV {
		t.Fatalf("--again: %v, run %s (first %s), volume %v (first %v)", err, third.RunID, first.RunID, third.VolumesAfter, first.VolumesAfter)
	}
}

// TestIdenticalRerunAfterTheClusterChanged: between a completed run and its
// identical re-run, someone replaced the claim by hand (scaled down,
// deleted it, scaled up: the StatefulSet made a new claim of the same name,
// which waits Pending for the volume its template names, still reserved for
// the deleted claim). The journal still says Completed, but "nothing to
// do" would leave Grafana down: the re-run refuses, naming the claim, the
// volume and the run, and changes nothing.
func TestIdenticalRerunAfterTheClusterChanged(t *testing.T) {
	e2eutil.NeedSandbox(t)
	e := deployGrafana(t, fixtures.Release{Name: "grafana", Replicas: 1}, 3)
	ns := e.Rel.Namespace
	o := e.options(migrate.Restore)
	o.ToClass = "premium"
	first, err := e.Migrator().Run(e.Ctx, o, migrate.Apply)
	if err != nil || first.Outcome != report.Succeeded {
		t.Fatalf("first run: %v, %+v", err, first)
	}
	restored := e.BoundPV(0).Name
	if _, err := volume.SetReclaimPolicy(e.Ctx, sb.Kube, restored, corev1.PersistentVolumeReclaimRetain, false); err != nil {
		t.Fatal(err)
	}
	if err := workload.Scale(e.Ctx, sb.Kube, ns, e.Rel.FullName(), 0); err != nil {
		t.Fatal(err)
	}
	if err := workload.WaitPodGone(e.Ctx, sb.Kube, ns, e.Rel.Pod(0), time.Minute); err != nil {
		t.Fatal(err)
	}
	c := deleteClaim(t, e, e.Rel.Claim(0))
	if err := workload.Scale(e.Ctx, sb.Kube, ns, e.Rel.FullName(), 1); err != nil {
		t.Fatal(err)
	}
	// Settled: the new claim and pod exist and the StatefulSet's status
	// counts the pod (its controller writes nothing more while it waits).
	err = wait.PollUntilContextTimeout(e.Ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		n, err := sb.Kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, c.Name, metav1.GetOptions{})
		if err != nil || n.UID == c.UID {
			return false, nil
		}
		if _, err := sb.Kube.CoreV1().Pods(ns).Get(ctx, e.Rel.Pod(0), metav1.GetOptions{}); err != nil {
			return false, nil
		}
		sts, err := sb.Kube.AppsV1().StatefulSets(ns).Get(ctx, e.Rel.FullName(), metav1.GetOptions{})
		return err == nil && sts.Status.ObservedGeneration == sts.Generation && sts.Status.Replicas == 1 && sts.Status.CurrentReplicas == 1, nil
	})
	if err != nil {
		t.Fatalf("the StatefulSet made no new claim %s and pod: %v", c.Name, err)
	}

	before := e.ClusterState()
	again, err := e.Migrator().Run(e.Ctx, o, migrate.Apply)
	if err == nil || again.Outcome != report.Failed {
		t.Fatalf("identical re-run after a hand change: %v, %+v", err, again)
	}
	for _, want := range []string{e.Rel.Claim(0), "Pending", restored, first.RunID, "--again"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal does not name %q: %v", want, err)
		}
	}
	if after := e.ClusterState(); after != before {
		t.Fatalf("the refused re-run changed the cluster:\n%s\n---\n%s", before, after)
	}
}
