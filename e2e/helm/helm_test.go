// Package helm_test installs a Grafana-like chart with the Helm SDK, runs
// rebind migrations against it and checks that the next `helm upgrade`
// with the values rebind printed leaves the StatefulSet alone.
package helm_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/e2e/grafanastandin"
	"github.com/rebind-dev/rebind/e2e/sandbox"
	"github.com/rebind-dev/rebind/pkg/grafana"
	"github.com/rebind-dev/rebind/pkg/helmredeploy"
	"github.com/rebind-dev/rebind/pkg/kube"
	"github.com/rebind-dev/rebind/pkg/migrate"
	"github.com/rebind-dev/rebind/pkg/report"
	"github.com/rebind-dev/rebind/pkg/verify"
	"github.com/rebind-dev/rebind/pkg/workload"
)

var sb *sandbox.Sandbox

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		fmt.Fprintln(os.Stderr, "skipping e2e/helm under -short")
		os.Exit(0)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	var err error
	sb, err = sandbox.Start(ctx, sandbox.Options{NoVelero: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, "sandbox:", err)
		cancel()
		os.Exit(1)
	}
	code := m.Run()
	if err := sb.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "sandbox stop:", err)
	}
	cancel()
	os.Exit(code)
}

const chartDir = "../charts/grafana-like"

type release struct {
	t          *testing.T
	ctx        context.Context
	ns, name   string
	password   string
	helm       *helmredeploy.Helm
	clients    *kube.Clients
	dashboards int
}

func (r *release) full() string { return r.name } // release names here contain "grafana"
func (r *release) pod() string  { return r.full() + "-0" }

