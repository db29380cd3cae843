package grafanarunner

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/rebind-dev/rebind/e2e/grafanastandin"
)

func grafanaPod(uid string, ready bool) *corev1.Pod {
	return grafanaPodImage(uid, ready, "docker.io/grafana/grafana:11.4.1")
}

func grafanaPodImage(uid string, ready bool, image string) *corev1.Pod {
	cond := corev1.ConditionFalse
	if ready {
		cond = corev1.ConditionTrue
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "mon", Name: "grafana-0", UID: types.UID(uid),
			Labels: map[string]string{"app.kubernetes.io/name": "grafana"}},
		Spec: corev1.PodSpec{
			Volumes: []corev1.Volume{{Name: "storage", VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "storage-grafana-0"}}}},
			Containers: []corev1.Container{{Name: "grafana", Image: image, Env: []corev1.EnvVar{
				{Name: envAdminUser, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
					LocalObjectReference: corev1.LocalObjectReference{Name: "grafana"}, Key: "admin-user"}}},
				{Name: envAdminPassword, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
					LocalObjectReference: corev1.LocalObjectReference{Name: "grafana"}, Key: "admin-password"}}},
			}}},
		},
		Status: corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: cond}}},
	}
}

// waitStatus polls the URL: there is nothing to watch on an HTTP endpoint.
func waitStatus(t *testing.T, url string, user, pw string, want int) {
	t.Helper()
	var last string
	err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if user != "" {
			req.SetBasicAuth(user, pw)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			last = err.Error()
			return false, nil
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		last = fmt.Sprintf("%d %s", resp.StatusCode, b)
		return resp.StatusCode == want, nil
	})
	if err != nil {
		t.Fatalf("GET %s: want %d, last %s", url, want, last)
	}
}

