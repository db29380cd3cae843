package grafanarunner

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/fake"
)

func grafanaPod(uid string, ready bool) *corev1.Pod {
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
			Containers: []corev1.Container{{Name: "grafana", Env: []corev1.EnvVar{
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

	if _, err := pods.UpdateStatus(ctx, grafanaPod("uid-1", false), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, url+"/api/health", "", "", http.StatusBadGateway)

	// A new pod under the same name gets its own backend at the same URL.
	if err := pods.Delete(ctx, "grafana-0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := pods.Create(ctx, grafanaPod("uid-2", true), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, url+"/api/health", "", "", http.StatusOK)
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
}
