package drill

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/rebind-dev/rebind/pkg/discovery"
	"github.com/rebind-dev/rebind/pkg/kube"
	"github.com/rebind-dev/rebind/pkg/volume"
)

// cleanup removes everything the drill created, in the order that keeps
// production's data safe: the restored copy first (in the fixed scratch
// namespace exactly the objects carrying this run's label; in the opt-in
// mode the namespace it created), and with its claims the restored
// volumes, then the Retain contents that shared the production snapshots'
// data, and only then the production snapshots. It runs on a fresh
// context: an interrupted drill must still clean up.
func (d *Drill) cleanup(parent context.Context, o Options, cl *created, res *Result, log *zap.Logger) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), o.Timeouts.Cleanup)
	defer cancel()
	start := time.Now()
	left := func(what string, err error) {
		res.Leftovers = append(res.Leftovers, fmt.Sprintf("%s: %v", what, err))
		log.Error("cleanup incomplete", zap.String("object", what), zap.Error(err))
	}

	var scratchGone bool
	if cl.createNamespace {
		scratchGone = d.cleanupCreatedNamespace(ctx, o, cl, res, left, log)
	} else {
		scratchGone = d.cleanupScratchObjects(ctx, o, cl, res, left, log)
	}

	for _, name := range cl.contents {
		what := "VolumeSnapshotContent " + name
		if !scratchGone {
			left(what, fmt.Errorf("kept while the restored copy in %s still exists", cl.namespace))
			continue
		}
		err := d.deleteContent(ctx, o, name)
		if err != nil {
			left(what, err)
		} else {
			res.Cleaned = append(res.Cleaned, what)
		}
	}

	s := d.Clients.Snap
	for _, name := range cl.prodSnapshots {
		what := fmt.Sprintf("VolumeSnapshot %s/%s", cl.prodNamespace, name)
		if o.KeepSnapshot {
			for i := range res.Snapshots {
				if res.Snapshots[i].Snapshot == name {
					res.Notes = append(res.Notes, "kept "+what+" (--keep-snapshot)")
				}
			}
			continue
		}
		if !scratchGone {
			// A restore from it may still be running in the scratch
			// namespace; deleting it would pull the data from under it.
			left(what, fmt.Errorf("kept while the restored copy in %s still exists; delete it afterwards", cl.namespace))
			continue
		}
		err := s.SnapshotV1().VolumeSnapshots(cl.prodNamespace).Delete(ctx, name, metav1.DeleteOptions{})
		if err == nil || apierrors.IsNotFound(err) {
			err = waitGone(ctx, o.Timeouts.Cleanup, what, kube.SnapshotLW(s, cl.prodNamespace, name), &snapv1.VolumeSnapshot{}, describeSnapshot)
		}
		if err != nil {
			left(what, err)
		} else {
			res.Cleaned = append(res.Cleaned, what)
		}
	}
	if len(res.Cleaned) > 0 {
		d.step(res, "cleaned up %d object(s) in %s", len(res.Cleaned), time.Since(start).Round(100*time.Millisecond))
	}
}

// cleanupCreatedNamespace deletes the namespace the opt-in mode created
// and waits for it and the restored volumes to be gone.
func (d *Drill) cleanupCreatedNamespace(ctx context.Context, o Options, cl *created, res *Result, left func(string, error), log *zap.Logger) bool {
	if !cl.namespaceCreated {
		return true // never created: nothing of the copy exists
	}
	start := time.Now()
	k := d.Clients.Kube
	strangers, held := d.holdStrangers(ctx, cl, left)
	ns := cl.namespace
	what := "namespace " + ns
	if !held {
		// Deleting the namespace would delete a volume the drill did not
		// restore with the claim it is bound to.
		left(what+" (kubectl delete namespace "+ns+" once the volumes above are safe)", fmt.Errorf("kept: a volume bound into it could not be protected"))
		return false
	}
	err := k.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
	if err == nil || apierrors.IsNotFound(err) {
		err = waitGone(ctx, o.Timeouts.Cleanup, what, kube.NamedLW(k.CoreV1().Namespaces(), ns), &corev1.Namespace{}, describeNamespace)
	}
	if err != nil {
		left(what+" (kubectl delete namespace "+ns+")", err)
		return false
	}
	res.Cleaned = append(res.Cleaned, what)
	log.Info("scratch namespace deleted", zap.Duration("after", time.Since(start)))

	// Restored volumes still bound to a scratch claim when it was deleted
	// are being deleted by the PV controller (the class's Delete policy);
	// wait, so that "nothing left behind" holds when the drill returns.
	pvs := map[string]bool{}
	for _, n := range cl.pvs {
		pvs[n] = true
	}
	if list, err := k.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{}); err == nil {
		for _, pv := range list.Items {
			if pv.Spec.ClaimRef != nil && pv.Spec.ClaimRef.Namespace == ns && !strangers[pv.Name] {
				pvs[pv.Name] = true
			}
		}
	}
	d.waitVolumesGone(ctx, o, pvs, res, left)
	return true
}

