package migrate_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/pkg/migrate"
	"github.com/rebind-dev/rebind/pkg/workload"
)

// deploymentReleases are the Deployment-mode shapes users run: the chart's
// default (claim <fullname>), kube-prometheus-stack's subchart
// (<release>-grafana) and a claim of the user's (persistence.existingClaim).
var deploymentReleases = []struct {
	name string
	rel  fixtures.Release
}{
	{"release grafana", fixtures.Release{Name: "grafana", Replicas: 1, Deployment: true}},
	{"kube-prometheus-stack subchart", fixtures.Release{Name: "kps", Replicas: 1, Deployment: true, Subchart: true}},
	{"existingClaim", fixtures.Release{Name: "grafana", Replicas: 1, Deployment: true, ExistingClaim: "grafana-data", Recreate: true}},
}

// TestDeploymentMode migrates the chart's default Deployment mode, reuse
// and restore into another class, and rolls each back: the Deployment is
// kept (scaled to 0 and back, never two pods on the volume), its claim is
// replaced by one pre-bound to the chosen PV that keeps Helm's metadata,
// every dashboard is verified, and the values for the next helm upgrade
// render that claim.
func TestDeploymentMode(t *testing.T) {
	e2eutil.NeedSandbox(t)
	for _, tc := range deploymentReleases {
		for _, strategy := range []migrate.Strategy{migrate.Reuse, migrate.Restore} {
			t.Run(tc.name+"/"+string(strategy), func(t *testing.T) {
				e := deployGrafana(t, tc.rel, 7)
				orig := e.BoundPV(0)
				claimBefore, err := sb.Kube.CoreV1().PersistentVolumeClaims(e.Rel.Namespace).Get(e.Ctx, e.Rel.Claim(0), metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				dep, err := sb.Kube.AppsV1().Deployments(e.Rel.Namespace).Get(e.Ctx, e.Rel.FullName(), metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				base := e.Inventory(0)
				pvs := pvState(e)
				o := e.options(strategy)
				if strategy == migrate.Restore {
					o.ToClass = "premium"
				}
				rep, err := e.Migrator().Run(e.Ctx, o, migrate.Apply)
				if err != nil {
					t.Fatal(err)
				}
				e.AssertVerified(rep)
				pv := e.BoundPV(0)
				switch {
				case strategy == migrate.Reuse && pv.Name != orig.Name:
					t.Errorf("reuse moved the claim from %s to %s", orig.Name, pv.Name)
				case strategy == migrate.Restore && (pv.Name == orig.Name || pv.Spec.StorageClassName != "premium"):
					t.Errorf("restore left the claim on %s (class %s)", pv.Name, pv.Spec.StorageClassName)
				}
				if pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
					t.Errorf("PV %s policy %s, want its original Delete back", pv.Name, pv.Spec.PersistentVolumeReclaimPolicy)
				}
				claim, err := sb.Kube.CoreV1().PersistentVolumeClaims(e.Rel.Namespace).Get(e.Ctx, e.Rel.Claim(0), metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if claim.Spec.VolumeName != pv.Name || !maps.Equal(claim.Labels, claimBefore.Labels) ||
					claim.Annotations["meta.helm.sh/release-name"] != claimBefore.Annotations["meta.helm.sh/release-name"] {
					t.Errorf("claim %s: volume %s labels %v annotations %v; want pre-bound to %s with %v %v", claim.Name, claim.Spec.VolumeName,
						claim.Labels, claim.Annotations, pv.Name, claimBefore.Labels, claimBefore.Annotations)
				}
				after, err := sb.Kube.AppsV1().Deployments(e.Rel.Namespace).Get(e.Ctx, e.Rel.FullName(), metav1.GetOptions{})
				if err != nil || after.UID != dep.UID || ptr.Deref(after.Spec.Replicas, 1) != 1 {
					t.Fatalf("Deployment not kept as it was: %v %v", after, err)
				}
				persistence, _ := rep.HelmValues["persistence"].(map[string]any)
				if tc.rel.ExistingClaim != "" {
					if persistence["existingClaim"] != tc.rel.ExistingClaim {
						t.Errorf("values %v: want existingClaim kept", rep.HelmValues)
					}
				} else if persistence["volumeName"] != pv.Name || persistence["storageClassName"] != pv.Spec.StorageClassName {
					t.Errorf("values %v: want volumeName %s and class %s", rep.HelmValues, pv.Name, pv.Spec.StorageClassName)
				}
				// RollingUpdate with a ReadWriteOnce claim: warned, Recreate in the values.
				_, recreate := rep.HelmValues["deploymentStrategy"]
				warned := strings.Contains(strings.Join(rep.Warnings, "\n"), "RollingUpdate")
				if want := !tc.rel.Recreate; recreate != want || warned != want {
					t.Errorf("strategy Recreate=%v: deploymentStrategy in values %v, warned %v; want %v: %v %q", tc.rel.Recreate, recreate, warned, want, rep.HelmValues, rep.Warnings)
				}

				if _, err := e.Migrator().Rollback(e.Ctx, e.Rel.Namespace, e.Rel.FullName()); err != nil {
					t.Fatal(err)
				}
				if err := workload.WaitDeploymentReady(e.Ctx, sb.Kube, e.Rel.Namespace, e.Rel.FullName(), time.Minute); err != nil {
					t.Fatal(err)
				}
				if pv := e.BoundPV(0); pv.Name != orig.Name {
					t.Fatalf("after rollback on %s, want %s", pv.Name, orig.Name)
				}
				e2eutil.AssertSameDashboards(t, base, e.Inventory(0))
				assertNoPVDeleted(t, pvs)
			})
		}
	}
}

// TestDeploymentKilledAfterEachStepConverges kills a Deployment-mode
// restore after every step in turn and re-runs it; then rolls back from a
// kill in the outage.
func TestDeploymentKilledAfterEachStepConverges(t *testing.T) {
	e2eutil.NeedSandbox(t)
	e := deployGrafana(t, fixtures.Release{Name: "grafana", Replicas: 1, Deployment: true}, 6)
	pvs := pvState(e)
	o := e.options(migrate.Restore)
	o.ToClass = "premium"
	planned, err := e.Migrator().Run(e.Ctx, o, migrate.PlanOnly)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range planned.Steps {
		ids = append(ids, s.ID)
	}
	if !strings.Contains(strings.Join(ids, " "), "deployment-replicas release-claim/0 stop-pods claim/0 redeploy") {
		t.Fatalf("plan %v", ids)
	}
	killed := errors.New("killed")
	for _, id := range ids {
		m := e.Migrator()
		m.AfterStep = func(_ context.Context, got string) error {
			if got == id {
				return killed
			}
			return nil
		}
		if _, err := m.Run(e.Ctx, o, migrate.Apply); !errors.Is(err, killed) {
			t.Fatalf("kill after %s: want killed, got %v", id, err)
		}
	}
	rep, err := e.Migrator().Run(e.Ctx, o, migrate.Apply)
	if err != nil {
		t.Fatal(err)
	}
	e.AssertVerified(rep)
	assertNoPVDeleted(t, pvs)
}

// TestDeploymentRollbackMidOutage: killed after the Deployment was scaled
// to 0 (the old claim gone with its pod), a rollback brings the original
// claim, volume and pods back.
func TestDeploymentRollbackMidOutage(t *testing.T) {
	e2eutil.NeedSandbox(t)
	for _, kill := range []string{"release-claim/0", "stop-pods", "claim/0"} {
		t.Run(kill, func(t *testing.T) {
			e := deployGrafana(t, fixtures.Release{Name: "grafana", Replicas: 1, Deployment: true}, 5)
			orig := e.BoundPV(0).Name
			base := e.Inventory(0)
			m := e.Migrator()
			killed := errors.New("killed")
			m.AfterStep = func(_ context.Context, id string) error {
				if id == kill {
					return killed
				}
				return nil
			}
			o := e.options(migrate.Restore)
			o.ToClass = "premium"
			if _, err := m.Run(e.Ctx, o, migrate.Apply); !errors.Is(err, killed) {
				t.Fatalf("want killed, got %v", err)
			}
			if _, err := e.Migrator().Rollback(e.Ctx, e.Rel.Namespace, e.Rel.FullName()); err != nil {
				t.Fatal(err)
			}
			if pv := e.BoundPV(0); pv.Name != orig {
				t.Fatalf("after rollback on %s, want %s", pv.Name, orig)
			}
			if err := e.WaitReady(time.Minute); err != nil {
				t.Fatal(err)
			}
			e2eutil.AssertSameDashboards(t, base, e.Inventory(0))
		})
	}
}

// TestDeploymentBadInput: a velero-restore from a backup that does not
// exist, and --redeploy helm on a release Helm does not know (this one was applied
// without Helm), are refused before anything changes, naming the object
// and the fix.
func TestDeploymentBadInput(t *testing.T) {
	e2eutil.NeedSandbox(t)
	e := deployGrafana(t, fixtures.Release{Name: "grafana", Replicas: 1, Deployment: true}, 3)
	for _, tc := range []struct {
		name string
		set  func(*migrate.Options)
		want []string
	}{
		{"velero-restore from a backup that does not exist", func(o *migrate.Options) { o.Strategy, o.FromBackup = migrate.VeleroRestore, "b" },
			[]string{"Velero Backup velero/b", "not found", "velero backup get"}},
		{"helm redeploy without a Helm release", func(o *migrate.Options) { o.Redeploy = migrate.RedeployHelm },
			[]string{fmt.Sprintf("Helm release %s/grafana", e.Rel.Namespace), "release: not found", "--redeploy direct"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.ClusterState()
			o := e.options(migrate.Restore)
			tc.set(&o)
			_, err := e.Migrator().Run(e.Ctx, o, migrate.Apply)
			for _, want := range tc.want {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("want a refusal naming %q, got %v", want, err)
				}
			}
			if after := e.ClusterState(); after != before {
				t.Fatalf("cluster changed:\n%s\n---\n%s", before, after)
			}
		})
	}
}

// TestDeploymentCLI drives the binary on a Deployment-mode release: found
// by release name, credentials from the chart's Secret, Grafana reached
// through a URL that follows the workload; rollback by --deployment.
func TestDeploymentCLI(t *testing.T) {
	e2eutil.NeedSandbox(t)
	bin := e2eutil.BuildRebind(t)
	e := deployGrafana(t, fixtures.Release{Name: "kps", Replicas: 1, Deployment: true, Subchart: true}, 4)
	ns, name := e.Rel.Namespace, e.Rel.FullName()
	orig := e.BoundPV(0).Name
	r := runRebind(t, bin, "migrate", "-n", ns, "--release", "kps", "--strategy", "restore", "--to-storage-class", "premium",
		"--grafana-pod-url", name+"="+sb.PodURL(ns, name), "--wait-timeout", "1m")
	if r.Code != 0 || !strings.Contains(r.Stdout, "Target: Deployment "+ns+"/"+name) || !strings.Contains(r.Stdout, "persistence:") {
		t.Fatalf("migrate: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	if r := runRebind(t, bin, "rollback", "-n", ns); r.Code != 2 || !strings.Contains(r.Stderr, "--deployment NAME") {
		t.Fatalf("rollback without a target: exit %d\n%s", r.Code, r.Stderr)
	}
	if r := runRebind(t, bin, "rollback", "-n", ns, "--deployment", name); r.Code != 0 {
		t.Fatalf("rollback: exit %d\n%s", r.Code, r.Stderr)
	}
	if pv := e.BoundPV(0); pv.Name != orig {
		t.Fatalf("after rollback on %s, want %s", pv.Name, orig)
	}
}
