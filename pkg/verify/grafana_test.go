package verify

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rebind-dev/rebind/e2e/grafanastandin"
	"github.com/rebind-dev/rebind/pkg/app"
	"github.com/rebind-dev/rebind/pkg/grafana"
)

// TestPreflight: an empty Grafana cannot serve as a baseline unless the
// user says it is expected; an org the credentials cannot read stops the
// run as incomplete, not as unreachable.
func TestPreflight(t *testing.T) {
	for _, tc := range []struct {
		name       string
		spec       grafanastandin.SeedSpec
		allowEmpty bool
		want       string // "" passes
	}{
		{"dashboards in every org", grafanastandin.SeedSpec{Orgs: 2, DashboardsPerOrg: 2, Seed: 1}, false, ""},
		{"no dashboard at all", grafanastandin.SeedSpec{Orgs: 2, FoldersPerOrg: 1, Seed: 1}, false, "--allow-empty-baseline"},
		{"no dashboard, expected", grafanastandin.SeedSpec{Orgs: 2, FoldersPerOrg: 1, Seed: 1}, true, ""},
		{"an org the admin cannot read", grafanastandin.SeedSpec{Orgs: 2, DashboardsPerOrg: 2, Seed: 1, AdminNotMemberOf: []int64{2}}, false, "2 (Org 2)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := grafanastandin.Seed(dir, tc.spec); err != nil {
				t.Fatal(err)
			}
			s, err := grafanastandin.Open(dir, grafanastandin.Options{AdminPassword: "pw"})
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(s.Handler())
			defer func() { srv.Close(); s.Close() }()
			g := &Grafana{AllowEmptyBaseline: tc.allowEmpty, ClientFor: func(string) (*grafana.Client, error) {
				return grafana.New(grafana.Options{URL: srv.URL, Credentials: grafana.Credentials{User: "admin", Password: "pw"}})
			}}
			err = app.Preflight(context.Background(), g, "grafana-0")
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, app.ErrIncomplete) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want an incomplete-verification error containing %q, got %v", tc.want, err)
			}
			if _, err := g.Capture(context.Background(), "grafana-0"); err == nil {
				t.Fatal("Capture accepted what Preflight refused")
			}
		})
	}
}
