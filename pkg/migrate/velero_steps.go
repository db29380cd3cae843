package migrate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/rebind-dev/rebind/pkg/discovery"
	"github.com/rebind-dev/rebind/pkg/journal"
	"github.com/rebind-dev/rebind/pkg/plan"
	"github.com/rebind-dev/rebind/pkg/preflight"
	"github.com/rebind-dev/rebind/pkg/velero"
	"github.com/rebind-dev/rebind/pkg/volume"
)

// Backup engines for --backup.
const (
	BackupNone   = "none"
	BackupVelero = "velero"
)

// Journal keys of the Velero steps.
const (
	keyVeleroBackup  = "velero/backup"  // the Completed backup
	keyVeleroMapping = "velero/mapping" // storage-class mapping to put back
)

func keyVeleroAttempt(n int) string { return fmt.Sprintf("velero/backup-attempt/%d", n) }

// veleroPlan is the data part of a velero-restore: restore the claims,
// then reserve each restored PV for its ordinal's claim name while the old
// claim still serves (as the restore strategy does).
func veleroPlan(e *env) []plan.Step {
	steps := []plan.Step{veleroRestoreStep{e}}
	for i := range e.spec.Target.Ordinals {
		steps = append(steps, reserveStep{e, i})
	}
	return steps
}

func (e *env) velero() *velero.Client { return velero.New(e.c, e.spec.VeleroNamespace, e.log) }

func (s *Spec) veleroWait() velero.Wait {
	return velero.Wait{Pickup: s.Timeouts.VeleroPickup, Timeout: s.Timeouts.Snapshot}
}

// restoreWait bounds rebind's Restore, which may queue behind others.
func (e *env) restoreWait() velero.Wait {
	w := e.spec.veleroWait()
	if e.spec.Timeouts.VeleroRestore > 0 {
		w.Timeout = e.spec.Timeouts.VeleroRestore
	}
	w.Progress = e.progress
	return w
}

// stagingNamespace receives the restored claims; it is unique to the run
// so nothing else lives there and it can be deleted as a whole.
func (s *Spec) stagingNamespace() string {
	return trim63(fmt.Sprintf("rebind-%s-%s", s.RunID, s.ns()))
}

func (s *Spec) veleroRestoreName() string {
	return trim63(fmt.Sprintf("rebind-%s-%s", s.name(), s.RunID))
}

// sourceClass is the class the claims had when they were backed up: the
// key of the storage-class mapping.
func sourceClass(t *discovery.Target) string {
	for _, o := range t.Ordinals {
		if o.StorageClass != "" {
			return o.StorageClass
		}
	}
	return ptr.Deref(t.Template().Spec.StorageClassName, t.DefaultClass)
}

// ---------------------------------------------------------------- velero backup

type veleroBackupStep struct{ *env }

func (s veleroBackupStep) ID() string { return "velero-backup" }
func (s veleroBackupStep) Describe() string {
	ns := s.spec.VeleroNamespace
	how := "volumes as CSI snapshots"
	if s.spec.SnapshotMove {
		how = "volume data moved to the backup location"
	}
	return fmt.Sprintf("back up namespace %s with Velero (Backup in %s, %s) and wait until Completed", s.spec.ns(), ns, how)
}
func (s veleroBackupStep) Precondition(ctx context.Context) error {
	_, err := s.velero().Detect(ctx)
	return err
}

