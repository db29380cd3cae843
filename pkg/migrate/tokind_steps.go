package migrate

import (
	"context"
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"

	"github.com/rebind-dev/rebind/pkg/discovery"
	"github.com/rebind-dev/rebind/pkg/kube"
	"github.com/rebind-dev/rebind/pkg/volume"
	"github.com/rebind-dev/rebind/pkg/workload"
)

// The steps of a --to-kind migration (tokind.go) that differ from a
// migration within one kind: the old workload's, which a rollback finds
// recreated by Helm rather than as it left it; and the new claim's, the
// new kind's and the verification's, which name the new kind's claim and
// pod rather than the original ones.

// ---------------------------------------------------------------- old workload

// holdSourceStep records a Deployment's replica count before it is scaled
// to 0 (stop-pods). Its undo runs after a rollback's Helm revert, which
// recreates the Deployment when rebind's upgrade had replaced it: it
// starts whichever Deployment of that name the release has now.
type holdSourceStep struct{ *env }

func (s holdSourceStep) ID() string { return "deployment-replicas" }
func (s holdSourceStep) Describe() string {
	return holdDeploymentStep(s).Describe()
}
func (s holdSourceStep) Precondition(ctx context.Context) error {
	return holdDeploymentStep(s).Precondition(ctx)
}
func (s holdSourceStep) Apply(ctx context.Context) error { return holdDeploymentStep(s).Apply(ctx) }
func (s holdSourceStep) Check(ctx context.Context) error { return holdDeploymentStep(s).Check(ctx) }
func (s holdSourceStep) Undo(ctx context.Context) error {
	ns, name := s.spec.ns(), s.spec.name()
	d, err := s.c.Kube.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("Deployment %s/%s is gone and Helm did not render it again: return release %s to its revision %s (`helm rollback %s %s -n %s`), then re-run rebind rollback",
			ns, name, s.spec.Target.Release, s.value(keyHelmRevision), s.spec.Target.Release, s.value(keyHelmRevision), ns)
	}
	if err != nil {
		return err
	}
	if err := workload.ScaleDeployment(ctx, s.c.Kube, ns, name, d.UID, s.spec.replicas()); err != nil {
		return err
	}
	return workload.WaitDeploymentReady(ctx, s.c.Kube, ns, name, s.spec.Timeouts.Wait)
}

// sourceSTSStep is the orphan deletion of the StatefulSet switched from.
// Its undo recreates the original when nothing has (a rollback before
// rebind's upgrade) and waits until the StatefulSet of that name, the
// original or the one Helm rendered again, is Ready.
type sourceSTSStep struct{ orphanStep }

func (s sourceSTSStep) Undo(ctx context.Context) error {
	if err := s.orphanStep.Undo(ctx); err != nil {
		return err
	}
	return workload.WaitReady(ctx, s.c.Kube, s.spec.ns(), s.spec.name(), s.spec.Timeouts.Wait)
}

// waitOldPodsGone waits until no pod of the kind switched from is left
// (pods of the new kind, after a resumed upgrade, do not count): never two
// pods on one ReadWriteOnce volume.
func (e *env) waitOldPodsGone(ctx context.Context) error {
	sel, err := metav1.LabelSelectorAsSelector(e.spec.Target.Selector())
	if err != nil {
		return err
	}
	if sel.Empty() {
		return fmt.Errorf("refusing to wait on an empty pod selector in %s", e.spec.ns())
	}
	ns := e.spec.ns()
	pods := e.c.Kube.CoreV1().Pods(ns)
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector = sel.String()
			return pods.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = sel.String()
			return pods.Watch(ctx, o)
		},
	}
	old := func(p *corev1.Pod) bool {
		for _, ref := range p.OwnerReferences {
			if ref.Controller != nil && *ref.Controller {
				newKind := ref.Kind == discovery.KindStatefulSet
				if e.spec.ToKind == ToDeployment {
					newKind = ref.Kind == "ReplicaSet"
				}
				return !newKind
			}
		}
		return true
	}
	_, err = kube.UntilSet(ctx, e.spec.Timeouts.Wait, fmt.Sprintf("the pods of %s %s to terminate", e.spec.Target.KindName(), e.spec.name()), lw,
		func(all map[string]*corev1.Pod) (bool, error) {
			for _, p := range all {
				if old(p) {
					return false, nil
				}
			}
			return true, nil
		},
		func(all map[string]*corev1.Pod) string {
			n := 0
			for _, p := range all {
				if old(p) {
					n++
				}
			}
			return fmt.Sprintf("%d pod(s) left", n)
		})
	return err
}

