package migrate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"go.uber.org/zap"

	"github.com/rebind-dev/rebind/pkg/app"
	"github.com/rebind-dev/rebind/pkg/journal"
	"github.com/rebind-dev/rebind/pkg/kube"
	"github.com/rebind-dev/rebind/pkg/plan"
	"github.com/rebind-dev/rebind/pkg/snapshot"
	"github.com/rebind-dev/rebind/pkg/volume"
	"github.com/rebind-dev/rebind/pkg/workload"
)

// env is what every step needs.
type env struct {
	c        *kube.Clients
	j        *journal.Journal
	spec     *Spec
	checker  app.Checker
	log      *zap.Logger
	baseline string // file given with --baseline
	verdicts []app.Verdict
	warnings []string // what the user must act on after the run
}

// appKind names the application for messages; rollback runs without a
// checker, as it verifies nothing.
func (e *env) appKind() string {
	if e.checker == nil {
		return "application"
	}
	return e.checker.Kind()
}

// warn logs what the user must know and keeps it for the report.
func (e *env) warn(msg string) {
	e.log.Warn(msg)
	e.warnings = append(e.warnings, msg)
}

func (e *env) value(key string) string {
	v, _ := e.j.Value(key)
	return v
}

// pvFor is the PV an ordinal ends up on: its own for reuse, the restored
// one (known once the restore step ran) otherwise.
func (e *env) pvFor(ord int) (string, error) {
	if e.spec.Strategy == Reuse {
		return e.spec.Target.Ordinals[ord].PV.Name, nil
	}
	pv := e.value(keyNewPV(ord))
	if pv == "" {
		return "", fmt.Errorf("no restored PersistentVolume recorded for ordinal %d yet", ord)
	}
	return pv, nil
}

// targetPV reads the PV an ordinal ends up on.
func (e *env) targetPV(ctx context.Context, ord int) (string, *corev1.PersistentVolume, error) {
	name, err := e.pvFor(ord)
	if err != nil {
		return "", nil, err
	}
	pv, err := e.getPV(ctx, name)
	return name, pv, err
}

func (e *env) getPV(ctx context.Context, name string) (*corev1.PersistentVolume, error) {
	pv, err := e.c.Kube.CoreV1().PersistentVolumes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading PersistentVolume %s: %w", name, err)
	}
	return pv, nil
}

func (e *env) requireRetain(ctx context.Context, pvName string) error {
	pv, err := e.getPV(ctx, pvName)
	if err != nil {
		return err
	}
	if pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimRetain {
		return fmt.Errorf("PersistentVolume %s has reclaim policy %s: deleting its claim now would destroy it; rebind sets Retain first, so something changed it back", pvName, pv.Spec.PersistentVolumeReclaimPolicy)
	}
	return nil
}

// ---------------------------------------------------------------- baseline

type baselineStep struct{ *env }

func (s baselineStep) ID() string { return "baseline" }
func (s baselineStep) Describe() string {
	if s.baseline != "" {
		return "load baseline inventory from " + s.baseline
	}
	return fmt.Sprintf("record what %s serves (baseline for verification)", s.appKind())
}
func (s baselineStep) Precondition(context.Context) error { return nil }
func (s baselineStep) Apply(ctx context.Context) error {
	for i, o := range s.spec.Target.Ordinals {
		if b, _ := s.j.Blob(keyBaseline(i)); b != nil {
			continue
		}
		var data []byte
		var err error
		if s.baseline != "" {
			data, err = os.ReadFile(s.baseline)
		} else {
			data, err = s.checker.Capture(ctx, o.Pod)
		}
		if err != nil {
			return fmt.Errorf("baseline of pod %s: %w", o.Pod, err)
		}
		if err := s.j.SetBlob(ctx, keyBaseline(i), data); err != nil {
			return err
		}
	}
	return nil
}
func (s baselineStep) Check(context.Context) error {
	for i := range s.spec.Target.Ordinals {
		if b, err := s.j.Blob(keyBaseline(i)); err != nil || b == nil {
			return fmt.Errorf("baseline of ordinal %d missing", i)
		}
	}
	return nil
}
func (s baselineStep) Undo(context.Context) error { return nil }

// ---------------------------------------------------------------- retain

type retainStep struct {
	*env
	pv    string
	claim string // the ordinal's original claim, the only owner allowed a policy change back
}

