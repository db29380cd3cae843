package drill_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/pkg/discovery"
	"github.com/rebind-dev/rebind/pkg/drill"
	"github.com/rebind-dev/rebind/pkg/report"
	"github.com/rebind-dev/rebind/pkg/snapshot"
)

func TestDrillPasses(t *testing.T) {
	e2eutil.NeedSandbox(t)
	for _, tc := range []struct {
		name     string
		release  string
		replicas int32
		offline  bool
	}{
		{"online, release grafana", "grafana", 1, false},
		{"online, release mon, 2 replicas", "mon", 2, false},
		{"offline, release grafana", "grafana", 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			r := deployGrafana(t, fixtures.Release{Name: tc.release, Replicas: tc.replicas}, 6)
			before := takeState(t, r.Rel.Namespace)
			stsBefore, err := sb.Kube.AppsV1().StatefulSets(r.Rel.Namespace).Get(ctx, r.Rel.FullName(), metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			o := r.options()
			o.Offline = tc.offline
			res := newDrill(t, nil).Run(ctx, o)
			// The cost of a drill, mostly its cleanup (the fixed scratch
			// namespace needs no namespace deletion).
			t.Logf("TIMING drill %s in %s: %s", tc.name, time.Duration(res.Duration).Round(10*time.Millisecond), cleanupLine(res))
			if res.Outcome != drill.Passed {
				t.Fatalf("outcome %s: %s", res.Outcome, res.Error)
			}
			if res.Checked != r.total() || res.Lost != 0 || len(res.Verification) != int(tc.replicas) {
				t.Errorf("checked %d lost %d verdicts %d, want %d checked", res.Checked, res.Lost, len(res.Verification), r.total())
			}
			for i, v := range res.Verification {
				if !v.OK || v.Checked != r.Dashboards[i] {
					t.Errorf("ordinal %d: %+v", i, v)
				}
			}
			if len(res.Snapshots) != int(tc.replicas) || !res.Snapshots[0].Taken || res.Snapshots[0].RestoredPV == "" {
				t.Errorf("snapshots %+v", res.Snapshots)
			}
			assertNothingLeft(t, before, res)
			assertEvent(t, r, drill.ReasonSucceeded, corev1.EventTypeNormal, "PASSED")

			stsAfter, err := sb.Kube.AppsV1().StatefulSets(r.Rel.Namespace).Get(ctx, r.Rel.FullName(), metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if stsAfter.Generation != stsBefore.Generation || stsAfter.UID != stsBefore.UID {
				t.Errorf("production StatefulSet changed")
			}

			path := filepath.Join(t.TempDir(), "drill.prom")
			if err := drill.WriteMetricsFile(path, []*drill.Result{res}); err != nil {
				t.Fatal(err)
			}
			l := map[string]string{"namespace": r.Rel.Namespace, "statefulset": r.Rel.FullName()}
			for name, want := range map[string]float64{
				drill.MetricSuccess: 1, drill.MetricChecked: float64(r.total()), drill.MetricLost: 0, drill.MetricLeftovers: 0,
			} {
				if v, ok := report.ReadGauge(path, name, l); !ok || v != want {
					t.Errorf("%s = %v (%v), want %v", name, v, ok, want)
				}
			}
			for _, name := range []string{drill.MetricDuration, drill.MetricLastSuccess} {
				if v, ok := report.ReadGauge(path, name, l); !ok || v <= 0 {
					t.Errorf("%s = %v (%v), want > 0", name, v, ok)
				}
			}
		})
	}
}

func TestDrillDetectsDamagedRestore(t *testing.T) {
	e2eutil.NeedSandbox(t)
	for _, tc := range []struct {
		name    string
		offline bool
	}{{"online", false}, {"offline", true}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			r := deployGrafana(t, fixtures.Release{Name: "grafana", Replicas: 1}, 6)
			before := takeState(t, r.Rel.Namespace)
			d := newDrill(t, nil)
			d.AfterRestore = func(_ context.Context, rs drill.Restored) error {
				dir, err := fixtures.VolumeDir(sb.StorageRoot(), rs.Volumes[0])
				if err != nil {
					return err
				}
				return e2eutil.DeleteSomeDashboards(filepath.Join(dir, "grafana.db"), 3)
			}
			o := r.options()
			o.Offline = tc.offline
			res := d.Run(ctx, o)
			if res.Outcome != drill.Failed || res.Lost != 3 || res.Checked != r.total() {
				t.Fatalf("outcome %s lost %d checked %d (%s)", res.Outcome, res.Lost, res.Checked, res.Error)
			}
			assertNothingLeft(t, before, res)
			assertEvent(t, r, drill.ReasonFailed, corev1.EventTypeWarning, "3 lost")

			// Production was never touched: a second drill passes.
			if res := newDrill(t, nil).Run(ctx, r.options()); res.Outcome != drill.Passed {
				t.Errorf("production damaged? second drill %s: %s", res.Outcome, res.Error)
			}
		})
	}
}

