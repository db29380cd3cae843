package drill

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/rebind-dev/rebind/pkg/app"
	"github.com/rebind-dev/rebind/pkg/discovery"
	"github.com/rebind-dev/rebind/pkg/preflight"
)

// OfflineHelp explains what --offline needs; the CLI prints it too.
const OfflineHelp = "offline mode reads the restored grafana.db directly, so the restored volume's files must be reachable from where rebind runs " +
	"(for example rebind running as a Job on the storage node with the driver's data directory mounted, passed as --offline-volume-root); " +
	"otherwise drop --offline and let the drill start a throwaway Grafana on the restored volumes"

// preflight checks everything the drill needs before it creates anything,
// and reports every problem at once.
func (d *Drill) preflight(ctx context.Context, o Options, t *discovery.Target, scratch, runID string) ([]*ordinalPlan, error) {
	var r preflight.Report
	if err := preflight.CheckAccess(ctx, d.Clients.Kube, Permissions(scopeOf(o, t, scratch)), &r); err != nil {
		return nil, err
	}
	for i := range r.Problems {
		r.Problems[i].Fix = "grant it to the user or ServiceAccount running rebind drill (see manifests/rbac-drill.yaml)"
		if strings.Contains(r.Problems[i].Message, "pods/proxy") {
			r.Problems[i].Fix = "Grafana is reached through the API server's pod proxy (rebind runs outside the cluster and no URL is given): grant get and create on pods/proxy (manifests/rbac-drill-pod-proxy.yaml), or run the drill in the cluster (--grafana-access cluster-dns), or give --grafana-url-template / --grafana-pod-url"
		}
	}
	stsRef := fmt.Sprintf("%s %s/%s", t.KindName(), t.Namespace, t.Name())
	if t.Replicas() == 0 {
		r.Add(stsRef, "has 0 replicas: there is no running Grafana to compare the restore with", "scale it up, or drill it when it runs")
		return nil, r.Err()
	}

	if o.CreateScratchNamespace {
		if _, err := d.Clients.Kube.CoreV1().Namespaces().Get(ctx, scratch, metav1.GetOptions{}); err == nil {
			r.Add("namespace "+scratch, "already exists; with --create-scratch-namespace the drill creates its scratch namespace and deletes it with everything in it when done",
				"pass a --scratch-namespace that does not exist, or leave it out for a generated name; or drop --create-scratch-namespace to restore into a namespace prepared for drills")
		} else if !apierrors.IsNotFound(err) && !apierrors.IsForbidden(err) {
			return nil, fmt.Errorf("reading namespace %s: %w", scratch, err)
		}
	} else if err := d.checkScratchNamespace(ctx, o, t, scratch, runID, &r); err != nil {
		return nil, err
	}

	var latest []snapv1.VolumeSnapshot
	if o.UseLatestSnapshot {
		list, err := d.Clients.Snap.SnapshotV1().VolumeSnapshots(t.Namespace).List(ctx, metav1.ListOptions{})
		if err != nil && !apierrors.IsForbidden(err) {
			return nil, fmt.Errorf("listing VolumeSnapshots in %s: %w", t.Namespace, err)
		}
		if err == nil {
			latest = list.Items
		}
	}

	var plans []*ordinalPlan
	classes := map[string]bool{}
	for _, ord := range t.Ordinals {
		claimRef := fmt.Sprintf("claim %s/%s", t.Namespace, ord.Claim)
		switch {
		case ord.PVC == nil:
			r.Add(claimRef, fmt.Sprintf("does not exist, so ordinal %d has no data to drill", ord.Index), "check --claim-template")
			continue
		case ord.PVC.Status.Phase != corev1.ClaimBound || ord.PV == nil:
			r.Add(claimRef, fmt.Sprintf("is %s, not Bound to a PersistentVolume", ord.PVC.Status.Phase), "fix the claim (kubectl describe pvc) first")
			continue
		case !ord.CSI:
			r.Add("PersistentVolume "+ord.PV.Name, "is not a CSI volume: the snapshot controller cannot snapshot it, so no snapshot restore can be drilled", "drill volumes of a CSI driver with snapshot support")
			continue
		}
		p := &ordinalPlan{Index: ord.Index, Pod: ord.Pod, Claim: ord.Claim, PV: ord.PV, Driver: ord.Driver, SnapshotClass: ord.SnapshotClass}
		if o.UseLatestSnapshot {
			p.Latest = newestReady(latest, ord.Claim)
			if p.Latest == nil {
				r.Add(claimRef, "has no readyToUse VolumeSnapshot for --use-latest-snapshot", "drop --use-latest-snapshot to have the drill take one")
			} else if p.SnapshotClass == "" {
				p.SnapshotClass = ptr.Deref(p.Latest.Spec.VolumeSnapshotClassName, "")
			}
		} else if p.SnapshotClass == "" {
			what := "no VolumeSnapshotClass for driver " + ord.Driver
			if o.Target.SnapshotClass != "" {
				what = fmt.Sprintf("VolumeSnapshotClass %q does not exist or is not for driver %s", o.Target.SnapshotClass, ord.Driver)
			}
			r.Add("PersistentVolume "+ord.PV.Name, what, "create a VolumeSnapshotClass for "+ord.Driver+" (or mark one default) and pass --snapshot-class")
		}

		p.RestoreClass = o.RestoreStorageClass
		if p.RestoreClass == "" {
			p.RestoreClass = ord.StorageClass
		}
		if _, seen := classes[p.RestoreClass]; !seen {
			if err := d.checkRestoreClass(ctx, p.RestoreClass, ord.Driver, o.RestoreStorageClass != "", &r); err != nil {
				return nil, err
			}
			classes[p.RestoreClass] = true
		}

		p.Size = ord.PVC.Spec.Resources.Requests[corev1.ResourceStorage]
		if c, ok := ord.PV.Spec.Capacity[corev1.ResourceStorage]; ok && c.Cmp(p.Size) > 0 {
			p.Size = c
		}
		plans = append(plans, p)
	}

	if o.Offline {
		if d.DBReader == nil {
			r.Add("--offline", "no way to read the restored volumes from here", OfflineHelp)
		}
	} else {
		d.checkReferences(ctx, t, &r)
	}
	if d.Checker == nil {
		r.Add(stsRef, "no Grafana checker configured", "pass the Grafana flags")
	} else if len(r.Problems) == 0 {
		// Asked last: reaching Grafana is slow when it is down, and the
		// other problems are worth reporting without waiting for it.
		checker := d.Checker(t, t.Namespace)
		for _, p := range plans {
			cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			err := app.Preflight(cctx, checker, p.Pod)
			cancel()
			switch {
			case errors.Is(err, app.ErrIncomplete):
				r.Add(fmt.Sprintf("%s of pod %s/%s", checker.Kind(), t.Namespace, p.Pod), err.Error(), "as the message says; nothing was created")
			case err != nil:
				r.Add(fmt.Sprintf("%s of pod %s/%s", checker.Kind(), t.Namespace, p.Pod), fmt.Sprintf("not reachable or refused the credentials, so there is nothing to compare the restore with: %v", err),
					"fix --grafana-url-template / --grafana-pod-url or the credentials")
			}
		}
	}
	return plans, r.Err()
}