// ---------------------------------------------------------------- reserve

// switchReserveStep reserves the volume for the claim the new kind uses.
// With reuse that volume is still bound to the original claim, which the
// release-claim step has deleted: the reservation waits until that claim,
// and so its pod, is gone.
type switchReserveStep struct {
	*env
	ord int
}

func (s switchReserveStep) ID() string { return fmt.Sprintf("reserve/%d", s.ord) }
func (s switchReserveStep) Describe() string {
	return fmt.Sprintf("reserve %s for claim %s of the %s (claimRef namespace/name, no uid)", s.volumePhrase(s.ord), s.spec.newClaim(s.ord), s.spec.newKindName())
}
func (s switchReserveStep) oldClaim() string { return s.spec.Target.Ordinals[s.ord].Claim }
func (s switchReserveStep) Precondition(ctx context.Context) error {
	pvName, pv, err := s.targetPV(ctx, s.ord)
	if err != nil {
		return err
	}
	if err := s.requireRetain(ctx, pvName); err != nil {
		return err
	}
	// The original claim's own volume is the one moving; anyone else's
	// reservation or binding is refused.
	if volume.IsReservedFor(pv, s.spec.ns(), s.oldClaim()) {
		return nil
	}
	return volume.CheckReservable(ctx, s.c.Kube, pv, s.spec.ns(), s.spec.newClaim(s.ord))
}
func (s switchReserveStep) Apply(ctx context.Context) error {
	ns, claim := s.spec.ns(), s.spec.newClaim(s.ord)
	// The binder gives a claimRef without uid to a live claim of that
	// name: both the original claim and any earlier claim of the new name
	// must be completely gone first.
	for _, name := range []string{s.oldClaim(), claim} {
		if _, err := volume.WaitTerminatingClaim(ctx, s.c.Kube, ns, name, s.spec.Timeouts.Wait); err != nil {
			return err
		}
	}
	pvName, pv, err := s.targetPV(ctx, s.ord)
	if err != nil {
		return err
	}
	if err := s.j.SetValue(ctx, keyClaimRef(pvName), claimRefJSON(pv)); err != nil {
		return err
	}
	return volume.Reserve(ctx, s.c.Kube, pvName, ns, claim, false)
}
func (s switchReserveStep) Check(ctx context.Context) error {
	return s.checkReservedFor(ctx, s.ord, s.spec.newClaim(s.ord))
}

// Undo puts the claimRef back as it was (the original claim's, with its
// gone uid: Released, bindable by nobody) once no claim of the new name
// uses the volume; the release-claim undo then reserves it for the
// original claim name again and recreates that claim.
func (s switchReserveStep) Undo(ctx context.Context) error {
	pvName, err := s.pvFor(s.ord)
	if err != nil {
		return nil
	}
	return s.unreserve(ctx, pvName, s.spec.newClaim(s.ord))
}

// ---------------------------------------------------------------- new claim

// switchClaimStep creates the new kind's claim pre-bound to the volume, so
// that the new pod starts on a Bound claim: for a StatefulSet the claim
// its controller adopts by name (with the selector labels it would give
// it); for a Deployment the chart's pvc.yaml claim, with the release's
// ownership metadata so that rebind's upgrade adopts it (Helm compares it
// with the rendered claim, which names the same volume, class and size).
type switchClaimStep struct {
	*env
	ord int
}

