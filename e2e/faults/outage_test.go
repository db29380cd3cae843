package faults_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/sandbox"
)

var (
	refMu   sync.Mutex
	refs    = map[string]*reference{}
	binOnce sync.Once
	binPath string
)

// rebindBinary builds the real binary once per test binary, into the
// sandbox's directory (removed when the sandbox stops): every test here
// runs it many times.
func rebindBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		p := filepath.Join(sb.Dir, "rebind-under-test")
		cmd := exec.Command("go", "build", "-o", p, "github.com/rebind-dev/rebind/cmd/rebind")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("building rebind: %v\n%s", err, out)
			return
		}
		binPath = p
	})
	if binPath == "" {
		t.Fatal("building rebind failed")
	}
	return binPath
}

// referenceOf is the clean run of st, made once per test binary.
func referenceOf(t *testing.T, bin string, st strategy) *reference {
	t.Helper()
	refMu.Lock()
	defer refMu.Unlock()
	if r, ok := refs[st.name]; ok {
		return r
	}
	r := cleanRun(t, bin, st)
	refs[st.name] = r
	return r
}

func strategyNamed(t *testing.T, name string) strategy {
	t.Helper()
	i := slices.IndexFunc(strategies, func(s strategy) bool { return s.name == name })
	if i < 0 {
		t.Fatalf("no strategy %s", name)
	}
	return strategies[i]
}

// fault is something broken while a run is at a given step: started in
// the background when the step's progress line appears, and awaited before
// the next run.
type fault struct {
	step   string // the step's ID, as the journal and report name it
	break_ func(ctx context.Context, tg *target) error
}

// runWithFault runs the migrate command of a fresh release of st once with
// f injected, then re-runs it (up to 3 times) while it stops half-way, and
// checks the end as the matrix does. It returns every run's outcome.
func runWithFault(t *testing.T, st strategy, f fault, extraArgs ...string) []runOutcome {
	t.Helper()
	bin := rebindBinary(t)
	ref := referenceOf(t, bin, st)
	step := slices.Index(ref.names, f.step) + 1
	if step == 0 {
		t.Fatalf("no step %s in %v", f.step, ref.names)
	}
	tg := deploy(t, st)
	ctx := tg.Ctx
	stop, err := pvDeletions(ctx, tg.Rel.Namespace)
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg       sync.WaitGroup
		faultErr error
		injected bool
	)
	hook := func(n int, _ *os.Process) {
		if n != step || injected {
			return
		}
		injected = true
		wg.Add(1)
		go func() {
			defer wg.Done()
			faultErr = f.break_(context.WithoutCancel(ctx), tg)
		}()
	}
	var outs []runOutcome
	end := ""
	for attempt := 0; end == "" && attempt < 4; attempt++ {
		var h func(int, *os.Process)
		if attempt == 0 {
			h = hook
		}
		r, err := runBinary(ctx, bin, append(tg.command(), extraArgs...), h)
		if err != nil {
			t.Fatal(err)
		}
		// The next run starts once the fault is over (the component back),
		// as an operator re-runs once the outage is fixed.
		wg.Wait()
		if faultErr != nil {
			t.Fatalf("injecting the fault: %v", faultErr)
		}
		outs = append(outs, r)
		t.Logf("run %d: exit %d after %s\n%s", attempt+1, r.Code, r.Elapsed.Round(time.Millisecond), stepLines(r.Stderr))
		switch r.Code {
		case 0:
			end = "finished"
		case 3:
			end = "rolled back"
		case 4:
			// A run that gives up must say why and what to do.
			if !strings.Contains(r.Stderr, "re-run the same command to resume") {
				t.Errorf("exit 4 without telling the user to re-run:\n%s", tail(r.Stderr, 20))
			}
			t.Logf("stopped half-way, as it says:\n%s", tail(r.Stderr, 6))
		default:
			t.Fatalf("run %d: exit %d\n%s", attempt+1, r.Code, tail(r.Stderr, 30))
		}
	}
	if !injected {
		t.Fatalf("the run never reached step %s: the fault was not injected", f.step)
	}
	converged, lost, lostPVs, problems := judge(t, tg, ref, end, stop())
	if !converged {
		t.Fatalf("did not converge: %s; %d dashboards lost, %d PVs lost\n%s", end, lost, lostPVs, strings.Join(problems, "\n"))
	}
	t.Logf("%s after %d run(s): converged, nothing lost", end, len(outs))
	return outs
}

