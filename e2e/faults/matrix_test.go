package faults_test

import (
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/pkg/journal"
)

// reference is what a clean run of a strategy leaves and how long each of
// its steps took: the end state every killed-and-resumed run must reach,
// and the scale the kill offsets are drawn on.
type reference struct {
	shape    []string
	steps    []time.Duration
	names    []string
	duration time.Duration
}

// tally is one strategy's line of the summary.
type tally struct {
	mu                         sync.Mutex
	strategy                   string
	kills, episodes, converged int
	rolledBack, reruns         int
	killedAfterEnd             int // episodes whose last kill came after the journal recorded Completed
	lostDashboards, pvsDeleted int
	stepsHit                   map[string]bool
	steps                      int
	clean                      time.Duration
	failures                   []string
}

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		t.Fatalf("%s=%q: want a non-negative integer", name, v)
	}
	return n
}

// seed is REBIND_FAULTS_SEED, or a new one: printed either way so that a
// failure can be replayed.
func seed(t *testing.T) uint64 {
	t.Helper()
	if v := os.Getenv("REBIND_FAULTS_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("REBIND_FAULTS_SEED=%q: want an unsigned integer", v)
		}
		return n
	}
	return uint64(time.Now().UnixNano())
}

// episodeRand gives every episode its own generator, so one episode
// replays alone (-run) with the same kill points.
func episodeRand(seed uint64, strategy string, episode int) *rand.Rand {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s/%d", strategy, episode)
	return rand.New(rand.NewPCG(seed, h.Sum64()))
}

// killPlan draws an episode's kills: 1 to 3 of them, each in a step at or
// after the previous kill's (a resumed run starts again at the step it
// was killed in), at an offset up to 110% of that step's clean duration
// plus 1 ms (so a step that takes a millisecond is still hit, and some
// kills land right after a step, before its Done record is written).
func killPlan(rng *rand.Rand, ref *reference) []killPoint {
	n := 1 + rng.IntN(3)
	var out []killPoint
	step := 1
	for range n {
		step += rng.IntN(len(ref.steps) - step + 1)
		d := ref.steps[step-1]
		out = append(out, killPoint{Step: step, Offset: time.Duration(rng.Int64N(int64(d+d/10+time.Millisecond)) + 1)})
	}
	return out
}

// TestFaultMatrix kills the real binary at random instants inside the
// steps of each strategy, re-runs the same command until the migration
// finishes or rolls back, and checks every episode: no dashboard lost
// (through Grafana and on the original PVs), no PV deleted, and the end
// state equal to a clean run's.
func TestFaultMatrix(t *testing.T) {
	e2eutil.NeedSandbox(t)
	s := seed(t)
	kills := envInt(t, "REBIND_FAULTS_KILLS", 3)
	only := os.Getenv("REBIND_FAULTS_STRATEGY")
	t.Logf("fault matrix: seed %d (replay with REBIND_FAULTS_SEED=%d), at least %d kills per strategy", s, s, kills)
	bin := rebindBinary(t)
	start := time.Now()
	var tallies []*tally
	for _, st := range strategies {
		if only != "" && only != st.name {
			continue
		}
		tl := &tally{strategy: st.name, stepsHit: map[string]bool{}}
		tallies = append(tallies, tl)
		t.Run(st.name, func(t *testing.T) {
			ref := referenceOf(t, bin, st)
			tl.steps, tl.clean = len(ref.steps), ref.duration
			// Episodes until enough kills landed; a run may finish before
			// its kill point, so allow some slack, never forever.
			for ep := 1; tl.kills < kills && ep <= 2*kills+2; ep++ {
				t.Run(fmt.Sprintf("episode-%02d", ep), func(t *testing.T) {
					episode(t, bin, st, ref, killPlan(episodeRand(s, st.name, ep), ref), tl)
				})
			}
			if tl.kills < kills {
				t.Errorf("%s: only %d of %d kills landed", st.name, tl.kills, kills)
			}
		})
	}
	summary(t, s, kills, time.Since(start), tallies)
}

