package velero

import (
	"strings"
	"testing"
	"time"

	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestRestoreQueue(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	restore := func(name string, age int, phase velerov1.RestorePhase) any {
		r := &velerov1.Restore{TypeMeta: metav1.TypeMeta{APIVersion: "velero.io/v1", Kind: "Restore"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "velero", CreationTimestamp: metav1.NewTime(t0.Add(time.Duration(age) * time.Second))}}
		r.Status.Phase = phase
		u, err := toUnstructured(r)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	for _, tc := range []struct {
		name         string
		items        []any
		active       []string
		ahead        []string
		lineContains string
	}{
		{"alone, not picked up", []any{restore("mine", 0, "")}, nil, nil, "waits for the Velero server to pick it up"},
		{"behind a running restore", []any{restore("other", -5, velerov1.RestorePhaseInProgress), restore("mine", 0, "")}, []string{"other"}, nil, "queued: Velero runs one Restore at a time, 1 ahead (other)"},
		{"behind a running and an older unstarted one", []any{
			restore("run", -9, velerov1.RestorePhaseInProgress), restore("older", -3, ""), restore("mine", 0, ""), restore("younger", 4, "")},
			[]string{"run"}, []string{"older"}, "2 ahead (run, older)"},
		{"ended ones do not count", []any{restore("done", -9, velerov1.RestorePhaseCompleted), restore("failed", -8, velerov1.RestorePhaseFailed), restore("mine", 0, "")}, nil, nil, "pick it up"},
		{"running itself", []any{restore("younger", 3, ""), restore("mine", 0, velerov1.RestorePhaseInProgress)}, nil, nil, "is InProgress"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, err := newRestoreQueue(tc.items, "mine")
			if err != nil {
				t.Fatal(err)
			}
			if q.self == nil || q.self.Name != "mine" {
				t.Fatalf("self %v", q.self)
			}
			if strings.Join(q.active, ",") != strings.Join(tc.active, ",") || strings.Join(q.ahead, ",") != strings.Join(tc.ahead, ",") {
				t.Errorf("active %v ahead %v, want %v %v", q.active, q.ahead, tc.active, tc.ahead)
			}
			if line := q.describe("R"); !strings.Contains(line, tc.lineContains) {
				t.Errorf("line %q lacks %q", line, tc.lineContains)
			}
		})
	}
}

func TestStillRunningErrorSaysWhatToDo(t *testing.T) {
	for _, tc := range []struct {
		err  StillRunningError
		want []string
	}{
		{StillRunningError{Namespace: "velero", Name: "r1", Waited: 90 * time.Second, Ahead: []string{"a", "b"}},
			[]string{"velero/r1 is still queued (no phase yet) behind a, b after 1m30s", "re-run the same command", "--velero-restore-timeout", "rebind rollback"}},
		{StillRunningError{Namespace: "velero", Name: "r1", Phase: "InProgress", Waited: time.Minute},
			[]string{"in phase InProgress after 1m0s", "storage-class mapping"}},
	} {
		msg := tc.err.Error()
		for _, w := range tc.want {
			if !strings.Contains(msg, w) {
				t.Errorf("%q lacks %q", msg, w)
			}
		}
	}
}