// TestAPIServerRestartMidRun restarts kube-apiserver (SIGTERM, down 2 s,
// started again with the same flags and data; then kube-scheduler) while
// rebind is inside a
// step: a snapshot wait, the start of the outage, the wait for the
// redeploy. The run either rides it out (watches re-list) or stops
// half-way saying so, and the re-run finishes.
//
// After a restart the sandbox's controllers and kwok take from seconds to
// over a minute on a loaded machine to act again, so `make test` restarts
// it in two steps and `make faults` (REBIND_FAULTS_KILLS of 10 or more) in
// all three.
func TestAPIServerRestartMidRun(t *testing.T) {
	e2eutil.NeedSandbox(t)
	steps := []string{"snapshot/0", "stop-pods"}
	if envInt(t, "REBIND_FAULTS_KILLS", 3) >= 10 {
		steps = append(steps, "redeploy")
	}
	for _, step := range steps {
		t.Run(step, func(t *testing.T) {
			runWithFault(t, strategyNamed(t, "restore"), fault{step: step, break_: func(ctx context.Context, _ *target) error {
				// Let the step begin its writes or its wait first.
				time.Sleep(20 * time.Millisecond)
				if err := sb.RestartComponent(ctx, sandbox.ComponentAPIServer, 2*time.Second); err != nil {
					return err
				}
				// kube-scheduler 1.37 here sometimes keeps a pod deleted
				// while the API server was down in its cache ("Scheduler
				// cache is corrupted") and never schedules the pod that
				// replaces it; restarting it with the API server, as a
				// control-plane rolling restart does, keeps the test about
				// rebind.
				return sb.RestartComponent(ctx, sandbox.ComponentScheduler, 0)
			}})
		})
	}
}

// TestGrafanaUnavailableMidVerification: the proxy in front of Grafana
// answers 503 (nginx's page, no Retry-After) for 10 s from the start of
// the verification. A Grafana that cannot answer is not a lost dashboard:
// the run must not report one; it waits or stops half-way and the re-run
// verifies.
func TestGrafanaUnavailableMidVerification(t *testing.T) {
	e2eutil.NeedSandbox(t)
	outs := runWithFault(t, strategyNamed(t, "restore"), fault{step: "verify", break_: func(_ context.Context, tg *target) error {
		return sb.UnavailableGrafana(tg.Rel.Namespace, tg.Rel.Pod(0), 10*time.Second, 0)
	}})
	for _, r := range outs {
		if r.Code == 3 {
			t.Errorf("rolled back because Grafana answered 503 for 10 s:\n%s", tail(r.Stderr, 20))
		}
	}
}

// TestSnapshotControllerStoppedDuringWait stops the CSI snapshot
// controller while rebind waits for its snapshot to be readyToUse: back
// within the snapshot timeout, the wait carries on; gone for longer, the
// run stops half-way naming the snapshot, and the re-run (controller back)
// finishes.
func TestSnapshotControllerStoppedDuringWait(t *testing.T) {
	e2eutil.NeedSandbox(t)
	for _, tc := range []struct {
		name    string
		down    time.Duration
		timeout string
		want    int // exit code of the first run
	}{
		{"back within the timeout", 5 * time.Second, "90s", 0},
		{"down past the timeout", 8 * time.Second, "3s", 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			outs := runWithFault(t, strategyNamed(t, "restore"), fault{step: "snapshot/0", break_: func(ctx context.Context, _ *target) error {
				return sb.RestartComponent(ctx, sandbox.ComponentSnapshotController, tc.down)
			}}, "--snapshot-timeout", tc.timeout)
			if outs[0].Code != tc.want {
				t.Errorf("first run: exit %d, want %d\n%s", outs[0].Code, tc.want, tail(outs[0].Stderr, 20))
			}
			if tc.want == 4 && !strings.Contains(outs[0].Stderr, "snapshot") {
				t.Errorf("the first run's message does not name the snapshot wait:\n%s", tail(outs[0].Stderr, 10))
			}
		})
	}
}

// stepLines are a run's finished and failed steps with their durations:
// where the time went.
func stepLines(stderr string) string {
	var out []string
	for _, l := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(l, " ✓ [") || strings.HasPrefix(l, " ✗ [") || strings.HasPrefix(l, "Lease ") {
			out = append(out, "  "+l)
		}
	}
	return strings.Join(out, "\n")
}
