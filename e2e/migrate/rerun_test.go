package migrate_test

import (
	"strings"
	"testing"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/pkg/migrate"
	"github.com/rebind-dev/rebind/pkg/report"
)

// TestIdenticalRerunAfterCompletion: the command of a run killed at its
// very end (journal Completed, exit code lost) is run again. It reports
// the completed run and changes nothing, instead of a second snapshot and
// volume; --again migrates anew.
func TestIdenticalRerunAfterCompletion(t *testing.T) {
	e2eutil.NeedSandbox(t)
	e := deployGrafana(t, fixtures.Release{Name: "grafana", Replicas: 1}, 4)
	o := e.options(migrate.Restore)
	o.ToClass = "premium"
	first, err := e.Migrator().Run(e.Ctx, o, migrate.Apply)
	if err != nil || first.Outcome != report.Succeeded {
		t.Fatalf("first run: %v, %+v", err, first)
	}
	before := e.ClusterState()
	again, err := e.Migrator().Run(e.Ctx, o, migrate.Apply)
	if err != nil || again.Outcome != report.Succeeded || again.RunID != first.RunID || len(again.Notes) != 1 || !strings.Contains(again.Notes[0], "nothing to do; pass --again") {
		t.Fatalf("identical re-run: %v, run %s (first %s), notes %q", err, again.RunID, first.RunID, again.Notes)
	}
	if after := e.ClusterState(); after != before {
		t.Fatalf("the identical re-run changed the cluster:\n%s\n---\n%s", before, after)
	}

	o.Again = true
	third, err := e.Migrator().Run(e.Ctx, o, migrate.Apply)
	if err != nil || third.Outcome != report.Succeeded || third.RunID == first.RunID || third.VolumesAfter[0].PV == first.VolumesAfter[0].PV {
		t.Fatalf("--again: %v, run %s (first %s), volume %v (first %v)", err, third.RunID, first.RunID, third.VolumesAfter, first.VolumesAfter)
	}
}
