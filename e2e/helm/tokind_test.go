package helm_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/pkg/discovery"
	"github.com/rebind-dev/rebind/pkg/inventory"
	"github.com/rebind-dev/rebind/pkg/migrate"
	"github.com/rebind-dev/rebind/pkg/report"
	"github.com/rebind-dev/rebind/pkg/workload"
)

// kindState is where a release's data is: which workload kind of the
// release's full name exists, the claim it mounts and that claim's volume.
type kindState struct {
	kind, claim, pv string
}

// kindNow reads the release's workload and data claim as they are.
func (r *release) kindNow() kindState {
	r.T.Helper()
	ns, name := r.Rel.Namespace, r.Rel.FullName()
	_, stsErr := sb.Kube.AppsV1().StatefulSets(ns).Get(r.Ctx, name, metav1.GetOptions{})
	d, depErr := sb.Kube.AppsV1().Deployments(ns).Get(r.Ctx, name, metav1.GetOptions{})
	var st kindState
	switch {
	case stsErr == nil && depErr == nil:
		r.T.Fatalf("both a StatefulSet and a Deployment %s/%s exist", ns, name)
	case stsErr == nil:
		st.kind, st.claim = discovery.KindStatefulSet, discovery.ClaimName("storage", name, 0)
	case depErr == nil:
		st.kind = discovery.KindDeployment
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name == "storage" && v.PersistentVolumeClaim != nil {
				st.claim = v.PersistentVolumeClaim.ClaimName
			}
		}
	default:
		r.T.Fatalf("neither a StatefulSet nor a Deployment %s/%s: %v / %v", ns, name, stsErr, depErr)
	}
	c, err := sb.Kube.CoreV1().PersistentVolumeClaims(ns).Get(r.Ctx, st.claim, metav1.GetOptions{})
	if err != nil {
		r.T.Fatalf("%s %s: claim %s: %v", st.kind, name, st.claim, err)
	}
	st.pv = c.Spec.VolumeName
	return st
}

// waitKindReady waits until the release's workload of that kind is Ready.
func (r *release) waitKindReady(kind string) {
	r.T.Helper()
	var err error
	if kind == discovery.KindStatefulSet {
		err = workload.WaitReady(r.Ctx, sb.Kube, r.Rel.Namespace, r.Rel.FullName(), time.Minute)
	} else {
		err = workload.WaitDeploymentReady(r.Ctx, sb.Kube, r.Rel.Namespace, r.Rel.FullName(), time.Minute)
	}
	if err != nil {
		r.T.Fatal(err)
	}
}

// inventoryOf reads every dashboard of the release's Grafana of that kind
// (a StatefulSet's pod by name, a Deployment's current pod).
func (r *release) inventoryOf(kind string) *inventory.Inventory {
	r.T.Helper()
	key := r.Rel.FullName()
	if kind == discovery.KindStatefulSet {
		key += "-0"
	}
	c, err := r.Client(key)
	if err != nil {
		r.T.Fatal(err)
	}
	if err := r.Checker().Ready(r.Ctx, key); err != nil {
		r.T.Fatal(err)
	}
	inv, err := inventory.FromGrafana(r.Ctx, c, inventory.Options{})
	if err != nil {
		r.T.Fatal(err)
	}
	return inv
}

// persistenceValues is the release's persistence values now, and its revision.
func (r *release) persistenceValues() (map[string]any, int) {
	r.T.Helper()
	rel, err := r.helm.Release(r.Rel.Name)
	if err != nil {
		r.T.Fatal(err)
	}
	p, _ := rel.Config["persistence"].(map[string]any)
	return p, rel.Version
}

// switchCases are the two directions of the chart's persistence.type switch.
var switchCases = []struct {
	name       string
	from, to   string
	toKind     string
	persistTyp string
}{
	{"deployment to statefulset", discovery.KindDeployment, discovery.KindStatefulSet, "statefulset", "statefulset"},
	{"statefulset to deployment", discovery.KindStatefulSet, discovery.KindDeployment, "deployment", "pvc"},
	// The user's own claim (persistence.existingClaim): the chart renders
	// no StatefulSet while it is set, so the switch clears it.
	{"deployment with existingClaim to statefulset", existingClaimKind, discovery.KindStatefulSet, "statefulset", "statefulset"},
}

