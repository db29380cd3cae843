package migrate

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"go.uber.org/zap"
	"helm.sh/helm/v3/pkg/release"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/rebind-dev/rebind/pkg/helmredeploy"
	"github.com/rebind-dev/rebind/pkg/plan"
	"github.com/rebind-dev/rebind/pkg/preflight"
	"github.com/rebind-dev/rebind/pkg/workload"
)

// Redeploy modes for --redeploy.
const (
	RedeployDirect = "direct"
	RedeployHelm   = "helm"
)

const keyHelmRevision = "helm/revision" // release revision before rebind's upgrade

// keyHelmUpgraded is set just before rebind's upgrade: a rollback then
// knows that the next revision, even a failed one, is rebind's.
const keyHelmUpgraded = "helm/upgraded"

// redeployFor is the step that brings the StatefulSet back: created
// directly from the saved manifest, or rendered by a Helm upgrade.
func redeployFor(e *env) plan.Step {
	if e.spec.Target.IsDeployment() {
		if e.spec.Redeploy == RedeployHelm {
			return helmRedeployDeploymentStep{e}
		}
		return redeployDeploymentStep{e}
	}
	if e.spec.Redeploy == RedeployHelm {
		return helmRedeployStep{e}
	}
	return redeployStep{e}
}

// helm runs Helm actions in the target's namespace.
func (e *env) helm() (*helmredeploy.Helm, error) {
	return helmredeploy.New(e.c.Config, e.spec.ns(), e.log)
}

// helmRelease reads the latest revision of the target's release.
func (e *env) helmRelease() (*helmredeploy.Helm, *release.Release, error) {
	h, err := e.helm()
	if err != nil {
		return nil, nil, err
	}
	rel, err := h.Release(e.spec.Target.Release)
	return h, rel, err
}

// helmRedeployStep keeps the ID "redeploy" so that downtime and resume
// treat both modes alike.
type helmRedeployStep struct{ *env }

func (s helmRedeployStep) ID() string { return "redeploy" }
func (s helmRedeployStep) Describe() string {
	return fmt.Sprintf("helm upgrade release %s (its chart and values, plus persistence values for class %s) to recreate StatefulSet %s, and wait until Ready",
		s.spec.Target.Release, s.spec.ToClass, s.spec.name())
}
func (s helmRedeployStep) Precondition(ctx context.Context) error {
	if err := (redeployStep{s.env}).Precondition(ctx); err != nil {
		return err
	}
	_, _, err := s.helmRelease()
	return err
}
func (s helmRedeployStep) Apply(ctx context.Context) error {
	ns, name := s.spec.ns(), s.spec.name()
	if uid := s.value(keyNewSTS); uid != "" {
		if sts, err := s.c.Kube.AppsV1().StatefulSets(ns).Get(ctx, name, metav1.GetOptions{}); err == nil && string(sts.UID) == uid {
			return workload.WaitReady(ctx, s.c.Kube, ns, name, s.spec.Timeouts.Wait)
		}
	}
	// Helm would patch a StatefulSet still being orphan-deleted; it must
	// create a new one.
	if err := workload.WaitGone(ctx, s.c.Kube, ns, name, s.spec.Target.StatefulSet.UID, s.spec.Timeouts.Wait); err != nil {
		return err
	}
	if err := s.waitClaimsBound(ctx); err != nil {
		return err
	}
	h, err := s.helm()
	if err != nil {
		return err
	}
	rel, err := s.upgradeRelease(ctx, h)
	if err != nil {
		return err
	}
	sts, err := s.c.Kube.AppsV1().StatefulSets(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("helm upgrade %s (revision %d) did not create StatefulSet %s/%s: %w", rel.Name, rel.Version, ns, name, err)
	}
	if sts.UID == s.spec.Target.StatefulSet.UID {
		return fmt.Errorf("the original StatefulSet %s/%s still exists", ns, name)
	}
	if err := s.j.SetValue(ctx, keyNewSTS, string(sts.UID)); err != nil {
		return err
	}
	return workload.WaitReady(ctx, s.c.Kube, ns, name, s.spec.Timeouts.Wait)
}

func (s helmRedeployStep) Check(ctx context.Context) error { return redeployStep{s.env}.Check(ctx) }

// Undo removes the StatefulSet Helm created; the orphan step's undo then
// recreates the original directly, and the helm-revision step's undo
// points the release back at its revision from before the migration.
func (s helmRedeployStep) Undo(ctx context.Context) error {
	return (redeployStep{s.env}).Undo(ctx)
}

