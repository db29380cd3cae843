// Package drill_test runs `rebind drill` against a real control plane (the
// e2e sandbox) and applies the manifests in manifests/ to it: restores are
// verified through the Grafana stand-in, and every test proves the drill
// left nothing behind.
package drill_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/e2e/grafanastandin"
	"github.com/rebind-dev/rebind/e2e/sandbox"
	"github.com/rebind-dev/rebind/pkg/app"
	"github.com/rebind-dev/rebind/pkg/discovery"
	"github.com/rebind-dev/rebind/pkg/drill"
	"github.com/rebind-dev/rebind/pkg/grafana"
	"github.com/rebind-dev/rebind/pkg/kube"
	"github.com/rebind-dev/rebind/pkg/verify"
)

var sb *sandbox.Sandbox

func TestMain(m *testing.M) { os.Exit(e2eutil.RunMain(m, &sb, sandbox.Options{})) }

var testTimeouts = drill.Timeouts{Wait: 90 * time.Second, Snapshot: 90 * time.Second, Verify: 60 * time.Second, Cleanup: 2 * time.Minute}

// release is one deployed, seeded Grafana.
type release struct{ *e2eutil.Grafana }

// deployGrafana deploys a release in rel.Namespace (a new namespace when "")
// and seeds each ordinal's volume with its own dashboards.
func deployGrafana(t testing.TB, rel fixtures.Release, perOrg int) *release {
	t.Helper()
	return &release{e2eutil.DeploySeeded(t, sb, rel, grafanastandin.SeedSpec{Orgs: 2, FoldersPerOrg: 2, DashboardsPerOrg: perOrg, Seed: 200})}
}

// options drill the release the default way: into a fixed scratch
// namespace prepared like manifests/rbac-drill.yaml's, one per release.
func (r *release) options() drill.Options {
	return drill.Options{Target: discovery.Options{Namespace: r.Rel.Namespace, Release: r.Rel.Name}, ScratchNamespace: r.scratch(), Timeouts: testTimeouts}
}

func (r *release) total() int {
	n := 0
	for _, d := range r.Dashboards {
		n += d
	}
	return n
}

// newDrill wires a drill the way the CLI does, except that pods are reached
// through the sandbox's per-pod URLs and credentials come from the chart's
// Secret in production.
func newDrill(t testing.TB, clients *kube.Clients, orgTokens ...string) *drill.Drill {
	if clients == nil {
		var err error
		if clients, err = kube.New(sb.RESTConfig); err != nil {
			t.Fatal(err)
		}
	}
	return &drill.Drill{
		Clients: clients,
		Checker: func(target *discovery.Target, ns string) app.Checker {
			return &verify.Grafana{PollInterval: 100 * time.Millisecond, ClientFor: func(pod string) (*grafana.Client, error) {
				creds, err := grafana.CredentialsFromSecret(context.Background(), sb.Kube, target.Namespace, target.AdminSecret)
				if err != nil {
					return nil, err
				}
				return grafana.New(grafana.Options{URL: sb.PodURL(ns, pod), Credentials: creds, OrgTokens: orgTokens, MaxAttempts: 2, Timeout: 10 * time.Second})
			}}
		},
		DBReader: func(_ context.Context, pv *corev1.PersistentVolume) (string, func(), error) {
			dir, err := fixtures.VolumeDir(sb.StorageRoot(), pv)
			return filepath.Join(dir, "grafana.db"), nil, err
		},
		Out: e2eutil.TestWriter{T: t},
		Log: zaptest.NewLogger(t),
	}
}

// state fingerprints what a drill may create, to prove it is all gone.
type state struct {
	namespaces []string // managed by rebind
	contents   []string
	snapshots  map[string][]string // per production namespace
	scratch    map[string][]string // objects in each fixed scratch namespace of the test
	pvs        []string
}

func takeState(t *testing.T, namespaces ...string) state {
	t.Helper()
	ctx := context.Background()
	s := state{snapshots: map[string][]string{}, scratch: scratchContents(t)}
	nss, err := sb.Kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: drill.LabelManagedBy + "=" + drill.ManagedBy})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nss.Items {
		s.namespaces = append(s.namespaces, n.Name)
	}
	cs, err := sb.Snap.SnapshotV1().VolumeSnapshotContents().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs.Items {
		s.contents = append(s.contents, c.Name)
	}
	pvs, err := sb.Kube.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, pv := range pvs.Items {
		s.pvs = append(s.pvs, pv.Name)
	}
	for _, ns := range namespaces {
		vs, err := sb.Snap.SnapshotV1().VolumeSnapshots(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range vs.Items {
			s.snapshots[ns] = append(s.snapshots[ns], v.Name)
		}
	}
	return s
}

// assertNothingLeft compares with the state before the drill: no scratch
// namespace, no content or production snapshot that was not there before,
// no PV of a scratch claim.
func assertNothingLeft(t *testing.T, before state, results ...*drill.Result) {
	t.Helper()
	var prod []string
	for ns := range before.snapshots {
		prod = append(prod, ns)
	}
	after := takeState(t, prod...)
	if len(after.namespaces) > 0 {
		t.Errorf("namespaces left: %v", after.namespaces)
	}
	for _, c := range after.contents {
		if !slices.Contains(before.contents, c) {
			t.Errorf("VolumeSnapshotContent left: %s", c)
		}
	}
	for ns, names := range after.snapshots {
		for _, n := range names {
			if !slices.Contains(before.snapshots[ns], n) {
				t.Errorf("VolumeSnapshot left: %s/%s", ns, n)
			}
		}
	}
	pvs, err := sb.Kube.CoreV1().PersistentVolumes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range results {
		if len(r.Leftovers) > 0 {
			t.Errorf("%s reports leftovers: %v", r.Target(), r.Leftovers)
		}
		for _, pv := range pvs.Items {
			if pv.Spec.ClaimRef != nil && pv.Spec.ClaimRef.Namespace == r.ScratchNamespace && !slices.Contains(before.pvs, pv.Name) {
				t.Errorf("PersistentVolume %s of scratch claim %s/%s left", pv.Name, r.ScratchNamespace, pv.Spec.ClaimRef.Name)
			}
		}
		_, err := sb.Kube.CoreV1().Namespaces().Get(context.Background(), r.ScratchNamespace, metav1.GetOptions{})
		switch {
		case r.ScratchCreated && err == nil:
			t.Errorf("scratch namespace %s still exists", r.ScratchNamespace)
		case !r.ScratchCreated && err != nil:
			t.Errorf("fixed scratch namespace %s is gone (%v): the drill must never delete it", r.ScratchNamespace, err)
		}
	}
	// The fixed scratch namespaces hold what they held before, nothing
	// more: every object a drill made there (and its Lease) is gone.
	for ns, objects := range after.scratch {
		for _, o := range objects {
			if !slices.Contains(before.scratch[ns], o) {
				t.Errorf("left in scratch namespace %s: %s", ns, o)
			}
		}
	}
}