func TestRunnerFollowsPodLifecycle(t *testing.T) {
	dir := t.TempDir()
	claimUID := types.UID("claim-uid")
	kube := fake.NewClientset(
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "mon", Name: "grafana"},
			Data: map[string][]byte{"admin-user": []byte("root"), "admin-password": []byte("s3cret")}},
		&corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "mon", Name: "storage-grafana-0", UID: claimUID},
			Spec: corev1.PersistentVolumeClaimSpec{VolumeName: "pv-1"}, Status: corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimBound}},
		&corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pv-1"},
			Spec: corev1.PersistentVolumeSpec{ClaimRef: &corev1.ObjectReference{Namespace: "mon", Name: "storage-grafana-0", UID: claimUID}}},
	)
	r := New(Config{Kube: kube, VolumeDir: func(pv *corev1.PersistentVolume) (string, bool) { return dir, pv.Name == "pv-1" }})

	// The URL exists before the pod does and answers 502 meanwhile.
	url := r.PodURL("mon", "grafana-0")
	if url == "" || r.PodURL("mon", "grafana-0") != url {
		t.Fatalf("PodURL not stable: %q", url)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	waitStatus(t, url+"/api/health", "", "", http.StatusBadGateway)

	pods := kube.CoreV1().Pods("mon")
	if _, err := pods.Create(ctx, grafanaPod("uid-1", true), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, url+"/api/health", "", "", http.StatusOK)
	// Credentials came from the Secret behind the pod's env.
	waitStatus(t, url+"/api/search", "root", "s3cret", http.StatusOK)
	// The pod runs the Grafana of its image tag.
	if v, ok := r.PodVersion("mon", "grafana-0"); !ok || v != grafanastandin.V11_6 {
		t.Fatalf("pod version %q %v, want 11.6", v, ok)
	}
	if b := get(t, url+"/api/health"); !strings.Contains(b, `"version": "11.4.1"`) {
		t.Fatalf("health %s", b)
	}

	// The proxy in front of the pod throttles on demand; health stays up.
	if err := r.Throttle("mon", "grafana-0", time.Hour, 3); err != nil {
		t.Fatal(err)
	}
	resp := do(t, url+"/api/search", "root", "s3cret")
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "3" {
		t.Fatalf("throttled: %d %v", resp.StatusCode, resp.Header)
	}
	waitStatus(t, url+"/api/health", "", "", http.StatusOK)
	if err := r.Unavailable("mon", "grafana-0", time.Hour, 0); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, url+"/api/search", "root", "s3cret", http.StatusServiceUnavailable)
	if err := r.Throttle("mon", "grafana-0", 0, 0); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, url+"/api/search", "root", "s3cret", http.StatusOK)

	if _, err := pods.UpdateStatus(ctx, grafanaPod("uid-1", false), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, url+"/api/health", "", "", http.StatusBadGateway)

	// A new pod under the same name gets its own backend at the same URL,
	// running its own image's Grafana, behind the same proxy.
	if err := r.Throttle("mon", "grafana-0", time.Hour, 1); err != nil {
		t.Fatal(err)
	}
	if err := pods.Delete(ctx, "grafana-0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := pods.Create(ctx, grafanaPodImage("uid-2", true, "grafana/grafana:12.1.0@sha256:0123"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, url+"/api/health", "", "", http.StatusOK)
	if st := do(t, url+"/api/search", "root", "s3cret").StatusCode; st != http.StatusTooManyRequests {
		t.Fatalf("throttle lost across pod re-creation: %d", st)
	}
	if err := r.Throttle("mon", "grafana-0", 0, 0); err != nil {
		t.Fatal(err)
	}
	if v, _ := r.PodVersion("mon", "grafana-0"); v != grafanastandin.V12_4 {
		t.Fatalf("new pod version %q, want 12.4", v)
	}
	if r.PodURL("mon", "grafana-0") != url {
		t.Fatal("URL changed across pod re-creation")
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if r.PodURL("mon", "grafana-0") != "" {
		t.Fatal("PodURL after Run ended")
	}
	if _, err := http.Get(url + "/api/health"); err == nil {
		t.Fatal("listener still open after Run ended")
	}
	if err := r.Throttle("mon", "grafana-0", time.Second, 1); err == nil {
		t.Fatal("Throttle after Run ended")
	}
}

func do(t *testing.T, url, user, pw string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if user != "" {
		req.SetBasicAuth(user, pw)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func TestImageVersion(t *testing.T) {
	tests := []struct {
		image string
		v     grafanastandin.Version
		build string
		known bool
	}{
		{"docker.io/grafana/grafana:11.4.1", grafanastandin.V11_6, "11.4.1", true},
		{"grafana/grafana:9.5.2", grafanastandin.V9_5, "9.5.2", true},
		{"grafana/grafana:10.0.1-ubuntu", grafanastandin.V10_4, "10.0.1", true},
		{"registry.local:5000/grafana/grafana:12.4.0@sha256:abcd", grafanastandin.V12_4, "12.4.0", true},
		{"grafana/grafana:12.4.3", grafanastandin.V12_4, "12.4.3", true},
		{"grafana/grafana:13.0.1", grafanastandin.V13_0, "13.0.1", true},
		{"grafana/grafana-enterprise:11.6.0", grafanastandin.V11_6, "11.6.0", true},
		{"grafana/grafana:latest", grafanastandin.V13_0, "", true},
		{"grafana/grafana", grafanastandin.DefaultVersion, "", true},
		{"registry.local:5000/grafana/grafana@sha256:abcd", grafanastandin.DefaultVersion, "", true},
		{"grafana/grafana:nightly", grafanastandin.DefaultVersion, "", false},
	}
	for _, tt := range tests {
		v, build, known := imageVersion(tt.image)
		if v != tt.v || build != tt.build || known != tt.known {
			t.Errorf("imageVersion(%q) = %q %q %v, want %q %q %v", tt.image, v, build, known, tt.v, tt.build, tt.known)
		}
	}
}
