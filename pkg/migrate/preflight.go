package migrate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/rebind-dev/rebind/pkg/app"
	"github.com/rebind-dev/rebind/pkg/discovery"
	"github.com/rebind-dev/rebind/pkg/journal"
	"github.com/rebind-dev/rebind/pkg/preflight"
	"github.com/rebind-dev/rebind/pkg/snapshot"
	"github.com/rebind-dev/rebind/pkg/volume"
)

// Permissions lists every API verb a migration of that strategy needs.
// manifests/rbac-migrate.yaml grants exactly these.
func Permissions(ns string, s Strategy) []preflight.Permission {
	p := func(verb, group, res, sub, ns string) preflight.Permission {
		return preflight.Permission{Verb: verb, Group: group, Resource: res, Subresource: sub, Namespace: ns}
	}
	perms := []preflight.Permission{
		p("get", "apps", "statefulsets", "", ns), p("list", "apps", "statefulsets", "", ns), p("watch", "apps", "statefulsets", "", ns),
		p("create", "apps", "statefulsets", "", ns), p("delete", "apps", "statefulsets", "", ns),
		// update: a claim retention policy of Delete is set to Retain for the
		// migration and put back afterwards.
		p("update", "apps", "statefulsets", "", ns),
		p("patch", "apps", "statefulsets", "scale", ns),
		// A Deployment-mode release is scaled to 0 and back (update, so
		// that the write is conditional on what was read).
		p("get", "apps", "deployments", "", ns), p("watch", "apps", "deployments", "", ns), p("update", "apps", "deployments", "", ns),
		// Pods are deleted after the StatefulSet was orphan-deleted: that starts
		// the outage.
		p("get", "", "pods", "", ns), p("list", "", "pods", "", ns), p("watch", "", "pods", "", ns), p("delete", "", "pods", "", ns),
		p("get", "", "persistentvolumeclaims", "", ns), p("list", "", "persistentvolumeclaims", "", ns), p("watch", "", "persistentvolumeclaims", "", ns),
		p("create", "", "persistentvolumeclaims", "", ns), p("delete", "", "persistentvolumeclaims", "", ns),
		p("get", "", "persistentvolumes", "", ""), p("list", "", "persistentvolumes", "", ""), p("watch", "", "persistentvolumes", "", ""),
		p("update", "", "persistentvolumes", "", ""),
		p("list", "storage.k8s.io", "storageclasses", "", ""), p("get", "storage.k8s.io", "storageclasses", "", ""),
		// Discovery: the chart's Secret (admin credentials) and Service, a
		// Deployment-mode release for a better error, claim events for
		// the reason a claim stays Pending.
		p("get", "", "secrets", "", ns), p("get", "", "services", "", ns), p("list", "apps", "deployments", "", ns),
		p("list", "", "events", "", ns),
		// An Event on the workload for each phase of a run (events.go):
		// client-go's recorder creates them and patches a repeated one.
		p("create", "", "events", "", ns), p("patch", "", "events", "", ns),
		p("get", "", "configmaps", "", ns), p("list", "", "configmaps", "", ns), p("create", "", "configmaps", "", ns), p("update", "", "configmaps", "", ns),
		// The journal's Secret (the manifest a rollback recreates, env
		// values included) is created at the start; create cannot be
		// limited to a name (JournalPermissions has the rest).
		p("create", "", "secrets", "", ns),
		// The Lease; a held one is watched to see whether its holder
		// still renews it.
		p("get", "coordination.k8s.io", "leases", "", ns), p("create", "coordination.k8s.io", "leases", "", ns), p("update", "coordination.k8s.io", "leases", "", ns),
		p("watch", "coordination.k8s.io", "leases", "", ns),
	}
	if s == Restore {
		perms = append(perms,
			p("get", "snapshot.storage.k8s.io", "volumesnapshots", "", ns), p("list", "snapshot.storage.k8s.io", "volumesnapshots", "", ns),
			p("watch", "snapshot.storage.k8s.io", "volumesnapshots", "", ns), p("create", "snapshot.storage.k8s.io", "volumesnapshots", "", ns),
			p("get", "snapshot.storage.k8s.io", "volumesnapshotcontents", "", ""),
			p("list", "snapshot.storage.k8s.io", "volumesnapshotclasses", "", ""),
		)
	}
	return perms
}

