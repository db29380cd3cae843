package helm_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/pkg/migrate"
	"github.com/rebind-dev/rebind/pkg/report"
	"github.com/rebind-dev/rebind/pkg/workload"
)

// TestHelmRedeployRollback rolls back a --redeploy helm migration, after
// success and right after rebind's `helm upgrade`: the release goes back to
// its values from before (a new revision, as `helm rollback` makes), the
// original volume serves every dashboard, and the user's next plain
// `helm upgrade` works again.
func TestHelmRedeployRollback(t *testing.T) {
	e2eutil.NeedSandbox(t)
	for _, tc := range helmRollbackPoints {
		t.Run(tc.name, func(t *testing.T) {
			r := install(t, 4)
			origPV := r.BoundPV(0).Name
			base := r.Inventory(0)

			r.migrateKilledAfter(migrate.Options{Strategy: migrate.Restore, ToClass: "premium", Redeploy: migrate.RedeployHelm}, tc.killAfter)
			if rel, err := r.helm.Release(r.Rel.Name); err != nil || rel.Version != 2 {
				t.Fatalf("before the rollback: revision %v (%v), want rebind's 2", rel, err)
			}

			rep, err := r.Migrator().Rollback(r.Ctx, r.Rel.Namespace, r.Rel.FullName())
			if err != nil {
				t.Fatal(err)
			}
			if rep.Outcome != report.RolledBack {
				t.Fatalf("outcome %s", rep.Outcome)
			}
			if err := workload.WaitReady(r.Ctx, sb.Kube, r.Rel.Namespace, r.Rel.FullName(), time.Minute); err != nil {
				t.Fatal(err)
			}
			rel, err := r.helm.Release(r.Rel.Name)
			if err != nil {
				t.Fatal(err)
			}
			p, _ := rel.Config["persistence"].(map[string]any)
			if rel.Version != 3 || p["storageClassName"] != "standard" || p["volumeName"] != nil {
				t.Errorf("release after rollback: revision %d, persistence %v; want revision 3 with the original values", rel.Version, p)
			}
			if _, ok := rel.Config["adminPassword"]; !ok {
				t.Errorf("user values lost: %v", rel.Config)
			}
			if pv := r.BoundPV(0).Name; pv != origPV {
				t.Errorf("serving from %s, want the original %s", pv, origPV)
			}
			e2eutil.AssertSameDashboards(t, base, r.Inventory(0))
			// Release and cluster agree again: the next plain upgrade is a
			// no-op for the StatefulSet.
			r.assertUpgradeKeeps(nil)
		})
	}
}

// helmRollbackPoints are where the rollback tests stop a --redeploy helm
// migration: after it succeeded, and right after rebind's upgrade.
var helmRollbackPoints = []struct {
	name      string
	killAfter string
}{
	{"after success", ""},
	{"mid-way, after the helm upgrade", "redeploy"},
}

// migrateKilledAfter runs a migration that stops right after step
// killAfter was recorded, as a killed process would ("" runs it through).
func (r *release) migrateKilledAfter(o migrate.Options, killAfter string) {
	r.T.Helper()
	m := r.Migrator()
	killed := errors.New("killed by test")
	m.AfterStep = func(_ context.Context, id string) error {
		if id == killAfter {
			return killed
		}
		return nil
	}
	_, err := m.Run(r.Ctx, r.targeting(o), migrate.Apply)
	if killAfter == "" && err != nil {
		r.T.Fatal(err)
	}
	if killAfter != "" && !errors.Is(err, killed) {
		r.T.Fatalf("want killed after %s, got %v", killAfter, err)
	}
}

// TestHelmRollbackLeavesALaterUpgrade: when someone upgraded the release
// after rebind, the rollback still returns the volumes but leaves the
// release alone and says which `helm rollback` to run.
func TestHelmRollbackLeavesALaterUpgrade(t *testing.T) {
	e2eutil.NeedSandbox(t)
	r := install(t, 3)
	origPV := r.BoundPV(0).Name
	rep := r.migrate(migrate.Options{Strategy: migrate.Restore, ToClass: "premium", Redeploy: migrate.RedeployHelm})
	if err := r.upgrade(rep.HelmValues); err != nil {
		t.Fatal(err)
	}
	rb, err := r.Migrator().Rollback(r.Ctx, r.Rel.Namespace, r.Rel.FullName())
	if err != nil {
		t.Fatal(err)
	}
	if rb.Outcome != report.RolledBack {
		t.Fatalf("outcome %s", rb.Outcome)
	}
	if len(rb.Warnings) != 1 || !strings.Contains(rb.Warnings[0], "helm rollback "+r.Rel.Name+" 1 -n "+r.Rel.Namespace) {
		t.Errorf("warnings %q, want the helm rollback command", rb.Warnings)
	}
	rel, err := r.helm.Release(r.Rel.Name)
	if err != nil {
		t.Fatal(err)
	}
	if rel.Version != 3 {
		t.Errorf("release at revision %d, want the user's 3 left alone", rel.Version)
	}
	if err := workload.WaitReady(r.Ctx, sb.Kube, r.Rel.Namespace, r.Rel.FullName(), time.Minute); err != nil {
		t.Fatal(err)
	}
	if pv := r.BoundPV(0).Name; pv != origPV {
		t.Errorf("serving from %s, want the original %s", pv, origPV)
	}
}