// scopeOf is what a drill of t touches, for its access review.
func scopeOf(o Options, t *discovery.Target, scratch string) Scope {
	s := Scope{Namespace: t.Namespace, StatefulSet: t.Name(), Scratch: scratch, CreateScratch: o.CreateScratchNamespace,
		PodProxy: o.PodProxy.forTarget(t, scratch), Deployment: t.IsDeployment()}
	if o.Offline {
		s.PodProxy.Scratch = false // no copy runs
	}
	if t.AdminSecret != "" {
		s.Secrets = append(s.Secrets, t.AdminSecret)
	}
	if !o.Offline {
		for _, ref := range referencedObjects(&t.PodTemplate().Spec) {
			if ref.Kind == "Secret" {
				s.Secrets = append(s.Secrets, ref.Name)
			}
		}
	}
	return s
}

// checkRestoreClass makes sure restored volumes land in a class of the
// snapshot's driver that deletes them with their claims: with Retain every
// drill would leave a Released PV behind.
func (d *Drill) checkRestoreClass(ctx context.Context, class, driver string, explicit bool, r *preflight.Report) error {
	ref := "StorageClass " + class
	if class == "" {
		r.Add("restore class", "the production volumes have no StorageClass", "pass --restore-storage-class with a class of driver "+driver+" and reclaimPolicy Delete")
		return nil
	}
	sc, err := d.Clients.Kube.StorageV1().StorageClasses().Get(ctx, class, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		r.Add(ref, "not found", "list the classes with `kubectl get storageclass` and pass one with --restore-storage-class")
		return nil
	case apierrors.IsForbidden(err):
		return nil // reported by the access review
	case err != nil:
		return fmt.Errorf("reading StorageClass %s: %w", class, err)
	}
	if sc.Provisioner != driver {
		r.Add(ref, fmt.Sprintf("is provisioned by %s, but the snapshots belong to driver %s: a snapshot can only be restored by its own driver", sc.Provisioner, driver), "pass --restore-storage-class with a class of driver "+driver)
	}
	if sc.ReclaimPolicy != nil && *sc.ReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
		fix := "pass --restore-storage-class with a class of driver " + driver + " and reclaimPolicy Delete (a copy of this class with Delete will do)"
		if explicit {
			fix = "choose a class of driver " + driver + " with reclaimPolicy Delete"
		}
		r.Add(ref, fmt.Sprintf("has reclaimPolicy %s: every drill would leave its restored volumes behind", *sc.ReclaimPolicy), fix)
	}
	return nil
}

// checkReferences finds the Secrets and ConfigMaps the copy would need but
// cannot have: a pod that never starts would look like a failed restore.
func (d *Drill) checkReferences(ctx context.Context, t *discovery.Target, r *preflight.Report) {
	for _, ref := range referencedObjects(&t.PodTemplate().Spec) {
		var err error
		switch ref.Kind {
		case "Secret":
			_, err = d.Clients.Kube.CoreV1().Secrets(t.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		case "ConfigMap":
			_, err = d.Clients.Kube.CoreV1().ConfigMaps(t.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		}
		if apierrors.IsNotFound(err) && !ref.Optional {
			r.Add(fmt.Sprintf("%s %s/%s", ref.Kind, t.Namespace, ref.Name), "is used by the pod template but does not exist, so the restored copy could not start", "create it, or check the release")
		}
	}
}

// newestReady picks the most recent readyToUse snapshot of a claim.
func newestReady(list []snapv1.VolumeSnapshot, claim string) *snapv1.VolumeSnapshot {
	var best *snapv1.VolumeSnapshot
	var bestAt time.Time
	for i := range list {
		vs := &list[i]
		if ptr.Deref(vs.Spec.Source.PersistentVolumeClaimName, "") != claim || vs.DeletionTimestamp != nil {
			continue
		}
		if vs.Status == nil || !ptr.Deref(vs.Status.ReadyToUse, false) || vs.Status.BoundVolumeSnapshotContentName == nil {
			continue
		}
		at := vs.CreationTimestamp.Time
		if vs.Status.CreationTime != nil {
			at = vs.Status.CreationTime.Time
		}
		if best == nil || at.After(bestAt) {
			best, bestAt = vs, at
		}
	}
	return best
}