// helmRedeployDeploymentStep starts a Deployment-mode release again with a
// `helm upgrade` whose values render the claim rebind created (the chart's
// pvc.yaml: volumeName, storageClassName, size), so that the release
// record and the cluster agree and the user's next upgrade is a no-op for
// the claim. The Deployment itself is kept throughout (scaled to 0).
type helmRedeployDeploymentStep struct{ *env }

func (s helmRedeployDeploymentStep) ID() string { return "redeploy" }
func (s helmRedeployDeploymentStep) Describe() string {
	return fmt.Sprintf("helm upgrade release %s (its chart and values, plus persistence values for claim %s on the new volume), scale Deployment %s back to %d and wait until Ready",
		s.spec.Target.Release, s.spec.Target.Ordinals[0].Claim, s.spec.name(), s.spec.replicas())
}
func (s helmRedeployDeploymentStep) Precondition(ctx context.Context) error {
	if err := (redeployDeploymentStep{s.env}).Precondition(ctx); err != nil {
		return err
	}
	_, _, err := s.helmRelease()
	return err
}
func (s helmRedeployDeploymentStep) Apply(ctx context.Context) error {
	// Helm patches the claim from the rendered spec: it must be Bound to
	// the new volume first, or the patch would race the binder.
	if err := s.waitClaimsBound(ctx); err != nil {
		return err
	}
	h, err := s.helm()
	if err != nil {
		return err
	}
	upgraded, err := s.upgradedByUs(h)
	if err != nil {
		return err
	}
	if !upgraded {
		if _, err := s.upgradeRelease(ctx, h); err != nil {
			return err
		}
	}
	// Helm's three-way merge puts back the chart's replica count, but a
	// chart value (autoscaling) may leave it out: rebind starts what it
	// stopped either way.
	return s.startDeployment(ctx)
}

// upgradedByUs says whether a resumed run's upgrade already went through:
// the release is deployed at the one revision after the recorded one.
func (s helmRedeployDeploymentStep) upgradedByUs(h *helmredeploy.Helm) (bool, error) {
	if s.value(keyHelmUpgraded) == "" {
		return false, nil
	}
	rev, err := strconv.Atoi(s.value(keyHelmRevision))
	if err != nil {
		return false, fmt.Errorf("release revision before the upgrade was not recorded: %w", err)
	}
	cur, err := h.Release(s.spec.Target.Release)
	if err != nil {
		return false, err
	}
	return cur.Version == rev+1 && cur.Info != nil && cur.Info.Status == release.StatusDeployed, nil
}

func (s helmRedeployDeploymentStep) Check(ctx context.Context) error {
	return redeployDeploymentStep{s.env}.Check(ctx)
}

// Undo stops the pods again; the helm-revision step's undo then rolls the
// release back once the original claim is restored.
func (s helmRedeployDeploymentStep) Undo(ctx context.Context) error {
	return redeployDeploymentStep{s.env}.Undo(ctx)
}

// upgradeRelease runs rebind's `helm upgrade` of the target's release with
// the persistence values of the run. It records that an upgrade started
// before starting it: an earlier attempt killed inside Helm's upgrade left
// its revision pending for ever, and Helm would refuse this one, so that
// revision is first marked failed.
func (e *env) upgradeRelease(ctx context.Context, h *helmredeploy.Helm) (*release.Release, error) {
	values, _ := helmValues(e.spec, e)
	if e.value(keyHelmUpgraded) != "" {
		if err := e.failOwnPending(h, values); err != nil {
			return nil, err
		}
	}
	if err := e.j.SetValue(ctx, keyHelmUpgraded, "true"); err != nil {
		return nil, err
	}
	return h.Upgrade(ctx, e.spec.Target.Release, values, e.helmDescription())
}

// helmDescription is the description of rebind's upgrade revision.
func (e *env) helmDescription() string {
	return fmt.Sprintf("rebind run %s: persistence on the migrated volumes", e.spec.RunID)
}