// Apply takes a new Backup per attempt: a failed one stays as Velero left
// it (evidence), and a re-run must not trust it.
func (s veleroBackupStep) Apply(ctx context.Context) error {
	v := s.velero()
	n := 1
	for ; ; n++ {
		name, ok := s.j.Value(keyVeleroAttempt(n))
		if !ok {
			break
		}
		b, err := v.GetBackup(ctx, name)
		if apierrors.IsNotFound(errors.Unwrap(err)) {
			continue // recorded, then interrupted before it was created
		}
		if err != nil {
			return err
		}
		if done, berr := velero.BackupOutcome(b); !done || berr == nil {
			// Unfinished or Completed: this attempt is the one to wait for.
			return s.wait(ctx, v, name)
		}
	}
	name := trim63(fmt.Sprintf("rebind-%s-%s-%d", s.spec.name(), s.spec.RunID, n))
	// Recorded before it exists: a crash in between leaves a name to look
	// up, never an unrecorded backup.
	if err := s.j.SetValue(ctx, keyVeleroAttempt(n), name); err != nil {
		return err
	}
	location, err := v.Detect(ctx)
	if err != nil {
		return err
	}
	if _, err := v.CreateBackup(ctx, velero.BackupRequest{Name: name, Namespace: s.spec.ns(), MoveData: s.spec.SnapshotMove, Location: location,
		Labels: map[string]string{journal.LabelManagedBy: journal.ManagedBy, journal.LabelTarget: s.spec.name()}}); err != nil {
		return err
	}
	return s.wait(ctx, v, name)
}

func (s veleroBackupStep) wait(ctx context.Context, v *velero.Client, name string) error {
	b, err := v.WaitBackup(ctx, name, s.spec.veleroWait())
	if err != nil {
		return fmt.Errorf("%w; rebind changed nothing yet", err)
	}
	s.log.Info("velero backup completed", zap.String("backup", b.Name))
	return s.j.SetValue(ctx, keyVeleroBackup, b.Name)
}
func (s veleroBackupStep) Check(ctx context.Context) error {
	name := s.value(keyVeleroBackup)
	if name == "" {
		return errors.New("no Completed Velero backup recorded")
	}
	b, err := s.velero().GetBackup(ctx, name)
	if err != nil {
		return err
	}
	if done, err := velero.BackupOutcome(b); !done || err != nil {
		return fmt.Errorf("Velero Backup %s is %s", name, b.Status.Phase)
	}
	return nil
}

// Undo keeps the backup: it is the copy taken before anything changed.
func (s veleroBackupStep) Undo(context.Context) error { return nil }

// ---------------------------------------------------------------- velero restore

type veleroRestoreStep struct{ *env }

func (s veleroRestoreStep) ID() string { return "velero-restore" }
func (s veleroRestoreStep) Describe() string {
	from := sourceClass(s.spec.Target)
	mapping := "class " + s.spec.ToClass
	if from != s.spec.ToClass {
		mapping = fmt.Sprintf("class %s mapped to %s", from, s.spec.ToClass)
	}
	return fmt.Sprintf("restore the claims of %s from Velero Backup %s into staging namespace %s (%s; claims and volumes only), keep the restored volumes with Retain and drop the staging claims",
		s.spec.name(), s.spec.FromBackup, s.spec.stagingNamespace(), mapping)
}
func (s veleroRestoreStep) Precondition(ctx context.Context) error {
	b, err := s.velero().GetBackup(ctx, s.spec.FromBackup)
	if err != nil {
		return err
	}
	if done, err := velero.BackupOutcome(b); !done || err != nil {
		return fmt.Errorf("Velero Backup %s is %s, not Completed", b.Name, b.Status.Phase)
	}
	return nil
}
func (s veleroRestoreStep) Apply(ctx context.Context) error {
	if s.allAdopted() {
		return s.cleanupStaging(ctx)
	}
	if err := s.runRestore(ctx); err != nil {
		return err
	}
	for i := range s.spec.Target.Ordinals {
		if err := s.adopt(ctx, i); err != nil {
			return err
		}
	}
	return s.cleanupStaging(ctx)
}

func (s veleroRestoreStep) allAdopted() bool {
	for i := range s.spec.Target.Ordinals {
		if s.value(keyNewPV(i)) == "" {
			return false
		}
	}
	return true
}

