package migrate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rebind-dev/rebind/pkg/app"
	"github.com/rebind-dev/rebind/pkg/discovery"
	"github.com/rebind-dev/rebind/pkg/journal"
	"github.com/rebind-dev/rebind/pkg/kube"
	"github.com/rebind-dev/rebind/pkg/plan"
	"github.com/rebind-dev/rebind/pkg/preflight"
	"github.com/rebind-dev/rebind/pkg/report"
)

// Mode says how far a run goes.
type Mode int

const (
	Apply Mode = iota
	// PlanOnly prints the steps (client-side dry run).
	PlanOnly
	// ServerDryRun also sends every write with dryRun=All.
	ServerDryRun
)

// Migrate is the migrate operation (and its rollback).
type Migrate struct {
	Clients *kube.Clients
	Checker app.Checker
	Out     io.Writer
	Log     *zap.Logger
	// AfterStep lets tests kill a run right after a step.
	AfterStep func(ctx context.Context, id string) error
	// LeaseDuration defaults to journal.DefaultLeaseDuration: a run killed
	// on another machine blocks re-runs that long after its last renewal.
	LeaseDuration time.Duration
	// Events, when set, records an Event on the workload for each phase
	// of a run (events.go).
	Events EventRecorder
}

// FailedError is a run that stopped half-way: the journal holds its
// progress and the same command resumes it.
type FailedError struct {
	Namespace string
	// Workload is the StatefulSet or Deployment; Kind says which.
	Workload, Kind string
	Err            error
}

func (e *FailedError) Error() string {
	return fmt.Sprintf("%v\nnothing is lost: the original volumes are kept with reclaim policy Retain and progress is in ConfigMap %s/%s.\nfix the cause and re-run the same command to resume, or return to the original volumes with `%s`",
		e.Err, e.Namespace, journal.Name(e.Workload), rollbackCommand(e.Namespace, e.Kind, e.Workload))
}

// rollbackCommand is the command line that rolls a target back.
func rollbackCommand(ns, kind, name string) string {
	flag := "--statefulset"
	if kind == discovery.KindDeployment {
		flag = "--deployment"
	}
	return fmt.Sprintf("rebind rollback -n %s %s %s", ns, flag, name)
}
func (e *FailedError) Unwrap() error { return e.Err }

// RolledBackError is a migration whose verification failed and that was
// rolled back to the original volumes.
type RolledBackError struct{ Err error }

func (e *RolledBackError) Error() string {
	return fmt.Sprintf("%v\nrolled back: the workload runs on its original volumes again", e.Err)
}
func (e *RolledBackError) Unwrap() error { return e.Err }

func (m *Migrate) out() io.Writer {
	if m.Out == nil {
		return io.Discard
	}
	return m.Out
}

func (m *Migrate) log() *zap.Logger {
	if m.Log == nil {
		return zap.NewNop()
	}
	return m.Log
}

