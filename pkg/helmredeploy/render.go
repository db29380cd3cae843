package helmredeploy

import (
	"context"
	"fmt"
	"sort"

	"helm.sh/helm/v3/pkg/releaseutil"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// Render returns the objects an upgrade of the release with its own chart,
// its last values and values on top would apply, without applying anything
// (Helm's client-side dry run: no release record is written, lookups find
// nothing). It lets a caller check what a chart does with a value, such as
// which workload and claim persistence.type renders, before changing
// anything.
func (h *Helm) Render(ctx context.Context, name string, values map[string]any) ([]*unstructured.Unstructured, error) {
	cur, err := h.Release(name)
	if err != nil {
		return nil, err
	}
	up := h.newUpgrade("rebind: render only (dry run)")
	up.ReuseValues = true
	up.DryRun = true
	up.DryRunOption = "client"
	rel, err := up.RunWithContext(ctx, name, cur.Chart, values)
	if err != nil {
		return nil, fmt.Errorf("rendering Helm release %s/%s with %v (dry run): %w", h.namespace, name, values, err)
	}
	return parseManifest(rel.Manifest)
}

// parseManifest splits a release manifest into its objects, in a stable
// order.
func parseManifest(manifest string) ([]*unstructured.Unstructured, error) {
	docs := releaseutil.SplitManifests(manifest)
	keys := make([]string, 0, len(docs))
	for k := range docs {
		keys = append(keys, k)
	}
	sort.Sort(releaseutil.BySplitManifestsOrder(keys))
	var out []*unstructured.Unstructured
	for _, k := range keys {
		m := map[string]any{}
		if err := yaml.Unmarshal([]byte(docs[k]), &m); err != nil {
			return nil, fmt.Errorf("reading rendered manifest %s: %w", k, err)
		}
		if len(m) == 0 {
			continue
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
	return out, nil
}