func (s retainStep) ID() string { return "retain/" + s.pv }
func (s retainStep) Describe() string {
	return fmt.Sprintf("set reclaim policy Retain on PersistentVolume %s", s.pv)
}
func (s retainStep) Precondition(ctx context.Context) error {
	_, err := s.getPV(ctx, s.pv)
	return err
}
func (s retainStep) Apply(ctx context.Context) error {
	pv, err := s.getPV(ctx, s.pv)
	if err != nil {
		return err
	}
	// Recorded before the change: a crash between the two must not lose
	// the original policy. SetValue keeps the first value it saw.
	if err := s.j.SetValue(ctx, keyReclaim(s.pv), string(pv.Spec.PersistentVolumeReclaimPolicy)); err != nil {
		return err
	}
	_, err = volume.SetReclaimPolicy(ctx, s.c.Kube, s.pv, corev1.PersistentVolumeReclaimRetain, false)
	return err
}
func (s retainStep) Check(ctx context.Context) error { return s.requireRetain(ctx, s.pv) }
func (s retainStep) Undo(ctx context.Context) error {
	orig := corev1.PersistentVolumeReclaimPolicy(s.value(keyReclaim(s.pv)))
	if orig == "" || orig == corev1.PersistentVolumeReclaimRetain {
		return nil
	}
	pv, err := s.c.Kube.CoreV1().PersistentVolumes().Get(ctx, s.pv, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if pv.Status.Phase != corev1.VolumeBound {
		// Delete on an unbound PV would destroy it: keep Retain and say so.
		s.log.Warn("leaving reclaim policy Retain on an unbound PersistentVolume", zap.String("pv", s.pv), zap.String("original", string(orig)))
		return nil
	}
	_, err = volume.SetReclaimPolicyIf(ctx, s.c.Kube, s.pv, orig, volume.ClaimedBy(s.spec.ns(), s.claim), false)
	return err
}
func (s retainStep) ServerDryRun(ctx context.Context) error {
	_, err := volume.SetReclaimPolicy(ctx, s.c.Kube, s.pv, corev1.PersistentVolumeReclaimRetain, true)
	return err
}

// ---------------------------------------------------------------- snapshot

type snapshotStep struct {
	*env
	ord int
}

func (s snapshotStep) ID() string { return fmt.Sprintf("snapshot/%d", s.ord) }
func (s snapshotStep) Describe() string {
	o := s.spec.Target.Ordinals[s.ord]
	return fmt.Sprintf("snapshot claim %s as VolumeSnapshot %s (class %s) and wait until ready", o.Claim, s.spec.snapshotName(s.ord), o.SnapshotClass)
}
func (s snapshotStep) Precondition(ctx context.Context) error {
	o := s.spec.Target.Ordinals[s.ord]
	_, err := s.c.Kube.CoreV1().PersistentVolumeClaims(s.spec.ns()).Get(ctx, o.Claim, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("claim %s/%s to snapshot: %w", s.spec.ns(), o.Claim, err)
	}
	return nil
}
func (s snapshotStep) Apply(ctx context.Context) error {
	o := s.spec.Target.Ordinals[s.ord]
	_, err := snapshot.Create(ctx, s.c.Snap, s.spec.ns(), s.spec.snapshotName(s.ord), o.Claim, o.SnapshotClass,
		map[string]string{journal.LabelManagedBy: journal.ManagedBy, journal.LabelTarget: s.spec.sts()})
	if err != nil {
		return err
	}
	_, err = snapshot.WaitReady(ctx, s.c.Snap, s.spec.ns(), s.spec.snapshotName(s.ord), s.spec.Timeouts.Snapshot)
	return err
}
func (s snapshotStep) Check(ctx context.Context) error {
	return snapshot.RequireReady(ctx, s.c.Snap, s.spec.ns(), s.spec.snapshotName(s.ord))
}

// Undo keeps the snapshot: it is a copy, and after a failed migration it
// is the evidence of what the data looked like. It is listed as leftover.
func (s snapshotStep) Undo(context.Context) error { return nil }

// ---------------------------------------------------------------- restore

type restoreStep struct {
	*env
	ord int
}

func (s restoreStep) ID() string { return fmt.Sprintf("restore/%d", s.ord) }
func (s restoreStep) Describe() string {
	return fmt.Sprintf("restore VolumeSnapshot %s into a new %s volume (via claim %s) and keep it with Retain", s.spec.snapshotName(s.ord), s.spec.ToClass, s.spec.stagingClaim(s.ord))
}
func (s restoreStep) Precondition(ctx context.Context) error {
	return snapshot.RequireReady(ctx, s.c.Snap, s.spec.ns(), s.spec.snapshotName(s.ord))
}
func (s restoreStep) Apply(ctx context.Context) error {
	ns, staging := s.spec.ns(), s.spec.stagingClaim(s.ord)
	pvName := s.value(keyNewPV(s.ord))
	if pvName == "" {
		vs, err := snapshot.Get(ctx, s.c.Snap, ns, s.spec.snapshotName(s.ord))
		if err != nil {
			return err
		}
		size := resource.MustParse(s.spec.Size)
		if rs := snapshot.RestoreSize(vs); size.Cmp(rs) < 0 {
			size = rs
		}
		tpl := s.spec.Target.Template().Spec
		rc := snapshot.RestoreClaim{Namespace: ns, Name: staging, Snapshot: vs.Name, StorageClass: s.spec.ToClass, Size: size,
			AccessModes: tpl.AccessModes, VolumeMode: tpl.VolumeMode,
			Labels: map[string]string{journal.LabelManagedBy: journal.ManagedBy, journal.LabelTarget: s.spec.sts()}}
		st, err := s.restoreState()
		if err != nil {
			return err
		}
		_, pv, err := s.restorer(rc).Run(ctx, st)
		if err != nil {
			return err
		}
		pvName = pv.Name
		if err := s.j.SetValue(ctx, keyNewPV(s.ord), pvName); err != nil {
			return err
		}
	}
	pv, err := s.getPV(ctx, pvName)
	if err != nil {
		return err
	}
	if err := s.j.SetValue(ctx, keyReclaim(pvName), string(pv.Spec.PersistentVolumeReclaimPolicy)); err != nil {
		return err
	}
	if _, err := volume.SetReclaimPolicy(ctx, s.c.Kube, pvName, corev1.PersistentVolumeReclaimRetain, false); err != nil {
		return err
	}
	// The staging claim only existed to get the PV provisioned; with the PV
	// on Retain, deleting it releases the PV for the StatefulSet's claim.
	return s.dropStagingClaim(ctx, ns, staging)
}

// restoreState is the restore's progress recorded in the journal: the
// volumes the binder gave the staging claim by mistake, to hand back.
func (s restoreStep) restoreState() (*snapshot.RestoreState, error) {
	st := &snapshot.RestoreState{}
	if raw := s.value(keyRestoreState(s.ord)); raw != "" {
		if err := json.Unmarshal([]byte(raw), st); err != nil {
			return nil, fmt.Errorf("journal value %s: %w", keyRestoreState(s.ord), err)
		}
	}
	return st, nil
}

func (s restoreStep) restorer(rc snapshot.RestoreClaim) *snapshot.Restorer {
	return &snapshot.Restorer{Kube: s.c.Kube, Claim: rc, Timeout: s.spec.Timeouts.Snapshot,
		Save: func(st *snapshot.RestoreState) error {
			b, err := json.Marshal(st)
			if err != nil {
				return err
			}
			return s.j.PutValue(context.Background(), keyRestoreState(s.ord), string(b))
		},
		Warn: s.warn}
}

func (s restoreStep) Check(ctx context.Context) error {
	pvName := s.value(keyNewPV(s.ord))
	if pvName == "" {
		return errors.New("no restored PersistentVolume recorded")
	}
	if err := s.requireRetain(ctx, pvName); err != nil {
		return err
	}
	_, err := s.c.Kube.CoreV1().PersistentVolumeClaims(s.spec.ns()).Get(ctx, s.spec.stagingClaim(s.ord), metav1.GetOptions{})
	if err == nil {
		return fmt.Errorf("staging claim %s still exists", s.spec.stagingClaim(s.ord))
	}
	return nil
}

// Undo removes the staging claim but never the restored PV: it stays with
// Retain and is reported, because a PV is never deleted by rebind.
func (s restoreStep) Undo(ctx context.Context) error {
	ns, staging := s.spec.ns(), s.spec.stagingClaim(s.ord)
	if pv := s.value(keyNewPV(s.ord)); pv != "" {
		if _, err := volume.SetReclaimPolicy(ctx, s.c.Kube, pv, corev1.PersistentVolumeReclaimRetain, false); err != nil && !apierrors.IsNotFound(errors.Unwrap(err)) {
			return err
		}
	}
	// Someone else's volumes bound by mistake go back first, which also
	// deletes the staging claim when it holds one of them.
	st, err := s.restoreState()
	if err != nil {
		return err
	}
	if err := s.restorer(snapshot.RestoreClaim{Namespace: ns, Name: staging}).GiveBack(ctx, st); err != nil {
		return err
	}
	return s.dropStagingClaim(ctx, ns, staging)
}

// dropStagingClaim deletes a claim that only served to provision or
// restore a PV, and waits until it is gone; it refuses while that PV is not
// Retain, since deleting the claim would then delete the data.
func (e *env) dropStagingClaim(ctx context.Context, ns, name string) error {
	c, err := e.c.Kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if c.Spec.VolumeName != "" {
		if err := e.requireRetain(ctx, c.Spec.VolumeName); err != nil {
			return err
		}
	}
	if err := e.c.Kube.CoreV1().PersistentVolumeClaims(ns).Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &c.UID}}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting staging claim %s/%s: %w", ns, name, err)
	}
	return volume.WaitClaimGone(ctx, e.c.Kube, ns, name, c.UID, e.spec.Timeouts.Wait)
}
func (s restoreStep) ServerDryRun(ctx context.Context) error {
	tpl := s.spec.Target.Template().Spec
	rc := snapshot.RestoreClaim{Namespace: s.spec.ns(), Name: s.spec.stagingClaim(s.ord), Snapshot: s.spec.snapshotName(s.ord),
		StorageClass: s.spec.ToClass, Size: resource.MustParse(s.spec.Size), AccessModes: tpl.AccessModes, VolumeMode: tpl.VolumeMode}
	_, err := snapshot.CreateRestoreClaim(ctx, s.c.Kube, rc, true)
	return err
}

