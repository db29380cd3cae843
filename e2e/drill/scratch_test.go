package drill_test

import (
	"context"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/manifests"
	"github.com/rebind-dev/rebind/pkg/discovery"
	"github.com/rebind-dev/rebind/pkg/drill"
	"github.com/rebind-dev/rebind/pkg/journal"
)

// The fixed scratch namespaces of the running test, which assertNothingLeft
// checks; a release's own is made on first use.
var (
	scratchMu  sync.Mutex
	scratchAll = map[string]bool{}   // scratch namespace -> registered
	scratchOf  = map[string]string{} // production namespace -> its scratch namespace
)

func registerScratch(t testing.TB, ns string) {
	scratchMu.Lock()
	defer scratchMu.Unlock()
	scratchAll[ns] = true
	t.Cleanup(func() {
		scratchMu.Lock()
		defer scratchMu.Unlock()
		delete(scratchAll, ns)
	})
}

// scratch is the release's fixed scratch namespace.
func (r *release) scratch() string {
	scratchMu.Lock()
	ns, ok := scratchOf[r.Rel.Namespace]
	scratchMu.Unlock()
	if ok {
		return ns
	}
	ns = newScratchNamespace(r.T, "")
	scratchMu.Lock()
	scratchOf[r.Rel.Namespace] = ns
	scratchMu.Unlock()
	prod := r.Rel.Namespace
	r.T.Cleanup(func() {
		scratchMu.Lock()
		defer scratchMu.Unlock()
		delete(scratchOf, prod)
	})
	return ns
}

// newScratchNamespace creates a namespace the way manifests/rbac-drill.yaml
// does (its labels), named name or generated, deleted when the test ends.
func newScratchNamespace(t testing.TB, name string) string {
	t.Helper()
	objs, err := manifests.Objects("rbac-drill.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ns := &corev1.Namespace{}
	for _, o := range objs {
		if o.GetKind() == "Namespace" {
			ns.Labels = o.GetLabels()
		}
	}
	if ns.Labels[drill.LabelScratch] != "true" {
		t.Fatalf("rbac-drill.yaml has no namespace labelled %s", drill.LabelScratch)
	}
	ns.Name, ns.GenerateName = name, ""
	if name == "" {
		ns.GenerateName = drill.DefaultScratchNamespace + "-"
	}
	got, err := sb.Kube.CoreV1().Namespaces().Create(context.Background(), ns, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := sb.DeleteNamespace(ctx, got.Name); err != nil {
			t.Errorf("deleting scratch namespace: %v", err)
		}
	})
	registerScratch(t, got.Name)
	return got.Name
}

// scratchFor is the scratch namespace of the manifests applied under
// suffix (see retarget): short, as a namespace name must be.
func scratchFor(suffix string) string {
	if suffix == "" {
		return drill.DefaultScratchNamespace
	}
	h := fnv.New32a()
	h.Write([]byte(suffix))
	return fmt.Sprintf("%s-%08x", drill.DefaultScratchNamespace, h.Sum32())
}

