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

// TestDRGrafanaAccess: preflight asks for the Secret the credentials
// really come from: the chart's admin Secret only when no credential flag
// is given (a token alone reads it best-effort, needing no right).
func TestDRGrafanaAccess(t *testing.T) {
	for _, tc := range []struct {
		name     string
		args     []string
		env      string
		viaProxy bool
		want     dr.GrafanaAccess
	}{
		{"no credential flag", nil, "", false, dr.GrafanaAccess{AdminSecret: true}},
		{"through the pod proxy", nil, "", true, dr.GrafanaAccess{AdminSecret: true, PodProxy: true}},
		{"--grafana-secret", []string{"--grafana-secret", "vault/creds"}, "", false, dr.GrafanaAccess{Secret: "vault/creds"}},
		{"--grafana-password", []string{"--grafana-password", "p"}, "", false, dr.GrafanaAccess{}},
		{"the password in the environment", nil, "p", false, dr.GrafanaAccess{}},
		{"a token", []string{"--grafana-token", "t"}, "", false, dr.GrafanaAccess{}},
		{"a blank token is no credential", []string{"--grafana-token", " "}, "", false, dr.GrafanaAccess{AdminSecret: true}},
		{"a token listing orgs with a Secret", []string{"--grafana-token", "t", "--grafana-secret", "grafana"}, "", false, dr.GrafanaAccess{Secret: "grafana"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(envGrafanaPassword, tc.env)
			t.Setenv("REBIND_GRAFANA_TOKEN", "")
			var got dr.GrafanaAccess
			app := &cli.App{Name: "rebind", Commands: []*cli.Command{{Name: "backup", Flags: grafanaFlags(),
				Action: func(c *cli.Context) error { got = drGrafanaAccess(c, tc.viaProxy); return nil }}}}
			if err := app.Run(append([]string{"rebind", "backup"}, tc.args...)); err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}
