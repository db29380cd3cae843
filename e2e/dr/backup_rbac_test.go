package dr_test

// This file sorts before dr_test.go on purpose: go test runs a package's
// tests file by file, and TestDisasterRecovery stops cluster A half-way
// (needClusterA says so when the order is shuffled).

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/e2e/sandbox"
	"github.com/rebind-dev/rebind/manifests"
	"github.com/rebind-dev/rebind/pkg/dr"
	"github.com/rebind-dev/rebind/pkg/journal"
	"github.com/rebind-dev/rebind/pkg/report"
	"github.com/rebind-dev/rebind/pkg/velero"
)

// rbacGVR: the kinds the DR RBAC files hold.
var rbacGVR = map[string]schema.GroupVersionResource{
	"ServiceAccount":     {Version: "v1", Resource: "serviceaccounts"},
	"Role":               {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "roles"},
	"RoleBinding":        {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "rolebindings"},
	"ClusterRole":        {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles"},
	"ClusterRoleBinding": {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterrolebindings"},
}

// dropRule takes one verb out of the rule for resource in the Role or
// ClusterRole of kind in namespace ("" for a ClusterRole).
type dropRule struct{ kind, namespace, resource, verb string }

// applyDR creates the objects of the DR RBAC files in sb as an operator
// would after adapting them: the example namespace `monitoring` becomes
// ns, and every name gets suffix so that several copies of one file (one
// with a verb dropped) live side by side. It returns the kubeconfig of the
// ServiceAccount they bind. Cluster-scoped objects and those in Velero's
// namespace are removed when the test ends.
func applyDR(t *testing.T, sb *sandbox.Sandbox, ns, suffix string, drop *dropRule, files ...string) string {
	t.Helper()
	ctx := context.Background()
	dyn, err := dynamic.NewForConfig(sb.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	rename := func(n string) string { return n + "-" + suffix }
	const exampleNS = "monitoring"
	sa, dropped := "", false
	for _, file := range files {
		objs, err := manifests.Objects(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range objs {
			if u.GetNamespace() == exampleNS {
				u.SetNamespace(ns)
			}
			u.SetName(rename(u.GetName()))
			switch u.GetKind() {
			case "ServiceAccount":
				sa = u.GetName()
			case "RoleBinding", "ClusterRoleBinding":
				name, _, _ := unstructured.NestedString(u.Object, "roleRef", "name")
				_ = unstructured.SetNestedField(u.Object, rename(name), "roleRef", "name")
				subjects, _, _ := unstructured.NestedSlice(u.Object, "subjects")
				for _, s := range subjects {
					m := s.(map[string]any)
					m["namespace"], m["name"] = ns, rename(m["name"].(string))
				}
				_ = unstructured.SetNestedSlice(u.Object, subjects, "subjects")
			case "Role", "ClusterRole":
				if drop == nil || u.GetKind() != drop.kind || u.GetNamespace() != drop.namespace {
					break
				}
				rules, _, _ := unstructured.NestedSlice(u.Object, "rules")
				for _, r := range rules {
					m := r.(map[string]any)
					if !slices.Contains(m["resources"].([]any), any(drop.resource)) {
						continue
					}
					verbs := m["verbs"].([]any)
					if i := slices.Index(verbs, any(drop.verb)); i >= 0 {
						m["verbs"], dropped = slices.Delete(verbs, i, i+1), true
					}
				}
				_ = unstructured.SetNestedSlice(u.Object, rules, "rules")
			}
			gvr, ok := rbacGVR[u.GetKind()]
			if !ok {
				t.Fatalf("%s: kind %s", file, u.GetKind())
			}
			var r dynamic.ResourceInterface = dyn.Resource(gvr)
			if u.GetNamespace() != "" {
				r = dyn.Resource(gvr).Namespace(u.GetNamespace())
			}
			if _, err := r.Create(ctx, u, metav1.CreateOptions{}); err != nil {
				t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
			}
			if u.GetNamespace() != ns {
				name := u.GetName()
				t.Cleanup(func() {
					if err := r.Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
						t.Errorf("deleting %s: %v", name, err)
					}
				})
			}
		}
	}
	if drop != nil && !dropped {
		t.Fatalf("%v has no rule to drop %+v", files, *drop)
	}
	path, err := sb.ServiceAccountKubeconfig(ctx, ns, sa)
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// TestDRManifestsAsServiceAccount runs `rebind backup` in A, and `rebind
// restore --from-backup` in B, as the ServiceAccounts of the shipped RBAC
// files (with rbac-dr-pod-proxy.yaml: rebind runs outside the clusters).
// With one rule taken out, each is refused with exit 2 naming the verb and
// the file, before it writes anything; with the files as shipped, both
// pass.
func TestDRManifestsAsServiceAccount(t *testing.T) {
	e2eutil.NeedSandbox(t)
	needClusterA(t)
	bin := e2eutil.BuildRebind(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	const ns, backupName = "dr-rbac", "dr-rbac-1"
	for _, sb := range []*sandbox.Sandbox{clusterA, clusterB} {
		if _, err := sb.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	backupFiles := []string{"rbac-dr-backup.yaml", "rbac-dr-pod-proxy.yaml"}
	restoreFiles := []string{"rbac-dr-restore.yaml", "rbac-dr-pod-proxy.yaml"}
	// RBAC first: the authorizer's cache has caught up by the time Grafana
	// is seeded.
	full := applyDR(t, clusterA, ns, "a", nil, backupFiles...)
	noBackup := applyDR(t, clusterA, ns, "a-less-backup", &dropRule{"Role", sandbox.VeleroNamespace, "backups", "create"}, backupFiles...)
	noProxy := applyDR(t, clusterA, ns, "a-less-proxy", &dropRule{"Role", ns, "pods/proxy", "get"}, backupFiles...)
	fullB := applyDR(t, clusterB, ns, "b", nil, restoreFiles...)
	noRestore := applyDR(t, clusterB, ns, "b-less-restore", &dropRule{"Role", sandbox.VeleroNamespace, "restores", "create"}, restoreFiles...)
	g := e2eutil.DeployGrafana(t, clusterA, fixtures.Release{Name: "grafana", Namespace: ns, Replicas: 1, StorageClass: sandbox.StorageClassDefault}, 3)

	run := func(t *testing.T, kubeconfig string, args ...string) e2eutil.CLIResult {
		t.Helper()
		begin := time.Now()
		r := e2eutil.RunRebind(t, bin, kubeconfig, append(args, "--velero-pickup-timeout", "30s", "--grafana-access", "pod-proxy")...)
		t.Logf("rebind %s: exit %d in %s\n%s", strings.Join(args, " "), r.Code, time.Since(begin).Round(100*time.Millisecond), r.Stderr)
		return r
	}
	backup := []string{"backup", "-n", ns, "--release", "grafana", "--backup-name", backupName, "-o", "json"}
	va, vb := velero.New(g.Clients, sandbox.VeleroNamespace, nil), veleroB(t)

	t.Run("backup refused without a verb, before anything is written", func(t *testing.T) {
		for _, tc := range []struct {
			kubeconfig, want, manifest string
		}{
			{noBackup, "not allowed to create backups.velero.io in namespace " + sandbox.VeleroNamespace, dr.BackupManifest},
			{noProxy, "not allowed to get pods/proxy in namespace " + ns, dr.PodProxyManifest},
		} {
			r := run(t, tc.kubeconfig, backup...)
			if r.Code != 2 || !strings.Contains(r.Stderr, tc.want) || !strings.Contains(r.Stderr, tc.manifest) {
				t.Errorf("exit %d, want 2 naming %q and %s:\n%s", r.Code, tc.want, tc.manifest, r.Stderr)
			}
		}
		if _, err := va.GetBackup(ctx, backupName); err == nil {
			t.Errorf("a refused backup created Velero Backup %s", backupName)
		}
		if _, err := g.Clients.Kube.CoreV1().ConfigMaps(ns).Get(ctx, dr.BaselineName("grafana"), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("a refused backup wrote its baseline ConfigMap: %v", err)
		}
		if _, err := g.Clients.Kube.CoordinationV1().Leases(ns).Get(ctx, journal.LeaseName("grafana"), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("a refused backup took the Lease: %v", err)
		}
	})

	t.Run("backup as rebind-dr", func(t *testing.T) {
		r := run(t, full, backup...)
		if r.Code != 0 {
			t.Fatalf("exit %d\n%s", r.Code, r.Stdout)
		}
		if rep := r.Report(t); rep.VeleroBackup != backupName || rep.Outcome != report.Succeeded || len(rep.Warnings) > 0 {
			t.Fatalf("report: %+v", rep)
		}
		if _, err := g.Clients.Kube.CoreV1().ConfigMaps(ns).Get(ctx, dr.BaselineName("grafana"), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("baseline ConfigMap left after the backup: %v", err)
		}
	})
	if t.Failed() {
		return
	}
	waitBackupInB(t, ctx, backupName)

	restore := []string{"restore", "--from-backup", backupName, "--to-storage-class", sandbox.StorageClassPremium, "-o", "json"}
	t.Run("restore refused without a verb, before anything is changed", func(t *testing.T) {
		r := run(t, noRestore, restore...)
		want := "not allowed to create restores.velero.io in namespace " + sandbox.VeleroNamespace
		if r.Code != 2 || !strings.Contains(r.Stderr, want) || !strings.Contains(r.Stderr, dr.RestoreManifest) {
			t.Errorf("exit %d, want 2 naming %q and %s:\n%s", r.Code, want, dr.RestoreManifest, r.Stderr)
		}
		if _, err := vb.GetRestore(ctx, dr.RestoreName(backupName, ns)); err == nil {
			t.Errorf("a refused restore created Velero Restore %s", dr.RestoreName(backupName, ns))
		}
		if mapped, err := vb.MappedClass(ctx, sandbox.StorageClassDefault); err != nil || mapped != "" {
			t.Errorf("a refused restore mapped the class: %q %v", mapped, err)
		}
	})

	t.Run("restore as rebind-dr", func(t *testing.T) {
		r := run(t, fullB, restore...)
		if r.Code != 0 {
			t.Fatalf("exit %d\n%s", r.Code, r.Stdout)
		}
		assertVerdicts(t, r.Report(t), g.Dashboards)
	})
}