func (d *Drill) waitVolumesGone(ctx context.Context, o Options, pvs map[string]bool, res *Result, left func(string, error)) {
	names := slices.Sorted(maps.Keys(pvs))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = waitGone(ctx, o.Timeouts.Cleanup, "restored PersistentVolume "+name, kube.PVLW(d.Clients.Kube, name), &corev1.PersistentVolume{}, describePV)
		}()
	}
	wg.Wait()
	for i, name := range names {
		what := "restored PersistentVolume " + name
		if errs[i] != nil {
			left(what, errs[i])
		} else {
			res.Cleaned = append(res.Cleaned, what)
		}
	}
}

func (d *Drill) deleteContent(ctx context.Context, o Options, name string) error {
	c := d.Clients.Snap.SnapshotV1().VolumeSnapshotContents()
	got, err := c.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	// Checked again right before deleting: a content with Delete would take
	// the production snapshot's data with it.
	if got.Spec.DeletionPolicy != snapv1.VolumeSnapshotContentRetain {
		return fmt.Errorf("has deletionPolicy %s, not Retain: not deleting it, as that would delete the snapshot data production shares", got.Spec.DeletionPolicy)
	}
	err = c.Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &got.UID}})
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	// Polled by name: the drill may not list contents (that would show it
	// every namespace's snapshot handles).
	return pollGone(ctx, o.Timeouts.Cleanup, "VolumeSnapshotContent "+name, func(ctx context.Context) (runtime.Object, error) {
		return c.Get(ctx, name, metav1.GetOptions{})
	}, describeContent)
}

// Event reasons on the production workload.
const (
	ReasonSucceeded = "DrillSucceeded"
	ReasonFailed    = "DrillFailed"
)

// emitEvent records the outcome on the production workload, where
// `kubectl describe` and event exporters see it. Best effort: a missing
// event never changes the drill's outcome.
func (d *Drill) emitEvent(parent context.Context, t *discovery.Target, res *Result) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), 15*time.Second)
	defer cancel()
	reason, typ := ReasonSucceeded, corev1.EventTypeNormal
	if res.Outcome != Passed {
		reason, typ = ReasonFailed, corev1.EventTypeWarning
	}
	msg := res.Summary()
	if len(msg) > 1024 {
		msg = msg[:1021] + "..."
	}
	now := metav1.Now()
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{GenerateName: t.Name() + ".drill-", Namespace: t.Namespace, Labels: map[string]string{LabelManagedBy: ManagedBy, LabelRun: res.RunID}},
		InvolvedObject: corev1.ObjectReference{Kind: t.KindName(), APIVersion: "apps/v1", Namespace: t.Namespace, Name: t.Name(),
			UID: t.Object().GetUID(), ResourceVersion: t.Object().GetResourceVersion()},
		Reason: reason, Message: msg, Type: typ,
		Source:         corev1.EventSource{Component: "rebind-drill"},
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
		ReportingController: "rebind.dev/drill", ReportingInstance: hostname(),
		Action: "Drill",
	}
	if _, err := d.Clients.Kube.CoreV1().Events(t.Namespace).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		d.log().Warn("could not record the drill's Event on the workload", zap.String("target", res.Target()), zap.Error(err))
	}
}

// holdStrangers protects volumes bound to a claim in a namespace the drill
// created that the drill did not restore (the binder can hand a restore
// claim any Available PV of its class; the restore gives such volumes
// back, but a killed drill may not have): deleting the namespace would
// otherwise delete them with their claim. Each gets Retain and is
// reported, never deleted; held is false when one could not be protected.
func (d *Drill) holdStrangers(ctx context.Context, cl *created, left func(string, error)) (strangers map[string]bool, held bool) {
	out := map[string]bool{}
	ours := map[string]bool{}
	for _, n := range cl.pvs {
		ours[n] = true
	}
	list, err := d.Clients.Kube.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		left("checking for volumes bound into "+cl.namespace+" by mistake", err)
		return out, false
	}
	held = true
	for _, pv := range list.Items {
		if pv.Spec.ClaimRef == nil || pv.Spec.ClaimRef.Namespace != cl.namespace || ours[pv.Name] {
			continue
		}
		out[pv.Name] = true
		if !d.holdStranger(ctx, &pv, cl.namespace, left) {
			held = false
		}
	}
	return out, held
}

// holdStranger sets Retain on a volume the drill did not restore but that
// is bound to a claim in the scratch namespace, and reports it; false when
// it could not.
func (d *Drill) holdStranger(ctx context.Context, pv *corev1.PersistentVolume, ns string, left func(string, error)) bool {
	_, err := volume.SetReclaimPolicyIf(ctx, d.Clients.Kube, pv.Name, corev1.PersistentVolumeReclaimRetain, volume.ClaimedBy(ns, pv.Spec.ClaimRef.Name), false)
	if err == nil {
		left("PersistentVolume "+pv.Name, fmt.Errorf("not restored by the drill but bound to scratch claim %s; kept with reclaim policy Retain (was %s): once the claim is gone, give it back with `kubectl patch pv %s --type json -p '[{\"op\":\"remove\",\"path\":\"/spec/claimRef\"}]'` and set its policy back",
			pv.Spec.ClaimRef.Name, pv.Spec.PersistentVolumeReclaimPolicy, pv.Name))
		return true
	}
	left("PersistentVolume "+pv.Name, fmt.Errorf("not restored by the drill but bound to scratch claim %s/%s, and setting reclaim policy Retain failed (%w): its claim is kept so that the volume is not deleted with it", ns, pv.Spec.ClaimRef.Name, err))
	return false
}
