package migrate

import (
	"context"
	"errors"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/rebind-dev/rebind/pkg/journal"
	"github.com/rebind-dev/rebind/pkg/plan"
	"github.com/rebind-dev/rebind/pkg/volume"
	"github.com/rebind-dev/rebind/pkg/workload"
)

// ---------------------------------------------------------------- scale down

type scaleDownStep struct{ *env }

func (s scaleDownStep) ID() string { return "scale-down" }
func (s scaleDownStep) Describe() string {
	return fmt.Sprintf("scale %s %s to 0 and wait until its pods are gone", s.spec.Target.KindName(), s.spec.name())
}
func (s scaleDownStep) Precondition(ctx context.Context) error {
	if s.spec.Target.IsDeployment() {
		_, err := s.liveDeployment(ctx)
		return err
	}
	_, err := s.liveSTS(ctx)
	return err
}

// liveSTS returns the original StatefulSet, refusing one that someone
// recreated under the same name.
func (s scaleDownStep) liveSTS(ctx context.Context) (*appsv1.StatefulSet, error) {
	sts, err := s.c.Kube.AppsV1().StatefulSets(s.spec.ns()).Get(ctx, s.spec.name(), metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("StatefulSet %s/%s: %w", s.spec.ns(), s.spec.name(), err)
	}
	if sts.UID != s.spec.Target.StatefulSet.UID {
		return nil, fmt.Errorf("StatefulSet %s/%s was recreated by someone else (uid %s, rebind started with %s)", s.spec.ns(), s.spec.name(), sts.UID, s.spec.Target.StatefulSet.UID)
	}
	return sts, nil
}
func (s scaleDownStep) Apply(ctx context.Context) error {
	if err := s.j.SetValue(ctx, keyReplicas, fmt.Sprint(s.spec.replicas())); err != nil {
		return err
	}
	if s.spec.Target.IsDeployment() {
		if err := s.scaleDeployment(ctx, 0); err != nil {
			return err
		}
		return s.deploymentPodsGone(ctx)
	}
	if err := workload.Scale(ctx, s.c.Kube, s.spec.ns(), s.spec.name(), 0); err != nil {
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
	if s.spec.Target.IsDeployment() {
		if err := (stopDeploymentStep{s.env}).Check(ctx); err != nil {
			return err
		}
		pods, err := workload.PodsOf(ctx, s.c.Kube, s.spec.ns(), s.spec.Target.Selector())
		if err == nil && len(pods) > 0 {
			return fmt.Errorf("%d pod(s) of Deployment %s still exist", len(pods), s.spec.name())
		}
		return err
	}
	for _, o := range s.spec.Target.Ordinals {
		if _, err := s.c.Kube.CoreV1().Pods(s.spec.ns()).Get(ctx, o.Pod, metav1.GetOptions{}); err == nil {
			return fmt.Errorf("pod %s still exists", o.Pod)
		}
	}
	sts, err := s.c.Kube.AppsV1().StatefulSets(s.spec.ns()).Get(ctx, s.spec.name(), metav1.GetOptions{})
	if err == nil && sts.UID == s.spec.Target.StatefulSet.UID && ptr.Deref(sts.Spec.Replicas, 1) != 0 {
		return fmt.Errorf("StatefulSet still has %d replicas", ptr.Deref(sts.Spec.Replicas, 1))
	}
	return nil
}
func (s scaleDownStep) Undo(ctx context.Context) error {
	if s.spec.Target.IsDeployment() {
		return holdDeploymentStep{s.env}.Undo(ctx)
	}
	sts, err := s.c.Kube.AppsV1().StatefulSets(s.spec.ns()).Get(ctx, s.spec.name(), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("StatefulSet %s/%s is gone; cannot scale it back", s.spec.ns(), s.spec.name())
	}
	if err != nil {
		return err
	}
	if ptr.Deref(sts.Spec.Replicas, 1) != s.spec.replicas() {
		if err := workload.Scale(ctx, s.c.Kube, s.spec.ns(), s.spec.name(), s.spec.replicas()); err != nil {
			return err
		}
	}
	return workload.WaitReady(ctx, s.c.Kube, s.spec.ns(), s.spec.name(), s.spec.Timeouts.Wait)
}
func (s scaleDownStep) ServerDryRun(ctx context.Context) error {
	if s.spec.Target.IsDeployment() {
		return stopDeploymentStep{s.env}.ServerDryRun(ctx)
	}
	_, err := s.c.Kube.AppsV1().StatefulSets(s.spec.ns()).Patch(ctx, s.spec.name(), "application/merge-patch+json", []byte(`{"spec":{"replicas":0}}`), metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}}, "scale")
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
		return fmt.Sprintf("delete StatefulSet %s with orphan propagation (its claim template is immutable)", s.spec.name())
	}
	return fmt.Sprintf("delete StatefulSet %s with orphan propagation; its pods keep serving without a controller (the claim template is immutable)", s.spec.name())
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
	return workload.DeleteOrphan(ctx, s.c.Kube, s.spec.ns(), s.spec.name(), s.spec.Target.StatefulSet.UID, s.spec.Timeouts.Wait)
}
func (s orphanStep) Check(ctx context.Context) error {
	sts, err := s.c.Kube.AppsV1().StatefulSets(s.spec.ns()).Get(ctx, s.spec.name(), metav1.GetOptions{})
	if err == nil && sts.UID == s.spec.Target.StatefulSet.UID {
		return errors.New("original StatefulSet still exists")
	}
	return nil
}

