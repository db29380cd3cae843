package journal

import (
	"context"
	"fmt"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// LockedError says another run holds the target.
type LockedError struct {
	Namespace, Name, Holder string
	RenewedAt               time.Time
	Duration                time.Duration
}

func (e *LockedError) Error() string {
	return fmt.Sprintf("another rebind run (%s) holds Lease %s/%s, renewed %s ago: wait for it to finish; if it was killed, the lease expires %s after its last renewal",
		e.Holder, e.Namespace, e.Name, time.Since(e.RenewedAt).Round(time.Second), e.Duration)
}

// Lease keeps two rebind runs from working on one StatefulSet at once. A run
// that dies stops renewing, so its lease expires and a re-run can take over.
type Lease struct {
	kube      kubernetes.Interface
	namespace string
	name      string
	holder    string
	duration  time.Duration

	// TookOverFrom names the holder whose lease was taken over because its
	// process is gone (empty when the lease was free or expired).
	TookOverFrom string

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// LeaseName is the Lease guarding a StatefulSet.
func LeaseName(statefulSet string) string { return "rebind-" + statefulSet }

// AcquireLease takes the lease or returns *LockedError.
func AcquireLease(ctx context.Context, kube kubernetes.Interface, namespace, statefulSet, holder string, duration time.Duration) (*Lease, error) {
	l := &Lease{kube: kube, namespace: namespace, name: LeaseName(statefulSet), holder: holder, duration: duration,
		stop: make(chan struct{}), done: make(chan struct{})}
	if err := l.tryAcquire(ctx); err != nil {
		return nil, err
	}
	go l.renew()
	return l, nil
}

func (l *Lease) tryAcquire(ctx context.Context) error {
	leases := l.kube.CoordinationV1().Leases(l.namespace)
	now := metav1.NewMicroTime(time.Now())
	spec := coordinationv1.LeaseSpec{
		HolderIdentity:       ptr.To(l.holder),
		LeaseDurationSeconds: ptr.To(int32(l.duration / time.Second)),
		AcquireTime:          &now,
		RenewTime:            &now,
	}
	self := selfProcess().annotation()
	cur, err := leases.Get(ctx, l.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = leases.Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: l.name, Namespace: l.namespace, Labels: map[string]string{LabelManagedBy: ManagedBy},
				Annotations: map[string]string{AnnHolderProcess: self}},
			Spec: spec,
		}, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return l.tryAcquire(ctx)
		}
		if err != nil {
			return fmt.Errorf("creating Lease %s/%s: %w", l.namespace, l.name, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading Lease %s/%s: %w", l.namespace, l.name, err)
	}
	if h := ptr.Deref(cur.Spec.HolderIdentity, ""); h != "" && h != l.holder && cur.Spec.RenewTime != nil {
		d := time.Duration(ptr.Deref(cur.Spec.LeaseDurationSeconds, 0)) * time.Second
		if time.Since(cur.Spec.RenewTime.Time) < d {
			// A holder that ran on this machine and whose process is gone
			// (killed, OOM) will never renew: waiting out the lease would
			// only keep the application down longer.
			p, ok := parseProcess(cur.Annotations[AnnHolderProcess])
			if !ok || !p.goneFromThisMachine() {
				return &LockedError{Namespace: l.namespace, Name: l.name, Holder: h, RenewedAt: cur.Spec.RenewTime.Time, Duration: d}
			}
			l.TookOverFrom = fmt.Sprintf("%s (pid %d on this machine, no longer running)", h, p.PID)
		}
	}
	cur.Spec = spec
	if cur.Annotations == nil {
		cur.Annotations = map[string]string{}
	}
	cur.Annotations[AnnHolderProcess] = self
	// The resourceVersion in cur makes this a compare-and-swap: two runs
	// racing for an expired lease cannot both win.
	if _, err := leases.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		if apierrors.IsConflict(err) {
			return &LockedError{Namespace: l.namespace, Name: l.name, Holder: "a concurrent run", RenewedAt: time.Now(), Duration: l.duration}
		}
		return fmt.Errorf("taking Lease %s/%s: %w", l.namespace, l.name, err)
	}
	return nil
}

func (l *Lease) renew() {
	defer close(l.done)
	t := time.NewTicker(l.duration / 3)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), l.duration/3)
			leases := l.kube.CoordinationV1().Leases(l.namespace)
			if cur, err := leases.Get(ctx, l.name, metav1.GetOptions{}); err == nil && ptr.Deref(cur.Spec.HolderIdentity, "") == l.holder {
				now := metav1.NewMicroTime(time.Now())
				cur.Spec.RenewTime = &now
				_, _ = leases.Update(ctx, cur, metav1.UpdateOptions{})
			}
			cancel()
		}
	}
}

// Release stops renewing and frees the lease for the next run.
func (l *Lease) Release(ctx context.Context) error {
	l.once.Do(func() { close(l.stop) })
	<-l.done
	leases := l.kube.CoordinationV1().Leases(l.namespace)
	cur, err := leases.Get(ctx, l.name, metav1.GetOptions{})
	if err != nil {
		return client404(err)
	}
	if ptr.Deref(cur.Spec.HolderIdentity, "") != l.holder {
		return nil
	}
	cur.Spec.HolderIdentity = nil
	cur.Spec.RenewTime = nil
	_, err = leases.Update(ctx, cur, metav1.UpdateOptions{})
	return client404(err)
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
