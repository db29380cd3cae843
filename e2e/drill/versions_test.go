package drill_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/e2e/grafanastandin"
	"github.com/rebind-dev/rebind/pkg/drill"
)

// TestDrillEachGrafanaVersion: for every modelled Grafana version, with
// dashboards in 3 orgs of which the admin is a member of 2 (org 3 readable
// through its service-account token), a drill online and offline verifies
// every dashboard of every org, nested folders included; without a way to
// read org 3 it is refused and creates nothing.
func TestDrillEachGrafanaVersion(t *testing.T) {
	e2eutil.NeedSandbox(t)
	images := map[grafanastandin.Version]string{grafanastandin.V9_5: "9.5.21", grafanastandin.V10_4: "10.4.19", grafanastandin.V11_6: "11.6.7", grafanastandin.V12_4: "12.4.0"}
	for _, v := range grafanastandin.Versions {
		t.Run(string(v), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			spec := grafanastandin.SeedSpec{Version: v, Orgs: 3, FoldersPerOrg: 6, DashboardsPerOrg: 5, Seed: 400,
				AdminNotMemberOf: []int64{3}, Tokens: map[string]int64{"glsa_org3": 3}}
			if v == grafanastandin.V11_6 || v == grafanastandin.V12_4 {
				spec.FolderDepth = 3
			}
			r := &release{e2eutil.DeploySeeded(t, sb, fixtures.Release{Name: "grafana", Replicas: 1, GrafanaVersion: images[v]}, spec)}

			before := takeState(t, r.Rel.Namespace)
			res := newDrill(t, nil).Run(ctx, r.options())
			if res.Outcome != drill.Refused || !strings.Contains(res.Error, "3 (") || !strings.Contains(res.Error, "--grafana-token") {
				t.Fatalf("without org 3's token: outcome %s, want refused naming org 3: %s", res.Outcome, res.Error)
			}
			assertNothingLeft(t, before)

			for _, offline := range []bool{false, true} {
				o := r.options()
				o.Offline = offline
				res := newDrill(t, nil, "glsa_org3").Run(ctx, o)
				if res.Outcome != drill.Passed || res.Checked != r.total() || res.Lost != 0 {
					t.Fatalf("offline=%v: outcome %s, checked %d of %d, lost %d: %s", offline, res.Outcome, res.Checked, r.total(), res.Lost, res.Error)
				}
				assertNothingLeft(t, before, res)
			}
		})
	}
}
