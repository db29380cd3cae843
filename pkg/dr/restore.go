package dr

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rebind-dev/rebind/pkg/app"
	"github.com/rebind-dev/rebind/pkg/discovery"
	"github.com/rebind-dev/rebind/pkg/journal"
	"github.com/rebind-dev/rebind/pkg/preflight"
	"github.com/rebind-dev/rebind/pkg/report"
	"github.com/rebind-dev/rebind/pkg/velero"
	"github.com/rebind-dev/rebind/pkg/workload"
)

// Outcome of a restore whose verification could not run (no baseline in
// the backup, an org that cannot be read): never counted as passing.
const Unverified = "unverified"

// RestoreOptions select the backup and where it goes.
type RestoreOptions struct {
	FromBackup      string
	VeleroNamespace string
	// IntoNamespace receives the release; default the namespace it was
	// backed up from.
	IntoNamespace string
	// ToClass is the StorageClass of the restored claims; default the
	// class they were backed up in. It must belong to the snapshots'
	// CSI driver.
	ToClass string
	// AllowExistingGrafana restores into a namespace that already holds a
	// Grafana (Velero keeps existing objects as they are, so that Grafana
	// is what gets verified).
	AllowExistingGrafana bool
	// Pickup, Restore bound the Velero Restore (queue included); Wait the
	// workload's readiness; Verify each pod's verification.
	Pickup, Restore, Wait, Verify time.Duration
	// CheckerFor reaches the Grafana pods of namespace ns of this cluster
	// (Env.Checker is not used: the namespace is known only here).
	CheckerFor func(ns string) (app.Checker, error)
	// Grafana says how CheckerFor reaches Grafana, for the rights
	// preflight asks for.
	Grafana GrafanaAccess
}

// VerificationFailedError: the restored Grafana lacks or changed
// dashboards of the baseline the backup carried. The restored release is
// kept as it is, for inspection.
type VerificationFailedError struct {
	Target  string
	Summary []string
}

func (e *VerificationFailedError) Error() string {
	return fmt.Sprintf("verification of the restored %s failed: %s; the restored release is kept for inspection (the backup is unchanged)", e.Target, strings.Join(e.Summary, "; "))
}

// UnverifiedError: the restore finished but the dashboards could not be
// compared; never a success.
type UnverifiedError struct {
	Target string
	Err    error
}

func (e *UnverifiedError) Error() string {
	return fmt.Sprintf("the restored %s is UNVERIFIED: %v", e.Target, e.Err)
}
func (e *UnverifiedError) Unwrap() error { return e.Err }

// IncompleteError: the restore did not finish (Velero's Restore failed or
// is still running, the workload did not get Ready). Running the same
// command again resumes: the Restore is found by its name.
type IncompleteError struct{ Err error }

func (e *IncompleteError) Error() string {
	return fmt.Sprintf("%v\nthe restore is incomplete: fix the cause and re-run the same command (it finds its Velero Restore again)", e.Err)
}
func (e *IncompleteError) Unwrap() error { return e.Err }

// RestoreName is the Velero Restore rebind creates for backup into ns:
// the same for a re-run, so it resumes instead of restoring twice.
func RestoreName(backup, into string) string {
	h := sha256.Sum256([]byte(backup + "/" + into))
	return trim63("rebind-dr-" + hex.EncodeToString(h[:])[:10] + "-" + into)
}

// Occupant is a Grafana workload found where the restore would go.
type Occupant struct{ Kind, Name string }

// occupants lists the Grafana workloads of a namespace that the Restore
// restoreName did not create: the chart's name label, or the name of the
// workload the backup holds.
func occupants(sts []appsv1.StatefulSet, deps []appsv1.Deployment, workloadName, restoreName string) []Occupant {
	var out []Occupant
	check := func(kind string, meta metav1.ObjectMeta, tpl corev1.PodTemplateSpec) {
		if meta.Labels[LabelVeleroRestore] == restoreName {
			return // this restore's own, from an earlier run
		}
		if meta.Name == workloadName || meta.Labels[discovery.LabelName] == "grafana" || tpl.Labels[discovery.LabelName] == "grafana" {
			out = append(out, Occupant{Kind: kind, Name: meta.Name})
		}
	}
	for _, s := range sts {
		check(discovery.KindStatefulSet, s.ObjectMeta, s.Spec.Template)
	}
	for _, d := range deps {
		check(discovery.KindDeployment, d.ObjectMeta, d.Spec.Template)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Kind+out[i].Name < out[j].Kind+out[j].Name })
	return out
}

// restorePlan is what preflight resolved.
type restorePlan struct {
	meta              *Meta
	into, from, to    string
	restoreName       string
	backup            *velerov1.Backup
	existingAllowed   []Occupant
	existing          *velerov1.Restore // this restore's, from an earlier run
	mappingNeeded     bool
	sourceDescription string
}

