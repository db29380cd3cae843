package dr

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rebind-dev/rebind/pkg/app"
	"github.com/rebind-dev/rebind/pkg/discovery"
	"github.com/rebind-dev/rebind/pkg/journal"
	"github.com/rebind-dev/rebind/pkg/kube"
	"github.com/rebind-dev/rebind/pkg/preflight"
	"github.com/rebind-dev/rebind/pkg/report"
	"github.com/rebind-dev/rebind/pkg/velero"
)

// Env is what both halves of DR run with in one cluster.
type Env struct {
	Clients *kube.Clients
	// Checker reaches the Grafana pods of this cluster.
	Checker app.Checker
	Out     io.Writer
	Log     *zap.Logger
	// AfterRestore runs once the restored workload is Ready, before its
	// dashboards are compared (tests damage the restored volume there, as
	// a bad snapshot would).
	AfterRestore func(ctx context.Context, namespace string) error
}

func (e *Env) out() io.Writer {
	if e.Out == nil {
		return io.Discard
	}
	return e.Out
}

func (e *Env) log() *zap.Logger {
	if e.Log == nil {
		return zap.NewNop()
	}
	return e.Log
}

func (e *Env) progress(format string, args ...any) {
	fmt.Fprintf(e.out(), format+"\n", args...)
}

// BackupOptions select what to back up and how.
type BackupOptions struct {
	Target          discovery.Options
	VeleroNamespace string
	// Name of the Velero Backup; default rebind-dr-<workload>-<UTC time>.
	Name string
	// TTL of the Backup (Velero's default, 30 days, when 0).
	TTL time.Duration
	// Pickup and Timeout bound the wait for Velero.
	Pickup, Timeout time.Duration
	// KeepBaseline leaves the baseline ConfigMap in the namespace after
	// the Backup (by default it is removed: the Backup holds it).
	KeepBaseline bool
	// LeaseDuration of the workload's Lease held while backing up
	// (journal.DefaultLeaseDuration when 0).
	LeaseDuration time.Duration
	// Grafana says how Grafana is reached, for the rights preflight asks
	// for.
	Grafana GrafanaAccess
}

// lockWorkload takes the Lease `rebind migrate`, `rollback` and `drill`
// take for the workload: a backup taken while a migration moves the
// volumes (or of a migration stopped half-way) would hold neither the old
// data nor the new, so both are refused before anything is written.
func lockWorkload(ctx context.Context, c *kube.Clients, t *discovery.Target, d time.Duration) (*journal.Lease, error) {
	ns, name := t.Namespace, journal.LeaseName(t.Name())
	host, _ := os.Hostname()
	l, err := journal.TakeLease(ctx, c.Kube, journal.LeaseOptions{Namespace: ns, Name: name, Duration: d,
		Holder: fmt.Sprintf("dr-backup-%s-%d", host, os.Getpid())})
	var locked *journal.LockedError
	if errors.As(err, &locked) {
		return nil, &preflight.Error{Problems: []preflight.Problem{{Object: fmt.Sprintf("Lease %s/%s", ns, name),
			Message: fmt.Sprintf("%s; a backup does not run while a migration, a rollback or a drill of %s/%s does", locked.Error(), ns, t.Name()),
			Fix:     "nothing was written; back up once that run has finished"}}}
	}
	if err != nil {
		return nil, fmt.Errorf("taking Lease %s/%s: %w", ns, name, err)
	}
	rec, err := journal.LoadRecord(ctx, c.Kube, ns, t.Name())
	if err == nil && rec != nil && rec.Phase.Unfinished() {
		err = &preflight.Error{Problems: []preflight.Problem{{Object: fmt.Sprintf("ConfigMap %s/%s", ns, journal.Name(t.Name())),
			Message: fmt.Sprintf("the %s run %s of %s/%s is unfinished (phase %s): its volumes are in the middle of a move", rec.Operation, rec.RunID, ns, t.Name(), rec.Phase),
			Fix:     fmt.Sprintf("nothing was written; finish it first (re-run the same `rebind migrate`, or `rebind rollback -n %s --%s %s`), then back up", ns, strings.ToLower(t.KindName()), t.Name())}}}
	}
	if err != nil {
		_ = l.Release(context.WithoutCancel(ctx))
		return nil, err
	}
	return l, nil
}

