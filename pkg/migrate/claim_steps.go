package migrate

import (
	"context"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/rebind-dev/rebind/pkg/volume"
)

// ---------------------------------------------------------------- release old claim

type releaseClaimStep struct {
	*env
	ord int
}

func (s releaseClaimStep) ID() string { return fmt.Sprintf("release-claim/%d", s.ord) }
func (s releaseClaimStep) Describe() string {
	o := s.spec.Target.Ordinals[s.ord]
	return fmt.Sprintf("delete claim %s while %s still serves: it goes when the pod stops (its PersistentVolume %s stays, Retain)", o.Claim, s.spec.name(), o.PV.Name)
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
	// claim (or on a new one from the template) in between. A Deployment
	// creates no claims; a pod it starts meanwhile waits on the claim.
	if s.spec.Target.IsDeployment() {
		return nil
	}
	sts, err := s.c.Kube.AppsV1().StatefulSets(s.spec.ns()).Get(ctx, s.spec.name(), metav1.GetOptions{})
	if err == nil && sts.UID == s.spec.Target.StatefulSet.UID {
		return fmt.Errorf("StatefulSet %s/%s still exists; its controller could recreate claim %s", s.spec.ns(), s.spec.name(), o.Claim)
	}
	return nil
}

// Apply only issues the delete; the claim (or reserve) step waits until
// the old claim is gone, so the deletions of all ordinals overlap.
func (s releaseClaimStep) Apply(ctx context.Context) error {
	o := s.spec.Target.Ordinals[s.ord]
	if err := s.recordPriorClaimRef(ctx); err != nil {
		return err
	}
	uid := o.PVC.UID
	err := s.c.Kube.CoreV1().PersistentVolumeClaims(s.spec.ns()).Delete(ctx, o.Claim, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("deleting claim %s/%s: %w", s.spec.ns(), o.Claim, err)
	}
	return nil
}

// recordPriorClaimRef notes, while Grafana still serves, the claimRef a
// kept volume has before its reservation changes it (reserveStep's undo
// puts it back), so that the reservation, which happens while Grafana is
// down, writes one thing less.
func (s releaseClaimStep) recordPriorClaimRef(ctx context.Context) error {
	o := s.spec.Target.Ordinals[s.ord]
	if s.spec.Strategy != Reuse {
		return nil
	}
	if pv, err := s.pvFor(s.ord); err != nil || pv != o.PV.Name {
		return nil // another volume (--from-pv): reserveStep records it
	}
	pv, err := s.getPV(ctx, o.PV.Name)
	if err != nil {
		return err
	}
	return s.j.SetValue(ctx, keyClaimRef(o.PV.Name), claimRefJSON(pv))
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
		if err := s.stopServing(ctx, o.Pod); err != nil {
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
			ObjectMeta: metav1.ObjectMeta{Name: o.Claim, Namespace: ns, Labels: o.PVC.Labels, Annotations: claimAnnotations(o.PVC.Annotations)},
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
	spec := s.spec.templateSpec()
	spec.VolumeName = pvName
	name := s.spec.Target.Ordinals[s.ord].Claim
	if s.spec.Target.IsDeployment() {
		// The claim the Deployment's pod names, with its labels and
		// annotations (Helm's ownership among them, so the release keeps
		// managing it), on the new volume.
		old := s.spec.Target.Ordinals[s.ord].PVC
		return &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.spec.ns(), Labels: old.Labels, Annotations: claimAnnotations(old.Annotations)},
			Spec:       spec,
		}
	}
	labels := map[string]string{}
	for k, v := range s.spec.Target.Template().Labels {
		labels[k] = v
	}
	// The StatefulSet controller labels the claims it makes with the pod
	// selector; do the same so tooling that selects them still does.
	if sel := s.spec.Target.Selector(); sel != nil {
		for k, v := range sel.MatchLabels {
			labels[k] = v
		}
	}
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.spec.ns(), Labels: labels, Annotations: s.spec.Target.Template().Annotations},
		Spec:       spec,
	}
}

// claimAnnotations keeps a claim's own annotations but not those the PV
// binder and provisioners wrote about its former binding.
func claimAnnotations(in map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range in {
		if strings.HasPrefix(k, "pv.kubernetes.io/") || strings.HasPrefix(k, "volume.kubernetes.io/") || strings.HasPrefix(k, "volume.beta.kubernetes.io/") {
			continue
		}
		out[k] = v
	}
	return out
}

