package volume

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/rebind-dev/rebind/pkg/waits"
)

// PVCProtectionFinalizer is the finalizer kube-controller-manager's
// pvc-protection controller keeps on a claim while a pod may mount it.
const PVCProtectionFinalizer = "kubernetes.io/pvc-protection"

// StillMounted says which pods kept a deleted claim from going.
type StillMounted struct {
	Namespace, Claim string
	Pods             []string // "name (node n)"
	Timeout          time.Duration
}

func (e *StillMounted) Error() string {
	return fmt.Sprintf("claim %s/%s is still in use by pod(s) %s after %s: rebind never releases a claim a scheduled pod names; stop those pods (the claim then goes) and re-run",
		e.Namespace, e.Claim, strings.Join(e.Pods, ", "), e.Timeout)
}

// ReleaseDeletedClaim waits until the claim of that name and uid, which is
// being deleted, is gone, so that the name can be used again; it reports
// whether it had to wait. A live claim, or none, returns at once; a deleted
// claim of another uid, or one that another finalizer still holds, is only
// waited for.
//
// Rather than wait for kube-controller-manager's pvc-protection controller
// to drop its finalizer, it drops the finalizer itself once no scheduled
// pod in the namespace names the claim, which is the controller's own
// test. The controller makes it with a live pod list that the API server
// answers only once its watch cache has caught up with etcd, which can
// take up to 100 ms, all of it Grafana's outage here. This makes the same
// test on a pod list no older than the claim's current version, which the
// watch cache is normally past already: at that version the claim carries
// its deletionTimestamp, and from then on the scheduler does not place,
// and the kubelet does not start, a pod that names it, so a pod that could
// mount the volume is one already scheduled, and it shows in the list. A
// pod counts until it is gone: one that is terminating may still have the
// volume mounted. The finalizer is written away with the claim's
// resourceVersion (a change in between is a conflict, read again), and
// other finalizers are kept. The data is safe either way: only the claim
// goes, and its PersistentVolume keeps the bytes under its reclaim policy
// (rebind deletes a claim only once that is Retain); releasing the claim a
// few milliseconds before the controller would changes when it goes, not
// what happens to its volume. While a pod does name the claim, this keeps
// waiting, and says which pods held it when time runs out
// (*StillMounted). Without the right to update claims it only waits.
func ReleaseDeletedClaim(ctx context.Context, k kubernetes.Interface, ns, name string, uid types.UID, timeout time.Duration) (bool, error) {
	return prepareRelease(ctx, k, ns, name, uid, timeout)()
}

// ClaimRelease is a ReleaseDeletedClaim going on in the background.
type ClaimRelease struct {
	done   chan struct{}
	waited bool
	err    error
}

// StartRelease makes ReleaseDeletedClaim's reads (the claim, the pods of
// the namespace, a watch on them) before it returns and waits for the
// pods in the background. Started before the pods are stopped, those
// reads are not part of the outage: only the write that releases the
// claim is.
func StartRelease(ctx context.Context, k kubernetes.Interface, ns, name string, uid types.UID, timeout time.Duration) *ClaimRelease {
	r := &ClaimRelease{done: make(chan struct{})}
	run := prepareRelease(ctx, k, ns, name, uid, timeout)
	go func() {
		defer close(r.done)
		r.waited, r.err = run()
	}()
	return r
}

// Wait returns ReleaseDeletedClaim's result.
func (r *ClaimRelease) Wait(ctx context.Context) (bool, error) {
	select {
	case <-r.done:
		return r.waited, r.err
	case <-ctx.Done():
		return true, ctx.Err()
	}
}