// ---------------------------------------------------------------- scale down

type scaleDownStep struct{ *env }

func (s scaleDownStep) ID() string { return "scale-down" }
func (s scaleDownStep) Describe() string {
	return fmt.Sprintf("scale StatefulSet %s to 0 and wait until its pods are gone", s.spec.sts())
}
func (s scaleDownStep) Precondition(ctx context.Context) error {
	_, err := s.liveSTS(ctx)
	return err
}

// liveSTS returns the original StatefulSet, refusing one that someone
// recreated under the same name.
func (s scaleDownStep) liveSTS(ctx context.Context) (*appsv1.StatefulSet, error) {
	sts, err := s.c.Kube.AppsV1().StatefulSets(s.spec.ns()).Get(ctx, s.spec.sts(), metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("StatefulSet %s/%s: %w", s.spec.ns(), s.spec.sts(), err)
	}
	if sts.UID != s.spec.Target.StatefulSet.UID {
		return nil, fmt.Errorf("StatefulSet %s/%s was recreated by someone else (uid %s, rebind started with %s)", s.spec.ns(), s.spec.sts(), sts.UID, s.spec.Target.StatefulSet.UID)
	}
	return sts, nil
}
func (s scaleDownStep) Apply(ctx context.Context) error {
	if err := s.j.SetValue(ctx, keyReplicas, fmt.Sprint(s.spec.replicas())); err != nil {
		return err
	}
	if err := workload.Scale(ctx, s.c.Kube, s.spec.ns(), s.spec.sts(), 0); err != nil {
		return err
	}
	for _, o := range s.spec.Target.Ordinals {
		if err := workload.WaitPodGone(ctx, s.c.Kube, s.spec.ns(), o.Pod, s.spec.Timeouts.Wait); err != nil {
			return err
		}
	}
	return nil
}
func (s scaleDownStep) Check(ctx context.Context) error {
	for _, o := range s.spec.Target.Ordinals {
		if _, err := s.c.Kube.CoreV1().Pods(s.spec.ns()).Get(ctx, o.Pod, metav1.GetOptions{}); err == nil {
			return fmt.Errorf("pod %s still exists", o.Pod)
		}
	}
	sts, err := s.c.Kube.AppsV1().StatefulSets(s.spec.ns()).Get(ctx, s.spec.sts(), metav1.GetOptions{})
	if err == nil && sts.UID == s.spec.Target.StatefulSet.UID && ptr.Deref(sts.Spec.Replicas, 1) != 0 {
		return fmt.Errorf("StatefulSet still has %d replicas", ptr.Deref(sts.Spec.Replicas, 1))
	}
	return nil
}
func (s scaleDownStep) Undo(ctx context.Context) error {
	sts, err := s.c.Kube.AppsV1().StatefulSets(s.spec.ns()).Get(ctx, s.spec.sts(), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("StatefulSet %s/%s is gone; cannot scale it back", s.spec.ns(), s.spec.sts())
	}
	if err != nil {
		return err
	}
	if ptr.Deref(sts.Spec.Replicas, 1) != s.spec.replicas() {
		if err := workload.Scale(ctx, s.c.Kube, s.spec.ns(), s.spec.sts(), s.spec.replicas()); err != nil {
			return err
		}
	}
	return workload.WaitReady(ctx, s.c.Kube, s.spec.ns(), s.spec.sts(), s.spec.Timeouts.Wait)
}
func (s scaleDownStep) ServerDryRun(ctx context.Context) error {
	_, err := s.c.Kube.AppsV1().StatefulSets(s.spec.ns()).Patch(ctx, s.spec.sts(), "application/merge-patch+json", []byte(`{"spec":{"replicas":0}}`), metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}}, "scale")
	return err
}

