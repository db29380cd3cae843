package migrate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"go.uber.org/zap"

	"github.com/rebind-dev/rebind/pkg/journal"
	"github.com/rebind-dev/rebind/pkg/plan"
	"github.com/rebind-dev/rebind/pkg/snapshot"
	"github.com/rebind-dev/rebind/pkg/volume"
)

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
		map[string]string{journal.LabelManagedBy: journal.ManagedBy, journal.LabelTarget: s.spec.name()})
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
			Labels: map[string]string{journal.LabelManagedBy: journal.ManagedBy, journal.LabelTarget: s.spec.name()}}
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

// ---------------------------------------------------------------- reserve

type reserveStep struct {
	*env
	ord int
}

func (s reserveStep) ID() string { return fmt.Sprintf("reserve/%d", s.ord) }
func (s reserveStep) Describe() string {
	return fmt.Sprintf("reserve %s for claim %s (claimRef namespace/name, no uid)", s.volumePhrase(s.ord), s.spec.Target.Ordinals[s.ord].Claim)
}

// volumePhrase names the volume an ordinal ends up on, as a plan prints
// it before a restore has made it.
func (e *env) volumePhrase(ord int) string {
	if e.spec.Strategy == Reuse {
		if name, err := e.pvFor(ord); err == nil {
			return "PersistentVolume " + name
		}
	}
	return "the restored PersistentVolume"
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
	if waited, err := s.oldClaimGone(ctx, s.ord); err != nil {
		return err
	} else if waited {
		if pv, err = s.getPV(ctx, pvName); err != nil {
			return err
		}
	}
	// SetValue keeps the first claimRef recorded: a resumed run's own
	// reservation is not what the undo must put back. For a kept volume
	// it was recorded before the outage (releaseClaimStep), and this
	// writes nothing.
	if err := s.j.SetValue(ctx, keyClaimRef(pvName), claimRefJSON(pv)); err != nil {
		return err
	}
	return volume.Reserve(ctx, s.c.Kube, pvName, s.spec.ns(), s.spec.Target.Ordinals[s.ord].Claim, false)
}

// claimRefJSON is a PV's claimRef as the journal keeps it ("" for none).
func claimRefJSON(pv *corev1.PersistentVolume) string {
	if pv.Spec.ClaimRef == nil {
		return ""
	}
	b, _ := json.Marshal(pv.Spec.ClaimRef)
	return string(b)
}

func (s reserveStep) Check(ctx context.Context) error {
	return s.checkReservedFor(ctx, s.ord, s.spec.Target.Ordinals[s.ord].Claim)
}

// Undo puts the claimRef back as it was, which leaves the PV Released and
// reserved for nobody alive: no claim can grab it.
func (s reserveStep) Undo(ctx context.Context) error {
	pvName, err := s.pvFor(s.ord)
	if err != nil {
		return nil
	}
	return s.unreserve(ctx, pvName, s.spec.Target.Ordinals[s.ord].Claim)
}

// checkReservedFor says whether the ordinal's target PV is reserved for
// claim in the target's namespace.
func (e *env) checkReservedFor(ctx context.Context, ord int, claim string) error {
	pvName, pv, err := e.targetPV(ctx, ord)
	if err != nil {
		return err
	}
	if !volume.IsReservedFor(pv, e.spec.ns(), claim) {
		return fmt.Errorf("PersistentVolume %s is not reserved for %s", pvName, claim)
	}
	return nil
}

// unreserve puts back the claimRef pvName had before this run reserved it
// for claim (recorded in the journal), once no claim of that name uses the
// volume. A PV no longer reserved for claim is someone else's business
// now, and left alone.
func (e *env) unreserve(ctx context.Context, pvName, claim string) error {
	prior, ok := e.j.Value(keyClaimRef(pvName))
	if !ok || prior == "" {
		return nil
	}
	var ref corev1.ObjectReference
	if err := json.Unmarshal([]byte(prior), &ref); err != nil {
		return err
	}
	ns := e.spec.ns()
	// The binder writes the PV too (its phase); a conflict re-reads and
	// re-checks everything before writing again, never overwriting blind.
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pv, err := e.getPV(ctx, pvName)
		if err != nil {
			return err
		}
		if c, err := e.c.Kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, claim, metav1.GetOptions{}); err == nil && c.Spec.VolumeName == pvName {
			return fmt.Errorf("claim %s/%s still uses PersistentVolume %s", ns, claim, pvName)
		}
		if !volume.IsReservedFor(pv, ns, claim) {
			return nil
		}
		if ref.Namespace == ns && ref.Name == claim {
			// The original claim of that name: the release-claim undo binds it.
			return nil
		}
		pv.Spec.ClaimRef = &ref
		_, err = e.c.Kube.CoreV1().PersistentVolumes().Update(ctx, pv, metav1.UpdateOptions{})
		return err
	})
}
func (s reserveStep) ServerDryRun(ctx context.Context) error {
	if s.spec.Strategy != Reuse {
		return plan.ErrDryRunSkipped
	}
	return volume.Reserve(ctx, s.c.Kube, s.spec.Target.Ordinals[s.ord].PV.Name, s.spec.ns(), s.spec.Target.Ordinals[s.ord].Claim, true)
}

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
