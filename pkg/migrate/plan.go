package migrate

import (
	"fmt"

	"github.com/rebind-dev/rebind/pkg/plan"
)

// buildPlan turns a spec into steps. Slow work (snapshots, restores,
// provisioning) comes before the scale-down unless the user asked for a
// quiesced (consistent) snapshot, so downtime is only the swap itself.
func buildPlan(e *env) *plan.Plan {
	s := e.spec
	p := &plan.Plan{Name: fmt.Sprintf("%s %s/%s (%s)", s.Strategy, s.ns(), s.sts(), s.RunID)}
	add := func(steps ...plan.Step) { p.Steps = append(p.Steps, steps...) }

	if !s.SkipVerify {
		add(baselineStep{e})
	}
	if s.Backup == BackupVelero {
		add(veleroBackupStep{e}) // before the first change
	}
	for _, o := range s.Target.Ordinals {
		if o.PV != nil {
			add(retainStep{e, o.PV.Name})
		}
	}
	if s.Strategy == Restore {
		if s.Quiesce {
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
		if !s.Quiesce {
			add(scaleDownStep{e})
		}
	} else if s.Strategy == VeleroRestore {
		add(veleroPlan(e)...)
		add(scaleDownStep{e})
	} else {
		add(scaleDownStep{e})
	}
	add(orphanStep{e})
	for i, o := range s.Target.Ordinals {
		if o.PVC != nil && o.PV != nil {
			add(releaseClaimStep{e, i})
		}
	}
	for i := range s.Target.Ordinals {
		if s.Strategy == Reuse {
			add(reserveStep{e, i})
		}
		add(claimStep{e, i})
	}
	add(redeployFor(e))
	if !s.SkipVerify {
		add(verifyStep{e})
	}
	if !s.KeepRetain {
		add(reclaimBackStep{e})
	}
	return p
}
