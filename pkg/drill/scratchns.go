package drill

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"

	"github.com/rebind-dev/rebind/pkg/discovery"
	"github.com/rebind-dev/rebind/pkg/journal"
	"github.com/rebind-dev/rebind/pkg/kube"
	"github.com/rebind-dev/rebind/pkg/preflight"
	"github.com/rebind-dev/rebind/pkg/volume"
)

// The fixed scratch namespace (the default mode): prepared by the install
// manifest, shared by the drills of every target, never created or deleted
// by a drill. Each drill takes a Lease named after its StatefulSet there,
// makes its objects with its run label, and deletes exactly the objects
// carrying that label.

// scratchLeaseDuration bounds how long a killed drill's Lease blocks the
// next drill of the same StatefulSet name (the nightly one is a day away).
const scratchLeaseDuration = time.Minute

// scratchKind is one kind of object a drill makes, or that its copy makes,
// in the scratch namespace.
type scratchKind struct {
	kind string
	list func(ctx context.Context, opts metav1.ListOptions) ([]metav1.Object, error)
	// del is nil for pods, which their StatefulSet's deletion removes.
	del func(ctx context.Context, name string, opts metav1.DeleteOptions) error
	lw  func(selector string) cache.ListerWatcher
}

type typedClient[L runtime.Object] interface {
	kube.Lister[L]
	Delete(ctx context.Context, name string, opts metav1.DeleteOptions) error
}

func kindOf[L runtime.Object](kind string, c typedClient[L], items func(L) []metav1.Object, deletable bool) scratchKind {
	sk := scratchKind{
		kind: kind,
		list: func(ctx context.Context, opts metav1.ListOptions) ([]metav1.Object, error) {
			l, err := c.List(ctx, opts)
			if err != nil {
				return nil, err
			}
			return items(l), nil
		},
		lw: func(sel string) cache.ListerWatcher {
			return &cache.ListWatch{
				ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
					o.LabelSelector = sel
					return c.List(ctx, o)
				},
				WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
					o.LabelSelector = sel
					return c.Watch(ctx, o)
				},
			}
		},
	}
	if deletable {
		sk.del = c.Delete
	}
	return sk
}

func objs[T any, P interface {
	*T
	metav1.Object
}](items []T) []metav1.Object {
	out := make([]metav1.Object, len(items))
	for i := range items {
		out[i] = P(&items[i])
	}
	return out
}

// scratchKinds lists, in deletion order, the kinds a drill leaves in the
// scratch namespace: the copy first (its pods release the claims), the
// claims before the snapshots they were restored from.
func (d *Drill) scratchKinds(ns string) []scratchKind {
	k, s := d.Clients.Kube, d.Clients.Snap
	return []scratchKind{
		kindOf("StatefulSet", k.AppsV1().StatefulSets(ns), func(l *appsv1.StatefulSetList) []metav1.Object { return objs(l.Items) }, true),
		kindOf("Pod", k.CoreV1().Pods(ns), func(l *corev1.PodList) []metav1.Object { return objs(l.Items) }, false),
		kindOf("Service", k.CoreV1().Services(ns), func(l *corev1.ServiceList) []metav1.Object { return objs(l.Items) }, true),
		kindOf("Secret", k.CoreV1().Secrets(ns), func(l *corev1.SecretList) []metav1.Object { return objs(l.Items) }, true),
		kindOf("ConfigMap", k.CoreV1().ConfigMaps(ns), func(l *corev1.ConfigMapList) []metav1.Object { return objs(l.Items) }, true),
		kindOf("PersistentVolumeClaim", k.CoreV1().PersistentVolumeClaims(ns), func(l *corev1.PersistentVolumeClaimList) []metav1.Object { return objs(l.Items) }, true),
		kindOf("VolumeSnapshot", s.SnapshotV1().VolumeSnapshots(ns), func(l *snapv1.VolumeSnapshotList) []metav1.Object { return objs(l.Items) }, true),
	}
}

// rootCAConfigMap is published into every namespace by the controller
// manager; it is the namespace's, not a stranger.
const rootCAConfigMap = "kube-root-ca.crt"

