package main

import (
	"bytes"
	"database/sql"
	"errors"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/rebind-dev/rebind/e2e/grafanastandin"
)

func runApp(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	full := append([]string{"rebind"}, args...)
	app := &cli.App{
		Name:           "rebind",
		Writer:         &out,
		ErrWriter:      &out,
		Commands:       []*cli.Command{inventoryCommand(), verifyCommand()},
		ExitErrHandler: func(*cli.Context, error) {}, // keep the test process alive
		Metadata:       map[string]any{argsKey: full},
	}
	err := app.Run(full)
	if err == nil {
		return 0, out.String()
	}
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		return ec.ExitCode(), out.String() + err.Error()
	}
	return -1, out.String() + err.Error()
}

func TestInventoryAndVerify(t *testing.T) {
	dir := t.TempDir()
	if err := grafanastandin.Seed(dir, grafanastandin.SeedSpec{Orgs: 2, FoldersPerOrg: 2, DashboardsPerOrg: 15, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	s, err := grafanastandin.Open(dir, grafanastandin.Options{AdminPassword: "pw", Tokens: []string{"tok"}, OrgTokens: map[string]int64{"tok2": 2}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	defer func() { srv.Close(); s.Close() }()
	dbPath := filepath.Join(dir, "grafana.db")
	base := filepath.Join(t.TempDir(), "baseline.json")
	t.Setenv("REBIND_GRAFANA_PASSWORD", "pw")

	steps := []struct {
		name     string
		args     []string
		mutate   string
		wantCode int
		want     []string
	}{
		{"inventory online", []string{"inventory", "--grafana-url", srv.URL, "-o", base}, "", 0, []string{"2 orgs, 4 folders, 30 dashboards"}},
		{"verify against file", []string{"verify", "--grafana-url", srv.URL, "--baseline", base}, "", 0, []string{"RESULT: OK", "30 identical"}},
		{"verify against db", []string{"verify", "--grafana-url", srv.URL, "--baseline-db", dbPath}, "", 0, []string{"RESULT: OK"}},
		{"verify against db, old spelling", []string{"verify", "--grafana-url", srv.URL, "--db", dbPath}, "", 0, []string{"RESULT: OK", "warning: --db is deprecated for `rebind verify`: use --baseline-db"}},
		{"inventory offline", []string{"inventory", "--from-db", dbPath}, "", 0, []string{`"dashboards"`}},
		{"inventory offline, old spelling", []string{"inventory", "--db=" + dbPath}, "", 0, []string{"warning: --db is deprecated for `rebind inventory`: use --from-db"}},
		{"verify against second grafana", []string{"verify", "--grafana-url", srv.URL, "--against-url", srv.URL}, "", 0, []string{"RESULT: OK"}},
		{"offline current", []string{"verify", "--current-db", dbPath, "--baseline", base}, "", 0, []string{"RESULT: OK"}},
		{"bad password", []string{"verify", "--grafana-url", srv.URL, "--baseline", base, "--grafana-password", "nope"}, "", 2, []string{"password-auth.failed"}},
		{"no baseline", []string{"verify", "--grafana-url", srv.URL}, "", 2, []string{"exactly one of"}},
		{"token cannot tell which orgs exist", []string{"verify", "--grafana-url", srv.URL, "--baseline", base, "--grafana-token", "tok"}, "", 2, []string{"cannot list every org", "--grafana-org-id"}},
		{"token limited to its org on purpose", []string{"verify", "--grafana-url", srv.URL, "--baseline", base, "--grafana-token", "tok", "--grafana-org-id", "1"}, "", 0, []string{"RESULT: OK for the orgs checked", "not checked", "[2]"}},
		{"token of each org", []string{"verify", "--grafana-url", srv.URL, "--baseline", base, "--grafana-token", "tok", "--grafana-token", "tok2", "--grafana-org-id", "1", "--grafana-org-id", "2"}, "", 0, []string{"RESULT: OK, every dashboard"}},
		{"dashboard lost", []string{"verify", "--grafana-url", srv.URL, "--baseline", base},
			`DELETE FROM dashboard WHERE id = (SELECT MAX(id) FROM dashboard WHERE is_folder = 0)`, 1, []string{"missing: 1", "RESULT: FAILED"}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if strings.Contains(strings.Join(st.args, " "), "--grafana-token") {
				t.Setenv("REBIND_GRAFANA_PASSWORD", "")
			}
			if st.mutate != "" {
				db, err := sql.Open("sqlite", dbPath)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := db.Exec(st.mutate); err != nil {
					t.Fatal(err)
				}
				db.Close()
			}
			code, out := runApp(t, st.args...)
			if code != st.wantCode {
				t.Fatalf("exit %d, want %d:\n%s", code, st.wantCode, out)
			}
			for _, w := range st.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if deprecated := strings.Contains(strings.Join(st.args, " "), "-db"); !deprecated && strings.Contains(out, "deprecated") {
				t.Errorf("a warning without the old spelling:\n%s", out)
			}
			// The --grafana-password warning names the variable; its value
			// must never show.
			if strings.Contains(out, "REBIND_GRAFANA_PASSWORD=") || strings.Contains(out, `"pw"`) {
				t.Errorf("output shows the password:\n%s", out)
			}
		})
	}
}

func TestGrafanaSecretFlag(t *testing.T) {
	dir := t.TempDir()
	if err := grafanastandin.Seed(dir, grafanastandin.SeedSpec{DashboardsPerOrg: 3, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	s, err := grafanastandin.Open(dir, grafanastandin.Options{AdminPassword: "old-password"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	defer func() { srv.Close(); s.Close() }()
	kube := fake.NewClientset(
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "mon", Name: "grafana"},
			Data: map[string][]byte{"admin-user": []byte("admin"), "admin-password": []byte("old-password")}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "mon", Name: "reinstalled"},
			Data: map[string][]byte{"admin-user": []byte("admin"), "admin-password": []byte("new-random")}},
	)
	grafanaKubeClient = func(*cli.Context) (kubernetes.Interface, error) { return kube, nil }
	defer func() { grafanaKubeClient = nil }()
	t.Setenv("REBIND_GRAFANA_PASSWORD", "")
	out := filepath.Join(t.TempDir(), "inv.json")
	tests := []struct {
		secret   string
		wantCode int
		want     string
	}{
		{"mon/grafana", 0, "3 dashboards"},
		{"mon/reinstalled", 2, "admin password in Secret mon/reinstalled no longer matches"},
		{"mon/absent", 2, "not found"},
	}
	for _, tt := range tests {
		code, o := runApp(t, "inventory", "--grafana-url", srv.URL, "--grafana-secret", tt.secret, "-o", out)
		if code != tt.wantCode || !strings.Contains(o, tt.want) || strings.Contains(o, "new-random") {
			t.Errorf("%s: exit %d:\n%s", tt.secret, code, o)
		}
	}
}

func TestUsedSpelling(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{[]string{"rebind", "verify", "--db", "x"}, true},
		{[]string{"rebind", "verify", "-db=x"}, true},
		{[]string{"rebind", "verify", "--baseline-db", "x"}, false},
		{[]string{"rebind", "verify", "--dbx", "x"}, false},
		{[]string{"rebind", "verify", "--", "--db"}, false},
		{[]string{"rebind", "db"}, false},
	} {
		if got := usedSpelling(tc.args, "db"); got != tc.want {
			t.Errorf("%v: %v, want %v", tc.args, got, tc.want)
		}
	}
}