// existingClaimKind is a Deployment on the user's claim grafana-data.
const existingClaimKind = "Deployment with existingClaim"

// installKind installs the chart in the given kind.
func installKind(t *testing.T, kind string, perOrg int) *release {
	t.Helper()
	switch kind {
	case discovery.KindDeployment:
		return installDeployment(t, perOrg)
	case existingClaimKind:
		return installWith(t, perOrg, fixtures.Release{Name: "grafana", Replicas: 1, Deployment: true, ExistingClaim: "grafana-data"},
			map[string]any{"type": "pvc", "existingClaim": "grafana-data"})
	}
	return install(t, perOrg)
}

// kindOf is the workload kind a switch case starts from.
func kindOf(kind string) string {
	if kind == existingClaimKind {
		return discovery.KindDeployment
	}
	return kind
}

// TestToKind switches a release across the chart's persistence.type with
// --to-kind and --redeploy helm, both directions, with reuse (the same
// volume) and restore (a copy in another class): the new kind runs on the
// data, every dashboard is verified there, the old workload and claim are
// gone, no volume is lost, the release holds the new type and a plain
// `helm upgrade` afterwards changes nothing.
func TestToKind(t *testing.T) {
	e2eutil.NeedSandbox(t)
	for _, tc := range switchCases {
		for _, strategy := range []migrate.Strategy{migrate.Reuse, migrate.Restore} {
			t.Run(tc.name+"/"+string(strategy), func(t *testing.T) {
				r := installKind(t, tc.from, 5)
				before := r.kindNow()
				base := r.inventoryOf(kindOf(tc.from))
				o := migrate.Options{Strategy: strategy, Redeploy: migrate.RedeployHelm, ToKind: tc.toKind}
				if strategy == migrate.Restore {
					o.ToClass = "premium"
				}
				rep := r.migrate(o)
				after := r.kindNow()
				if after.kind != tc.to {
					t.Fatalf("after the switch: %+v, want a %s", after, tc.to)
				}
				switch {
				case strategy == migrate.Reuse && after.pv != before.pv:
					t.Errorf("reuse moved the data from %s to %s", before.pv, after.pv)
				case strategy == migrate.Restore && after.pv == before.pv:
					t.Errorf("restore left the data on %s", before.pv)
				}
				if rep.VolumesAfter[0].PV != after.pv || rep.VolumesAfter[0].Claim != after.claim {
					t.Errorf("report says %+v, cluster %+v", rep.VolumesAfter[0], after)
				}
				if _, err := sb.Kube.CoreV1().PersistentVolumeClaims(r.Rel.Namespace).Get(r.Ctx, before.claim, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
					t.Errorf("the old kind's claim %s: %v, want it gone", before.claim, err)
				}
				pv, err := sb.Kube.CoreV1().PersistentVolumes().Get(r.Ctx, after.pv, metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
					t.Errorf("PV %s policy %s, want its original Delete back", pv.Name, pv.Spec.PersistentVolumeReclaimPolicy)
				}
				if _, err := sb.Kube.CoreV1().PersistentVolumes().Get(r.Ctx, before.pv, metav1.GetOptions{}); err != nil {
					t.Errorf("the original volume %s: %v", before.pv, err)
				}
				p, rev := r.persistenceValues()
				if rev != 2 || p["type"] != tc.persistTyp || p["volumeName"] != after.pv {
					t.Errorf("release at revision %d with persistence %v; want rebind's revision 2 with type %s on %s", rev, p, tc.persistTyp, after.pv)
				}
				t.Logf("outage %s (Grafana stopped until the new kind is Ready)", time.Duration(rep.Downtime))
				// The same command again (a run killed at its very end): the
				// switch is done and the new kind's claim holds the data.
				again, err := r.Migrator().Run(r.Ctx, r.targeting(o), migrate.Apply)
				if err != nil || again.Outcome != report.Succeeded || again.RunID != rep.RunID || !strings.Contains(strings.Join(again.Notes, "\n"), "nothing to do") {
					t.Errorf("identical re-run after the switch: %v, run %s (switch %s), notes %q", err, again.RunID, rep.RunID, again.Notes)
				}
				e2eutil.AssertSameDashboards(t, base, r.inventoryOf(tc.to))
				// The user's next plain upgrade renders what runs.
				if err := r.upgrade(nil); err != nil {
					t.Fatalf("plain helm upgrade after the switch: %v", err)
				}
				r.waitKindReady(tc.to)
				if again := r.kindNow(); again != after {
					t.Errorf("after a plain upgrade %+v, want %+v", again, after)
				}
				e2eutil.AssertSameDashboards(t, base, r.inventoryOf(tc.to))
			})
		}
	}
}

