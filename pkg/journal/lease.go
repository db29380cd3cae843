package journal

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
)

// DefaultLeaseDuration is how long a run that stopped renewing blocks the
// next one when nothing can tell that it died.
const DefaultLeaseDuration = 30 * time.Second

// Bounds of a lease duration set by the user. Below the minimum a renewal
// every tenth of it would load the API server and a slow answer would cost
// the lease; above the maximum a killed run on another machine blocks a
// re-run for too long.
const (
	MinLeaseDuration = 3 * time.Second
	MaxLeaseDuration = time.Hour
)

// ValidateLeaseDuration checks a --lease-duration value. The Lease object
// stores whole seconds.
func ValidateLeaseDuration(d time.Duration) error {
	if d < MinLeaseDuration || d > MaxLeaseDuration {
		return fmt.Errorf("--lease-duration %s: use a value from %s to %s (default %s)", d, MinLeaseDuration, MaxLeaseDuration, DefaultLeaseDuration)
	}
	if d%time.Second != 0 {
		return fmt.Errorf("--lease-duration %s: use whole seconds (the Lease stores seconds), e.g. %s", d, d.Round(time.Second))
	}
	return nil
}

// LeaseTiming derives the holder's rhythm from the lease duration, the way
// client-go's leader election relates its three periods: the holder renews
// every RetryPeriod and gives the lease up when it could not renew for
// RenewDeadline, which is shorter than the Duration a reader waits, so a
// holder that cannot renew stops before anyone else may take over (as long
// as both clocks tick at about the same rate; their settings may differ).
type LeaseTiming struct {
	Duration, RenewDeadline, RetryPeriod time.Duration
}

// TimingFor returns the timing of a lease of duration d.
func TimingFor(d time.Duration) LeaseTiming {
	if d <= 0 {
		d = DefaultLeaseDuration
	}
	return LeaseTiming{Duration: d, RenewDeadline: d * 2 / 3, RetryPeriod: d / 10}
}

// LockedError says another run holds the target.
type LockedError struct {
	Namespace, Name, Holder string
	// Watched is how long this run saw the holder's record before it
	// changed (measured on this run's clock).
	Watched  time.Duration
	Duration time.Duration
}

func (e *LockedError) Error() string {
	return fmt.Sprintf("another rebind run (%s) holds Lease %s/%s and renewed it %s after this run started watching: wait for it to finish, then re-run; if it was killed it stops renewing, and a re-run takes the lease over once it has not changed for %s",
		e.Holder, e.Namespace, e.Name, e.Watched.Round(10*time.Millisecond), e.Duration)
}

// LostError says a run no longer holds its lease: it could not renew it in
// time, or another run took it. The run stops before its next change.
type LostError struct {
	Namespace, Name string
	// Holder is the run that holds the lease now, when one does.
	Holder string
	Err    error
}

func (e *LostError) Error() string {
	why := fmt.Sprintf("could not renew it: %v", e.Err)
	switch {
	case e.Holder != "":
		why = fmt.Sprintf("run %s holds it now", e.Holder)
	case e.Err == nil:
		why = "it was released or deleted by someone else"
	}
	return fmt.Sprintf("lost Lease %s/%s (%s): stopped before the next change so that two runs never change the target at once", e.Namespace, e.Name, why)
}

func (e *LostError) Unwrap() error { return e.Err }

