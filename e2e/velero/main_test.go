// Package velero_test runs rebind's Velero paths (a Backup before the first
// change, and the velero-restore strategy) against a real control plane
// with Velero's CRDs and the sandbox's Velero stand-in, checking every
// dashboard through the Grafana API stand-in.
package velero_test

import (
	"fmt"
	"os"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/utils/ptr"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/e2e/sandbox"
	"github.com/rebind-dev/rebind/pkg/migrate"
)

var sb *sandbox.Sandbox

func TestMain(m *testing.M) { os.Exit(e2eutil.RunMain(m, &sb, sandbox.Options{})) }

var testTimeouts = migrate.Timeouts{Wait: 90 * time.Second, Snapshot: 90 * time.Second, Verify: 60 * time.Second, VeleroPickup: 15 * time.Second}

type grafanaEnv struct{ *e2eutil.Grafana }

func deployGrafana(t *testing.T, rel fixtures.Release, perOrg int) *grafanaEnv {
	t.Helper()
	return &grafanaEnv{e2eutil.DeployGrafana(t, sb, rel, perOrg)}
}

func (e *grafanaEnv) options(strategy migrate.Strategy) migrate.Options {
	return e.Options(strategy, testTimeouts)
}

// workloadState fingerprints what a migration mutates (StatefulSet, claims,
// PVs); journals are counted separately so a refused run can be told from
// one that stopped after recording its plan.
func (e *grafanaEnv) workloadState() string {
	e.T.Helper()
	return e2eutil.Fingerprint(e.WorkloadLines(
		func(s appsv1.StatefulSet) string {
			return fmt.Sprintf("sts %s uid=%s gen=%d replicas=%d", s.Name, s.UID, s.Generation, ptr.Deref(s.Spec.Replicas, 1))
		},
		e2eutil.PVLine))
}