// TestToKindVerificationFailureRollsBack damages the restored copy before
// the switch: verification on the new kind catches it, and the rollback
// returns the release to its original kind on the original volume, every
// dashboard there, and to its original values (a plain upgrade works).
func TestToKindVerificationFailureRollsBack(t *testing.T) {
	e2eutil.NeedSandbox(t)
	for _, tc := range switchCases {
		t.Run(tc.name, func(t *testing.T) {
			r := installKind(t, tc.from, 6)
			before := r.kindNow()
			base := r.inventoryOf(kindOf(tc.from))
			m := r.Migrator()
			m.AfterStep = e2eutil.DamageRestoredVolume(sb, r.Rel.Namespace, before.pv, func(dir string) error {
				return e2eutil.DeleteSomeDashboards(filepath.Join(dir, "grafana.db"), 2)
			})
			rep, err := m.Run(r.Ctx, r.targeting(migrate.Options{Strategy: migrate.Restore, ToClass: "premium", Redeploy: migrate.RedeployHelm, ToKind: tc.toKind}), migrate.Apply)
			var rb *migrate.RolledBackError
			if !errors.As(err, &rb) || rep.Outcome != report.RolledBack || len(rep.Verification) != 1 || rep.Verification[0].Lost != 2 {
				t.Fatalf("want a rollback after 2 lost, got %s: %v (verification %+v)", rep.Outcome, err, rep.Verification)
			}
			r.waitKindReady(kindOf(tc.from))
			if now := r.kindNow(); now != before {
				t.Errorf("after the rollback %+v, want %+v", now, before)
			}
			p, rev := r.persistenceValues()
			if rev != 3 || p["volumeName"] != nil || p["type"] == tc.persistTyp {
				t.Errorf("release at revision %d with persistence %v; want revision 3 with the original values", rev, p)
			}
			e2eutil.AssertSameDashboards(t, base, r.inventoryOf(kindOf(tc.from)))
			if err := r.upgrade(nil); err != nil {
				t.Fatalf("plain helm upgrade after the rollback: %v", err)
			}
			r.waitKindReady(kindOf(tc.from))
			if now := r.kindNow(); now != before {
				t.Errorf("after a plain upgrade %+v, want %+v", now, before)
			}
		})
	}
}

// TestToKindKilledAfterEachStepConverges kills a switch after every step
// in turn, re-running the same command each time (so a resume finds either
// kind), until it finishes with every dashboard; then the same from a kill
// after the switch, rolled back instead.
func TestToKindKilledAfterEachStepConverges(t *testing.T) {
	e2eutil.NeedSandbox(t)
	for n, tc := range switchCases {
		for _, strategy := range []migrate.Strategy{migrate.Reuse, migrate.Restore} {
			if strategy == migrate.Restore && n > 0 {
				continue // the restore steps are the same in every direction
			}
			t.Run(tc.name+"/"+string(strategy), func(t *testing.T) {
				r := installKind(t, tc.from, 4)
				before := r.kindNow()
				base := r.inventoryOf(kindOf(tc.from))
				o := migrate.Options{Strategy: strategy, Redeploy: migrate.RedeployHelm, ToKind: tc.toKind}
				if strategy == migrate.Restore {
					o.ToClass = "premium"
				}
				planned, err := r.Migrator().Run(r.Ctx, r.targeting(o), migrate.PlanOnly)
				if err != nil {
					t.Fatal(err)
				}
				var ids []string
				for _, s := range planned.Steps {
					ids = append(ids, s.ID)
				}
				t.Logf("plan: %v", ids)
				for _, id := range ids {
					r.migrateKilledAfter(o, id)
				}
				rep := r.migrate(o)
				after := r.kindNow()
				if after.kind != tc.to || (strategy == migrate.Reuse) != (after.pv == before.pv) {
					t.Fatalf("after the resumed switch %+v (before %+v), want a %s", after, before, tc.to)
				}
				if len(rep.Steps) != len(ids) {
					t.Errorf("final run reports %d steps, plan has %d", len(rep.Steps), len(ids))
				}
				if _, err := sb.Kube.CoreV1().PersistentVolumes().Get(r.Ctx, before.pv, metav1.GetOptions{}); err != nil {
					t.Errorf("the original volume %s: %v", before.pv, err)
				}
				e2eutil.AssertSameDashboards(t, base, r.inventoryOf(tc.to))
			})
		}
	}
}

