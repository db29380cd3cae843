package migrate

import (
	"fmt"

	"github.com/rebind-dev/rebind/pkg/plan"
)

// buildPlan turns a spec into steps. Slow work (snapshots, restores,
// provisioning) comes before the outage unless the user asked for a
// quiesced (consistent) snapshot, so downtime is only the swap itself.
func buildPlan(e *env) *plan.Plan {
	s := e.spec
	if s.Install != nil {
		return buildInstallPlan(e)
	}
	if s.ToKind != "" {
		return buildSwitchPlan(e) // tokind.go
	}
	p := &plan.Plan{Name: fmt.Sprintf("%s %s/%s (%s)", s.Strategy, s.ns(), s.name(), s.RunID)}
	add := func(steps ...plan.Step) { p.Steps = append(p.Steps, steps...) }

	// A PV taken with --from-pv may be Released with policy Delete: its
	// deleter can get to it any moment, so Retain comes before anything.
	retained := map[string]bool{}
	for i, pv := range s.FromPVs {
		if !retained[pv] {
			retained[pv] = true
			add(retainStep{e, pv, s.Target.Ordinals[i].Claim})
		}
	}
	if !s.SkipVerify {
		add(baselineStep{e})
	}
	if s.Backup == BackupVelero {
		add(veleroBackupStep{e}) // before the first change
	}
	for _, o := range s.Target.Ordinals {
		if o.PV != nil && !retained[o.PV.Name] {
			retained[o.PV.Name] = true
			add(retainStep{e, o.PV.Name, o.Claim})
		}
	}
	if deletesClaims(s.originalRetention()) {
		add(retentionStep{e}) // before any scale-down or deletion
	}
	quiesced := s.Strategy == Restore && s.Quiesce
	switch s.Strategy {
	case Restore:
		if quiesced {
			add(scaleDownStep{e})
		}
		for i := range s.Target.Ordinals {
			if !s.ExistingSnap {
				add(snapshotStep{e, i})
			}
			// A restored PV can be reserved for the claim name while the old
			// claim still holds it: the binder leaves a PV reserved with no
			// uid Available, so this costs no downtime later.
			add(restoreStep{e, i}, reserveStep{e, i})
		}
	case VeleroRestore:
		add(veleroPlan(e)...)
	}
	// The StatefulSet goes first, with orphan propagation, while Grafana
	// still serves: its pods keep running without a controller, so nothing
	// can recreate a pod or a claim mid-swap. The old claims are then
	// marked for deletion, still while serving: their protection finalizer
	// holds them until their pod is gone, and lets go within milliseconds
	// of the pod stopping. Deleting them after the pods would cost up to
	// 100 ms more of outage, because the protection controller's second
	// live pod list waits for the API server's watch cache to catch up.
	// The outage starts only when the pods are stopped.
	// A Deployment is not deleted: its replica count is recorded instead
	// (a rollback starts it again), and it is scaled to 0 where a
	// StatefulSet's orphaned pods are stopped (workload_steps.go).
	if s.Redeploy == RedeployHelm {
		add(helmRevisionStep{e})
	}
	if s.Target.IsDeployment() {
		add(holdDeploymentStep{e})
	} else {
		add(orphanStep{e, quiesced})
	}
	if !s.KeepClaims {
		for i, o := range s.Target.Ordinals {
			if o.PVC != nil && o.PV != nil {
				add(releaseClaimStep{e, i})
			}
		}
		switch {
		case quiesced:
		case s.Target.IsDeployment():
			add(stopDeploymentStep{e})
		default:
			add(stopPodsStep{e})
		}
		for i := range s.Target.Ordinals {
			if s.Strategy == Reuse {
				add(reserveStep{e, i})
			}
			add(claimStep{e, i})
		}
	}
	add(redeployFor(e))
	if !s.SkipVerify {
		add(verifyStep{e})
	}
	if deletesClaims(s.originalRetention()) {
		add(retentionBackStep{e})
	}
	if !s.KeepRetain {
		add(reclaimBackStep{e})
	}
	return p
}