// failOwnPending marks failed the revision rebind's killed upgrade left
// pending: the revision right after the one recorded before the run,
// carrying rebind's values. Anything else pending is someone else's and
// stops the step.
func (e *env) failOwnPending(h *helmredeploy.Helm, values map[string]any) error {
	rev, err := strconv.Atoi(e.value(keyHelmRevision))
	if err != nil {
		return fmt.Errorf("the Helm revision before the run is not recorded: %w", err)
	}
	fixed, err := h.FailPending(e.spec.Target.Release, rev+1, values, e.helmDescription()+" (interrupted: the rebind process running it was killed; marked failed by the next run)")
	if err != nil || !fixed {
		return err
	}
	w := fmt.Sprintf("Helm release %s/%s: revision %d, the upgrade of the interrupted run, was left pending-upgrade; rebind marked it failed (Helm refuses to upgrade a release with a pending revision)", e.spec.ns(), e.spec.Target.Release, rev+1)
	e.log.Warn("interrupted Helm upgrade marked failed", zap.String("release", e.spec.Target.Release), zap.Int("revision", rev+1))
	e.warnings = append(e.warnings, w)
	return nil
}

// helmRevisionStep records the release's revision before anything changes.
// It comes before the StatefulSet is deleted, so its undo runs after the
// original StatefulSet is back: `helm rollback` to that revision then finds
// the objects as that revision's manifest describes them (a no-op patch)
// and the release history, and the user's next `helm upgrade`, match the
// cluster again.
type helmRevisionStep struct{ *env }

func (s helmRevisionStep) ID() string { return "helm-revision" }
func (s helmRevisionStep) Describe() string {
	return fmt.Sprintf("record the revision of Helm release %s, which a rollback returns it to", s.spec.Target.Release)
}
func (s helmRevisionStep) Precondition(context.Context) error {
	_, _, err := s.helmRelease()
	return err
}
func (s helmRevisionStep) Apply(ctx context.Context) error {
	if s.value(keyHelmRevision) != "" {
		return nil // resumed: the revision from before the first attempt counts
	}
	_, cur, err := s.helmRelease()
	if err != nil {
		return err
	}
	return s.j.SetValue(ctx, keyHelmRevision, strconv.Itoa(cur.Version))
}
func (s helmRevisionStep) Check(context.Context) error {
	if s.value(keyHelmRevision) == "" {
		return errors.New("release revision not recorded")
	}
	return nil
}

// Undo rolls the release back only if rebind's upgrade (even a failed one)
// added the one revision since; a release someone upgraded after that is
// left alone, with the command to run once they agree.
func (s helmRevisionStep) Undo(ctx context.Context) error {
	rev, err := strconv.Atoi(s.value(keyHelmRevision))
	if err != nil {
		return nil // never recorded: nothing was upgraded
	}
	h, cur, err := s.helmRelease()
	if err != nil {
		return err
	}
	if cur.Version == rev {
		return nil
	}
	if s.value(keyHelmUpgraded) != "" && cur.Version == rev+1 && cur.Info.Status.IsPending() {
		// rebind's upgrade was killed inside Helm: its revision is
		// pending, which is failed in all but name.
		values, _ := helmValues(s.spec, s.env)
		if err := s.failOwnPending(h, values); err != nil {
			return err
		}
	}
	if cur.Version != rev+1 || s.value(keyHelmUpgraded) == "" {
		// Not an error: the volumes are back, and failing here would stop
		// the rollback before the reclaim policies are restored.
		w := fmt.Sprintf("Helm release %s/%s is at revision %d, not rebind's %d: someone upgraded it since, so rebind left it; its values may still name the migrated volumes, which fails the next `helm upgrade` on the immutable claim template: run `helm rollback %s %d -n %s` if that revision is still right",
			s.spec.ns(), s.spec.Target.Release, cur.Version, rev+1, s.spec.Target.Release, rev, s.spec.ns())
		s.log.Warn("Helm release left as it is", zap.String("why", w))
		s.env.warnings = append(s.env.warnings, w)
		return nil
	}
	why := "rebind rollback of run " + s.spec.RunID
	if !s.spec.Target.IsDeployment() {
		return h.Rollback(s.spec.Target.Release, rev, why)
	}
	// Deployment mode: the chart renders the claim itself. Replaying the
	// old manifest would drop the volumeName rebind's revision set, which
	// a bound claim refuses (immutable spec); rendering the old values
	// again looks the restored claim's volumeName up (pvc.yaml,
	// lookupVolumeName) and matches it.
	if err := h.UpgradeTo(ctx, s.spec.Target.Release, rev, why); err != nil {
		w := fmt.Sprintf("the volume is back but Helm release %s/%s could not return to the values of revision %d (%v): its values still name the migrated volume; run `helm upgrade %s <chart> -n %s --reuse-values --set persistence.volumeName=%s,persistence.storageClassName=%s` so that it renders the restored claim",
			s.spec.ns(), s.spec.Target.Release, rev, err, s.spec.Target.Release, s.spec.ns(), s.spec.Target.Ordinals[0].PV.Name, ptr.Deref(s.spec.Target.Ordinals[0].PVC.Spec.StorageClassName, ""))
		s.log.Warn("Helm release not returned", zap.Error(err))
		s.env.warnings = append(s.env.warnings, w)
	}
	return nil
}