// Restore brings the release of a DR backup up in the cluster of e and
// verifies every dashboard against the baseline the backup carries.
// Errors: *preflight.Error (nothing changed), *IncompleteError,
// *UnverifiedError, *VerificationFailedError.
func (e *Env) Restore(ctx context.Context, o RestoreOptions) (*report.Report, error) {
	rep := &report.Report{Operation: "restore", Strategy: "velero-backup", StartedAt: time.Now(), Outcome: report.Failed}
	finish := rep.End
	v := velero.New(e.Clients, o.VeleroNamespace, e.log())
	p, err := e.preflightRestore(ctx, v, o)
	if err != nil {
		return finish(err)
	}
	rep.Target = p.into + "/" + p.meta.Workload
	rep.VeleroBackup = p.backup.Name
	rep.Notes = append(rep.Notes, p.sourceDescription)
	for _, oc := range p.existingAllowed {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("namespace %s already held %s %s (--allow-existing-grafana): Velero keeps existing objects, so what was verified is that Grafana's data, not necessarily the backup's", p.into, oc.Kind, oc.Name))
	}

	if err := e.runVeleroRestore(ctx, v, p, o); err != nil {
		return finish(&IncompleteError{Err: err})
	}
	rep.Notes = append(rep.Notes, fmt.Sprintf("restored by Velero Restore %s/%s", v.Namespace, p.restoreName))

	e.progress("restore: waiting for %s %s/%s to be Ready", p.meta.Kind, p.into, p.meta.Workload)
	if p.meta.Kind == discovery.KindDeployment {
		err = workload.WaitDeploymentReady(ctx, e.Clients.Kube, p.into, p.meta.Workload, o.Wait)
	} else {
		err = workload.WaitReady(ctx, e.Clients.Kube, p.into, p.meta.Workload, o.Wait)
	}
	if err != nil {
		return finish(&IncompleteError{Err: fmt.Errorf("restored %s %s/%s: %w", p.meta.Kind, p.into, p.meta.Workload, err)})
	}
	rep.VolumesAfter = e.volumes(ctx, p)
	if e.AfterRestore != nil {
		if err := e.AfterRestore(ctx, p.into); err != nil {
			return finish(err)
		}
	}

	verdicts, err := e.verifyRestored(ctx, p, o)
	rep.Verification = verdicts
	if err != nil {
		var failed *VerificationFailedError
		if !errors.As(err, &failed) {
			rep.Outcome = Unverified
		}
		return finish(err)
	}
	rep.Outcome = report.Succeeded
	return finish(nil)
}