// oldClaimGone waits until the ordinal's claim name is free; it reports
// whether it had to wait. The claim this run deleted is released as soon
// as no pod names it, by the release the stop-pods step started, or from
// here.
func (e *env) oldClaimGone(ctx context.Context, ord int) (bool, error) {
	name := e.spec.Target.Ordinals[ord].Claim
	if r := e.releases[name]; r != nil {
		delete(e.releases, name)
		waited, err := r.Wait(ctx)
		if err != nil || waited {
			return waited, err
		}
	}
	return volume.ReleaseDeletedClaim(ctx, e.c.Kube, e.spec.ns(), name, e.oldClaimUID(ord), e.spec.Timeouts.Wait)
}

// oldClaimUID is the claim releaseClaimStep deleted under this name, or
// "" when the run deleted none.
func (e *env) oldClaimUID(ord int) types.UID {
	if o := e.spec.Target.Ordinals[ord]; o.PVC != nil && o.PV != nil && !e.spec.KeepClaims {
		return o.PVC.UID
	}
	return ""
}

func (s claimStep) Precondition(ctx context.Context) error {
	return s.claimFitsTarget(ctx, s.ord, s.claim)
}

// claimFitsTarget checks that the claim made for ordinal ord (by claim,
// given the PV's name) fits the PV it is to bind: size, modes, class.
func (e *env) claimFitsTarget(ctx context.Context, ord int, claim func(pv string) *corev1.PersistentVolumeClaim) error {
	pvName, pv, err := e.targetPV(ctx, ord)
	if err != nil {
		return err
	}
	c := claim(pvName)
	return volume.CheckFits(pv, volume.ShapeFromSpec(c.Namespace, c.Name, c.Spec))
}
func (s claimStep) Apply(ctx context.Context) error {
	pvName, err := s.pvFor(s.ord)
	if err != nil {
		return err
	}
	c := s.claim(pvName)
	// The old claim of this name may still be finishing its deletion.
	if _, err := s.oldClaimGone(ctx, s.ord); err != nil {
		return err
	}
	got, err := s.createClaimOn(ctx, c, pvName)
	if err != nil {
		return err
	}
	if got.Spec.VolumeName == pvName && got.DeletionTimestamp == nil && got.Status.Phase != corev1.ClaimLost {
		s.confirm(keyClaimMade(c.Name), pvName)
	}
	return nil
}

// createClaimOn creates c pre-bound to pvName. A claim of that name that
// already names pvName (a resumed run made it) is taken as it is; one on
// another volume is someone else's and stops the step.
func (e *env) createClaimOn(ctx context.Context, c *corev1.PersistentVolumeClaim, pvName string) (*corev1.PersistentVolumeClaim, error) {
	claims := e.c.Kube.CoreV1().PersistentVolumeClaims(c.Namespace)
	got, err := claims.Create(ctx, c, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		got, err = claims.Get(ctx, c.Name, metav1.GetOptions{})
		if err == nil && got.Spec.VolumeName != pvName {
			return nil, fmt.Errorf("claim %s/%s exists bound to %q, not %s (did the workload's controller recreate it?); delete it (its volume is kept) and re-run", c.Namespace, c.Name, got.Spec.VolumeName, pvName)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("creating claim %s/%s: %w", c.Namespace, c.Name, err)
	}
	return got, nil
}

// checkClaimOn says whether claim name of the target's namespace names
// pvName and is neither being deleted nor Lost.
func (e *env) checkClaimOn(ctx context.Context, name, pvName string) error {
	c, err := e.c.Kube.CoreV1().PersistentVolumeClaims(e.spec.ns()).Get(ctx, name, metav1.GetOptions{})
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

func keyClaimMade(claim string) string { return "claim/" + claim }

// Check accepts a claim that names the PV but is not Bound yet: with
// volumeName set and the PV reserved for it, no other volume can be
// chosen, and the binds of all ordinals overlap; the redeploy waits for
// them.
func (s claimStep) Check(ctx context.Context) error {
	pvName, err := s.pvFor(s.ord)
	if err != nil {
		return err
	}
	// Answered by this run's own create: the redeploy still waits for it
	// to be Bound to that PV before anything uses it.
	if s.wasConfirmed(keyClaimMade(s.spec.Target.Ordinals[s.ord].Claim), pvName) {
		return nil
	}
	return s.checkClaimOn(ctx, s.spec.Target.Ordinals[s.ord].Claim, pvName)
}
func (s claimStep) Undo(ctx context.Context) error {
	pvName, err := s.pvFor(s.ord)
	if err != nil {
		return nil
	}
	ns, name := s.spec.ns(), s.spec.Target.Ordinals[s.ord].Claim
	delete(s.confirmed, keyClaimMade(name))
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
