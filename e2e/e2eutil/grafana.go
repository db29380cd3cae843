package e2eutil

import (
	"context"
	"maps"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/e2e/grafanastandin"
	"github.com/rebind-dev/rebind/e2e/sandbox"
	"github.com/rebind-dev/rebind/pkg/grafana"
	"github.com/rebind-dev/rebind/pkg/inventory"
	"github.com/rebind-dev/rebind/pkg/kube"
	"github.com/rebind-dev/rebind/pkg/migrate"
	"github.com/rebind-dev/rebind/pkg/report"
	"github.com/rebind-dev/rebind/pkg/verify"
	"github.com/rebind-dev/rebind/pkg/workload"
)

// Grafana is one Grafana release in the sandbox, with what each ordinal was
// seeded with.
type Grafana struct {
	T       testing.TB
	Ctx     context.Context // ends with the test
	SB      *sandbox.Sandbox
	Rel     fixtures.Release
	Clients *kube.Clients
	// Dashboards seeded per ordinal, to assert counts.
	Dashboards []int
	// OrgTokens are service-account tokens the checker uses besides the
	// admin's password, for orgs the admin is not a member of.
	OrgTokens []string
}

// Seeding is the seed every suite uses unless it needs its own data:
// ordinal i gets PerOrg+i dashboards in each of 2 orgs from seed 100+i.
func Seeding(perOrg int) grafanastandin.SeedSpec {
	return grafanastandin.SeedSpec{Orgs: 2, FoldersPerOrg: 3, DashboardsPerOrg: perOrg, Seed: 100}
}

// DeployGrafana deploys rel the way the chart does and seeds it with
// Seeding(perOrg).
func DeployGrafana(t testing.TB, sb *sandbox.Sandbox, rel fixtures.Release, perOrg int) *Grafana {
	t.Helper()
	return DeploySeeded(t, sb, rel, Seeding(perOrg))
}

// DeploySeeded deploys rel the way the chart does and seeds it with spec.
func DeploySeeded(t testing.TB, sb *sandbox.Sandbox, rel fixtures.Release, spec grafanastandin.SeedSpec) *Grafana {
	t.Helper()
	g := NewGrafana(t, sb, rel)
	if err := g.Rel.Deploy(g.Ctx, sb.Kube); err != nil {
		t.Fatal(err)
	}
	g.Seed(spec)
	return g
}