func newRunID() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Run migrates (or plans, with mode != Apply). It returns the report even
// on failure.
func (m *Migrate) Run(ctx context.Context, o Options, mode Mode) (*report.Report, error) {
	start := time.Now()
	rep := &report.Report{Operation: "migrate", Strategy: string(o.Strategy), StartedAt: start}
	finish := func(outcome string, err error) (*report.Report, error) {
		rep.Outcome = outcome
		rep.FinishedAt = time.Now()
		rep.Duration = report.Duration(rep.FinishedAt.Sub(start))
		if err != nil {
			rep.Error = err.Error()
		}
		return rep, err
	}

	ns := o.Target.Namespace
	// Access first: even looking for a journal needs rights, and a missing
	// right is a preflight finding, not a crash half-way.
	var access preflight.Report
	perms := append(Permissions(ns, o.Strategy), VeleroPermissions(o)...)
	perms = append(perms, HelmPermissions(ns, o)...)
	perms = append(perms, SwitchPermissions(ns, o)...)
	if o.GrafanaPodProxy {
		perms = append(perms, PodProxyPermissions(ns)...)
	}
	if err := preflight.CheckAccess(ctx, m.Clients.Kube, perms, &access); err != nil {
		return finish(report.Failed, err)
	}
	if err := access.Err(); err != nil {
		return finish(report.Failed, err)
	}
	existing, err := m.existingJournal(ctx, o)
	if err != nil {
		return finish(report.Failed, err)
	}
	if existing == nil && !o.Again && mode == Apply {
		done, err := m.recentlyCompleted(ctx, o)
		if err != nil {
			return finish(report.Failed, err)
		}
		if done != nil {
			if err := m.stillWhereItEnded(ctx, done); err != nil {
				return finish(report.Failed, err)
			}
			rec := done.Record()
			rep.RunID = rec.RunID
			checked := "verified then"
			if prev, err := decodePublicSpec(done); err == nil && prev.SkipVerify {
				checked = "NOT verified (it ran with --skip-verify)"
			}
			rep.Notes = append(rep.Notes, fmt.Sprintf("the same migration completed %s ago as run %s (journal ConfigMap %s/%s), %s: nothing to do; pass --again to migrate a second time",
				time.Since(rec.UpdatedAt).Round(time.Second), rec.RunID, ns, done.ConfigMapName(), checked))
			fmt.Fprintln(m.out(), rep.Notes[len(rep.Notes)-1])
			return finish(report.Succeeded, nil)
		}
	}

	var spec *Spec
	var j *journal.Journal
	if existing != nil {
		spec, err = decodeSpec(existing)
		if err != nil {
			return finish(report.Failed, err)
		}
		if rec := existing.Record(); rec.Phase == journal.RollingBack {
			// Going forwards from a half-undone plan would mix two runs.
			return finish(report.Failed, fmt.Errorf("a rollback of run %s is unfinished (ConfigMap %s/%s): finish it with `%s`, then migrate again",
				rec.RunID, ns, existing.ConfigMapName(), rollbackCommand(ns, spec.Target.KindName(), spec.Target.Name())))
		}
		if err := sameRequest(spec, o); err != nil {
			return finish(report.Failed, err)
		}
		j = existing
		// The Velero waits are the one limit a resume is told to change:
		// a Restore still queued when the last run stopped is waited for
		// with the limit of this command (--velero-restore-timeout).
		if o.Timeouts.VeleroRestore > 0 {
			spec.Timeouts.VeleroRestore = o.Timeouts.VeleroRestore
		}
		if o.Timeouts.VeleroPickup > 0 {
			spec.Timeouts.VeleroPickup = o.Timeouts.VeleroPickup
		}
		if err := m.loadInstall(spec, o); err != nil {
			return finish(report.Failed, err)
		}
		fmt.Fprintf(m.out(), "Resuming %s run %s of %s/%s (journal ConfigMap %s/%s)\n", spec.Strategy, spec.RunID, ns, spec.Target.Name(), ns, j.ConfigMapName())
	} else if install, err := m.wantsInstall(ctx, o); err != nil {
		return finish(report.Failed, err)
	} else if install {
		// --from-pv with the workload gone: installed onto the volume
		// (frompv_install.go).
		if spec, err = m.resolveInstall(ctx, o); err != nil {
			return finish(report.Failed, err)
		}
		spec.RunID = newRunID()
		m.printInstallTarget(spec)
	} else {
		t, err := discovery.Discover(ctx, m.Clients, o.Target)
		if err != nil {
			return finish(report.Failed, err)
		}
		if t.IsDeployment() {
			fmt.Fprintf(m.out(), "Target: Deployment %s/%s, %d replica(s), claim %s\n", t.Namespace, t.Name(), t.Replicas(), t.Ordinals[0].Claim)
		} else {
			fmt.Fprintf(m.out(), "Target: StatefulSet %s/%s, %d replica(s), claim template %q\n", t.Namespace, t.Name(), t.Replicas(), t.ClaimTemplate)
		}
		spec, err = m.resolve(ctx, o, t)
		if err != nil {
			return finish(report.Failed, err)
		}
		spec.RunID = newRunID()
	}
	rep.RunID, rep.Target, rep.Strategy = spec.RunID, ns+"/"+spec.Target.Name(), string(spec.Strategy)
	rep.VolumesBefore = volumesOf(spec.Target)
	// The journal's Secret is named after the workload, known only now;
	// still before any change.
	if err := preflight.CheckAccess(ctx, m.Clients.Kube, JournalPermissions(ns, spec.Target.Name()), &access); err != nil {
		return finish(report.Failed, err)
	}
	if err := access.Err(); err != nil {
		return finish(report.Failed, err)
	}

	e := &env{c: m.Clients, spec: spec, checker: m.Checker, log: m.log().With(zap.String("run", spec.RunID)), baseline: o.BaselineFile, readDB: o.ReadDB, out: m.out()}
	if mode != Apply {
		p := buildPlan(e)
		plan.Print(m.out(), p, nil)
		if mode == ServerDryRun {
			fmt.Fprintln(m.out(), "Server-side dry run (nothing is changed):")
			if err := plan.ServerDryRun(ctx, m.out(), p); err != nil {
				return finish(report.Failed, err)
			}
		}
		for _, s := range p.Steps {
			rep.Steps = append(rep.Steps, plan.Result{ID: s.ID(), Describe: s.Describe(), Status: "planned"})
		}
		rep.HelmValues, rep.Notes = helmValues(spec, e)
		rep.Warnings = redeployWarnings(spec)
		return finish(report.Planned, nil)
	}

	lease, err := m.acquireLease(ctx, ns, spec.Target.Name(), holderID(o, spec))
	if err != nil {
		return finish(report.Failed, err)
	}
	defer func() { _ = lease.Release(context.WithoutCancel(ctx)) }()
	// From here every change happens under the lease: losing it cancels
	// the run's waits and calls, and the runner starts no further step.
	outer := ctx
	ctx, stopGuard := lease.Guard(ctx)
	defer stopGuard()

	if j == nil {
		public, private, err := spec.forJournal()
		if err != nil {
			return finish(report.Failed, err)
		}
		j, err = journal.Create(ctx, m.Clients.Kube, ns, spec.Target.Name(), spec.RunID, "migrate", public, private)
		if err != nil {
			return finish(report.Failed, err)
		}
	} else if err := j.SetPhase(ctx, journal.Running, nil); err != nil {
		return finish(report.Failed, err)
	}
	e.j = j
	p := buildPlan(e)
	runner := &plan.Runner{Store: j, Out: m.out(), Log: e.log, AfterStep: m.AfterStep, OnStep: m.onStep(spec), Guard: lease.Err}
	fmt.Fprintf(m.out(), "Migrating %s/%s with strategy %s (run %s, %d steps)\n", ns, spec.Target.Name(), spec.Strategy, spec.RunID, len(p.Steps))
	if existing != nil {
		m.event(spec, corev1.EventTypeNormal, ReasonResumed, "run %s: resuming the %s migration of %s", spec.RunID, spec.Strategy, spec.Target.Name())
	} else {
		m.event(spec, corev1.EventTypeNormal, ReasonStarted, "run %s: %s migration of %s started (%d steps; journal ConfigMap %s)", spec.RunID, spec.Strategy, spec.Target.Name(), len(p.Steps), j.ConfigMapName())
	}
	results, runErr := runner.Run(ctx, p)
	rep.Steps = results
	defer func() { rep.Warnings = append(e.warnings, rep.Warnings...) }()
	rep.Verification = e.verdicts
	rep.Downtime = report.Duration(downtime(j))
	rep.Leftovers = leftovers(ctx, e)
	rep.VeleroBackup = e.value(keyVeleroBackup)

	if lerr := lease.Err(); lerr != nil {
		// No write after the lease is lost, not even the phase: the journal
		// says Running with the progress made, which is what a resume needs.
		rep.VolumesAfter = currentVolumes(context.WithoutCancel(outer), m.Clients, spec)
		return finish(report.Failed, &FailedError{Namespace: ns, Workload: spec.Target.Name(), Kind: spec.Target.KindName(), Err: lerr})
	}
	if runErr != nil {
		var verr *VerificationError
		if errors.As(runErr, &verr) {
			m.eventOnCurrent(ctx, spec, corev1.EventTypeWarning, ReasonVerificationFailed, "run %s: verification failed: %s", spec.RunID, verdictSummary(verr.Verdicts))
		}
		if errors.As(runErr, &verr) && !o.NoRollback {
			fmt.Fprintln(m.out(), "Verification failed: rolling back to the original volumes")
			wctx := context.WithoutCancel(ctx)
			_ = j.SetPhase(wctx, journal.RollingBack, runErr)
			undo, uerr := runner.Undo(wctx, p)
			rep.Steps = append(rep.Steps, undo...)
			if uerr != nil {
				if lerr := lease.Err(); lerr != nil {
					// The journal says RollingBack: `rebind rollback` finishes it.
					return finish(report.Failed, fmt.Errorf("%v; the automatic rollback stopped: %w; run `%s` to finish it", runErr, lerr, rollbackCommand(ns, spec.Target.KindName(), spec.Target.Name())))
				}
				_ = j.SetPhase(wctx, journal.RollingBack, uerr)
				return finish(report.Failed, fmt.Errorf("%v; the automatic rollback also failed: %w; fix the cause and run `%s`", runErr, uerr, rollbackCommand(ns, spec.Target.KindName(), spec.Target.Name())))
			}
			_ = j.SetPhase(wctx, journal.RolledBack, runErr)
			rep.VolumesAfter = currentVolumes(wctx, m.Clients, spec)
			m.eventOnCurrent(wctx, spec, corev1.EventTypeWarning, ReasonRolledBack, "run %s: rolled back to the original volumes after the failed verification", spec.RunID)
			return finish(report.RolledBack, &RolledBackError{Err: runErr})
		}
		_ = j.SetPhase(context.WithoutCancel(ctx), journal.Failed, runErr)
		m.eventOnCurrent(ctx, spec, corev1.EventTypeWarning, ReasonFailed, "run %s: stopped half-way; run the same command again to resume, or rebind rollback", spec.RunID)
		if ctx.Err() != nil {
			return finish(report.Failed, fmt.Errorf("interrupted: %w", &FailedError{Namespace: ns, Workload: spec.Target.Name(), Kind: spec.Target.KindName(), Err: runErr}))
		}
		return finish(report.Failed, &FailedError{Namespace: ns, Workload: spec.Target.Name(), Kind: spec.Target.KindName(), Err: runErr})
	}
	if err := j.SetPhase(ctx, journal.Completed, nil); err != nil {
		return finish(report.Failed, err)
	}
	if len(rep.Verification) == 0 {
		if raw := e.value(keyVerified); raw != "" {
			_ = json.Unmarshal([]byte(raw), &rep.Verification)
		}
	}
	switch {
	case len(rep.Verification) > 0:
		m.eventOnCurrent(ctx, spec, corev1.EventTypeNormal, ReasonVerified, "run %s: migration finished, every dashboard verified (%s); outage %s",
			spec.RunID, verdictSummary(rep.Verification), time.Duration(rep.Downtime).Round(time.Millisecond))
	case spec.SkipVerify:
		m.eventOnCurrent(ctx, spec, corev1.EventTypeWarning, ReasonVerified, "run %s: migration finished WITHOUT verification (--skip-verify); outage %s",
			spec.RunID, time.Duration(rep.Downtime).Round(time.Millisecond))
	}
	rep.VolumesAfter = currentVolumes(ctx, m.Clients, spec)
	rep.HelmValues, rep.Notes = helmValues(spec, e)
	rep.Notes = append(rep.Notes, veleroNotes(e)...)
	rep.Warnings = append(rep.Warnings, redeployWarnings(spec)...)
	if spec.Install != nil && spec.Install.Unverified != "" {
		return finish(report.Unverified, nil)
	}
	return finish(report.Succeeded, nil)
}

