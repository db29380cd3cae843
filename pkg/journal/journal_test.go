package journal

import (
	"context"
	"strings"
	"testing"

	"k8s.io/client-go/kubernetes/fake"

	"github.com/rebind-dev/rebind/pkg/plan"
)

func TestJournalRoundTripAndResumeRules(t *testing.T) {
	ctx := context.Background()
	kube := fake.NewSimpleClientset()
	j, err := Create(ctx, kube, "ns", "grafana", "run-1", "migrate", map[string]string{"strategy": "reuse"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := j.SetStep(ctx, "retain", plan.StepRecord{Status: plan.Done}); err != nil {
		t.Fatal(err)
	}
	if err := j.SetValue(ctx, "pv/a/reclaim", "Delete"); err != nil {
		t.Fatal(err)
	}
	// A resumed run sees Retain; the first run's record must win.
	if err := j.SetValue(ctx, "pv/a/reclaim", "Retain"); err != nil {
		t.Fatal(err)
	}
	if err := j.SetBlob(ctx, "baseline", []byte(`{"dashboards":3}`)); err != nil {
		t.Fatal(err)
	}

	again, err := Load(ctx, kube, "ns", "grafana")
	if err != nil || again == nil {
		t.Fatalf("load: %v %v", again, err)
	}
	if got := again.Step("retain").Status; got != plan.Done {
		t.Errorf("step status = %q", got)
	}
	if v, _ := again.Value("pv/a/reclaim"); v != "Delete" {
		t.Errorf("original reclaim policy overwritten: %q", v)
	}
	if b, err := again.Blob("baseline"); err != nil || string(b) != `{"dashboards":3}` {
		t.Errorf("blob = %q, %v", b, err)
	}

	if _, err := Create(ctx, kube, "ns", "grafana", "run-2", "migrate", nil, nil); err == nil || !strings.Contains(err.Error(), "re-run the same command") {
		t.Fatalf("an unfinished journal must not be replaced, got %v", err)
	}
	if err := again.SetPhase(ctx, Completed, nil); err != nil {
		t.Fatal(err)
	}
	fresh, err := Create(ctx, kube, "ns", "grafana", "run-2", "migrate", nil, nil)
	if err != nil {
		t.Fatalf("a finished journal may be replaced: %v", err)
	}
	if fresh.Record().RunID != "run-2" || len(fresh.Record().Steps) != 0 {
		t.Fatalf("replaced journal kept old progress: %+v", fresh.Record())
	}
	if b, _ := fresh.Blob("baseline"); b != nil {
		t.Fatalf("replaced journal kept the old baseline")
	}
}
