package drill_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/pkg/drill"
	"github.com/rebind-dev/rebind/pkg/journal"
	"github.com/rebind-dev/rebind/pkg/migrate"
)

// TestDrillAndMigrationExcludeEachOther: the nightly drill never runs
// mid-migration. It is refused while a migration holds the StatefulSet's
// Lease and while a stopped migration's journal is unfinished, creating
// nothing either time; a migration started during a drill is refused by
// the drill's hold on the same Lease; once the migration finished, the
// drill passes.
func TestDrillAndMigrationExcludeEachOther(t *testing.T) {
	e2eutil.NeedSandbox(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	r := deployGrafana(t, fixtures.Release{Name: "grafana", Replicas: 1}, 4)
	leaseRef := r.Rel.Namespace + "/" + journal.LeaseName(r.Rel.FullName())
	migOpts := r.Options(migrate.Reuse, migrate.Timeouts{Wait: 90 * time.Second, Snapshot: 90 * time.Second, Verify: 60 * time.Second})
	// The same migration runs several times here, each time anew.
	migOpts.Again = true
	refused := func(t *testing.T, want ...string) {
		t.Helper()
		before := takeState(t, r.Rel.Namespace)
		res := newDrill(t, nil).Run(ctx, r.options())
		if res.Outcome != drill.Refused {
			t.Fatalf("drill outcome %s, want refused: %s", res.Outcome, res.Error)
		}
		for _, w := range want {
			if !strings.Contains(res.Error, w) {
				t.Errorf("drill error lacks %q:\n%s", w, res.Error)
			}
		}
		assertNothingLeft(t, before)
	}

	// 1. A migration pauses after its first step, holding the Lease.
	paused, resume := make(chan struct{}), make(chan struct{})
	var once sync.Once
	m := r.Migrator()
	m.AfterStep = func(context.Context, string) error {
		once.Do(func() { close(paused); <-resume })
		return nil
	}
	done := make(chan error, 1)
	go func() { _, err := m.Run(ctx, migOpts, migrate.Apply); done <- err }()
	select {
	case <-paused:
	case err := <-done:
		t.Fatalf("migration ended before its first step: %v", err)
	}
	refused(t, "Lease "+leaseRef, "another rebind run", "a drill does not run while a migration", "nothing was created")
	close(resume)
	if err := <-done; err != nil {
		t.Fatalf("the migration failed after the refused drill: %v", err)
	}

	// 2. A migration that stopped half-way (its lease released, its
	// journal Failed).
	m = r.Migrator()
	stopped := errors.New("stopped by test")
	m.AfterStep = func(context.Context, string) error { return stopped }
	if _, err := m.Run(ctx, migOpts, migrate.Apply); !errors.Is(err, stopped) {
		t.Fatalf("want the stop, got %v", err)
	}
	refused(t, "ConfigMap "+r.Rel.Namespace+"/"+journal.Name(r.Rel.FullName()), "unfinished", "re-run the same `rebind migrate` command", "rebind rollback")

	// 3. The migration resumes and finishes; a migration attempted during
	// the drill is refused; the drill passes.
	if _, err := r.Migrator().Run(ctx, migOpts, migrate.Apply); err != nil {
		t.Fatal(err)
	}
	before := takeState(t, r.Rel.Namespace)
	d := newDrill(t, nil)
	var migErr error
	d.AfterRestore = func(ctx context.Context, _ drill.Restored) error {
		_, migErr = r.Migrator().Run(ctx, migOpts, migrate.Apply)
		return nil
	}
	res := d.Run(ctx, r.options())
	if res.Outcome != drill.Passed {
		t.Fatalf("drill outcome %s: %s", res.Outcome, res.Error)
	}
	assertNothingLeft(t, before, res)
	var locked *journal.LockedError
	if !errors.As(migErr, &locked) || !strings.HasPrefix(locked.Holder, "drill-"+res.RunID) {
		t.Fatalf("a migration during the drill: want refused by the drill's Lease, got %v", migErr)
	}
}