func (s switchClaimStep) ID() string { return fmt.Sprintf("claim/%d", s.ord) }
func (s switchClaimStep) Describe() string {
	return fmt.Sprintf("create claim %s of the %s pre-bound (volumeName) in class %s", s.spec.newClaim(s.ord), s.spec.newKindName(), s.spec.ToClass)
}
func (s switchClaimStep) claim(pvName string) *corev1.PersistentVolumeClaim {
	spec := s.spec.templateSpec()
	spec.VolumeName = pvName
	meta := metav1.ObjectMeta{Name: s.spec.newClaim(s.ord), Namespace: s.spec.ns(), Labels: map[string]string{}}
	obj := s.spec.Target.Object()
	if s.spec.ToKind == ToStatefulSet {
		if sel := s.spec.Target.Selector(); sel != nil {
			for k, v := range sel.MatchLabels {
				meta.Labels[k] = v
			}
		}
	} else {
		for k, v := range obj.GetLabels() {
			meta.Labels[k] = v
		}
		meta.Annotations = map[string]string{}
		for _, k := range []string{discovery.AnnHelmReleaseName, annHelmReleaseNamespace} {
			if v := obj.GetAnnotations()[k]; v != "" {
				meta.Annotations[k] = v
			}
		}
	}
	return &corev1.PersistentVolumeClaim{ObjectMeta: meta, Spec: spec}
}

const annHelmReleaseNamespace = "meta.helm.sh/release-namespace"

func (s switchClaimStep) Precondition(ctx context.Context) error {
	return s.claimFitsTarget(ctx, s.ord, s.claim)
}
func (s switchClaimStep) Apply(ctx context.Context) error {
	pvName, err := s.pvFor(s.ord)
	if err != nil {
		return err
	}
	c := s.claim(pvName)
	if _, err := volume.WaitTerminatingClaim(ctx, s.c.Kube, c.Namespace, c.Name, s.spec.Timeouts.Wait); err != nil {
		return err
	}
	_, err = s.createClaimOn(ctx, c, pvName)
	return err
}
func (s switchClaimStep) Check(ctx context.Context) error {
	pvName, err := s.pvFor(s.ord)
	if err != nil {
		return err
	}
	return s.checkClaimOn(ctx, s.spec.newClaim(s.ord), pvName)
}

// Undo deletes the new claim (its volume has Retain) once nothing runs on
// it; the new workload's undo, which runs first, stopped its pods.
func (s switchClaimStep) Undo(ctx context.Context) error { return s.dropNewClaim(ctx, s.ord) }

// dropNewClaim deletes the new kind's claim of an ordinal while it names
// rebind's volume, and waits until it is gone.
func (e *env) dropNewClaim(ctx context.Context, ord int) error {
	pvName, err := e.pvFor(ord)
	if err != nil {
		return nil
	}
	ns, name := e.spec.ns(), e.spec.newClaim(ord)
	c, err := e.c.Kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if c.Spec.VolumeName != pvName {
		return nil // not ours
	}
	if err := e.requireRetain(ctx, pvName); err != nil {
		return err
	}
	if c.DeletionTimestamp == nil {
		if err := e.c.Kube.CoreV1().PersistentVolumeClaims(ns).Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &c.UID}}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting claim %s/%s: %w", ns, name, err)
		}
	}
	return volume.WaitClaimGone(ctx, e.c.Kube, ns, name, c.UID, e.spec.Timeouts.Wait)
}

// ---------------------------------------------------------------- the switch

// switchStep runs rebind's `helm upgrade` with the new persistence.type:
// Helm creates the new kind and deletes the old workload. Its ID is
// "redeploy" so that the outage is measured as for any migration.
type switchStep struct{ *env }

func (s switchStep) ID() string { return "redeploy" }
func (s switchStep) Describe() string {
	return fmt.Sprintf("helm upgrade release %s with persistence.type=%s on PersistentVolume %s: Helm replaces %s %s by %s %s on claim %s; wait until Ready",
		s.spec.Target.Release, chartType(s.spec.ToKind), s.pvDescr(), s.spec.Target.KindName(), s.spec.name(), s.spec.newKindName(), s.spec.name(), s.spec.newClaim(0))
}
func (s switchStep) pvDescr() string {
	if pv, err := s.pvFor(0); err == nil {
		return pv
	}
	return "(restored)"
}
func (s switchStep) Precondition(ctx context.Context) error {
	for i := range s.spec.Target.Ordinals {
		if err := (switchClaimStep{s.env, i}).Check(ctx); err != nil {
			return err
		}
	}
	_, _, err := s.helmRelease()
	return err
}