// ---------------------------------------------------------------- orphan delete

// orphanStep deletes the StatefulSet but not its pods or claims. With
// scaledDown the pods are already gone (quiesced restore); otherwise they
// keep serving until stopPodsStep.
type orphanStep struct {
	*env
	scaledDown bool
}

func (s orphanStep) ID() string { return "delete-statefulset" }
func (s orphanStep) Describe() string {
	if s.scaledDown {
		return fmt.Sprintf("delete StatefulSet %s with orphan propagation (its claim template is immutable)", s.spec.sts())
	}
	return fmt.Sprintf("delete StatefulSet %s with orphan propagation; its pods keep serving without a controller (the claim template is immutable)", s.spec.sts())
}
func (s orphanStep) Precondition(ctx context.Context) error {
	for _, o := range s.spec.Target.Ordinals {
		if o.PV != nil {
			if err := s.requireRetain(ctx, o.PV.Name); err != nil {
				return err
			}
		}
	}
	return nil
}
func (s orphanStep) Apply(ctx context.Context) error {
	return workload.DeleteOrphan(ctx, s.c.Kube, s.spec.ns(), s.spec.sts(), s.spec.Target.StatefulSet.UID, s.spec.Timeouts.Wait)
}
func (s orphanStep) Check(ctx context.Context) error {
	sts, err := s.c.Kube.AppsV1().StatefulSets(s.spec.ns()).Get(ctx, s.spec.sts(), metav1.GetOptions{})
	if err == nil && sts.UID == s.spec.Target.StatefulSet.UID {
		return errors.New("original StatefulSet still exists")
	}
	return nil
}

// Undo recreates the original StatefulSet. Pods that still run are adopted
// again; missing ones are created once their original claims are back,
// which the later steps' undos (run before this one) ensured.
func (s orphanStep) Undo(ctx context.Context) error {
	if err := workload.WaitGone(ctx, s.c.Kube, s.spec.ns(), s.spec.sts(), s.spec.Target.StatefulSet.UID, s.spec.Timeouts.Wait); err != nil {
		return err
	}
	_, err := s.c.Kube.AppsV1().StatefulSets(s.spec.ns()).Get(ctx, s.spec.sts(), metav1.GetOptions{})
	if err == nil {
		return nil
	}
	if !apierrors.IsNotFound(err) {
		return err
	}
	orig := workload.Sanitize(s.spec.Target.StatefulSet)
	if s.scaledDown {
		// The scale-down's undo brings the pods back.
		orig.Spec.Replicas = ptr.To(int32(0))
	}
	if _, err := s.c.Kube.AppsV1().StatefulSets(s.spec.ns()).Create(ctx, orig, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("recreating original StatefulSet %s/%s: %w", s.spec.ns(), s.spec.sts(), err)
	}
	if s.scaledDown {
		return nil
	}
	return workload.WaitReady(ctx, s.c.Kube, s.spec.ns(), s.spec.sts(), s.spec.Timeouts.Wait)
}
func (s orphanStep) ServerDryRun(ctx context.Context) error {
	return s.c.Kube.AppsV1().StatefulSets(s.spec.ns()).Delete(ctx, s.spec.sts(), metav1.DeleteOptions{
		PropagationPolicy: ptr.To(metav1.DeletePropagationOrphan), DryRun: []string{metav1.DryRunAll}})
}

// ---------------------------------------------------------------- stop pods

// stopPodsStep starts the outage: it deletes the orphaned pods and does
// not wait, because the old claims (already marked for deletion) go as
// soon as their pods are gone, and that is what the next steps wait for.
type stopPodsStep struct{ *env }

func (s stopPodsStep) ID() string { return "stop-pods" }
func (s stopPodsStep) Describe() string {
	return fmt.Sprintf("stop the pods of %s (%s is down from here until the redeploy is Ready)", s.spec.sts(), s.appKind())
}
func (s stopPodsStep) Precondition(ctx context.Context) error {
	sts, err := s.c.Kube.AppsV1().StatefulSets(s.spec.ns()).Get(ctx, s.spec.sts(), metav1.GetOptions{})
	if err == nil && sts.UID == s.spec.Target.StatefulSet.UID {
		return fmt.Errorf("StatefulSet %s/%s still exists: it would recreate the pods", s.spec.ns(), s.spec.sts())
	}
	return nil
}
func (s stopPodsStep) Apply(ctx context.Context) error {
	for _, o := range s.spec.Target.Ordinals {
		if err := s.stopPod(ctx, o.Pod); err != nil {
			return err
		}
	}
	return nil
}

// stopPod asks the pod of that name to stop, unless it is gone or already
// stopping; it does not wait.
func (e *env) stopPod(ctx context.Context, name string) error {
	ns := e.spec.ns()
	pod, err := e.c.Kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if pod.DeletionTimestamp != nil {
		return nil
	}
	err = e.c.Kube.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &pod.UID}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("deleting pod %s/%s: %w", ns, name, err)
	}
	return nil
}
func (s stopPodsStep) Check(ctx context.Context) error {
	for _, o := range s.spec.Target.Ordinals {
		pod, err := s.c.Kube.CoreV1().Pods(s.spec.ns()).Get(ctx, o.Pod, metav1.GetOptions{})
		if err == nil && pod.DeletionTimestamp == nil {
			return fmt.Errorf("pod %s still runs", o.Pod)
		}
	}
	return nil
}

// Undo has nothing to do: the original StatefulSet, recreated by the
// orphan step's undo, starts the pods again.
func (s stopPodsStep) Undo(context.Context) error { return nil }

// ---------------------------------------------------------------- release old claim

type releaseClaimStep struct {
	*env
	ord int
}