// Rollback returns the StatefulSet to its original volumes, after a
// completed migration or from any point of an unfinished one.
func (m *Migrate) Rollback(ctx context.Context, ns, sts string) (*report.Report, error) {
	start := time.Now()
	rep := &report.Report{Operation: "rollback", Target: ns + "/" + sts, StartedAt: start}
	finish := func(outcome string, err error) (*report.Report, error) {
		rep.Outcome, rep.FinishedAt = outcome, time.Now()
		rep.Duration = report.Duration(rep.FinishedAt.Sub(start))
		if err != nil {
			rep.Error = err.Error()
		}
		return rep, err
	}
	j, err := journal.Load(ctx, m.Clients.Kube, ns, sts)
	if err != nil {
		return finish(report.Failed, err)
	}
	if j == nil {
		return finish(report.Failed, fmt.Errorf("no rebind journal for %s/%s (ConfigMap %s): nothing to roll back", ns, sts, journal.Name(sts)))
	}
	if j.Record().Phase == journal.RolledBack {
		fmt.Fprintf(m.out(), "Run %s of %s/%s is already rolled back\n", j.Record().RunID, ns, sts)
		return finish(report.RolledBack, nil)
	}
	spec, err := decodeSpec(j)
	if err != nil {
		return finish(report.Failed, err)
	}
	rep.RunID, rep.Strategy = spec.RunID, string(spec.Strategy)
	lease, err := m.acquireLease(ctx, ns, sts, "rollback-"+spec.RunID+"-"+hostname())
	if err != nil {
		return finish(report.Failed, err)
	}
	defer func() { _ = lease.Release(context.WithoutCancel(ctx)) }()
	ctx, stopGuard := lease.Guard(ctx)
	defer stopGuard()
	e := &env{c: m.Clients, j: j, spec: spec, checker: m.Checker, log: m.log().With(zap.String("run", spec.RunID)), out: m.out()}
	p := buildPlan(e)
	if err := j.SetPhase(ctx, journal.RollingBack, nil); err != nil {
		return finish(report.Failed, err)
	}
	fmt.Fprintf(m.out(), "Rolling back run %s of %s/%s to the original volumes\n", spec.RunID, ns, sts)
	runner := &plan.Runner{Store: j, Out: m.out(), Log: e.log, Guard: lease.Err}
	res, err := runner.Undo(ctx, p)
	rep.Steps = res
	if lerr := lease.Err(); lerr != nil {
		return finish(report.Failed, fmt.Errorf("%w\nrun `rebind rollback` again: it continues where it stopped", lerr))
	}
	if err != nil {
		_ = j.SetPhase(context.WithoutCancel(ctx), journal.RollingBack, err)
		return finish(report.Failed, fmt.Errorf("%w\nfix the cause and run `rebind rollback` again: it continues where it stopped", err))
	}
	if err := j.SetPhase(ctx, journal.RolledBack, nil); err != nil {
		return finish(report.Failed, err)
	}
	m.eventOnCurrent(ctx, spec, corev1.EventTypeNormal, ReasonRolledBack, "run %s: rolled back to the original volumes (rebind rollback)", spec.RunID)
	rep.VolumesBefore = volumesOf(spec.Target)
	rep.VolumesAfter = currentVolumes(ctx, m.Clients, spec)
	rep.Leftovers = leftovers(ctx, e)
	rep.Warnings = e.warnings
	return finish(report.RolledBack, nil)
}