// TestToKindRollbackAfterEachOutageStep: a switch killed after each step of
// the outage, then `rebind rollback`: the original kind on the original
// claim and volume, every dashboard.
func TestToKindRollbackAfterEachOutageStep(t *testing.T) {
	e2eutil.NeedSandbox(t)
	for _, tc := range switchCases {
		for _, kill := range []string{"release-claim/0", "stop-pods", "reserve/0", "claim/0", "redeploy", "verify"} {
			t.Run(tc.name+"/"+kill, func(t *testing.T) {
				r := installKind(t, tc.from, 3)
				before := r.kindNow()
				base := r.inventoryOf(kindOf(tc.from))
				r.migrateKilledAfter(migrate.Options{Strategy: migrate.Reuse, Redeploy: migrate.RedeployHelm, ToKind: tc.toKind}, kill)
				rep, err := r.Migrator().Rollback(r.Ctx, r.Rel.Namespace, r.Rel.FullName())
				if err != nil {
					t.Fatal(err)
				}
				if rep.Outcome != report.RolledBack {
					t.Fatalf("outcome %s", rep.Outcome)
				}
				r.waitKindReady(kindOf(tc.from))
				if now := r.kindNow(); now != before {
					t.Errorf("after the rollback %+v, want %+v", now, before)
				}
				e2eutil.AssertSameDashboards(t, base, r.inventoryOf(kindOf(tc.from)))
				if err := r.upgrade(nil); err != nil {
					t.Errorf("plain helm upgrade after the rollback: %v", err)
				}
			})
		}
	}
}

// TestToKindRefusals: every bad --to-kind is refused before anything
// changes, naming the object and the fix.
func TestToKindRefusals(t *testing.T) {
	e2eutil.NeedSandbox(t)
	dep := installDeployment(t, 2)
	sts2 := installWith(t, 2, fixtures.Release{Name: "grafana", Replicas: 2}, nil)
	leftover := installDeployment(t, 2)
	// A claim left by an earlier StatefulSet life of the release.
	stale := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "storage-grafana-0", Namespace: leftover.Rel.Namespace},
		Spec: leftover.claim().Spec}
	stale.Spec.VolumeName = ""
	if _, err := sb.Kube.CoreV1().PersistentVolumeClaims(leftover.Rel.Namespace).Create(leftover.Ctx, stale, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		r    *release
		o    migrate.Options
		want []string
	}{
		{"without --redeploy helm", dep, migrate.Options{Strategy: migrate.Reuse, ToKind: "statefulset"},
			[]string{"--to-kind statefulset", "--redeploy helm", "storage-grafana-0"}},
		{"the kind it already is", dep, migrate.Options{Strategy: migrate.Reuse, Redeploy: migrate.RedeployHelm, ToKind: "deployment"},
			[]string{"is already a Deployment", "drop --to-kind"}},
		{"unknown kind", dep, migrate.Options{Strategy: migrate.Reuse, Redeploy: migrate.RedeployHelm, ToKind: "daemonset"},
			[]string{`unknown kind "daemonset"`}},
		{"velero-restore", dep, migrate.Options{Strategy: migrate.VeleroRestore, FromBackup: "b", Redeploy: migrate.RedeployHelm, ToKind: "statefulset"},
			[]string{"--strategy velero-restore"}},
		{"several replicas to a Deployment", sts2, migrate.Options{Strategy: migrate.Reuse, Redeploy: migrate.RedeployHelm, ToKind: "deployment"},
			[]string{"runs 2 replicas", "--replicas=1"}},
		{"the new kind's claim exists", leftover, migrate.Options{Strategy: migrate.Reuse, Redeploy: migrate.RedeployHelm, ToKind: "statefulset"},
			[]string{"claim " + leftover.Rel.Namespace + "/storage-grafana-0", "already exists", "delete the claim"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			state := tc.r.ClusterState()
			_, rev := tc.r.persistenceValues()
			_, err := tc.r.Migrator().Run(tc.r.Ctx, tc.r.targeting(tc.o), migrate.Apply)
			for _, want := range tc.want {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("want a refusal naming %q, got %v", want, err)
				}
			}
			if after := tc.r.ClusterState(); after != state {
				t.Errorf("cluster changed:\n%s\n---\n%s", state, after)
			}
			if _, now := tc.r.persistenceValues(); now != rev {
				t.Errorf("release revision %d -> %d", rev, now)
			}
		})
	}
}