// runRestore maps the class for as long as the restore runs: the mapping
// ConfigMap applies to every restore of the cluster, so it is put back as
// soon as rebind's Restore has ended (or was deleted unstarted), and kept
// while Velero still holds it: a queued Restore run without the mapping
// would restore into the original class.
func (s veleroRestoreStep) runRestore(ctx context.Context) (err error) {
	v := s.velero()
	from := sourceClass(s.spec.Target)
	if from != s.spec.ToClass {
		m, merr := v.MapStorageClass(ctx, from, s.spec.ToClass)
		if merr != nil {
			return merr
		}
		// A resumed run finds its own mapping in place: what to put back
		// is what the first attempt recorded, not that.
		if s.value(keyVeleroMapping) == "" {
			raw, _ := json.Marshal(m)
			if jerr := s.j.SetValue(ctx, keyVeleroMapping, string(raw)); jerr != nil {
				return jerr
			}
		}
		// The named result, not a shadow: the deferred check must see how
		// the wait ended.
		defer func() {
			var running *velero.StillRunningError
			if errors.As(err, &running) || ctx.Err() != nil {
				return
			}
			if uerr := s.unmap(context.WithoutCancel(ctx)); uerr != nil && err == nil {
				err = uerr
			}
		}()
	}
	// Only the target's claims (velero_deployment.go).
	sel := restoreSelector(s.spec.Target)
	name := s.spec.veleroRestoreName()
	if _, err := v.CreateRestore(ctx, velero.RestoreRequest{Name: name, BackupName: s.spec.FromBackup,
		Namespace: s.spec.ns(), Into: s.spec.stagingNamespace(),
		// Only volumes: a restored StatefulSet would start pods on the
		// copies, and a restored Secret or Service is not wanted either.
		Resources: []string{"persistentvolumeclaims", "persistentvolumes"}, Selector: sel,
		Labels: map[string]string{journal.LabelManagedBy: journal.ManagedBy, journal.LabelTarget: s.spec.name()}}); err != nil {
		return err
	}
	_, err = v.WaitRestore(ctx, name, s.restoreWait())
	return err
}

func (s veleroRestoreStep) unmap(ctx context.Context) error {
	raw := s.value(keyVeleroMapping)
	if raw == "" {
		return nil
	}
	var m velero.ClassMapping
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		return err
	}
	return s.velero().Unmap(ctx, m)
}

// adopt takes ordinal i's restored PV out of the staging namespace: Retain
// first, then the staging claim goes and the PV is Released for the reserve.
func (s veleroRestoreStep) adopt(ctx context.Context, i int) error {
	staging, claim := s.spec.stagingNamespace(), s.spec.Target.Ordinals[i].Claim
	pvName := s.value(keyNewPV(i))
	if pvName == "" {
		c, err := volume.WaitClaimBound(ctx, s.c.Kube, staging, claim, "", s.spec.Timeouts.Snapshot)
		if err != nil {
			return fmt.Errorf("restored claim %s/%s: %w", staging, claim, err)
		}
		pv, err := s.getPV(ctx, c.Spec.VolumeName)
		if err != nil {
			return err
		}
		// Checked before anything is recorded or changed: a restore that
		// did not map the class, or a volume too small for the claim, stops
		// the migration while Grafana still runs on its old volumes.
		if err := s.checkRestoredByVelero(ctx, i, pv, c); err != nil {
			return err
		}
		if pv.Spec.StorageClassName != s.spec.ToClass {
			return fmt.Errorf("Velero restored claim %s into class %q, not %q: the storage-class mapping was not applied (is Velero's change-storage-class restore item action enabled?)", claim, pv.Spec.StorageClassName, s.spec.ToClass)
		}
		shape := volume.ShapeFromSpec(s.spec.ns(), claim, s.spec.templateSpec())
		if err := volume.CheckFits(pv, shape); err != nil {
			return fmt.Errorf("restored volume %s: %w", pv.Name, err)
		}
		if err := s.j.SetValue(ctx, keyReclaim(pv.Name), string(pv.Spec.PersistentVolumeReclaimPolicy)); err != nil {
			return err
		}
		if err := s.j.SetValue(ctx, keyNewPV(i), pv.Name); err != nil {
			return err
		}
		pvName = pv.Name
	}
	if _, err := volume.SetReclaimPolicy(ctx, s.c.Kube, pvName, corev1.PersistentVolumeReclaimRetain, false); err != nil {
		return err
	}
	return s.dropStagingClaim(ctx, s.spec.stagingNamespace(), claim)
}