// checkScratchNamespace makes sure the fixed scratch namespace exists, is
// prepared for drills and holds nothing in this drill's way.
func (d *Drill) checkScratchNamespace(ctx context.Context, o Options, t *discovery.Target, scratch, runID string, r *preflight.Report) error {
	ref := "namespace " + scratch
	ns, err := d.Clients.Kube.CoreV1().Namespaces().Get(ctx, scratch, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		r.Add(ref, "does not exist: the drill restores into a namespace prepared for it and never creates one",
			"apply manifests/rbac-drill.yaml (it creates "+DefaultScratchNamespace+" and the drill's Role there), or pass --create-scratch-namespace for a throwaway namespace")
		return nil
	case apierrors.IsForbidden(err):
		return nil // reported by the access review
	case err != nil:
		return fmt.Errorf("reading namespace %s: %w", scratch, err)
	}
	if ns.Labels[LabelScratch] != "true" {
		r.Add(ref, fmt.Sprintf("is not prepared for drills (no label %s=true): the drill restores only into a namespace of its own, never next to other workloads", LabelScratch),
			fmt.Sprintf("use the namespace manifests/rbac-drill.yaml creates (%s), or label a namespace that holds nothing else: kubectl label namespace %s %s=true", DefaultScratchNamespace, scratch, LabelScratch))
		return nil
	}
	if ns.DeletionTimestamp != nil {
		r.Add(ref, "is being deleted", "wait, and apply manifests/rbac-drill.yaml again")
		return nil
	}
	_, err = d.checkScratchContents(ctx, o, t, scratch, runID, r)
	return err
}

// checkScratchContents refuses objects that no drill created (a workload
// next to the restored copy could mount its claims and Secrets) and
// objects of other drills that carry the names this drill's copy needs
// (same StatefulSet name: a drill running elsewhere, or a killed drill's
// leftovers). It returns notes on other drills' objects that are not in
// the way.
func (d *Drill) checkScratchContents(ctx context.Context, o Options, t *discovery.Target, scratch, runID string, r *preflight.Report) ([]string, error) {
	want := map[string]map[string]bool{}
	add := func(kind, name string) {
		if name == "" {
			return
		}
		if want[kind] == nil {
			want[kind] = map[string]bool{}
		}
		want[kind][name] = true
	}
	for _, ord := range t.Ordinals {
		add("PersistentVolumeClaim", ord.Claim)
		add("VolumeSnapshot", ord.Claim)
		if !o.Offline {
			add("Pod", scratchPod(t, ord.Index, ord.Pod))
		}
	}
	if !o.Offline {
		add("StatefulSet", t.Name())
		if !t.IsDeployment() {
			add("Service", t.StatefulSet.Spec.ServiceName)
		}
		for _, ref := range referencedObjects(&t.PodTemplate().Spec) {
			add(ref.Kind, ref.Name)
		}
	}

	var strangers []string
	inWay := map[string][]string{} // run -> objects
	drillOf := map[string]string{} // run -> ns/sts
	others := map[string]bool{}
	for _, sk := range d.scratchKinds(scratch) {
		items, err := sk.list(ctx, metav1.ListOptions{})
		if apierrors.IsForbidden(err) {
			continue // reported by the access review
		}
		if err != nil {
			return nil, fmt.Errorf("listing %ss in scratch namespace %s: %w", sk.kind, scratch, err)
		}
		for _, it := range items {
			if sk.kind == "ConfigMap" && it.GetName() == rootCAConfigMap {
				continue
			}
			what := fmt.Sprintf("%s %s/%s", sk.kind, scratch, it.GetName())
			run := it.GetLabels()[LabelRun]
			switch {
			case run == "":
				strangers = append(strangers, what)
			case run == runID:
			case want[sk.kind][it.GetName()]:
				inWay[run] = append(inWay[run], what)
				if of := it.GetAnnotations()[AnnDrillOf]; of != "" {
					drillOf[run] = of
				}
			default:
				others[run] = true
			}
		}
	}
	for _, s := range strangers {
		r.Add(s, fmt.Sprintf("was not created by a drill (no %s label): scratch namespace %s must hold only what drills create, so the drill refuses to restore next to it", LabelRun, scratch),
			fmt.Sprintf("move it out of %s (a drill never uses or deletes objects it did not create), or pass another --scratch-namespace", scratch))
	}
	for _, run := range slices.Sorted(maps.Keys(inWay)) {
		of := drillOf[run]
		if of == "" {
			of = "another target"
		}
		r.Add(fmt.Sprintf("drill run %s (of %s)", run, of),
			fmt.Sprintf("left objects with the names this drill's copy needs in %s: %s", scratch, strings.Join(inWay[run], ", ")),
			fmt.Sprintf("if no drill of %s is running (its Lease is free), delete that run's leftovers: kubectl -n %s delete statefulset,service,secret,configmap,persistentvolumeclaim,volumesnapshot -l %s=%s (its restored volumes go with their claims), then kubectl delete volumesnapshotcontent -l %s=%s",
				of, scratch, LabelRun, run, LabelRun, run))
	}
	var notes []string
	for _, run := range slices.Sorted(maps.Keys(others)) {
		notes = append(notes, fmt.Sprintf("scratch namespace %s also holds objects of drill run %s (another target's drill, or leftovers): not in this drill's way", scratch, run))
	}
	return notes, nil
}