// Undo recreates the original StatefulSet. Pods that still run are adopted
// again; missing ones are created once their original claims are back,
// which the later steps' undos (run before this one) ensured.
func (s orphanStep) Undo(ctx context.Context) error {
	if err := workload.WaitGone(ctx, s.c.Kube, s.spec.ns(), s.spec.name(), s.spec.Target.StatefulSet.UID, s.spec.Timeouts.Wait); err != nil {
		return err
	}
	_, err := s.c.Kube.AppsV1().StatefulSets(s.spec.ns()).Get(ctx, s.spec.name(), metav1.GetOptions{})
	if err == nil {
		return nil
	}
	if !apierrors.IsNotFound(err) {
		return err
	}
	orig, err := s.originalManifest()
	if err != nil {
		return err
	}
	if s.scaledDown {
		// The scale-down's undo brings the pods back.
		orig.Spec.Replicas = ptr.To(int32(0))
	}
	if _, err := s.c.Kube.AppsV1().StatefulSets(s.spec.ns()).Create(ctx, orig, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("recreating original StatefulSet %s/%s: %w", s.spec.ns(), s.spec.name(), err)
	}
	if s.scaledDown {
		return nil
	}
	return workload.WaitReady(ctx, s.c.Kube, s.spec.ns(), s.spec.name(), s.spec.Timeouts.Wait)
}
func (s orphanStep) ServerDryRun(ctx context.Context) error {
	return s.c.Kube.AppsV1().StatefulSets(s.spec.ns()).Delete(ctx, s.spec.name(), metav1.DeleteOptions{
		PropagationPolicy: ptr.To(metav1.DeletePropagationOrphan), DryRun: []string{metav1.DryRunAll}})
}

// ---------------------------------------------------------------- stop pods

// stopPodsStep starts the outage: it deletes the orphaned pods and does
// not wait, because the old claims (already marked for deletion) go as
// soon as their pods are gone, and that is what the next steps wait for.
type stopPodsStep struct{ *env }

