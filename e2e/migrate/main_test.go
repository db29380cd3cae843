// Package migrate_test runs rebind's migrations against a real control plane
// (etcd, kube-apiserver, kube-controller-manager with the real PV binder and
// StatefulSet controller, scheduler, snapshot-controller; kwok kubelets) and
// checks every dashboard through the Grafana API stand-in.
package migrate_test

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
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

// testTimeouts keep a stuck wait from eating the whole test budget.
var testTimeouts = migrate.Timeouts{Wait: 60 * time.Second, Snapshot: 90 * time.Second, Verify: 60 * time.Second}

// grafanaEnv is one deployed, seeded Grafana release.
type grafanaEnv struct {
	t       testing.TB
	ctx     context.Context
	rel     fixtures.Release
	clients *kube.Clients
	// dashboards seeded per ordinal, to assert counts.
	dashboards []int
}

// deployGrafana deploys a release and seeds each ordinal's volume with its
// own dashboards (ordinal i gets seed i, so a swap between replicas shows).
func deployGrafana(t testing.TB, rel fixtures.Release, perOrg int) *grafanaEnv {
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
	return e
}

func (e *grafanaEnv) client(pod string) (*grafana.Client, error) {
	return grafana.New(grafana.Options{URL: sb.PodURL(e.rel.Namespace, pod),
		Credentials: grafana.Credentials{User: "admin", Password: e.rel.Password}, MaxAttempts: 2, Timeout: 10 * time.Second})
}

func (e *grafanaEnv) checker() *verify.Grafana {
	return &verify.Grafana{ClientFor: e.client, PollInterval: 100 * time.Millisecond}
}

func (e *grafanaEnv) migrator(out *strings.Builder) *migrate.Migrate {
	m := &migrate.Migrate{Clients: e.clients, Checker: e.checker(), LeaseDuration: 15 * time.Second}
	if out != nil {
		m.Out = out
	} else {
		m.Out = testWriter{e.t}
	}
	return m
}

func (e *grafanaEnv) options(strategy migrate.Strategy) migrate.Options {
	o := migrate.Options{Strategy: strategy, Timeouts: testTimeouts}
	o.Target.Namespace = e.rel.Namespace
	o.Target.Release = e.rel.Name
	return o
}

// inventory takes what ordinal i's Grafana serves now.
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

// pvState lists the PVs claimed from namespace ns with their reclaim
// policy. Other tests' namespaces are being deleted in the background, and
// their Delete-policy PVs go with them.
func pvState(t *testing.T, ns string) map[string]string {
	t.Helper()
	list, err := sb.Kube.CoreV1().PersistentVolumes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, pv := range list.Items {
		if pv.Spec.ClaimRef != nil && pv.Spec.ClaimRef.Namespace == ns {
			out[pv.Name] = string(pv.Spec.PersistentVolumeReclaimPolicy)
		}
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

// boundPV returns the PV bound to a claim.
func (e *grafanaEnv) boundPV(i int) *corev1.PersistentVolume {
	e.t.Helper()
	c, err := sb.Kube.CoreV1().PersistentVolumeClaims(e.rel.Namespace).Get(e.ctx, e.rel.Claim(i), metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	pv, err := sb.Kube.CoreV1().PersistentVolumes().Get(e.ctx, c.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return pv
}

// clusterState fingerprints every object a migration could touch, to prove
// that a refused run changed nothing.
func (e *grafanaEnv) clusterState() string {
	e.t.Helper()
	ctx, ns := e.ctx, e.rel.Namespace
	var lines []string
	sts, err := sb.Kube.AppsV1().StatefulSets(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	for _, s := range sts.Items {
		lines = append(lines, fmt.Sprintf("sts %s uid=%s rv=%s replicas=%d", s.Name, s.UID, s.ResourceVersion, ptr.Deref(s.Spec.Replicas, 1)))
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
		lines = append(lines, fmt.Sprintf("pv %s policy=%s claim=%s/%s phase=%s", pv.Name, pv.Spec.PersistentVolumeReclaimPolicy, pv.Spec.ClaimRef.Name, pv.Spec.ClaimRef.UID, pv.Status.Phase))
	}
	cms, _ := sb.Kube.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=rebind"})
	lines = append(lines, fmt.Sprintf("journals %d", len(cms.Items)))
	snaps, _ := sb.Snap.SnapshotV1().VolumeSnapshots(ns).List(ctx, metav1.ListOptions{})
	lines = append(lines, fmt.Sprintf("snapshots %d", len(snaps.Items)))
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// assertVerified checks the report says every seeded dashboard came through
// and that the live Grafana agrees with the seeded counts.
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

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
