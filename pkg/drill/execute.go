package drill

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	"go.uber.org/zap"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/rebind-dev/rebind/pkg/app"
	"github.com/rebind-dev/rebind/pkg/discovery"
	"github.com/rebind-dev/rebind/pkg/inventory"
	"github.com/rebind-dev/rebind/pkg/snapshot"
	"github.com/rebind-dev/rebind/pkg/verify"
	"github.com/rebind-dev/rebind/pkg/workload"
)

// created names everything the drill made, recorded BEFORE each create
// call: a create whose answer is lost to an interrupt may still have
// happened, and cleanup deletes by name, ignoring what is not there. In
// the scratch namespace everything carries the run's label, and cleanup
// deletes what carries it.
type created struct {
	namespace string // the scratch namespace
	runID     string
	// createNamespace is the opt-in mode; namespaceCreated says the drill
	// (may have) created the namespace, so deleting it is its to do.
	createNamespace, namespaceCreated bool
	contents                          []string
	prodSnapshots                     []string // in the production namespace
	prodNamespace                     string
	pvs                               []string
}

// sourceSnapshot is a ready production snapshot and the data behind it.
type sourceSnapshot struct {
	vs     *snapv1.VolumeSnapshot
	driver string
	handle string
	size   resource.Quantity
}

func (d *Drill) execute(ctx context.Context, o Options, t *discovery.Target, scratch string, plans []*ordinalPlan, cl *created, res *Result, log *zap.Logger) error {
	prodChecker := d.Checker(t, t.Namespace)

	// Production's inventory is taken right before the snapshots, so the
	// restore is compared with what Grafana served when its data was cut; a
	// dashboard edited in between shows as changed (run drills when quiet).
	captures := make([][]byte, len(plans))
	for i, p := range plans {
		c, err := prodChecker.Capture(ctx, p.Pod)
		if err != nil {
			return fmt.Errorf("production inventory of pod %s: %w", p.Pod, err)
		}
		captures[i] = c
	}
	d.step(res, "production inventory taken from %d pod(s)", len(plans))

	sources, err := d.snapshots(ctx, o, t, plans, cl, res)
	if err != nil {
		return err
	}

	restored, err := d.restore(ctx, o, t, scratch, plans, sources, cl, res)
	if err != nil {
		return err
	}
	if d.AfterRestore != nil {
		if err := d.AfterRestore(ctx, *restored); err != nil {
			return fmt.Errorf("after restore: %w", err)
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	if o.Offline {
		return d.verifyOffline(ctx, plans, restored, captures, res)
	}
	return d.verifyOnline(ctx, o, t, scratch, plans, restored, captures, res, log)
}

// snapshots takes (or, with --use-latest-snapshot, picks) one ready
// snapshot per ordinal. All are requested before any is awaited, so the
// ordinals are cut as close together as the driver allows.
func (d *Drill) snapshots(ctx context.Context, o Options, t *discovery.Target, plans []*ordinalPlan, cl *created, res *Result) ([]sourceSnapshot, error) {
	names := make([]string, len(plans))
	for i, p := range plans {
		if p.Latest != nil {
			names[i] = p.Latest.Name
			continue
		}
		names[i] = snapshotName(t.Name(), p.Index, res.RunID)
		cl.prodNamespace = t.Namespace
		cl.prodSnapshots = append(cl.prodSnapshots, names[i])
		labels := runLabels(res.RunID)
		labels[discovery.LabelInstance] = t.Release
		if _, err := snapshot.Create(ctx, d.Clients.Snap, t.Namespace, names[i], p.Claim, p.SnapshotClass, labels); err != nil {
			return nil, err
		}
	}
	out := make([]sourceSnapshot, len(plans))
	for i, p := range plans {
		start := time.Now()
		vs, err := snapshot.WaitReady(ctx, d.Clients.Snap, t.Namespace, names[i], o.Timeouts.Snapshot)
		if err != nil {
			return nil, err
		}
		contentName := ptr.Deref(vs.Status.BoundVolumeSnapshotContentName, "")
		content, err := d.Clients.Snap.SnapshotV1().VolumeSnapshotContents().Get(ctx, contentName, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("reading VolumeSnapshotContent %s of snapshot %s/%s: %w", contentName, t.Namespace, vs.Name, err)
		}
		if content.Status == nil || content.Status.SnapshotHandle == nil {
			return nil, fmt.Errorf("VolumeSnapshotContent %s has no snapshotHandle", contentName)
		}
		s := sourceSnapshot{vs: vs, driver: content.Spec.Driver, handle: *content.Status.SnapshotHandle, size: snapshot.RestoreSize(vs)}
		out[i] = s
		use := SnapshotUse{Ordinal: p.Index, Claim: p.Claim, Snapshot: vs.Name, Content: contentName, Taken: p.Latest == nil}
		if vs.Status.CreationTime != nil {
			at := vs.Status.CreationTime.Time
			use.CreatedAt = &at
		}
		if !s.size.IsZero() {
			use.RestoreSize = s.size.String()
		}
		res.Snapshots = append(res.Snapshots, use)
		if p.Latest != nil {
			age := time.Since(vs.CreationTimestamp.Time).Round(time.Second)
			if use.CreatedAt != nil {
				age = time.Since(*use.CreatedAt).Round(time.Second)
			}
			res.Notes = append(res.Notes, fmt.Sprintf("ordinal %d restored from existing snapshot %s, %s old: dashboards saved since then count as lost", p.Index, vs.Name, age))
			d.step(res, "using snapshot %s of %s (%s old)", vs.Name, p.Claim, age)
		} else {
			d.step(res, "snapshot %s of %s ready in %s", vs.Name, p.Claim, time.Since(start).Round(100*time.Millisecond))
		}
	}
	return out, nil
}

// restore makes each production snapshot visible in the scratch namespace
// (a VolumeSnapshot is namespaced; its data is not) and restores it into a
// claim named the way the StatefulSet controller will look for it.
func (d *Drill) restore(ctx context.Context, o Options, t *discovery.Target, scratch string, plans []*ordinalPlan, sources []sourceSnapshot, cl *created, res *Result) (*Restored, error) {
	if cl.createNamespace {
		labels := runLabels(res.RunID)
		labels[LabelScratch] = "true"
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: scratch, Labels: labels,
			Annotations: map[string]string{AnnDrillOf: t.Namespace + "/" + t.Name()}}}
		cl.namespaceCreated = true
		if _, err := d.Clients.Kube.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			if apierrors.IsAlreadyExists(err) {
				// Someone else's namespace: never delete it.
				cl.namespaceCreated = false
			}
			return nil, fmt.Errorf("creating scratch namespace %s: %w", scratch, err)
		}
		d.step(res, "scratch namespace %s created", scratch)
	}

	template := t.Template()
	for i, p := range plans {
		src := sources[i]
		name := contentName(t.Name(), res.RunID, p.Index)
		cl.contents = append(cl.contents, name)
		content := preProvisionedContent(name, scratch, p.Claim, src.driver, src.handle, p.SnapshotClass, res.RunID, t.Namespace+"/"+src.vs.Name)
		if _, err := d.Clients.Snap.SnapshotV1().VolumeSnapshotContents().Create(ctx, content, metav1.CreateOptions{}); err != nil {
			return nil, fmt.Errorf("creating VolumeSnapshotContent %s for snapshot handle %s: %w", name, src.handle, err)
		}
		if _, err := d.Clients.Snap.SnapshotV1().VolumeSnapshots(scratch).Create(ctx, boundSnapshot(scratch, p.Claim, name, p.SnapshotClass, res.RunID), metav1.CreateOptions{}); err != nil {
			return nil, fmt.Errorf("creating VolumeSnapshot %s/%s: %w", scratch, p.Claim, err)
		}
	}
	r := &Restored{Namespace: scratch, Claims: make([]string, len(plans)), Volumes: make([]*corev1.PersistentVolume, len(plans))}
	start := time.Now()
	for _, p := range plans {
		if _, err := snapshot.WaitReady(ctx, d.Clients.Snap, scratch, p.Claim, o.Timeouts.Snapshot); err != nil {
			return nil, err
		}
	}
	// The ordinals restore in parallel; each makes sure its claim gets a
	// volume provisioned from the snapshot, not someone else's Available PV.
	errs := make([]error, len(plans))
	claims := make([]*corev1.PersistentVolumeClaim, len(plans))
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i, p := range plans {
		size := p.Size
		if s := sources[i].size; s.Cmp(size) > 0 {
			size = s
		}
		rc := snapshot.RestoreClaim{Namespace: scratch, Name: p.Claim, Snapshot: p.Claim, StorageClass: p.RestoreClass, Size: size,
			AccessModes: template.Spec.AccessModes, VolumeMode: template.Spec.VolumeMode, Labels: runLabels(res.RunID)}
		if len(rc.AccessModes) == 0 {
			rc.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
		}
		rs := &snapshot.Restorer{Kube: d.Clients.Kube, Claim: rc, Timeout: o.Timeouts.Wait, Warn: func(msg string) {
			mu.Lock()
			defer mu.Unlock()
			res.Notes = append(res.Notes, msg)
			d.step(res, "%s", msg)
		}}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, pv, err := rs.Run(ctx, &snapshot.RestoreState{})
			errs[i] = err
			if err == nil {
				r.Claims[i], r.Volumes[i], claims[i] = p.Claim, pv, c
			}
		}()
	}
	wg.Wait()
	for _, pv := range r.Volumes {
		if pv != nil {
			cl.pvs = append(cl.pvs, pv.Name)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for i, p := range plans {
		// The restorer takes up a claim that exists under the name; in a
		// shared scratch namespace it must be this run's.
		if c := claims[i]; c != nil && c.Labels[LabelRun] != res.RunID {
			return nil, fmt.Errorf("claim %s/%s was not created by this drill (label %s=%q): refusing to check someone else's data", scratch, p.Claim, LabelRun, c.Labels[LabelRun])
		}
	}
	for i, p := range plans {
		for j := range res.Snapshots {
			if res.Snapshots[j].Ordinal == p.Index {
				res.Snapshots[j].RestoredPV = r.Volumes[i].Name
			}
		}
	}
	d.step(res, "%d claim(s) restored in %s in %s", len(plans), scratch, time.Since(start).Round(100*time.Millisecond))
	return r, nil
}

func (d *Drill) verifyOffline(ctx context.Context, plans []*ordinalPlan, r *Restored, captures [][]byte, res *Result) error {
	for i, p := range plans {
		base, err := inventory.Load(bytes.NewReader(captures[i]))
		if err != nil {
			return err
		}
		path, done, err := d.DBReader(ctx, r.Volumes[i])
		if err != nil {
			return fmt.Errorf("reading the restored volume %s of ordinal %d: %w (%s)", r.Volumes[i].Name, p.Index, err, OfflineHelp)
		}
		cur, err := inventory.FromSQLiteContext(ctx, path)
		if done != nil {
			done()
		}
		if err != nil {
			return fmt.Errorf("restored database of ordinal %d: %w", p.Index, err)
		}
		d.addVerdict(res, p.Index, verify.Verdict(base, cur))
	}
	return nil
}

func (d *Drill) verifyOnline(ctx context.Context, o Options, t *discovery.Target, scratch string, plans []*ordinalPlan, r *Restored, captures [][]byte, res *Result, log *zap.Logger) error {
	drillOf := t.Namespace + "/" + t.Name()
	for _, ref := range referencedObjects(&t.PodTemplate().Spec) {
		if err := d.copyObject(ctx, t.Namespace, scratch, drillOf, res.RunID, ref); err != nil {
			return err
		}
	}
	if svcName := governingService(t); svcName != "" {
		svc, err := d.Clients.Kube.CoreV1().Services(t.Namespace).Get(ctx, svcName, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			log.Info("the StatefulSet's governing Service does not exist; the copy gets none", zap.String("service", svcName))
		case err != nil:
			return fmt.Errorf("reading Service %s/%s: %w", t.Namespace, svcName, err)
		default:
			if _, err := d.Clients.Kube.CoreV1().Services(scratch).Create(ctx, copyService(svc, scratch, drillOf, res.RunID), metav1.CreateOptions{}); err != nil {
				return fmt.Errorf("creating Service %s/%s: %w", scratch, svcName, err)
			}
		}
	}
	var sts *appsv1.StatefulSet
	if t.IsDeployment() {
		sts = scratchStatefulSetOfDeployment(t.Deployment, scratch, res.RunID)
	} else {
		sts = scratchStatefulSet(t.StatefulSet, t.ClaimTemplate, scratch, plans[0].RestoreClass, res.RunID)
	}
	if _, err := d.Clients.Kube.AppsV1().StatefulSets(scratch).Create(ctx, sts, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating the StatefulSet copy %s/%s: %w", scratch, sts.Name, err)
	}
	start := time.Now()
	if err := workload.WaitReady(ctx, d.Clients.Kube, scratch, sts.Name, o.Timeouts.Wait); err != nil {
		return fmt.Errorf("the restored copy never became Ready: %w", err)
	}
	d.step(res, "restored copy %s/%s Ready in %s", scratch, sts.Name, time.Since(start).Round(100*time.Millisecond))

	checker := d.Checker(t, scratch)
	for i, p := range plans {
		pod := scratchPod(t, p.Index, p.Pod)
		vctx, cancel := context.WithTimeout(ctx, o.Timeouts.Verify)
		err := checker.Ready(vctx, pod)
		var v app.Verdict
		if err == nil {
			v, err = checker.Verify(vctx, pod, captures[i])
		}
		cancel()
		if err != nil {
			return fmt.Errorf("checking the restored %s of pod %s/%s: %w", checker.Kind(), scratch, pod, err)
		}
		d.addVerdict(res, p.Index, v)
	}
	return nil
}

func (d *Drill) addVerdict(res *Result, ord int, v app.Verdict) {
	v.Summary = fmt.Sprintf("ordinal %d: %s", ord, v.Summary)
	res.Verification = append(res.Verification, v)
	res.Checked += v.Checked
	res.Lost += v.Lost
	d.step(res, "%s", v.Summary)
}

func (d *Drill) copyObject(ctx context.Context, from, to, drillOf, runID string, ref objectRef) error {
	var err error
	switch ref.Kind {
	case "Secret":
		var s *corev1.Secret
		if s, err = d.Clients.Kube.CoreV1().Secrets(from).Get(ctx, ref.Name, metav1.GetOptions{}); err == nil {
			_, err = d.Clients.Kube.CoreV1().Secrets(to).Create(ctx, copySecret(s, to, drillOf, runID), metav1.CreateOptions{})
		}
	case "ConfigMap":
		var c *corev1.ConfigMap
		if c, err = d.Clients.Kube.CoreV1().ConfigMaps(from).Get(ctx, ref.Name, metav1.GetOptions{}); err == nil {
			_, err = d.Clients.Kube.CoreV1().ConfigMaps(to).Create(ctx, copyConfigMap(c, to, drillOf, runID), metav1.CreateOptions{})
		}
	}
	if apierrors.IsNotFound(err) && ref.Optional {
		return nil
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("copying %s %s/%s into %s: %w", ref.Kind, from, ref.Name, to, err)
	}
	return err
}
