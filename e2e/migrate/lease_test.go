package migrate_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/pkg/journal"
	"github.com/rebind-dev/rebind/pkg/migrate"
	"github.com/rebind-dev/rebind/pkg/plan"
)

// skewedClock is a real clock that reads off by a fixed offset, as the
// clock of a machine without working time sync would.
type skewedClock struct {
	clock.RealClock
	off time.Duration
}

func (c skewedClock) Now() time.Time                  { return time.Now().Add(c.off) }
func (c skewedClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

// testLease is short so that the waits below stay short; the flag's
// minimum.
const testLease = journal.MinLeaseDuration

// TestLeaseClockSkew: a holder whose clock is 2 minutes off, renewing its
// Lease on the real API server from another goroutine, keeps a migration
// out while it renews, and once it stops renewing (killed on another
// machine: no release, no process this machine could check) blocks the
// re-run for the lease duration, not for the skew.
func TestLeaseClockSkew(t *testing.T) {
	e2eutil.NeedSandbox(t)
	for _, skew := range []time.Duration{-2 * time.Minute, 2 * time.Minute} {
		t.Run(fmt.Sprintf("holder clock %s", skew), func(t *testing.T) {
			e := deployGrafana(t, fixtures.Release{Name: "grafana", Replicas: 1}, 4)
			ns, name := e.Rel.Namespace, journal.LeaseName(e.Rel.FullName())
			holder, err := journal.TakeLease(e.Ctx, sb.Kube, journal.LeaseOptions{Namespace: ns, Name: name, Holder: "skewed-run",
				Duration: testLease, Clock: skewedClock{off: skew}})
			if err != nil {
				t.Fatal(err)
			}
			// Another machine: its process annotation cannot be checked here.
			lease := updateLease(t, e.Ctx, ns, name, func(l *coordinationv1.Lease) {
				l.Annotations[journal.AnnHolderProcess] = `{"host":"elsewhere","boot":"b","pid":1,"start":1}`
			})
			if renewed := lease.Spec.RenewTime.Time; renewed.Sub(time.Now()).Abs() < time.Minute {
				t.Fatalf("the holder's RenewTime %s is not skewed", renewed)
			}

			before := e.ClusterState()
			m := e.Migrator()
			m.LeaseDuration = testLease
			out := &stampWriter{}
			m.Out = out
			_, err = m.Run(e.Ctx, e.options(migrate.Reuse), migrate.Apply)
			refused := time.Now()
			var locked *journal.LockedError
			if !errors.As(err, &locked) || locked.Holder != "skewed-run" {
				t.Fatalf("a second run got in while the holder renews: %v", err)
			}
			watched := refused.Sub(out.at(t, "is held by skewed-run"))
			if watched >= testLease {
				t.Errorf("refused after watching %s; the holder renews every %s", watched, journal.TimingFor(testLease).RetryPeriod)
			}
			if holder.Err() != nil {
				t.Fatalf("the holder lost its lease to the refused run: %v", holder.Err())
			}
			if after := e.ClusterState(); after != before {
				t.Errorf("the refused run changed the cluster:\nbefore:\n%s\nafter:\n%s", before, after)
			}

			holder.Abandon()
			stopped := time.Now()
			out = &stampWriter{}
			m.Out = out
			rep, err := m.Run(e.Ctx, e.options(migrate.Reuse), migrate.Apply)
			if err != nil {
				t.Fatal(err)
			}
			e.AssertVerified(rep)
			waited := out.at(t, "Migrating ").Sub(out.at(t, "is held by skewed-run"))
			total := out.at(t, "Migrating ").Sub(stopped)
			t.Logf("holder clock %s: refused after watching %s while it renewed; re-run watched %s before taking over (%s after the last renewal, preflight included; lease %s)",
				skew, watched.Round(time.Millisecond), waited.Round(time.Millisecond), total.Round(time.Millisecond), testLease)
			if waited < testLease-100*time.Millisecond || waited > testLease+1500*time.Millisecond {
				t.Errorf("re-run watched %s before taking the lease over; want the lease duration %s", waited, testLease)
			}
		})
	}
}

// stampWriter keeps the run's progress lines with the time each arrived.
type stampWriter struct {
	mu    sync.Mutex
	lines []string
	times []time.Time
}

func (w *stampWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.lines = append(w.lines, string(p))
	w.times = append(w.times, time.Now())
	return len(p), nil
}

// at is when the first line containing s was written.
func (w *stampWriter) at(t *testing.T, s string) time.Time {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, l := range w.lines {
		if strings.Contains(l, s) {
			return w.times[i]
		}
	}
	t.Fatalf("the run never printed %q:\n%s", s, strings.Join(w.lines, ""))
	return time.Time{}
}

// TestLeaseLostStopsBeforeNextStep: another run takes the Lease while a
// migration runs (its renewal then meets the other holder). The migration
// starts no further step, writes nothing more to its journal and says so;
// once the other run is gone, the same command resumes and finishes.
func TestLeaseLostStopsBeforeNextStep(t *testing.T) {
	e2eutil.NeedSandbox(t)
	e := deployGrafana(t, fixtures.Release{Name: "grafana", Replicas: 1}, 6)
	base := e.Inventory(0)
	pvs := pvState(e)
	ns, name := e.Rel.Namespace, journal.LeaseName(e.Rel.FullName())
	o := e.options(migrate.Restore)
	o.ToClass = "premium"
	const stealAfter = "claim/0"
	m := e.Migrator()
	m.LeaseDuration = testLease
	m.AfterStep = func(ctx context.Context, id string) error {
		if id != stealAfter {
			return nil
		}
		// A run that wrongly believed the lease free writes over it.
		updateLease(t, ctx, ns, name, func(l *coordinationv1.Lease) {
			l.Spec.HolderIdentity = ptr.To("thief")
			now := metav1.NewMicroTime(time.Now())
			l.Spec.RenewTime = &now
		})
		// The next renewal finds the thief and cancels the run's context.
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(testLease):
			return errors.New("the run did not notice that it lost its lease")
		}
	}
	_, err := m.Run(e.Ctx, o, migrate.Apply)
	var lost *journal.LostError
	var half *migrate.FailedError
	if !errors.As(err, &lost) || lost.Holder != "thief" || !errors.As(err, &half) {
		t.Fatalf("want a FailedError for the lost lease, got %v", err)
	}
	for _, want := range []string{"lost Lease " + ns + "/" + name, "run thief holds it", "stopped before the next change", "re-run the same command to resume"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}

	j, err := journal.Load(e.Ctx, sb.Kube, ns, e.Rel.FullName())
	if err != nil || j == nil {
		t.Fatalf("journal: %v", err)
	}
	if ph := j.Record().Phase; ph != journal.Running {
		t.Errorf("journal phase %s: a run without the lease wrote it", ph)
	}
	steps := planSteps(t, e, o)
	after := false
	for _, id := range steps {
		st := j.Step(id).Status
		switch {
		case after && st != plan.Pending:
			t.Errorf("step %s is %q: a step ran after the lease was lost", id, st)
		case id == stealAfter && st != plan.Done:
			// AfterStep runs once the step's Done record is written.
			t.Errorf("step %s is %q, want Done", id, st)
		}
		if id == stealAfter {
			after = true
		}
	}
	assertNoPVDeleted(t, pvs)

	// The thief is gone (released); the same command resumes.
	updateLease(t, e.Ctx, ns, name, func(l *coordinationv1.Lease) { l.Spec.HolderIdentity = nil })
	rep, err := e.Migrator().Run(e.Ctx, o, migrate.Apply)
	if err != nil {
		t.Fatal(err)
	}
	e.AssertVerified(rep)
	e2eutil.AssertSameDashboards(t, base, e.Inventory(0))
	assertNoPVDeleted(t, pvs)
}

