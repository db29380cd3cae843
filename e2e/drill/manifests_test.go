package drill_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/manifests"
	"github.com/rebind-dev/rebind/pkg/drill"
	"github.com/rebind-dev/rebind/pkg/kube"
	"github.com/rebind-dev/rebind/pkg/migrate"
	"github.com/rebind-dev/rebind/pkg/preflight"
	"github.com/rebind-dev/rebind/pkg/report"
)

const exampleNS = "monitoring"

// applier creates manifest objects through the dynamic client, as
// `kubectl apply` would, after moving them into the test's namespace.
type applier struct {
	dyn    dynamic.Interface
	mapper meta.RESTMapper
}

func newApplier(t *testing.T) *applier {
	dyn, err := dynamic.NewForConfig(sb.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	return &applier{dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(sb.Kube.Discovery()))}
}

func (a *applier) resource(t *testing.T, u *unstructured.Unstructured) (dynamic.ResourceInterface, bool) {
	t.Helper()
	gvk := u.GroupVersionKind()
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		t.Fatalf("%s: %v", gvk, err)
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return a.dyn.Resource(m.Resource).Namespace(u.GetNamespace()), true
	}
	return a.dyn.Resource(m.Resource), false
}

// retarget moves a manifest object from the example namespace to ns and
// from the example scratch namespace to scratch and, when suffix is set,
// renames the RBAC objects, the admission policy and the ServiceAccount so
// that several copies can live side by side in one cluster (the policy
// then confines that copy's ServiceAccount).
func retarget(u *unstructured.Unstructured, ns, scratch, suffix string) {
	switch u.GetNamespace() {
	case exampleNS:
		u.SetNamespace(ns)
	case drill.DefaultScratchNamespace:
		u.SetNamespace(scratch)
	}
	rename := func(n string) string {
		if suffix == "" {
			return n
		}
		return n + "-" + suffix
	}
	switch u.GetKind() {
	case "Namespace":
		if u.GetName() == drill.DefaultScratchNamespace {
			u.SetName(scratch)
		}
	case "ServiceAccount":
		u.SetName(rename(u.GetName()))
	case "Role", "ClusterRole":
		u.SetName(rename(u.GetName()))
		rules, _, _ := unstructured.NestedSlice(u.Object, "rules")
		for _, r := range rules {
			m := r.(map[string]any)
			if names, ok := m["resourceNames"].([]any); ok {
				for i, n := range names {
					if n == drill.DefaultScratchNamespace {
						names[i] = scratch
					}
				}
			}
		}
		_ = unstructured.SetNestedSlice(u.Object, rules, "rules")
	case "RoleBinding", "ClusterRoleBinding":
		u.SetName(rename(u.GetName()))
		name, _, _ := unstructured.NestedString(u.Object, "roleRef", "name")
		_ = unstructured.SetNestedField(u.Object, rename(name), "roleRef", "name")
		subjects, _, _ := unstructured.NestedSlice(u.Object, "subjects")
		for _, s := range subjects {
			m := s.(map[string]any)
			if m["namespace"] == exampleNS {
				m["namespace"] = ns
			}
			m["name"] = rename(m["name"].(string))
		}
		_ = unstructured.SetNestedSlice(u.Object, subjects, "subjects")
	case "ValidatingAdmissionPolicy":
		u.SetName(rename(u.GetName()))
		r := strings.NewReplacer("'system:serviceaccount:"+exampleNS+":rebind-drill'", "'system:serviceaccount:"+ns+":"+rename("rebind-drill")+"'",
			"'"+drill.DefaultScratchNamespace+"'", "'"+scratch+"'")
		for _, field := range []string{"matchConditions", "variables"} {
			list, _, _ := unstructured.NestedSlice(u.Object, "spec", field)
			for _, e := range list {
				m := e.(map[string]any)
				m["expression"] = r.Replace(m["expression"].(string))
			}
			_ = unstructured.SetNestedSlice(u.Object, list, "spec", field)
		}
	case "ValidatingAdmissionPolicyBinding":
		u.SetName(rename(u.GetName()))
		name, _, _ := unstructured.NestedString(u.Object, "spec", "policyName")
		_ = unstructured.SetNestedField(u.Object, rename(name), "spec", "policyName")
	case "CronJob":
		name, _, _ := unstructured.NestedString(u.Object, "spec", "jobTemplate", "spec", "template", "spec", "serviceAccountName")
		_ = unstructured.SetNestedField(u.Object, rename(name), "spec", "jobTemplate", "spec", "template", "spec", "serviceAccountName")
		containers, _, _ := unstructured.NestedSlice(u.Object, "spec", "jobTemplate", "spec", "template", "spec", "containers")
		for _, c := range containers {
			m := c.(map[string]any)
			args, _ := m["args"].([]any)
			for i, a := range args {
				if a == "--scratch-namespace="+drill.DefaultScratchNamespace {
					args[i] = "--scratch-namespace=" + scratch
				}
			}
		}
		_ = unstructured.SetNestedSlice(u.Object, containers, "spec", "jobTemplate", "spec", "template", "spec", "containers")
	}
}

