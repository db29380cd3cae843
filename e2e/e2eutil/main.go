// Package e2eutil is the harness the e2e suites share: one sandbox per test
// binary, a deployed and seeded Grafana release, and the assertions that
// compare what Grafana serves before and after rebind changed its volumes.
package e2eutil

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rebind-dev/rebind/e2e/sandbox"
)

// startBudget bounds only the start: a cold one builds the Kubernetes
// binaries first, which takes long on 2 cores.
const startBudget = 60 * time.Minute

// RunMain starts one sandbox for the test binary, stores it in *sb for the
// tests, runs them and stops it; its result is TestMain's exit code. One
// control plane per package because starting one costs seconds and tests
// isolate themselves with namespaces.
func RunMain(m *testing.M, sb **sandbox.Sandbox, opts sandbox.Options) int {
	flag.Parse()
	if testing.Short() {
		// -short is the inner loop of unit tests (make unit): no sandbox,
		// and every test says so itself (NeedSandbox) rather than the
		// package passing with nothing run.
		noSandbox = true
		return m.Run()
	}
	ctx, cancel := context.WithTimeout(context.Background(), startBudget)
	s, err := sandbox.Start(ctx, opts)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "sandbox:", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "sandbox: ready in %.1fs (binaries %.1fs), peak RSS %d MiB, dir %s\n",
		s.Timing.StartToReady().Seconds(), s.Timing.Binaries.Seconds(), s.PeakRSS()>>20, s.Dir)
	*sb = s
	code := m.Run()
	if code != 0 {
		// The component logs (velero.log above all) tell why.
		s.KeepDir()
		fmt.Fprintf(os.Stderr, "sandbox: tests failed; logs kept in %s\n", filepath.Join(s.Dir, "logs"))
	}
	if err := s.Stop(); err != nil {
		// A component that will not stop leaks into the next package's run.
		fmt.Fprintln(os.Stderr, "sandbox stop:", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// noSandbox is set when RunMain started no sandbox (-short).
var noSandbox bool

// NeedSandbox skips a test that needs the sandbox when RunMain did not
// start one; every test of a package run by RunMain calls it first.
func NeedSandbox(t testing.TB) {
	t.Helper()
	if noSandbox {
		t.Skip("needs the e2e sandbox, not started in -short mode (make e2e runs this)")
	}
}

// RunMainWith is RunMain for suites that start their own sandboxes (several
// clusters): start runs unless -short and returns what stops them, told
// whether the tests failed (keep the logs then).
func RunMainWith(m *testing.M, start func(ctx context.Context) (stop func(failed bool) error, err error)) int {
	flag.Parse()
	if testing.Short() {
		noSandbox = true
		return m.Run()
	}
	ctx, cancel := context.WithTimeout(context.Background(), startBudget)
	stop, err := start(ctx)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "sandbox:", err)
		return 1
	}
	code := m.Run()
	if err := stop(code != 0); err != nil {
		fmt.Fprintln(os.Stderr, "sandbox stop:", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}