// Lease keeps two rebind runs from working on one target at once.
//
// A holder counts as alive while its record keeps changing. A run that
// finds the lease held watches the record on its own clock and takes over
// only after it stayed unchanged for the record's duration; the RenewTime
// in the record is the writer's clock, so comparing it with the reader's
// would let a skewed clock either block re-runs or admit a second run.
type Lease struct {
	kube      kubernetes.Interface
	namespace string
	name      string
	holder    string
	timing    LeaseTiming
	clock     clock.Clock

	// TookOverFrom names the holder whose lease was taken over because its
	// process is gone or its record stopped changing (empty when the lease
	// was free).
	TookOverFrom string

	mu  sync.Mutex
	obj *coordinationv1.Lease // as last written by this run
	err error

	lost chan struct{}
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// LeaseOptions name a lease and how to hold it.
type LeaseOptions struct {
	Namespace, Name, Holder string
	// Duration defaults to DefaultLeaseDuration.
	Duration time.Duration
	// Clock is replaceable in tests.
	Clock clock.Clock
	// Waiting is told when the lease is held by another run and this run
	// watches whether that run still renews it.
	Waiting func(holder string, upTo time.Duration)
}

// LeaseName is the Lease guarding a StatefulSet.
func LeaseName(statefulSet string) string { return "rebind-" + statefulSet }

// AcquireLease takes the lease of a StatefulSet or returns *LockedError.
func AcquireLease(ctx context.Context, kube kubernetes.Interface, namespace, statefulSet, holder string, duration time.Duration) (*Lease, error) {
	return TakeLease(ctx, kube, LeaseOptions{Namespace: namespace, Name: LeaseName(statefulSet), Holder: holder, Duration: duration})
}

// TakeLease takes the lease or returns *LockedError. While another run
// holds it, it waits at most the holder's lease duration to see whether
// that run still renews it.
func TakeLease(ctx context.Context, kube kubernetes.Interface, o LeaseOptions) (*Lease, error) {
	c := o.Clock
	if c == nil {
		c = clock.RealClock{}
	}
	l := &Lease{kube: kube, namespace: o.Namespace, name: o.Name, holder: o.Holder, timing: TimingFor(o.Duration), clock: c,
		lost: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	if err := l.acquire(ctx, o.Waiting); err != nil {
		return nil, err
	}
	go l.renewLoop()
	return l, nil
}

// observation is a reader's view of someone else's record: the record and
// when, on the reader's clock, it was first seen unchanged.
type observation struct {
	record   string
	since    time.Time
	duration time.Duration
}

// recordOf is what changes when the holder renews. The resourceVersion
// alone would do on a real API server; the spec keeps it honest where
// versions are not kept.
func recordOf(l *coordinationv1.Lease) string {
	micro := func(t *metav1.MicroTime) string {
		if t == nil {
			return ""
		}
		return t.UTC().Format(time.RFC3339Nano)
	}
	return fmt.Sprintf("%s|%s|%s|%s|%d|%d|%s", l.ResourceVersion, ptr.Deref(l.Spec.HolderIdentity, ""), micro(l.Spec.AcquireTime), micro(l.Spec.RenewTime),
		ptr.Deref(l.Spec.LeaseDurationSeconds, 0), ptr.Deref(l.Spec.LeaseTransitions, 0), l.Annotations[AnnHolderProcess])
}

// observe starts watching a record at now. The holder's own duration
// counts: it promised to renew within it.
func observe(l *coordinationv1.Lease, now time.Time, fallback time.Duration) *observation {
	d := time.Duration(ptr.Deref(l.Spec.LeaseDurationSeconds, 0)) * time.Second
	if d <= 0 {
		d = fallback
	}
	return &observation{record: recordOf(l), since: now, duration: d}
}

func (o *observation) changed(l *coordinationv1.Lease) bool { return recordOf(l) != o.record }

// remaining is how long the record must still stay unchanged before its
// holder counts as gone; zero or less means gone.
func (o *observation) remaining(now time.Time) time.Duration {
	return o.since.Add(o.duration).Sub(now)
}

var errLeaseChanged = errors.New("lease changed meanwhile")

func (l *Lease) acquire(ctx context.Context, waiting func(string, time.Duration)) error {
	leases := l.kube.CoordinationV1().Leases(l.namespace)
	var obs *observation
	for {
		cur, err := leases.Get(ctx, l.name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			err = l.create(ctx)
			if apierrors.IsAlreadyExists(err) {
				continue
			}
			return err
		}
		if err != nil {
			return fmt.Errorf("reading Lease %s/%s: %w", l.namespace, l.name, err)
		}
		h := ptr.Deref(cur.Spec.HolderIdentity, "")
		if h == "" || h == l.holder {
			err := l.take(ctx, cur)
			if errors.Is(err, errLeaseChanged) {
				continue
			}
			return err
		}
		// A holder that ran on this machine and whose process is gone
		// (killed, OOM) will never renew: waiting out the lease would only
		// keep the application down longer.
		if p, ok := parseProcess(cur.Annotations[AnnHolderProcess]); ok && p.goneFromThisMachine() {
			err := l.take(ctx, cur)
			if errors.Is(err, errLeaseChanged) {
				continue
			}
			if err == nil {
				l.TookOverFrom = fmt.Sprintf("%s (pid %d on this machine, no longer running)", h, p.PID)
			}
			return err
		}
		now := l.clock.Now()
		switch {
		case obs == nil:
			obs = observe(cur, now, l.timing.Duration)
			if waiting != nil {
				waiting(h, obs.duration)
			}
		case obs.changed(cur):
			return &LockedError{Namespace: l.namespace, Name: l.name, Holder: h, Watched: now.Sub(obs.since), Duration: obs.duration}
		}
		if obs.remaining(now) <= 0 {
			// The resourceVersion of the record watched makes this a
			// compare-and-swap: a renewal that lands first wins.
			err := l.take(ctx, cur)
			if errors.Is(err, errLeaseChanged) {
				continue
			}
			if err == nil {
				l.TookOverFrom = fmt.Sprintf("%s (its record did not change for %s)", h, obs.duration)
			}
			return err
		}
		if err := l.waitForChange(ctx, cur, obs.remaining(now)); err != nil {
			return err
		}
	}
}

func (l *Lease) spec(prev *coordinationv1.LeaseSpec) coordinationv1.LeaseSpec {
	now := metav1.NewMicroTime(l.clock.Now())
	s := coordinationv1.LeaseSpec{
		HolderIdentity:       ptr.To(l.holder),
		LeaseDurationSeconds: ptr.To(int32(l.timing.Duration / time.Second)),
		AcquireTime:          &now,
		RenewTime:            &now,
		LeaseTransitions:     ptr.To(int32(0)),
	}
	if prev != nil {
		s.LeaseTransitions = ptr.To(ptr.Deref(prev.LeaseTransitions, 0))
		if h := ptr.Deref(prev.HolderIdentity, ""); h != "" && h != l.holder {
			s.LeaseTransitions = ptr.To(*s.LeaseTransitions + 1)
		}
	}
	return s
}

func (l *Lease) create(ctx context.Context) error {
	obj, err := l.kube.CoordinationV1().Leases(l.namespace).Create(ctx, &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: l.name, Namespace: l.namespace, Labels: map[string]string{LabelManagedBy: ManagedBy},
			Annotations: map[string]string{AnnHolderProcess: selfProcess().annotation()}},
		Spec: l.spec(nil),
	}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return err
	}
	if err != nil {
		return fmt.Errorf("creating Lease %s/%s: %w", l.namespace, l.name, err)
	}
	l.obj = obj
	return nil
}

