package migrate

import (
	"context"
	"fmt"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/rebind-dev/rebind/pkg/discovery"
	"github.com/rebind-dev/rebind/pkg/helmredeploy"
	"github.com/rebind-dev/rebind/pkg/plan"
	"github.com/rebind-dev/rebind/pkg/preflight"
)

// --to-kind moves the data across the Grafana chart's persistence.type
// switch: a Deployment and its one claim <fullname> (type pvc, the chart's
// default) to a StatefulSet whose claim template makes
// storage-<fullname>-0 (type statefulset), or back. Upgrading the release
// with only the new type would start the new kind on a new, empty volume
// (grafana/helm-charts#681): the new kind's claim has another name.
//
// Only Helm can change what the release renders, so the switch needs
// --redeploy helm. The plan keeps the journal/rollback model: the old
// workload is stopped (never two pods on one ReadWriteOnce volume), the
// data volume (the same one with reuse, a restored copy with restore) is
// reserved for the claim name the new kind uses and that claim is created
// pre-bound, then rebind's `helm upgrade` with persistence.type and
// persistence.volumeName makes Helm create the new kind and delete the old
// workload (and its claim, already gone: the volume has Retain), and every
// dashboard is verified on the new kind. A rollback stops the new kind,
// gives the old claim name its volume back and returns the release to its
// earlier values, which renders the old kind again.

// Kinds for --to-kind.
const (
	ToStatefulSet = "statefulset"
	ToDeployment  = "deployment"
)

// keyNewWorkload is the uid of the workload of the new kind Helm created.
const keyNewWorkload = "new-workload-uid"

// normalizeKind accepts the spellings the chart accepts for its types.
func normalizeKind(k string) string {
	switch strings.ToLower(k) {
	case "statefulset", "sts":
		return ToStatefulSet
	case "deployment", "pvc":
		return ToDeployment
	}
	return ""
}

// chartType is the chart's persistence.type for a kind.
func chartType(kind string) string {
	if kind == ToStatefulSet {
		return "statefulset"
	}
	return "pvc"
}

// newKindName is the workload kind the data moves to, for messages.
func (s *Spec) newKindName() string {
	if s.ToKind == ToStatefulSet {
		return discovery.KindStatefulSet
	}
	return discovery.KindDeployment
}

// newClaim is the claim the new kind's pod mounts: the StatefulSet
// controller's storage-<fullname>-0, or the chart's pvc.yaml claim
// <fullname>. The chart names both kinds <fullname>, like the workload
// switched from (checked against the rendered chart in preflight).
func (s *Spec) newClaim(ord int) string {
	if s.ToKind == ToStatefulSet {
		return discovery.ClaimName(s.Target.ClaimTemplate, s.name(), ord)
	}
	return s.name()
}

// newPod is the checker's key for the new kind's Grafana: the StatefulSet
// pod by name, or the Deployment, whose pod names change.
func (s *Spec) newPod(ord int) string {
	if s.ToKind == ToStatefulSet {
		return fmt.Sprintf("%s-%d", s.name(), ord)
	}
	return s.name()
}

// claimsOf are the claim names an ordinal's data may be under, the one it
// ends on first: the report reads whichever exists (before the switch, or
// after a rollback, the original).
func (s *Spec) claimsOf(ord int) []string {
	if s.ToKind == "" {
		return []string{s.Target.Ordinals[ord].Claim}
	}
	return []string{s.newClaim(ord), s.Target.Ordinals[ord].Claim}
}