// NewGrafana prepares a release that the caller installs itself (the Helm
// suite installs the chart): a new namespace unless rel names one, and a
// password unless rel has one.
func NewGrafana(t testing.TB, sb *sandbox.Sandbox, rel fixtures.Release) *Grafana {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	if rel.Namespace == "" {
		rel.Namespace = sb.NewNamespace(t)
	}
	if rel.Password == "" {
		rel.Password = "pw-" + rel.Namespace
	}
	clients, err := kube.New(sb.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	return &Grafana{T: t, Ctx: ctx, SB: sb, Rel: rel, Clients: clients}
}

// Seed fills each ordinal's volume and waits until Grafana serves it.
// Ordinal i gets spec.DashboardsPerOrg+i dashboards from seed spec.Seed+i,
// so that a swap between replicas shows.
func (g *Grafana) Seed(spec grafanastandin.SeedSpec) {
	g.T.Helper()
	sb, rel := g.SB, g.Rel
	if g.OrgTokens == nil {
		// The checker reads with the tokens the database holds.
		g.OrgTokens = slices.Sorted(maps.Keys(spec.Tokens))
	}
	for i := 0; i < int(rel.Replicas); i++ {
		dir, _, err := fixtures.ClaimVolumeDir(g.Ctx, sb.Kube, sb.StorageRoot(), rel.Namespace, rel.Claim(i), time.Minute)
		if err != nil {
			g.T.Fatal(err)
		}
		s := spec
		if s.Version == "" && g.Rel.GrafanaVersion != "" {
			// The layout the Grafana of the pod's image writes.
			v, err := grafanastandin.ParseVersion(g.Rel.GrafanaVersion)
			if err != nil {
				g.T.Fatal(err)
			}
			s.Version = v
		}
		s.DashboardsPerOrg += i
		s.Seed += int64(i)
		if err := grafanastandin.Seed(dir, s); err != nil {
			g.T.Fatal(err)
		}
		g.Dashboards = append(g.Dashboards, s.Orgs*s.DashboardsPerOrg)
	}
	if err := g.WaitReady(2 * time.Minute); err != nil {
		g.T.Fatal(err)
	}
	for i := 0; i < int(rel.Replicas); i++ {
		if err := g.Checker().Ready(g.Ctx, rel.Pod(i)); err != nil {
			g.T.Fatal(err)
		}
	}
}

// WaitReady waits until the release's workload is Ready.
func (g *Grafana) WaitReady(timeout time.Duration) error {
	if g.Rel.Deployment {
		return workload.WaitDeploymentReady(g.Ctx, g.SB.Kube, g.Rel.Namespace, g.Rel.FullName(), timeout)
	}
	return workload.WaitReady(g.Ctx, g.SB.Kube, g.Rel.Namespace, g.Rel.FullName(), timeout)
}

// Client reaches pod's Grafana through the sandbox's stable per-pod URL.
func (g *Grafana) Client(pod string) (*grafana.Client, error) {
	return grafana.New(grafana.Options{URL: g.SB.PodURL(g.Rel.Namespace, pod),
		Credentials: grafana.Credentials{User: "admin", Password: g.Rel.Password}, OrgTokens: g.OrgTokens, MaxAttempts: 2, Timeout: 10 * time.Second})
}

func (g *Grafana) Checker() *verify.Grafana {
	return &verify.Grafana{ClientFor: g.Client, PollInterval: 100 * time.Millisecond}
}

// Migrator logs the run's progress to the test.
func (g *Grafana) Migrator() *migrate.Migrate {
	return &migrate.Migrate{Clients: g.Clients, Checker: g.Checker(), LeaseDuration: 15 * time.Second, Out: TestWriter{g.T}}
}

// Options targets this release; timeouts keep a stuck wait from eating the
// whole test budget.
func (g *Grafana) Options(strategy migrate.Strategy, timeouts migrate.Timeouts) migrate.Options {
	o := migrate.Options{Strategy: strategy, Timeouts: timeouts}
	o.Target.Namespace = g.Rel.Namespace
	o.Target.Release = g.Rel.Name
	return o
}

// Inventory takes what ordinal i's Grafana serves now.
func (g *Grafana) Inventory(i int) *inventory.Inventory {
	g.T.Helper()
	c, err := g.Client(g.Rel.Pod(i))
	if err != nil {
		g.T.Fatal(err)
	}
	if err := g.Checker().Ready(g.Ctx, g.Rel.Pod(i)); err != nil {
		g.T.Fatal(err)
	}
	inv, err := inventory.FromGrafana(g.Ctx, c, inventory.Options{})
	if err != nil {
		g.T.Fatal(err)
	}
	return inv
}

// BoundPV returns the PV bound to ordinal i's claim.
func (g *Grafana) BoundPV(i int) *corev1.PersistentVolume {
	g.T.Helper()
	c, err := g.SB.Kube.CoreV1().PersistentVolumeClaims(g.Rel.Namespace).Get(g.Ctx, g.Rel.Claim(i), metav1.GetOptions{})
	if err != nil {
		g.T.Fatal(err)
	}
	pv, err := g.SB.Kube.CoreV1().PersistentVolumes().Get(g.Ctx, c.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		g.T.Fatal(err)
	}
	return pv
}

// AssertVerified checks the report says every seeded dashboard came through
// and that the live Grafana agrees with the seeded counts.
func (g *Grafana) AssertVerified(rep *report.Report) {
	g.T.Helper()
	if rep.Outcome != report.Succeeded {
		g.T.Fatalf("outcome %s: %s", rep.Outcome, rep.Error)
	}
	if len(rep.Verification) != int(g.Rel.Replicas) {
		g.T.Fatalf("want %d verdicts, got %+v", g.Rel.Replicas, rep.Verification)
	}
	for i, v := range rep.Verification {
		if !v.OK || v.Checked != g.Dashboards[i] || v.Lost != 0 {
			g.T.Errorf("ordinal %d verdict %+v, want %d dashboards ok", i, v, g.Dashboards[i])
		}
		if got := g.Inventory(i).Totals().Dashboards; got != g.Dashboards[i] {
			g.T.Errorf("ordinal %d serves %d dashboards, seeded %d", i, got, g.Dashboards[i])
		}
	}
}