// checkRestoredByVelero refuses a PV that existed before rebind's Restore:
// the PV binder can bind a restored claim (one with a snapshot dataSource)
// to any Available PV of its class (kubernetes/kubernetes#101878), and that
// volume is someone else's. It is given back as it was found, and the run
// stops before anything else changed.
func (s veleroRestoreStep) checkRestoredByVelero(ctx context.Context, i int, pv *corev1.PersistentVolume, c *corev1.PersistentVolumeClaim) error {
	r, err := s.velero().GetRestore(ctx, s.spec.veleroRestoreName())
	if err != nil {
		return err
	}
	if !pv.CreationTimestamp.Before(&r.CreationTimestamp) {
		return nil
	}
	m := volume.NewMistakenBinding(pv, c, nil)
	raw, _ := json.Marshal(m)
	if err := s.j.PutValue(ctx, keyVeleroMistaken(i), string(raw)); err != nil {
		return err
	}
	gerr := m.GiveBack(ctx, s.c.Kube, s.spec.Timeouts.Wait)
	return errors.Join(fmt.Errorf("wrong volume bound: restored claim %s/%s was bound to the existing %s, which is older than Velero Restore %s (kubernetes/kubernetes#101878); rebind handed it back as it found it. Make it unavailable to class %s (reserve it for the claim it is meant for, or move it to another StorageClass), then `rebind rollback` and run again",
		c.Namespace, c.Name, m, r.Name, s.spec.ToClass), gerr)
}

// giveBackMistaken hands back a PV recorded by checkRestoredByVelero that a
// killed run could not hand back.
func (s veleroRestoreStep) giveBackMistaken(ctx context.Context, i int) error {
	raw := s.value(keyVeleroMistaken(i))
	if raw == "" {
		return nil
	}
	var m volume.MistakenBinding
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		return err
	}
	err := m.GiveBack(ctx, s.c.Kube, s.spec.Timeouts.Wait)
	var taken *volume.TakenOverError
	if errors.As(err, &taken) {
		s.warn(err.Error())
		return nil
	}
	return err
}

// cleanupStaging deletes the staging namespace once no claim is left in it
// (claims of other ordinals, or anything else, keep it for inspection).
func (s veleroRestoreStep) cleanupStaging(ctx context.Context) error {
	staging := s.spec.stagingNamespace()
	claims, err := s.c.Kube.CoreV1().PersistentVolumeClaims(staging).List(ctx, metav1.ListOptions{})
	if err != nil || len(claims.Items) > 0 {
		return err
	}
	err = s.c.Kube.CoreV1().Namespaces().Delete(ctx, staging, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting staging namespace %s: %w", staging, err)
	}
	return nil
}

func (s veleroRestoreStep) Check(ctx context.Context) error {
	for i, o := range s.spec.Target.Ordinals {
		pv := s.value(keyNewPV(i))
		if pv == "" {
			return fmt.Errorf("no restored PersistentVolume recorded for ordinal %d", i)
		}
		if err := s.requireRetain(ctx, pv); err != nil {
			return err
		}
		if _, err := s.c.Kube.CoreV1().PersistentVolumeClaims(s.spec.stagingNamespace()).Get(ctx, o.Claim, metav1.GetOptions{}); err == nil {
			return fmt.Errorf("staging claim %s/%s still exists", s.spec.stagingNamespace(), o.Claim)
		}
	}
	return nil
}