// switchValues are the values rebind's upgrade applies: the new type, the
// claim's volume, class and size (so the release renders the claim rebind
// created), the end of a user's existingClaim (the chart renders no
// StatefulSet while one is set), and Recreate for a Deployment on a
// ReadWriteOnce claim (RollingUpdate would start a second pod on it).
func switchValues(s *Spec, e *env) (map[string]any, []string) {
	pv := "<restored PV name>"
	if e != nil {
		if name, err := e.pvFor(0); err == nil {
			pv = name
		}
	} else if s.Strategy == Reuse && s.Target.Ordinals[0].PV != nil {
		pv = s.Target.Ordinals[0].PV.Name
	}
	p := map[string]any{"type": chartType(s.ToKind), "volumeName": pv, "storageClassName": s.ToClass, "size": s.Size}
	values := map[string]any{"persistence": p}
	if s.ToKind == ToStatefulSet && s.Target.IsDeployment() && !helmManaged(s.Target.Ordinals[0].PVC) {
		p["existingClaim"] = ""
	}
	if tpl := s.Target.Template(); s.ToKind == ToDeployment && tpl != nil && slices.Contains(tpl.Spec.AccessModes, corev1.ReadWriteOnce) {
		values["deploymentStrategy"] = map[string]any{"type": string(appsv1.RecreateDeploymentStrategyType)}
	}
	notes := []string{fmt.Sprintf("these values switch release %s from %s to %s on claim %s; rebind's `helm upgrade` applies them (a plain `helm upgrade --reuse-values` afterwards keeps them)",
		s.Target.Release, s.Target.KindName(), s.newKindName(), s.newClaim(0))}
	if !s.VolumeName {
		notes = append(notes, "persistence.volumeName applies to ordinal 0 only")
	}
	return values, notes
}

// SwitchPermissions are the rights Helm needs on top of HelmPermissions to
// replace one kind by the other: it creates the new workload and its
// Services and deletes the old ones.
func SwitchPermissions(ns string, o Options) []preflight.Permission {
	if o.ToKind == "" {
		return nil
	}
	p := func(verb, group, res string) preflight.Permission {
		return preflight.Permission{Verb: verb, Group: group, Resource: res, Namespace: ns}
	}
	return []preflight.Permission{
		p("create", "apps", "deployments"), p("delete", "apps", "deployments"),
		p("create", "", "services"), p("delete", "", "services"),
	}
}

// checkToKind validates --to-kind against the target and the release,
// changing nothing: a switch Helm cannot do as rebind expects (a chart
// that does not render the new kind under the same name with the claim
// rebind prepares) would start Grafana on an empty volume.
func (m *Migrate) checkToKind(ctx context.Context, o Options, spec *Spec, r *preflight.Report) error {
	if o.ToKind == "" {
		return nil
	}
	t := spec.Target
	ref := fmt.Sprintf("%s %s/%s", t.KindName(), t.Namespace, t.Name())
	kind := normalizeKind(o.ToKind)
	switch {
	case kind == "":
		r.Add("--to-kind", fmt.Sprintf("unknown kind %q", o.ToKind), "use statefulset or deployment")
		return nil
	case (kind == ToDeployment) == t.IsDeployment():
		r.Add("--to-kind "+kind, fmt.Sprintf("%s is already a %s", ref, t.KindName()), "drop --to-kind to migrate it as it is")
		return nil
	}
	spec.ToKind = kind
	newType := chartType(kind)
	if o.Redeploy != RedeployHelm {
		r.Add("--to-kind "+kind, fmt.Sprintf("only Helm can change what release %q renders; a plain `helm upgrade %s -n %s --reuse-values --set persistence.type=%s` would start the %s on a new, empty claim %s",
			t.Release, t.Release, t.Namespace, newType, spec.newKindName(), spec.newClaim(0)),
			"add --redeploy helm: rebind stops the old workload, binds the data to the new kind's claim and runs that upgrade itself, with persistence.volumeName")
	}
	switch {
	case o.Strategy == VeleroRestore:
		r.Add("--to-kind "+kind, "is not supported with --strategy velero-restore yet", "use --strategy reuse or restore, or restore first and switch the kind in a second run")
	case o.FromPV != "":
		r.Add("--to-kind "+kind, "is not supported with --from-pv yet", "bind the release to that volume first (--from-pv without --to-kind), then switch with --to-kind in a second run")
	case o.Quiesce:
		r.Add("--to-kind "+kind, "does not take --quiesce", "drop --quiesce (the snapshot is taken while Grafana serves) or take it in a run without --to-kind")
	}
	if kind == ToStatefulSet && t.Replicas() > 1 {
		r.Add(ref, fmt.Sprintf("runs %d replicas on one claim; a StatefulSet gives each replica a claim of its own, so replicas 1..%d would start on new, empty volumes", t.Replicas(), t.Replicas()-1),
			fmt.Sprintf("run one replica (`kubectl scale deployment %s -n %s --replicas=1` and replicas: 1 in the release's values) and re-run", t.Name(), t.Namespace))
	}
	if kind == ToDeployment && t.Replicas() > 1 {
		r.Add(ref, fmt.Sprintf("runs %d replicas, each with its own database; the chart's Deployment mode has one claim, so only one of them can move", t.Replicas()),
			fmt.Sprintf("scale it to the replica whose data you keep (`kubectl scale statefulset %s -n %s --replicas=1` keeps ordinal 0; its other claims stay, unless its persistentVolumeClaimRetentionPolicy whenScaled is Delete) and re-run", t.Name(), t.Namespace))
	}
	if len(t.Ordinals) > 0 && spec.newClaim(0) != t.Ordinals[0].Claim {
		c, err := m.Clients.Kube.CoreV1().PersistentVolumeClaims(t.Namespace).Get(ctx, spec.newClaim(0), metav1.GetOptions{})
		switch {
		case err == nil:
			r.Add("claim "+t.Namespace+"/"+c.Name, fmt.Sprintf("already exists (bound to %q): the %s would mount it instead of the data rebind moves", c.Spec.VolumeName, spec.newKindName()),
				"if it is left over from an earlier "+spec.newKindName()+", keep its volume (`kubectl patch pv <its volume> -p '{\"spec\":{\"persistentVolumeReclaimPolicy\":\"Retain\"}}'`), delete the claim and re-run")
		case !apierrors.IsNotFound(err):
			return fmt.Errorf("reading claim %s/%s: %w", t.Namespace, spec.newClaim(0), err)
		}
	}
	if o.Redeploy == RedeployHelm && t.Release != "" && r.Err() == nil {
		m.checkRendersNewKind(ctx, spec, r)
	}
	return nil
}