func TestDrillInterruptedCleansUp(t *testing.T) {
	e2eutil.NeedSandbox(t)
	for _, tc := range []struct {
		name string
		// interrupt cancels the drill's context at some point of the run.
		interrupt func(d *drill.Drill, r *release, cancel context.CancelFunc) (wait func())
	}{
		{"after the restore", func(d *drill.Drill, _ *release, cancel context.CancelFunc) func() {
			d.AfterRestore = func(context.Context, drill.Restored) error { cancel(); return nil }
			return func() {}
		}},
		{"while the copy starts", func(_ *drill.Drill, r *release, cancel context.CancelFunc) func() {
			// Watch for the scratch StatefulSet the drill creates.
			done := make(chan struct{})
			go func() {
				defer close(done)
				w, err := sb.Kube.AppsV1().StatefulSets(metav1.NamespaceAll).Watch(context.Background(), metav1.ListOptions{LabelSelector: drill.LabelRun})
				if err != nil {
					return
				}
				defer w.Stop()
				timeout := time.After(2 * time.Minute)
				for {
					select {
					case <-w.ResultChan():
						cancel()
						return
					case <-timeout:
						return
					}
				}
			}()
			return func() { <-done }
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			r := deployGrafana(t, fixtures.Release{Name: "grafana", Replicas: 1}, 4)
			before := takeState(t, r.Rel.Namespace)
			d := newDrill(t, nil)
			runCtx, stop := context.WithCancel(ctx)
			defer stop()
			wait := tc.interrupt(d, r, stop)
			res := d.Run(runCtx, r.options())
			wait()
			if res.Outcome != drill.Errored || !strings.Contains(res.Error, "interrupted") {
				t.Fatalf("outcome %s: %s", res.Outcome, res.Error)
			}
			if len(res.Cleaned) == 0 {
				t.Errorf("nothing cleaned up?")
			}
			assertNothingLeft(t, before, res)
			assertEvent(t, r, drill.ReasonFailed, corev1.EventTypeWarning, "interrupted")
		})
	}
}