// newWorkload reads the workload of the new kind: its uid and Ready
// replicas, or exists false.
func (e *env) newWorkload(ctx context.Context) (uid string, ready int32, exists bool, err error) {
	ns, name := e.spec.ns(), e.spec.name()
	var obj metav1.Object
	if e.spec.ToKind == ToStatefulSet {
		sts, gerr := e.c.Kube.AppsV1().StatefulSets(ns).Get(ctx, name, metav1.GetOptions{})
		if gerr == nil {
			obj, ready = sts, sts.Status.ReadyReplicas
		}
		err = gerr
	} else {
		d, gerr := e.c.Kube.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if gerr == nil {
			obj, ready = d, d.Status.ReadyReplicas
		}
		err = gerr
	}
	if apierrors.IsNotFound(err) {
		return "", 0, false, nil
	}
	if err != nil {
		return "", 0, false, err
	}
	return string(obj.GetUID()), ready, true, nil
}

func (e *env) waitNewReady(ctx context.Context) error {
	if e.spec.ToKind == ToStatefulSet {
		return workload.WaitReady(ctx, e.c.Kube, e.spec.ns(), e.spec.name(), e.spec.Timeouts.Wait)
	}
	return workload.WaitDeploymentReady(ctx, e.c.Kube, e.spec.ns(), e.spec.name(), e.spec.Timeouts.Wait)
}

func (s switchStep) Apply(ctx context.Context) error {
	ns, name := s.spec.ns(), s.spec.name()
	if want := s.value(keyNewWorkload); want != "" {
		if uid, _, ok, err := s.newWorkload(ctx); err == nil && ok && uid == want {
			return s.waitNewReady(ctx)
		}
	}
	h, err := s.helm()
	if err != nil {
		return err
	}
	upgraded, err := helmRedeployDeploymentStep(s).upgradedByUs(h)
	if err != nil {
		return err
	}
	if !upgraded {
		// Never two pods on one volume: the old kind's pods are gone
		// (the old claim's protection let go only then), and the new
		// kind's pod starts only on a Bound claim.
		if err := s.waitOldPodsGone(ctx); err != nil {
			return err
		}
		for i := range s.spec.Target.Ordinals {
			pv, err := s.pvFor(i)
			if err != nil {
				return err
			}
			if _, err := volume.WaitClaimBound(ctx, s.c.Kube, ns, s.spec.newClaim(i), pv, s.spec.Timeouts.Wait); err != nil {
				return err
			}
		}
		if _, err := s.upgradeRelease(ctx, h); err != nil {
			return err
		}
	}
	uid, _, ok, err := s.newWorkload(ctx)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("helm upgrade of release %s with persistence.type=%s did not create %s %s/%s", s.spec.Target.Release, chartType(s.spec.ToKind), s.spec.newKindName(), ns, name)
	}
	if err := s.j.SetValue(ctx, keyNewWorkload, uid); err != nil {
		return err
	}
	if err := s.waitNewReady(ctx); err != nil {
		return err
	}
	s.warnOldLeft(ctx)
	return nil
}

// warnOldLeft says so when the old workload outlived the upgrade (a
// resource policy "keep", or a name the chart no longer renders): it runs
// no pod, but the user should remove it.
func (e *env) warnOldLeft(ctx context.Context) {
	ns, name := e.spec.ns(), e.spec.name()
	var err error
	if e.spec.Target.IsDeployment() {
		_, err = e.c.Kube.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
	} else {
		_, err = e.c.Kube.AppsV1().StatefulSets(ns).Get(ctx, name, metav1.GetOptions{})
	}
	if err == nil {
		e.warn(fmt.Sprintf("%s %s/%s is still there after the switch (Helm did not delete it); it runs no pod: delete it once the %s is verified", e.spec.Target.KindName(), ns, name, e.spec.newKindName()))
	}
}

func (s switchStep) Check(ctx context.Context) error {
	uid, ready, ok, err := s.newWorkload(ctx)
	if err != nil {
		return err
	}
	if !ok || uid != s.value(keyNewWorkload) {
		return fmt.Errorf("%s %s/%s is not the one rebind's upgrade created", s.spec.newKindName(), s.spec.ns(), s.spec.name())
	}
	if ready != s.spec.replicas() {
		return fmt.Errorf("%d/%d replicas ready", ready, s.spec.replicas())
	}
	return nil
}