// releaseLease gives the Lease back; one that cannot be released expires
// after its duration, which the report says.
func releaseLease(parent context.Context, l *journal.Lease, rep *report.Report) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), 15*time.Second)
	defer cancel()
	if err := l.Release(ctx); err != nil {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("Lease not released (it expires after its duration): %v", err))
	}
}

// Backup takes, in the cluster of e, the inventory of every pod's Grafana,
// writes it into the release namespace (ConfigMap BaselineName), and backs
// the namespace up with Velero, the Meta on the Backup. Everything is
// checked before anything is written; a refusal is a *preflight.Error.
func (e *Env) Backup(ctx context.Context, o BackupOptions) (*report.Report, error) {
	rep := &report.Report{Operation: "backup", Strategy: "velero", StartedAt: time.Now(), Outcome: report.Failed}
	finish := rep.End
	// The rights are asked in two rounds, the second knowing the
	// workload; one reviewer keeps the first round's answers.
	ctx = preflight.WithAccessReviewer(ctx, &preflight.AccessReviewer{Kube: e.Clients.Kube})
	scope := BackupScope{Namespace: o.Target.Namespace, Workload: o.Target.StatefulSet, VeleroNamespace: o.VeleroNamespace, Grafana: o.Grafana}
	switch {
	case o.Target.StatefulSet != "":
	case o.Target.Deployment != "":
		scope.Workload, scope.Deployment = o.Target.Deployment, true
	default:
		scope.ByRelease = true
	}
	var access preflight.Report
	if err := checkAccess(ctx, e.Clients.Kube, discoveryPermissions(scope), backupGrants, &access); err != nil {
		return finish(err)
	}
	if err := access.Err(); err != nil {
		return finish(err)
	}
	t, err := discovery.Discover(ctx, e.Clients, o.Target)
	if err != nil {
		return finish(err)
	}
	rep.Target = t.Namespace + "/" + t.Name()
	scope.Workload, scope.Deployment = t.Name(), t.IsDeployment()
	// Every right before any other check: those read with them.
	if err := checkAccess(ctx, e.Clients.Kube, BackupPermissions(scope), backupGrants, &access); err != nil {
		return finish(err)
	}
	if err := access.Err(); err != nil {
		return finish(err)
	}
	m := MetaOf(t, time.Now())
	v := velero.New(e.Clients, o.VeleroNamespace, e.log())
	name := o.Name
	if name == "" {
		name = trim63(fmt.Sprintf("rebind-dr-%s-%s", t.Name(), m.TakenAt.Format("20060102-150405")))
	}

	// Preflight: Velero ready, the Backup name free, the volumes CSI (the
	// backup holds them as CSI snapshots), every pod's Grafana readable
	// and not empty. Nothing is written before all of it holds.
	var pf preflight.Report
	location, err := v.Detect(ctx)
	if err != nil {
		var nr *velero.NotReadyError
		if !errors.As(err, &nr) {
			return finish(err)
		}
		pf.Add("Velero", nr.What, nr.Hint)
	}
	if _, err := v.GetBackup(ctx, name); err == nil {
		pf.Add("Velero Backup "+v.Namespace+"/"+name, "already exists", "pick another --backup-name, or restore from that backup")
	} else if !apierrors.IsNotFound(errors.Unwrap(err)) {
		return finish(err)
	}
	for _, ord := range t.Ordinals {
		if !ord.CSI {
			pf.Add("claim "+t.Namespace+"/"+ord.Claim, "is not on a CSI volume: Velero cannot snapshot it for another cluster", "move it to a CSI class first (`rebind migrate --strategy restore`), or back it up with Velero's file-system backup yourself")
		}
	}
	if cm, err := e.Clients.Kube.CoreV1().ConfigMaps(t.Namespace).Get(ctx, m.Baseline, metav1.GetOptions{}); err == nil && cm.Labels[LabelBaseline] != t.Name() {
		pf.Add("ConfigMap "+t.Namespace+"/"+m.Baseline, "exists and is not rebind's baseline (no label "+LabelBaseline+"="+t.Name()+")", "rename or delete it; rebind writes its baseline under that name")
	}
	if e.Checker == nil {
		return finish(errors.New("dr: no Grafana checker"))
	}
	for _, o := range m.Ordinals {
		if err := app.Preflight(ctx, e.Checker, o.Pod); err != nil {
			pf.Add("Grafana of pod "+t.Namespace+"/"+o.Pod, err.Error(), "the baseline must cover every dashboard: fix access (see `rebind inventory`) and re-run")
		}
	}
	if err := pf.Err(); err != nil {
		return finish(err)
	}
	lease, err := lockWorkload(ctx, e.Clients, t, o.LeaseDuration)
	if err != nil {
		return finish(err)
	}
	defer releaseLease(ctx, lease, rep)
	// Losing the Lease (a migration took over) stops the waits below.
	ctx, stopGuard := lease.Guard(ctx)
	defer stopGuard()

	// The baseline, taken before the Backup: every dashboard in it existed
	// before Velero's snapshot, so a restore of the Backup must hold it.
	var captures [][]byte
	for _, o := range m.Ordinals {
		e.progress("baseline: inventory of %s/%s", t.Namespace, o.Pod)
		c, err := e.Checker.Capture(ctx, o.Pod)
		if err != nil {
			return finish(fmt.Errorf("baseline of pod %s/%s: %w; nothing was written", t.Namespace, o.Pod, err))
		}
		captures = append(captures, c)
	}
	cm, err := BaselineConfigMap(m, captures)
	if err != nil {
		return finish(err)
	}
	cms := e.Clients.Kube.CoreV1().ConfigMaps(t.Namespace)
	written, err := cms.Create(ctx, cm, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		// An earlier run's, checked as rebind's above: replaced only in the
		// version read here.
		old, gerr := cms.Get(ctx, cm.Name, metav1.GetOptions{})
		if gerr != nil {
			return finish(gerr)
		}
		if old.Labels[LabelBaseline] != t.Name() {
			return finish(fmt.Errorf("ConfigMap %s/%s is not rebind's baseline (no label %s=%s): rename or delete it", t.Namespace, cm.Name, LabelBaseline, t.Name()))
		}
		cm.ResourceVersion = old.ResourceVersion
		written, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
	}
	if err != nil {
		return finish(fmt.Errorf("writing baseline ConfigMap %s/%s: %w", t.Namespace, cm.Name, err))
	}
	e.progress("baseline: ConfigMap %s/%s (%d ordinal(s))", t.Namespace, cm.Name, len(captures))

	ann, err := m.annotation()
	if err != nil {
		return finish(err)
	}
	e.progress("velero: Backup %s/%s of namespace %s (volumes as CSI snapshots)", v.Namespace, name, t.Namespace)
	if _, err := v.CreateBackup(ctx, velero.BackupRequest{Name: name, Namespace: t.Namespace, Location: location, TTL: o.TTL,
		Labels:      map[string]string{journal.LabelManagedBy: journal.ManagedBy, LabelBackup: t.Name()},
		Annotations: map[string]string{AnnBackup: ann}}); err != nil {
		return finish(err)
	}
	b, err := v.WaitBackup(ctx, name, velero.Wait{Pickup: o.Pickup, Timeout: o.Timeout})
	if err != nil {
		return finish(err)
	}
	rep.VeleroBackup = b.Name
	if !o.KeepBaseline {
		// In the Backup now; removed only in the version rebind wrote.
		rv := written.ResourceVersion
		if err := cms.Delete(ctx, written.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &written.UID, ResourceVersion: &rv}}); err != nil && !apierrors.IsNotFound(err) {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("baseline ConfigMap %s/%s left in place: %v", t.Namespace, written.Name, err))
		}
	}
	rep.Outcome = report.Succeeded
	rep.Notes = append(rep.Notes,
		fmt.Sprintf("Velero Backup %s/%s (Completed, %d CSI snapshot(s)) carries the baseline of %d ordinal(s) in ConfigMap %s", v.Namespace, b.Name, b.Status.CSIVolumeSnapshotsCompleted, len(captures), cm.Name),
		fmt.Sprintf("restore it in another cluster sharing the backup location: rebind --context OTHER restore --from-backup %s [--into-namespace NS] [--to-storage-class CLASS]", b.Name))
	return finish(nil)
}