// PodProxyPermissions are what reaching Grafana through the API server's
// pod proxy takes: get for its API reads, create for the POST /login that
// opens a Grafana session (the proxy removes the Authorization header).
// manifests/rbac-migrate.yaml grants them.
func PodProxyPermissions(ns string) []preflight.Permission {
	return []preflight.Permission{
		{Verb: "get", Resource: "pods", Subresource: "proxy", Namespace: ns},
		{Verb: "create", Resource: "pods", Subresource: "proxy", Namespace: ns},
	}
}

// ClaimReleasePermissions let rebind drop the pvc-protection finalizer of
// a claim it deleted as soon as no pod names it
// (volume.ReleaseDeletedClaim), instead of waiting for the controller,
// whose live pod list can add up to 100 ms to the outage. Optional:
// preflight does not ask, and without them rebind waits for the
// controller.
func ClaimReleasePermissions(ns string) []preflight.Permission {
	return []preflight.Permission{{Verb: "update", Resource: "persistentvolumeclaims", Namespace: ns}}
}

// JournalPermissions are the rights on the journal's Secret, named after
// the workload (journal.Name): read when a journal is loaded, deleted when
// a new run replaces a finished one. manifests/rbac-migrate.yaml grants
// them with resourceNames for the workload "grafana".
func JournalPermissions(ns, workload string) []preflight.Permission {
	name := journal.Name(workload)
	return []preflight.Permission{
		{Verb: "get", Resource: "secrets", Namespace: ns, Name: name},
		{Verb: "delete", Resource: "secrets", Namespace: ns, Name: name},
	}
}