func (e *Env) preflightRestore(ctx context.Context, v *velero.Client, o RestoreOptions) (*restorePlan, error) {
	var pf preflight.Report
	if o.FromBackup == "" {
		pf.Add("--from-backup", "names no Velero Backup", "pass the backup `rebind backup` took (see `velero backup get`)")
		return nil, pf.Err()
	}
	if o.CheckerFor == nil {
		return nil, errors.New("dr: no Grafana checker")
	}
	// The rights are asked in two rounds, the second knowing what the
	// backup holds; one reviewer keeps the first round's answers.
	ctx = preflight.WithAccessReviewer(ctx, &preflight.AccessReviewer{Kube: e.Clients.Kube})
	if err := checkAccess(ctx, e.Clients.Kube, veleroReadPermissions(v.Namespace), restoreGrants, &pf); err != nil {
		return nil, err
	}
	if err := pf.Err(); err != nil {
		return nil, err
	}
	if _, err := v.Detect(ctx); err != nil {
		var nr *velero.NotReadyError
		if !errors.As(err, &nr) {
			return nil, err
		}
		pf.Add("Velero", nr.What, nr.Hint)
		return nil, pf.Err()
	}
	ref := fmt.Sprintf("Velero Backup %s/%s", v.Namespace, o.FromBackup)
	b, err := v.GetBackup(ctx, o.FromBackup)
	if apierrors.IsNotFound(errors.Unwrap(err)) {
		pf.Add(ref, "not found in this cluster", "Velero brings backups of other clusters in from the shared location every --backup-sync-period (1 minute by default): check that this cluster's BackupStorageLocation names the same bucket and prefix, wait, and look with `velero backup get -n "+v.Namespace+"`")
		return nil, pf.Err()
	}
	if err != nil {
		return nil, err
	}
	if done, berr := velero.BackupOutcome(b); !done || berr != nil {
		pf.Add(ref, fmt.Sprintf("is %s, not Completed", b.Status.Phase), "restore from a Completed backup")
	}
	m, ok, err := MetaFromBackup(b)
	switch {
	case err != nil:
		pf.Add(ref, err.Error(), "take the backup again with `rebind backup`")
		return nil, pf.Err()
	case !ok:
		pf.Add(ref, "carries no rebind baseline (annotation "+AnnBackup+"): the restored dashboards could not be verified", "take the backup with `rebind backup` (it writes the baseline into the backup), or restore it with `velero restore create` and verify with `rebind verify --baseline FILE`")
		return nil, pf.Err()
	}
	p := &restorePlan{meta: m, backup: b, into: o.IntoNamespace}
	if p.into == "" {
		p.into = m.Namespace
	}
	p.restoreName = RestoreName(b.Name, p.into)
	p.from, p.to = m.SourceClass(), o.ToClass
	if p.to == "" {
		p.to = p.from
	}
	p.mappingNeeded = needsClassMapping(p.from, p.to)
	// Every right before the checks that read with them.
	scope := RestoreScope{VeleroNamespace: v.Namespace, Into: p.into, Workload: m.Workload, Deployment: m.Kind == discovery.KindDeployment,
		MapClass: p.mappingNeeded, Grafana: o.Grafana}
	var access preflight.Report
	if err := checkAccess(ctx, e.Clients.Kube, RestorePermissions(scope), restoreGrants, &access); err != nil {
		return nil, err
	}
	if len(access.Problems) > 0 {
		pf.Problems = append(pf.Problems, access.Problems...)
		return nil, pf.Err()
	}
	if r, err := v.GetRestore(ctx, p.restoreName); err == nil {
		p.existing = r
	} else if !apierrors.IsNotFound(errors.Unwrap(err)) {
		return nil, err
	}

	// Where it goes: a namespace holding another Grafana is refused, as
	// Velero would keep that one's objects and the verification would
	// look at a mixture.
	sts, err := e.Clients.Kube.AppsV1().StatefulSets(p.into).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing StatefulSets in %s: %w", p.into, err)
	}
	deps, err := e.Clients.Kube.AppsV1().Deployments(p.into).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing Deployments in %s: %w", p.into, err)
	}
	if occ := occupants(sts.Items, deps.Items, m.Workload, p.restoreName); len(occ) > 0 {
		if o.AllowExistingGrafana {
			p.existingAllowed = occ
		} else {
			var names []string
			for _, oc := range occ {
				names = append(names, oc.Kind+" "+p.into+"/"+oc.Name)
			}
			pf.Add("namespace "+p.into, "already holds a Grafana: "+strings.Join(names, ", "),
				"restore into another namespace (--into-namespace NS), or pass --allow-existing-grafana to restore next to it (Velero keeps existing objects as they are)")
		}
	}

	// The class: the snapshots' own driver must restore them.
	if p.to == "" {
		pf.Add(ref, "records no StorageClass of the backed-up claims", "pass --to-storage-class")
	} else {
		sc, err := e.Clients.Kube.StorageV1().StorageClasses().Get(ctx, p.to, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			pf.Add("StorageClass "+p.to, "not found in this cluster", "pass --to-storage-class with a class of driver "+m.Driver()+" (`kubectl get storageclass`)")
		case err != nil:
			return nil, err
		case m.Driver() != "" && sc.Provisioner != m.Driver():
			pf.Add("StorageClass "+p.to, fmt.Sprintf("is provisioned by %s, but the backup holds CSI snapshots of driver %s, which only that driver can restore", sc.Provisioner, m.Driver()),
				"pass --to-storage-class with a class of driver "+m.Driver())
		}
	}
	if err := pf.Err(); err != nil {
		return nil, err
	}
	p.sourceDescription = fmt.Sprintf("Velero Backup %s of %s %s/%s (%d ordinal(s), class %s, baseline taken %s) restored into namespace %s, class %s",
		b.Name, m.Kind, m.Namespace, m.Workload, len(m.Ordinals), p.from, m.TakenAt.Format(time.RFC3339), p.into, p.to)
	return p, nil
}