// take writes this run as the holder over cur, conditional on cur's
// resourceVersion.
func (l *Lease) take(ctx context.Context, cur *coordinationv1.Lease) error {
	next := cur.DeepCopy()
	next.Spec = l.spec(&cur.Spec)
	if next.Annotations == nil {
		next.Annotations = map[string]string{}
	}
	next.Annotations[AnnHolderProcess] = selfProcess().annotation()
	obj, err := l.kube.CoordinationV1().Leases(l.namespace).Update(ctx, next, metav1.UpdateOptions{})
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		return errLeaseChanged
	}
	if err != nil {
		return fmt.Errorf("taking Lease %s/%s: %w", l.namespace, l.name, err)
	}
	l.obj = obj
	return nil
}

// waitForChange returns when the Lease changes after cur, or after d on
// this run's clock.
func (l *Lease) waitForChange(ctx context.Context, cur *coordinationv1.Lease, d time.Duration) error {
	w, err := l.kube.CoordinationV1().Leases(l.namespace).Watch(ctx, metav1.ListOptions{
		FieldSelector:   fields.OneTermEqualSelector("metadata.name", l.name).String(),
		ResourceVersion: cur.ResourceVersion,
	})
	if err != nil {
		return fmt.Errorf("watching Lease %s/%s: %w", l.namespace, l.name, err)
	}
	defer w.Stop()
	t := l.clock.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C():
			return nil
		case ev, ok := <-w.ResultChan():
			// A closed or failed watch is read again from a fresh Get, as is
			// a deleted or changed record; an event that repeats the record
			// watched (a watch may start with it) changes nothing.
			if !ok {
				return nil
			}
			if obj, isLease := ev.Object.(*coordinationv1.Lease); ev.Type == watch.Bookmark || (isLease && ev.Type != watch.Deleted && recordOf(obj) == recordOf(cur)) {
				continue
			}
			return nil
		}
	}
}

// Lost is closed when the run no longer holds the lease; Err says why.
func (l *Lease) Lost() <-chan struct{} { return l.lost }

// Err is nil while the lease is held, else a *LostError.
func (l *Lease) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Guard returns a context that is cancelled, with the *LostError as its
// cause, when the lease is lost: waits and API calls of the run stop.
func (l *Lease) Guard(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(parent)
	go func() {
		select {
		case <-l.lost:
			cancel(l.Err())
		case <-ctx.Done():
		}
	}()
	return ctx, func() { cancel(context.Canceled) }
}

