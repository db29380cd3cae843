// Package migrate_test runs rebind's migrations against a real control plane
// (etcd, kube-apiserver, kube-controller-manager with the real PV binder and
// StatefulSet controller, scheduler, snapshot-controller; kwok kubelets) and
// checks every dashboard through the Grafana API stand-in.
package migrate_test

import (
	"context"
	"os"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/e2e/sandbox"
	"github.com/rebind-dev/rebind/pkg/migrate"
)

var sb *sandbox.Sandbox

func TestMain(m *testing.M) { os.Exit(e2eutil.RunMain(m, &sb, sandbox.Options{})) }

// testTimeouts keep a stuck wait from eating the whole test budget.
var testTimeouts = migrate.Timeouts{Wait: 60 * time.Second, Snapshot: 90 * time.Second, Verify: 60 * time.Second}

// grafanaEnv is one deployed, seeded Grafana release.
type grafanaEnv struct{ *e2eutil.Grafana }

func deployGrafana(t testing.TB, rel fixtures.Release, perOrg int) *grafanaEnv {
	t.Helper()
	return &grafanaEnv{e2eutil.DeployGrafana(t, sb, rel, perOrg)}
}

func (e *grafanaEnv) options(strategy migrate.Strategy) migrate.Options {
	return e.Options(strategy, testTimeouts)
}

// pvState lists the PVs claimed from e's namespace with their reclaim policy.
func pvState(e *grafanaEnv) map[string]string {
	e.T.Helper()
	out := map[string]string{}
	for _, pv := range e.ClaimedPVs() {
		out[pv.Name] = string(pv.Spec.PersistentVolumeReclaimPolicy)
	}
	return out
}

// assertNoPVDeleted checks that every PV seen before still exists.
func assertNoPVDeleted(t *testing.T, before map[string]string) {
	t.Helper()
	for name := range before {
		if _, err := sb.Kube.CoreV1().PersistentVolumes().Get(context.Background(), name, metav1.GetOptions{}); err != nil {
			t.Errorf("PersistentVolume %s: %v", name, err)
		}
	}
}
