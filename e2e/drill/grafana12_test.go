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

// TestDrillGrafana12And13: drills of Grafana 12.4 with unified storage (v2
// dashboards, the legacy table stale) and of 13.0, online through /apis
// and offline from the restored grafana.db: every dashboard, folder, alert
// rule and library panel checked. Offline, the reader must take unified
// storage, not the stale legacy table.
func TestDrillGrafana12And13(t *testing.T) {
	e2eutil.NeedSandbox(t)
	for _, tc := range []struct {
		name, image string
		spec        grafanastandin.SeedSpec
	}{
		{"12.4 unified storage", "12.4.0", grafanastandin.SeedSpec{Version: grafanastandin.V12_4, Orgs: 2, FoldersPerOrg: 3, FolderDepth: 2,
			DashboardsPerOrg: 6, Seed: 1201, AlertRulesPerOrg: 4, LibraryPanelsPerOrg: 2, UnifiedStorage: true, StaleLegacy: true, V2DashboardsPerOrg: 2}},
		{"13.0", "13.0.1", grafanastandin.SeedSpec{Version: grafanastandin.V13_0, Orgs: 2, FoldersPerOrg: 3, FolderDepth: 2,
			DashboardsPerOrg: 6, Seed: 1301, AlertRulesPerOrg: 4, LibraryPanelsPerOrg: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			r := &release{e2eutil.DeploySeeded(t, sb, fixtures.Release{Name: "grafana", Replicas: 1, GrafanaVersion: tc.image}, tc.spec)}
			want := r.Inventory(0).Totals()
			for _, offline := range []bool{false, true} {
				o := r.options()
				o.Offline = offline
				res := newDrill(t, nil).Run(ctx, o)
				if res.Outcome != drill.Passed || res.Checked != want.Dashboards || res.Lost != 0 {
					t.Fatalf("offline=%v: outcome %s, checked %d of %d, lost %d: %s", offline, res.Outcome, res.Checked, want.Dashboards, res.Lost, res.Error)
				}
				if s := res.Verification[0].Summary; !strings.Contains(s, "8 alert rules and 4 library panels identical") {
					t.Errorf("offline=%v: %q does not say the alert rules and library panels were checked", offline, s)
				}
			}
		})
	}
}