// scratchContents lists, per registered scratch namespace that exists,
// every object of the kinds a drill makes there and the Leases.
func scratchContents(t *testing.T) map[string][]string {
	t.Helper()
	ctx := context.Background()
	scratchMu.Lock()
	var names []string
	for ns := range scratchAll {
		names = append(names, ns)
	}
	scratchMu.Unlock()
	out := map[string][]string{}
	for _, ns := range names {
		if _, err := sb.Kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err != nil {
			continue
		}
		var objs []string
		add := func(kind string, err error, names ...string) {
			if err != nil {
				t.Fatalf("listing %ss in %s: %v", kind, ns, err)
			}
			for _, n := range names {
				objs = append(objs, kind+" "+n)
			}
		}
		sts, err := sb.Kube.AppsV1().StatefulSets(ns).List(ctx, metav1.ListOptions{})
		add("StatefulSet", err, itemNames(sts.Items, all)...)
		pods, err := sb.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		add("Pod", err, itemNames(pods.Items, all)...)
		svcs, err := sb.Kube.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
		add("Service", err, itemNames(svcs.Items, all)...)
		secrets, err := sb.Kube.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
		add("Secret", err, itemNames(secrets.Items, all)...)
		cms, err := sb.Kube.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{})
		add("ConfigMap", err, itemNames(cms.Items, func(n string) bool { return n != "kube-root-ca.crt" })...)
		pvcs, err := sb.Kube.CoreV1().PersistentVolumeClaims(ns).List(ctx, metav1.ListOptions{})
		add("PersistentVolumeClaim", err, itemNames(pvcs.Items, all)...)
		vss, err := sb.Snap.SnapshotV1().VolumeSnapshots(ns).List(ctx, metav1.ListOptions{})
		add("VolumeSnapshot", err, itemNames(vss.Items, all)...)
		leases, err := sb.Kube.CoordinationV1().Leases(ns).List(ctx, metav1.ListOptions{})
		add("Lease", err, itemNames(leases.Items, all)...)
		out[ns] = objs
	}
	return out
}

func itemNames[T any, P interface {
	*T
	metav1.Object
}](items []T, keep func(name string) bool) []string {
	var out []string
	for i := range items {
		if n := P(&items[i]).GetName(); keep(n) {
			out = append(out, n)
		}
	}
	return out
}

func all(string) bool { return true }

