package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/rebind-dev/rebind/pkg/dr"
	"github.com/rebind-dev/rebind/pkg/preflight"
	"github.com/rebind-dev/rebind/pkg/report"
)

// TestFinishDRExitCodes: a restore's outcome maps to migrate's exit codes,
// and an unverified restore is never a success.
func TestFinishDRExitCodes(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want int
	}{
		{"verified", nil, exitOK},
		{"verification failed", &dr.VerificationFailedError{Target: "StatefulSet m/grafana", Summary: []string{"grafana-0: 3 missing"}}, exitRolledBack},
		{"incomplete", &dr.IncompleteError{Err: errors.New("Restore PartiallyFailed")}, exitHalfway},
		{"unverified", &dr.UnverifiedError{Target: "StatefulSet m/grafana", Err: fmt.Errorf("%w: gone", dr.ErrNoBaseline)}, exitFailed},
		{"preflight", &preflight.Error{Problems: []preflight.Problem{{Object: "namespace m", Message: "already holds a Grafana", Fix: "--into-namespace"}}}, exitUsage},
		{"other", errors.New("boom"), exitFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			app := &cli.App{Writer: &out}
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.String("output", "text", "")
			c := cli.NewContext(app, fs, nil)
			err := finishDR(c, &report.Report{Operation: "restore", Outcome: report.Failed}, tc.err)
			code := exitOK
			var ec cli.ExitCoder
			if errors.As(err, &ec) {
				code = ec.ExitCode()
			} else if err != nil {
				code = exitFailed
			}
			if code != tc.want {
				t.Errorf("exit %d, want %d (%v)", code, tc.want, err)
			}
			if tc.err != nil && !strings.Contains(err.Error(), strings.Split(tc.err.Error(), "\n")[0]) {
				t.Errorf("message %q lost the cause %q", err, tc.err)
			}
		})
	}
}