// TestManifestsServerDryRun has the API server validate every object of
// every manifest (schema, defaults, admission) without persisting it.
func TestManifestsServerDryRun(t *testing.T) {
	e2eutil.NeedSandbox(t)
	ns := sb.NewNamespace(t)
	// Namespaced objects of the scratch namespace go to one that exists (a
	// dry run creates nothing); the Namespace object itself gets a new name.
	scratch := sb.NewNamespace(t)
	a := newApplier(t)
	for _, file := range manifests.Kubernetes {
		t.Run(file, func(t *testing.T) {
			objs, err := manifests.Objects(file)
			if err != nil {
				t.Fatal(err)
			}
			for _, u := range objs {
				retarget(u, ns, scratch, "")
				if u.GetKind() == "Namespace" {
					u.SetName(scratch + "-dry-run")
				}
				r, _ := a.resource(t, u)
				if _, err := r.Create(context.Background(), u, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict"}); err != nil {
					t.Errorf("%s %s: %v", u.GetKind(), u.GetName(), err)
				}
			}
		})
	}
}

// applyRBAC creates a manifest's objects for real under names ending in
// suffix (the drill's scratch namespace is scratchFor(suffix)), minus one
// verb when drop is set, and returns the ServiceAccount it binds.
// Cluster-scoped objects are removed when the test ends.
func applyRBAC(t *testing.T, file, ns, suffix string, drop *dropVerb) string {
	t.Helper()
	ctx := context.Background()
	a := newApplier(t)
	objs, err := manifests.Objects(file)
	if err != nil {
		t.Fatal(err)
	}
	sa, dropped := "", false
	for _, u := range objs {
		retarget(u, ns, scratchFor(suffix), suffix)
		if u.GetKind() == "ServiceAccount" {
			sa = u.GetName()
		}
		if u.GetKind() == "Namespace" {
			// The scratch namespace, which assertNothingLeft checks.
			registerScratch(t, u.GetName())
		}
		if drop != nil && u.GetName() == drop.role+"-"+suffix && u.GetKind() == drop.kind {
			rules, _, _ := unstructured.NestedSlice(u.Object, "rules")
			var kept []any
			for _, r := range rules {
				m := r.(map[string]any)
				if slices.Contains(m["resources"].([]any), any(drop.resource)) {
					verbs := m["verbs"].([]any)
					if i := slices.Index(verbs, any(drop.verb)); i >= 0 {
						m["verbs"], dropped = slices.Delete(verbs, i, i+1), true
					}
					if len(m["verbs"].([]any)) == 0 {
						continue
					}
				}
				kept = append(kept, m)
			}
			_ = unstructured.SetNestedSlice(u.Object, kept, "rules")
		}
		r, namespaced := a.resource(t, u)
		if _, err := r.Create(ctx, u, metav1.CreateOptions{}); err != nil {
			t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
		}
		if !namespaced {
			name := u.GetName()
			t.Cleanup(func() {
				if err := r.Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
					t.Errorf("deleting %s: %v", name, err)
				}
			})
		}
	}
	if drop != nil && !dropped {
		t.Fatalf("%s has no %s %s in %s %s", file, drop.verb, drop.resource, drop.kind, drop.role)
	}
	return sa
}

type dropVerb struct{ kind, role, resource, verb string }