func (s releaseClaimStep) ID() string { return fmt.Sprintf("release-claim/%d", s.ord) }
func (s releaseClaimStep) Describe() string {
	o := s.spec.Target.Ordinals[s.ord]
	return fmt.Sprintf("delete claim %s while %s still serves: it goes when the pod stops (its PersistentVolume %s stays, Retain)", o.Claim, o.Pod, o.PV.Name)
}
func (s releaseClaimStep) Precondition(ctx context.Context) error {
	o := s.spec.Target.Ordinals[s.ord]
	if err := s.requireRetain(ctx, o.PV.Name); err != nil {
		return err
	}
	// No controller may be left to recreate the pod or the claim. A pod
	// that still runs is fine: the claim's protection finalizer holds the
	// deletion, and the mounted volume, until the pod is gone, and with
	// the StatefulSet gone nothing can start a pod on the half-deleted
	// claim (or on a new one from the template) in between.
	sts, err := s.c.Kube.AppsV1().StatefulSets(s.spec.ns()).Get(ctx, s.spec.sts(), metav1.GetOptions{})
	if err == nil && sts.UID == s.spec.Target.StatefulSet.UID {
		return fmt.Errorf("StatefulSet %s/%s still exists; its controller could recreate claim %s", s.spec.ns(), s.spec.sts(), o.Claim)
	}
	return nil
}

// Apply only issues the delete; the claim (or reserve) step waits until
// the old claim is gone, so the deletions of all ordinals overlap.
func (s releaseClaimStep) Apply(ctx context.Context) error {
	o := s.spec.Target.Ordinals[s.ord]
	uid := o.PVC.UID
	err := s.c.Kube.CoreV1().PersistentVolumeClaims(s.spec.ns()).Delete(ctx, o.Claim, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("deleting claim %s/%s: %w", s.spec.ns(), o.Claim, err)
	}
	return nil
}
func (s releaseClaimStep) Check(ctx context.Context) error {
	o := s.spec.Target.Ordinals[s.ord]
	c, err := s.c.Kube.CoreV1().PersistentVolumeClaims(s.spec.ns()).Get(ctx, o.Claim, metav1.GetOptions{})
	if err == nil && c.UID == o.PVC.UID && c.DeletionTimestamp == nil {
		return errors.New("original claim is not being deleted")
	}
	return nil
}

// Undo gives the ordinal its original volume back under the original claim
// name, pre-bound so no other volume can be chosen. A deleted claim cannot
// be taken back: if the run stopped before the pods did, the pod is
// stopped now so the old claim can go, and the orphan step's undo (which
// runs after this one) starts it again on the recreated claim.
func (s releaseClaimStep) Undo(ctx context.Context) error {
	o := s.spec.Target.Ordinals[s.ord]
	ns := s.spec.ns()
	if cur, err := s.c.Kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, o.Claim, metav1.GetOptions{}); err == nil && cur.UID == o.PVC.UID && cur.DeletionTimestamp != nil {
		if err := s.stopPod(ctx, o.Pod); err != nil {
			return err
		}
	}
	if _, err := volume.WaitTerminatingClaim(ctx, s.c.Kube, ns, o.Claim, s.spec.Timeouts.Wait); err != nil {
		return err
	}
	cur, err := s.c.Kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, o.Claim, metav1.GetOptions{})
	if err == nil {
		if cur.Spec.VolumeName != "" && cur.Spec.VolumeName != o.PV.Name {
			return fmt.Errorf("claim %s/%s is bound to PersistentVolume %s, not the original %s; delete it (its volume is Retain) and re-run rollback", ns, o.Claim, cur.Spec.VolumeName, o.PV.Name)
		}
	} else if apierrors.IsNotFound(err) {
		if err := volume.Reserve(ctx, s.c.Kube, o.PV.Name, ns, o.Claim, false); err != nil {
			return err
		}
		claim := &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: o.Claim, Namespace: ns, Labels: o.PVC.Labels},
			Spec:       *o.PVC.Spec.DeepCopy(),
		}
		claim.Spec.VolumeName = o.PV.Name
		claim.Spec.DataSource, claim.Spec.DataSourceRef = nil, nil
		if _, err := s.c.Kube.CoreV1().PersistentVolumeClaims(ns).Create(ctx, claim, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("recreating claim %s/%s on PersistentVolume %s: %w", ns, o.Claim, o.PV.Name, err)
		}
	} else {
		return err
	}
	_, err = volume.WaitClaimBound(ctx, s.c.Kube, ns, o.Claim, o.PV.Name, s.spec.Timeouts.Wait)
	return err
}
func (s releaseClaimStep) ServerDryRun(ctx context.Context) error {
	o := s.spec.Target.Ordinals[s.ord]
	return s.c.Kube.CoreV1().PersistentVolumeClaims(s.spec.ns()).Delete(ctx, o.Claim, metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}})
}

// ---------------------------------------------------------------- reserve

type reserveStep struct {
	*env
	ord int
}