func TestDrillSelectorParallel(t *testing.T) {
	e2eutil.NeedSandbox(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	var rels []*release
	for i := 0; i < 2; i++ {
		rels = append(rels, deployGrafana(t, fixtures.Release{Name: "seltest", Replicas: 1}, 3+i))
	}
	before := takeState(t, rels[0].Rel.Namespace, rels[1].Rel.Namespace)
	d := newDrill(t, nil)
	targets, err := drill.Targets(ctx, d.Clients, "", true, "app.kubernetes.io/name=grafana,app.kubernetes.io/instance=seltest", discovery.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(targets) != 2 {
		t.Fatalf("targets %+v", targets)
	}
	var opts []drill.Options
	for _, tg := range targets {
		// The opt-in mode: a namespace of its own per drill (the default,
		// a shared fixed one, is TestDrillSharedScratchNamespace).
		opts = append(opts, drill.Options{Target: tg, CreateScratchNamespace: true, Timeouts: testTimeouts})
	}
	start := time.Now()
	results := d.RunAll(ctx, opts, 2)
	t.Logf("two drills in %s", time.Since(start))
	if len(results) != 2 {
		t.Fatalf("%d results", len(results))
	}
	for _, res := range results {
		var want *release
		for _, r := range rels {
			if r.Rel.Namespace == res.Namespace {
				want = r
			}
		}
		if want == nil || res.StatefulSet != "seltest-grafana" {
			t.Fatalf("unexpected target %s", res.Target())
		}
		if res.Outcome != drill.Passed || res.Checked != want.total() {
			t.Errorf("%s: %s checked %d: %s", res.Target(), res.Outcome, res.Checked, res.Error)
		}
	}
	if results[0].ScratchNamespace == results[1].ScratchNamespace {
		t.Errorf("both drills used scratch namespace %s", results[0].ScratchNamespace)
	}
	assertNothingLeft(t, before, results...)

	// Pushgateway: one group per target.
	var mu sync.Mutex
	got := map[string]string{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		got[req.Method+" "+req.URL.Path] = "ok"
	}))
	defer srv.Close()
	for _, res := range results {
		if err := drill.Push(ctx, nil, srv.URL, res); err != nil {
			t.Fatal(err)
		}
	}
	// The grouping labels may come in either order.
	for _, res := range results {
		keys := []string{
			"PUT /metrics/job/rebind_drill/namespace/" + res.Namespace + "/statefulset/" + res.StatefulSet,
			"PUT /metrics/job/rebind_drill/statefulset/" + res.StatefulSet + "/namespace/" + res.Namespace,
		}
		if got[keys[0]] == "" && got[keys[1]] == "" {
			t.Errorf("no %s in %v", keys[0], got)
		}
	}
}

