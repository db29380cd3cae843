package drill

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/rebind-dev/rebind/pkg/discovery"
	"github.com/rebind-dev/rebind/pkg/journal"
	"github.com/rebind-dev/rebind/pkg/preflight"
)

// lockTarget takes the Lease that `rebind migrate` and `rebind rollback`
// take for the production StatefulSet, so that a drill never runs while
// they change its volumes and neither starts while a drill snapshots them.
// Under the Lease it refuses a target whose migration stopped half-way:
// its volumes are in the middle of a move, so a drill would prove nothing.
func (d *Drill) lockTarget(ctx context.Context, o Options, t *discovery.Target, res *Result) (*journal.Lease, error) {
	ns, name := t.Namespace, journal.LeaseName(t.Name())
	holder := fmt.Sprintf("drill-%s-%s-%d", res.RunID, hostname(), os.Getpid())
	l, err := journal.TakeLease(ctx, d.Clients.Kube, journal.LeaseOptions{Namespace: ns, Name: name, Holder: holder, Duration: o.LeaseDuration,
		Waiting: func(other string, upTo time.Duration) {
			d.step(res, "Lease %s/%s is held by %s: watching up to %s whether it still renews it", ns, name, other, upTo)
		}})
	var locked *journal.LockedError
	if errors.As(err, &locked) {
		return nil, &preflight.Error{Problems: []preflight.Problem{{
			Object:  fmt.Sprintf("Lease %s/%s", ns, name),
			Message: fmt.Sprintf("%s; a drill does not run while a migration, a rollback or another drill of %s/%s does", locked.Error(), ns, t.Name()),
			Fix:     "nothing was created; run the drill again once that run has finished (the next scheduled drill does)",
		}}}
	}
	if err != nil {
		return nil, fmt.Errorf("taking Lease %s/%s: %w", ns, name, err)
	}
	if l.TookOverFrom != "" {
		res.Notes = append(res.Notes, fmt.Sprintf("took over Lease %s/%s from %s", ns, name, l.TookOverFrom))
	}
	rec, err := journal.LoadRecord(ctx, d.Clients.Kube, ns, t.Name())
	if err == nil && rec != nil && rec.Phase.Unfinished() {
		err = &preflight.Error{Problems: []preflight.Problem{{
			Object: fmt.Sprintf("ConfigMap %s/%s", ns, journal.Name(t.Name())),
			Message: fmt.Sprintf("the %s run %s of %s/%s is unfinished (phase %s): its volumes are in the middle of a move, so a drill would prove nothing",
				rec.Operation, rec.RunID, ns, t.Name(), rec.Phase),
			Fix: fmt.Sprintf("nothing was created; finish it first: re-run the same `rebind migrate` command to resume it, or `rebind rollback -n %s --statefulset %s`", ns, t.Name()),
		}}}
	}
	if err != nil {
		d.unlockTarget(ctx, l, res, d.log())
		return nil, err
	}
	return l, nil
}

// unlockTarget releases the production Lease; a Lease that cannot be
// released expires after its duration, which a note says.
func (d *Drill) unlockTarget(parent context.Context, l *journal.Lease, res *Result, log *zap.Logger) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), 15*time.Second)
	defer cancel()
	if err := l.Release(ctx); err != nil {
		res.Notes = append(res.Notes, fmt.Sprintf("Lease %s/%s not released (a migration can take it over once it has not been renewed for its duration): %v", res.Namespace, journal.LeaseName(res.StatefulSet), err))
		log.Warn("target lease not released", zap.Error(err))
	}
}
