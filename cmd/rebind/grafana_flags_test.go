package main

import (
	"bytes"
	"errors"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/rebind-dev/rebind/e2e/grafanastandin"
)

// runAppSplit is runApp with stdout and stderr apart.
func runAppSplit(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	app := &cli.App{
		Name:           "rebind",
		Writer:         &out,
		ErrWriter:      &errb,
		Commands:       []*cli.Command{inventoryCommand(), verifyCommand()},
		ExitErrHandler: func(*cli.Context, error) {},
	}
	err := app.Run(append([]string{"rebind"}, args...))
	var ec cli.ExitCoder
	switch {
	case err == nil:
	case errors.As(err, &ec):
		code = ec.ExitCode()
		errb.WriteString(err.Error())
	default:
		code = -1
		errb.WriteString(err.Error())
	}
	return code, out.String(), errb.String()
}

// TestGrafanaPasswordOnCommandLineWarns: --grafana-password on the command
// line works, and warns on stderr that it shows in ps and in CronJob specs,
// naming the alternatives; $REBIND_GRAFANA_PASSWORD works without a
// warning; the command line wins over the variable; the warning never
// repeats the password.
func TestGrafanaPasswordOnCommandLineWarns(t *testing.T) {
	const password = "planted-password-XYZ"
	dir := t.TempDir()
	if err := grafanastandin.Seed(dir, grafanastandin.SeedSpec{DashboardsPerOrg: 3, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	s, err := grafanastandin.Open(dir, grafanastandin.Options{AdminPassword: password})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	defer func() { srv.Close(); s.Close() }()
	inv := []string{"inventory", "--grafana-url", srv.URL, "-o", filepath.Join(t.TempDir(), "inv.json")}

	for _, tc := range []struct {
		name     string
		env      string
		flag     string
		wantCode int
		warn     bool
	}{
		{"flag", "", password, 0, true},
		{"environment", password, "", 0, false},
		{"flag and environment: the flag wins", password, "wrong", 2, true},
		{"environment and flag: the flag wins", "wrong", password, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(envGrafanaPassword, tc.env)
			args := inv
			if tc.flag != "" {
				args = append(append([]string{}, inv...), "--"+flagGrafanaPassword, tc.flag)
			}
			code, stdout, stderr := runAppSplit(t, args...)
			if code != tc.wantCode {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.wantCode, stdout, stderr)
			}
			warned := strings.Contains(stderr, "warning: --grafana-password on the command line")
			if warned != tc.warn {
				t.Fatalf("warned %v, want %v; stderr:\n%s", warned, tc.warn, stderr)
			}
			if strings.Contains(stdout, "warning") {
				t.Errorf("the warning went to stdout:\n%s", stdout)
			}
			if warned {
				for _, w := range []string{"`ps`", "CronJob", "$REBIND_GRAFANA_PASSWORD", "--grafana-secret"} {
					if !strings.Contains(stderr, w) {
						t.Errorf("warning lacks %q:\n%s", w, stderr)
					}
				}
				if strings.Count(stderr, "warning: --grafana-password") != 1 {
					t.Errorf("warned more than once:\n%s", stderr)
				}
			}
			if strings.Contains(stdout+stderr, password) {
				t.Errorf("output shows the password:\nstdout:\n%s\nstderr:\n%s", stdout, stderr)
			}
		})
	}
}
