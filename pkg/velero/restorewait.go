package velero

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	"go.uber.org/zap"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
)

// StillRunningError is a Restore rebind stopped waiting for while Velero
// still has it queued or running. Velero cannot be told to stop a Restore,
// so whatever it needs (the storage-class mapping above all: without it the
// Restore would restore into the original class) stays in place.
type StillRunningError struct {
	Namespace, Name string
	Phase           string // "" while queued
	Waited          time.Duration
	Ahead           []string // Restores in the way, when queued
}

func (e *StillRunningError) Error() string {
	state := "in phase " + e.Phase
	if e.Phase == "" {
		state = "still queued (no phase yet)"
		if len(e.Ahead) > 0 {
			state += " behind " + strings.Join(e.Ahead, ", ")
		}
	}
	return fmt.Sprintf("Velero Restore %s/%s is %s after %s; Velero will go on with it, so rebind keeps what it needs in place (the storage-class mapping, the staging namespace): re-run the same command to keep waiting (raise --velero-restore-timeout), or run `rebind rollback` once it has ended (`velero restore get %s -n %s`)",
		e.Namespace, e.Name, state, e.Waited.Round(time.Second), e.Name, e.Namespace)
}

// restoreQueue is what a Restore waits for: Velero v1.18's restore
// controller has one worker (controller-runtime's default, no
// MaxConcurrentReconciles in its SetupWithManager) and a reconcile runs the
// whole restore (pkg/controller/restore_controller.go), so Restores without
// a phase wait until the running one has left InProgress.
type restoreQueue struct {
	self   *velerov1.Restore
	active []string // Restores Velero is running now
	ahead  []string // unstarted Restores created before self
}

func newRestoreQueue(items []any, name string) (restoreQueue, error) {
	var q restoreQueue
	var all []*velerov1.Restore
	for _, it := range items {
		u, ok := it.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		r, err := fromUnstructured[velerov1.Restore](u)
		if err != nil {
			return q, err
		}
		all = append(all, r)
		if r.Name == name {
			q.self = r
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].CreationTimestamp.Before(&all[j].CreationTimestamp) })
	for _, r := range all {
		switch {
		case r.Name == name:
		case r.Status.Phase == velerov1.RestorePhaseInProgress:
			q.active = append(q.active, r.Name)
		case (r.Status.Phase == "" || r.Status.Phase == velerov1.RestorePhaseNew) && q.self != nil && r.CreationTimestamp.Before(&q.self.CreationTimestamp):
			q.ahead = append(q.ahead, r.Name)
		}
	}
	return q, nil
}

func (q restoreQueue) describe(ref string) string {
	switch p := q.self.Status.Phase; p {
	case "", velerov1.RestorePhaseNew:
		in := append(append([]string(nil), q.active...), q.ahead...)
		if len(in) == 0 {
			return ref + " waits for the Velero server to pick it up"
		}
		return fmt.Sprintf("%s is queued: Velero runs one Restore at a time, %d ahead (%s)", ref, len(in), strings.Join(in, ", "))
	default:
		line := fmt.Sprintf("%s is %s", ref, p)
		if pr := q.self.Status.Progress; pr != nil && pr.TotalItems > 0 {
			line += fmt.Sprintf(" (%d of %d items)", pr.ItemsRestored, pr.TotalItems)
		}
		return line
	}
}