// acquireLease takes the target's Lease, and says so when it took it over
// from a killed run on this machine rather than waiting for it to expire.
func (m *Migrate) acquireLease(ctx context.Context, ns, sts, holder string) (*journal.Lease, error) {
	lease, err := journal.TakeLease(ctx, m.Clients.Kube, journal.LeaseOptions{Namespace: ns, Name: journal.LeaseName(sts), Holder: holder, Duration: m.leaseDuration(),
		Waiting: func(other string, upTo time.Duration) {
			fmt.Fprintf(m.out(), "Lease %s/%s is held by %s: watching up to %s whether it still renews it\n", ns, journal.LeaseName(sts), other, upTo)
		}})
	if err == nil && lease.TookOverFrom != "" {
		fmt.Fprintf(m.out(), "Lease %s/%s was held by %s: taking it over\n", ns, journal.LeaseName(sts), lease.TookOverFrom)
		m.log().Warn("took over the lease of a dead run", zap.String("lease", ns+"/"+journal.LeaseName(sts)), zap.String("from", lease.TookOverFrom))
	}
	return lease, err
}

func (m *Migrate) leaseDuration() time.Duration {
	if m.LeaseDuration > 0 {
		return m.LeaseDuration
	}
	return journal.DefaultLeaseDuration
}