// Undo drops what the restore left in the staging namespace and puts the
// class mapping back; restored PVs stay (Retain) and are reported.
func (s veleroRestoreStep) Undo(ctx context.Context) error {
	// First the Restore: one still queued is deleted so it never runs; one
	// Velero is running stops the rollback (the mapping must stay for it,
	// and what it restores is not known yet).
	if err := s.velero().SettleRestore(ctx, s.spec.veleroRestoreName()); err != nil {
		return fmt.Errorf("%w; run the rollback again once it has ended", err)
	}
	if err := s.unmap(ctx); err != nil {
		return err
	}
	for i, o := range s.spec.Target.Ordinals {
		if err := s.giveBackMistaken(ctx, i); err != nil {
			return err
		}
		if pv := s.value(keyNewPV(i)); pv != "" {
			if _, err := volume.SetReclaimPolicy(ctx, s.c.Kube, pv, corev1.PersistentVolumeReclaimRetain, false); err != nil && !apierrors.IsNotFound(errors.Unwrap(err)) {
				return err
			}
		}
		c, err := s.c.Kube.CoreV1().PersistentVolumeClaims(s.spec.stagingNamespace()).Get(ctx, o.Claim, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return err
		}
		if c.Spec.VolumeName != "" {
			// Not adopted yet: keep the data whatever the class says.
			if _, err := volume.SetReclaimPolicy(ctx, s.c.Kube, c.Spec.VolumeName, corev1.PersistentVolumeReclaimRetain, false); err != nil {
				return err
			}
		}
		if err := s.dropStagingClaim(ctx, s.spec.stagingNamespace(), o.Claim); err != nil {
			return err
		}
	}
	return s.cleanupStaging(ctx)
}

// ---------------------------------------------------------------- preflight

// VeleroPermissions are the rights the Velero paths need on top of
// Permissions(ns, strategy).
func VeleroPermissions(o Options) []preflight.Permission {
	useBackup, useRestore := o.Backup == BackupVelero, o.Strategy == VeleroRestore
	if !useBackup && !useRestore {
		return nil
	}
	vns := o.VeleroNamespace
	if vns == "" {
		vns = velero.DefaultNamespace
	}
	p := func(verb, group, res, ns string) preflight.Permission {
		return preflight.Permission{Verb: verb, Group: group, Resource: res, Namespace: ns}
	}
	perms := []preflight.Permission{p("list", "velero.io", "backupstoragelocations", vns), p("get", "velero.io", "backups", vns),
		// Is the node-agent (data mover) installed?
		p("get", "apps", "daemonsets", vns)}
	if useBackup {
		perms = append(perms, p("create", "velero.io", "backups", vns), p("list", "velero.io", "backups", vns), p("watch", "velero.io", "backups", vns))
	}
	if useRestore {
		perms = append(perms,
			p("create", "velero.io", "restores", vns), p("get", "velero.io", "restores", vns), p("list", "velero.io", "restores", vns), p("watch", "velero.io", "restores", vns),
			// Only an unstarted Restore of rebind's (no server picked it up,
			// or a rollback while it is queued), so it never runs later.
			p("delete", "velero.io", "restores", vns),
			p("get", "", "configmaps", vns), p("list", "", "configmaps", vns), p("create", "", "configmaps", vns), p("update", "", "configmaps", vns), p("delete", "", "configmaps", vns),
			// The staging namespace does not exist yet: cluster-wide rights.
			p("get", "", "persistentvolumeclaims", ""), p("list", "", "persistentvolumeclaims", ""), p("watch", "", "persistentvolumeclaims", ""),
			p("delete", "", "persistentvolumeclaims", ""), p("delete", "", "namespaces", ""))
	}
	return perms
}