func (s stopPodsStep) ID() string { return "stop-pods" }
func (s stopPodsStep) Describe() string {
	return fmt.Sprintf("stop the pods of %s (%s is down from here until the redeploy is Ready)", s.spec.name(), s.appKind())
}
func (s stopPodsStep) Precondition(ctx context.Context) error {
	sts, err := s.c.Kube.AppsV1().StatefulSets(s.spec.ns()).Get(ctx, s.spec.name(), metav1.GetOptions{})
	if err == nil && sts.UID == s.spec.Target.StatefulSet.UID {
		return fmt.Errorf("StatefulSet %s/%s still exists: it would recreate the pods", s.spec.ns(), s.spec.name())
	}
	return nil
}
func (s stopPodsStep) Apply(ctx context.Context) error {
	// What the release of each old claim must read is read while the pods
	// still serve; the release itself then follows each pod's end by one
	// write, while this run goes on to the claim step.
	for i, o := range s.spec.Target.Ordinals {
		if uid := s.oldClaimUID(i); uid != "" && s.releases[o.Claim] == nil {
			if s.releases == nil {
				s.releases = map[string]*volume.ClaimRelease{}
			}
			s.releases[o.Claim] = volume.StartRelease(ctx, s.c.Kube, s.spec.ns(), o.Claim, uid, s.spec.Timeouts.Wait)
		}
	}
	for _, o := range s.spec.Target.Ordinals {
		if err := s.stopPod(ctx, o.Pod); err != nil {
			return err
		}
	}
	return nil
}

// stopServing stops what serves an ordinal: the StatefulSet's pod of that
// name, or every pod of the Deployment (scaled to 0; their names change).
func (e *env) stopServing(ctx context.Context, pod string) error {
	if e.spec.Target.IsDeployment() {
		return e.scaleDeployment(ctx, 0)
	}
	return e.stopPod(ctx, pod)
}

// stopPod asks the pod of that name to stop, unless it is gone or already
// stopping; it does not wait.
func (e *env) stopPod(ctx context.Context, name string) error {
	ns := e.spec.ns()
	pod, err := e.c.Kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		e.confirm(keyStopped(name), "")
		return nil
	}
	if err != nil {
		return err
	}
	if pod.DeletionTimestamp != nil {
		e.confirm(keyStopped(name), "")
		return nil
	}
	err = e.c.Kube.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &pod.UID}})
	switch {
	case err == nil || apierrors.IsNotFound(err):
		// The pod read just before is terminating or gone.
		e.confirm(keyStopped(name), "")
	case apierrors.IsConflict(err):
		// Another pod under the name: Check reads it.
	default:
		return fmt.Errorf("deleting pod %s/%s: %w", ns, name, err)
	}
	return nil
}

func keyStopped(pod string) string { return "stopped/" + pod }

