package migrate_test

import (
	"database/sql"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/e2e/grafanastandin"
	"github.com/rebind-dev/rebind/pkg/inventory"
	"github.com/rebind-dev/rebind/pkg/migrate"
)

// grafana12 is a Grafana 12/13 release as users run them now: dashboards
// and folders read through /apis, v2 dashboards next to classic ones,
// alert rules and library panels in the same grafana.db.
var grafana12 = []struct {
	name, image string
	spec        grafanastandin.SeedSpec
}{
	{"12.4 unified storage, v2 dashboards, stale legacy table", "12.4.0", grafanastandin.SeedSpec{Version: grafanastandin.V12_4,
		Orgs: 2, FoldersPerOrg: 4, FolderDepth: 2, DashboardsPerOrg: 8, Seed: 1200, AlertRulesPerOrg: 5, LibraryPanelsPerOrg: 3,
		UnifiedStorage: true, StaleLegacy: true, V2DashboardsPerOrg: 3}},
	{"13.0 (migrates to unified storage when it starts)", "13.0.1", grafanastandin.SeedSpec{Version: grafanastandin.V13_0,
		Orgs: 2, FoldersPerOrg: 4, FolderDepth: 2, DashboardsPerOrg: 8, Seed: 1300, AlertRulesPerOrg: 5, LibraryPanelsPerOrg: 3}},
}

// TestMigrateGrafana12And13: a restore into another class of a Grafana 12.4
// (unified storage, v2 dashboards) and 13.0, verified through /apis: every
// dashboard in its stored schema, every folder, alert rule and library
// panel came through.
func TestMigrateGrafana12And13(t *testing.T) {
	e2eutil.NeedSandbox(t)
	for _, tc := range grafana12 {
		t.Run(tc.name, func(t *testing.T) {
			e := &grafanaEnv{e2eutil.DeploySeeded(t, sb, fixtures.Release{Name: "grafana", Replicas: 1, GrafanaVersion: tc.image}, tc.spec)}
			base := e.Inventory(0)
			tot := base.Totals()
			if !strings.HasPrefix(base.API, "apis/") || tot.AlertRules != 10 || tot.LibraryPanels != 6 {
				t.Fatalf("baseline read through %q with %+v: want /apis, 10 alert rules, 6 library panels", base.API, tot)
			}
			o := e.options(migrate.Restore)
			o.ToClass = "premium"
			rep, err := e.Migrator().Run(e.Ctx, o, migrate.Apply)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Outcome != "succeeded" || len(rep.Verification) != 1 || !rep.Verification[0].OK || rep.Verification[0].Checked != tot.Dashboards {
				t.Fatalf("verification %+v, want %d dashboards", rep.Verification, tot.Dashboards)
			}
			if !strings.Contains(rep.Verification[0].Summary, "10 alert rules and 6 library panels identical") {
				t.Errorf("summary %q does not say the alert rules and library panels were checked", rep.Verification[0].Summary)
			}
			after := e.Inventory(0)
			if r := inventory.Compare(base, after); !r.OK() || r.ItemTotals().Lost() != 0 {
				t.Fatalf("after the migration:\n%s", r.Summary())
			}
		})
	}
}

// TestLostAlertRuleRollsBack: the restored copy lacks one alert rule (its
// dashboards are all there): verification fails and the migration is
// rolled back (exit 3 from the binary), the original volume back in use.
func TestLostAlertRuleRollsBack(t *testing.T) {
	e2eutil.NeedSandbox(t)
	spec := grafana12[0].spec
	e := &grafanaEnv{e2eutil.DeploySeeded(t, sb, fixtures.Release{Name: "grafana", Replicas: 1, GrafanaVersion: "12.4.0"}, spec)}
	orig := e.BoundPV(0).Name
	m := e.Migrator()
	m.AfterStep = e2eutil.DamageRestoredVolume(sb, e.Rel.Namespace, orig, func(dir string) error {
		db, err := sql.Open("sqlite", filepath.Join(dir, grafanastandin.DBFile))
		if err != nil {
			return err
		}
		defer db.Close()
		_, err = db.Exec(`DELETE FROM alert_rule WHERE id = (SELECT MIN(id) FROM alert_rule)`)
		return err
	})
	o := e.options(migrate.Restore)
	o.ToClass = "premium"
	rep, err := m.Run(e.Ctx, o, migrate.Apply)
	var rb *migrate.RolledBackError
	if !errors.As(err, &rb) || rep.Outcome != "rolled-back" {
		t.Fatalf("want a rollback, got outcome %s: %v", rep.Outcome, err)
	}
	if len(rep.Verification) != 1 || rep.Verification[0].Lost != 1 || !strings.Contains(rep.Verification[0].Summary, "alert rules 1 missing") {
		t.Fatalf("verification %+v: want the lost alert rule named", rep.Verification)
	}
	if pv := e.BoundPV(0); pv.Name != orig {
		t.Fatalf("after rollback on %s, want %s", pv.Name, orig)
	}
}

// TestGrafana13SeededAfterThePodIsReady pins the sandbox's order: a pod
// that is Ready before its volume is seeded must still serve the seeded
// dashboards. Its stand-in opens the database on the first request, as a
// Grafana starting then would; opened at Ready, a 13.0 migrated the empty
// database to unified storage and never saw the dashboards (a CI flake).
func TestGrafana13SeededAfterThePodIsReady(t *testing.T) {
	e2eutil.NeedSandbox(t)
	g := e2eutil.NewGrafana(t, sb, fixtures.Release{Name: "grafana", Replicas: 1, GrafanaVersion: "13.0.1"})
	if err := g.Rel.Deploy(g.Ctx, sb.Kube); err != nil {
		t.Fatal(err)
	}
	if err := g.WaitReady(time.Minute); err != nil {
		t.Fatal(err)
	}
	// The runner has taken the Ready pod up before the seed.
	for deadline := time.Now().Add(time.Minute); !sb.GrafanaAttached(g.Rel.Namespace, g.Rel.Pod(0)); {
		if time.Now().After(deadline) {
			t.Fatal("the runner never served the Ready pod")
		}
		time.Sleep(20 * time.Millisecond)
	}
	g.Seed(grafanastandin.SeedSpec{Version: grafanastandin.V13_0, Orgs: 2, FoldersPerOrg: 2, DashboardsPerOrg: 5, Seed: 1301})
	inv := g.Inventory(0)
	if got := inv.Totals().Dashboards; got != 10 || !strings.HasPrefix(inv.API, "apis/") {
		t.Fatalf("%d dashboards through %q, want the 10 seeded through /apis", got, inv.API)
	}
}