// resolve validates the options against the discovered target and returns
// the spec, or every problem found. It changes nothing.
func (m *Migrate) resolve(ctx context.Context, o Options, t *discovery.Target) (*Spec, error) {
	var r preflight.Report
	stsRef := fmt.Sprintf("%s %s/%s", t.KindName(), t.Namespace, t.Name())
	spec := &Spec{Strategy: o.Strategy, Target: t, Quiesce: o.Quiesce, KeepRetain: o.KeepRetain, SkipVerify: o.SkipVerify, Timeouts: o.Timeouts}
	if spec.Timeouts == (Timeouts{}) {
		spec.Timeouts = DefaultTimeouts()
	}
	if t.Replicas() == 0 {
		r.Add(stsRef, "has 0 replicas, so rebind cannot tell which ordinals hold data", fmt.Sprintf("scale it to the number of replicas it normally runs (kubectl scale %s %s -n %s --replicas=1) and re-run", strings.ToLower(t.KindName()), t.Name(), t.Namespace))
		return nil, r.Err()
	}
	spec.VolumeName = t.Replicas() == 1

	tpl := t.Template()
	size := tpl.Spec.Resources.Requests[corev1.ResourceStorage]
	if q := checkOptions(o, t.Replicas(), &r); q != nil {
		size = *q
	}
	spec.Size = size.String()

	// Every ordinal's claim must be bound to its own PV: anything else means
	// the StatefulSet is not where rebind thinks the data is.
	for _, ord := range t.Ordinals {
		claimRef := fmt.Sprintf("claim %s/%s", t.Namespace, ord.Claim)
		switch {
		case ord.PVC == nil && o.FromSnapshot == "" && o.FromBackup == "":
			r.Add(claimRef, "does not exist, so ordinal "+fmt.Sprint(ord.Index)+" has no volume to move", "check --claim-template, or restore it with --strategy restore --from-snapshot NAME")
			continue
		case ord.PVC == nil:
			continue
		case ord.PV == nil:
			r.Add(claimRef, fmt.Sprintf("is %s, not Bound to a PersistentVolume", ord.PVC.Status.Phase), "fix the claim (kubectl describe pvc) before migrating")
			continue
		}
		if cr := ord.PV.Spec.ClaimRef; cr == nil || cr.UID != ord.PVC.UID || cr.Name != ord.Claim || cr.Namespace != t.Namespace {
			other := "nothing"
			if cr != nil {
				other = cr.Namespace + "/" + cr.Name
			}
			r.Add("PersistentVolume "+ord.PV.Name, fmt.Sprintf("is claimed by %s, not by %s", other, ord.Claim), "the claim and volume disagree; resolve the binding (kubectl describe pv) before migrating")
		} else if ord.PVC.Status.Phase != corev1.ClaimBound {
			r.Add(claimRef, fmt.Sprintf("is %s, not Bound", ord.PVC.Status.Phase), "fix the claim (kubectl describe pvc) before migrating")
		}
	}

	// Target class.
	fromClass := ""
	for _, ord := range t.Ordinals {
		if ord.StorageClass != "" {
			fromClass = ord.StorageClass
			break
		}
	}
	if fromClass == "" {
		fromClass = ptr.Deref(tpl.Spec.StorageClassName, t.DefaultClass)
	}
	spec.ToClass = o.ToClass
	if spec.ToClass == "" {
		spec.ToClass = fromClass
	}
	var toProvisioner string
	if spec.ToClass == "" {
		r.Add(stsRef, "its volumes have no StorageClass and the cluster has no default class", "pass --to-storage-class")
	} else if sc, err := m.Clients.Kube.StorageV1().StorageClasses().Get(ctx, spec.ToClass, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		r.Add("StorageClass "+spec.ToClass, "not found", "list the classes with `kubectl get storageclass` and pass an existing one with --to-storage-class")
	} else if err != nil {
		return nil, fmt.Errorf("reading StorageClass %s: %w", spec.ToClass, err)
	} else {
		toProvisioner = sc.Provisioner
	}

	switch o.Strategy {
	case Reuse:
		if o.FromPV != "" {
			if err := m.checkFromPV(ctx, o, spec, &r); err != nil {
				return nil, err
			}
			break
		}
		for _, ord := range t.Ordinals {
			if ord.PV == nil {
				continue
			}
			if spec.ToClass != ord.PV.Spec.StorageClassName {
				r.Add("PersistentVolume "+ord.PV.Name, fmt.Sprintf("is in class %q; reuse keeps the volume, so it cannot move to %q", ord.PV.Spec.StorageClassName, spec.ToClass), "use --strategy restore to copy the data into the new class")
				continue
			}
			shape := volume.ShapeFromSpec(t.Namespace, ord.Claim, spec.templateSpec())
			if err := volume.CheckFits(ord.PV, shape); err != nil {
				r.Add("PersistentVolume "+ord.PV.Name, err.Error(), "choose a --size no larger than the volume, or --strategy restore into a larger volume")
			}
		}
	case Restore:
		m.checkRestore(ctx, o, spec, toProvisioner, &r)
	case VeleroRestore: // checked by checkVelero
	}
	// Velero and Helm (velero_steps.go, helm_steps.go).
	if err := m.checkVelero(ctx, o, spec, &r); err != nil {
		return nil, err
	}
	m.checkHelm(o, spec, &r)
	if err := m.checkToKind(ctx, o, spec, &r); err != nil { // tokind.go
		return nil, err
	}

	// With --from-pv the Grafana running now is not the reference (it does
	// not run on that volume, and is often a fresh, empty install): it only
	// has to answer.
	if !o.SkipVerify && o.BaselineFile == "" && m.Checker != nil && len(spec.FromPVs) > 0 {
		for _, ord := range t.Ordinals {
			cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			err := m.Checker.Ready(cctx, ord.Pod)
			cancel()
			if err != nil {
				r.Add(fmt.Sprintf("%s of pod %s", m.Checker.Kind(), ord.Pod), fmt.Sprintf("not reachable or refused the credentials, so nothing can be verified: %v", err),
					"fix --grafana-url / credentials")
			}
		}
	}
	if !o.SkipVerify && o.BaselineFile == "" && m.Checker != nil && len(spec.FromPVs) == 0 {
		for _, ord := range t.Ordinals {
			if ord.PV == nil {
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			err := app.Preflight(cctx, m.Checker, ord.Pod)
			cancel()
			switch {
			case errors.Is(err, app.ErrIncomplete):
				r.Add(fmt.Sprintf("%s of pod %s", m.Checker.Kind(), ord.Pod), err.Error(), "as the message says; nothing was changed")
			case err != nil:
				r.Add(fmt.Sprintf("%s of pod %s", m.Checker.Kind(), ord.Pod), fmt.Sprintf("not reachable or refused the credentials, so no baseline can be taken: %v", err),
					"fix --grafana-url / credentials, or pass --baseline FILE from an earlier `rebind inventory`")
			}
		}
	}
	spec.KeepClaims = spec.Strategy == Reuse && len(spec.FromPVs) == 0 && !t.IsDeployment() && spec.ToKind == ""
	return spec, r.Err()
}

// checkOptions finds what is wrong with the options alone, given the
// number of replicas, and returns the --size asked for (nil when none or
// invalid). A size the API server would refuse must be refused here: found
// only when the claim is created, it would fail in the middle of the
// outage.
func checkOptions(o Options, replicas int, r *preflight.Report) *resource.Quantity {
	switch o.Strategy {
	case Reuse, Restore, VeleroRestore:
	default:
		r.Add("--strategy", fmt.Sprintf("unknown strategy %q", o.Strategy), "use reuse, restore or velero-restore")
	}
	var size *resource.Quantity
	if o.Size != "" {
		q, err := resource.ParseQuantity(o.Size)
		switch {
		case err != nil:
			r.Add("--size", fmt.Sprintf("%q is not a Kubernetes quantity", o.Size), "use a quantity such as 10Gi, or leave --size out to keep the claim template's size")
		case q.Sign() <= 0:
			r.Add("--size", fmt.Sprintf("%q is not a positive size: no claim can request it", o.Size), "use a quantity such as 10Gi, or leave --size out to keep the claim template's size")
		default:
			size = &q
		}
	}
	if o.FromSnapshot != "" {
		switch {
		case o.Strategy != Restore:
			r.Add("--from-snapshot", "only applies to --strategy restore", "drop it or use --strategy restore")
		case replicas > 1 && !strings.Contains(o.FromSnapshot, "{ordinal}"):
			r.Add("--from-snapshot", fmt.Sprintf("names one snapshot for %d replicas: every replica would get the same data", replicas), "put {ordinal} in the name (for example storage-grafana-{ordinal}-nightly)")
		}
		if o.BaselineFile == "" && !o.SkipVerify {
			r.Add("--from-snapshot", "restoring a snapshot after data loss needs a baseline from before the loss: what Grafana serves now is not it", "pass --baseline FILE (an earlier `rebind inventory`), or --skip-verify to accept the snapshot as is")
		}
	}
	if o.FromPV != "" {
		switch {
		case o.Strategy != Reuse:
			r.Add("--from-pv", "only applies to --strategy reuse", "drop it, or use --strategy reuse to bind the workload to that PersistentVolume")
		case replicas > 1 && !strings.Contains(o.FromPV, "{ordinal}"):
			r.Add("--from-pv", fmt.Sprintf("names one PersistentVolume for %d replicas: they would share it", replicas), "put {ordinal} in the name, one PersistentVolume per ordinal")
		}
	}
	return size
}

func (m *Migrate) checkRestore(ctx context.Context, o Options, spec *Spec, toProvisioner string, r *preflight.Report) {
	t := spec.Target
	size := resource.MustParse(spec.Size)
	if o.FromSnapshot != "" {
		spec.ExistingSnap = true
		if t.Replicas() > 1 && !strings.Contains(o.FromSnapshot, "{ordinal}") {
			return // checkOptions said so
		}
		for _, ord := range t.Ordinals {
			name := expandOrdinal(o.FromSnapshot, ord.Index)
			spec.Snapshots = append(spec.Snapshots, name)
			vs, err := snapshot.Get(ctx, m.Clients.Snap, t.Namespace, name)
			if err != nil {
				r.Add("VolumeSnapshot "+t.Namespace+"/"+name, err.Error(), "pass an existing snapshot; with several replicas use {ordinal} in the name")
				continue
			}
			if vs.Status == nil || !ptr.Deref(vs.Status.ReadyToUse, false) {
				r.Add("VolumeSnapshot "+t.Namespace+"/"+name, "is not readyToUse", "wait for it or choose another snapshot")
				continue
			}
			driver, err := snapshot.Driver(ctx, m.Clients.Snap, vs)
			if err != nil {
				r.Add("VolumeSnapshot "+t.Namespace+"/"+name, err.Error(), "check the snapshot controller")
				continue
			}
			if toProvisioner != "" && driver != toProvisioner {
				r.Add("StorageClass "+spec.ToClass, fmt.Sprintf("is provisioned by %s, but snapshot %s belongs to driver %s: a snapshot can only be restored by its own driver", toProvisioner, name, driver), "restore into a class of driver "+driver+", or move the data with --strategy velero-restore")
			}
			if rs := snapshot.RestoreSize(vs); size.Cmp(rs) < 0 && o.Size != "" {
				r.Add("--size", fmt.Sprintf("%s is smaller than snapshot %s's restoreSize %s", o.Size, name, rs.String()), "pass --size "+rs.String()+" or more")
			}
		}
		return
	}
	for _, ord := range t.Ordinals {
		if ord.PV == nil {
			continue
		}
		pvRef := "PersistentVolume " + ord.PV.Name
		if !ord.CSI {
			r.Add(pvRef, "is not a CSI volume: the snapshot controller cannot snapshot it", "use --strategy reuse, or copy the data with Velero (--strategy velero-restore)")
			continue
		}
		if ord.SnapshotClass == "" {
			what := "no VolumeSnapshotClass for driver " + ord.Driver
			if o.Target.SnapshotClass != "" {
				what = fmt.Sprintf("VolumeSnapshotClass %q does not exist or is not for driver %s", o.Target.SnapshotClass, ord.Driver)
			}
			r.Add(pvRef, what, "create a VolumeSnapshotClass for "+ord.Driver+" (or mark one default) and pass --snapshot-class")
		}
		if toProvisioner != "" && toProvisioner != ord.Driver {
			r.Add("StorageClass "+spec.ToClass, fmt.Sprintf("is provisioned by %s, but %s's snapshots belong to driver %s: a CSI snapshot cannot be restored by another driver", toProvisioner, ord.PV.Name, ord.Driver), "pick a class of driver "+ord.Driver+", or move the data with --strategy velero-restore")
		}
		capacity := ord.PV.Spec.Capacity[corev1.ResourceStorage]
		if size.Cmp(capacity) < 0 {
			r.Add("--size", fmt.Sprintf("%s is smaller than %s's capacity %s: the restored volume would not hold the data", spec.Size, ord.PV.Name, capacity.String()), "pass --size "+capacity.String()+" or more")
		}
	}
}

// checkFromPV checks the PVs --from-pv names, one per ordinal: each may be
// taken only if it is free, reserved for or bound to that ordinal's claim,
// or held by a claim that is gone (a stale uid); and it must fit the claim
// (class, size, access and volume modes) and be reachable from a node.
func (m *Migrate) checkFromPV(ctx context.Context, o Options, spec *Spec, r *preflight.Report) error {
	t := spec.Target
	if t.Replicas() > 1 && !strings.Contains(o.FromPV, "{ordinal}") {
		return nil // checkOptions said so
	}
	var pvs []*corev1.PersistentVolume
	for _, ord := range t.Ordinals {
		name := expandOrdinal(o.FromPV, ord.Index)
		ref := "PersistentVolume " + name
		pv, err := m.Clients.Kube.CoreV1().PersistentVolumes().Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			r.Add(ref, "not found", "list the volumes with `kubectl get pv` and pass one with --from-pv")
			continue
		}
		if err != nil {
			return fmt.Errorf("reading %s: %w", ref, err)
		}
		if err := volume.CheckReservable(ctx, m.Clients.Kube, pv, t.Namespace, ord.Claim); err != nil {
			r.Add(ref, err.Error(), "pass a PersistentVolume that is free, or whose claim is gone")
			continue
		}
		spec.FromPVs = append(spec.FromPVs, name)
		pvs = append(pvs, pv)
	}
	if len(pvs) != len(t.Ordinals) {
		return nil
	}
	// The claims are made in the class the volumes are in.
	if o.ToClass == "" {
		spec.ToClass = pvs[0].Spec.StorageClassName
	}
	nodes, err := m.Clients.Kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil && !apierrors.IsForbidden(err) {
		return fmt.Errorf("listing nodes: %w", err)
	}
	for i, pv := range pvs {
		ref := "PersistentVolume " + pv.Name
		shape := volume.ShapeFromSpec(t.Namespace, t.Ordinals[i].Claim, spec.templateSpec())
		if err := volume.CheckFits(pv, shape); err != nil {
			r.Add(ref, err.Error(), "pass --to-storage-class and --size matching the volume")
		}
		if err == nil && nodes != nil {
			if msg := volume.Unreachable(pv, nodes.Items); msg != "" {
				r.Add(ref, msg, "a local volume lives on its node: bring the node back, or restore a copy with --strategy restore")
			}
		}
	}
	if !o.SkipVerify && o.BaselineFile == "" && o.ReadDB == nil {
		r.Add("--from-pv", fmt.Sprintf("the %s running now does not run on %v, so what it serves is not what must come through", m.Checker.Kind(), spec.FromPVs),
			"pass --baseline FILE (an earlier `rebind inventory`), or --offline-volume-root DIR so rebind reads the volume's database as the reference, or --skip-verify")
	}
	return nil
}

func expandOrdinal(pattern string, ord int) string {
	return strings.ReplaceAll(pattern, "{ordinal}", fmt.Sprint(ord))
}
