// Package plan runs a migration as an ordered list of idempotent steps.
//
// A plan is data: it can be printed before anything happens, run with every
// step's progress recorded in a Store so that a killed run resumes where it
// stopped, and reversed by undoing the completed steps last-first.
package plan

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"go.uber.org/zap"
)

// Step is one idempotent unit of a migration.
//
// Apply may be called again after a crash at any point inside it, so it must
// converge rather than fail when its effect is already (partly) there.
type Step interface {
	// ID is stable across runs: the journal keys progress by it.
	ID() string
	// Describe is the human progress line.
	Describe() string
	// Precondition fails when applying the step now could lose data or
	// cannot succeed; it must not change anything.
	Precondition(ctx context.Context) error
	Apply(ctx context.Context) error
	// Check returns nil once the step's effect holds in the cluster.
	Check(ctx context.Context) error
	// Undo reverses Apply. It is called only for steps that were started.
	Undo(ctx context.Context) error
}

// ServerDryRunner is implemented by steps whose writes can be validated by
// the API server without persisting them.
type ServerDryRunner interface {
	ServerDryRun(ctx context.Context) error
}

// Plan is an ordered list of steps for one target.
type Plan struct {
	Name  string
	Steps []Step
}

// Status of a step in the store.
type Status string

const (
	Pending Status = ""
	Started Status = "Started"
	Done    Status = "Done"
	Undone  Status = "Undone"
	Failed  Status = "Failed"
)

// StepRecord is what the store keeps about one step.
type StepRecord struct {
	Status     Status        `json:"status"`
	StartedAt  time.Time     `json:"startedAt,omitempty"`
	FinishedAt time.Time     `json:"finishedAt,omitempty"`
	Duration   time.Duration `json:"duration,omitempty"`
	Error      string        `json:"error,omitempty"`
}

// Store persists step progress; the journal implements it in the cluster.
type Store interface {
	Step(id string) StepRecord
	SetStep(ctx context.Context, id string, rec StepRecord) error
}

// BatchStore writes several records at once. With it the runner records a
// step as done together with the next step's start: one write instead of
// two per step, which matters while the application is down.
type BatchStore interface {
	Store
	SetSteps(ctx context.Context, recs map[string]StepRecord) error
}

// StepError says which step failed, so the user knows where a resume or a
// rollback will start.
type StepError struct {
	StepID string
	Phase  string // precondition, apply, check, undo
	Err    error
}

func (e *StepError) Error() string {
	return fmt.Sprintf("step %s: %s: %v", e.StepID, e.Phase, e.Err)
}

func (e *StepError) Unwrap() error { return e.Err }

// Result of one step in a run, for reports.
type Result struct {
	ID       string        `json:"id"`
	Describe string        `json:"description"`
	Status   string        `json:"status"` // done, skipped (already done), failed, undone, planned
	Duration time.Duration `json:"durationNs"`
	Started  time.Time     `json:"started,omitempty"`
	Error    string        `json:"error,omitempty"`
}

// Runner executes plans.
type Runner struct {
	Store Store
	// Out receives one short human line per step; nil discards them.
	Out io.Writer
	Log *zap.Logger
	// AfterStep lets tests interrupt a run right after a step was recorded
	// as done, the way a killed process would.
	AfterStep func(ctx context.Context, id string) error
	// OnStep, when set, hears of each step applied by Run: before it is
	// applied (done false) and once it succeeded (done true). It must not
	// block: it runs inside the migration, possibly during the outage.
	OnStep func(id string, done bool)
	// Now is replaceable in tests.
	Now func() time.Time
	// Guard, when it returns an error, means the run may no longer change
	// anything (its lease is lost): the runner stops before the next step
	// and writes no further record, leaving the journal as a resume needs
	// it.
	Guard func() error

	// pendingDone is a finished step whose Done record waits to be written
	// with the next step's Started record. Until then the journal says
	// Started, so a crash in between makes a resume re-apply that step,
	// which idempotent steps allow.
	pendingDone map[string]StepRecord
}

// guard is the Guard's verdict, or nil without one.
func (r *Runner) guard() error {
	if r.Guard == nil {
		return nil
	}
	return r.Guard()
}

// flush writes a pending Done record.
func (r *Runner) flush(ctx context.Context) error {
	if len(r.pendingDone) == 0 || r.guard() != nil {
		return nil
	}
	recs := r.pendingDone
	r.pendingDone = nil
	return r.Store.(BatchStore).SetSteps(context.WithoutCancel(ctx), recs)
}