func (l *Lease) markLost(err error) {
	l.mu.Lock()
	l.err = err
	l.mu.Unlock()
	close(l.lost)
}

func (l *Lease) renewLoop() {
	defer close(l.done)
	last := l.clock.Now()
	for {
		t := l.clock.NewTimer(l.timing.RetryPeriod)
		select {
		case <-l.stop:
			t.Stop()
			return
		case <-t.C():
		}
		// One attempt may take until the deadline, no longer.
		budget := l.timing.RenewDeadline - l.clock.Since(last)
		if budget < l.timing.RetryPeriod {
			budget = l.timing.RetryPeriod
		}
		ctx, cancel := context.WithTimeout(context.Background(), budget)
		err := l.renewOnce(ctx)
		cancel()
		if renewalLost(err, l.clock.Since(last), l.timing.RenewDeadline) {
			var lost *LostError
			if !errors.As(err, &lost) {
				lost = &LostError{Namespace: l.namespace, Name: l.name, Err: err}
			}
			l.markLost(lost)
			return
		}
		if err == nil {
			last = l.clock.Now()
		}
	}
}

// renewalLost decides after one renewal attempt whether the lease is lost:
// at once when another run holds it or it is gone (*LostError), else once
// renewals have failed for the renew deadline.
func renewalLost(err error, sinceLastRenewal, deadline time.Duration) bool {
	var lost *LostError
	switch {
	case err == nil:
		return false
	case errors.As(err, &lost):
		return true
	}
	return sinceLastRenewal >= deadline
}

// renewOnce writes a new RenewTime over the record this run wrote last,
// conditional on its resourceVersion. A conflict is fine only if the
// record still names this run (someone edited a label).
func (l *Lease) renewOnce(ctx context.Context) error {
	leases := l.kube.CoordinationV1().Leases(l.namespace)
	l.mu.Lock()
	base := l.obj.DeepCopy()
	l.mu.Unlock()
	for attempt := 0; attempt < 2; attempt++ {
		next := base.DeepCopy()
		now := metav1.NewMicroTime(l.clock.Now())
		if prev := base.Spec.RenewTime; prev != nil && !now.After(prev.Time) {
			// A renewal must change the record, or readers would take the
			// holder for dead (a clock stepped back, or a coarse one).
			now = metav1.NewMicroTime(prev.Add(time.Microsecond))
		}
		next.Spec.RenewTime = &now
		obj, err := leases.Update(ctx, next, metav1.UpdateOptions{})
		if err == nil {
			l.mu.Lock()
			l.obj = obj
			l.mu.Unlock()
			return nil
		}
		if apierrors.IsNotFound(err) {
			return &LostError{Namespace: l.namespace, Name: l.name}
		}
		if !apierrors.IsConflict(err) {
			return err
		}
		cur, gerr := leases.Get(ctx, l.name, metav1.GetOptions{})
		if apierrors.IsNotFound(gerr) {
			return &LostError{Namespace: l.namespace, Name: l.name}
		}
		if gerr != nil {
			return gerr
		}
		if h := ptr.Deref(cur.Spec.HolderIdentity, ""); h != l.holder {
			return &LostError{Namespace: l.namespace, Name: l.name, Holder: h}
		}
		base = cur
	}
	return errors.New("the Lease kept changing under this run")
}

// Release stops renewing and frees the lease for the next run, unless
// another run holds it by now.
func (l *Lease) Release(ctx context.Context) error {
	l.once.Do(func() { close(l.stop) })
	<-l.done
	leases := l.kube.CoordinationV1().Leases(l.namespace)
	l.mu.Lock()
	cur := l.obj.DeepCopy()
	l.mu.Unlock()
	for attempt := 0; attempt < 3; attempt++ {
		if ptr.Deref(cur.Spec.HolderIdentity, "") != l.holder {
			return nil
		}
		cur.Spec.HolderIdentity = nil
		cur.Spec.RenewTime = nil
		_, err := leases.Update(ctx, cur, metav1.UpdateOptions{})
		if !apierrors.IsConflict(err) {
			return client404(err)
		}
		if cur, err = leases.Get(ctx, l.name, metav1.GetOptions{}); err != nil {
			return client404(err)
		}
	}
	return fmt.Errorf("releasing Lease %s/%s: it kept changing; it expires %s after its last renewal", l.namespace, l.name, l.timing.Duration)
}

// Abandon stops renewing without releasing, the way a killed process would
// leave it; tests use it to simulate a crash.
func (l *Lease) Abandon() {
	l.once.Do(func() { close(l.stop) })
	<-l.done
}

func client404(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
