package helmredeploy

import (
	"errors"
	"testing"

	"go.uber.org/zap"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/storage"
	"helm.sh/helm/v3/pkg/storage/driver"
)

// rebindValues are the values a rebind upgrade adds; the pending revision
// of a killed upgrade carries them among the release's own.
var rebindValues = map[string]any{"persistence": map[string]any{"storageClassName": "premium", "size": "", "volumeName": "pvc-new"}}

func TestFailPending(t *testing.T) {
	for _, tc := range []struct {
		name     string
		last     release.Status
		config   map[string]any
		revision int // the revision the caller says is its own
		changed  bool
		foreign  bool
		want     release.Status
	}{
		{"own killed upgrade", release.StatusPendingUpgrade,
			map[string]any{"adminUser": "admin", "persistence": map[string]any{"enabled": true, "storageClassName": "premium", "size": "", "volumeName": "pvc-new"}}, 2, true, false, release.StatusFailed},
		{"deployed: nothing to do", release.StatusDeployed, map[string]any{}, 2, false, false, release.StatusDeployed},
		{"pending without our values: someone else's", release.StatusPendingUpgrade,
			map[string]any{"persistence": map[string]any{"storageClassName": "standard"}}, 2, false, true, release.StatusPendingUpgrade},
		{"pending at another revision: someone else's", release.StatusPendingUpgrade,
			map[string]any{"persistence": map[string]any{"storageClassName": "premium", "size": "", "volumeName": "pvc-new"}}, 3, false, true, release.StatusPendingUpgrade},
		{"pending rollback with our values at our revision", release.StatusPendingRollback,
			map[string]any{"persistence": map[string]any{"storageClassName": "premium", "size": "", "volumeName": "pvc-new"}}, 2, true, false, release.StatusFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &action.Configuration{Releases: storage.Init(driver.NewMemory())}
			h := &Helm{cfg: cfg, namespace: "monitoring", log: zap.NewNop()}
			for _, r := range []*release.Release{
				{Name: "grafana", Namespace: "monitoring", Version: 1, Info: &release.Info{Status: release.StatusSuperseded}, Config: map[string]any{}},
				{Name: "grafana", Namespace: "monitoring", Version: 2, Info: &release.Info{Status: tc.last, Description: "Preparing upgrade"}, Config: tc.config},
			} {
				if err := cfg.Releases.Create(r); err != nil {
					t.Fatal(err)
				}
			}
			changed, err := h.FailPending("grafana", tc.revision, rebindValues, "interrupted")
			var fe *ForeignPendingError
			if tc.foreign != errors.As(err, &fe) || (!tc.foreign && err != nil) {
				t.Fatalf("err %v, want foreign=%t", err, tc.foreign)
			}
			if changed != tc.changed {
				t.Errorf("changed %t, want %t", changed, tc.changed)
			}
			last, err := cfg.Releases.Last("grafana")
			if err != nil {
				t.Fatal(err)
			}
			if last.Info.Status != tc.want {
				t.Errorf("revision 2 is %s, want %s", last.Info.Status, tc.want)
			}
		})
	}
}