// existingJournal returns an unfinished journal of the target, if any. The
// StatefulSet may be gone mid-migration, so the name comes from the
// options, or from the journal found by release label.
func (m *Migrate) existingJournal(ctx context.Context, o Options) (*journal.Journal, error) {
	name := o.Target.StatefulSet
	if name == "" {
		name = o.Target.Deployment
	}
	if name == "" {
		list, err := m.Clients.Kube.CoreV1().ConfigMaps(o.Target.Namespace).List(ctx, metav1.ListOptions{LabelSelector: journal.LabelManagedBy + "=" + journal.ManagedBy})
		if err != nil {
			return nil, fmt.Errorf("looking for a rebind journal in %s: %w", o.Target.Namespace, err)
		}
		for _, cm := range list.Items {
			sts := cm.Labels[journal.LabelTarget]
			j, err := journal.Load(ctx, m.Clients.Kube, o.Target.Namespace, sts)
			if err != nil || j == nil {
				continue
			}
			// The ConfigMap's copy names the release; the Secret is read
			// (and any problem with it reported) once the journal is taken.
			spec, err := decodePublicSpec(j)
			if err == nil && spec.Target.Release == o.Target.Release && unfinished(j) {
				return j, nil
			}
		}
		return nil, nil
	}
	j, err := journal.Load(ctx, m.Clients.Kube, o.Target.Namespace, name)
	if err != nil || j == nil || !unfinished(j) {
		return nil, err
	}
	return j, nil
}

func unfinished(j *journal.Journal) bool { return j.Record().Phase.Unfinished() }

// completedWindow is how long an identical re-run counts as the re-run of a
// run that was killed at its very end (journal Completed, exit code lost).
const completedWindow = 15 * time.Minute