// checkVelero finds Velero and validates the backup to restore, changing
// nothing. Problems go to r.
func (m *Migrate) checkVelero(ctx context.Context, o Options, spec *Spec, r *preflight.Report) error {
	spec.Backup, spec.VeleroNamespace, spec.FromBackup, spec.SnapshotMove = o.Backup, o.VeleroNamespace, o.FromBackup, o.SnapshotMoveData
	if spec.VeleroNamespace == "" {
		spec.VeleroNamespace = velero.DefaultNamespace
	}
	switch o.Backup {
	case "", BackupNone:
		spec.Backup = ""
	case BackupVelero:
	default:
		r.Add("--backup", fmt.Sprintf("unknown backup engine %q", o.Backup), "use none or velero")
	}
	if o.Strategy != VeleroRestore && o.FromBackup != "" {
		r.Add("--from-backup", "only applies to --strategy velero-restore", "drop it or use --strategy velero-restore")
	}
	if spec.Backup == "" && o.Strategy != VeleroRestore {
		return nil
	}
	v := velero.New(m.Clients, spec.VeleroNamespace, m.log())
	if _, err := v.Detect(ctx); err != nil {
		var nr *velero.NotReadyError
		if errors.As(err, &nr) {
			r.Add("Velero", nr.What, nr.Hint)
			return nil
		}
		return err
	}
	agent, err := v.NodeAgentRunning(ctx)
	if err != nil {
		return err
	}
	noAgent := fmt.Sprintf("Velero's node-agent, which namespace %s does not run (no DaemonSet %s)", spec.VeleroNamespace, velero.NodeAgentDaemonSet)
	installAgent := "install the node-agent (`velero install --use-node-agent`, or the Helm chart's deployNodeAgent: true)"
	switch {
	case o.SnapshotMoveData && spec.Backup == "":
		r.Add("--snapshot-move-data", "only applies to --backup velero", "drop it, or add --backup velero")
	case o.SnapshotMoveData && !agent:
		r.Add("--snapshot-move-data", "needs "+noAgent, installAgent+", or drop --snapshot-move-data to keep the volumes as CSI snapshots in the backup")
	}
	if o.Strategy != VeleroRestore {
		return nil
	}
	t := spec.Target
	if o.FromSnapshot != "" {
		r.Add("--from-snapshot", "applies to --strategy restore, not velero-restore", "pass the Velero backup with --from-backup")
	}
	if o.FromBackup == "" {
		r.Add("--strategy velero-restore", "needs the Velero Backup to restore from", "pass --from-backup NAME (see `velero backup get`)")
		return nil
	}
	ref := fmt.Sprintf("Velero Backup %s/%s", spec.VeleroNamespace, o.FromBackup)
	b, err := v.GetBackup(ctx, o.FromBackup)
	if apierrors.IsNotFound(errors.Unwrap(err)) {
		r.Add(ref, "not found", "list backups with `velero backup get -n "+spec.VeleroNamespace+"`")
		return nil
	}
	if err != nil {
		return err
	}
	if done, berr := velero.BackupOutcome(b); !done || berr != nil {
		r.Add(ref, fmt.Sprintf("is %s, not Completed: it may lack the volumes", b.Status.Phase), "restore from a Completed backup")
	}
	inc := b.Spec.IncludedNamespaces
	if (len(inc) > 0 && !slices.Contains(inc, "*") && !slices.Contains(inc, t.Namespace)) || slices.Contains(b.Spec.ExcludedNamespaces, t.Namespace) {
		r.Add(ref, fmt.Sprintf("does not include namespace %s (included: %v)", t.Namespace, inc), "pass a backup of "+t.Namespace)
	}
	if res := b.Spec.IncludedResources; len(res) > 0 && !slices.Contains(res, "*") && !slices.Contains(res, "persistentvolumeclaims") {
		r.Add(ref, fmt.Sprintf("includes only %v: no claims to restore", res), "pass a backup that includes persistentvolumeclaims")
	}
	moved, fsb := ptr.Deref(b.Spec.SnapshotMoveData, false), ptr.Deref(b.Spec.DefaultVolumesToFsBackup, false)
	switch {
	case moved || fsb:
		how := "with snapshotMoveData (Velero's data mover)"
		if !moved {
			how = "with file-system backup"
		}
		if !agent {
			r.Add(ref, fmt.Sprintf("was taken %s: restoring its volume data needs %s", how, noAgent), installAgent+" and re-run")
		}
	case ptr.Deref(b.Spec.SnapshotVolumes, true):
		// Without data movement the volumes stay CSI snapshots on the
		// storage system, and only their own driver can restore them:
		// Velero would create claims no provisioner can fill, Pending for
		// the whole timeout.
		if err := m.checkSnapshotDriver(ctx, spec, ref, r); err != nil {
			return err
		}
	case b.Status.Phase == velerov1.BackupPhaseCompleted:
		r.Add(ref, "was taken with snapshotVolumes=false and no file-system backup: it holds no volume data", "pass a backup that includes volume data")
	}
	for _, ord := range t.Ordinals {
		if ord.PVC == nil && o.BaselineFile == "" && !o.SkipVerify {
			r.Add("claim "+t.Namespace+"/"+ord.Claim, "does not exist, so there is nothing to take a baseline from", "pass --baseline FILE (an earlier `rebind inventory`), or --skip-verify to accept the backup as is")
			break
		}
	}
	return nil
}

