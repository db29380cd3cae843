package dr

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	"github.com/rebind-dev/rebind/pkg/app"
	"github.com/rebind-dev/rebind/pkg/discovery"
	"github.com/rebind-dev/rebind/pkg/kube"
	"github.com/rebind-dev/rebind/pkg/preflight"
	"github.com/rebind-dev/rebind/pkg/report"
	"github.com/rebind-dev/rebind/pkg/velero"
)

// DrillOptions configure a drill into a DR cluster.
type DrillOptions struct {
	Target          discovery.Options
	VeleroNamespace string // in both clusters
	// ScratchNamespace is created in the DR cluster by the restore and
	// deleted afterwards; it must not exist. Default
	// rebind-drill-dr-<workload>-<random>.
	ScratchNamespace string
	// ToClass is the class of the restored claims in the DR cluster
	// (default: the production class); its reclaim policy must be Delete,
	// so the restored volumes go with their claims.
	ToClass string
	// BackupTTL is how long Velero keeps the drill's Backup (default 72h).
	BackupTTL time.Duration
	// Bounds: Velero pickup, the Backup, its sync into the DR cluster,
	// the Restore, the workload Ready, each verification, the cleanup.
	Pickup, Backup, Sync, Restore, Wait, Verify, Cleanup time.Duration
	// CheckerFor reaches Grafana pods of namespace ns in the DR cluster.
	CheckerFor func(ns string) (app.Checker, error)
	// Grafana and TargetGrafana say how Grafana is reached in production
	// and in the DR cluster, for the rights preflight asks for.
	Grafana, TargetGrafana GrafanaAccess
}

// LeftoverError: the drill could not remove everything it restored in
// the DR cluster; each object is named in the report.
type LeftoverError struct{ Objects []string }

func (e *LeftoverError) Error() string {
	return fmt.Sprintf("the drill could not remove %d object(s) it restored in the DR cluster: %v", len(e.Objects), e.Objects)
}

