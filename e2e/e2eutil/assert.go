package e2eutil

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	_ "modernc.org/sqlite" // DeleteSomeDashboards edits grafana.db

	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/e2e/sandbox"
	"github.com/rebind-dev/rebind/pkg/inventory"
	"github.com/rebind-dev/rebind/pkg/kube"
)

// AssertSameDashboards compares two inventories the way verify does.
func AssertSameDashboards(t testing.TB, base, cur *inventory.Inventory) {
	t.Helper()
	r := inventory.Compare(base, cur)
	missing, _, changed, moved, identical := r.Totals()
	if !r.OK() || missing+changed+moved > 0 {
		t.Fatalf("dashboards differ:\n%s", r.Summary())
	}
	if identical != base.Totals().Dashboards {
		t.Fatalf("%d identical of %d", identical, base.Totals().Dashboards)
	}
}

// WaitPVGone waits until the PV no longer exists.
func WaitPVGone(t testing.TB, sb *sandbox.Sandbox, name string) {
	t.Helper()
	_, err := kube.Until(context.Background(), time.Minute, "PersistentVolume "+name+" to be deleted", kube.PVLW(sb.Kube, name),
		func(_ *corev1.PersistentVolume, exists bool) (bool, error) { return !exists, nil }, nil)
	if err != nil {
		t.Fatal(err)
	}
}

// DeleteSomeDashboards removes n dashboard rows straight from a grafana.db,
// the way a torn or stale copy would lack them.
func DeleteSomeDashboards(dbPath string, n int) error {
	db, err := sql.Open("sqlite", dbPath)
	if err != nil {
		return err
	}
	defer db.Close()
	res, err := db.Exec(`DELETE FROM dashboard WHERE id IN (SELECT id FROM dashboard WHERE is_folder = 0 ORDER BY id LIMIT ?)`, n)
	if err != nil {
		return err
	}
	if got, _ := res.RowsAffected(); got != int64(n) {
		return fmt.Errorf("deleted %d rows, want %d", got, n)
	}
	return nil
}

// DeleteAllDashboards empties a grafana.db of dashboards (folders stay).
func DeleteAllDashboards(dbPath string) error {
	db, err := sql.Open("sqlite", dbPath)
	if err != nil {
		return err
	}
	defer db.Close()
	_, err = db.Exec(`DELETE FROM dashboard WHERE is_folder = 0`)
	return err
}

// TestWriter sends what rebind prints to the test log, so that it shows
// next to the failure that it explains.
type TestWriter struct{ T testing.TB }

func (w TestWriter) Write(p []byte) (int, error) {
	w.T.Helper()
	w.T.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// DamageRestoredVolume is an AfterStep hook: right after restore/0 it finds
// the volume restored for namespace ns (not orig, still naming the
// restore's own claim rebind-<run>-<claim>, which the step deleted) and
// damages the files in its directory, as a bad snapshot would. The claim
// it names, not the PV's phase, tells it: the binder may not have marked
// the volume Released yet.
func DamageRestoredVolume(sb *sandbox.Sandbox, ns, orig string, damage func(dir string) error) func(context.Context, string) error {
	return func(ctx context.Context, id string) error {
		if id != "restore/0" {
			return nil
		}
		list, err := sb.Kube.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, pv := range list.Items {
			if pv.Name == orig || pv.Spec.ClaimRef == nil || pv.Spec.ClaimRef.Namespace != ns || !strings.HasPrefix(pv.Spec.ClaimRef.Name, "rebind-") {
				continue
			}
			dir, err := fixtures.VolumeDir(sb.StorageRoot(), &pv)
			if err != nil {
				return err
			}
			return damage(dir)
		}
		return errors.New("restored PV not found")
	}
}