// checkSnapshotDriver refuses a restore of CSI snapshots into a class of
// another driver. The snapshots' driver is the one of the volumes backed
// up: the target's PVs, or its class's provisioner once they are gone.
func (m *Migrate) checkSnapshotDriver(ctx context.Context, spec *Spec, ref string, r *preflight.Report) error {
	if spec.ToClass == "" {
		return nil // reported by the class check
	}
	to, err := m.Clients.Kube.StorageV1().StorageClasses().Get(ctx, spec.ToClass, metav1.GetOptions{})
	if err != nil {
		return nil // reported by the class check
	}
	driver := ""
	for _, ord := range spec.Target.Ordinals {
		if ord.Driver != "" {
			driver = ord.Driver
			break
		}
	}
	if driver == "" {
		if from := sourceClass(spec.Target); from != "" {
			sc, err := m.Clients.Kube.StorageV1().StorageClasses().Get(ctx, from, metav1.GetOptions{})
			if err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("reading StorageClass %s: %w", from, err)
			}
			if err == nil {
				driver = sc.Provisioner
			}
		}
	}
	if driver == "" || driver == to.Provisioner {
		return nil
	}
	r.Add(ref, fmt.Sprintf("holds the volumes as CSI snapshots of driver %s (taken without --snapshot-move-data): only that driver can restore them, and StorageClass %s is provisioned by %s", driver, spec.ToClass, to.Provisioner),
		fmt.Sprintf("restore into a class of driver %s, or pass a backup that moved the data (`velero backup create --snapshot-move-data`, or rebind's --backup velero --snapshot-move-data; both need Velero's node-agent)", driver))
	return nil
}

// veleroNotes are the report lines about Velero objects of the run.
func veleroNotes(e *env) []string {
	if e.j == nil {
		return nil
	}
	var notes []string
	if b := e.value(keyVeleroBackup); b != "" {
		notes = append(notes, fmt.Sprintf("Velero Backup %s/%s (Completed) was taken before the first change: `velero restore create --from-backup %s -n %s` brings namespace %s back as it was",
			e.spec.VeleroNamespace, b, b, e.spec.VeleroNamespace, e.spec.ns()))
	}
	if e.spec.Strategy == VeleroRestore {
		notes = append(notes, fmt.Sprintf("data restored by Velero Restore %s/%s from Backup %s", e.spec.VeleroNamespace, e.spec.veleroRestoreName(), e.spec.FromBackup))
	}
	return notes
}

func keyVeleroMistaken(ord int) string { return fmt.Sprintf("velero/mistaken/%d", ord) }