func (s reserveStep) ID() string { return fmt.Sprintf("reserve/%d", s.ord) }
func (s reserveStep) Describe() string {
	pv := "the restored PersistentVolume"
	if s.spec.Strategy == Reuse {
		pv = "PersistentVolume " + s.spec.Target.Ordinals[s.ord].PV.Name
	}
	return fmt.Sprintf("reserve %s for claim %s (claimRef namespace/name, no uid)", pv, s.spec.Target.Ordinals[s.ord].Claim)
}
func (s reserveStep) Precondition(ctx context.Context) error {
	pvName, pv, err := s.targetPV(ctx, s.ord)
	if err != nil {
		return err
	}
	if err := s.requireRetain(ctx, pvName); err != nil {
		return err
	}
	return volume.CheckReservable(ctx, s.c.Kube, pv, s.spec.ns(), s.spec.Target.Ordinals[s.ord].Claim)
}
func (s reserveStep) Apply(ctx context.Context) error {
	pvName, pv, err := s.targetPV(ctx, s.ord)
	if err != nil {
		return err
	}
	// While a claim of that name still exists the binder treats a claimRef
	// without uid as that claim's and writes its uid back: the old claim
	// must be completely gone first (reuse deletes it just before).
	claim := s.spec.Target.Ordinals[s.ord].Claim
	if waited, err := volume.WaitTerminatingClaim(ctx, s.c.Kube, s.spec.ns(), claim, s.spec.Timeouts.Wait); err != nil {
		return err
	} else if waited {
		if pv, err = s.getPV(ctx, pvName); err != nil {
			return err
		}
	}
	prior := ""
	if pv.Spec.ClaimRef != nil {
		b, _ := json.Marshal(pv.Spec.ClaimRef)
		prior = string(b)
	}
	if err := s.j.SetValue(ctx, keyClaimRef(pvName), prior); err != nil {
		return err
	}
	return volume.Reserve(ctx, s.c.Kube, pvName, s.spec.ns(), s.spec.Target.Ordinals[s.ord].Claim, false)
}
func (s reserveStep) Check(ctx context.Context) error {
	pvName, pv, err := s.targetPV(ctx, s.ord)
	if err != nil {
		return err
	}
	if !volume.IsReservedFor(pv, s.spec.ns(), s.spec.Target.Ordinals[s.ord].Claim) {
		return fmt.Errorf("PersistentVolume %s is not reserved for %s", pvName, s.spec.Target.Ordinals[s.ord].Claim)
	}
	return nil
}

// Undo puts the claimRef back as it was, which leaves the PV Released and
// reserved for nobody alive: no claim can grab it.
func (s reserveStep) Undo(ctx context.Context) error {
	pvName, err := s.pvFor(s.ord)
	if err != nil {
		return nil
	}
	prior, ok := s.j.Value(keyClaimRef(pvName))
	if !ok || prior == "" {
		return nil
	}
	var ref corev1.ObjectReference
	if err := json.Unmarshal([]byte(prior), &ref); err != nil {
		return err
	}
	pv, err := s.getPV(ctx, pvName)
	if err != nil {
		return err
	}
	claim := s.spec.Target.Ordinals[s.ord].Claim
	if c, err := s.c.Kube.CoreV1().PersistentVolumeClaims(s.spec.ns()).Get(ctx, claim, metav1.GetOptions{}); err == nil && c.Spec.VolumeName == pvName {
		return fmt.Errorf("claim %s/%s still uses PersistentVolume %s", s.spec.ns(), claim, pvName)
	}
	if !volume.IsReservedFor(pv, s.spec.ns(), claim) {
		return nil
	}
	if ref.Namespace == s.spec.ns() && ref.Name == claim {
		// The original claim of that name: the release-claim undo binds it.
		return nil
	}
	pv.Spec.ClaimRef = &ref
	_, err = s.c.Kube.CoreV1().PersistentVolumes().Update(ctx, pv, metav1.UpdateOptions{})
	return err
}
func (s reserveStep) ServerDryRun(ctx context.Context) error {
	if s.spec.Strategy != Reuse {
		return plan.ErrDryRunSkipped
	}
	return volume.Reserve(ctx, s.c.Kube, s.spec.Target.Ordinals[s.ord].PV.Name, s.spec.ns(), s.spec.Target.Ordinals[s.ord].Claim, true)
}

// ---------------------------------------------------------------- pre-bound claim

type claimStep struct {
	*env
	ord int
}

func (s claimStep) ID() string { return fmt.Sprintf("claim/%d", s.ord) }
func (s claimStep) Describe() string {
	return fmt.Sprintf("create claim %s pre-bound (volumeName) in class %s", s.spec.Target.Ordinals[s.ord].Claim, s.spec.ToClass)
}
func (s claimStep) claim(pvName string) *corev1.PersistentVolumeClaim {
	sts := s.spec.Target.StatefulSet
	labels := map[string]string{}
	for k, v := range s.spec.Target.Template().Labels {
		labels[k] = v
	}
	// The StatefulSet controller labels the claims it makes with the pod
	// selector; do the same so tooling that selects them still does.
	if sts.Spec.Selector != nil {
		for k, v := range sts.Spec.Selector.MatchLabels {
			labels[k] = v
		}
	}
	spec := s.spec.templateSpec()
	spec.VolumeName = pvName
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: s.spec.Target.Ordinals[s.ord].Claim, Namespace: s.spec.ns(), Labels: labels, Annotations: s.spec.Target.Template().Annotations},
		Spec:       spec,
	}
}
func (s claimStep) Precondition(ctx context.Context) error {
	pvName, pv, err := s.targetPV(ctx, s.ord)
	if err != nil {
		return err
	}
	c := s.claim(pvName)
	return volume.CheckFits(pv, volume.ShapeFromSpec(c.Namespace, c.Name, c.Spec))
}
func (s claimStep) Apply(ctx context.Context) error {
	pvName, err := s.pvFor(s.ord)
	if err != nil {
		return err
	}
	c := s.claim(pvName)
	// The old claim of this name may still be finishing its deletion.
	if _, err := volume.WaitTerminatingClaim(ctx, s.c.Kube, c.Namespace, c.Name, s.spec.Timeouts.Wait); err != nil {
		return err
	}
	got, err := s.c.Kube.CoreV1().PersistentVolumeClaims(c.Namespace).Create(ctx, c, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		got, err = s.c.Kube.CoreV1().PersistentVolumeClaims(c.Namespace).Get(ctx, c.Name, metav1.GetOptions{})
		if err == nil && got.Spec.VolumeName != pvName {
			return fmt.Errorf("claim %s/%s exists bound to %q, not %s (did the StatefulSet controller recreate it?); delete it and re-run", c.Namespace, c.Name, got.Spec.VolumeName, pvName)
		}
	}
	if err != nil {
		return fmt.Errorf("creating claim %s/%s: %w", c.Namespace, c.Name, err)
	}
	return nil
}