// scratchLease is the drill's hold on its StatefulSet name in the fixed
// scratch namespace.
type scratchLease struct {
	*journal.Lease
	namespace, name string
}

// lockScratch takes the Lease of the target's StatefulSet name in the
// scratch namespace, then checks the namespace again under it. A Lease
// held by another drill refuses the drill: the copy keeps the production
// names, so two drills of one StatefulSet name cannot share the namespace.
func (d *Drill) lockScratch(ctx context.Context, o Options, t *discovery.Target, scratch string, res *Result) (*scratchLease, error) {
	name := ScratchLeaseName(t.Name())
	holder := fmt.Sprintf("drill of %s/%s, run %s", t.Namespace, t.Name(), res.RunID)
	l, err := journal.AcquireLease(ctx, d.Clients.Kube, scratch, "drill-"+t.Name(), holder, scratchLeaseDuration)
	var locked *journal.LockedError
	if errors.As(err, &locked) {
		return nil, &preflight.Error{Problems: []preflight.Problem{{
			Object: fmt.Sprintf("Lease %s/%s", scratch, name),
			Message: fmt.Sprintf("%s. The drill's copy keeps the production names (StatefulSet %s, its pods, claims and Secrets), so two drills of a StatefulSet named %s cannot share scratch namespace %s at once",
				locked.Error(), t.Name(), t.Name(), scratch),
			Fix: "nothing was created; run the drills one after the other (one CronJob, or --selector, which serializes them), or give one of them another --scratch-namespace; drills of StatefulSets with other names may share the namespace",
		}}}
	}
	if err != nil {
		return nil, fmt.Errorf("taking Lease %s/%s: %w", scratch, name, err)
	}
	sl := &scratchLease{Lease: l, namespace: scratch, name: name}
	if l.TookOverFrom != "" {
		res.Notes = append(res.Notes, "took over Lease "+scratch+"/"+name+" from "+l.TookOverFrom)
	}
	var r preflight.Report
	notes, err := d.checkScratchContents(ctx, o, t, scratch, res.RunID, &r)
	if err == nil {
		err = r.Err()
	}
	if err != nil {
		d.unlockScratch(ctx, sl, res, d.log())
		return nil, err
	}
	res.Notes = append(res.Notes, notes...)
	return sl, nil
}

// unlockScratch releases the Lease and deletes it unless another drill
// took it meanwhile, so that the scratch namespace is left as found.
func (d *Drill) unlockScratch(parent context.Context, l *scratchLease, res *Result, log *zap.Logger) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), 15*time.Second)
	defer cancel()
	what := fmt.Sprintf("Lease %s/%s", l.namespace, l.name)
	note := func(err error) {
		res.Notes = append(res.Notes, fmt.Sprintf("%s not removed (it expires %s after its last renewal): %v", what, scratchLeaseDuration, err))
		log.Warn("scratch lease not removed", zap.String("lease", what), zap.Error(err))
	}
	if err := l.Release(ctx); err != nil {
		note(err)
		return
	}
	leases := d.Clients.Kube.CoordinationV1().Leases(l.namespace)
	cur, err := leases.Get(ctx, l.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return
	}
	if err != nil {
		note(err)
		return
	}
	if ptr.Deref(cur.Spec.HolderIdentity, "") != "" {
		return // another drill holds it now
	}
	rv := cur.ResourceVersion
	err = leases.Delete(ctx, l.name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &rv}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		note(err)
	}
}