// TestDrillScratchNamespaceRefusals: the fixed scratch namespace must be
// prepared for drills and hold nothing in the drill's way; otherwise the
// drill is refused by preflight, creates nothing and leaves every object
// it found (someone else's) alone.
func TestDrillScratchNamespaceRefusals(t *testing.T) {
	e2eutil.NeedSandbox(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r := deployGrafana(t, fixtures.Release{Name: "grafana", Replicas: 1}, 2)
	unprepared := sb.NewNamespace(t)
	for _, tc := range []struct {
		name string
		// prepare makes the scratch namespace the case is about and
		// returns a check that what it put there is untouched.
		prepare func(t *testing.T, o *drill.Options) (untouched func(t *testing.T))
		want    []string
	}{
		{"not prepared for drills", func(t *testing.T, o *drill.Options) func(*testing.T) {
			o.ScratchNamespace = unprepared
			return func(t *testing.T) {
				if _, err := sb.Kube.CoreV1().Namespaces().Get(ctx, unprepared, metav1.GetOptions{}); err != nil {
					t.Errorf("someone else's namespace: %v", err)
				}
			}
		}, []string{"namespace " + unprepared, "not prepared for drills", drill.LabelScratch}},
		{"does not exist", func(t *testing.T, o *drill.Options) func(*testing.T) {
			o.ScratchNamespace = "rebind-drill-scratch-missing"
			return func(t *testing.T) {
				if _, err := sb.Kube.CoreV1().Namespaces().Get(ctx, o.ScratchNamespace, metav1.GetOptions{}); err == nil {
					t.Errorf("the drill created namespace %s", o.ScratchNamespace)
				}
			}
		}, []string{"namespace rebind-drill-scratch-missing", "does not exist", "--create-scratch-namespace"}},
		{"an object no drill created", func(t *testing.T, o *drill.Options) func(*testing.T) {
			cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "someones-config"}, Data: map[string]string{"k": "v"}}
			got, err := sb.Kube.CoreV1().ConfigMaps(o.ScratchNamespace).Create(ctx, cm, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			return func(t *testing.T) {
				if now, err := sb.Kube.CoreV1().ConfigMaps(o.ScratchNamespace).Get(ctx, cm.Name, metav1.GetOptions{}); err != nil || now.UID != got.UID {
					t.Errorf("the stranger's ConfigMap was touched: %v", err)
				}
				_ = sb.Kube.CoreV1().ConfigMaps(o.ScratchNamespace).Delete(ctx, cm.Name, metav1.DeleteOptions{})
			}
		}, []string{"ConfigMap ", "/someones-config", "was not created by a drill"}},
		{"another drill's objects in the way", func(t *testing.T, o *drill.Options) func(*testing.T) {
			// A killed drill of a StatefulSet of the same name left the
			// copy of its admin Secret.
			s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: r.Rel.FullName(),
				Labels:      map[string]string{drill.LabelManagedBy: drill.ManagedBy, drill.LabelRun: "dead01"},
				Annotations: map[string]string{drill.AnnDrillOf: "elsewhere/" + r.Rel.FullName()}}}
			got, err := sb.Kube.CoreV1().Secrets(o.ScratchNamespace).Create(ctx, s, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			return func(t *testing.T) {
				if now, err := sb.Kube.CoreV1().Secrets(o.ScratchNamespace).Get(ctx, s.Name, metav1.GetOptions{}); err != nil || now.UID != got.UID {
					t.Errorf("the other run's Secret was touched: %v", err)
				}
				_ = sb.Kube.CoreV1().Secrets(o.ScratchNamespace).Delete(ctx, s.Name, metav1.DeleteOptions{})
			}
		}, []string{"drill run dead01 (of elsewhere/" + r.Rel.FullName() + ")", "Secret ", "-l " + drill.LabelRun + "=dead01"}},
		{"another drill holds the Lease", func(t *testing.T, o *drill.Options) func(*testing.T) {
			// A live drill renews its Lease; one that stopped renewing is
			// taken over once its record has not changed for its duration.
			holder, err := journal.TakeLease(ctx, sb.Kube, journal.LeaseOptions{Namespace: o.ScratchNamespace, Name: drill.ScratchLeaseName(r.Rel.FullName()),
				Holder: "drill of elsewhere/grafana, run busy01", Duration: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			return func(t *testing.T) {
				if err := holder.Err(); err != nil {
					t.Errorf("the other drill lost its Lease: %v", err)
				}
				now, err := sb.Kube.CoordinationV1().Leases(o.ScratchNamespace).Get(ctx, drill.ScratchLeaseName(r.Rel.FullName()), metav1.GetOptions{})
				if err != nil || ptr.Deref(now.Spec.HolderIdentity, "") != "drill of elsewhere/grafana, run busy01" {
					t.Errorf("the other drill's Lease was touched: %v", err)
				}
				_ = holder.Release(ctx)
				_ = sb.Kube.CoordinationV1().Leases(o.ScratchNamespace).Delete(ctx, drill.ScratchLeaseName(r.Rel.FullName()), metav1.DeleteOptions{})
			}
		}, []string{"Lease ", "run busy01", "cannot share scratch namespace"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := r.options()
			untouched := tc.prepare(t, &o)
			before := takeState(t, r.Rel.Namespace)
			res := newDrill(t, nil).Run(ctx, o)
			if res.Outcome != drill.Refused {
				t.Fatalf("outcome %s: %s", res.Outcome, res.Error)
			}
			for _, w := range tc.want {
				if !strings.Contains(res.Error, w) {
					t.Errorf("error lacks %q:\n%s", w, res.Error)
				}
			}
			assertNothingLeft(t, before)
			untouched(t)
		})
	}
}

// TestDrillSharedScratchNamespace: the targets of one --selector share the
// fixed scratch namespace. StatefulSets of different names drill in
// parallel; two of one name take turns (the copy keeps the production
// names). A claim of another drill that is there all along, and its
// volume, are left alone: a drill deletes exactly what it created.
func TestDrillSharedScratchNamespace(t *testing.T) {
	e2eutil.NeedSandbox(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	scratch := newScratchNamespace(t, "")

	// Another drill's restored claim, bound to a volume of class standard
	// (reclaim policy Delete): deleting the claim would delete the volume.
	other := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "storage-other-grafana-0", Namespace: scratch,
		Labels: map[string]string{drill.LabelManagedBy: drill.ManagedBy, drill.LabelRun: "other1"}},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, StorageClassName: ptr.To("standard"),
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}}
	other, err := sb.Kube.CoreV1().PersistentVolumeClaims(scratch).Create(ctx, other, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = sb.Kube.CoreV1().PersistentVolumeClaims(scratch).Delete(context.Background(), other.Name, metav1.DeleteOptions{})
	})
	var otherPV string
	deadline := time.Now().Add(time.Minute)
	for otherPV == "" && time.Now().Before(deadline) {
		c, err := sb.Kube.CoreV1().PersistentVolumeClaims(scratch).Get(ctx, other.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if c.Status.Phase == corev1.ClaimBound {
			otherPV = c.Spec.VolumeName
		}
		time.Sleep(100 * time.Millisecond)
	}
	if otherPV == "" {
		t.Fatal("the other drill's claim never bound")
	}

	var rels []*release
	for _, rel := range []fixtures.Release{{Name: "alpha", Replicas: 1}, {Name: "beta", Replicas: 1}, {Name: "same", Replicas: 1}, {Name: "same", Replicas: 1}} {
		rels = append(rels, deployGrafana(t, rel, 3))
	}
	var nss []string
	for _, r := range rels {
		nss = append(nss, r.Rel.Namespace)
	}
	before := takeState(t, nss...)
	d := newDrill(t, nil)
	var opts []drill.Options
	for _, r := range rels {
		opts = append(opts, drill.Options{Target: discovery.Options{Namespace: r.Rel.Namespace, StatefulSet: r.Rel.FullName()}, ScratchNamespace: scratch, Timeouts: testTimeouts})
	}
	start := time.Now()
	results := d.RunAll(ctx, opts, 4)
	t.Logf("four drills (two of one StatefulSet name) sharing %s in %s", scratch, time.Since(start))
	for i, res := range results {
		if res.Outcome != drill.Passed || res.Checked != rels[i].total() {
			t.Errorf("%s: %s checked %d of %d: %s", res.Target(), res.Outcome, res.Checked, rels[i].total(), res.Error)
		}
		if res.ScratchNamespace != scratch || res.ScratchCreated {
			t.Errorf("%s restored into %s (created %v), want the shared %s", res.Target(), res.ScratchNamespace, res.ScratchCreated, scratch)
		}
		if !slices.ContainsFunc(res.Notes, func(n string) bool { return strings.Contains(n, "drill run other1") }) {
			t.Errorf("%s: notes do not mention the other drill's objects: %q", res.Target(), res.Notes)
		}
	}
	// The two drills of StatefulSet "same-grafana" did not overlap.
	a, b := results[2], results[3]
	if !a.FinishedAt.Before(b.StartedAt) && !b.FinishedAt.Before(a.StartedAt) {
		t.Errorf("drills of one StatefulSet name overlapped: %s-%s and %s-%s", a.StartedAt, a.FinishedAt, b.StartedAt, b.FinishedAt)
	}
	assertNothingLeft(t, before, results...)

	c, err := sb.Kube.CoreV1().PersistentVolumeClaims(scratch).Get(ctx, other.Name, metav1.GetOptions{})
	if err != nil || c.UID != other.UID || c.DeletionTimestamp != nil {
		t.Fatalf("the other drill's claim was touched: %v", err)
	}
	if pv, err := sb.Kube.CoreV1().PersistentVolumes().Get(ctx, otherPV, metav1.GetOptions{}); err != nil || pv.DeletionTimestamp != nil {
		t.Fatalf("the other drill's volume %s was touched: %v", otherPV, err)
	}
}

// cleanupLine is the drill's own account of its cleanup, for timing logs.
func cleanupLine(res *drill.Result) string {
	return fmt.Sprintf("%d object(s) cleaned up, %d left", len(res.Cleaned), len(res.Leftovers))
}
