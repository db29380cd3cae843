package migrate_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
)

// The phases of an outage, in the order a restore passes them. A pod
// restart skips the claim and StatefulSet phases.
var outagePhases = []string{
	"pod-deleting",   // the serving pod got its deletionTimestamp: the outage starts
	"pod-gone",       // kwok, as its kubelet, confirmed the termination
	"old-claim-gone", // the protection finalizer let the old claim go
	"claim-created",  // a claim of the same name with a new uid exists
	"claim-bound",    // the binder finished binding it
	"sts-created",    // a StatefulSet of the same name with a new uid exists
	"revision",       // the StatefulSet controller adopted or wrote a ControllerRevision
	"pod-created",    // a pod of the same name with a new uid exists
	"pod-scheduled",  // the scheduler bound it to a node
	"pod-ready",      // kwok made it Ready
	"serving",        // the probe got a 200 again
}

// outageTrace records when the objects of an outage changed, as seen by
// watches that start before the scenario does, so that a slow outage shows
// which gap grew. Times are when this process heard of each change.
type outageTrace struct {
	ns, pod, claim, sts string
	ctx                 context.Context
	cancel              context.CancelFunc
	wg                  sync.WaitGroup

	mu    sync.Mutex
	marks map[string]time.Time
	errs  []error
}

func startTrace(ctx context.Context, ns, pod, claim, sts string) (*outageTrace, error) {
	ctx, cancel := context.WithCancel(ctx)
	t := &outageTrace{ns: ns, pod: pod, claim: claim, sts: sts, ctx: ctx, cancel: cancel, marks: map[string]time.Time{}}
	// The uids before the scenario tell the old objects from new ones of
	// the same name; each watch starts at its list's resourceVersion, so
	// nothing in between is missed.
	pods, err := sb.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		cancel()
		return nil, err
	}
	claims, err := sb.Kube.CoreV1().PersistentVolumeClaims(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		cancel()
		return nil, err
	}
	sets, err := sb.Kube.AppsV1().StatefulSets(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		cancel()
		return nil, err
	}
	oldPod := uidOf(pods.Items, pod, func(p corev1.Pod) metav1.ObjectMeta { return p.ObjectMeta })
	oldClaim := uidOf(claims.Items, claim, func(c corev1.PersistentVolumeClaim) metav1.ObjectMeta { return c.ObjectMeta })
	oldSTS := uidOf(sets.Items, sts, func(s appsv1.StatefulSet) metav1.ObjectMeta { return s.ObjectMeta })

	podW, err := sb.Kube.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{ResourceVersion: pods.ResourceVersion})
	if err != nil {
		cancel()
		return nil, err
	}
	claimW, err := sb.Kube.CoreV1().PersistentVolumeClaims(ns).Watch(ctx, metav1.ListOptions{ResourceVersion: claims.ResourceVersion})
	if err != nil {
		podW.Stop()
		cancel()
		return nil, err
	}
	stsW, err := sb.Kube.AppsV1().StatefulSets(ns).Watch(ctx, metav1.ListOptions{ResourceVersion: sets.ResourceVersion})
	if err != nil {
		podW.Stop()
		claimW.Stop()
		cancel()
		return nil, err
	}
	revW, err := sb.Kube.AppsV1().ControllerRevisions(ns).Watch(ctx, metav1.ListOptions{ResourceVersion: sets.ResourceVersion})
	if err != nil {
		podW.Stop()
		claimW.Stop()
		stsW.Stop()
		cancel()
		return nil, err
	}
	follow(t, revW, func(ev watch.EventType, r *appsv1.ControllerRevision) {
		if ref := metav1.GetControllerOf(r); ref != nil && ref.Name == sts && ref.UID != oldSTS && ev != watch.Deleted {
			t.mark("revision")
		}
	})
	follow(t, podW, func(ev watch.EventType, p *corev1.Pod) {
		if p.Name != pod {
			return
		}
		switch {
		case p.UID == oldPod && ev == watch.Deleted:
			t.mark("pod-gone")
		case p.UID == oldPod && p.DeletionTimestamp != nil:
			t.mark("pod-deleting")
		case p.UID != oldPod && ev != watch.Deleted:
			t.mark("pod-created")
			if p.Spec.NodeName != "" {
				t.mark("pod-scheduled")
			}
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
					t.mark("pod-ready")
				}
			}
		}
	})
	follow(t, claimW, func(ev watch.EventType, c *corev1.PersistentVolumeClaim) {
		if c.Name != claim {
			return
		}
		switch {
		case c.UID == oldClaim && ev == watch.Deleted:
			t.mark("old-claim-gone")
		case c.UID != oldClaim && ev != watch.Deleted:
			t.mark("claim-created")
			if c.Status.Phase == corev1.ClaimBound {
				t.mark("claim-bound")
			}
		}
	})
	follow(t, stsW, func(ev watch.EventType, s *appsv1.StatefulSet) {
		if s.Name == sts && s.UID != oldSTS && ev != watch.Deleted {
			t.mark("sts-created")
		}
	})
	return t, nil
}

