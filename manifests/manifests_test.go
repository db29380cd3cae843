package manifests

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/rebind-dev/rebind/pkg/drill"
	"github.com/rebind-dev/rebind/pkg/migrate"
	"github.com/rebind-dev/rebind/pkg/preflight"
)

// clusterScoped are the cluster-scoped resources rebind uses; a rule for
// any other resource in a ClusterRole grants it in every namespace.
var clusterScoped = map[string]bool{
	"persistentvolumes": true, "storageclasses": true, "volumesnapshotcontents": true,
	"volumesnapshotclasses": true, "namespaces": true, "selfsubjectaccessreviews": true,
}

// scope keys say where a grant applies.
const (
	scopeCluster  = "cluster"         // a cluster-scoped resource
	scopeEvery    = "every namespace" // a namespaced resource through a ClusterRole
	scopeRelease  = "release namespace"
	ssarCreate    = "create selfsubjectaccessreviews.authorization.k8s.io @ cluster"
	exampleNS     = "monitoring"
	scratchMarker = "rebind-drill-anything-123456"
)

func key(verb, group, resource, sub, scope string) string {
	r := resource
	if group != "" {
		r += "." + group
	}
	if sub != "" {
		r += "/" + sub
	}
	return fmt.Sprintf("%s %s @ %s", verb, r, scope)
}

// named narrows a key to one object (RBAC resourceNames,
// preflight.Permission.Name); a grant by name is a different key from a
// grant of every object of the resource.
func named(k, name string) string {
	if name == "" {
		return k
	}
	return k + " named " + name
}

// unnameable verbs carry no object name when authorized: resourceNames
// cannot restrict them, and a rule that tries grants nothing. A list or
// watch that selects one object by fieldSelector metadata.name does carry
// it (the API server's request info takes the name from that selector),
// which is how rebind watches its Leases.
var unnameable = map[string]bool{"create": true, "deletecollection": true}

// granted expands the manifest's rules into one key per verb, resource and
// (with resourceNames) name, failing on anything too broad to compare
// (wildcards, nonResourceURLs) or that grants nothing (resourceNames on a
// verb they cannot restrict).
func granted(t *testing.T, file string) (keys []string, subjects map[string]bool) {
	t.Helper()
	objs, err := Objects(file)
	if err != nil {
		t.Fatal(err)
	}
	roles := map[string][]rbacv1.PolicyRule{} // kind/name -> rules
	subjects = map[string]bool{}
	for _, u := range objs {
		switch u.GetKind() {
		case "ClusterRole", "Role":
			var r rbacv1.ClusterRole
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &r); err != nil {
				t.Fatal(err)
			}
			roles[u.GetKind()+"/"+u.GetName()] = r.Rules
		case "ClusterRoleBinding", "RoleBinding":
			var b rbacv1.RoleBinding
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &b); err != nil {
				t.Fatal(err)
			}
			ref := b.RoleRef.Kind + "/" + b.RoleRef.Name
			if _, ok := roles[ref]; !ok {
				t.Errorf("%s %s binds %s, which the file does not define (before it)", u.GetKind(), u.GetName(), ref)
			}
			if u.GetKind() == "RoleBinding" && b.RoleRef.Kind == "ClusterRole" {
				t.Errorf("RoleBinding %s of a ClusterRole: not modelled by this test", u.GetName())
			}
			for _, s := range b.Subjects {
				subjects[s.Kind+" "+s.Namespace+"/"+s.Name] = true
			}
			for _, rule := range roles[ref] {
				if len(rule.NonResourceURLs) > 0 {
					t.Errorf("%s: nonResourceURLs are not expected", ref)
				}
				names := rule.ResourceNames
				if len(names) == 0 {
					names = []string{""}
				}
				for _, g := range rule.APIGroups {
					for _, res := range rule.Resources {
						for _, v := range rule.Verbs {
							if g == "*" || res == "*" || v == "*" {
								t.Errorf("%s grants a wildcard (%s %s %s)", ref, v, g, res)
							}
							name, sub, _ := strings.Cut(res, "/")
							scope := scopeRelease
							switch {
							case u.GetKind() == "ClusterRoleBinding" && clusterScoped[name]:
								scope = scopeCluster
							case u.GetKind() == "ClusterRoleBinding":
								scope = scopeEvery
							case clusterScoped[name]:
								t.Errorf("Role %s grants cluster-scoped %s: a Role cannot", ref, name)
							case u.GetNamespace() != exampleNS:
								scope = "namespace " + u.GetNamespace()
							}
							for _, n := range names {
								if n != "" && unnameable[v] {
									t.Errorf("%s: resourceNames cannot restrict %s (%s %s)", ref, v, name, n)
								}
								keys = append(keys, named(key(v, g, name, sub, scope), n))
							}
						}
					}
				}
			}
		}
	}
	return keys, subjects
}

