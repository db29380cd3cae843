package journal

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"

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

func TestLeaseExcludesSecondRun(t *testing.T) {
	ctx := context.Background()
	kube := fake.NewSimpleClientset()
	first, err := AcquireLease(ctx, kube, "ns", "grafana", "run-1", 15*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_, err = AcquireLease(ctx, kube, "ns", "grafana", "run-2", 15*time.Second)
	var locked *LockedError
	if !errors.As(err, &locked) || locked.Holder != "run-1" {
		t.Fatalf("want LockedError held by run-1, got %v", err)
	}
	if err := first.Release(ctx); err != nil {
		t.Fatal(err)
	}
	second, err := AcquireLease(ctx, kube, "ns", "grafana", "run-2", 15*time.Second)
	if err != nil {
		t.Fatalf("released lease not reusable: %v", err)
	}
	second.Abandon()
}

// TestLeaseTakeOverFromDeadProcess: a live lease whose holder ran on this
// machine and is gone is taken over at once; one whose holder may be alive
// (running, on another machine, or unknown) still excludes.
func TestLeaseTakeOverFromDeadProcess(t *testing.T) {
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	self := selfProcess()
	if self.Start == 0 || self.Boot == "" {
		t.Skip("no /proc on this system: a dead holder cannot be recognised, the lease expiry applies")
	}
	deadPID := dead.ProcessState.Pid()
	tests := []struct {
		name     string
		holder   process
		takeOver bool
	}{
		{"holder process gone", process{Host: self.Host, Boot: self.Boot, PID: deadPID, Start: 12345}, true},
		{"pid reused by another process", process{Host: self.Host, Boot: self.Boot, PID: self.PID, Start: self.Start + 1}, true},
		{"holder still running", self, false},
		{"holder on another machine", process{Host: self.Host + "-other", Boot: self.Boot, PID: deadPID, Start: 1}, false},
		{"holder on an earlier boot", process{Host: self.Host, Boot: "another-boot", PID: deadPID, Start: 1}, false},
		{"holder without start time", process{Host: self.Host, Boot: self.Boot, PID: deadPID}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			now := metav1.NewMicroTime(time.Now())
			kube := fake.NewSimpleClientset(&coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: LeaseName("grafana"), Namespace: "ns", Annotations: map[string]string{AnnHolderProcess: tt.holder.annotation()}},
				Spec:       coordinationv1.LeaseSpec{HolderIdentity: ptr.To("killed-run"), LeaseDurationSeconds: ptr.To(int32(30)), RenewTime: &now, AcquireTime: &now},
			})
			l, err := AcquireLease(ctx, kube, "ns", "grafana", "rerun", 30*time.Second)
			if !tt.takeOver {
				var locked *LockedError
				if !errors.As(err, &locked) || locked.Holder != "killed-run" {
					t.Fatalf("want LockedError by killed-run, got %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("want take-over, got %v", err)
			}
			defer l.Abandon()
			if !strings.Contains(l.TookOverFrom, "killed-run") || !strings.Contains(l.TookOverFrom, fmt.Sprint(tt.holder.PID)) {
				t.Fatalf("TookOverFrom = %q", l.TookOverFrom)
			}
			got, _ := kube.CoordinationV1().Leases("ns").Get(ctx, LeaseName("grafana"), metav1.GetOptions{})
			if ptr.Deref(got.Spec.HolderIdentity, "") != "rerun" || got.Annotations[AnnHolderProcess] != self.annotation() {
				t.Fatalf("lease after take-over: %+v %v", got.Spec, got.Annotations)
			}
		})
	}
}
