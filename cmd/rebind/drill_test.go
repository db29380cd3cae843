package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestDrillUsageErrors covers the refusals that need no cluster: each one
// exits 2 and names the flag.
func TestDrillUsageErrors(t *testing.T) {
	// A kubeconfig pointing nowhere: none of these cases may get that far.
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kc, []byte("apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\nusers: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"bad output", []string{"--release", "grafana", "-o", "yaml"}, `--output "yaml"`},
		{"selector and release", []string{"--release", "grafana", "--selector", "a=b"}, "either --selector or --release"},
		{"all namespaces without selector", []string{"--release", "grafana", "-A"}, "--all-namespaces needs --selector"},
		{"parallel zero", []string{"--release", "grafana", "--parallel", "0"}, "--parallel must be at least 1"},
		{"volume root without offline", []string{"--release", "grafana", "--offline-volume-root", "/x"}, "only applies with --offline"},
		{"bad url template", []string{"--release", "grafana", "--grafana-url-template", "http://x"}, "must contain {pod}"},
		{"bad pod url", []string{"--release", "grafana", "--grafana-pod-url", "nourl"}, "use NS/POD=URL"},
		{"empty scratch namespace", []string{"--release", "grafana", "--scratch-namespace", ""}, "--scratch-namespace must name a namespace prepared for drills"},
		{"lease duration too short", []string{"--release", "grafana", "--lease-duration", "1s"}, "--lease-duration 1s: use a value from 3s"},
		{"lease duration in fractions", []string{"--release", "grafana", "--lease-duration", "4500ms"}, "use whole seconds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append([]string{"rebind", "--kubeconfig", kc, "drill"}, tc.args...)
			code := run(args, &stdout, &stderr)
			if code != exitUsage {
				t.Errorf("exit %d, want %d; stderr %s", code, exitUsage, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr lacks %q:\n%s", tc.want, stderr.String())
			}
		})
	}
}

func TestVolumeRootReader(t *testing.T) {
	read := volumeRootReader("/data")
	for _, tc := range []struct {
		name    string
		pv      corev1.PersistentVolume
		want    string
		wantErr bool
	}{
		{"csi", csiPV("pvc-1"), "/data/pvc-1/grafana.db", false},
		{"escaping handle", csiPV("../etc"), "", true},
		{"not csi", corev1.PersistentVolume{}, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, _, err := read(context.Background(), &tc.pv)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("got %q, %v", got, err)
			}
		})
	}
}

func csiPV(handle string) corev1.PersistentVolume {
	var pv corev1.PersistentVolume
	pv.Name = "pv"
	pv.Spec.CSI = &corev1.CSIPersistentVolumeSource{Driver: "d", VolumeHandle: handle}
	return pv
}