// Drill backs the target up in production (prod) with its baseline,
// waits for the Backup in the DR cluster (to), restores it there into a
// scratch namespace, verifies every dashboard against the carried
// baseline and removes everything it restored in the DR cluster, also
// after a failure or an interrupt. Production keeps only the Backup.
func Drill(ctx context.Context, prod, to *Env, o DrillOptions) (*report.Report, error) {
	begin := time.Now()
	rep := &report.Report{Operation: "drill", Strategy: "velero-dr", StartedAt: begin, Outcome: report.Failed}
	finish := rep.End
	if o.CheckerFor == nil {
		return finish(errors.New("dr: no Grafana checker for the DR cluster"))
	}
	t, err := discovery.Discover(ctx, prod.Clients, o.Target)
	if err != nil {
		return finish(err)
	}
	rep.Target = t.Namespace + "/" + t.Name()
	scratch := o.ScratchNamespace
	if scratch == "" {
		scratch = trim63(fmt.Sprintf("rebind-drill-dr-%s-%s", t.Name(), randomSuffix()))
	}

	// The DR cluster first: nothing is backed up for a drill that could
	// not restore, or not remove what it restored.
	vto := velero.New(to.Clients, o.VeleroNamespace, to.log())
	meta := MetaOf(t, begin)
	class := o.ToClass
	if class == "" {
		class = meta.SourceClass()
	}
	var pf preflight.Report
	scope := DrillTargetScope{VeleroNamespace: vto.Namespace, Scratch: scratch, Workload: t.Name(), Deployment: t.IsDeployment(),
		MapClass: needsClassMapping(meta.SourceClass(), class), Grafana: o.TargetGrafana}
	if err := checkAccess(ctx, to.Clients.Kube, DrillTargetPermissions(scope), drillTargetGrants, &pf); err != nil {
		return finish(err)
	}
	if err := pf.Err(); err != nil {
		return finish(err)
	}
	if _, err := vto.Detect(ctx); err != nil {
		var nr *velero.NotReadyError
		if !errors.As(err, &nr) {
			return finish(err)
		}
		pf.Add("Velero of the DR cluster", nr.What, nr.Hint)
	}
	if _, err := to.Clients.Kube.CoreV1().Namespaces().Get(ctx, scratch, metav1.GetOptions{}); err == nil {
		pf.Add("namespace "+scratch+" of the DR cluster", "exists: the drill restores into a namespace of its own and deletes it afterwards", "pass a --scratch-namespace that does not exist (or none: a new name is made)")
	} else if !apierrors.IsNotFound(err) {
		return finish(err)
	}
	if sc, err := to.Clients.Kube.StorageV1().StorageClasses().Get(ctx, class, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		pf.Add("StorageClass "+class+" of the DR cluster", "not found", "pass --restore-storage-class with a class of the DR cluster")
	} else if err != nil {
		return finish(err)
	} else if d := meta.Driver(); d != "" && sc.Provisioner != d {
		pf.Add("StorageClass "+class+" of the DR cluster", fmt.Sprintf("is provisioned by %s, but the backup will hold CSI snapshots of driver %s, which only that driver can restore", sc.Provisioner, d),
			"pass --restore-storage-class with a class of driver "+d)
	} else if sc.ReclaimPolicy != nil && *sc.ReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
		pf.Add("StorageClass "+class+" of the DR cluster", "has reclaim policy "+string(*sc.ReclaimPolicy)+": the drill's restored volumes would stay after it", "pass --restore-storage-class with a class whose reclaimPolicy is Delete")
	}
	if err := pf.Err(); err != nil {
		return finish(err)
	}

	name := trim63(fmt.Sprintf("rebind-drill-%s-%s", t.Name(), begin.UTC().Format("20060102-150405")))
	ttl := o.BackupTTL
	if ttl == 0 {
		ttl = 72 * time.Hour
	}
	brep, err := prod.Backup(ctx, BackupOptions{Target: o.Target, VeleroNamespace: o.VeleroNamespace, Name: name, TTL: ttl, Pickup: o.Pickup, Timeout: o.Backup,
		Grafana: o.Grafana})
	if err != nil {
		return finish(fmt.Errorf("backup in production: %w", err))
	}
	rep.VeleroBackup = brep.VeleroBackup
	rep.Notes = append(rep.Notes, fmt.Sprintf("Velero Backup %s taken in production (kept for %s, Velero removes it then)", name, ttl))

	to.progress("drill: waiting for Backup %s to reach the DR cluster's Velero (backup sync)", name)
	if err := waitSynced(ctx, vto, name, o.Sync); err != nil {
		return finish(err)
	}

	// The scratch namespace is the drill's own, made before the Restore:
	// Velero restores into an existing namespace and, creating one itself,
	// would not label it, so nothing would prove it is the drill's.
	created, err := to.Clients.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: scratch,
		Labels: map[string]string{LabelDrill: name}}}, metav1.CreateOptions{})
	if err != nil {
		return finish(fmt.Errorf("creating scratch namespace %s in the DR cluster: %w", scratch, err))
	}
	restoreEnv := *to
	rrep, rerr := restoreEnv.Restore(ctx, RestoreOptions{FromBackup: name, VeleroNamespace: o.VeleroNamespace, IntoNamespace: scratch, ToClass: class,
		Pickup: o.Pickup, Restore: o.Restore, Wait: o.Wait, Verify: o.Verify, CheckerFor: o.CheckerFor, Grafana: o.TargetGrafana})
	if rrep != nil {
		rep.Verification, rep.VolumesAfter = rrep.Verification, rrep.VolumesAfter
		rep.Notes = append(rep.Notes, rrep.Notes...)
		rep.Warnings = append(rep.Warnings, rrep.Warnings...)
	}

	// Always, with a budget of its own: an interrupted drill cleans up too.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.Cleanup)
	defer cancel()
	left := cleanupScratch(cctx, to, vto, created, RestoreName(name, scratch))
	rep.Leftovers = left
	if rerr != nil {
		var unverified *UnverifiedError
		if errors.As(rerr, &unverified) {
			rep.Outcome = Unverified
		}
		return finish(rerr)
	}
	if len(left) > 0 {
		return finish(&LeftoverError{Objects: left})
	}
	rep.Outcome = report.Succeeded
	rep.Notes = append(rep.Notes, fmt.Sprintf("scratch namespace %s of the DR cluster removed with everything restored there", scratch))
	return finish(nil)
}

func randomSuffix() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// waitSynced waits until the DR cluster's Velero lists the Backup as
// Completed (its backup sync brings it from the shared location).
func waitSynced(ctx context.Context, v *velero.Client, name string, timeout time.Duration) error {
	_, err := kube.Until(ctx, timeout, fmt.Sprintf("Velero Backup %s/%s to be synced into the DR cluster", v.Namespace, name),
		kube.NamedLW(v.Dyn.Resource(velero.BackupsGVR).Namespace(v.Namespace), name),
		func(u *unstructured.Unstructured, exists bool) (bool, error) {
			if !exists {
				return false, nil
			}
			phase, _, _ := unstructured.NestedString(u.Object, "status", "phase")
			return phase == string(velerov1.BackupPhaseCompleted), nil
		}, func(u *unstructured.Unstructured) string {
			if u == nil {
				return "not there yet: is the DR cluster's BackupStorageLocation the same bucket and prefix?"
			}
			phase, _, _ := unstructured.NestedString(u.Object, "status", "phase")
			return "phase " + phase
		})
	return err
}