// record writes rec for id, together with any pending Done record.
func (r *Runner) record(ctx context.Context, id string, rec StepRecord) error {
	b, ok := r.Store.(BatchStore)
	if !ok || len(r.pendingDone) == 0 {
		return r.Store.SetStep(ctx, id, rec)
	}
	recs := r.pendingDone
	r.pendingDone = nil
	recs[id] = rec
	return b.SetSteps(ctx, recs)
}

func (r *Runner) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Runner) log() *zap.Logger {
	if r.Log == nil {
		return zap.NewNop()
	}
	return r.Log
}

func (r *Runner) printf(format string, args ...any) {
	if r.Out != nil {
		fmt.Fprintf(r.Out, format, args...)
	}
}

// Run applies every step not yet done. Steps recorded as done are trusted
// and skipped: later steps supersede their effects (pods a scale-down
// removed come back with the redeploy), so re-checking them would undo
// progress. A step that was started but not finished is applied again,
// which is why Apply must be idempotent.
func (r *Runner) Run(ctx context.Context, p *Plan) (_ []Result, err error) {
	defer func() {
		if ferr := r.flush(ctx); ferr != nil && err == nil {
			err = ferr
		}
	}()
	results := make([]Result, 0, len(p.Steps))
	for i, s := range p.Steps {
		prefix := fmt.Sprintf("[%d/%d]", i+1, len(p.Steps))
		if rec := r.Store.Step(s.ID()); rec.Status == Done {
			r.printf(" ✓ %s %s (already done)\n", prefix, s.Describe())
			results = append(results, Result{ID: s.ID(), Describe: s.Describe(), Status: "skipped", Duration: rec.Duration, Started: rec.StartedAt})
			continue
		}
		if err := r.guard(); err != nil {
			r.printf(" ✗ %s %s: not started: %v\n", prefix, s.Describe(), err)
			return results, err
		}
		if r.OnStep != nil {
			r.OnStep(s.ID(), false)
		}
		res, err := r.runStep(ctx, prefix, s)
		results = append(results, res)
		if err != nil {
			return results, err
		}
		if r.OnStep != nil {
			r.OnStep(s.ID(), true)
		}
		if r.AfterStep != nil {
			// The hook stands for a kill after the step was recorded.
			if err := r.flush(ctx); err != nil {
				return results, err
			}
			if err := r.AfterStep(ctx, s.ID()); err != nil {
				return results, err
			}
		}
	}
	return results, nil
}

func (r *Runner) runStep(ctx context.Context, prefix string, s Step) (Result, error) {
	start := r.now()
	res := Result{ID: s.ID(), Describe: s.Describe(), Started: start}
	r.printf(" • %s %s ...\n", prefix, s.Describe())
	log := r.log().With(zap.String("step", s.ID()))
	log.Info("step starting")

	fail := func(phase string, err error) (Result, error) {
		res.Status = "failed"
		res.Duration = r.now().Sub(start)
		res.Error = err.Error()
		serr := &StepError{StepID: s.ID(), Phase: phase, Err: err}
		// A precondition failure changed nothing, so undo must not see the
		// step as started. A failed write of the failure must not hide it.
		if phase != "precondition" && r.guard() == nil {
			_ = r.record(context.WithoutCancel(ctx), s.ID(), StepRecord{Status: Failed, StartedAt: start, FinishedAt: r.now(), Duration: res.Duration, Error: err.Error()})
		}
		r.printf(" ✗ %s %s: %v (%s)\n", prefix, s.Describe(), err, round(res.Duration))
		log.Error("step failed", zap.String("phase", phase), zap.Error(err))
		return res, serr
	}

	if err := s.Precondition(ctx); err != nil {
		return fail("precondition", err)
	}
	if err := r.guard(); err != nil {
		return fail("guard", err)
	}
	// Recorded before Apply so that undo knows the step may have left effects
	// even when the process dies inside Apply.
	if err := r.record(ctx, s.ID(), StepRecord{Status: Started, StartedAt: start}); err != nil {
		return fail("journal", err)
	}
	if err := s.Apply(ctx); err != nil {
		return fail("apply", err)
	}
	if err := s.Check(ctx); err != nil {
		return fail("check", err)
	}
	if err := r.guard(); err != nil {
		return fail("guard", err)
	}
	res.Duration = r.now().Sub(start)
	res.Status = "done"
	done := StepRecord{Status: Done, StartedAt: start, FinishedAt: r.now(), Duration: res.Duration}
	if _, ok := r.Store.(BatchStore); ok {
		r.pendingDone = map[string]StepRecord{s.ID(): done}
	} else if err := r.Store.SetStep(ctx, s.ID(), done); err != nil {
		return fail("journal", err)
	}
	r.printf(" ✓ %s %s (%s)\n", prefix, s.Describe(), round(res.Duration))
	log.Info("step done", zap.Duration("duration", res.Duration))
	return res, nil
}