// TestDrillUseLatestSnapshot restores an existing snapshot and proves that
// the snapshot, shared with the scratch namespace through a Retain content,
// is intact and usable afterwards.
func TestDrillUseLatestSnapshot(t *testing.T) {
	e2eutil.NeedSandbox(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r := deployGrafana(t, fixtures.Release{Name: "grafana", Replicas: 1}, 5)
	ns := r.Rel.Namespace
	for _, name := range []string{"nightly-old", "nightly"} {
		if _, err := snapshot.Create(ctx, sb.Snap, ns, name, r.Rel.Claim(0), "hostpath-snapclass", nil); err != nil {
			t.Fatal(err)
		}
		if _, err := snapshot.WaitReady(ctx, sb.Snap, ns, name, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	before := takeState(t, ns)
	o := r.options()
	o.UseLatestSnapshot = true
	res := newDrill(t, nil).Run(ctx, o)
	if res.Outcome != drill.Passed || res.Checked != r.total() {
		t.Fatalf("outcome %s checked %d: %s", res.Outcome, res.Checked, res.Error)
	}
	if len(res.Snapshots) != 1 || res.Snapshots[0].Snapshot != "nightly" || res.Snapshots[0].Taken {
		t.Errorf("snapshots %+v", res.Snapshots)
	}
	assertNothingLeft(t, before, res)
	vs, err := snapshot.WaitReady(ctx, sb.Snap, ns, "nightly", 10*time.Second)
	if err != nil {
		t.Fatalf("the user's snapshot is no longer ready: %v", err)
	}
	content, err := sb.Snap.SnapshotV1().VolumeSnapshotContents().Get(ctx, *vs.Status.BoundVolumeSnapshotContentName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(sb.StorageRoot(), "snapshots", *content.Status.SnapshotHandle)
	if _, err := os.Stat(filepath.Join(dir, "grafana.db")); err != nil {
		t.Errorf("snapshot data gone after the drill: %v", err)
	}
	// And it still restores.
	if res := newDrill(t, nil).Run(ctx, o); res.Outcome != drill.Passed {
		t.Errorf("second drill from the same snapshot: %s %s", res.Outcome, res.Error)
	}
}

func TestDrillPreflightRefuses(t *testing.T) {
	e2eutil.NeedSandbox(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r := deployGrafana(t, fixtures.Release{Name: "grafana", Replicas: 1}, 2)
	taken := sb.NewNamespace(t)
	for _, tc := range []struct {
		name   string
		modify func(o *drill.Options, d *drill.Drill)
		want   []string
	}{
		{"scratch namespace to create exists", func(o *drill.Options, _ *drill.Drill) { o.ScratchNamespace, o.CreateScratchNamespace = taken, true },
			[]string{"namespace " + taken, "already exists"}},
		{"restore class of another driver", func(o *drill.Options, _ *drill.Drill) { o.RestoreStorageClass = "other-driver" }, []string{"StorageClass other-driver", "its own driver"}},
		{"offline without a reader", func(o *drill.Options, d *drill.Drill) { o.Offline, d.DBReader = true, nil }, []string{"--offline", "reachable from where rebind runs"}},
		{"no snapshot for --use-latest-snapshot", func(o *drill.Options, _ *drill.Drill) { o.UseLatestSnapshot = true }, []string{"no readyToUse VolumeSnapshot"}},
		{"unknown release", func(o *drill.Options, _ *drill.Drill) { o.Target.Release = "nope" }, []string{`no Grafana StatefulSet or Deployment of Helm release "nope"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := takeState(t, r.Rel.Namespace)
			o, d := r.options(), newDrill(t, nil)
			tc.modify(&o, d)
			res := d.Run(ctx, o)
			if res.Outcome != drill.Refused {
				t.Fatalf("outcome %s: %s", res.Outcome, res.Error)
			}
			for _, w := range tc.want {
				if !strings.Contains(res.Error, w) {
					t.Errorf("error lacks %q:\n%s", w, res.Error)
				}
			}
			assertNothingLeft(t, before)
			if _, err := sb.Kube.CoreV1().Namespaces().Get(ctx, taken, metav1.GetOptions{}); err != nil {
				t.Errorf("someone else's namespace deleted: %v", err)
			}
		})
	}
}

func assertEvent(t *testing.T, r *release, reason, typ, contains string) {
	t.Helper()
	assertEventOn(t, r, "StatefulSet", reason, typ, contains)
}

func assertEventOn(t *testing.T, r *release, kind, reason, typ, contains string) {
	t.Helper()
	evs, err := sb.Kube.CoreV1().Events(r.Rel.Namespace).List(context.Background(), metav1.ListOptions{
		FieldSelector: "involvedObject.kind=" + kind + ",involvedObject.name=" + r.Rel.FullName() + ",reason=" + reason})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs.Items {
		if e.Type == typ && strings.Contains(e.Message, contains) && e.InvolvedObject.UID != "" {
			return
		}
	}
	t.Errorf("no %s event %s containing %q on %s %s/%s: %+v", typ, reason, contains, kind, r.Rel.Namespace, r.Rel.FullName(), evs.Items)
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestDrillDeploymentMode: the chart's Deployment mode drills online (the
// Deployment's pod template runs as a one-replica StatefulSet copy in the
// scratch namespace, on the claim restored under the Deployment's claim
// name) and offline (the restored grafana.db compared with what production
// served); each checks every dashboard, the Event lands on the Deployment
// and nothing is left.
func TestDrillDeploymentMode(t *testing.T) {
	e2eutil.NeedSandbox(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r := deployGrafana(t, fixtures.Release{Name: "grafana", Replicas: 1, Deployment: true}, 4)
	before := takeState(t, r.Rel.Namespace)

	for _, offline := range []bool{false, true} {
		o := r.options()
		o.Offline = offline
		res := newDrill(t, nil).Run(ctx, o)
		if res.Outcome != drill.Passed {
			t.Fatalf("offline=%v: outcome %s: %s", offline, res.Outcome, res.Error)
		}
		if res.Checked != r.total() || res.Lost != 0 || len(res.Verification) != 1 || !res.Verification[0].OK {
			t.Errorf("offline=%v: checked %d lost %d verdicts %+v, want %d checked", offline, res.Checked, res.Lost, res.Verification, r.total())
		}
		if len(res.Snapshots) != 1 || !res.Snapshots[0].Taken || res.Snapshots[0].RestoredPV == "" {
			t.Errorf("offline=%v: snapshots %+v", offline, res.Snapshots)
		}
		if want := map[bool]string{false: "online", true: "offline"}[offline]; res.Mode != want {
			t.Errorf("mode %q, want %q", res.Mode, want)
		}
		assertNothingLeft(t, before, res)
	}
	assertEventOn(t, r, "Deployment", drill.ReasonSucceeded, corev1.EventTypeNormal, "PASSED")
}
