package manifests

import (
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/rebind-dev/rebind/pkg/dr"
	"github.com/rebind-dev/rebind/pkg/preflight"
	"github.com/rebind-dev/rebind/pkg/velero"
)

// namespaceScope places a permission: cluster-wide, the release namespace, or
// another namespace by name (Velero's, the drill's scratch namespace).
func namespaceScope(ns string) string {
	switch ns {
	case "":
		return scopeCluster
	case exampleNS:
		return scopeRelease
	}
	return "namespace " + ns
}

// TestDRRBACMatchesCode is the drift test of the disaster-recovery files:
// each grants exactly what its command's preflight asks for, as the
// examples the files describe (release `grafana` in `monitoring`, a
// StatefulSet found by --release, Velero in `velero`, the chart's admin
// Secret, Grafana reached in the cluster; the restore into another class).
func TestDRRBACMatchesCode(t *testing.T) {
	const subject = "ServiceAccount monitoring/rebind-dr"
	for _, tc := range []struct {
		file string
		want []string
	}{
		{"rbac-dr-backup.yaml", wanted(dr.BackupPermissions(dr.BackupScope{Namespace: exampleNS, Workload: "grafana", ByRelease: true,
			VeleroNamespace: velero.DefaultNamespace, Grafana: dr.GrafanaAccess{AdminSecret: true}}), namespaceScope)},
		{"rbac-dr-restore.yaml", wanted(dr.RestorePermissions(dr.RestoreScope{VeleroNamespace: velero.DefaultNamespace, Into: exampleNS, Workload: "grafana",
			MapClass: true, Grafana: dr.GrafanaAccess{AdminSecret: true}}), namespaceScope)},
		{"rbac-dr-pod-proxy.yaml", wantedOnly(dr.PodProxyPermissions(exampleNS, "grafana", false), namespaceScope)},
	} {
		t.Run(tc.file, func(t *testing.T) {
			got, subjects := granted(t, tc.file)
			diff(t, tc.file, got, tc.want)
			if len(subjects) != 1 || !subjects[subject] {
				t.Errorf("bindings name %v, want only %s", subjects, subject)
			}
		})
	}
}

// TestDRDrillRBACMatchesCode: rbac-dr-drill.yaml grants exactly what a
// drill asks for in the DR cluster, for the example it describes (release
// `grafana`, a StatefulSet, Velero in `velero`, another class, the admin
// Secret, Grafana through the pod proxy), the scratch namespace (named at
// run time) through its ClusterRole in every namespace.
func TestDRDrillRBACMatchesCode(t *testing.T) {
	const scratch = "rebind-drill-dr-grafana-123456"
	perms := dr.DrillTargetPermissions(dr.DrillTargetScope{VeleroNamespace: velero.DefaultNamespace, Scratch: scratch, Workload: "grafana",
		MapClass: true, Grafana: dr.GrafanaAccess{PodProxy: true, AdminSecret: true}})
	want := wanted(perms, func(ns string) string {
		if ns == scratch {
			return scopeEvery
		}
		return namespaceScope(ns)
	})
	got, subjects := granted(t, "rbac-dr-drill.yaml")
	diff(t, "rbac-dr-drill.yaml", got, want)
	if len(subjects) != 1 || !subjects["ServiceAccount monitoring/rebind-dr-drill"] {
		t.Errorf("bindings name %v, want only ServiceAccount monitoring/rebind-dr-drill", subjects)
	}
}

// TestDRDrillAdmissionNamesItsAccount: the policy binds to every request
// and matches the ServiceAccount of rbac-dr-drill.yaml, and confines each
// write the ClusterRole grants cluster-wide.
func TestDRDrillAdmissionNamesItsAccount(t *testing.T) {
	vap := find(t, "admission-dr-drill.yaml", "ValidatingAdmissionPolicy", "")
	sa := find(t, "rbac-dr-drill.yaml", "ServiceAccount", "")
	conds, _, _ := unstructured.NestedSlice(vap.Object, "spec", "matchConditions")
	user := "system:serviceaccount:" + sa.GetNamespace() + ":" + sa.GetName()
	if len(conds) != 1 || !strings.Contains(conds[0].(map[string]any)["expression"].(string), "'"+user+"'") {
		t.Errorf("match conditions %v, want the ServiceAccount %s", conds, user)
	}
	rules, _, _ := unstructured.NestedSlice(vap.Object, "spec", "matchConstraints", "resourceRules")
	matched := map[string]bool{}
	for _, r := range rules {
		m := r.(map[string]any)
		for _, res := range m["resources"].([]any) {
			for _, op := range m["operations"].([]any) {
				matched[res.(string)+" "+op.(string)] = true
			}
		}
	}
	for _, w := range []string{"namespaces CREATE", "namespaces DELETE", "volumesnapshotcontents DELETE", "pods/proxy CONNECT"} {
		if !matched[w] {
			t.Errorf("the policy does not match %s", w)
		}
	}
	assertDenyBinding(t, "admission-dr-drill.yaml", vap)
}

