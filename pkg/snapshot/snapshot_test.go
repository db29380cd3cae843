package snapshot

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapfake "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned/fake"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/rebind-dev/rebind/pkg/kube"
)

// TestWaitReadyRidesOutPassingErrors: the snapshot controller retries a
// failed creation and clears status.error once it succeeds, so an error
// that goes away is waited out; one that stands for ErrorGrace fails the
// wait naming it; no verdict at all ends in a timeout of the whole wait.
func TestWaitReadyRidesOutPassingErrors(t *testing.T) {
	defer func(g time.Duration) { ErrorGrace = g }(ErrorGrace)
	ErrorGrace = 300 * time.Millisecond
	erred := &snapv1.VolumeSnapshotStatus{Error: &snapv1.VolumeSnapshotError{Message: ptr.To("cannot get claim from snapshot")}}
	for _, tc := range []struct {
		name    string
		first   *snapv1.VolumeSnapshotStatus
		then    *snapv1.VolumeSnapshotStatus // written 100 ms in; nil: nothing changes
		timeout time.Duration
		wantErr string // "" for ready; "timeout" for a *kube.TimeoutError
	}{
		{"error cleared, then ready", erred, &snapv1.VolumeSnapshotStatus{ReadyToUse: ptr.To(true)}, 5 * time.Second, ""},
		{"error stands", erred, nil, 5 * time.Second, "failed: cannot get claim from snapshot"},
		// Out of time while an error stands: the timeout names it.
		{"error right before the end", &snapv1.VolumeSnapshotStatus{}, erred, 200 * time.Millisecond, "the snapshot controller reports: cannot get claim from snapshot"},
		{"never ready", &snapv1.VolumeSnapshotStatus{}, nil, 700 * time.Millisecond, "timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vs := &snapv1.VolumeSnapshot{ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "ns"}, Status: tc.first}
			c := snapfake.NewSimpleClientset(vs)
			if tc.then != nil {
				go func() {
					time.Sleep(100 * time.Millisecond) // a controller writing later
					upd := vs.DeepCopy()
					upd.Status = tc.then
					_, _ = c.SnapshotV1().VolumeSnapshots("ns").UpdateStatus(context.Background(), upd, metav1.UpdateOptions{})
				}()
			}
			start := time.Now()
			_, err := WaitReady(context.Background(), c, "ns", "s", tc.timeout)
			var timedOut *kube.TimeoutError
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("want ready, got %v", err)
			case tc.wantErr == "timeout" && (!errors.As(err, &timedOut) || timedOut.Timeout != tc.timeout):
				t.Fatalf("want a timeout of %s, got %v", tc.timeout, err)
			case tc.wantErr != "" && tc.wantErr != "timeout" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("want %q, got %v", tc.wantErr, err)
			}
			if tc.name == "error stands" && time.Since(start) < ErrorGrace {
				t.Errorf("failed after %s, before the grace of %s", time.Since(start), ErrorGrace)
			}
		})
	}
}
