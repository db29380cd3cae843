package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMigrateUsageErrors covers the refusals of migrate and rollback that
// need no cluster: each one exits 2 and names the flag.
func TestMigrateUsageErrors(t *testing.T) {
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
		{"bad dry-run", []string{"migrate", "--release", "grafana", "--dry-run", "maybe"}, `--dry-run "maybe"`},
		{"lease duration zero", []string{"migrate", "--release", "grafana", "--lease-duration", "0s"}, "--lease-duration 0s: use a value from 3s to 1h0m0s"},
		{"lease duration too long", []string{"migrate", "--release", "grafana", "--lease-duration", "2h"}, "--lease-duration 2h0m0s"},
		{"lease duration in fractions", []string{"migrate", "--release", "grafana", "--lease-duration", "10.5s"}, "use whole seconds"},
		{"rollback lease duration", []string{"rollback", "--statefulset", "grafana", "--lease-duration", "1s"}, "--lease-duration 1s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(append([]string{"rebind", "--kubeconfig", kc}, tc.args...), &stdout, &stderr)
			if code != exitUsage {
				t.Errorf("exit %d, want %d; stderr %s", code, exitUsage, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr lacks %q:\n%s", tc.want, stderr.String())
			}
		})
	}
}
