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
			add(restoreStep{e, i})
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
		add(reserveStep{e, i}, claimStep{e, i})
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