func saClients(t *testing.T, ns, sa string) *kube.Clients {
	t.Helper()
	path, err := sb.ServiceAccountKubeconfig(context.Background(), ns, sa)
	if err != nil {
		t.Fatal(err)
	}
	c, err := kube.Load(kube.LoadOptions{Kubeconfig: path})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestRBACManifestsAsServiceAccount runs migrate and drill as the
// manifests' ServiceAccounts: with the rules as shipped they succeed; with
// one verb removed, preflight refuses and names it.
func TestRBACManifestsAsServiceAccount(t *testing.T) {
	e2eutil.NeedSandbox(t)
	// run runs as the ServiceAccount of the manifests applied under suffix.
	type run func(t *testing.T, ctx context.Context, r *release, c *kube.Clients, suffix string) error
	migrateRun := func(t *testing.T, ctx context.Context, r *release, c *kube.Clients, _ string) error {
		m := r.Migrator()
		m.Clients = c
		o := r.Options(migrate.Restore, migrate.Timeouts{Wait: 90 * time.Second, Snapshot: 90 * time.Second, Verify: 60 * time.Second})
		rep, err := m.Run(ctx, o, migrate.Apply)
		if err == nil && rep.Outcome != report.Succeeded {
			t.Errorf("migrate outcome %s", rep.Outcome)
		}
		return err
	}
	drillRun := func(t *testing.T, ctx context.Context, r *release, c *kube.Clients, suffix string) error {
		before := takeState(t, r.Rel.Namespace)
		o := r.options()
		o.ScratchNamespace = scratchFor(suffix) // the one the manifest made
		res := newDrill(t, c).Run(ctx, o)
		switch res.Outcome {
		case drill.Passed:
			if res.Checked != r.total() {
				t.Errorf("checked %d of %d", res.Checked, r.total())
			}
			assertNothingLeft(t, before, res)
			return nil
		case drill.Refused:
			assertNothingLeft(t, before, res)
			return &preflight.Error{Problems: res.Problems}
		}
		return errors.New(res.Outcome + ": " + res.Error)
	}
	// missingVerb is one rule taken out of a manifest and the refusal that
	// must name it.
	type missingVerb struct {
		drop dropVerb
		want string
	}
	for _, tc := range []struct {
		name    string
		file    string
		run     run
		missing []missingVerb
	}{
		{
			name: "migrate", file: "rbac-migrate.yaml", run: migrateRun,
			missing: []missingVerb{
				{dropVerb{"ClusterRole", "rebind-migrate", "persistentvolumes", "update"}, "not allowed to update persistentvolumes cluster-wide"},
				{dropVerb{"Role", "rebind-migrate", "volumesnapshots", "create"}, "not allowed to create volumesnapshots.snapshot.storage.k8s.io in namespace "},
			},
		},
		{
			name: "drill", file: "rbac-drill.yaml", run: drillRun,
			missing: []missingVerb{
				{dropVerb{"ClusterRole", "rebind-drill", "volumesnapshotcontents", "create"}, "not allowed to create volumesnapshotcontents.snapshot.storage.k8s.io cluster-wide"},
				{dropVerb{"Role", "rebind-drill-scratch", "statefulsets", "create"}, "not allowed to create statefulsets.apps in namespace rebind-drill-scratch-"},
				{dropVerb{"Role", "rebind-drill", "events", "create"}, "not allowed to create events in namespace "},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
			defer cancel()
			ns := sb.NewNamespace(t)
			// RBAC first: the authorizer's cache has long caught up by
			// the time Grafana is deployed and seeded.
			fullSA := applyRBAC(t, tc.file, ns, "full-"+ns, nil)
			var reduced, suffixes []string
			for i, m := range tc.missing {
				suffixes = append(suffixes, "less"+string(rune('a'+i))+"-"+ns)
				reduced = append(reduced, applyRBAC(t, tc.file, ns, suffixes[i], &m.drop))
			}
			r := deployGrafana(t, fixtures.Release{Name: "grafana", Namespace: ns, Replicas: 1}, 4)

			for i, m := range tc.missing {
				err := tc.run(t, ctx, r, saClients(t, ns, reduced[i]), suffixes[i])
				var pf *preflight.Error
				if !errors.As(err, &pf) {
					t.Fatalf("without %s %s: want a preflight error, got %v", m.drop.verb, m.drop.resource, err)
				}
				if !strings.Contains(err.Error(), m.want) {
					t.Errorf("without %s %s: error lacks %q:\n%v", m.drop.verb, m.drop.resource, m.want, err)
				}
			}
			if err := tc.run(t, ctx, r, saClients(t, ns, fullSA), "full-"+ns); err != nil {
				t.Fatalf("%s as ServiceAccount %s: %v", tc.name, fullSA, err)
			}
		})
	}
}

// TestMigratePodProxyAsServiceAccount runs the binary as the ServiceAccount
// of manifests/rbac-migrate.yaml with a token kubeconfig and no Grafana
// URL: the token is the Authorization header the API server takes for
// itself, Grafana's session cookie passes its pod proxy, and every
// dashboard is verified. Without `get pods/proxy` preflight refuses,
// naming it, before anything changes.
func TestMigratePodProxyAsServiceAccount(t *testing.T) {
	e2eutil.NeedSandbox(t)
	a := migrateAccounts(t)
	r, ns, full, less := a.release, a.ns, a.full, a.less
	run := func(sa string) e2eutil.CLIResult {
		return a.run(sa, "migrate", "-n", ns, "--release", "grafana", "--strategy", "restore",
			"-o", "json", "--wait-timeout", "1m", "--snapshot-timeout", "1m", "--verify-timeout", "1m")
	}
	before := takeState(t, ns)
	if res := run(less); res.Code != 2 || !strings.Contains(res.Stderr, "not allowed to get pods/proxy in namespace "+ns) {
		t.Fatalf("without get pods/proxy: exit %d, want 2 naming it:\n%s", res.Code, res.Stderr)
	}
	assertNothingLeft(t, before)
	res := run(full)
	if res.Code != 0 {
		t.Fatalf("as %s: exit %d\n%s\n%s", full, res.Code, res.Stdout, res.Stderr)
	}
	rep := res.Report(t)
	if len(rep.Verification) != 1 || !rep.Verification[0].OK || rep.Verification[0].Checked != r.total() {
		t.Fatalf("verification %+v, want %d dashboards verified", rep.Verification, r.total())
	}
}
