package drill_test

import (
	"context"
	"testing"
	"time"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/e2e/sandbox"
	"github.com/rebind-dev/rebind/pkg/migrate"
	"github.com/rebind-dev/rebind/pkg/report"
)

// TestRBACVeleroAddOnAsServiceAccount proves that rbac-migrate.yaml plus
// rbac-migrate-velero-helm.yaml are enough for --backup velero and for
// --strategy velero-restore: the drift test only proves they match what
// preflight asks for, not that preflight asks for everything.
func TestRBACVeleroAddOnAsServiceAccount(t *testing.T) {
	e2eutil.NeedSandbox(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	ns := sb.NewNamespace(t)
	suffix := "velero-" + ns
	sa := applyRBAC(t, "rbac-migrate.yaml", ns, suffix, nil)
	applyRBAC(t, "rbac-migrate-velero-helm.yaml", ns, suffix, nil)
	r := deployGrafana(t, fixtures.Release{Name: "grafana", Namespace: ns, Replicas: 1}, 4)
	m := r.Migrator()
	m.Clients = saClients(t, ns, sa)
	timeouts := migrate.Timeouts{Wait: 90 * time.Second, Snapshot: 90 * time.Second, Verify: 60 * time.Second}

	o := r.Options(migrate.Reuse, timeouts)
	o.Backup = migrate.BackupVelero
	rep, err := m.Run(ctx, o, migrate.Apply)
	if err != nil {
		t.Fatalf("migrate --backup velero as %s: %v", sa, err)
	}
	if rep.Outcome != report.Succeeded || rep.VeleroBackup == "" {
		t.Fatalf("outcome %s, backup %q", rep.Outcome, rep.VeleroBackup)
	}

	o = r.Options(migrate.VeleroRestore, timeouts)
	// The real Velero server took the backup as CSI snapshots: restored
	// into another class of the same driver (another driver needs the data
	// mover, refused in preflight; e2e/velero tests both).
	o.FromBackup, o.ToClass = rep.VeleroBackup, sandbox.StorageClassPremium
	rep, err = m.Run(ctx, o, migrate.Apply)
	if err != nil {
		t.Fatalf("migrate --strategy velero-restore as %s: %v", sa, err)
	}
	if rep.Outcome != report.Succeeded || len(rep.Verification) != 1 || !rep.Verification[0].OK {
		t.Fatalf("outcome %s, verification %+v", rep.Outcome, rep.Verification)
	}
	if pv := r.BoundPV(0); pv.Spec.StorageClassName != sandbox.StorageClassPremium {
		t.Fatalf("ordinal 0 on class %s, want %s", pv.Spec.StorageClassName, sandbox.StorageClassPremium)
	}
}