func uidOf[T any](items []T, name string, meta func(T) metav1.ObjectMeta) types.UID {
	for _, it := range items {
		if m := meta(it); m.Name == name {
			return m.UID
		}
	}
	return ""
}

func follow[T any](t *outageTrace, w watch.Interface, on func(watch.EventType, T)) {
	t.wg.Go(func() {
		defer w.Stop()
		for ev := range w.ResultChan() {
			if ev.Type == watch.Error {
				if t.ctx.Err() != nil {
					return // Stop ended the watch
				}
				t.mu.Lock()
				t.errs = append(t.errs, fmt.Errorf("trace watch: %v", ev.Object))
				t.mu.Unlock()
				return
			}
			if obj, ok := ev.Object.(T); ok {
				on(ev.Type, obj)
			}
		}
	})
}

// mark keeps the first time a phase was seen.
func (t *outageTrace) mark(phase string) { t.markAt(phase, time.Now()) }

func (t *outageTrace) markAt(phase string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.marks[phase]; !ok {
		t.marks[phase] = at
	}
}

// Stop ends the watches and returns each phase's offset from the start of
// the outage (the serving pod's deletion), or an error when the watches
// missed the start.
func (t *outageTrace) Stop() (map[string]time.Duration, error) {
	t.cancel()
	t.wg.Wait()
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.errs) > 0 {
		return nil, t.errs[0]
	}
	start, ok := t.marks["pod-deleting"]
	if !ok {
		return nil, fmt.Errorf("trace of %s/%s: the pod's deletion was not seen", t.ns, t.pod)
	}
	out := map[string]time.Duration{}
	for p, at := range t.marks {
		out[p] = at.Sub(start)
	}
	return out, nil
}

// phaseTable renders the median offset of each phase and the median gap
// from the phase before it (within each round), so the table says where
// the milliseconds of a median outage go.
func phaseTable(rounds []map[string]time.Duration) string {
	var b strings.Builder
	prev := ""
	for _, p := range outagePhases {
		var at, gap []time.Duration
		for _, r := range rounds {
			d, ok := r[p]
			if !ok {
				continue
			}
			at = append(at, d)
			if prev != "" {
				if pd, ok := r[prev]; ok {
					gap = append(gap, d-pd)
				}
			}
		}
		if len(at) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n  %-15s at %6.1f ms", p, ms(median(at)))
		if len(gap) > 0 {
			slices.Sort(gap)
			fmt.Fprintf(&b, "  (+%5.1f ms after %s, range %.1f..%.1f)", ms(median(gap)), prev, ms(gap[0]), ms(gap[len(gap)-1]))
		}
		fmt.Fprintf(&b, "  [%d rounds]", len(at))
		prev = p
	}
	return b.String()
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
