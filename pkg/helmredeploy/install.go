package helmredeploy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"go.uber.org/zap"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/cli"
	"helm.sh/helm/v3/pkg/cli/values"
	helmgetter "helm.sh/helm/v3/pkg/getter"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/storage/driver"
)

// LoadChart loads a chart as `helm install` takes it: a directory or
// packaged chart on disk, else a reference Helm resolves through the
// user's repositories or an OCI registry (HELM_* settings apply).
func LoadChart(ref, version string) (*chart.Chart, error) {
	if _, err := os.Stat(ref); err == nil {
		ch, err := loader.Load(ref)
		if err != nil {
			return nil, fmt.Errorf("loading chart %s: %w", ref, err)
		}
		return ch, nil
	}
	settings := cli.New()
	opts := action.ChartPathOptions{Version: version}
	path, err := opts.LocateChart(ref, settings)
	if err != nil {
		return nil, fmt.Errorf("locating chart %s: %w (pass a chart directory or .tgz, or `helm repo add` its repository first)", ref, err)
	}
	ch, err := loader.Load(path)
	if err != nil {
		return nil, fmt.Errorf("loading chart %s: %w", path, err)
	}
	return ch, nil
}

// ReadValues merges values files in order, as `helm install -f a -f b`.
func ReadValues(files []string) (map[string]any, error) {
	if len(files) == 0 {
		return map[string]any{}, nil
	}
	opts := values.Options{ValueFiles: files}
	v, err := opts.MergeValues(helmgetter.All(cli.New()))
	if err != nil {
		return nil, fmt.Errorf("reading values files %v: %w", files, err)
	}
	return v, nil
}

// Render renders a release of ch with vals as `helm template` does, on its
// own client-only configuration: nothing is read from or written to the
// cluster, and the chart's lookups find nothing. The manifest is the
// rendered objects, in Helm's install order.
func Render(ch *chart.Chart, name, ns string, vals map[string]any) (string, error) {
	cfg := &action.Configuration{Log: func(string, ...any) {}}
	inst := action.NewInstall(cfg)
	inst.DryRun, inst.ClientOnly, inst.Replace = true, true, true
	inst.ReleaseName, inst.Namespace = name, ns
	inst.KubeVersion = &chartutil.KubeVersion{Version: "v1.37.0", Major: "1", Minor: "37"}
	rel, err := inst.Run(ch, vals)
	if err != nil {
		return "", fmt.Errorf("rendering chart %s-%s as release %s/%s: %w", ch.Metadata.Name, ch.Metadata.Version, ns, name, err)
	}
	return rel.Manifest, nil
}

// Exists reads the latest revision of a release; nil when Helm knows no
// release of that name.
func (h *Helm) Exists(name string) (*release.Release, error) {
	rel, err := h.cfg.Releases.Last(name)
	if errors.Is(err, driver.ErrReleaseNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading Helm release %s/%s: %w", h.namespace, name, err)
	}
	return rel, nil
}

// Install installs ch as release name with vals. replace lets it reuse the
// name of a failed revision (the caller's own interrupted install, marked
// failed with FailPending): Helm then adopts the objects that revision
// created. It does not wait.
func (h *Helm) Install(ctx context.Context, ch *chart.Chart, name string, vals map[string]any, description string, replace bool) (*release.Release, error) {
	inst := action.NewInstall(h.cfg)
	inst.ReleaseName, inst.Namespace = name, h.namespace
	inst.Description = description
	inst.Timeout = 5 * time.Minute
	inst.Replace = replace
	rel, err := inst.RunWithContext(ctx, ch, vals)
	if err != nil {
		return nil, fmt.Errorf("helm install %s (chart %s-%s) in %s: %w", name, ch.Metadata.Name, ch.Metadata.Version, h.namespace, err)
	}
	h.log.Info("release installed", zap.String("release", name), zap.Int("revision", rel.Version))
	return rel, nil
}

// Uninstall removes a release and its objects, as `helm uninstall`; it
// does not wait for them to go.
func (h *Helm) Uninstall(name, why string) error {
	un := action.NewUninstall(h.cfg)
	un.Timeout = 5 * time.Minute
	un.Description = why
	if _, err := un.Run(name); err != nil {
		return fmt.Errorf("helm uninstall %s -n %s: %w", name, h.namespace, err)
	}
	h.log.Info("release uninstalled", zap.String("release", name), zap.String("why", why))
	return nil
}
