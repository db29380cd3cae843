package drill_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/pkg/drill"
)

// TestDrillNeverKeepsAStrangersPV: someone else's Available PV in the
// restore class is bound by the real binder to the drill's restore claim
// (kubernetes/kubernetes#101878). Deleting the scratch namespace with it
// bound would delete that volume (reclaim policy Delete). The drill must
// hand it back exactly as it was and still restore and check the snapshot.
func TestDrillNeverKeepsAStrangersPV(t *testing.T) {
	e2eutil.NeedSandbox(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r := deployGrafana(t, fixtures.Release{Name: "grafana", Replicas: 1}, 6)
	stranger := e2eutil.StrangerPV(t, sb, "stranger-"+r.Rel.Namespace, "standard")
	bound := e2eutil.WatchBound(t, sb, stranger.Name)
	before := takeState(t, r.Rel.Namespace)
	res := newDrill(t, nil).Run(ctx, r.options())
	if res.Outcome != drill.Passed || res.Checked != r.total() || res.Lost != 0 {
		t.Fatalf("outcome %s (checked %d, lost %d): %s", res.Outcome, res.Checked, res.Lost, res.Error)
	}
	if !bound() {
		t.Fatal("the binder never bound the stranger's PV: the test did not exercise the case")
	}
	if !strings.Contains(strings.Join(res.Notes, "\n"), "wrong volume bound") {
		t.Errorf("notes do not say what happened: %q", res.Notes)
	}
	e2eutil.AssertGivenBack(t, sb, stranger)
	assertNothingLeft(t, before, res)
}