// runVeleroRestore maps the class for as long as the Restore runs (the
// mapping ConfigMap applies to every restore of the cluster) and puts it
// back once the Restore has ended, keeping it while Velero still holds
// the Restore (without it, the Restore would restore into the old class).
func (e *Env) runVeleroRestore(ctx context.Context, v *velero.Client, p *restorePlan, o RestoreOptions) (err error) {
	ann := map[string]string{}
	if p.mappingNeeded {
		m, merr := v.MapStorageClass(ctx, p.from, p.to)
		if merr != nil {
			return merr
		}
		// A resumed run finds its own mapping in place: what to put back
		// is what the first run found, recorded on its Restore.
		if p.existing != nil {
			if raw := p.existing.Annotations[AnnMapping]; raw != "" {
				if jerr := json.Unmarshal([]byte(raw), &m); jerr != nil {
					return fmt.Errorf("annotation %s of Velero Restore %s/%s: %w", AnnMapping, v.Namespace, p.existing.Name, jerr)
				}
			}
		}
		raw, _ := json.Marshal(m)
		ann[AnnMapping] = string(raw)
		e.progress("velero: storage-class mapping %s -> %s in %s/%s", p.from, p.to, v.Namespace, m.ConfigMap)
		defer func() {
			var running *velero.StillRunningError
			if errors.As(err, &running) || ctx.Err() != nil {
				return
			}
			if uerr := v.Unmap(context.WithoutCancel(ctx), m); uerr != nil && err == nil {
				err = uerr
			}
		}()
	}
	e.progress("velero: Restore %s/%s of Backup %s (namespace %s -> %s)", v.Namespace, p.restoreName, p.backup.Name, p.meta.Namespace, p.into)
	if _, err := v.CreateRestore(ctx, velero.RestoreRequest{Name: p.restoreName, BackupName: p.backup.Name, Namespace: p.meta.Namespace, Into: p.into,
		Labels: map[string]string{journal.LabelManagedBy: journal.ManagedBy, LabelBackup: p.meta.Workload}, Annotations: ann}); err != nil {
		return err
	}
	_, err = v.WaitRestore(ctx, p.restoreName, velero.Wait{Pickup: o.Pickup, Timeout: o.Restore, Progress: func(l string) { e.progress("%s", l) }})
	return err
}

// verifyRestored compares every ordinal's Grafana with the baseline the
// backup carried. What cannot be compared makes the run unverified.
func (e *Env) verifyRestored(ctx context.Context, p *restorePlan, o RestoreOptions) ([]app.Verdict, error) {
	target := p.meta.Kind + " " + p.into + "/" + p.meta.Workload
	cm, err := e.Clients.Kube.CoreV1().ConfigMaps(p.into).Get(ctx, p.meta.Baseline, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		cm, err = nil, nil
	}
	if err != nil {
		return nil, &UnverifiedError{Target: target, Err: fmt.Errorf("reading the restored baseline ConfigMap %s/%s: %w", p.into, p.meta.Baseline, err)}
	}
	bases, err := Baselines(cm, p.meta)
	if err != nil {
		return nil, &UnverifiedError{Target: target, Err: err}
	}
	checker, err := o.CheckerFor(p.into)
	if err != nil {
		return nil, &UnverifiedError{Target: target, Err: err}
	}
	var verdicts []app.Verdict
	var lost []string
	for _, ord := range p.meta.Ordinals {
		vctx, cancel := context.WithTimeout(ctx, o.Verify)
		e.progress("verify: every dashboard of %s/%s against the baseline in the backup", p.into, ord.Pod)
		err := checker.Ready(vctx, ord.Pod)
		var v app.Verdict
		if err == nil {
			v, err = checker.Verify(vctx, ord.Pod, bases[ord.Index])
		}
		cancel()
		if err != nil {
			return verdicts, &UnverifiedError{Target: target, Err: fmt.Errorf("Grafana of pod %s/%s: %w", p.into, ord.Pod, err)}
		}
		e.progress("verify: %s: %s", ord.Pod, v.Summary)
		verdicts = append(verdicts, v)
		if !v.OK {
			lost = append(lost, ord.Pod+": "+v.Summary)
		}
	}
	if len(lost) > 0 {
		return verdicts, &VerificationFailedError{Target: target, Summary: lost}
	}
	return verdicts, nil
}

// volumes reports the restored claims and their PVs.
func (e *Env) volumes(ctx context.Context, p *restorePlan) []report.Volume {
	var out []report.Volume
	for _, ord := range p.meta.Ordinals {
		v := report.Volume{Ordinal: ord.Index, Claim: ord.Claim}
		c, err := e.Clients.Kube.CoreV1().PersistentVolumeClaims(p.into).Get(ctx, ord.Claim, metav1.GetOptions{})
		if err == nil && c.Spec.VolumeName != "" {
			v.PV = c.Spec.VolumeName
			if pv, err := e.Clients.Kube.CoreV1().PersistentVolumes().Get(ctx, c.Spec.VolumeName, metav1.GetOptions{}); err == nil {
				v.StorageClass = pv.Spec.StorageClassName
				v.ReclaimPolicy = string(pv.Spec.PersistentVolumeReclaimPolicy)
				if q, ok := pv.Spec.Capacity[corev1.ResourceStorage]; ok {
					v.Capacity = q.String()
				}
			}
		}
		out = append(out, v)
	}
	return out
}

// needsClassMapping says whether claims backed up in class from, restored
// into class to, need Velero's storage-class mapping.
func needsClassMapping(from, to string) bool { return from != "" && from != to }