// Undo reverses every step that was started or done, last first. It keeps
// going after a failed undo only when continuing cannot make things worse:
// it stops at the first failure so that the user can fix it and re-run.
func (r *Runner) Undo(ctx context.Context, p *Plan) ([]Result, error) {
	var results []Result
	for i := len(p.Steps) - 1; i >= 0; i-- {
		s := p.Steps[i]
		rec := r.Store.Step(s.ID())
		switch rec.Status {
		case Started, Done, Failed:
		default:
			continue
		}
		if err := r.guard(); err != nil {
			return results, err
		}
		prefix := fmt.Sprintf("[undo %d/%d]", len(p.Steps)-i, len(p.Steps))
		start := r.now()
		r.printf(" • %s %s ...\n", prefix, "undo: "+s.Describe())
		if err := s.Undo(ctx); err != nil {
			d := r.now().Sub(start)
			r.printf(" ✗ %s undo: %s: %v\n", prefix, s.Describe(), err)
			results = append(results, Result{ID: s.ID(), Describe: s.Describe(), Status: "failed", Duration: d, Started: start, Error: err.Error()})
			return results, &StepError{StepID: s.ID(), Phase: "undo", Err: err}
		}
		d := r.now().Sub(start)
		if err := r.Store.SetStep(ctx, s.ID(), StepRecord{Status: Undone, StartedAt: start, FinishedAt: r.now(), Duration: d}); err != nil {
			return results, &StepError{StepID: s.ID(), Phase: "journal", Err: err}
		}
		r.printf(" ✓ %s undo: %s (%s)\n", prefix, s.Describe(), round(d))
		results = append(results, Result{ID: s.ID(), Describe: s.Describe(), Status: "undone", Duration: d, Started: start})
	}
	return results, nil
}

// Print writes the plan, one line per step, marking what a resume would skip.
func Print(w io.Writer, p *Plan, store Store) {
	fmt.Fprintf(w, "Plan %s (%d steps):\n", p.Name, len(p.Steps))
	for i, s := range p.Steps {
		mark := " "
		if store != nil {
			switch store.Step(s.ID()).Status {
			case Done:
				mark = "✓"
			case Started, Failed:
				mark = "!"
			}
		}
		fmt.Fprintf(w, " %s %2d. %s\n", mark, i+1, s.Describe())
	}
}

// ServerDryRun sends every step's writes with server-side dry-run. Steps
// that depend on earlier steps' real effects cannot be validated this way;
// they report ErrDryRunSkipped and are listed as such.
func ServerDryRun(ctx context.Context, w io.Writer, p *Plan) error {
	var errs []error
	for i, s := range p.Steps {
		d, ok := s.(ServerDryRunner)
		if !ok {
			fmt.Fprintf(w, "   %2d. %s: nothing to validate\n", i+1, s.Describe())
			continue
		}
		err := d.ServerDryRun(ctx)
		switch {
		case errors.Is(err, ErrDryRunSkipped):
			fmt.Fprintf(w, "   %2d. %s: not validated (%v)\n", i+1, s.Describe(), err)
		case err != nil:
			fmt.Fprintf(w, " ✗ %2d. %s: %v\n", i+1, s.Describe(), err)
			errs = append(errs, fmt.Errorf("%s: %w", s.ID(), err))
		default:
			fmt.Fprintf(w, " ✓ %2d. %s: accepted by the API server (dry run)\n", i+1, s.Describe())
		}
	}
	return errors.Join(errs...)
}

// ErrDryRunSkipped marks a step whose writes only make sense after earlier
// steps really happened.
var ErrDryRunSkipped = errors.New("depends on earlier steps")

func round(d time.Duration) time.Duration {
	switch {
	case d > time.Second:
		return d.Round(100 * time.Millisecond)
	default:
		return d.Round(time.Millisecond)
	}
}
