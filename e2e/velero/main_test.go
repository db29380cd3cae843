// Package velero_test runs rebind's Velero paths (a Backup before the first
// change, and the velero-restore strategy) against a real control plane
// with Velero's CRDs and the sandbox's Velero stand-in, checking every
// dashboard through the Grafana API stand-in.
package velero_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

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

var sb *sandbox.Sandbox

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		fmt.Fprintln(os.Stderr, "skipping e2e/velero under -short")
		os.Exit(0)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	var err error
	sb, err = sandbox.Start(ctx, sandbox.Options{})
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

var testTimeouts = migrate.Timeouts{Wait: 90 * time.Second, Snapshot: 90 * time.Second, Verify: 60 * time.Second, VeleroPickup: 15 * time.Second}

type grafanaEnv struct {
	t          *testing.T
	ctx        context.Context
	rel        fixtures.Release
	clients    *kube.Clients
	dashboards []int
}

// deployGrafana deploys a release and seeds each ordinal's volume.
func deployGrafana(t *testing.T, rel fixtures.Release, perOrg int) *grafanaEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	rel.Namespace = sb.NewNamespace(t)
	if rel.Password == "" {
		rel.Password = "pw-" + rel.Namespace
	}
	clients, err := kube.New(sb.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	if err := rel.Deploy(ctx, sb.Kube); err != nil {
		t.Fatal(err)
	}
	e := &grafanaEnv{t: t, ctx: ctx, rel: rel, clients: clients}
	e.seed(perOrg)
	return e
}

// seed fills each ordinal's volume and waits until Grafana serves it.
func (e *grafanaEnv) seed(perOrg int) {
	t, ctx, rel := e.t, e.ctx, e.rel
	for i := 0; i < int(rel.Replicas); i++ {
		dir, _, err := fixtures.ClaimVolumeDir(ctx, sb.Kube, sb.StorageRoot(), rel.Namespace, rel.Claim(i), time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if err := grafanastandin.Seed(dir, grafanastandin.SeedSpec{Orgs: 2, FoldersPerOrg: 3, DashboardsPerOrg: perOrg + i, Seed: int64(100 + i)}); err != nil {
			t.Fatal(err)
		}
		e.dashboards = append(e.dashboards, 2*(perOrg+i))
	}
	if err := workload.WaitReady(ctx, sb.Kube, rel.Namespace, rel.FullName(), 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < int(rel.Replicas); i++ {
		if err := e.checker().Ready(ctx, rel.Pod(i)); err != nil {
			t.Fatal(err)
		}
	}
}

func (e *grafanaEnv) client(pod string) (*grafana.Client, error) {
	return grafana.New(grafana.Options{URL: sb.PodURL(e.rel.Namespace, pod),
		Credentials: grafana.Credentials{User: "admin", Password: e.rel.Password}, MaxAttempts: 2, Timeout: 10 * time.Second})
}

func (e *grafanaEnv) checker() *verify.Grafana {
	return &verify.Grafana{ClientFor: e.client, PollInterval: 100 * time.Millisecond}
}

func (e *grafanaEnv) migrator() *migrate.Migrate {
	return &migrate.Migrate{Clients: e.clients, Checker: e.checker(), LeaseDuration: 15 * time.Second, Out: testWriter{e.t}}
}

func (e *grafanaEnv) options(strategy migrate.Strategy) migrate.Options {
	o := migrate.Options{Strategy: strategy, Timeouts: testTimeouts}
	o.Target.Namespace = e.rel.Namespace
	o.Target.Release = e.rel.Name
	return o
}

func (e *grafanaEnv) inventory(i int) *inventory.Inventory {
	e.t.Helper()
	c, err := e.client(e.rel.Pod(i))
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.checker().Ready(e.ctx, e.rel.Pod(i)); err != nil {
		e.t.Fatal(err)
	}
	inv, err := inventory.FromGrafana(e.ctx, c, inventory.Options{})
	if err != nil {
		e.t.Fatal(err)
	}
	return inv
}

// assertVerified checks the report and the live Grafana.
func (e *grafanaEnv) assertVerified(rep *report.Report) {
	e.t.Helper()
	if rep.Outcome != report.Succeeded {
		e.t.Fatalf("outcome %s: %s", rep.Outcome, rep.Error)
	}
	if len(rep.Verification) != int(e.rel.Replicas) {
		e.t.Fatalf("want %d verdicts, got %+v", e.rel.Replicas, rep.Verification)
	}
	for i, v := range rep.Verification {
		if !v.OK || v.Checked != e.dashboards[i] || v.Lost != 0 {
			e.t.Errorf("ordinal %d verdict %+v, want %d dashboards ok", i, v, e.dashboards[i])
		}
		if got := e.inventory(i).Totals().Dashboards; got != e.dashboards[i] {
			e.t.Errorf("ordinal %d serves %d dashboards, seeded %d", i, got, e.dashboards[i])
		}
	}
}

// workloadState fingerprints what a migration mutates (StatefulSet, claims,
// PVs); journals are listed separately so a refused run can be told from
// one that stopped after recording its plan.
func (e *grafanaEnv) workloadState() string {
	e.t.Helper()
	ctx, ns := e.ctx, e.rel.Namespace
	var lines []string
	sts, err := sb.Kube.AppsV1().StatefulSets(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	for _, s := range sts.Items {
		lines = append(lines, fmt.Sprintf("sts %s uid=%s gen=%d replicas=%d", s.Name, s.UID, s.Generation, ptr.Deref(s.Spec.Replicas, 1)))
	}
	pvcs, _ := sb.Kube.CoreV1().PersistentVolumeClaims(ns).List(ctx, metav1.ListOptions{})
	for _, c := range pvcs.Items {
		lines = append(lines, fmt.Sprintf("pvc %s uid=%s volume=%s phase=%s", c.Name, c.UID, c.Spec.VolumeName, c.Status.Phase))
	}
	pvs, _ := sb.Kube.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	for _, pv := range pvs.Items {
		if pv.Spec.ClaimRef == nil || pv.Spec.ClaimRef.Namespace != ns {
			continue
		}
		lines = append(lines, fmt.Sprintf("pv %s policy=%s claim=%s/%s", pv.Name, pv.Spec.PersistentVolumeReclaimPolicy, pv.Spec.ClaimRef.Name, pv.Spec.ClaimRef.UID))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func (e *grafanaEnv) journals() int {
	cms, err := sb.Kube.CoreV1().ConfigMaps(e.rel.Namespace).List(e.ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=rebind"})
	if err != nil {
		e.t.Fatal(err)
	}
	return len(cms.Items)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