// HelmPermissions are the rights --redeploy helm adds: Helm reads and writes
// its release Secrets and patches or creates the chart's objects.
func HelmPermissions(ns string, o Options) []preflight.Permission {
	if o.Redeploy != RedeployHelm {
		return nil
	}
	if o.Install != nil && o.FromPV != "" {
		return InstallPermissions(ns)
	}
	p := func(verb, group, res string) preflight.Permission {
		return preflight.Permission{Verb: verb, Group: group, Resource: res, Namespace: ns}
	}
	return []preflight.Permission{
		p("list", "", "secrets"), p("create", "", "secrets"), p("update", "", "secrets"), p("patch", "", "secrets"),
		p("patch", "", "services"), p("patch", "apps", "statefulsets"),
		// Deployment mode: the chart renders the Deployment and its claim.
		p("patch", "apps", "deployments"), p("patch", "", "persistentvolumeclaims"),
	}
}

// checkHelm validates --redeploy against the release, changing nothing.
func (m *Migrate) checkHelm(o Options, spec *Spec, r *preflight.Report) {
	switch o.Redeploy {
	case "", RedeployDirect:
		spec.Redeploy = RedeployDirect
		return
	case RedeployHelm:
		spec.Redeploy = RedeployHelm
	default:
		r.Add("--redeploy", fmt.Sprintf("unknown mode %q", o.Redeploy), "use direct or helm")
		return
	}
	t := spec.Target
	if t.Release == "" {
		r.Add("--redeploy helm", fmt.Sprintf("StatefulSet %s/%s carries no Helm release annotation (meta.helm.sh/release-name)", t.Namespace, t.Name()), "pass --release, or use --redeploy direct")
		return
	}
	h, err := helmredeploy.New(m.Clients.Config, t.Namespace, m.log())
	if err != nil {
		r.Add("--redeploy helm", err.Error(), "use --redeploy direct")
		return
	}
	rel, err := h.Release(t.Release)
	if err != nil {
		r.Add("Helm release "+t.Namespace+"/"+t.Release, err.Error(), "check `helm status "+t.Release+" -n "+t.Namespace+"` (rebind reads Helm's Secret storage), or use --redeploy direct")
		return
	}
	if rel.Chart == nil || rel.Chart.Metadata == nil {
		r.Add("Helm release "+t.Namespace+"/"+t.Release, "has no chart in its record", "use --redeploy direct")
	}
}

// redeployWarnings are what the user must act on after the run.
func redeployWarnings(s *Spec) []string {
	if s.Install != nil {
		return installWarnings(s)
	}
	if s.ToKind != "" {
		return nil // rebind's upgrade applied the values (tokind.go)
	}
	if s.Target.IsDeployment() {
		if s.Redeploy == RedeployHelm {
			return nil // rebind's upgrade applied the values, Recreate included
		}
		var w []string
		if s.Target.Release != "" && helmManaged(s.Target.Ordinals[0].PVC) {
			w = append(w, fmt.Sprintf("claim %s was recreated on a new volume: run the next `helm upgrade %s` with the Helm values above (or --values-out FILE), or Helm renders the old claim spec and the upgrade fails on the immutable field", s.Target.Ordinals[0].Claim, s.Target.Release))
		}
		if rollingUpdateRWO(s) {
			w = append(w, fmt.Sprintf("Deployment %s uses strategy RollingUpdate with a ReadWriteOnce claim: a later upgrade starts the new pod before the old one stops and hangs when it lands on another node (multi-attach); rebind scaled to 0 and back, but set deploymentStrategy.type=Recreate (in the values above)", s.name()))
		}
		return w
	}
	if s.Target.Release == "" || s.Redeploy == RedeployHelm {
		return nil
	}
	return []string{fmt.Sprintf("the StatefulSet was recreated directly, not by Helm: run the next `helm upgrade %s` with the Helm values above (or --values-out FILE), or Helm renders the old claim template and the upgrade fails on the immutable field (--redeploy helm avoids this)", s.Target.Release)}
}
