// Package faults_test kills the real rebind binary with SIGKILL at random
// instants inside its steps, and breaks the parts it depends on (the API
// server, Grafana, the snapshot controller) mid-run, on a real control
// plane; then it runs the same command again until the migration finishes
// or rolls back, and checks that nothing was lost and that the end state is
// the one a run without faults leaves.
//
// Seeded and reproducible: the seed is printed; REBIND_FAULTS_SEED replays
// it, REBIND_FAULTS_KILLS sets the kills per strategy (default 3, `make
// faults` 30), and `-run 'TestFaultMatrix/restore/episode-02'` replays one
// episode with the seed (each episode draws from its own generator).
package faults_test

import (
	"os"
	"testing"
	"time"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/sandbox"
	"github.com/rebind-dev/rebind/pkg/migrate"
)

var sb *sandbox.Sandbox

func TestMain(m *testing.M) { os.Exit(e2eutil.RunMain(m, &sb, sandbox.Options{})) }

// timeouts bound every wait of the in-process helpers; the binary gets the
// same bounds through its flags.
var timeouts = migrate.Timeouts{Wait: 90 * time.Second, Snapshot: 90 * time.Second, Verify: 60 * time.Second, VeleroPickup: 15 * time.Second}
