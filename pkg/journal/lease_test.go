package journal

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
)

func TestValidateLeaseDuration(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string // "" = valid
	}{
		{30 * time.Second, ""},
		{MinLeaseDuration, ""},
		{MaxLeaseDuration, ""},
		{0, "use a value from 3s to 1h0m0s"},
		{-5 * time.Second, "use a value from"},
		{2 * time.Second, "use a value from"},
		{2 * time.Hour, "use a value from"},
		{7500 * time.Millisecond, "use whole seconds"},
	}
	for _, tt := range tests {
		t.Run(tt.d.String(), func(t *testing.T) {
			err := ValidateLeaseDuration(tt.d)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "--lease-duration") {
				t.Fatalf("want error naming --lease-duration and %q, got %v", tt.want, err)
			}
		})
	}
}

// TestLeaseTiming: the holder gives up (renew deadline) before any reader
// may take over (duration), with several renewals in between.
func TestLeaseTiming(t *testing.T) {
	for _, d := range []time.Duration{0, MinLeaseDuration, 30 * time.Second, MaxLeaseDuration} {
		tm := TimingFor(d)
		if d == 0 && tm.Duration != DefaultLeaseDuration {
			t.Errorf("zero duration: got %s, want the default", tm.Duration)
		}
		if !(tm.RetryPeriod > 0 && 3*tm.RetryPeriod < tm.RenewDeadline && tm.RenewDeadline < tm.Duration) {
			t.Errorf("%s: retry %s, deadline %s, duration %s: want several retries before the deadline, and the deadline before the duration", d, tm.RetryPeriod, tm.RenewDeadline, tm.Duration)
		}
	}
}

func leaseRecord(rv, holder string, renew time.Time, seconds int32) *coordinationv1.Lease {
	rt := metav1.NewMicroTime(renew)
	return &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{ResourceVersion: rv},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(holder), RenewTime: &rt, LeaseDurationSeconds: ptr.To(seconds)}}
}

// TestObservation: whether a holder is alive is decided by changes of its
// record seen on the reader's clock; the times the holder wrote (from its
// own, possibly skewed clock) only count as content that changes.
func TestObservation(t *testing.T) {
	local := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	first := leaseRecord("10", "a", local.Add(-2*time.Minute), 10)
	tests := []struct {
		name        string
		later       *coordinationv1.Lease
		elapsed     time.Duration // on the reader's clock
		wantChanged bool
		wantExpired bool
	}{
		{"unchanged, within its duration", leaseRecord("10", "a", local.Add(-2*time.Minute), 10), 9 * time.Second, false, false},
		{"unchanged for its duration", leaseRecord("10", "a", local.Add(-2*time.Minute), 10), 10 * time.Second, false, true},
		{"renewed, its clock 2 minutes behind", leaseRecord("11", "a", local.Add(-2*time.Minute+3*time.Second), 10), 3 * time.Second, true, false},
		{"renewed, its clock 2 minutes ahead", leaseRecord("11", "a", local.Add(2*time.Minute), 10), 3 * time.Second, true, false},
		{"renewed with the same time (frozen clock)", leaseRecord("11", "a", local.Add(-2*time.Minute), 10), time.Second, true, false},
		{"same version, other holder (no versions kept)", leaseRecord("10", "b", local.Add(-2*time.Minute), 10), time.Second, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := observe(first, local, time.Minute)
			if got := o.changed(tt.later); got != tt.wantChanged {
				t.Errorf("changed = %v, want %v", got, tt.wantChanged)
			}
			if got := o.remaining(local.Add(tt.elapsed)) <= 0; got != tt.wantExpired {
				t.Errorf("expired after %s = %v, want %v", tt.elapsed, got, tt.wantExpired)
			}
		})
	}
	// A record without a duration gets the reader's own.
	o := observe(leaseRecord("1", "a", local, 0), local, 7*time.Second)
	if o.duration != 7*time.Second {
		t.Errorf("fallback duration = %s", o.duration)
	}
}

func TestRenewalLost(t *testing.T) {
	transient := errors.New("connection refused")
	taken := &LostError{Namespace: "ns", Name: "l", Holder: "other"}
	tests := []struct {
		name  string
		err   error
		since time.Duration
		want  bool
	}{
		{"renewed", nil, time.Hour, false},
		{"failed, before the deadline", transient, 5 * time.Second, false},
		{"failed until the deadline", transient, 20 * time.Second, true},
		{"taken by another run", taken, 0, true},
		{"taken, wrapped", fmt.Errorf("renewing: %w", taken), 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := renewalLost(tt.err, tt.since, 20*time.Second); got != tt.want {
				t.Fatalf("lost = %v, want %v", got, tt.want)
			}
		})
	}
}

// until waits for cond, which other goroutines make true, for at most 10s.
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

type acquired struct {
	l   *Lease
	err error
}