// recentlyCompleted finds the journal of the same migration completed
// within completedWindow: re-running the command of a run killed after it
// recorded its end must not migrate a second time (a second snapshot and
// volume for a restore).
func (m *Migrate) recentlyCompleted(ctx context.Context, o Options) (*journal.Journal, error) {
	name := o.Target.StatefulSet
	if name == "" {
		name = o.Target.Deployment
	}
	var candidates []string
	if name != "" {
		candidates = []string{name}
	} else {
		list, err := m.Clients.Kube.CoreV1().ConfigMaps(o.Target.Namespace).List(ctx, metav1.ListOptions{LabelSelector: journal.LabelManagedBy + "=" + journal.ManagedBy})
		if err != nil {
			return nil, fmt.Errorf("looking for a rebind journal in %s: %w", o.Target.Namespace, err)
		}
		for _, cm := range list.Items {
			candidates = append(candidates, cm.Labels[journal.LabelTarget])
		}
	}
	for _, target := range candidates {
		j, err := journal.Load(ctx, m.Clients.Kube, o.Target.Namespace, target)
		if err != nil || j == nil {
			continue
		}
		rec := j.Record()
		if rec.Operation != "migrate" || rec.Phase != journal.Completed || time.Since(rec.UpdatedAt) > completedWindow {
			continue
		}
		spec, err := decodePublicSpec(j)
		if err != nil || (o.Target.Release != "" && spec.Target.Release != o.Target.Release) {
			continue
		}
		if sameRequest(spec, o) == nil {
			return j, nil
		}
	}
	return nil, nil
}

// stillWhereItEnded checks that every claim of a completed run is still
// bound to the volume that run left it on. The journal alone would say
// "nothing to do" to someone whose cluster was changed by hand since (a
// claim swapped back, a claim deleted); re-running from that state is a new
// migration, which only --again asks for.
func (m *Migrate) stillWhereItEnded(ctx context.Context, done *journal.Journal) error {
	spec, err := decodePublicSpec(done)
	if err != nil {
		return err
	}
	e := &env{c: m.Clients, j: done, spec: spec}
	rec := done.Record()
	var moved []string
	for i, o := range spec.Target.Ordinals {
		want, err := e.pvFor(i)
		if err != nil {
			moved = append(moved, fmt.Sprintf("ordinal %d: %v", i, err))
			continue
		}
		claim := o.Claim
		if spec.ToKind != "" {
			claim = spec.newClaim(i) // the switch ended on the new kind's claim
		}
		c, err := m.Clients.Kube.CoreV1().PersistentVolumeClaims(spec.ns()).Get(ctx, claim, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			moved = append(moved, fmt.Sprintf("claim %s/%s no longer exists (run %s left it on PersistentVolume %s)", spec.ns(), claim, rec.RunID, want))
		case err != nil:
			return fmt.Errorf("reading claim %s/%s to check run %s's end state: %w", spec.ns(), claim, rec.RunID, err)
		case c.Spec.VolumeName != want:
			moved = append(moved, fmt.Sprintf("claim %s/%s is on PersistentVolume %q, run %s left it on %s", spec.ns(), claim, c.Spec.VolumeName, rec.RunID, want))
		case c.Status.Phase != corev1.ClaimBound:
			moved = append(moved, fmt.Sprintf("claim %s/%s is %s, not bound to PersistentVolume %s as run %s left it (a new claim of that name?)", spec.ns(), claim, c.Status.Phase, want, rec.RunID))
		}
	}
	if len(moved) == 0 {
		return nil
	}
	return fmt.Errorf("the same migration completed %s ago as run %s (journal ConfigMap %s/%s), but the cluster changed since: %s. rebind changed nothing: find out who moved it; pass --again to migrate from the state the cluster is in now",
		time.Since(rec.UpdatedAt).Round(time.Second), rec.RunID, done.Namespace(), done.ConfigMapName(), strings.Join(moved, "; "))
}