// WaitRestore watches a Restore until it ends; any end but Completed is an
// error. A Restore with no phase is queued as long as Velero runs another
// one (see restoreQueue); rebind waits for it up to w.Timeout, with
// progress lines. Only a Restore that got no phase while no other Restore
// ran for a whole w.Pickup means no server: it is then deleted, if it is
// still unstarted (a conditional delete on the version that had no phase),
// so that it can never run later behind rebind's back, and a NotReadyError
// says so. At w.Timeout a Restore Velero still holds is left to Velero and
// reported as a StillRunningError.
func (c *Client) WaitRestore(ctx context.Context, name string, w Wait) (*velerov1.Restore, error) {
	w = w.withDefaults()
	ref := fmt.Sprintf("Velero Restore %s/%s", c.Namespace, name)
	begin := time.Now()
	wctx, cancel := context.WithTimeout(ctx, w.Timeout)
	defer cancel()

	inf := dynamicinformer.NewFilteredDynamicInformer(c.Dyn, RestoresGVR, c.Namespace, 0, cache.Indexers{}, nil).Informer()
	changed := make(chan struct{}, 1)
	poke := func(any) {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: poke, UpdateFunc: func(_, n any) { poke(n) }, DeleteFunc: poke}); err != nil {
		return nil, err
	}
	go inf.RunWithContext(wctx)
	if !cache.WaitForCacheSync(wctx.Done(), inf.HasSynced) {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("listing Velero Restores in %s: no answer within %s", c.Namespace, w.Timeout)
	}

	pickup := time.NewTimer(w.Pickup)
	defer pickup.Stop()
	tick := time.NewTicker(w.ProgressEvery)
	defer tick.Stop()
	lastBusy := begin
	var line string
	var q restoreQueue
	for {
		var err error
		if q, err = newRestoreQueue(inf.GetStore().List(), name); err != nil {
			return nil, err
		}
		if q.self == nil {
			return nil, fmt.Errorf("%s was deleted while rebind waited for it (by someone else: rebind deletes only a Restore no server picked up)", ref)
		}
		if done, err := RestoreOutcome(q.self); done {
			return q.self, err
		}
		if len(q.active) > 0 || (q.self.Status.Phase != "" && q.self.Status.Phase != velerov1.RestorePhaseNew) {
			lastBusy = time.Now()
		}
		if l := q.describe(ref); l != line {
			line = l
			w.progress(line)
			c.Log.Info("restore waiting", zap.String("restore", name), zap.String("state", line))
		}
		select {
		case <-changed:
		case <-tick.C:
			w.progress(fmt.Sprintf("%s (waited %s)", line, time.Since(begin).Round(time.Second)))
		case <-pickup.C:
			if len(q.active) > 0 {
				lastBusy = time.Now() // still running, maybe with no event for a while
			}
			idle := time.Since(lastBusy)
			if q.self.Status.Phase != "" || idle < w.Pickup {
				pickup.Reset(w.Pickup - min(idle, w.Pickup) + time.Millisecond)
				continue
			}
			deleted, err := c.deleteUnstarted(ctx, q.self)
			if err != nil {
				return nil, err
			}
			if deleted {
				return nil, &NotReadyError{
					What: fmt.Sprintf("%s got no phase within %s while no other Restore ran: no Velero server is processing namespace %s; rebind deleted the unstarted Restore so it cannot run later", ref, w.Pickup, c.Namespace),
					Hint: fmt.Sprintf("check the Velero deployment (kubectl -n %s get deploy velero) and its logs, then re-run", c.Namespace),
				}
			}
			pickup.Reset(w.Pickup) // picked up just now: keep waiting
		case <-wctx.Done():
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, &StillRunningError{Namespace: c.Namespace, Name: name, Phase: string(q.self.Status.Phase), Waited: time.Since(begin), Ahead: append(q.active, q.ahead...)}
		}
	}
}

// deleteUnstarted deletes a Restore only in the version that had no phase:
// if the server has picked it up since, the delete conflicts and nothing
// is deleted.
func (c *Client) deleteUnstarted(ctx context.Context, r *velerov1.Restore) (bool, error) {
	if r.Status.Phase != "" && r.Status.Phase != velerov1.RestorePhaseNew {
		return false, nil
	}
	rv := r.ResourceVersion
	err := c.Dyn.Resource(RestoresGVR).Namespace(c.Namespace).Delete(ctx, r.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &rv, UID: &r.UID}})
	switch {
	case err == nil || apierrors.IsNotFound(err):
		c.Log.Info("unstarted restore deleted", zap.String("restore", r.Name))
		return true, nil
	case apierrors.IsConflict(err):
		return false, nil
	}
	return false, fmt.Errorf("deleting unstarted Velero Restore %s/%s: %w", c.Namespace, r.Name, err)
}

// SettleRestore makes sure a Restore of rebind's will not run (or go on
// running) after a rollback: gone or ended is settled; unstarted is deleted
// (conditionally, see deleteUnstarted); one Velero runs is an error, as
// nothing can stop it and the state it leaves is not known yet.
func (c *Client) SettleRestore(ctx context.Context, name string) error {
	r, err := c.GetRestore(ctx, name)
	if apierrors.IsNotFound(errors.Unwrap(err)) {
		return nil
	}
	if err != nil {
		return err
	}
	if done, _ := RestoreOutcome(r); done {
		return nil
	}
	if deleted, err := c.deleteUnstarted(ctx, r); err != nil || deleted {
		return err
	}
	return &StillRunningError{Namespace: c.Namespace, Name: name, Phase: string(r.Status.Phase), Waited: time.Since(r.CreationTimestamp.Time)}
}

// NodeAgentRunning tells whether Velero's node-agent (the data mover and
// file-system backup, a DaemonSet) is installed in the namespace. Velero
// itself checks the same (pkg/nodeagent IsRunning: the DaemonSet exists).
func (c *Client) NodeAgentRunning(ctx context.Context) (bool, error) {
	_, err := c.Kube.AppsV1().DaemonSets(c.Namespace).Get(ctx, NodeAgentDaemonSet, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("looking for Velero's node-agent (DaemonSet %s/%s): %w", c.Namespace, NodeAgentDaemonSet, err)
	}
	return true, nil
}

// NodeAgentDaemonSet is the name `velero install --use-node-agent` and the
// Helm chart give it.
const NodeAgentDaemonSet = "node-agent"