func takeAsync(kube *fake.Clientset, holder string, c *clocktesting.FakeClock, d time.Duration) chan acquired {
	ch := make(chan acquired, 1)
	go func() {
		l, err := TakeLease(context.Background(), kube, LeaseOptions{Namespace: "ns", Name: LeaseName("grafana"), Holder: holder, Duration: d, Clock: c})
		ch <- acquired{l, err}
	}()
	return ch
}

func holderOf(t *testing.T, kube *fake.Clientset) string {
	t.Helper()
	l, err := kube.CoordinationV1().Leases("ns").Get(context.Background(), LeaseName("grafana"), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ptr.Deref(l.Spec.HolderIdentity, "")
}

// TestLeaseExcludesRenewingHolder: a second run watches a held lease and is
// refused as soon as the holder renews; after a release it takes the lease
// at once. The holder's clock runs 2 minutes ahead of the second run's.
func TestLeaseExcludesRenewingHolder(t *testing.T) {
	const d = 10 * time.Second
	kube := fake.NewSimpleClientset()
	now := time.Now()
	clockA, clockB := clocktesting.NewFakeClock(now.Add(2*time.Minute)), clocktesting.NewFakeClock(now)
	first := <-takeAsync(kube, "run-1", clockA, d)
	if first.err != nil {
		t.Fatal(first.err)
	}
	second := takeAsync(kube, "run-2", clockB, d)
	until(t, "the second run to watch the lease", clockB.HasWaiters)
	clockA.Step(TimingFor(d).RetryPeriod) // the holder renews
	got := <-second
	var locked *LockedError
	if !errors.As(got.err, &locked) || locked.Holder != "run-1" || locked.Watched != 0 {
		t.Fatalf("want LockedError by run-1 after 0s of watching, got %v", got.err)
	}
	if first.l.Err() != nil {
		t.Fatalf("holder lost its lease: %v", first.l.Err())
	}
	if err := first.l.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	again := <-takeAsync(kube, "run-2", clockB, d)
	if again.err != nil {
		t.Fatalf("released lease not reusable: %v", again.err)
	}
	defer again.l.Abandon()
	if again.l.TookOverFrom != "" || holderOf(t, kube) != "run-2" {
		t.Fatalf("took over from %q, holder %q", again.l.TookOverFrom, holderOf(t, kube))
	}
}

// TestLeaseTakeOverAfterSilence: a holder that stops renewing (killed on
// another machine) blocks a re-run for its lease duration on the re-run's
// clock, however far its own clock was off, and no longer.
func TestLeaseTakeOverAfterSilence(t *testing.T) {
	for _, skew := range []time.Duration{-2 * time.Minute, 0, 2 * time.Minute} {
		t.Run("holder clock "+skew.String(), func(t *testing.T) {
			const d = 10 * time.Second
			kube := fake.NewSimpleClientset()
			now := time.Now()
			clockA, clockB := clocktesting.NewFakeClock(now.Add(skew)), clocktesting.NewFakeClock(now)
			first := <-takeAsync(kube, "killed", clockA, d)
			if first.err != nil {
				t.Fatal(first.err)
			}
			first.l.Abandon()
			second := takeAsync(kube, "rerun", clockB, d)
			until(t, "the re-run to watch the lease", clockB.HasWaiters)
			clockB.Step(d - time.Millisecond)
			select {
			case got := <-second:
				t.Fatalf("took the lease before it was silent for %s: %+v", d, got)
			default:
			}
			clockB.Step(time.Millisecond)
			got := <-second
			if got.err != nil {
				t.Fatalf("want take-over after %s of silence, got %v", d, got.err)
			}
			defer got.l.Abandon()
			if !strings.Contains(got.l.TookOverFrom, "killed") || holderOf(t, kube) != "rerun" {
				t.Fatalf("TookOverFrom %q, holder %q", got.l.TookOverFrom, holderOf(t, kube))
			}
		})
	}
}

// TestLeaseLostWhenRenewalFails: a holder whose renewals fail gives the
// lease up once they failed for the renew deadline, and tells the run: Lost
// is closed, Err and the Guard context's cause are a *LostError.
func TestLeaseLostWhenRenewalFails(t *testing.T) {
	const d = 10 * time.Second
	kube := fake.NewSimpleClientset()
	c := clocktesting.NewFakeClock(time.Now())
	first := <-takeAsync(kube, "run-1", c, d)
	if first.err != nil {
		t.Fatal(first.err)
	}
	l := first.l
	ctx, cancel := l.Guard(context.Background())
	defer cancel()
	kube.PrependReactor("update", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewServiceUnavailable("etcd is down")
	})
	tm := TimingFor(d)
	for elapsed := time.Duration(0); elapsed < tm.RenewDeadline; elapsed += tm.RetryPeriod {
		until(t, "the next renewal", c.HasWaiters)
		if l.Err() != nil {
			t.Fatalf("lost after %s of failed renewals, before the deadline %s", elapsed, tm.RenewDeadline)
		}
		c.Step(tm.RetryPeriod)
	}
	<-l.Lost()
	var lost *LostError
	if !errors.As(l.Err(), &lost) || !apierrors.IsServiceUnavailable(lost.Err) {
		t.Fatalf("Err = %v, want a LostError wrapping the renewal error", l.Err())
	}
	<-ctx.Done()
	if !errors.As(context.Cause(ctx), &lost) {
		t.Fatalf("guard context cause = %v", context.Cause(ctx))
	}
	if !strings.Contains(l.Err().Error(), "stopped before the next change") {
		t.Fatalf("message: %v", l.Err())
	}
}

