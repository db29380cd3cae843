package faults_test

import (
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"helm.sh/helm/v3/pkg/release"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/pkg/helmredeploy"
)

// TestKilledInsideHelmUpgrade kills the binary at the one instant random
// kills rarely hit: inside Helm's upgrade, after Helm recorded the new
// revision as pending-upgrade and before it marked it deployed. Helm
// refuses every later upgrade of a release whose last revision is pending
// ("another operation is in progress"), so a resume that only retries the
// upgrade never converges. The re-run must finish, and a rollback must
// return to the original volume, each leaving the release with its latest
// revision deployed and none pending.
func TestKilledInsideHelmUpgrade(t *testing.T) {
	e2eutil.NeedSandbox(t)
	for _, then := range []string{"re-run", "rollback"} {
		t.Run(then, func(t *testing.T) { killInsideHelmUpgrade(t, then) })
	}
}

func killInsideHelmUpgrade(t *testing.T, then string) {
	st := strategyNamed(t, "helm")
	bin := rebindBinary(t)
	ref := referenceOf(t, bin, st)
	tg := deploy(t, st)
	ctx, ns := tg.Ctx, tg.Rel.Namespace
	stop, err := pvDeletions(ctx, ns)
	if err != nil {
		t.Fatal(err)
	}
	w, err := sb.Kube.CoreV1().Secrets(ns).Watch(ctx, metav1.ListOptions{LabelSelector: "owner=helm,status=pending-upgrade"})
	if err != nil {
		t.Fatal(err)
	}
	var proc atomic.Pointer[os.Process]
	go func() {
		for ev := range w.ResultChan() {
			if ev.Type == watch.Added || ev.Type == watch.Modified {
				if p := proc.Load(); p != nil {
					_ = p.Signal(syscall.SIGKILL)
				}
				return
			}
		}
	}()
	r, err := runBinary(ctx, bin, tg.command(), func(_ int, p *os.Process) { proc.Store(p) })
	w.Stop()
	if err != nil {
		t.Fatal(err)
	}
	if !r.Killed {
		t.Fatalf("the run was not killed inside the upgrade: exit %d\n%s", r.Code, tail(r.Stderr, 20))
	}
	h, err := helmredeploy.New(sb.RESTConfig, ns, nil)
	if err != nil {
		t.Fatal(err)
	}
	rel, err := h.Release(tg.Rel.Name)
	if err != nil {
		t.Fatal(err)
	}
	if rel.Info.Status != release.StatusPendingUpgrade {
		t.Fatalf("the kill landed after Helm finished (revision %d is %s): the case was not exercised", rel.Version, rel.Info.Status)
	}
	t.Logf("killed %s; revision %d left %s", r.Where, rel.Version, rel.Info.Status)

	if then == "rollback" {
		r, err := runBinary(ctx, bin, []string{"rollback", "-n", ns, "--statefulset", tg.workloadName()}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if r.Code != 0 {
			t.Fatalf("rollback: exit %d\n%s", r.Code, tail(r.Stderr, 30))
		}
		if rel, err = h.Release(tg.Rel.Name); err != nil {
			t.Fatal(err)
		}
		if rel.Info.Status != release.StatusDeployed || rel.Version != 3 {
			t.Errorf("after the rollback the release is at revision %d, %s; want 3 (1 the install, 2 rebind's killed upgrade, 3 the rollback to 1), deployed", rel.Version, rel.Info.Status)
		}
		if err := tg.WaitReady(timeouts.Wait); err != nil {
			t.Fatal(err)
		}
		converged, lost, lostPVs, problems := judge(t, tg, ref, "rolled back", stop())
		if !converged {
			t.Fatalf("rollback did not converge: %d dashboards lost, %d PVs lost\n%s", lost, lostPVs, strings.Join(problems, "\n"))
		}
		return
	}
	end := ""
	for attempt := 0; end == "" && attempt < 3; attempt++ {
		r, err := runBinary(ctx, bin, tg.command(), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("re-run %d: exit %d after %s\n%s", attempt+1, r.Code, r.Elapsed, stepLines(r.Stderr))
		switch r.Code {
		case 0:
			end = "finished"
			if !strings.Contains(r.Stdout, "left pending-upgrade; rebind marked it failed") {
				t.Errorf("the report does not say what rebind did to the pending revision:\n%s", r.Stdout)
			}
		case 3:
			end = "rolled back"
		case 4:
			if !strings.Contains(r.Stderr, "re-run the same command to resume") {
				t.Errorf("exit 4 without telling the user to re-run:\n%s", tail(r.Stderr, 20))
			}
		default:
			t.Fatalf("re-run: exit %d\n%s", r.Code, tail(r.Stderr, 30))
		}
	}
	converged, lost, lostPVs, problems := judge(t, tg, ref, end, stop())
	if !converged {
		t.Fatalf("did not converge: %q; %d dashboards lost, %d PVs lost\n%s", end, lost, lostPVs, strings.Join(problems, "\n"))
	}
}