// Check accepts a claim that names the PV but is not Bound yet: with
// volumeName set and the PV reserved for it, no other volume can be
// chosen, and the binds of all ordinals overlap; the redeploy waits for
// them.
func (s claimStep) Check(ctx context.Context) error {
	pvName, err := s.pvFor(s.ord)
	if err != nil {
		return err
	}
	c, err := s.c.Kube.CoreV1().PersistentVolumeClaims(s.spec.ns()).Get(ctx, s.spec.Target.Ordinals[s.ord].Claim, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if c.Spec.VolumeName != pvName || c.DeletionTimestamp != nil {
		return fmt.Errorf("claim %s does not name PersistentVolume %s", c.Name, pvName)
	}
	if c.Status.Phase == corev1.ClaimLost {
		return fmt.Errorf("claim %s is Lost", c.Name)
	}
	return nil
}
func (s claimStep) Undo(ctx context.Context) error {
	pvName, err := s.pvFor(s.ord)
	if err != nil {
		return nil
	}
	ns, name := s.spec.ns(), s.spec.Target.Ordinals[s.ord].Claim
	c, err := s.c.Kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if c.Spec.VolumeName != pvName {
		return nil // not ours
	}
	if err := s.requireRetain(ctx, pvName); err != nil {
		return err
	}
	if err := s.c.Kube.CoreV1().PersistentVolumeClaims(ns).Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &c.UID}}); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return volume.WaitClaimGone(ctx, s.c.Kube, ns, name, c.UID, s.spec.Timeouts.Wait)
}
func (s claimStep) ServerDryRun(ctx context.Context) error {
	pv := "dry-run-placeholder"
	if s.spec.Strategy == Reuse {
		pv = s.spec.Target.Ordinals[s.ord].PV.Name
	}
	c := s.claim(pv)
	// The real name is still taken by the old claim until it is deleted.
	c.Name = trim63(c.Name + "-rebind-dryrun")
	_, err := s.c.Kube.CoreV1().PersistentVolumeClaims(c.Namespace).Create(ctx, c, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	return err
}

// ---------------------------------------------------------------- redeploy

// waitClaimsBound returns once every ordinal's claim is Bound to its PV.
// The scheduler treats a pre-bound claim as unbound until the binder has
// finished and then backs the pod off for up to a second, so the
// StatefulSet is created only after this.
func (e *env) waitClaimsBound(ctx context.Context) error {
	for i, o := range e.spec.Target.Ordinals {
		pvName, err := e.pvFor(i)
		if err != nil {
			return err
		}
		if _, err := volume.WaitClaimBound(ctx, e.c.Kube, e.spec.ns(), o.Claim, pvName, e.spec.Timeouts.Wait); err != nil {
			return err
		}
	}
	return nil
}

type redeployStep struct{ *env }

func (s redeployStep) ID() string { return "redeploy" }
func (s redeployStep) Describe() string {
	how := "claims pre-bound"
	if s.spec.VolumeName {
		how = "template volumeName"
	}
	return fmt.Sprintf("recreate StatefulSet %s (claim template class %s, %s) and wait until Ready", s.spec.sts(), s.spec.ToClass, how)
}

// manifest is the original StatefulSet, unchanged except for the claim
// template: labels, annotations and Helm's ownership metadata stay, so the
// release still owns it.
func (s redeployStep) manifest(ctx context.Context) (*appsv1.StatefulSet, error) {
	m := workload.Sanitize(s.spec.Target.StatefulSet)
	m.Spec.Replicas = ptr.To(s.spec.replicas())
	if deletesClaims(m.Spec.PersistentVolumeClaimRetentionPolicy) {
		// Retain until verified (claim-retention-back): a rollback scales
		// this StatefulSet down and must not lose the claims doing so.
		m.Spec.PersistentVolumeClaimRetentionPolicy = retainBoth.DeepCopy()
	}
	for i := range m.Spec.VolumeClaimTemplates {
		t := &m.Spec.VolumeClaimTemplates[i]
		if t.Name != s.spec.Target.ClaimTemplate {
			continue
		}
		t.Spec = s.spec.templateSpec()
		if s.spec.VolumeName {
			pv, err := s.pvFor(0)
			if err != nil {
				return nil, err
			}
			t.Spec.VolumeName = pv
		}
	}
	return m, nil
}
func (s redeployStep) Precondition(ctx context.Context) error {
	for i := range s.spec.Target.Ordinals {
		if err := (claimStep{s.env, i}).Check(ctx); err != nil {
			return err
		}
	}
	return nil
}
func (s redeployStep) Apply(ctx context.Context) error {
	ns, name := s.spec.ns(), s.spec.sts()
	m, err := s.manifest(ctx)
	if err != nil {
		return err
	}
	// The orphan delete was only requested; wait until the garbage
	// collector has released the name.
	if err := workload.WaitGone(ctx, s.c.Kube, ns, name, s.spec.Target.StatefulSet.UID, s.spec.Timeouts.Wait); err != nil {
		return err
	}
	if err := s.waitClaimsBound(ctx); err != nil {
		return err
	}
	got, err := s.c.Kube.AppsV1().StatefulSets(ns).Create(ctx, m, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		got, err = s.c.Kube.AppsV1().StatefulSets(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil && got.UID == s.spec.Target.StatefulSet.UID {
			return fmt.Errorf("the original StatefulSet %s/%s still exists", ns, name)
		}
		if err == nil && s.value(keyNewSTS) != "" && string(got.UID) != s.value(keyNewSTS) {
			return fmt.Errorf("StatefulSet %s/%s was recreated by someone else during the migration", ns, name)
		}
	}
	if err != nil {
		return fmt.Errorf("creating StatefulSet %s/%s: %w", ns, name, err)
	}
	if err := s.j.SetValue(ctx, keyNewSTS, string(got.UID)); err != nil {
		return err
	}
	return workload.WaitReady(ctx, s.c.Kube, ns, name, s.spec.Timeouts.Wait)
}
func (s redeployStep) Check(ctx context.Context) error {
	sts, err := s.c.Kube.AppsV1().StatefulSets(s.spec.ns()).Get(ctx, s.spec.sts(), metav1.GetOptions{})
	if err != nil {
		return err
	}
	if sts.UID == s.spec.Target.StatefulSet.UID {
		return errors.New("still the original StatefulSet")
	}
	if sts.Status.ReadyReplicas != s.spec.replicas() {
		return fmt.Errorf("%d/%d replicas ready", sts.Status.ReadyReplicas, s.spec.replicas())
	}
	return nil
}
func (s redeployStep) Undo(ctx context.Context) error {
	ns, name := s.spec.ns(), s.spec.sts()
	sts, err := s.c.Kube.AppsV1().StatefulSets(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if sts.UID == s.spec.Target.StatefulSet.UID {
		return nil
	}
	if ptr.Deref(sts.Spec.Replicas, 1) != 0 {
		if err := workload.Scale(ctx, s.c.Kube, ns, name, 0); err != nil {
			return err
		}
	}
	for _, o := range s.spec.Target.Ordinals {
		if err := workload.WaitPodGone(ctx, s.c.Kube, ns, o.Pod, s.spec.Timeouts.Wait); err != nil {
			return err
		}
	}
	return workload.DeleteOrphan(ctx, s.c.Kube, ns, name, sts.UID, s.spec.Timeouts.Wait)
}
func (s redeployStep) ServerDryRun(ctx context.Context) error {
	m := workload.Sanitize(s.spec.Target.StatefulSet)
	for i := range m.Spec.VolumeClaimTemplates {
		if m.Spec.VolumeClaimTemplates[i].Name == s.spec.Target.ClaimTemplate {
			m.Spec.VolumeClaimTemplates[i].Spec = s.spec.templateSpec()
		}
	}
	m.Name = trim63(m.Name + "-rebind-dryrun")
	_, err := s.c.Kube.AppsV1().StatefulSets(s.spec.ns()).Create(ctx, m, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	return err
}

// ---------------------------------------------------------------- verify

// VerificationError says the application lost or changed data.
type VerificationError struct {
	Verdicts []app.Verdict
}

func (e *VerificationError) Error() string {
	msg := "verification failed:"
	for _, v := range e.Verdicts {
		if !v.OK {
			msg += " " + v.Summary + ";"
		}
	}
	return msg
}

type verifyStep struct{ *env }

func (s verifyStep) ID() string { return "verify" }
func (s verifyStep) Describe() string {
	return fmt.Sprintf("verify through the %s API that every item of the baseline came through", s.appKind())
}
func (s verifyStep) Precondition(context.Context) error { return nil }
func (s verifyStep) Apply(ctx context.Context) error {
	vctx, cancel := context.WithTimeout(ctx, s.spec.Timeouts.Verify)
	defer cancel()
	s.env.verdicts = nil
	var failed bool
	for i, o := range s.spec.Target.Ordinals {
		base, err := s.j.Blob(keyBaseline(i))
		if err != nil || base == nil {
			return fmt.Errorf("baseline of ordinal %d missing from the journal", i)
		}
		if err := s.checker.Ready(vctx, o.Pod); err != nil {
			return fmt.Errorf("%s in pod %s did not become ready: %w", s.checker.Kind(), o.Pod, err)
		}
		v, err := s.checker.Verify(vctx, o.Pod, base)
		if err != nil {
			return fmt.Errorf("verifying pod %s: %w", o.Pod, err)
		}
		v.Summary = o.Pod + ": " + v.Summary
		s.env.verdicts = append(s.env.verdicts, v)
		if !v.OK {
			failed = true
		}
	}
	if failed {
		return &VerificationError{Verdicts: s.env.verdicts}
	}
	b, _ := json.Marshal(s.env.verdicts)
	return s.j.SetValue(ctx, keyVerified, string(b))
}
func (s verifyStep) Check(context.Context) error {
	if s.value(keyVerified) == "" {
		return errors.New("not verified")
	}
	return nil
}
func (s verifyStep) Undo(context.Context) error { return nil }

// ---------------------------------------------------------------- reclaim policy back

type reclaimBackStep struct{ *env }

func (s reclaimBackStep) ID() string { return "reclaim-policy" }
func (s reclaimBackStep) Describe() string {
	return "put the original reclaim policy back on the PersistentVolumes in use"
}
func (s reclaimBackStep) Precondition(ctx context.Context) error { return nil }
func (s reclaimBackStep) wanted(pv string) corev1.PersistentVolumeReclaimPolicy {
	orig := corev1.PersistentVolumeReclaimPolicy(s.value(keyReclaim(pv)))
	if orig == "" {
		return corev1.PersistentVolumeReclaimRetain
	}
	return orig
}
func (s reclaimBackStep) Apply(ctx context.Context) error {
	for i, o := range s.spec.Target.Ordinals {
		pv, err := s.pvFor(i)
		if err != nil {
			return err
		}
		// Only a PV still claimed by the ordinal's claim gets Delete back: one
		// taken by someone else mid-run is not rebind's to make deletable.
		if _, err := volume.SetReclaimPolicyIf(ctx, s.c.Kube, pv, s.wanted(pv), volume.ClaimedBy(s.spec.ns(), o.Claim), false); err != nil {
			return err
		}
	}
	return nil
}
func (s reclaimBackStep) Check(ctx context.Context) error {
	for i := range s.spec.Target.Ordinals {
		pvName, err := s.pvFor(i)
		if err != nil {
			return err
		}
		pv, err := s.getPV(ctx, pvName)
		if err != nil {
			return err
		}
		if pv.Spec.PersistentVolumeReclaimPolicy != s.wanted(pvName) {
			return fmt.Errorf("PersistentVolume %s has %s", pvName, pv.Spec.PersistentVolumeReclaimPolicy)
		}
	}
	return nil
}
func (s reclaimBackStep) Undo(ctx context.Context) error {
	for i := range s.spec.Target.Ordinals {
		pv, err := s.pvFor(i)
		if err != nil {
			continue
		}
		if _, err := volume.SetReclaimPolicy(ctx, s.c.Kube, pv, corev1.PersistentVolumeReclaimRetain, false); err != nil {
			return err
		}
	}
	return nil
}

// keep the compiler honest about interfaces.
var (
	_ plan.Step            = baselineStep{}
	_ plan.ServerDryRunner = retainStep{}
	_ plan.ServerDryRunner = redeployStep{}
)