// checkRendersNewKind renders the release with the switch values (a dry
// run) and checks that it gives what the plan relies on: the new kind
// under the workload's name, mounting the claim rebind prepares, and no
// longer the old workload.
func (m *Migrate) checkRendersNewKind(ctx context.Context, spec *Spec, r *preflight.Report) {
	t := spec.Target
	h, err := helmredeploy.New(m.Clients.Config, t.Namespace, m.log())
	if err != nil {
		return // checkHelm reported it
	}
	values, _ := switchValues(spec, nil)
	objs, err := h.Render(ctx, t.Release, values)
	relRef := "Helm release " + t.Namespace + "/" + t.Release
	if err != nil {
		r.Add(relRef, err.Error(), "fix the release (`helm status "+t.Release+" -n "+t.Namespace+"`) and re-run")
		return
	}
	if msg := rendersSwitch(objs, spec); msg != "" {
		r.Add(relRef, msg, "rebind switches charts that render both kinds as the Grafana chart does (a subchart, such as kube-prometheus-stack's, takes its values under `grafana:`, which rebind's upgrade does not write); switch the kind yourself with a backup, or migrate without --to-kind")
	}
}

// rendersSwitch says what is wrong with a rendered release for the switch
// ("" when it renders the new kind as expected).
func rendersSwitch(objs []*unstructured.Unstructured, spec *Spec) string {
	name, claim := spec.name(), spec.newClaim(0)
	var found, old bool
	var kinds []string
	for _, o := range objs {
		kinds = append(kinds, o.GetKind()+" "+o.GetName())
		if o.GetName() != name {
			continue
		}
		switch o.GetKind() {
		case spec.Target.KindName():
			old = true
		case spec.newKindName():
			found = true
			// One replica: a StatefulSet of more would start ordinals 1..
			// on new, empty claims; a Deployment of more would share the
			// ReadWriteOnce claim.
			if n, ok, _ := unstructured.NestedFieldNoCopy(o.Object, "spec", "replicas"); ok && fmt.Sprint(n) != "1" {
				return fmt.Sprintf("with persistence.type=%s it renders %s %s with %v replicas; only one replica can run on the data rebind moves", chartType(spec.ToKind), spec.newKindName(), name, n)
			}
			if spec.ToKind == ToStatefulSet {
				tpls, _, _ := unstructured.NestedSlice(o.Object, "spec", "volumeClaimTemplates")
				ok := false
				for _, tpl := range tpls {
					if m, _ := tpl.(map[string]any); m != nil {
						if n, _, _ := unstructured.NestedString(m, "metadata", "name"); n == spec.Target.ClaimTemplate {
							ok = true
						}
					}
				}
				if !ok {
					return fmt.Sprintf("with persistence.type=%s it renders StatefulSet %s without claim template %q", chartType(spec.ToKind), name, spec.Target.ClaimTemplate)
				}
			} else {
				vols, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "volumes")
				got := ""
				for _, v := range vols {
					if m, _ := v.(map[string]any); m != nil && m["name"] == spec.Target.ClaimTemplate {
						got, _, _ = unstructured.NestedString(m, "persistentVolumeClaim", "claimName")
					}
				}
				if got != claim {
					return fmt.Sprintf("with persistence.type=%s it renders Deployment %s whose volume %q mounts claim %q, not %q", chartType(spec.ToKind), name, spec.Target.ClaimTemplate, got, claim)
				}
			}
		}
	}
	switch {
	case !found:
		return fmt.Sprintf("with persistence.type=%s it renders no %s named %s (it renders: %s)", chartType(spec.ToKind), spec.newKindName(), name, strings.Join(kinds, ", "))
	case old:
		return fmt.Sprintf("with persistence.type=%s it still renders %s %s", chartType(spec.ToKind), spec.Target.KindName(), name)
	}
	return ""
}