// decodeSpec returns the spec a journal recorded, with the target as it
// was discovered: from the journal's Secret (format 2: the ConfigMap's copy
// has no literal env values), or from the ConfigMap of a journal written
// before rebind kept a Secret (format 1).
func decodeSpec(j *journal.Journal) (*Spec, error) {
	s, err := decodePublicSpec(j)
	if err != nil {
		return nil, err
	}
	if j.SecretName() == "" {
		return s, nil
	}
	raw, err := j.Private(privateTarget)
	if err != nil {
		return nil, fmt.Errorf("%w: it holds the manifest that a resumed run or a rollback recreates %s %s/%s from (with its literal env values); restore that Secret from a backup, or recreate the workload yourself from your Helm release before deleting ConfigMap %s/%s",
			err, s.Target.KindName(), s.ns(), s.name(), j.Namespace(), j.ConfigMapName())
	}
	var t discovery.Target
	if err := json.Unmarshal(raw, &t); err != nil {
		return nil, fmt.Errorf("journal Secret %s/%s holds no readable target: %w", j.Namespace(), j.SecretName(), err)
	}
	if (t.StatefulSet == nil && t.Deployment == nil) || t.Namespace != s.Target.Namespace || t.KindName() != s.Target.KindName() || t.Name() != s.Target.Name() || t.Object().GetUID() != s.Target.Object().GetUID() {
		return nil, fmt.Errorf("journal Secret %s/%s does not hold the target of ConfigMap %s/%s (%s %s/%s)", j.Namespace(), j.SecretName(), j.Namespace(), j.ConfigMapName(), s.Target.KindName(), s.ns(), s.name())
	}
	s.Target = &t
	return s, nil
}

// decodePublicSpec is the spec as the ConfigMap holds it: in format 2
// without literal env values, so nothing may be recreated from it.
func decodePublicSpec(j *journal.Journal) (*Spec, error) {
	rec := j.Record()
	var s Spec
	if err := json.Unmarshal(rec.Spec, &s); err != nil {
		return nil, fmt.Errorf("journal %s/%s holds no readable plan: %w", j.Namespace(), j.ConfigMapName(), err)
	}
	if s.Target == nil || (s.Target.StatefulSet == nil && s.Target.Deployment == nil) {
		return nil, fmt.Errorf("journal %s/%s holds no target", j.Namespace(), j.ConfigMapName())
	}
	return &s, nil
}

// sameRequest refuses to resume a run with different options: the plan
// recorded is the one that must finish (or be rolled back). Options left
// out of the command (empty) keep the recorded value where the recorded
// value is a default the user may not have typed.
func sameRequest(s *Spec, o Options) error {
	var diffs []string
	differ := func(flag, asked, recorded string) {
		if recorded == "" {
			recorded = "none"
		}
		if asked == "" {
			asked = "none"
		}
		diffs = append(diffs, fmt.Sprintf("%s %s (recorded %s)", flag, asked, recorded))
	}
	if o.Strategy != "" && o.Strategy != s.Strategy {
		differ("--strategy", string(o.Strategy), string(s.Strategy))
	}
	if o.ToClass != "" && o.ToClass != s.ToClass {
		differ("--to-storage-class", o.ToClass, s.ToClass)
	}
	if o.Size != "" {
		q, err := resource.ParseQuantity(o.Size)
		if rec, rerr := resource.ParseQuantity(s.Size); err != nil || rerr != nil || q.Cmp(rec) != 0 {
			differ("--size", o.Size, s.Size)
		}
	}
	if asked, recorded := expandAll(o.FromSnapshot, s.Target.Ordinals), existing(s.ExistingSnap, s.Snapshots); !slices.Equal(asked, recorded) {
		differ("--from-snapshot", strings.Join(asked, ","), strings.Join(recorded, ","))
	}
	if asked := expandAll(o.FromPV, s.Target.Ordinals); !slices.Equal(asked, s.FromPVs) {
		differ("--from-pv", strings.Join(asked, ","), strings.Join(s.FromPVs, ","))
	}
	if o.FromBackup != s.FromBackup {
		differ("--from-backup", o.FromBackup, s.FromBackup)
	}
	if o.Redeploy != "" && o.Redeploy != s.Redeploy && !(o.Redeploy == RedeployDirect && s.Redeploy == "") {
		differ("--redeploy", o.Redeploy, s.Redeploy)
	}
	if normalizeKind(o.ToKind) != s.ToKind {
		differ("--to-kind", o.ToKind, s.ToKind)
	}
	if o.Quiesce != s.Quiesce {
		differ("--quiesce", fmt.Sprint(o.Quiesce), fmt.Sprint(s.Quiesce))
	}
	diffs = append(diffs, sameInstall(s, o)...)
	if len(diffs) > 0 {
		return &preflight.Error{Problems: []preflight.Problem{{
			Object:  fmt.Sprintf("ConfigMap %s/%s", s.ns(), journal.Name(s.name())),
			Message: fmt.Sprintf("an unfinished migration of %s/%s (run %s) was started with other options: %s", s.ns(), s.name(), s.RunID, strings.Join(diffs, ", ")),
			Fix:     "re-run it with the recorded options to finish it, or `" + rollbackCommand(s.ns(), s.Target.KindName(), s.name()) + "` first and then migrate with the new ones",
		}}}
	}
	return nil
}

