package journal

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/rebind-dev/rebind/pkg/plan"
)

// TestSecretKeepsPrivateDataOutOfTheConfigMap: what Create is given as
// private goes into a Secret (owned by nothing, labelled with the run),
// never into the ConfigMap, and Load reads it back.
func TestSecretKeepsPrivateDataOutOfTheConfigMap(t *testing.T) {
	ctx := context.Background()
	kube := fake.NewSimpleClientset()
	private := map[string][]byte{"target.json": []byte(`{"env":"planted-secret-value"}`)}
	j, err := Create(ctx, kube, "ns", "grafana", "run-1", "migrate", map[string]string{"env": "(redacted)"}, private)
	if err != nil {
		t.Fatal(err)
	}
	if err := j.SetStep(ctx, "retain", plan.StepRecord{Status: plan.Done}); err != nil {
		t.Fatal(err)
	}
	cm, err := kube.CoreV1().ConfigMaps("ns").Get(ctx, Name("grafana"), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(cm)
	if strings.Contains(string(raw), "planted-secret-value") {
		t.Fatalf("private data in the ConfigMap:\n%s", raw)
	}
	s, err := kube.CoreV1().Secrets("ns").Get(ctx, Name("grafana"), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Type != corev1.SecretTypeOpaque || len(s.OwnerReferences) != 0 || s.Immutable == nil || !*s.Immutable {
		t.Errorf("Secret type %s, owners %v, immutable %v", s.Type, s.OwnerReferences, s.Immutable)
	}
	if s.Labels[LabelManagedBy] != ManagedBy || s.Labels[LabelTarget] != "grafana" || s.Labels[LabelRun] != "run-1" {
		t.Errorf("Secret labels %v", s.Labels)
	}
	if string(s.Data["target.json"]) != string(private["target.json"]) {
		t.Errorf("Secret data %q", s.Data)
	}
	if got := j.Record().Secret; got != Name("grafana") {
		t.Errorf("record names Secret %q", got)
	}

	again, err := Load(ctx, kube, "ns", "grafana")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := again.Private("target.json"); err != nil || string(b) != string(private["target.json"]) {
		t.Fatalf("Private = %q, %v", b, err)
	}
	if _, err := again.Private("other"); err == nil {
		t.Errorf("a missing key must be an error")
	}
	if again.Record().FormatVersion != FormatVersion {
		t.Errorf("format %d", again.Record().FormatVersion)
	}

	// Unfinished: a new run touches neither the ConfigMap nor the Secret.
	if _, err := Create(ctx, kube, "ns", "grafana", "run-2", "migrate", nil, map[string][]byte{"target.json": []byte("run-2")}); err == nil {
		t.Fatal("an unfinished journal was replaced")
	}
	if s2, _ := kube.CoreV1().Secrets("ns").Get(ctx, Name("grafana"), metav1.GetOptions{}); s2.Labels[LabelRun] != "run-1" {
		t.Fatalf("the unfinished run's Secret was replaced: %v", s2.Labels)
	}

	// Finished: the successor replaces the Secret with its own...
	if err := again.SetPhase(ctx, Completed, nil); err != nil {
		t.Fatal(err)
	}
	next, err := Create(ctx, kube, "ns", "grafana", "run-2", "migrate", nil, map[string][]byte{"target.json": []byte("run-2")})
	if err != nil {
		t.Fatal(err)
	}
	if b, err := next.Private("target.json"); err != nil || string(b) != "run-2" {
		t.Fatalf("successor's Private = %q, %v", b, err)
	}
	if s2, _ := kube.CoreV1().Secrets("ns").Get(ctx, Name("grafana"), metav1.GetOptions{}); s2.Labels[LabelRun] != "run-2" || string(s2.Data["target.json"]) != "run-2" {
		t.Fatalf("Secret after replacement: %v %q", s2.Labels, s2.Data)
	}
	// ...and one without private data deletes it.
	if err := next.SetPhase(ctx, RolledBack, nil); err != nil {
		t.Fatal(err)
	}
	last, err := Create(ctx, kube, "ns", "grafana", "run-3", "migrate", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kube.CoreV1().Secrets("ns").Get(ctx, Name("grafana"), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the finished run's Secret was kept: %v", err)
	}
	if last.SecretName() != "" {
		t.Errorf("journal without private data names Secret %q", last.SecretName())
	}
}

// TestSecretProblemsAreReportedWhenNeeded: a journal whose Secret is gone,
// or is another run's, still loads (a finished one needs nothing from it),
// but Private says what is wrong; a Secret rebind did not make is never
// deleted.
func TestSecretProblemsAreReportedWhenNeeded(t *testing.T) {
	ctx := context.Background()
	t.Run("gone", func(t *testing.T) {
		kube := fake.NewSimpleClientset()
		if _, err := Create(ctx, kube, "ns", "grafana", "run-1", "migrate", nil, map[string][]byte{"k": []byte("v")}); err != nil {
			t.Fatal(err)
		}
		if err := kube.CoreV1().Secrets("ns").Delete(ctx, Name("grafana"), metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		j, err := Load(ctx, kube, "ns", "grafana")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := j.Private("k"); err == nil || !strings.Contains(err.Error(), "does not exist") {
			t.Fatalf("Private: %v", err)
		}
	})
	t.Run("another run's", func(t *testing.T) {
		kube := fake.NewSimpleClientset()
		if _, err := Create(ctx, kube, "ns", "grafana", "run-1", "migrate", nil, map[string][]byte{"k": []byte("v")}); err != nil {
			t.Fatal(err)
		}
		s, _ := kube.CoreV1().Secrets("ns").Get(ctx, Name("grafana"), metav1.GetOptions{})
		s.Labels[LabelRun] = "run-0"
		if _, err := kube.CoreV1().Secrets("ns").Update(ctx, s, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		j, err := Load(ctx, kube, "ns", "grafana")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := j.Private("k"); err == nil || !strings.Contains(err.Error(), `belongs to run "run-0"`) {
			t.Fatalf("Private: %v", err)
		}
	})
	t.Run("not rebind's", func(t *testing.T) {
		kube := fake.NewSimpleClientset(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: Name("grafana"), Namespace: "ns"}, Data: map[string][]byte{"mine": []byte("x")}})
		_, err := Create(ctx, kube, "ns", "grafana", "run-1", "migrate", nil, map[string][]byte{"k": []byte("v")})
		if err == nil || !strings.Contains(err.Error(), "not made by rebind") {
			t.Fatalf("want refusal, got %v", err)
		}
		s, err := kube.CoreV1().Secrets("ns").Get(ctx, Name("grafana"), metav1.GetOptions{})
		if err != nil || string(s.Data["mine"]) != "x" {
			t.Fatalf("someone else's Secret touched: %v %v", s, err)
		}
		if _, err := kube.CoreV1().ConfigMaps("ns").Get(ctx, Name("grafana"), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Fatalf("journal written after a refusal: %v", err)
		}
	})
	t.Run("left by a run that never wrote its ConfigMap", func(t *testing.T) {
		kube := fake.NewSimpleClientset(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: Name("grafana"), Namespace: "ns",
			Labels: map[string]string{LabelManagedBy: ManagedBy, LabelRun: "run-0"}}})
		j, err := Create(ctx, kube, "ns", "grafana", "run-1", "migrate", nil, map[string][]byte{"k": []byte("v")})
		if err != nil {
			t.Fatal(err)
		}
		if b, err := j.Private("k"); err != nil || string(b) != "v" {
			t.Fatalf("Private = %q, %v", b, err)
		}
	})
}

// TestFormatCompatibility: a format-1 journal (rebind before the Secret:
// the whole spec in the ConfigMap) still loads and needs no Secret; a
// newer format is refused.
func TestFormatCompatibility(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		version int
		ok      bool
	}{{1, true}, {FormatVersion, true}, {FormatVersion + 1, false}, {0, false}} {
		rec := Record{FormatVersion: tc.version, RunID: "old", Operation: "migrate", Phase: Failed, Spec: json.RawMessage(`{"full":true}`),
			Steps: map[string]plan.StepRecord{"retain": {Status: plan.Done}}}
		raw, _ := json.Marshal(rec)
		kube := fake.NewSimpleClientset(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: Name("grafana"), Namespace: "ns"}, Data: map[string]string{dataKey: string(raw)}})
		j, err := Load(ctx, kube, "ns", "grafana")
		if !tc.ok {
			if err == nil || !strings.Contains(err.Error(), "format version") {
				t.Errorf("format %d: want refusal, got %v", tc.version, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("format %d: %v", tc.version, err)
		}
		if j.SecretName() != "" || string(j.Record().Spec) != `{"full":true}` {
			t.Errorf("format %d: secret %q spec %s", tc.version, j.SecretName(), j.Record().Spec)
		}
		// Resuming keeps the format: an older rebind can still finish it.
		if err := j.SetStep(ctx, "x", plan.StepRecord{Status: plan.Done}); err != nil {
			t.Fatal(err)
		}
		back, err := Load(ctx, kube, "ns", "grafana")
		if err != nil || back.Record().FormatVersion != tc.version {
			t.Errorf("format %d after a write: %v %v", tc.version, back, err)
		}
	}
}