// Undo stops the new kind (its pods gone) and deletes its claim, whose
// volume has Retain; the workload itself is left for the Helm revert
// (helm-revision's undo), which deletes it with the revision that
// rendered it.
func (s switchStep) Undo(ctx context.Context) error {
	ns, name := s.spec.ns(), s.spec.name()
	_, _, ok, err := s.newWorkload(ctx)
	if err != nil {
		return err
	}
	if ok {
		if s.spec.ToKind == ToStatefulSet {
			if err := workload.Scale(ctx, s.c.Kube, ns, name, 0); err != nil {
				return err
			}
			for i := range s.spec.Target.Ordinals {
				if err := workload.WaitPodGone(ctx, s.c.Kube, ns, s.spec.newPod(i), s.spec.Timeouts.Wait); err != nil {
					return err
				}
			}
		} else {
			d, err := s.c.Kube.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if err := workload.ScaleDeployment(ctx, s.c.Kube, ns, name, d.UID, 0); err != nil {
				return err
			}
			if err := workload.WaitNoPods(ctx, s.c.Kube, ns, d.Spec.Selector, s.spec.Timeouts.Wait); err != nil {
				return err
			}
		}
	}
	for i := range s.spec.Target.Ordinals {
		if err := s.dropNewClaim(ctx, i); err != nil {
			return err
		}
	}
	return nil
}

// ---------------------------------------------------------------- verify

// switchVerifyStep verifies the new kind's Grafana against the baseline
// taken from the old one.
type switchVerifyStep struct{ *env }

func (s switchVerifyStep) ID() string { return "verify" }
func (s switchVerifyStep) Describe() string {
	return fmt.Sprintf("verify through the %s API of the %s that every item of the baseline came through", s.appKind(), s.spec.newKindName())
}
func (s switchVerifyStep) Precondition(context.Context) error { return nil }
func (s switchVerifyStep) Apply(ctx context.Context) error {
	vctx, cancel := context.WithTimeout(ctx, s.spec.Timeouts.Verify)
	defer cancel()
	s.env.verdicts = nil
	var failed bool
	for i := range s.spec.Target.Ordinals {
		pod := s.spec.newPod(i)
		base, err := s.j.Blob(keyBaseline(i))
		if err != nil || base == nil {
			return fmt.Errorf("baseline of ordinal %d missing from the journal", i)
		}
		if err := s.checker.Ready(vctx, pod); err != nil {
			return fmt.Errorf("%s of %s %s did not become ready: %w", s.checker.Kind(), s.spec.newKindName(), pod, err)
		}
		v, err := s.checker.Verify(vctx, pod, base)
		if err != nil {
			return fmt.Errorf("verifying %s: %w", pod, err)
		}
		v.Summary = pod + ": " + v.Summary
		s.env.verdicts = append(s.env.verdicts, v)
		failed = failed || !v.OK
	}
	if failed {
		return &VerificationError{Verdicts: s.env.verdicts}
	}
	b, _ := json.Marshal(s.env.verdicts)
	return s.j.SetValue(ctx, keyVerified, string(b))
}
func (s switchVerifyStep) Check(ctx context.Context) error { return verifyStep(s).Check(ctx) }
func (s switchVerifyStep) Undo(context.Context) error      { return nil }

// ---------------------------------------------------------------- reclaim back

// switchReclaimBackStep puts the original reclaim policy back on the
// volume now claimed by the new kind's claim.
type switchReclaimBackStep struct{ *env }

func (s switchReclaimBackStep) ID() string { return "reclaim-policy" }
func (s switchReclaimBackStep) Describe() string {
	return fmt.Sprintf("put the original reclaim policy back on the PersistentVolume(s) of the %s's claim(s)", s.spec.newKindName())
}
func (s switchReclaimBackStep) Precondition(context.Context) error { return nil }
func (s switchReclaimBackStep) Apply(ctx context.Context) error {
	for i := range s.spec.Target.Ordinals {
		pv, err := s.pvFor(i)
		if err != nil {
			return err
		}
		// Delete only on a volume the new claim holds.
		if _, err := volume.SetReclaimPolicyIf(ctx, s.c.Kube, pv, reclaimBackStep(s).wanted(pv), volume.ClaimedBy(s.spec.ns(), s.spec.newClaim(i)), false); err != nil {
			return err
		}
	}
	return nil
}
func (s switchReclaimBackStep) Check(ctx context.Context) error { return reclaimBackStep(s).Check(ctx) }
func (s switchReclaimBackStep) Undo(ctx context.Context) error  { return reclaimBackStep(s).Undo(ctx) }