// expandAll is pattern expanded for each ordinal (nil for no pattern).
func expandAll(pattern string, ordinals []discovery.Ordinal) []string {
	if pattern == "" {
		return nil
	}
	var out []string
	for _, o := range ordinals {
		out = append(out, expandOrdinal(pattern, o.Index))
	}
	return out
}

// existing is the user's snapshots a spec restores, nil when it takes its own.
func existing(user bool, names []string) []string {
	if !user {
		return nil
	}
	return names
}

func holderID(o Options, s *Spec) string {
	if o.HolderID != "" {
		return o.HolderID
	}
	return fmt.Sprintf("%s-%s-%d", s.RunID, hostname(), os.Getpid())
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}

// downtime is from the start of the scale-down (quiesced) or of stopping
// the pods to the end of the redeploy:
// the time no pod of the StatefulSet serves.
func downtime(j *journal.Journal) time.Duration {
	down, up := j.Step("scale-down"), j.Step("redeploy")
	if down.StartedAt.IsZero() {
		down = j.Step("stop-pods")
	}
	if down.StartedAt.IsZero() || up.FinishedAt.IsZero() {
		return 0
	}
	return up.FinishedAt.Sub(down.StartedAt)
}

func volumesOf(t *discovery.Target) []report.Volume {
	var out []report.Volume
	for _, o := range t.Ordinals {
		v := report.Volume{Ordinal: o.Index, Claim: o.Claim, StorageClass: o.StorageClass}
		if o.PV != nil {
			v.PV = o.PV.Name
			v.ReclaimPolicy = string(o.PV.Spec.PersistentVolumeReclaimPolicy)
			q := o.PV.Spec.Capacity[corev1.ResourceStorage]
			v.Capacity = q.String()
		}
		out = append(out, v)
	}
	return out
}

func currentVolumes(ctx context.Context, c *kube.Clients, s *Spec) []report.Volume {
	var out []report.Volume
	for i, o := range s.Target.Ordinals {
		v := report.Volume{Ordinal: o.Index, Claim: o.Claim}
		// After a --to-kind switch the data is under the new kind's claim;
		// before it, or after a rollback, under the original.
		var claim *corev1.PersistentVolumeClaim
		var err error
		for _, name := range s.claimsOf(i) {
			if claim, err = c.Kube.CoreV1().PersistentVolumeClaims(s.ns()).Get(ctx, name, metav1.GetOptions{}); err == nil && claim.Spec.VolumeName != "" {
				v.Claim = name
				break
			}
		}
		if err == nil && claim.Spec.VolumeName != "" {
			if pv, err := c.Kube.CoreV1().PersistentVolumes().Get(ctx, claim.Spec.VolumeName, metav1.GetOptions{}); err == nil {
				v.PV, v.StorageClass = pv.Name, pv.Spec.StorageClassName
				v.ReclaimPolicy = string(pv.Spec.PersistentVolumeReclaimPolicy)
				q := pv.Spec.Capacity[corev1.ResourceStorage]
				v.Capacity = q.String()
			}
		}
		out = append(out, v)
	}
	return out
}

// leftovers lists what rebind deliberately kept: volumes no longer in use
// (never deleted by rebind) and snapshots it took.
func leftovers(ctx context.Context, e *env) []string {
	inUse := map[string]bool{}
	for _, v := range currentVolumes(ctx, e.c, e.spec) {
		inUse[v.PV] = true
	}
	var out []string
	seen := map[string]bool{}
	consider := func(pv string) {
		if pv == "" || inUse[pv] || seen[pv] {
			return
		}
		seen[pv] = true
		if _, err := e.c.Kube.CoreV1().PersistentVolumes().Get(ctx, pv, metav1.GetOptions{}); err == nil {
			out = append(out, fmt.Sprintf("PersistentVolume %s (reclaim policy Retain, not in use): delete it with `kubectl delete pv %s` once you no longer need that copy", pv, pv))
		}
	}
	for i, o := range e.spec.Target.Ordinals {
		if o.PV != nil {
			consider(o.PV.Name)
		}
		if e.j != nil {
			consider(e.value(keyNewPV(i)))
		}
	}
	if e.spec.Strategy == Restore && !e.spec.ExistingSnap && e.j != nil {
		for i := range e.spec.Target.Ordinals {
			if e.j.Step(fmt.Sprintf("snapshot/%d", i)).Status != plan.Pending {
				out = append(out, fmt.Sprintf("VolumeSnapshot %s/%s", e.spec.ns(), e.spec.snapshotName(i)))
			}
		}
	}
	return out
}