// prepareRelease reads what the release needs and returns the wait.
func prepareRelease(ctx context.Context, k kubernetes.Interface, ns, name string, uid types.UID, timeout time.Duration) func() (bool, error) {
	result := func(waited bool, err error) func() (bool, error) {
		return func() (bool, error) { return waited, err }
	}
	c, err := k.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return result(false, nil)
	}
	if err != nil {
		return result(false, fmt.Errorf("reading claim %s/%s: %w", ns, name, err))
	}
	if c.DeletionTimestamp == nil {
		return result(false, nil)
	}
	if c.UID != uid || !slices.Contains(c.Finalizers, PVCProtectionFinalizer) {
		// Not the claim this run deleted, or held by someone else's
		// finalizer: only wait.
		return func() (bool, error) { return true, WaitClaimGone(ctx, k, ns, name, c.UID, timeout) }
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	users := map[string]string{} // pod name -> node, pods that name the claim
	note := func(p *corev1.Pod, gone bool) {
		if !gone && podNamesClaim(p, name) {
			users[p.Name] = p.Spec.NodeName
		} else {
			delete(users, p.Name)
		}
	}
	pods := k.CoreV1().Pods(ns)
	list, err := pods.List(wctx, metav1.ListOptions{ResourceVersion: c.ResourceVersion, ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan})
	if err != nil {
		cancel()
		return result(true, fmt.Errorf("listing the pods of namespace %s: %w", ns, err))
	}
	for i := range list.Items {
		note(&list.Items[i], false)
	}
	w, err := watchtools.NewRetryWatcherWithContext(wctx, list.ResourceVersion, &cache.ListWatch{
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return pods.Watch(ctx, o)
		},
	})
	if err != nil {
		cancel()
		return result(true, err)
	}
	return func() (bool, error) {
		defer cancel()
		defer w.Stop()
		defer waits.Begin(ctx, fmt.Sprintf("claim %s/%s to be released by its pods", ns, name))()
		for {
			if len(users) == 0 {
				done, next, err := dropProtection(wctx, k, c)
				if err != nil || done {
					if err == nil && next != nil {
						// Another finalizer is left: its owner decides.
						return true, WaitClaimGone(ctx, k, ns, name, uid, timeout)
					}
					return true, err
				}
				c = next // changed in between: test again on the new version
				continue
			}
			select {
			case <-wctx.Done():
				if ctx.Err() != nil {
					return true, fmt.Errorf("waiting for claim %s/%s to be released: %w", ns, name, ctx.Err())
				}
				return true, &StillMounted{Namespace: ns, Claim: name, Pods: describeUsers(users), Timeout: timeout}
			case ev, ok := <-w.ResultChan():
				if !ok {
					// Without a view of the pods, leave it to the controller.
					return true, WaitClaimGone(ctx, k, ns, name, uid, timeout)
				}
				p, isPod := ev.Object.(*corev1.Pod)
				if !isPod {
					continue
				}
				switch ev.Type {
				case watch.Added, watch.Modified:
					note(p, false)
				case watch.Deleted:
					note(p, true)
				}
			}
		}
	}
}

// dropProtection removes the pvc-protection finalizer from c, as of c's
// resourceVersion. done: the claim is gone, or next is what is left of it
// (other finalizers) and only needs waiting for; !done: the claim changed
// in between and next is its new version, still to be tested.
func dropProtection(ctx context.Context, k kubernetes.Interface, c *corev1.PersistentVolumeClaim) (done bool, next *corev1.PersistentVolumeClaim, err error) {
	upd := c.DeepCopy()
	upd.Finalizers = slices.DeleteFunc(upd.Finalizers, func(f string) bool { return f == PVCProtectionFinalizer })
	got, err := k.CoreV1().PersistentVolumeClaims(c.Namespace).Update(ctx, upd, metav1.UpdateOptions{})
	switch {
	case err == nil:
		if len(got.Finalizers) == 0 {
			return true, nil, nil // the API server deleted it with this write
		}
		return true, got, nil
	case apierrors.IsNotFound(err):
		return true, nil, nil
	case apierrors.IsForbidden(err):
		// No right to update claims (it is optional): the controller
		// releases it, a little later.
		return true, c, nil
	case apierrors.IsConflict(err):
		cur, gerr := k.CoreV1().PersistentVolumeClaims(c.Namespace).Get(ctx, c.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(gerr) || (gerr == nil && cur.UID != c.UID) {
			return true, nil, nil
		}
		if gerr != nil {
			return false, nil, fmt.Errorf("reading claim %s/%s: %w", c.Namespace, c.Name, gerr)
		}
		if !slices.Contains(cur.Finalizers, PVCProtectionFinalizer) {
			return true, cur, nil
		}
		return false, cur, nil
	default:
		return false, nil, fmt.Errorf("releasing claim %s/%s (finalizer %s): %w", c.Namespace, c.Name, PVCProtectionFinalizer, err)
	}
}

// podNamesClaim is the pvc-protection controller's test: a scheduled pod
// (whatever its phase, until it is gone) with a volume from the claim, or
// an ephemeral volume whose generated claim has that name.
func podNamesClaim(p *corev1.Pod, claim string) bool {
	if p.Spec.NodeName == "" {
		return false
	}
	for _, v := range p.Spec.Volumes {
		if v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == claim {
			return true
		}
		if v.Ephemeral != nil && p.Name+"-"+v.Name == claim {
			return true
		}
	}
	return false
}

func describeUsers(users map[string]string) []string {
	out := make([]string, 0, len(users))
	for pod, node := range users {
		out = append(out, fmt.Sprintf("%s (node %s)", pod, node))
	}
	sort.Strings(out)
	return out
}