// wanted renders the code's permission list; namespace decides the scope.
func wanted(perms []preflight.Permission, scopeOf func(ns string) string) []string {
	return append(wantedOnly(perms, scopeOf), ssarCreate)
}

// wantedScoped is wanted for an add-on file, which relies on the base file
// for the SelfSubjectAccessReview.
func wantedScoped(perms []preflight.Permission, scopeOf func(preflight.Permission) string) []string {
	var keys []string
	for _, p := range perms {
		keys = append(keys, named(key(p.Verb, p.Group, p.Resource, p.Subresource, scopeOf(p)), p.Name))
	}
	return keys
}

func wantedOnly(perms []preflight.Permission, scopeOf func(ns string) string) []string {
	var keys []string
	for _, p := range perms {
		keys = append(keys, named(key(p.Verb, p.Group, p.Resource, p.Subresource, scopeOf(p.Namespace)), p.Name))
	}
	return keys
}

func diff(t *testing.T, file string, got, want []string) {
	t.Helper()
	sort.Strings(got)
	sort.Strings(want)
	got, want = slices.Compact(got), slices.Compact(want)
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("%s does not grant %q, which rebind's preflight requires", file, w)
		}
	}
	for _, g := range got {
		if !slices.Contains(want, g) {
			t.Errorf("%s grants %q, which rebind does not use", file, g)
		}
	}
}

// TestRBACMatchesCode is the drift test: each manifest grants exactly the
// permissions the code checks for, no more, no less.
func TestRBACMatchesCode(t *testing.T) {
	for _, tc := range []struct {
		file    string
		want    []string
		subject string
	}{
		{
			file: "rbac-migrate.yaml",
			// The example workload is the chart's fullname for release
			// "grafana".
			want: wanted(slices.Concat(migrate.Permissions(exampleNS, migrate.Restore), migrate.PodProxyPermissions(exampleNS), migrate.ClaimReleasePermissions(exampleNS), migrate.JournalPermissions(exampleNS, "grafana")), func(ns string) string {
				if ns == "" {
					return scopeCluster
				}
				return scopeRelease
			}),
			subject: "ServiceAccount monitoring/rebind",
		},
		{
			file: "rbac-migrate-velero-helm.yaml",
			want: wantedScoped(append(
				migrate.VeleroPermissions(migrate.Options{Backup: migrate.BackupVelero, Strategy: migrate.VeleroRestore}),
				slices.Concat(migrate.HelmPermissions(exampleNS, migrate.Options{Redeploy: migrate.RedeployHelm}),
					migrate.SwitchPermissions(exampleNS, migrate.Options{Redeploy: migrate.RedeployHelm, ToKind: migrate.ToStatefulSet}))...),
				func(p preflight.Permission) string {
					switch {
					case p.Namespace == "" && clusterScoped[p.Resource]:
						return scopeCluster
					case p.Namespace == "":
						return scopeEvery // the staging namespace is named at run time
					case p.Namespace == exampleNS:
						return scopeRelease
					}
					return "namespace " + p.Namespace
				}),
			subject: "ServiceAccount monitoring/rebind",
		},
		{
			file:    "rbac-migrate-install.yaml",
			want:    wantedOnly(migrate.InstallPermissions(exampleNS), func(string) string { return scopeRelease }),
			subject: "ServiceAccount monitoring/rebind",
		},
		{
			// The default mode: the fixed scratch namespace the file
			// creates, a Role there, nothing namespaced cluster-wide.
			file: "rbac-drill.yaml",
			// The example StatefulSet (and admin Secret) is the chart's
			// fullname for release "grafana".
			want: wanted(drill.Permissions(drill.Scope{Namespace: exampleNS, StatefulSet: "grafana", Secrets: []string{"grafana"},
				Scratch: drill.DefaultScratchNamespace}), namespaceScope),
			subject: "ServiceAccount monitoring/rebind-drill",
		},
		{
			// The opt-in mode adds only what it needs beyond the default:
			// the scratch namespace's name is random, so only a
			// ClusterRole can cover it.
			file: "rbac-drill-create-namespace.yaml",
			want: wantedOnly(drill.CreateScratchPermissions(scratchMarker), func(ns string) string {
				if ns == "" {
					return scopeCluster
				}
				return scopeEvery
			}),
			subject: "ServiceAccount monitoring/rebind-drill",
		},
		{
			// Optional, for drills run outside the cluster: the pod proxy
			// in production and in the fixed scratch namespace, and the
			// pod list a Deployment's current pod is found with.
			file: "rbac-drill-pod-proxy.yaml",
			want: wantedOnly(drill.PodProxyPermissions(drill.Scope{Namespace: exampleNS, StatefulSet: "grafana", Scratch: drill.DefaultScratchNamespace,
				Deployment: true, PodProxy: drill.PodProxyUse{Production: true, Scratch: true}}), func(ns string) string {
				if ns == exampleNS {
					return scopeRelease
				}
				return "namespace " + ns
			}),
			subject: "ServiceAccount monitoring/rebind-drill",
		},
	} {
		t.Run(tc.file, func(t *testing.T) {
			got, subjects := granted(t, tc.file)
			diff(t, tc.file, got, tc.want)
			if len(subjects) != 1 || !subjects[tc.subject] {
				t.Errorf("bindings name %v, want only %s", subjects, tc.subject)
			}
		})
	}
}

