package migrate_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/e2e/grafanastandin"
	"github.com/rebind-dev/rebind/pkg/migrate"
	"github.com/rebind-dev/rebind/pkg/preflight"
)

// versionImage is an image tag of each modelled Grafana version.
var versionImage = map[grafanastandin.Version]string{
	grafanastandin.V9_5: "9.5.21", grafanastandin.V10_4: "10.4.19", grafanastandin.V11_6: "11.6.7", grafanastandin.V12_4: "12.4.0",
}

// threeOrgs seeds 3 orgs; the admin is not a member of org 3, whose
// service-account token grafana.db holds; nested folders 3 deep where the
// version nests folders by default.
func threeOrgs(v grafanastandin.Version) grafanastandin.SeedSpec {
	spec := grafanastandin.SeedSpec{Version: v, Orgs: 3, FoldersPerOrg: 6, DashboardsPerOrg: 8, Seed: 300,
		AdminNotMemberOf: []int64{3}, Tokens: map[string]int64{"glsa_org3": 3}}
	if v == grafanastandin.V11_6 || v == grafanastandin.V12_4 {
		spec.FolderDepth = 3
	}
	return spec
}

// TestMigrateEachGrafanaVersion: for every modelled Grafana version, with
// dashboards in 3 orgs of which the admin is a member of only 2: without a
// way to read the third, preflight refuses and nothing changes; with that
// org's token, a restore into another class verifies every dashboard of
// all 3 orgs, nested folders included (none reported moved).
func TestMigrateEachGrafanaVersion(t *testing.T) {
	e2eutil.NeedSandbox(t)
	for _, v := range grafanastandin.Versions {
		t.Run(string(v), func(t *testing.T) {
			rel := fixtures.Release{Name: "grafana", Replicas: 1, GrafanaVersion: versionImage[v]}
			e := &grafanaEnv{e2eutil.DeploySeeded(t, sb, rel, threeOrgs(v))}

			// Membership missing, no token: refused before any change.
			before := e.ClusterState()
			tokens := e.OrgTokens
			e.OrgTokens = nil
			o := e.options(migrate.Restore)
			o.ToClass = "premium"
			_, err := e.Migrator().Run(e.Ctx, o, migrate.Apply)
			var pf *preflight.Error
			if !errors.As(err, &pf) || !strings.Contains(err.Error(), "3 (") || !strings.Contains(err.Error(), "--grafana-token") || !strings.Contains(err.Error(), "--grafana-org-id") {
				t.Fatalf("want preflight refusing unreadable org 3 with the fixes, got %v", err)
			}
			if after := e.ClusterState(); after != before {
				t.Fatalf("a refused run changed the cluster:\n%s\n---\n%s", before, after)
			}

			e.OrgTokens = tokens
			rep, err := e.Migrator().Run(e.Ctx, o, migrate.Apply)
			if err != nil {
				t.Fatal(err)
			}
			e.AssertVerified(rep)
			if got := e.Inventory(0); len(got.Orgs) != 3 {
				t.Fatalf("verified %d orgs, want 3", len(got.Orgs))
			}
		})
	}
}

// TestVerifyThroughA429Storm: an Ingress in front of Grafana answers 429
// with Retry-After: 1 for 3 s just as verification starts; the run waits
// as asked and finishes.
func TestVerifyThroughA429Storm(t *testing.T) {
	e2eutil.NeedSandbox(t)
	e := deployGrafana(t, fixtures.Release{Name: "grafana", Replicas: 1}, 6)
	m := e.Migrator()
	m.AfterStep = func(_ context.Context, id string) error {
		if id == "redeploy" {
			return sb.ThrottleGrafana(e.Rel.Namespace, e.Rel.Pod(0), 3*time.Second, 1)
		}
		return nil
	}
	o := e.options(migrate.Restore)
	o.ToClass = "premium"
	start := time.Now()
	rep, err := m.Run(e.Ctx, o, migrate.Apply)
	if err != nil {
		t.Fatal(err)
	}
	e.AssertVerified(rep)
	if d := time.Since(start); d < 3*time.Second {
		t.Fatalf("the run took %s: the 429s were not answered", d)
	}
}

// TestGrafanaTokenEndToEnd drives the binary with service-account tokens
// only (the chart's admin Secret lists the orgs): a token that sees one org
// is refused naming the others; one token per org migrates and verifies
// every dashboard of every org.
func TestGrafanaTokenEndToEnd(t *testing.T) {
	e2eutil.NeedSandbox(t)
	bin := e2eutil.BuildRebind(t)
	spec := threeOrgs(grafanastandin.V12_4)
	spec.Tokens = map[string]int64{"glsa_org1": 1, "glsa_org2": 2, "glsa_org3": 3}
	e := &grafanaEnv{e2eutil.DeploySeeded(t, sb, fixtures.Release{Name: "grafana", Replicas: 1, GrafanaVersion: "12.4.0"}, spec)}
	ns, pod := e.Rel.Namespace, e.Rel.Pod(0)
	args := []string{"migrate", "-n", ns, "--release", "grafana", "--strategy", "restore", "--to-storage-class", "premium",
		"--grafana-pod-url", pod + "=" + sb.PodURL(ns, pod), "-o", "json", "--wait-timeout", "1m"}

	before := e.ClusterState()
	r := runRebind(t, bin, append(args, "--grafana-token", "glsa_org1")...)
	if r.Code != 2 || !strings.Contains(r.Stderr, "2 (") || !strings.Contains(r.Stderr, "3 (") {
		t.Fatalf("one org's token: exit %d, want 2 naming orgs 2 and 3:\n%s", r.Code, r.Stderr)
	}
	if after := e.ClusterState(); after != before {
		t.Fatalf("a refused run changed the cluster:\n%s\n---\n%s", before, after)
	}

	r = runRebind(t, bin, append(args, "--grafana-token", "glsa_org1", "--grafana-token", "glsa_org2", "--grafana-token", "glsa_org3")...)
	if r.Code != 0 {
		t.Fatalf("a token per org: exit %d\n%s", r.Code, r.Stderr)
	}
	rep := r.Report(t)
	if rep.Outcome != "succeeded" || len(rep.Verification) != 1 || !rep.Verification[0].OK || rep.Verification[0].Checked != 3*spec.DashboardsPerOrg {
		t.Fatalf("report does not verify %d dashboards in 3 orgs:\n%s", 3*spec.DashboardsPerOrg, r.Stdout)
	}
}
