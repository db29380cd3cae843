package migrate_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
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
