package migrate

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/rebind-dev/rebind/pkg/journal"
	"github.com/rebind-dev/rebind/pkg/kube"
	"github.com/rebind-dev/rebind/pkg/plan"
	"github.com/rebind-dev/rebind/pkg/workload"
)

const plantedEnv, plantedApplied = "planted-literal-XYZ", "planted-applied-XYZ"

// secretSpec is a spec whose workload carries a literal env value and
// last-applied-configuration annotations.
func secretSpec() *Spec {
	s := testSpec(Restore, 1, false, false)
	sts := s.Target.StatefulSet
	sts.UID = "sts-uid"
	sts.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl-client-side-apply", FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:metadata":{"f:annotations":{"f:kubectl.kubernetes.io/last-applied-configuration":{}}}}`)}}}
	sts.Annotations = map[string]string{workload.AnnLastApplied: `{"env":"` + plantedApplied + `"}`, "meta.helm.sh/release-name": "grafana"}
	sts.Spec.Template.Spec.Containers = []corev1.Container{{Name: "grafana", Env: []corev1.EnvVar{{Name: "GF_DATABASE_PASSWORD", Value: plantedEnv}}}}
	sts.Spec.Template.Spec.InitContainers = []corev1.Container{{Name: "init", Env: []corev1.EnvVar{{Name: "TOKEN", Value: plantedEnv + "-init"}}}}
	s.Target.Ordinals[0].PVC.Annotations = map[string]string{workload.AnnLastApplied: plantedApplied + "-pvc"}
	return s
}

func createJournal(t *testing.T, k *fake.Clientset, s *Spec) *journal.Journal {
	t.Helper()
	public, private, err := s.forJournal()
	if err != nil {
		t.Fatal(err)
	}
	j, err := journal.Create(context.Background(), k, "ns", s.name(), s.RunID, "migrate", public, private)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// TestJournalConfigMapHoldsNoSecret: the journal ConfigMap has no literal
// env value and no last-applied-configuration; a loaded journal gives the
// target back exactly as discovered (from the Secret), and the redeploy
// manifest has the literal value.
func TestJournalConfigMapHoldsNoSecret(t *testing.T) {
	ctx := context.Background()
	k := fake.NewSimpleClientset()
	orig := secretSpec()
	createJournal(t, k, orig)

	cm, err := k.CoreV1().ConfigMaps("ns").Get(ctx, journal.Name("grafana"), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(cm)
	for _, planted := range []string{plantedEnv, plantedApplied, "last-applied-configuration"} {
		if strings.Contains(string(raw), planted) {
			t.Errorf("journal ConfigMap holds %q", planted)
		}
	}
	if !strings.Contains(string(raw), workload.Redacted) {
		t.Errorf("journal ConfigMap does not show the redaction")
	}

	j, err := journal.Load(ctx, k, "ns", "grafana")
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeSpec(j)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(orig.Target)
	back, _ := json.Marshal(got.Target)
	if string(want) != string(back) {
		t.Fatalf("target after the round trip differs:\nwant %s\n got %s", want, back)
	}
	public, err := decodePublicSpec(j)
	if err != nil || public.Target.Release != "grafana" || !workload.IsRedacted(&public.Target.StatefulSet.Spec.Template) {
		t.Fatalf("public spec: %v", err)
	}

	e := &env{c: &kube.Clients{Kube: k}, j: j, spec: got}
	if err := j.PutValue(ctx, keyNewPV(0), "pv-new"); err != nil {
		t.Fatal(err)
	}
	m, err := redeployStep{e}.manifest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v := m.Spec.Template.Spec.Containers[0].Env[0].Value; v != plantedEnv {
		t.Errorf("redeploy manifest env value %q", v)
	}
	if m.Annotations[workload.AnnLastApplied] == "" {
		t.Errorf("redeploy manifest lost the last-applied annotation kubectl needs")
	}
	// Never from the ConfigMap's copy.
	if _, err := (redeployStep{&env{c: e.c, j: j, spec: public}}).manifest(ctx); err == nil || !strings.Contains(err.Error(), "redacted") {
		t.Errorf("a manifest was made from the redacted copy: %v", err)
	}
}

// TestJournalWithoutItsSecret: a journal that names a Secret no longer
// there cannot be resumed or rolled back from the ConfigMap's copy.
func TestJournalWithoutItsSecret(t *testing.T) {
	ctx := context.Background()
	k := fake.NewSimpleClientset()
	createJournal(t, k, secretSpec())
	if err := k.CoreV1().Secrets("ns").Delete(ctx, journal.Name("grafana"), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	j, err := journal.Load(ctx, k, "ns", "grafana")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeSpec(j); err == nil || !strings.Contains(err.Error(), "Secret ns/rebind-journal-grafana") {
		t.Fatalf("want an error naming the Secret, got %v", err)
	}
}

// TestFormat1JournalStillDecodes: a journal an older rebind wrote (format
// 1: the whole spec in the ConfigMap, no Secret) resumes and rolls back
// from the ConfigMap.
func TestFormat1JournalStillDecodes(t *testing.T) {
	ctx := context.Background()
	orig := secretSpec()
	spec, _ := json.Marshal(orig)
	rec := journal.Record{FormatVersion: 1, RunID: orig.RunID, Operation: "migrate", Phase: journal.Failed, Spec: spec,
		Steps: map[string]plan.StepRecord{"baseline": {Status: plan.Done}}, StartedAt: time.Now()}
	raw, _ := json.Marshal(rec)
	k := fake.NewSimpleClientset(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: journal.Name("grafana"), Namespace: "ns"}, Data: map[string]string{"journal.json": string(raw)}})
	j, err := journal.Load(ctx, k, "ns", "grafana")
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeSpec(j)
	if err != nil {
		t.Fatal(err)
	}
	if v := got.Target.StatefulSet.Spec.Template.Spec.Containers[0].Env[0].Value; v != plantedEnv {
		t.Fatalf("env value %q", v)
	}
	if _, err := (&env{spec: got}).originalManifest(); err != nil {
		t.Fatal(err)
	}
}
