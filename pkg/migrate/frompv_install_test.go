package migrate

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	"github.com/rebind-dev/rebind/pkg/helmredeploy"
)

// TestChartFullName: the Grafana chart's "grafana.fullname" rule.
func TestChartFullName(t *testing.T) {
	long := "a-very-long-release-name-that-goes-on-and-on-and-on-past-sixty-three"
	for _, tc := range []struct {
		rel    string
		values map[string]any
		want   string
	}{
		{"grafana", nil, "grafana"},
		{"my-grafana", nil, "my-grafana"},
		{"kps", nil, "kps-grafana"},
		{"kps", map[string]any{"fullnameOverride": "dash"}, "dash"},
		{"kps", map[string]any{"nameOverride": "viz"}, "kps-viz"},
		{"viz-prod", map[string]any{"nameOverride": "viz"}, "viz-prod"},
		{long, nil, "a-very-long-release-name-that-goes-on-and-on-and-on-past-sixty"},
	} {
		if got := chartFullName(tc.rel, tc.values); got != tc.want {
			t.Errorf("chartFullName(%q, %v) = %q, want %q", tc.rel, tc.values, got, tc.want)
		}
	}
}

// TestFromValuesMatchesTheChart: for --values-out without a chart rebind
// applies the chart's rules to the values; rendering the test chart (which
// follows the upstream templates) with the same values must give the same
// workload, claim and claim shape.
func TestFromValuesMatchesTheChart(t *testing.T) {
	ch, err := helmredeploy.LoadChart("../../e2e/charts/grafana-like", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name        string
		rel         string
		persistence map[string]any
		top         map[string]any
		kind, claim string
	}{
		{"statefulset", "grafana", map[string]any{"type": "statefulset"}, nil, "StatefulSet", "storage-grafana-0"},
		{"deployment", "grafana", map[string]any{"type": "pvc"}, nil, "Deployment", "grafana"},
		{"subchart naming", "kps", map[string]any{"type": "pvc"}, nil, "Deployment", "kps-grafana"},
		{"fullnameOverride", "kps", map[string]any{"type": "statefulset"}, map[string]any{"fullnameOverride": "dash"}, "StatefulSet", "storage-dash-0"},
		{"existingClaim", "grafana", map[string]any{"type": "pvc", "existingClaim": "mine"}, nil, "Deployment", "mine"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := map[string]any{"enabled": true, "size": "3Gi", "storageClassName": "premium", "accessModes": []any{"ReadWriteOnce"}}
			for k, v := range tc.persistence {
				p[k] = v
			}
			vals := map[string]any{"persistence": p}
			for k, v := range tc.top {
				vals[k] = v
			}
			manifest, err := helmredeploy.Render(ch, tc.rel, "ns", vals)
			if err != nil {
				t.Fatal(err)
			}
			rendered, err := parseManifest(manifest, "ns")
			if err != nil {
				t.Fatal(err)
			}
			for source, objs := range map[string]renderedObjects{"rendered": rendered, "from values": fromValues(tc.rel, "ns", vals, "storage")} {
				sts, deps := objs.grafana("grafana")
				var kind, claim string
				var spec *corev1.PersistentVolumeClaimSpec
				switch {
				case len(sts) == 1 && len(deps) == 0:
					kind, claim = "StatefulSet", "storage-"+sts[0].Name+"-0"
					spec = &sts[0].Spec.VolumeClaimTemplates[0].Spec
				case len(deps) == 1 && len(sts) == 0:
					kind = "Deployment"
					claim = deps[0].Spec.Template.Spec.Volumes[0].PersistentVolumeClaim.ClaimName
					if c := objs.claims[claim]; c != nil {
						spec = &c.Spec
					}
				default:
					t.Fatalf("%s: %d StatefulSets, %d Deployments", source, len(sts), len(deps))
				}
				if kind != tc.kind || claim != tc.claim {
					t.Errorf("%s: %s with claim %s, want %s with %s", source, kind, claim, tc.kind, tc.claim)
				}
				if tc.persistence["existingClaim"] != nil {
					if spec != nil {
						t.Errorf("%s: claim %s rendered, but the chart only names an existing claim", source, claim)
					}
					continue
				}
				size := spec.Resources.Requests[corev1.ResourceStorage]
				if ptr.Deref(spec.StorageClassName, "") != "premium" || size.String() != "3Gi" || len(spec.AccessModes) != 1 || spec.AccessModes[0] != corev1.ReadWriteOnce {
					t.Errorf("%s: claim spec %+v, want premium 3Gi RWO", source, spec)
				}
			}
		})
	}
}

// TestInstallValues: rebind's volumeName goes on top of the user's
// persistence values without losing any of them.
func TestInstallValues(t *testing.T) {
	s := &Spec{FromPVs: []string{"pv-1"}, Install: &InstallSpec{values: map[string]any{
		"adminPassword": "x", "persistence": map[string]any{"type": "pvc", "volumeName": "old"}}}}
	got := installValues(s)
	p := got["persistence"].(map[string]any)
	if p["volumeName"] != "pv-1" || p["type"] != "pvc" || got["adminPassword"] != "x" {
		t.Fatalf("values %v", got)
	}
	if s.Install.values["persistence"].(map[string]any)["volumeName"] != "old" {
		t.Fatal("the user's values were changed in place")
	}
}