// cleanRun migrates a fresh release of st without faults: its end state
// and step durations are the reference. It runs in t itself, not in a
// subtest, so that -run selecting one episode still makes it.
func cleanRun(t *testing.T, bin string, st strategy) *reference {
	t.Helper()
	tg := deploy(t, st)
	ctx := tg.Ctx
	r, err := runBinary(ctx, bin, tg.command(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Code != 0 {
		t.Fatalf("clean %s run: exit %d\n%s", st.name, r.Code, tail(r.Stderr, 40))
	}
	res := e2eutil.CLIResult{Code: r.Code, Stdout: r.Stdout, Stderr: r.Stderr}
	rep := res.Report(t)
	ref := &reference{duration: r.Elapsed}
	for _, s := range rep.Steps {
		ref.steps = append(ref.steps, s.Duration)
		ref.names = append(ref.names, s.ID)
	}
	if ref.shape, err = tg.shape(ctx); err != nil {
		t.Fatal(err)
	}
	if lost, pvs, problems := tg.dataCheck(ctx); lost+pvs > 0 || len(problems) > 0 {
		t.Fatalf("a clean %s run lost data: %d dashboards, %d PVs\n%s", st.name, lost, pvs, strings.Join(problems, "\n"))
	}
	t.Logf("clean %s run: %d steps in %s; end state:\n  %s", st.name, len(ref.steps), r.Elapsed.Round(time.Millisecond), strings.Join(ref.shape, "\n  "))
	return ref
}

// episode deploys a fresh release, runs the migration under plan's kills
// and re-runs it as an operator would, then checks the end state.
func episode(t *testing.T, bin string, st strategy, ref *reference, plan []killPoint, tl *tally) {
	tg := deploy(t, st)
	ctx := tg.Ctx
	stop, err := pvDeletions(ctx, tg.Rel.Namespace)
	if err != nil {
		t.Fatal(err)
	}
	var story []string
	note := func(format string, a ...any) {
		story = append(story, fmt.Sprintf(format, a...))
	}
	killed, reruns, end := 0, 0, ""
	for attempt := 0; end == "" && attempt < len(plan)+4; attempt++ {
		var kp *killPoint
		if killed < len(plan) {
			kp = &plan[killed]
		}
		r, err := runBinary(ctx, bin, tg.command(), killAt(kp))
		if err != nil {
			t.Fatal(err)
		}
		if attempt > 0 {
			reruns++
		}
		if r.Killed {
			killed++
			if step, ok := strings.CutPrefix(r.Where, "in • "); ok {
				tl.mu.Lock()
				tl.stepsHit[strings.Fields(step)[0]] = true
				tl.mu.Unlock()
			}
			note("kill %d at %s (after %s): %s", killed, kp, r.Elapsed.Round(time.Millisecond), r.Where)
			// What an operator sees after a kill is the journal: a run
			// killed after it recorded the end has nothing to resume, and
			// the same command would start a new migration.
			phase, _, err := tg.journalPhase(ctx)
			if err != nil {
				t.Fatal(err)
			}
			switch phase {
			case journal.Completed:
				// Killed between recording the end and releasing the
				// Lease: the Lease keeps the dead run's name until it
				// expires, and a run on this machine takes it over at
				// once. Counted apart, and the only difference allowed.
				end = "finished, killed after"
			case journal.RolledBack:
				end = "rolled back"
			}
			continue
		}
		switch r.Code {
		case 0:
			end = "finished"
		case 3:
			end = "rolled back"
		case 4:
			note("re-run stopped half-way (exit 4): %s", lastLine(r.Stderr))
		default:
			note("exit %d: %s", r.Code, tail(r.Stderr, 30))
			end = fmt.Sprintf("failed (exit %d)", r.Code)
		}
	}
	deletions := stop()
	converged, lost, lostPVs, problems := judge(t, tg, ref, end, deletions)

	tl.mu.Lock()
	tl.episodes++
	tl.kills += killed
	tl.reruns += reruns
	tl.lostDashboards += lost
	tl.pvsDeleted += lostPVs
	if converged {
		tl.converged++
	}
	if end == "rolled back" {
		tl.rolledBack++
	}
	if end == "finished, killed after" {
		tl.killedAfterEnd++
	}
	tl.mu.Unlock()
	t.Logf("%s: %d kill(s), %d re-run(s), %s\n  %s", st.name, killed, reruns, end, strings.Join(story, "\n  "))
	if !converged {
		msg := fmt.Sprintf("%s: did not converge (plan %v)\n  %s\n%s", t.Name(), plan, strings.Join(story, "\n  "), strings.Join(problems, "\n"))
		tl.mu.Lock()
		tl.failures = append(tl.failures, msg)
		tl.mu.Unlock()
		t.Error(msg)
	}
}

// judge checks an episode's end: finished with the end state of a clean
// run, or rolled back onto the original volumes; no dashboard lost through
// Grafana or on the original PVs; no PV deleted (deletions is what the
// watch saw).
func judge(t *testing.T, tg *target, ref *reference, end string, deletions []string) (converged bool, lost, lostPVs int, problems []string) {
	t.Helper()
	ctx := tg.Ctx
	lost, lostPVs, problems = tg.dataCheck(ctx)
	switch end {
	case "finished", "finished, killed after":
		got, err := tg.shape(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if end != "finished" {
			for i, l := range got {
				if strings.HasPrefix(l, "lease ") && strings.HasSuffix(l, " held=true") {
					got[i] = strings.TrimSuffix(l, "true") + "false"
				}
			}
		}
		if !slices.Equal(got, ref.shape) {
			problems = append(problems, "end state differs from a clean run's:\n"+lineDiff(ref.shape, got))
		}
	case "rolled back":
		// Rolled back is converged too, onto the original volumes.
		for i, o := range tg.original {
			if pv := tg.BoundPV(i); pv.Name != o.Name {
				problems = append(problems, fmt.Sprintf("rolled back, but ordinal %d runs on %s, not its original %s", i, pv.Name, o.Name))
			}
		}
	default:
		problems = append(problems, "did not converge: "+end)
	}
	if len(deletions) > 0 {
		problems = append(problems, "PVs deleted: "+strings.Join(deletions, "; "))
	}
	return len(problems) == 0 && lost+lostPVs+len(deletions) == 0, lost, lostPVs + len(deletions), problems
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

// lineDiff lists the lines only one side has.
func lineDiff(want, got []string) string {
	var b strings.Builder
	for _, l := range want {
		if !slices.Contains(got, l) {
			fmt.Fprintf(&b, "  - %s\n", l)
		}
	}
	for _, l := range got {
		if !slices.Contains(want, l) {
			fmt.Fprintf(&b, "  + %s\n", l)
		}
	}
	if b.Len() == 0 {
		return "  (same lines, other counts)\n  want " + strings.Join(want, "\n       ") + "\n  got  " + strings.Join(got, "\n       ")
	}
	return b.String()
}

// summary prints the matrix's figures, bench style, on stdout.
func summary(t *testing.T, seed uint64, kills int, took time.Duration, tallies []*tally) {
	var b strings.Builder
	fmt.Fprintf(&b, "fault matrix: seed %d, at least %d SIGKILLs per strategy, %s\n", seed, kills, took.Round(time.Second))
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "strategy\tkills\tepisodes\tconverged\trolled back\tkilled after the end\tre-runs\tsteps hit\tdashboards lost\tPVs deleted\tclean run")
	total := tally{}
	for _, tl := range tallies {
		fmt.Fprintf(w, "%s\t%d\t%d\t%d/%d\t%d\t%d\t%d\t%d/%d\t%d\t%d\t%s\n", tl.strategy, tl.kills, tl.episodes, tl.converged, tl.episodes, tl.rolledBack, tl.killedAfterEnd, tl.reruns,
			len(tl.stepsHit), tl.steps, tl.lostDashboards, tl.pvsDeleted, tl.clean.Round(100*time.Millisecond))
		total.kills += tl.kills
		total.episodes += tl.episodes
		total.converged += tl.converged
		total.lostDashboards += tl.lostDashboards
		total.pvsDeleted += tl.pvsDeleted
	}
	_ = w.Flush()
	fmt.Fprintf(&b, "total: %d kills, converged %d/%d, lost=%d dashboards, %d PVs deleted\n", total.kills, total.converged, total.episodes, total.lostDashboards, total.pvsDeleted)
	fmt.Print(b.String())
	t.Log("\n" + b.String())
}
