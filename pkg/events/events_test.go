package events

import (
	"context"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestCloseWaitsForEveryEvent(t *testing.T) {
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "grafana", Namespace: "mon", UID: "u1"}}
	tests := []struct {
		name    string
		reasons []string
		message string
		wantLen int
	}{
		{"one", []string{"A"}, "short", 5},
		{"several, long message truncated", []string{"A", "B", "C"}, strings.Repeat("x", 5000), maxMessage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kube := fake.NewClientset()
			r := New(kube, "rebind")
			for _, reason := range tt.reasons {
				r.Event(sts, corev1.EventTypeNormal, reason, tt.message)
			}
			start := time.Now()
			r.Close(10 * time.Second)
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("Close took %v: it waited for its timeout", d)
			}
			list, err := kube.CoreV1().Events("mon").List(context.Background(), metav1.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]bool{}
			for _, e := range list.Items {
				got[e.Reason] = true
				if e.InvolvedObject.Kind != "StatefulSet" || e.InvolvedObject.Name != "grafana" || e.InvolvedObject.UID != "u1" || e.Source.Component != "rebind" {
					t.Errorf("event %+v", e)
				}
				if len(e.Message) != tt.wantLen {
					t.Errorf("message of %d bytes, want %d", len(e.Message), tt.wantLen)
				}
			}
			for _, reason := range tt.reasons {
				if !got[reason] {
					t.Errorf("no %s event among %d", reason, len(list.Items))
				}
			}
		})
	}
}