func TestManifestsDecode(t *testing.T) {
	for _, tc := range []struct {
		file  string
		kinds []string
	}{
		{"rbac-migrate.yaml", []string{"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}},
		{"rbac-migrate-velero-helm.yaml", []string{"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}},
		{"rbac-migrate-install.yaml", []string{"Role", "RoleBinding"}},
		{"rbac-drill.yaml", []string{"ServiceAccount", "Namespace", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Role", "RoleBinding"}},
		{"rbac-drill-create-namespace.yaml", []string{"ClusterRole", "ClusterRoleBinding"}},
		{"rbac-drill-pod-proxy.yaml", []string{"Role", "RoleBinding", "Role", "RoleBinding"}},
		{"admission-drill.yaml", []string{"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}},
		{"cronjob-drill.yaml", []string{"CronJob"}},
		{"rbac-dr-backup.yaml", []string{"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Role", "RoleBinding"}},
		{"rbac-dr-restore.yaml", []string{"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Role", "RoleBinding"}},
		{"rbac-dr-pod-proxy.yaml", []string{"Role", "RoleBinding"}},
		{"cronjob-dr-backup.yaml", []string{"CronJob"}},
		{"rbac-dr-drill.yaml", []string{"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}},
		{"admission-dr-drill.yaml", []string{"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}},
		{"helm/prebound-claim-older-charts.yaml", []string{"PersistentVolumeClaim"}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			objs, err := Objects(tc.file)
			if err != nil {
				t.Fatal(err)
			}
			var kinds []string
			for _, o := range objs {
				kinds = append(kinds, o.GetKind())
				if ns := o.GetNamespace(); ns != "" && ns != exampleNS && ns != "velero" && ns != drill.DefaultScratchNamespace {
					t.Errorf("%s %s in namespace %s, want the example %s", o.GetKind(), o.GetName(), ns, exampleNS)
				}
			}
			if !slices.Equal(kinds, tc.kinds) {
				t.Errorf("kinds %v, want %v", kinds, tc.kinds)
			}
		})
	}
}

// TestCronJobRunsTheDrill checks what the CronJob promises in its comments.
func TestCronJobRunsTheDrill(t *testing.T) {
	objs, err := Objects("cronjob-drill.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cj := objs[0].Object
	spec := cj["spec"].(map[string]any)
	if spec["concurrencyPolicy"] != "Forbid" {
		t.Errorf("concurrencyPolicy %v", spec["concurrencyPolicy"])
	}
	pod := spec["jobTemplate"].(map[string]any)["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
	if pod["serviceAccountName"] != "rebind-drill" {
		t.Errorf("serviceAccountName %v", pod["serviceAccountName"])
	}
	c := pod["containers"].([]any)[0].(map[string]any)
	var args []string
	for _, a := range c["args"].([]any) {
		args = append(args, a.(string))
	}
	if args[0] != "drill" || !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--pushgateway-url=") }) {
		t.Errorf("args %v", args)
	}
}