func (s stopPodsStep) Check(ctx context.Context) error {
	for _, o := range s.spec.Target.Ordinals {
		if s.wasConfirmed(keyStopped(o.Pod), "") {
			continue
		}
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

// originalManifest is the StatefulSet as discovered, ready to be created
// again. The journal ConfigMap's copy has its literal env values redacted:
// one that came from there (its Secret unread) is never created.
func (e *env) originalManifest() (*appsv1.StatefulSet, error) {
	if workload.IsRedacted(&e.spec.Target.StatefulSet.Spec.Template) {
		return nil, fmt.Errorf("the manifest of StatefulSet %s/%s at hand has its env values redacted (%q): rebind recreates it only from the journal's Secret %s/%s",
			e.spec.ns(), e.spec.name(), workload.Redacted, e.spec.ns(), journal.Name(e.spec.name()))
	}
	return workload.Sanitize(e.spec.Target.StatefulSet), nil
}

func (s redeployStep) ID() string { return "redeploy" }
func (s redeployStep) Describe() string {
	how := "claims pre-bound"
	if s.spec.VolumeName {
		how = "template volumeName"
	}
	if s.spec.KeepClaims {
		return fmt.Sprintf("recreate StatefulSet %s (claim template class %s, %s); it adopts the serving pods and their claims as they are", s.spec.name(), s.spec.ToClass, how)
	}
	return fmt.Sprintf("recreate StatefulSet %s (claim template class %s, %s) and wait until Ready", s.spec.name(), s.spec.ToClass, how)
}

// manifest is the original StatefulSet, unchanged except for the claim
// template: labels, annotations and Helm's ownership metadata stay, so the
// release still owns it.
func (s redeployStep) manifest(ctx context.Context) (*appsv1.StatefulSet, error) {
	m, err := s.originalManifest()
	if err != nil {
		return nil, err
	}
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
	ns, name := s.spec.ns(), s.spec.name()
	m, err := s.manifest(ctx)
	if err != nil {
		return err
	}
	// The orphan delete may only have been requested; wait until the
	// garbage collector has released the name, unless the journal says the
	// orphan step saw it gone (a uid never comes back): one list less
	// while Grafana is down.
	if s.j.Step(orphanStep{}.ID()).Status != plan.Done {
		if err := workload.WaitGone(ctx, s.c.Kube, ns, name, s.spec.Target.StatefulSet.UID, s.spec.Timeouts.Wait); err != nil {
			return err
		}
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
	sts, err := s.c.Kube.AppsV1().StatefulSets(s.spec.ns()).Get(ctx, s.spec.name(), metav1.GetOptions{})
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
	ns, name := s.spec.ns(), s.spec.name()
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
	if s.spec.KeepClaims {
		// Its pods run on the original claims: the original StatefulSet,
		// recreated by the orphan step's undo, adopts them serving.
		return workload.DeleteOrphan(ctx, s.c.Kube, ns, name, sts.UID, s.spec.Timeouts.Wait)
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
	m, err := s.originalManifest()
	if err != nil {
		return err
	}
	for i := range m.Spec.VolumeClaimTemplates {
		if m.Spec.VolumeClaimTemplates[i].Name == s.spec.Target.ClaimTemplate {
			m.Spec.VolumeClaimTemplates[i].Spec = s.spec.templateSpec()
		}
	}
	m.Name = trim63(m.Name + "-rebind-dryrun")
	_, err = s.c.Kube.AppsV1().StatefulSets(s.spec.ns()).Create(ctx, m, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	return err
}

// ---------------------------------------------------------------- Deployment

// A Deployment-mode release keeps its Deployment: its one claim is swapped
// while it runs 0 replicas, and the plan mirrors the StatefulSet's. Where a
// StatefulSet is orphan-deleted, the Deployment's replica count is
// recorded (its undo starts the original pods again, after the original
// claim is back); where orphaned pods are deleted, it is scaled to 0; where
// a StatefulSet is recreated, it is scaled back up.

func (e *env) liveDeployment(ctx context.Context) (*appsv1.Deployment, error) {
	d, err := e.c.Kube.AppsV1().Deployments(e.spec.ns()).Get(ctx, e.spec.name(), metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("Deployment %s/%s: %w", e.spec.ns(), e.spec.name(), err)
	}
	if d.UID != e.spec.Target.Deployment.UID {
		return nil, fmt.Errorf("Deployment %s/%s was recreated by someone else (uid %s, rebind started with %s)", e.spec.ns(), e.spec.name(), d.UID, e.spec.Target.Deployment.UID)
	}
	return d, nil
}

func (e *env) scaleDeployment(ctx context.Context, n int32) error {
	return workload.ScaleDeployment(ctx, e.c.Kube, e.spec.ns(), e.spec.name(), e.spec.Target.Deployment.UID, n)
}

// startDeployment scales the Deployment back to its replicas and waits
// until they are Ready.
func (e *env) startDeployment(ctx context.Context) error {
	if err := e.scaleDeployment(ctx, e.spec.replicas()); err != nil {
		return err
	}
	return workload.WaitDeploymentReady(ctx, e.c.Kube, e.spec.ns(), e.spec.name(), e.spec.Timeouts.Wait)
}

func (e *env) deploymentPodsGone(ctx context.Context) error {
	return workload.WaitNoPods(ctx, e.c.Kube, e.spec.ns(), e.spec.Target.Selector(), e.spec.Timeouts.Wait)
}

type holdDeploymentStep struct{ *env }

func (s holdDeploymentStep) ID() string { return "deployment-replicas" }
func (s holdDeploymentStep) Describe() string {
	return fmt.Sprintf("record that Deployment %s runs %d replica(s): a rollback starts them again on the original claim", s.spec.name(), s.spec.replicas())
}
func (s holdDeploymentStep) Precondition(ctx context.Context) error {
	for _, o := range s.spec.Target.Ordinals {
		if o.PV != nil {
			if err := s.requireRetain(ctx, o.PV.Name); err != nil {
				return err
			}
		}
	}
	_, err := s.liveDeployment(ctx)
	return err
}
func (s holdDeploymentStep) Apply(ctx context.Context) error {
	return s.j.SetValue(ctx, keyReplicas, fmt.Sprint(s.spec.replicas()))
}
func (s holdDeploymentStep) Check(context.Context) error {
	if s.value(keyReplicas) == "" {
		return errors.New("replica count not recorded")
	}
	return nil
}

// Undo starts the original replicas again; the release-claim undo, which
// runs before it, has put the original claim back on its volume.
func (s holdDeploymentStep) Undo(ctx context.Context) error {
	return s.startDeployment(ctx)
}

// stopDeploymentStep starts the outage: the Deployment goes to 0 replicas.
// It does not wait: the old claim (already marked for deletion) goes as
// soon as the pod is gone, and the next steps wait for that.
type stopDeploymentStep struct{ *env }

func (s stopDeploymentStep) ID() string { return "stop-pods" }
func (s stopDeploymentStep) Describe() string {
	return fmt.Sprintf("scale Deployment %s to 0 (%s is down from here until the redeploy is Ready)", s.spec.name(), s.appKind())
}
func (s stopDeploymentStep) Precondition(ctx context.Context) error {
	_, err := s.liveDeployment(ctx)
	return err
}
func (s stopDeploymentStep) Apply(ctx context.Context) error { return s.scaleDeployment(ctx, 0) }
func (s stopDeploymentStep) Check(ctx context.Context) error {
	d, err := s.liveDeployment(ctx)
	if err != nil {
		return err
	}
	if n := ptr.Deref(d.Spec.Replicas, 1); n != 0 {
		return fmt.Errorf("Deployment %s/%s has %d replicas", s.spec.ns(), s.spec.name(), n)
	}
	return nil
}

// Undo has nothing to do: the deployment-replicas undo starts the pods.
func (s stopDeploymentStep) Undo(context.Context) error { return nil }
func (s stopDeploymentStep) ServerDryRun(ctx context.Context) error {
	_, err := s.c.Kube.AppsV1().Deployments(s.spec.ns()).Patch(ctx, s.spec.name(), "application/merge-patch+json", []byte(`{"spec":{"replicas":0}}`), metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}}, "scale")
	return err
}

// redeployDeploymentStep starts the Deployment again on the new claim.
type redeployDeploymentStep struct{ *env }

func (s redeployDeploymentStep) ID() string { return "redeploy" }
func (s redeployDeploymentStep) Describe() string {
	return fmt.Sprintf("scale Deployment %s back to %d on claim %s and wait until Ready", s.spec.name(), s.spec.replicas(), s.spec.Target.Ordinals[0].Claim)
}
func (s redeployDeploymentStep) Precondition(ctx context.Context) error {
	if _, err := s.liveDeployment(ctx); err != nil {
		return err
	}
	return claimStep{s.env, 0}.Check(ctx)
}
func (s redeployDeploymentStep) Apply(ctx context.Context) error {
	// The scheduler backs a pod off for up to a second when its claim is
	// still binding: start the pods only on a Bound claim.
	if err := s.waitClaimsBound(ctx); err != nil {
		return err
	}
	return s.startDeployment(ctx)
}
func (s redeployDeploymentStep) Check(ctx context.Context) error {
	d, err := s.liveDeployment(ctx)
	if err != nil {
		return err
	}
	if d.Status.ReadyReplicas != s.spec.replicas() {
		return fmt.Errorf("%d/%d replicas ready (%d updated; status of generation %d, spec at generation %d)", d.Status.ReadyReplicas, s.spec.replicas(), d.Status.UpdatedReplicas, d.Status.ObservedGeneration, d.Generation)
	}
	return nil
}

// Undo stops the pods again so that the new claim can be released.
func (s redeployDeploymentStep) Undo(ctx context.Context) error {
	if err := s.scaleDeployment(ctx, 0); err != nil {
		return err
	}
	return s.deploymentPodsGone(ctx)
}
