package drill

import (
	"context"
	"fmt"
	"time"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rebind-dev/rebind/pkg/discovery"
	"github.com/rebind-dev/rebind/pkg/kube"
	"github.com/rebind-dev/rebind/pkg/volume"
)

// cleanup removes everything the drill created, in the order that keeps
// production's data safe: the scratch namespace first (its claims, and with
// them the restored volumes, go with it), then the Retain contents that
// shared the production snapshots' data, and only then the production
// snapshots. It runs on a fresh context: an interrupted drill must still
// clean up.
func (d *Drill) cleanup(parent context.Context, o Options, cl *created, res *Result, log *zap.Logger) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), o.Timeouts.Cleanup)
	defer cancel()
	start := time.Now()
	k, s := d.Clients.Kube, d.Clients.Snap
	left := func(what string, err error) {
		res.Leftovers = append(res.Leftovers, fmt.Sprintf("%s: %v", what, err))
		log.Error("cleanup incomplete", zap.String("object", what), zap.Error(err))
	}

	scratchGone := true
	strangers := d.holdStrangers(ctx, cl, left)
	if ns := cl.namespace; ns != "" {
		what := "namespace " + ns
		err := k.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
		if err == nil || apierrors.IsNotFound(err) {
			err = waitGone(ctx, o.Timeouts.Cleanup, what, kube.NamedLW(k.CoreV1().Namespaces(), ns), &corev1.Namespace{}, describeNamespace)
		}
		if err != nil {
			scratchGone = false
			left(what+" (kubectl delete namespace "+ns+")", err)
		} else {
			res.Cleaned = append(res.Cleaned, what)
			log.Info("scratch namespace deleted", zap.Duration("after", time.Since(start)))
		}
	}

	// Restored volumes still bound to a scratch claim when it was deleted
	// are being deleted by the PV controller (the class's Delete policy);
	// wait, so that "nothing left behind" holds when the drill returns.
	if cl.namespace != "" && scratchGone {
		pvs := map[string]bool{}
		for _, n := range cl.pvs {
			pvs[n] = true
		}
		if list, err := k.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{}); err == nil {
			for _, pv := range list.Items {
				if pv.Spec.ClaimRef != nil && pv.Spec.ClaimRef.Namespace == cl.namespace && !strangers[pv.Name] {
					pvs[pv.Name] = true
				}
			}
		}
		for name := range pvs {
			what := "restored PersistentVolume " + name
			err := waitGone(ctx, o.Timeouts.Cleanup, what, kube.PVLW(k, name), &corev1.PersistentVolume{}, describePV)
			if err != nil {
				left(what, err)
			} else {
				res.Cleaned = append(res.Cleaned, what)
			}
		}
	}

	for _, name := range cl.contents {
		what := "VolumeSnapshotContent " + name
		if !scratchGone {
			left(what, fmt.Errorf("kept while the scratch namespace still exists"))
			continue
		}
		err := d.deleteContent(ctx, o, name)
		if err != nil {
			left(what, err)
		} else {
			res.Cleaned = append(res.Cleaned, what)
		}
	}

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
			left(what, fmt.Errorf("kept while the scratch namespace still exists; delete it afterwards"))
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
	return waitGone(ctx, o.Timeouts.Cleanup, "VolumeSnapshotContent "+name, kube.NamedLW(c, name), &snapv1.VolumeSnapshotContent{}, describeContent)
}

// Event reasons on the production StatefulSet.
const (
	ReasonSucceeded = "DrillSucceeded"
	ReasonFailed    = "DrillFailed"
)

// emitEvent records the outcome on the production StatefulSet, where
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
		InvolvedObject: corev1.ObjectReference{Kind: "StatefulSet", APIVersion: "apps/v1", Namespace: t.Namespace, Name: t.Name(),
			UID: t.StatefulSet.UID, ResourceVersion: t.StatefulSet.ResourceVersion},
		Reason: reason, Message: msg, Type: typ,
		Source:         corev1.EventSource{Component: "rebind-drill"},
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
		ReportingController: "rebind.dev/drill", ReportingInstance: hostname(),
		Action: "Drill",
	}
	if _, err := d.Clients.Kube.CoreV1().Events(t.Namespace).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		d.log().Warn("could not record the drill's Event on the StatefulSet", zap.String("target", res.Target()), zap.Error(err))
	}
}

// holdStrangers protects volumes bound to a scratch claim that the drill
// did not restore (the binder can hand a restore claim any Available PV of
// its class; the restore gives such volumes back, but a killed drill may
// not have): deleting the scratch namespace would otherwise delete them
// with their claim. Each gets Retain and is reported, never deleted.
func (d *Drill) holdStrangers(ctx context.Context, cl *created, left func(string, error)) map[string]bool {
	out := map[string]bool{}
	if cl.namespace == "" {
		return out
	}
	ours := map[string]bool{}
	for _, n := range cl.pvs {
		ours[n] = true
	}
	list, err := d.Clients.Kube.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		left("checking for volumes bound into "+cl.namespace+" by mistake", err)
		return out
	}
	for _, pv := range list.Items {
		if pv.Spec.ClaimRef == nil || pv.Spec.ClaimRef.Namespace != cl.namespace || ours[pv.Name] {
			continue
		}
		out[pv.Name] = true
		_, err := volume.SetReclaimPolicyIf(ctx, d.Clients.Kube, pv.Name, corev1.PersistentVolumeReclaimRetain, volume.ClaimedBy(cl.namespace, pv.Spec.ClaimRef.Name), false)
		if err == nil {
			err = fmt.Errorf("not restored by the drill but bound to scratch claim %s; kept with reclaim policy Retain (was %s): once the namespace is gone, give it back with `kubectl patch pv %s --type json -p '[{\"op\":\"remove\",\"path\":\"/spec/claimRef\"}]'` and set its policy back",
				pv.Spec.ClaimRef.Name, pv.Spec.PersistentVolumeReclaimPolicy, pv.Name)
		}
		left("PersistentVolume "+pv.Name, err)
	}
	return out
}