// install installs the chart with the Helm SDK and seeds the claim's volume.
func install(t *testing.T, perOrg int) *release {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	ns := sb.NewNamespace(t)
	r := &release{t: t, ctx: ctx, ns: ns, name: "grafana", password: "pw-" + ns}
	var err error
	if r.clients, err = kube.New(sb.RESTConfig); err != nil {
		t.Fatal(err)
	}
	if r.helm, err = helmredeploy.New(sb.RESTConfig, ns, nil); err != nil {
		t.Fatal(err)
	}
	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	inst := action.NewInstall(r.helm.Configuration())
	inst.ReleaseName, inst.Namespace = r.name, ns
	if _, err := inst.RunWithContext(ctx, ch, map[string]any{
		"adminPassword": r.password,
		"persistence":   map[string]any{"storageClassName": "standard"},
	}); err != nil {
		t.Fatal(err)
	}
	dir, _, err := fixtures.ClaimVolumeDir(ctx, sb.Kube, sb.StorageRoot(), ns, "storage-"+r.pod(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := grafanastandin.Seed(dir, grafanastandin.SeedSpec{Orgs: 2, FoldersPerOrg: 2, DashboardsPerOrg: perOrg, Seed: 7}); err != nil {
		t.Fatal(err)
	}
	r.dashboards = 2 * perOrg
	if err := workload.WaitReady(ctx, sb.Kube, ns, r.full(), 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := r.checker().Ready(ctx, r.pod()); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *release) checker() *verify.Grafana {
	return &verify.Grafana{PollInterval: 100 * time.Millisecond, ClientFor: func(pod string) (*grafana.Client, error) {
		return grafana.New(grafana.Options{URL: sb.PodURL(r.ns, pod), Credentials: grafana.Credentials{User: "admin", Password: r.password}, MaxAttempts: 2, Timeout: 10 * time.Second})
	}}
}

func (r *release) migrate(o migrate.Options) *report.Report {
	r.t.Helper()
	o.Target.Namespace, o.Target.Release = r.ns, r.name
	o.Timeouts = migrate.Timeouts{Wait: 90 * time.Second, Snapshot: 90 * time.Second, Verify: 60 * time.Second}
	var out strings.Builder
	m := &migrate.Migrate{Clients: r.clients, Checker: r.checker(), Out: &out, LeaseDuration: 15 * time.Second}
	rep, err := m.Run(r.ctx, o, migrate.Apply)
	r.t.Log(out.String())
	if err != nil {
		r.t.Fatal(err)
	}
	if rep.Outcome != report.Succeeded || len(rep.Verification) != 1 || !rep.Verification[0].OK || rep.Verification[0].Checked != r.dashboards {
		r.t.Fatalf("outcome %s, verification %+v", rep.Outcome, rep.Verification)
	}
	return rep
}

func (r *release) sts() *appsv1.StatefulSet {
	r.t.Helper()
	s, err := sb.Kube.AppsV1().StatefulSets(r.ns).Get(r.ctx, r.full(), metav1.GetOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
	return s
}

// upgrade is what a user runs next: `helm upgrade --reuse-values` with the
// values file rebind printed (nil: none).
func (r *release) upgrade(values map[string]any) error {
	ch, err := loader.Load(chartDir)
	if err != nil {
		return err
	}
	up := action.NewUpgrade(r.helm.Configuration())
	up.Namespace, up.ReuseValues = r.ns, true
	_, err = up.RunWithContext(r.ctx, r.name, ch, values)
	return err
}

// assertUpgradeKeeps runs the user's next upgrade and checks that the
// StatefulSet rebind left is the one that keeps running.
func (r *release) assertUpgradeKeeps(values map[string]any) {
	r.t.Helper()
	before := r.sts()
	if err := r.upgrade(values); err != nil {
		r.t.Fatalf("helm upgrade with rebind's values: %v", err)
	}
	after := r.sts()
	if after.UID != before.UID {
		r.t.Errorf("StatefulSet replaced: uid %s -> %s", before.UID, after.UID)
	}
	if !equality.Semantic.DeepEqual(before.Spec.VolumeClaimTemplates, after.Spec.VolumeClaimTemplates) {
		r.t.Errorf("claim template changed:\n%+v\n%+v", before.Spec.VolumeClaimTemplates, after.Spec.VolumeClaimTemplates)
	}
	if after.Generation != before.Generation {
		r.t.Errorf("StatefulSet spec changed (generation %d -> %d)", before.Generation, after.Generation)
	}
}

func TestRedeployWithHelm(t *testing.T) {
	r := install(t, 6)
	orig := r.sts()
	rep := r.migrate(migrate.Options{Strategy: migrate.Restore, ToClass: "premium", Redeploy: migrate.RedeployHelm})
	sts := r.sts()
	if sts.UID == orig.UID {
		t.Fatal("StatefulSet was not recreated")
	}
	tpl := sts.Spec.VolumeClaimTemplates[0].Spec
	if tpl.StorageClassName == nil || *tpl.StorageClassName != "premium" || tpl.VolumeName != rep.VolumesAfter[0].PV {
		t.Errorf("template class %v volumeName %q, want premium and %s", tpl.StorageClassName, tpl.VolumeName, rep.VolumesAfter[0].PV)
	}
	rel, err := r.helm.Release(r.name)
	if err != nil {
		t.Fatal(err)
	}
	if rel.Version != 2 {
		t.Errorf("release revision %d, want 2 (rebind's upgrade)", rel.Version)
	}
	p, _ := rel.Config["persistence"].(map[string]any)
	if p["volumeName"] != rep.VolumesAfter[0].PV || p["storageClassName"] != "premium" {
		t.Errorf("release values %v", rel.Config)
	}
	if _, ok := rel.Config["adminPassword"]; !ok {
		t.Errorf("user values lost: %v", rel.Config)
	}
	if len(rep.Warnings) != 0 {
		t.Errorf("a Helm redeploy needs no warning: %v", rep.Warnings)
	}
	r.assertUpgradeKeeps(rep.HelmValues)
}

func TestDirectRedeployWarnsAndValuesHold(t *testing.T) {
	r := install(t, 5)
	rep := r.migrate(migrate.Options{Strategy: migrate.Restore, ToClass: "premium"})
	if len(rep.Warnings) == 0 || !strings.Contains(rep.Warnings[0], "helm upgrade grafana") {
		t.Fatalf("want the helm upgrade warning, got %v", rep.Warnings)
	}
	var summary strings.Builder
	rep.WriteSummary(&summary)
	if !strings.Contains(summary.String(), "WARNING: the StatefulSet was recreated directly") {
		t.Errorf("summary lacks the warning:\n%s", summary.String())
	}
	// Without the values Helm renders the old claim template: refused.
	if err := r.upgrade(nil); err == nil || !strings.Contains(err.Error(), "field is immutable") {
		t.Errorf("helm upgrade without rebind's values: %v, want the immutable-field refusal", err)
	}
	r.assertUpgradeKeeps(rep.HelmValues)
}