// cleanupScratch removes what the drill's Restore made in the DR cluster:
// the scratch namespace (only when that Restore created it), the restored
// volumes (their class deletes them with their claims; waited for), the
// VolumeSnapshotContents Velero restored for it (Retain, so deleting them
// never touches the snapshot data, which belongs to the Backup), and the
// Restore itself. What could not be removed is returned, named.
func cleanupScratch(ctx context.Context, e *Env, v *velero.Client, created *corev1.Namespace, restoreName string) []string {
	var left []string
	k := e.Clients.Kube
	ns := created.Name
	nsObj, err := k.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		nsObj = nil
	case err != nil:
		return []string{fmt.Sprintf("namespace %s: %v", ns, err)}
	}
	var pvs []string
	var contents []snapv1.VolumeSnapshotContent
	if nsObj != nil {
		if nsObj.UID != created.UID {
			// Not the one the drill created: never deleted, only reported.
			return []string{fmt.Sprintf("namespace %s is not the one the drill created (uid %s, not %s): left as it is", ns, nsObj.UID, created.UID)}
		}
		claims, err := k.CoreV1().PersistentVolumeClaims(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return []string{fmt.Sprintf("claims of namespace %s: %v", ns, err)}
		}
		for _, c := range claims.Items {
			if c.Spec.VolumeName != "" {
				pvs = append(pvs, c.Spec.VolumeName)
			}
		}
		list, err := e.Clients.Snap.SnapshotV1().VolumeSnapshotContents().List(ctx, metav1.ListOptions{})
		if err != nil {
			return []string{fmt.Sprintf("VolumeSnapshotContents: %v", err)}
		}
		for _, c := range list.Items {
			if c.Spec.VolumeSnapshotRef.Namespace == ns {
				contents = append(contents, c)
			}
		}
		e.progress("drill: deleting scratch namespace %s of the DR cluster", ns)
		uid := nsObj.UID
		if err := k.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}}); err != nil && !apierrors.IsNotFound(err) {
			left = append(left, fmt.Sprintf("namespace %s: %v", ns, err))
		}
		if _, err := kube.Until(ctx, remaining(ctx), "scratch namespace "+ns+" to be gone", kube.NamedLW(k.CoreV1().Namespaces(), ns),
			func(_ *corev1.Namespace, exists bool) (bool, error) { return !exists, nil },
			func(n *corev1.Namespace) string {
				if n == nil {
					return "gone"
				}
				return string(n.Status.Phase)
			}); err != nil {
			left = append(left, fmt.Sprintf("namespace %s: %v", ns, err))
		}
	}
	for _, pv := range pvs {
		if _, err := kube.Until(ctx, remaining(ctx), "restored PersistentVolume "+pv+" to be deleted with its claim", kube.PVLW(k, pv),
			func(_ *corev1.PersistentVolume, exists bool) (bool, error) { return !exists, nil },
			func(p *corev1.PersistentVolume) string {
				if p == nil {
					return "gone"
				}
				return string(p.Status.Phase) + ", reclaim " + string(p.Spec.PersistentVolumeReclaimPolicy)
			}); err != nil {
			left = append(left, fmt.Sprintf("PersistentVolume %s: %v", pv, err))
		}
	}
	for _, c := range contents {
		if c.Spec.DeletionPolicy != snapv1.VolumeSnapshotContentRetain {
			// Deleting it would delete the snapshot on the storage, which
			// is the Backup's data: left, named.
			left = append(left, fmt.Sprintf("VolumeSnapshotContent %s (deletionPolicy %s: deleting it would delete the backup's snapshot)", c.Name, c.Spec.DeletionPolicy))
			continue
		}
		uid := c.UID
		if err := e.Clients.Snap.SnapshotV1().VolumeSnapshotContents().Delete(ctx, c.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}}); err != nil && !apierrors.IsNotFound(err) {
			left = append(left, fmt.Sprintf("VolumeSnapshotContent %s: %v", c.Name, err))
		}
	}
	// The Restore last: Velero's finalizer removes its logs and results
	// from the backup location, then the object goes.
	if r, err := v.GetRestore(ctx, restoreName); err == nil {
		res := v.Dyn.Resource(velero.RestoresGVR).Namespace(v.Namespace)
		if err := res.Delete(ctx, restoreName, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: ptrUID(r.UID)}}); err != nil && !apierrors.IsNotFound(err) {
			left = append(left, fmt.Sprintf("Velero Restore %s/%s: %v", v.Namespace, restoreName, err))
		} else if _, err := kube.Until(ctx, remaining(ctx), "Velero Restore "+v.Namespace+"/"+restoreName+" to be gone", kube.NamedLW(res, restoreName),
			func(_ *unstructured.Unstructured, exists bool) (bool, error) { return !exists, nil }, nil); err != nil {
			left = append(left, fmt.Sprintf("Velero Restore %s/%s: %v", v.Namespace, restoreName, err))
		}
	} else if !apierrors.IsNotFound(errors.Unwrap(err)) {
		left = append(left, fmt.Sprintf("Velero Restore %s/%s: %v", v.Namespace, restoreName, err))
	}
	return left
}

func ptrUID(u types.UID) *types.UID { return &u }

// remaining is what is left of ctx's budget (the cleanup's own timeout).
func remaining(ctx context.Context) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		return max(time.Until(d), time.Millisecond)
	}
	return 10 * time.Minute
}