// planSteps lists the step IDs of o's plan in order.
func planSteps(t *testing.T, e *grafanaEnv, o migrate.Options) []string {
	t.Helper()
	rep, err := e.Migrator().Run(e.Ctx, o, migrate.PlanOnly)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range rep.Steps {
		ids = append(ids, s.ID)
	}
	return ids
}

// updateLease changes a Lease its holder keeps renewing: conflicts retry.
func updateLease(t *testing.T, ctx context.Context, ns, name string, change func(*coordinationv1.Lease)) *coordinationv1.Lease {
	t.Helper()
	var out *coordinationv1.Lease
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		l, err := sb.Kube.CoordinationV1().Leases(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		change(l)
		out, err = sb.Kube.CoordinationV1().Leases(ns).Update(ctx, l, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestLeaseRenewalFailureStopsBeforeNextStep: the run's renewals fail
// (its right to update Leases is revoked mid-run, so every renewal is
// Forbidden). Once they have failed for the renew deadline the run stops
// before its next step, leaving the journal resumable; with the right back
// the same command finishes.
func TestLeaseRenewalFailureStopsBeforeNextStep(t *testing.T) {
	e2eutil.NeedSandbox(t)
	e := deployGrafana(t, fixtures.Release{Name: "grafana", Replicas: 1}, 4)
	base := e.Inventory(0)
	pvs := pvState(e)
	ns := e.Rel.Namespace
	clients := limitedClients(t, e, "none", "none")
	roles := sb.Kube.RbacV1().Roles(ns)
	setLeaseUpdate := func(ctx context.Context, allowed bool) error {
		return retry.RetryOnConflict(retry.DefaultRetry, func() error {
			r, err := roles.Get(ctx, "rebind-limited", metav1.GetOptions{})
			if err != nil {
				return err
			}
			var rules []rbacv1.PolicyRule
			for _, rule := range r.Rules {
				if !(slices.Contains(rule.Resources, "leases") && slices.Contains(rule.Verbs, "update")) {
					rules = append(rules, rule)
				}
			}
			if allowed {
				rules = append(rules, rbacv1.PolicyRule{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"update"}})
			}
			r.Rules = rules
			_, err = roles.Update(ctx, r, metav1.UpdateOptions{})
			return err
		})
	}
	// The journal's Secret, by name (migrate.JournalPermissions).
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		r, err := roles.Get(e.Ctx, "rebind-limited", metav1.GetOptions{})
		if err != nil {
			return err
		}
		r.Rules = append(r.Rules, rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "delete"}, ResourceNames: []string{journal.Name(e.Rel.FullName())}})
		_, err = roles.Update(e.Ctx, r, metav1.UpdateOptions{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	o := e.options(migrate.Restore)
	o.ToClass = "premium"
	const revokeAfter = "snapshot/0"
	m := e.Migrator()
	m.Clients = clients
	m.LeaseDuration = testLease
	var revokedAt time.Time
	m.AfterStep = func(ctx context.Context, id string) error {
		if id != revokeAfter {
			return nil
		}
		if err := setLeaseUpdate(context.Background(), false); err != nil {
			return err
		}
		revokedAt = time.Now()
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(2 * testLease):
			return errors.New("the run did not notice that it could not renew its lease")
		}
	}
	_, err := m.Run(e.Ctx, o, migrate.Apply)
	stoppedAfter := time.Since(revokedAt)
	var lost *journal.LostError
	var half *migrate.FailedError
	if !errors.As(err, &lost) || lost.Holder != "" || lost.Err == nil || !errors.As(err, &half) {
		t.Fatalf("want a FailedError for a lease that could not be renewed, got %v", err)
	}
	if !strings.Contains(err.Error(), "could not renew it") || !strings.Contains(err.Error(), "forbidden") {
		t.Errorf("error does not say why:\n%v", err)
	}
	deadline := journal.TimingFor(testLease).RenewDeadline
	t.Logf("renewals forbidden: the run stopped %s later (renew deadline %s, lease %s)", stoppedAfter.Round(time.Millisecond), deadline, testLease)
	if stoppedAfter >= testLease {
		t.Errorf("the run went on %s without its lease; another run may take it over after %s", stoppedAfter, testLease)
	}
	j, err := journal.Load(e.Ctx, sb.Kube, ns, e.Rel.FullName())
	if err != nil || j == nil {
		t.Fatalf("journal: %v", err)
	}
	after := false
	for _, id := range planSteps(t, e, o) {
		if st := j.Step(id).Status; after && st != plan.Pending {
			t.Errorf("step %s is %q: a step ran after the lease was lost", id, st)
		}
		after = after || id == revokeAfter
	}
	assertNoPVDeleted(t, pvs)

	if err := setLeaseUpdate(e.Ctx, true); err != nil {
		t.Fatal(err)
	}
	m.AfterStep = nil
	rep, err := m.Run(e.Ctx, o, migrate.Apply)
	if err != nil {
		t.Fatal(err)
	}
	e.AssertVerified(rep)
	e2eutil.AssertSameDashboards(t, base, e.Inventory(0))
	assertNoPVDeleted(t, pvs)
}