// cleanupScratchObjects deletes, in the fixed scratch namespace, exactly
// the objects carrying this run's label (with their uid as precondition)
// and waits until they, the copy's pods and the restored volumes are gone.
// A claim bound to a volume the drill did not restore is kept unless that
// volume could be given reclaim policy Retain: deleting the claim would
// delete the volume. Objects of other drills or of no drill are never
// touched. It says whether the restored copy is gone.
func (d *Drill) cleanupScratchObjects(ctx context.Context, o Options, cl *created, res *Result, left func(string, error), log *zap.Logger) bool {
	start := time.Now()
	ns, sel := cl.namespace, LabelRun+"="+cl.runID
	ours := map[string]bool{}
	for _, n := range cl.pvs {
		ours[n] = true
	}
	restored := map[string]bool{}
	clean := true
	var deleted []string
	kept := map[string]map[string]bool{} // kind -> names not deleted (reported), not waited for
	keep := func(kind, name string) {
		if kept[kind] == nil {
			kept[kind] = map[string]bool{}
		}
		kept[kind][name] = true
		clean = false
	}
	kinds := d.scratchKinds(ns)
	for _, sk := range kinds {
		if sk.del == nil {
			continue
		}
		items, err := sk.list(ctx, metav1.ListOptions{LabelSelector: sel})
		if err != nil {
			left(fmt.Sprintf("%ss of drill run %s in %s", sk.kind, cl.runID, ns), err)
			clean = false
			continue
		}
		for _, it := range items {
			what := fmt.Sprintf("%s %s/%s", sk.kind, ns, it.GetName())
			if c, ok := it.(*corev1.PersistentVolumeClaim); ok && !d.releaseClaim(ctx, c, ours, restored, left) {
				keep(sk.kind, it.GetName())
				continue
			}
			uid := it.GetUID()
			err := sk.del(ctx, it.GetName(), metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid},
				PropagationPolicy: ptr.To(metav1.DeletePropagationBackground)})
			if err != nil && !apierrors.IsNotFound(err) {
				left(what, err)
				keep(sk.kind, it.GetName())
				continue
			}
			deleted = append(deleted, what)
		}
	}
	for _, sk := range kinds {
		what := fmt.Sprintf("%ss of drill run %s in %s", sk.kind, cl.runID, ns)
		_, err := kube.UntilSet(ctx, o.Timeouts.Cleanup, what+" to be deleted", sk.lw(sel),
			func(set map[string]runtime.Object) (bool, error) {
				for name := range set {
					if !kept[sk.kind][name] {
						return false, nil
					}
				}
				return true, nil
			},
			func(set map[string]runtime.Object) string {
				names := slices.Sorted(maps.Keys(set))
				return "still there: " + strings.Join(names, ", ")
			})
		if err != nil {
			left(what, err)
			clean = false
		}
	}
	sort.Strings(deleted)
	res.Cleaned = append(res.Cleaned, deleted...)
	if clean {
		log.Info("scratch objects deleted", zap.String("namespace", ns), zap.Int("objects", len(deleted)), zap.Duration("after", time.Since(start)))
	}
	// Restored volumes bound to a deleted claim are being deleted by the
	// PV controller (the class's Delete policy); wait, so that "nothing
	// left behind" holds when the drill returns.
	for _, n := range cl.pvs {
		restored[n] = true
	}
	d.waitVolumesGone(ctx, o, restored, res, left)
	return clean
}

// releaseClaim decides whether one of this run's claims may be deleted: yes
// when it is unbound or bound to a volume restored for it (recorded in
// restored, to be waited for); for a volume the drill did not restore,
// only once that volume has reclaim policy Retain.
func (d *Drill) releaseClaim(ctx context.Context, c *corev1.PersistentVolumeClaim, ours, restored map[string]bool, left func(string, error)) bool {
	name := c.Spec.VolumeName
	if name == "" {
		return true
	}
	pv, err := d.Clients.Kube.CoreV1().PersistentVolumes().Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return true
	case err != nil:
		left(fmt.Sprintf("PersistentVolumeClaim %s/%s", c.Namespace, c.Name), fmt.Errorf("kept: reading its volume %s: %w", name, err))
		return false
	case pv.Spec.ClaimRef == nil || pv.Spec.ClaimRef.UID != c.UID:
		return true // not bound to this claim: deleting the claim leaves it alone
	case ours[name] || volume.ProvisionedFor(pv, c, nil):
		restored[name] = true
		return true
	}
	return d.holdStranger(ctx, pv, c.Namespace, left)
}
