package manifests

import (
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/rebind-dev/rebind/pkg/drill"
)

func find(t *testing.T, file, kind, name string) *unstructured.Unstructured {
	t.Helper()
	objs, err := Objects(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if o.GetKind() == kind && (name == "" || o.GetName() == name) {
			return o
		}
	}
	t.Fatalf("%s has no %s %s", file, kind, name)
	return nil
}

// TestDrillManifestsAgree holds the drill's files to each other and to the
// code: one scratch namespace name, prepared with the label the drill
// checks, the ServiceAccount the admission policy confines, and the labels
// and annotation the policy reads spelled as pkg/drill writes them.
func TestDrillManifestsAgree(t *testing.T) {
	scratch := drill.DefaultScratchNamespace
	ns := find(t, "rbac-drill.yaml", "Namespace", scratch)
	if ns.GetLabels()[drill.LabelScratch] != "true" {
		t.Errorf("namespace %s labels %v, want %s=true", scratch, ns.GetLabels(), drill.LabelScratch)
	}
	if _, managed := ns.GetLabels()[drill.LabelManagedBy]; managed {
		t.Errorf("namespace %s carries %s: the drill created it?", scratch, drill.LabelManagedBy)
	}
	if ns.GetLabels()["pod-security.kubernetes.io/enforce"] == "" {
		t.Errorf("namespace %s has no Pod Security level", scratch)
	}
	for _, kind := range []string{"Role", "RoleBinding"} {
		if o := find(t, "rbac-drill.yaml", kind, "rebind-drill-scratch"); o.GetNamespace() != scratch {
			t.Errorf("%s rebind-drill-scratch in %s, want %s", kind, o.GetNamespace(), scratch)
		}
	}

	cj := find(t, "cronjob-drill.yaml", "CronJob", "")
	containers, _, _ := unstructured.NestedSlice(cj.Object, "spec", "jobTemplate", "spec", "template", "spec", "containers")
	args, _, _ := unstructured.NestedStringSlice(containers[0].(map[string]any), "args")
	if !slices.Contains(args, "--scratch-namespace="+scratch) || slices.Contains(args, "--create-scratch-namespace") {
		t.Errorf("CronJob args %v, want --scratch-namespace=%s and the default mode", args, scratch)
	}

	sa := find(t, "rbac-drill.yaml", "ServiceAccount", "")
	user := "system:serviceaccount:" + sa.GetNamespace() + ":" + sa.GetName()
	vap := find(t, "admission-drill.yaml", "ValidatingAdmissionPolicy", "")
	conds, _, _ := unstructured.NestedSlice(vap.Object, "spec", "matchConditions")
	if len(conds) != 1 || !strings.Contains(conds[0].(map[string]any)["expression"].(string), "'"+user+"'") {
		t.Errorf("matchConditions %v, want the request of %s only", conds, user)
	}
	vars, _, _ := unstructured.NestedSlice(vap.Object, "spec", "variables")
	var scratchVar string
	for _, v := range vars {
		if m := v.(map[string]any); m["name"] == "scratchNamespace" {
			scratchVar = m["expression"].(string)
		}
	}
	if scratchVar != "'"+scratch+"'" {
		t.Errorf("policy variable scratchNamespace %q, want '%s'", scratchVar, scratch)
	}
	if fp, _, _ := unstructured.NestedString(vap.Object, "spec", "failurePolicy"); fp != "Fail" {
		t.Errorf("failurePolicy %q: a policy that fails open confines nothing", fp)
	}
	text := func(o *unstructured.Unstructured) string {
		var b strings.Builder
		var walk func(any)
		walk = func(v any) {
			switch x := v.(type) {
			case map[string]any:
				for _, e := range x {
					walk(e)
				}
			case []any:
				for _, e := range x {
					walk(e)
				}
			case string:
				b.WriteString(x + "\n")
			}
		}
		walk(o.Object["spec"])
		return b.String()
	}(vap)
	for _, want := range []string{drill.LabelRun, drill.LabelScratch, drill.AnnSourceSnapshot, "'" + drill.LabelManagedBy + "'", "'" + drill.ManagedBy + "'"} {
		if !strings.Contains(text, want) {
			t.Errorf("the policy never mentions %s", want)
		}
	}
	assertDenyBinding(t, "admission-drill.yaml", vap)

	// The opt-in file binds the same ServiceAccount and nothing of the
	// default mode needs it.
	crb := find(t, "rbac-drill-create-namespace.yaml", "ClusterRoleBinding", "")
	subjects, _, _ := unstructured.NestedSlice(crb.Object, "subjects")
	if s := subjects[0].(map[string]any); s["name"] != sa.GetName() || s["namespace"] != sa.GetNamespace() {
		t.Errorf("optional binding subject %v, want %s", s, user)
	}
	for _, p := range drill.Permissions(drill.Scope{Namespace: "monitoring", StatefulSet: "grafana", Scratch: scratch}) {
		if p.Resource == "namespaces" && p.Verb != "get" {
			t.Errorf("the default mode asks for %s: namespace changes belong to the opt-in mode", p)
		}
		if p.Namespace != "" && p.Namespace != "monitoring" && p.Namespace != scratch {
			t.Errorf("the default mode asks for %s outside production and the scratch namespace", p)
		}
	}
}

// assertDenyBinding: the file binds its policy vap to every request, to deny.
func assertDenyBinding(t *testing.T, file string, vap *unstructured.Unstructured) {
	t.Helper()
	binding := find(t, file, "ValidatingAdmissionPolicyBinding", "")
	if p, _, _ := unstructured.NestedString(binding.Object, "spec", "policyName"); p != vap.GetName() {
		t.Errorf("binding names policy %q, want %q", p, vap.GetName())
	}
	if a, _, _ := unstructured.NestedStringSlice(binding.Object, "spec", "validationActions"); !slices.Equal(a, []string{"Deny"}) {
		t.Errorf("validationActions %v, want [Deny]", a)
	}
}