// TestLeaseLostWhenDeleted: a Lease deleted under the holder is lost at
// the next renewal.
func TestLeaseLostWhenDeleted(t *testing.T) {
	kube := fake.NewSimpleClientset()
	c := clocktesting.NewFakeClock(time.Now())
	first := <-takeAsync(kube, "run-1", c, 10*time.Second)
	if first.err != nil {
		t.Fatal(first.err)
	}
	if err := kube.CoordinationV1().Leases("ns").Delete(context.Background(), LeaseName("grafana"), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	until(t, "the renewal timer", c.HasWaiters)
	c.Step(TimingFor(10 * time.Second).RetryPeriod)
	<-first.l.Lost()
	var lost *LostError
	if !errors.As(first.l.Err(), &lost) || lost.Holder != "" || lost.Err != nil {
		t.Fatalf("Err = %v", first.l.Err())
	}
	if err := first.l.Release(context.Background()); err != nil {
		t.Fatalf("release of a deleted lease: %v", err)
	}
}

// TestLeaseTakeOverFromDeadProcess: a lease whose holder ran on this
// machine and is gone is taken over at once; one whose holder may be alive
// (running, on another machine, or unknown) is watched like any other and
// refused when it renews.
func TestLeaseTakeOverFromDeadProcess(t *testing.T) {
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	self := selfProcess()
	if self.Start == 0 || self.Boot == "" {
		t.Skip("no /proc on this system: a dead holder cannot be recognised, the lease expiry applies")
	}
	deadPID := dead.ProcessState.Pid()
	tests := []struct {
		name     string
		holder   process
		takeOver bool
	}{
		{"holder process gone", process{Host: self.Host, Boot: self.Boot, PID: deadPID, Start: 12345}, true},
		{"pid reused by another process", process{Host: self.Host, Boot: self.Boot, PID: self.PID, Start: self.Start + 1}, true},
		{"holder still running", self, false},
		{"holder on another machine", process{Host: self.Host + "-other", Boot: self.Boot, PID: deadPID, Start: 1}, false},
		{"holder on an earlier boot", process{Host: self.Host, Boot: "another-boot", PID: deadPID, Start: 1}, false},
		{"holder without start time", process{Host: self.Host, Boot: self.Boot, PID: deadPID}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			now := metav1.NewMicroTime(time.Now())
			kube := fake.NewSimpleClientset(&coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: LeaseName("grafana"), Namespace: "ns", Annotations: map[string]string{AnnHolderProcess: tt.holder.annotation()}},
				Spec:       coordinationv1.LeaseSpec{HolderIdentity: ptr.To("killed-run"), LeaseDurationSeconds: ptr.To(int32(30)), RenewTime: &now, AcquireTime: &now},
			})
			c := clocktesting.NewFakeClock(time.Now())
			ch := takeAsync(kube, "rerun", c, 30*time.Second)
			if !tt.takeOver {
				until(t, "the re-run to watch the lease", c.HasWaiters)
				cur, err := kube.CoordinationV1().Leases("ns").Get(ctx, LeaseName("grafana"), metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				renewed := metav1.NewMicroTime(now.Add(time.Second))
				cur.Spec.RenewTime = &renewed
				if _, err := kube.CoordinationV1().Leases("ns").Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
					t.Fatal(err)
				}
				got := <-ch
				var locked *LockedError
				if !errors.As(got.err, &locked) || locked.Holder != "killed-run" {
					t.Fatalf("want LockedError by killed-run, got %v", got.err)
				}
				return
			}
			got := <-ch
			if got.err != nil {
				t.Fatalf("want take-over, got %v", got.err)
			}
			defer got.l.Abandon()
			if !strings.Contains(got.l.TookOverFrom, "killed-run") || !strings.Contains(got.l.TookOverFrom, fmt.Sprint(tt.holder.PID)) {
				t.Fatalf("TookOverFrom = %q", got.l.TookOverFrom)
			}
			lease, _ := kube.CoordinationV1().Leases("ns").Get(ctx, LeaseName("grafana"), metav1.GetOptions{})
			if ptr.Deref(lease.Spec.HolderIdentity, "") != "rerun" || lease.Annotations[AnnHolderProcess] != self.annotation() || ptr.Deref(lease.Spec.LeaseTransitions, 0) != 1 {
				t.Fatalf("lease after take-over: %+v %v", lease.Spec, lease.Annotations)
			}
		})
	}
}
