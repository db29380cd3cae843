package dr_test

// This file sorts before dr_test.go on purpose: go test runs a package's
// tests file by file, and TestDisasterRecovery stops cluster A half-way
// (needClusterA says so when the order is shuffled).

import (
	"context"
	"net/http"
	"path/filepath"
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
	"github.com/rebind-dev/rebind/pkg/kube"
	"github.com/rebind-dev/rebind/pkg/report"
	"github.com/rebind-dev/rebind/pkg/velero"
)

// rbacGVR: the kinds the DR RBAC files hold.
var rbacGVR = map[string]schema.GroupVersionResource{
	"ServiceAccount":            {Version: "v1", Resource: "serviceaccounts"},
	"Role":                      {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "roles"},
	"RoleBinding":               {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "rolebindings"},
	"ClusterRole":               {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles"},
	"ClusterRoleBinding":        {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterrolebindings"},
	"ValidatingAdmissionPolicy": {Group: "admissionregistration.k8s.io", Version: "v1", Resource: "validatingadmissionpolicies"},
	"ValidatingAdmissionPolicyBinding": {Group: "admissionregistration.k8s.io", Version: "v1",
		Resource: "validatingadmissionpolicybindings"},
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
			case "ValidatingAdmissionPolicy":
				// It names the ServiceAccount it confines.
				conds, _, _ := unstructured.NestedSlice(u.Object, "spec", "matchConditions")
				for _, c := range conds {
					m := c.(map[string]any)
					m["expression"] = strings.ReplaceAll(m["expression"].(string), "'system:serviceaccount:"+exampleNS+":rebind-dr-drill'",
						"'system:serviceaccount:"+ns+":"+rename("rebind-dr-drill")+"'")
				}
				_ = unstructured.SetNestedSlice(u.Object, conds, "spec", "matchConditions")
			case "ValidatingAdmissionPolicyBinding":
				name, _, _ := unstructured.NestedString(u.Object, "spec", "policyName")
				_ = unstructured.SetNestedField(u.Object, rename(name), "spec", "policyName")
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

// inBothClusters builds rebind and creates namespace ns in both clusters
// (the release's in A, the ServiceAccount's in B), for a test that runs
// rebind as the ServiceAccounts of the DR files; ctx ends with the test.
func inBothClusters(t *testing.T, ns string, timeout time.Duration) (bin string, ctx context.Context) {
	t.Helper()
	bin = e2eutil.BuildRebind(t)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	for _, sb := range []*sandbox.Sandbox{clusterA, clusterB} {
		if _, err := sb.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return bin, ctx
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
	const ns, backupName = "dr-rbac", "dr-rbac-1"
	bin, ctx := inBothClusters(t, ns, 8*time.Minute)
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

// TestDRDrillAsServiceAccounts runs `rebind drill --to-context` as the
// ServiceAccounts of the shipped files: rbac-dr-backup.yaml (with the pod
// proxy add-on) in production, rbac-dr-drill.yaml with its admission policy
// in the DR cluster. With a right taken out in B it is refused before
// anything is backed up; as shipped it passes and leaves nothing in B; and
// the policy keeps the ClusterRole's writes to what a drill makes.
func TestDRDrillAsServiceAccounts(t *testing.T) {
	e2eutil.NeedSandbox(t)
	needClusterA(t)
	const ns = "dr-drill-rbac"
	bin, ctx := inBothClusters(t, ns, 10*time.Minute)
	prodFiles, drFiles := []string{"rbac-dr-backup.yaml", "rbac-dr-pod-proxy.yaml"}, []string{"rbac-dr-drill.yaml", "admission-dr-drill.yaml"}
	contexts := func(t *testing.T, name, a, b string) string {
		t.Helper()
		path := filepath.Join(t.TempDir(), name)
		if err := mergeKubeconfigs(path, map[string]string{"a": a, "b": b}); err != nil {
			t.Fatal(err)
		}
		return path
	}
	prod := applyDR(t, clusterA, ns, "drill-a", nil, prodFiles...)
	full := contexts(t, "full", prod, applyDR(t, clusterB, ns, "drill-b", nil, drFiles...))
	noCleanup := contexts(t, "no-cleanup", prod,
		applyDR(t, clusterB, ns, "drill-b-less", &dropRule{"ClusterRole", "", "volumesnapshotcontents", "delete"}, drFiles...))
	g := e2eutil.DeployGrafana(t, clusterA, fixtures.Release{Name: "grafana", Namespace: ns, Replicas: 1, StorageClass: sandbox.StorageClassDefault}, 3)

	drill := func(t *testing.T, kubeconfig string) e2eutil.CLIResult {
		t.Helper()
		args := []string{"--context", "a", "drill", "-n", ns, "--release", "grafana", "--to-context", "b", "--restore-storage-class", sandbox.StorageClassPremium,
			"--sync-timeout", "2m", "--cleanup-timeout", "2m", "--velero-pickup-timeout", "30s", "--grafana-access", "pod-proxy", "-o", "json"}
		begin := time.Now()
		r := e2eutil.RunRebind(t, bin, kubeconfig, args...)
		t.Logf("rebind %s: exit %d in %s\n%s", strings.Join(args, " "), r.Code, time.Since(begin).Round(100*time.Millisecond), r.Stderr)
		return r
	}
	backedUp := func(t *testing.T) []string {
		t.Helper()
		va := velero.New(g.Clients, sandbox.VeleroNamespace, nil)
		list, err := va.Dyn.Resource(velero.BackupsGVR).Namespace(va.Namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, b := range list.Items {
			if nss, _, _ := unstructured.NestedStringSlice(b.Object, "spec", "includedNamespaces"); slices.Contains(nss, ns) {
				out = append(out, b.GetName())
			}
		}
		return out
	}

	t.Run("refused without a right in B, before anything is backed up", func(t *testing.T) {
		before := leftovers(t, clusterB, "")
		r := drill(t, noCleanup)
		want := "not allowed to delete volumesnapshotcontents.snapshot.storage.k8s.io cluster-wide"
		if r.Code != 2 || !strings.Contains(r.Stderr, want) || !strings.Contains(r.Stderr, dr.DrillTargetManifest) {
			t.Errorf("exit %d, want 2 naming %q and %s:\n%s", r.Code, want, dr.DrillTargetManifest, r.Stderr)
		}
		if b := backedUp(t); len(b) > 0 {
			t.Errorf("a refused drill backed up: %v", b)
		}
		if after := leftovers(t, clusterB, ""); after != before {
			t.Errorf("a refused drill changed B:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	})

	t.Run("passes as the ServiceAccounts, leaving nothing in B", func(t *testing.T) {
		before := leftovers(t, clusterB, "")
		r := drill(t, full)
		if r.Code != 0 {
			t.Fatalf("exit %d\n%s", r.Code, r.Stdout)
		}
		rep := r.Report(t)
		assertVerdicts(t, rep, g.Dashboards)
		if len(rep.Leftovers) > 0 {
			t.Errorf("leftovers: %v", rep.Leftovers)
		}
		if after := leftovers(t, clusterB, ""); after != before {
			t.Errorf("the drill left objects in B:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	})

	t.Run("the admission policy confines the ClusterRole's writes", func(t *testing.T) {
		c, err := kube.Load(kube.LoadOptions{Kubeconfig: full, Context: "b"})
		if err != nil {
			t.Fatal(err)
		}
		refused := func(what string, err error) {
			t.Helper()
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "rebind-dr-drill.rebind.dev") {
				t.Errorf("%s: want Invalid from the admission policy, got %v", what, err)
			}
		}
		nsAPI := c.Kube.CoreV1().Namespaces()
		_, err = nsAPI.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "not-a-drill"}}, metav1.CreateOptions{})
		refused("creating namespace not-a-drill", err)
		_, err = nsAPI.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "rebind-drill-dr-unlabelled"}}, metav1.CreateOptions{})
		refused("creating an unlabelled rebind-drill-dr-* namespace", err)
		refused("deleting namespace "+ns, nsAPI.Delete(ctx, ns, metav1.DeleteOptions{}))
		// The pod proxy into a pod of a namespace that is not a drill's.
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "not-grafana", Namespace: ns},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
		if _, err := clusterB.Kube.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		var code int
		res := c.Kube.CoreV1().RESTClient().Get().Namespace(ns).Resource("pods").Name("not-grafana:3000").SubResource("proxy").Suffix("api", "health").Do(ctx)
		body, _ := res.StatusCode(&code).Raw()
		if code != http.StatusUnprocessableEntity || !strings.Contains(string(body), "rebind-dr-drill.rebind.dev") {
			t.Errorf("the pod proxy into %s/not-grafana: HTTP %d %s, want 422 from the admission policy", ns, code, body)
		}
	})
}