// buildSwitchPlan is the plan of a --to-kind migration. The old workload's
// step comes before the release's revision is recorded, so that in a
// rollback Helm renders the old kind again (helm-revision's undo) before
// that step's undo waits for it to be Ready; and after the old claim has
// its volume back (release-claim's undo), which Helm then adopts.
func buildSwitchPlan(e *env) *plan.Plan {
	s := e.spec
	p := &plan.Plan{Name: fmt.Sprintf("%s %s/%s to %s (%s)", s.Strategy, s.ns(), s.name(), s.newKindName(), s.RunID)}
	add := func(steps ...plan.Step) { p.Steps = append(p.Steps, steps...) }
	if !s.SkipVerify {
		add(baselineStep{e})
	}
	if s.Backup == BackupVelero {
		add(veleroBackupStep{e})
	}
	for _, o := range s.Target.Ordinals {
		if o.PV != nil {
			add(retainStep{e, o.PV.Name, o.Claim})
		}
	}
	if deletesClaims(s.originalRetention()) {
		add(retentionStep{e})
	}
	if s.Strategy == Restore {
		for i := range s.Target.Ordinals {
			if !s.ExistingSnap {
				add(snapshotStep{e, i})
			}
			add(restoreStep{e, i}, switchReserveStep{e, i})
		}
	}
	if s.Target.IsDeployment() {
		add(holdSourceStep{e})
	} else {
		add(sourceSTSStep{orphanStep{e, false}})
	}
	add(helmRevisionStep{e})
	for i, o := range s.Target.Ordinals {
		if o.PVC != nil && o.PV != nil {
			add(releaseClaimStep{e, i})
		}
	}
	if s.Target.IsDeployment() {
		add(stopDeploymentStep{e})
	} else {
		add(stopPodsStep{e})
	}
	for i := range s.Target.Ordinals {
		if s.Strategy == Reuse {
			add(switchReserveStep{e, i})
		}
		add(switchClaimStep{e, i})
	}
	add(switchStep{e})
	if !s.SkipVerify {
		add(switchVerifyStep{e})
	}
	if !s.KeepRetain {
		add(switchReclaimBackStep{e})
	}
	return p
}

// keep the compiler honest about interfaces.
var (
	_ plan.Step = switchStep{}
	_ plan.Step = switchClaimStep{}
	_ plan.Step = switchReserveStep{}
	_ plan.Step = holdSourceStep{}
	_ plan.Step = sourceSTSStep{}
)