// TestDRPodProxyIsTheOnlyDifference: the add-on file is exactly what the
// pod proxy adds to either command, so one file serves both clusters.
func TestDRPodProxyIsTheOnlyDifference(t *testing.T) {
	added := func(without, with []preflight.Permission) []string {
		var out []string
		for _, p := range with {
			if !slices.Contains(without, p) {
				out = append(out, p.String())
			}
		}
		return out
	}
	var want []string
	for _, p := range dr.PodProxyPermissions(exampleNS, "grafana", false) {
		want = append(want, p.String())
	}
	backup := dr.BackupScope{Namespace: exampleNS, Workload: "grafana", ByRelease: true, Grafana: dr.GrafanaAccess{AdminSecret: true}}
	restore := dr.RestoreScope{Into: exampleNS, Workload: "grafana", MapClass: true, Grafana: dr.GrafanaAccess{AdminSecret: true}}
	proxied := func(a dr.GrafanaAccess) dr.GrafanaAccess { a.PodProxy = true; return a }
	bp, rp := backup, restore
	bp.Grafana, rp.Grafana = proxied(bp.Grafana), proxied(rp.Grafana)
	for name, got := range map[string][]string{
		"backup":  added(dr.BackupPermissions(backup), dr.BackupPermissions(bp)),
		"restore": added(dr.RestorePermissions(restore), dr.RestorePermissions(rp)),
	} {
		if !slices.Equal(got, want) {
			t.Errorf("the pod proxy adds %v to %s, want %v (rbac-dr-pod-proxy.yaml)", got, name, want)
		}
	}
}

// TestDRCronJobRunsTheBackup checks what the CronJob promises in its
// comments, and that it runs as the ServiceAccount the RBAC file binds,
// for the release and Velero namespace that file grants.
func TestDRCronJobRunsTheBackup(t *testing.T) {
	cj := find(t, "cronjob-dr-backup.yaml", "CronJob", "")
	if p, _, _ := unstructured.NestedString(cj.Object, "spec", "concurrencyPolicy"); p != "Forbid" {
		t.Errorf("concurrencyPolicy %q, want Forbid", p)
	}
	if b, _, _ := unstructured.NestedInt64(cj.Object, "spec", "jobTemplate", "spec", "backoffLimit"); b != 0 {
		t.Errorf("backoffLimit %d, want 0: a retry takes another baseline and Backup", b)
	}
	pod, _, _ := unstructured.NestedMap(cj.Object, "spec", "jobTemplate", "spec", "template", "spec")
	sa := find(t, "rbac-dr-backup.yaml", "ServiceAccount", "")
	if pod["serviceAccountName"] != sa.GetName() || cj.GetNamespace() != sa.GetNamespace() {
		t.Errorf("runs as %v in %s, want %s/%s", pod["serviceAccountName"], cj.GetNamespace(), sa.GetNamespace(), sa.GetName())
	}
	containers, _, _ := unstructured.NestedSlice(pod, "containers")
	args, _, _ := unstructured.NestedStringSlice(containers[0].(map[string]any), "args")
	cmd := slices.Index(args, "backup")
	if cmd < 0 {
		t.Fatalf("args %v do not run `rebind backup`", args)
	}
	for _, want := range []string{"--namespace=" + exampleNS, "--release=grafana", "--velero-namespace=" + velero.DefaultNamespace, "--output=json"} {
		if !slices.Contains(args[cmd:], want) {
			t.Errorf("args %v lack %s (what rbac-dr-backup.yaml grants)", args, want)
		}
	}
	for _, a := range args {
		// In the cluster Grafana is reached at its DNS name; the pod proxy
		// would need rbac-dr-pod-proxy.yaml, and credentials on the
		// command line show in the CronJob's spec.
		if strings.HasPrefix(a, "--grafana-access=pod-proxy") || strings.HasPrefix(a, "--grafana-password") {
			t.Errorf("arg %s", a)
		}
	}
}