// TestToKindCLI drives the binary: the plan, a refusal without --redeploy
// helm (exit 2), the switch with Grafana reached through the API server's
// pod proxy (the Deployment's current pod for the baseline, the
// StatefulSet's pod by name for the verification) and its values file,
// then `rebind rollback` naming the new kind.
func TestToKindCLI(t *testing.T) {
	e2eutil.NeedSandbox(t)
	bin := e2eutil.BuildRebind(t)
	r := installDeployment(t, 4)
	before := r.kindNow()
	base := r.inventoryOf(discovery.KindDeployment)
	ns := r.Rel.Namespace
	run := func(args ...string) e2eutil.CLIResult { return e2eutil.RunRebind(t, bin, sb.Kubeconfig, args...) }
	target := []string{"-n", ns, "--release", r.Rel.Name, "--strategy", "reuse", "--to-kind", "statefulset", "--wait-timeout", "1m"}

	p := run(append([]string{"plan"}, append(target, "--redeploy", "helm")...)...)
	if p.Code != 0 || !strings.Contains(p.Stdout, "helm upgrade release grafana with persistence.type=statefulset") || !strings.Contains(p.Stdout, `type: "statefulset"`) {
		t.Fatalf("plan: exit %d\n%s\n%s", p.Code, p.Stdout, p.Stderr)
	}
	state := r.ClusterState()
	if res := run(append([]string{"migrate"}, target...)...); res.Code != 2 || !strings.Contains(res.Stderr, "add --redeploy helm") {
		t.Fatalf("without --redeploy helm: exit %d\n%s", res.Code, res.Stderr)
	}
	if after := r.ClusterState(); after != state {
		t.Fatalf("a refused run changed the cluster:\n%s\n---\n%s", state, after)
	}

	values := filepath.Join(t.TempDir(), "values.yaml")
	res := run(append([]string{"migrate"}, append(target, "--redeploy", "helm", "--values-out", values, "-o", "json")...)...)
	if res.Code != 0 {
		t.Fatalf("migrate: exit %d\n%s\n%s", res.Code, res.Stdout, res.Stderr)
	}
	rep := res.Report(t)
	if len(rep.Verification) != 1 || !rep.Verification[0].OK || rep.Verification[0].Checked != r.Dashboards[0] {
		t.Fatalf("verification %+v", rep.Verification)
	}
	t.Logf("outage %s", time.Duration(rep.Downtime))
	if now := r.kindNow(); now.kind != discovery.KindStatefulSet || now.pv != before.pv {
		t.Fatalf("after the switch %+v", now)
	}
	raw, err := os.ReadFile(values)
	if err != nil || !strings.Contains(string(raw), `type: "statefulset"`) || !strings.Contains(string(raw), `volumeName: "`+before.pv+`"`) {
		t.Errorf("values file: %v\n%s", err, raw)
	}

	if res := run("rollback", "-n", ns, "--statefulset", r.Rel.FullName()); res.Code != 0 {
		t.Fatalf("rollback: exit %d\n%s\n%s", res.Code, res.Stdout, res.Stderr)
	}
	r.waitKindReady(discovery.KindDeployment)
	if now := r.kindNow(); now != before {
		t.Errorf("after the rollback %+v, want %+v", now, before)
	}
	e2eutil.AssertSameDashboards(t, base, r.inventoryOf(discovery.KindDeployment))
}
