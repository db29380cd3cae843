package migrate_test

import (
	"context"
	"errors"
	"maps"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/pkg/kube"
	"github.com/rebind-dev/rebind/pkg/migrate"
	"github.com/rebind-dev/rebind/pkg/volume"
)

// TestReservationMadeMidRunIsNotStolen: while the reuse run waits for the
// old claim to go, another party reserves the PV for a claim of its own
// (claimRef namespace/name, no uid: a pre-binding for a claim that does not
// exist yet). rebind must refuse naming the PV and that claim, and leave
// the PV exactly as the other party set it. A Deployment-mode reuse swaps
// its claim (a StatefulSet's keeps its claims, so it has no such window).
func TestReservationMadeMidRunIsNotStolen(t *testing.T) {
	e2eutil.NeedSandbox(t)
	e := deployGrafana(t, fixtures.Release{Name: "grafana", Replicas: 1, Deployment: true}, 5)
	pvName := e.BoundPV(0).Name
	claim := e.Rel.Claim(0)
	other := &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: "team-b", Name: "someone-else"}
	var theirs *corev1.PersistentVolume
	m := e.Migrator()
	m.AfterStep = func(ctx context.Context, id string) error {
		if id != "stop-pods" {
			return nil
		}
		// The old claim goes with its pod; the PV is then Released with
		// the dead claim's uid, which anyone may replace.
		c, err := sb.Kube.CoreV1().PersistentVolumeClaims(e.Rel.Namespace).Get(ctx, claim, metav1.GetOptions{})
		if err == nil {
			if err := volume.WaitClaimGone(ctx, sb.Kube, e.Rel.Namespace, claim, c.UID, time.Minute); err != nil {
				t.Fatal(err)
			}
		}
		err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
			pv, err := sb.Kube.CoreV1().PersistentVolumes().Get(ctx, pvName, metav1.GetOptions{})
			if err != nil {
				return err
			}
			pv.Spec.ClaimRef = other.DeepCopy()
			theirs, err = sb.Kube.CoreV1().PersistentVolumes().Update(ctx, pv, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return nil
	}
	_, err := m.Run(e.Ctx, e.options(migrate.Reuse), migrate.Apply)
	var held *volume.HeldElsewhereError
	if !errors.As(err, &held) || !strings.Contains(err.Error(), pvName) || !strings.Contains(err.Error(), "team-b/someone-else") {
		t.Fatalf("want a refusal naming PV %s and team-b/someone-else, got %v", pvName, err)
	}
	pv, err := sb.Kube.CoreV1().PersistentVolumes().Get(e.Ctx, pvName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(pv.Spec, theirs.Spec) || !maps.Equal(pv.Annotations, theirs.Annotations) || !maps.Equal(pv.Labels, theirs.Labels) {
		t.Fatalf("PV %s changed after the other party reserved it:\nthen %+v\nnow  %+v", pvName, theirs.Spec, pv.Spec)
	}
	if _, err := sb.Kube.CoreV1().PersistentVolumeClaims(e.Rel.Namespace).Get(e.Ctx, claim, metav1.GetOptions{}); err == nil {
		t.Fatalf("claim %s was created although its PV is reserved for someone else", claim)
	}
	// A rollback must not take it either: it fails closed the same way.
	_, err = e.Migrator().Rollback(e.Ctx, e.Rel.Namespace, e.Rel.FullName())
	if !errors.As(err, &held) {
		t.Fatalf("rollback: want the same refusal, got %v", err)
	}
	if pv, _ = sb.Kube.CoreV1().PersistentVolumes().Get(e.Ctx, pvName, metav1.GetOptions{}); !equality.Semantic.DeepEqual(pv.Spec.ClaimRef, theirs.Spec.ClaimRef) {
		t.Fatalf("rollback took the PV: claimRef %+v", pv.Spec.ClaimRef)
	}
}

// TestRestoreNeverKeepsAStrangersPV: with someone else's Available PV in
// the target class, the real binder binds the restore's staging claim to
// it (kubernetes/kubernetes#101878) instead of provisioning from the
// snapshot. rebind must notice, hand it back exactly as it was, and finish
// the migration on a volume restored from the snapshot.
func TestRestoreNeverKeepsAStrangersPV(t *testing.T) {
	e2eutil.NeedSandbox(t)
	e := deployGrafana(t, fixtures.Release{Name: "grafana", Replicas: 1}, 6)
	before := e2eutil.StrangerPV(t, sb, "stranger-"+e.Rel.Namespace, "premium")
	bound := e2eutil.WatchBound(t, sb, before.Name)
	o := e.options(migrate.Restore)
	o.ToClass = "premium"
	rep, err := e.Migrator().Run(e.Ctx, o, migrate.Apply)
	if err != nil {
		t.Fatal(err)
	}
	e.AssertVerified(rep)
	if pv := e.BoundPV(0); pv.Name == before.Name {
		t.Fatalf("ordinal 0 runs on the stranger's PV")
	}
	if !bound() {
		t.Fatalf("the binder never bound the stranger's PV: the test did not exercise the case")
	}
	if !strings.Contains(strings.Join(rep.Warnings, "\n"), "wrong volume bound") {
		t.Errorf("report warnings do not say what happened: %q", rep.Warnings)
	}
	e2eutil.AssertGivenBack(t, sb, before)
}

// TestKill9DuringOutageResumesAtOnce kills the real binary with SIGKILL
// while Grafana is down (its pods stopped) and re-runs the same command at
// once: the re-run must take over the dead run's Lease without waiting for
// it to expire, finish the migration, and the outage, from the first run
// stopping the pods to the redeploy being Ready, must stay under 2 s.
func TestKill9DuringOutageResumesAtOnce(t *testing.T) {
	e2eutil.NeedSandbox(t)
	bin := e2eutil.BuildRebind(t)
	e := deployGrafana(t, fixtures.Release{Name: "grafana", Replicas: 1}, 5)
	ns, pod := e.Rel.Namespace, e.Rel.Pod(0)
	args := []string{"migrate", "-n", ns, "--release", "grafana", "--strategy", "restore", "--to-storage-class", "premium",
		"--grafana-pod-url", pod + "=" + sb.PodURL(ns, pod), "-o", "json", "--wait-timeout", "1m"}

	cmd := exec.Command(bin, append([]string{"--kubeconfig", sb.Kubeconfig}, args...)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The outage starts when rebind deletes the pod.
	_, err := kube.Until(e.Ctx, 3*time.Minute, "pod "+pod+" to be stopped", kube.PodLW(sb.Kube, ns, pod),
		func(p *corev1.Pod, exists bool) (bool, error) { return !exists || p.DeletionTimestamp != nil, nil },
		func(p *corev1.Pod) string { return "running" })
	if err != nil {
		_ = cmd.Process.Kill()
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Reaped, as a shell or a Job's container runtime would.
	if err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("first run was not killed: %v", err)
	}

	r := runRebind(t, bin, args...)
	if r.Code != 0 {
		t.Fatalf("re-run: exit %d\n%s", r.Code, r.Stderr)
	}
	if !strings.Contains(r.Stderr+r.Stdout, "taking it over") {
		t.Errorf("re-run did not say it took over the dead run's lease:\n%s", r.Stderr)
	}
	rep := r.Report(t)
	down := rep.Downtime
	t.Logf("downtime of the killed-and-resumed run: %s", time.Duration(down))
	if rep.Outcome != "succeeded" || len(rep.Verification) != 1 || !rep.Verification[0].OK {
		t.Fatalf("report: %s", r.Stdout)
	}
	if d := time.Duration(down); d <= 0 || d >= 2*time.Second {
		t.Fatalf("downtime %s, want under 2s", d)
	}
}

// TestClaimRetentionDelete migrates a StatefulSet whose claim retention
// policy would let its controller delete claims (whenDeleted and
// whenScaled Delete), with and without --quiesce (a scale to 0 under
// whenScaled=Delete deletes every claim): rebind sets Retain for the run,
// no PV is lost, and the user's policy is back afterwards, also after a
// rollback.
func TestClaimRetentionDelete(t *testing.T) {
	e2eutil.NeedSandbox(t)
	for _, quiesce := range []bool{false, true} {
		t.Run(map[bool]string{false: "restore", true: "quiesced restore"}[quiesce], func(t *testing.T) {
			e := deployGrafana(t, fixtures.Release{Name: "grafana", Replicas: 1, RetentionDelete: true}, 5)
			oldPV := e.BoundPV(0).Name
			pvs := pvState(e)
			o := e.options(migrate.Restore)
			o.ToClass, o.Quiesce = "premium", quiesce
			rep, err := e.Migrator().Run(e.Ctx, o, migrate.Apply)
			if err != nil {
				t.Fatal(err)
			}
			e.AssertVerified(rep)
			assertNoPVDeleted(t, pvs)
			assertRetentionDelete(t, e)

			if _, err := e.Migrator().Rollback(e.Ctx, e.Rel.Namespace, e.Rel.FullName()); err != nil {
				t.Fatal(err)
			}
			if pv := e.BoundPV(0); pv.Name != oldPV {
				t.Fatalf("after rollback on %s, want %s", pv.Name, oldPV)
			}
			assertNoPVDeleted(t, pvs)
			assertRetentionDelete(t, e)
		})
	}
}

func assertRetentionDelete(t *testing.T, e *grafanaEnv) {
	t.Helper()
	sts, err := sb.Kube.AppsV1().StatefulSets(e.Rel.Namespace).Get(e.Ctx, e.Rel.FullName(), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{WhenDeleted: appsv1.DeletePersistentVolumeClaimRetentionPolicyType, WhenScaled: appsv1.DeletePersistentVolumeClaimRetentionPolicyType}
	if p := sts.Spec.PersistentVolumeClaimRetentionPolicy; p == nil || *p != want {
		t.Fatalf("StatefulSet claim retention policy %+v, want the user's %+v back", p, want)
	}
}
