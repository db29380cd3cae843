// Package helmredeploy lets Helm recreate a release's StatefulSet, so the
// release record and the cluster agree after a migration: the next
// `helm upgrade` then renders exactly what runs instead of failing on the
// immutable claim template.
//
// Helm keeps release records as Secrets in the release namespace (its
// default storage driver); rebind uses the same cluster access it already
// has, through a small RESTClientGetter, rather than a kubeconfig file.
package helmredeploy

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/release"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Driver is Helm's default storage of release records.
const Driver = "secrets"

// getter hands Helm the tool's own REST config.
type getter struct {
	cfg       *rest.Config
	namespace string
	dc        discovery.CachedDiscoveryInterface
}

func newGetter(cfg *rest.Config, ns string) (*getter, error) {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &getter{cfg: rest.CopyConfig(cfg), namespace: ns, dc: memory.NewMemCacheClient(dc)}, nil
}

func (g *getter) ToRESTConfig() (*rest.Config, error) { return rest.CopyConfig(g.cfg), nil }
func (g *getter) ToDiscoveryClient() (discovery.CachedDiscoveryInterface, error) {
	return g.dc, nil
}
func (g *getter) ToRESTMapper() (meta.RESTMapper, error) {
	return restmapper.NewDeferredDiscoveryRESTMapper(g.dc), nil
}

// ToRawKubeConfigLoader only answers the namespace: Helm asks it for the
// default namespace of objects whose manifests carry none.
func (g *getter) ToRawKubeConfigLoader() clientcmd.ClientConfig {
	cfg := clientcmdapi.NewConfig()
	cfg.Contexts["rebind"] = &clientcmdapi.Context{Namespace: g.namespace}
	cfg.CurrentContext = "rebind"
	return clientcmd.NewDefaultClientConfig(*cfg, &clientcmd.ConfigOverrides{})
}

// Helm runs Helm actions on releases of one namespace.
type Helm struct {
	cfg       *action.Configuration
	namespace string
	log       *zap.Logger
}

// New prepares Helm for namespace ns.
func New(restCfg *rest.Config, ns string, log *zap.Logger) (*Helm, error) {
	if log == nil {
		log = zap.NewNop()
	}
	log = log.Named("helm")
	g, err := newGetter(restCfg, ns)
	if err != nil {
		return nil, err
	}
	cfg := new(action.Configuration)
	debug := func(format string, v ...any) { log.Debug(fmt.Sprintf(format, v...)) }
	if err := cfg.Init(g, ns, Driver, debug); err != nil {
		return nil, fmt.Errorf("helm: %w", err)
	}
	return &Helm{cfg: cfg, namespace: ns, log: log}, nil
}

// Configuration exposes the action configuration (tests install with it).
func (h *Helm) Configuration() *action.Configuration { return h.cfg }

// Release returns the latest revision of a release.
func (h *Helm) Release(name string) (*release.Release, error) {
	rel, err := action.NewGet(h.cfg).Run(name)
	if err != nil {
		return nil, fmt.Errorf("reading Helm release %s/%s: %w", h.namespace, name, err)
	}
	return rel, nil
}

// Upgrade upgrades the release with its own chart (from the release
// record: no repository access), its last values and values on top.
// It does not wait: the caller waits for what it cares about.
func (h *Helm) Upgrade(ctx context.Context, name string, values map[string]any, description string) (*release.Release, error) {
	cur, err := h.Release(name)
	if err != nil {
		return nil, err
	}
	up := h.newUpgrade(description)
	up.ReuseValues = true
	rel, err := up.RunWithContext(ctx, name, cur.Chart, values)
	if err != nil {
		return nil, fmt.Errorf("helm upgrade %s (chart %s-%s, revision %d): %w", name, cur.Chart.Metadata.Name, cur.Chart.Metadata.Version, cur.Version, err)
	}
	h.log.Info("release upgraded", zap.String("release", name), zap.Int("revision", rel.Version))
	return rel, nil
}

// newUpgrade is an upgrade in the release's namespace that keeps ten
// revisions and does not wait (the caller waits for what it cares about).
func (h *Helm) newUpgrade(description string) *action.Upgrade {
	up := action.NewUpgrade(h.cfg)
	up.Namespace = h.namespace
	up.Description = description
	up.Timeout = 5 * time.Minute
	up.MaxHistory = 10
	return up
}

// UpgradeTo records a new revision with an earlier revision's chart and
// values, rendered afresh: `helm rollback` without replaying the old
// manifest. A chart that renders an object from the live cluster (the
// Grafana chart's claim volumeName, looked up) then renders what is there
// now, where the old manifest would ask to change an immutable field.
// It does not wait.
func (h *Helm) UpgradeTo(ctx context.Context, name string, revision int, description string) error {
	get := action.NewGet(h.cfg)
	get.Version = revision
	old, err := get.Run(name)
	if err != nil {
		return fmt.Errorf("reading revision %d of Helm release %s/%s: %w", revision, h.namespace, name, err)
	}
	up := h.newUpgrade(description)
	up.ResetValues = true
	rel, err := up.RunWithContext(ctx, name, old.Chart, old.Config)
	if err != nil {
		return fmt.Errorf("helm upgrade %s with the chart and values of revision %d: %w", name, revision, err)
	}
	h.log.Info("release returned to an earlier revision's values", zap.String("release", name), zap.Int("fromRevision", revision), zap.Int("revision", rel.Version), zap.String("why", description))
	return nil
}

// ForeignPendingError is a release whose last revision is pending and was
// not started by the caller: someone else's helm command may still be
// running, so it is left alone.
type ForeignPendingError struct {
	Namespace, Name string
	Revision        int
	Status          release.Status
}

func (e *ForeignPendingError) Error() string {
	return fmt.Sprintf("Helm release %s/%s revision %d is %s and was not started by this rebind run: another helm command may be running; wait for it, or if it was killed, `helm rollback %s -n %s` and re-run",
		e.Namespace, e.Name, e.Revision, e.Status, e.Name, e.Namespace)
}

// FailPending marks the release's last revision failed when it is still
// pending and is the caller's: the upgrade that wrote it was killed (a
// pending revision's process never comes back to finish it), and Helm
// refuses every later upgrade of a release whose last revision is pending
// ("another operation is in progress"). The caller's is revision, carrying
// values among its values: Helm writes the description only when it
// finishes ("Preparing upgrade" until then), so the values tell whose it
// is. This is what `helm rollback` after a killed upgrade amounts to,
// limited to the revision the caller started. It reports whether it changed
// anything; a pending revision that is not the caller's is a
// *ForeignPendingError.
func (h *Helm) FailPending(name string, revision int, values map[string]any, why string) (bool, error) {
	last, err := h.cfg.Releases.Last(name)
	if err != nil {
		return false, fmt.Errorf("reading Helm release %s/%s: %w", h.namespace, name, err)
	}
	if !last.Info.Status.IsPending() {
		return false, nil
	}
	if last.Version != revision || !contains(last.Config, values) {
		return false, &ForeignPendingError{Namespace: h.namespace, Name: name, Revision: last.Version, Status: last.Info.Status}
	}
	last.SetStatus(release.StatusFailed, why)
	if err := h.cfg.Releases.Update(last); err != nil {
		return false, fmt.Errorf("marking Helm release %s/%s revision %d failed: %w", h.namespace, name, last.Version, err)
	}
	h.log.Warn("interrupted upgrade marked failed", zap.String("release", name), zap.Int("revision", last.Version))
	return true, nil
}

// contains reports whether every leaf of want is in got with the same
// value. Leaves compare by their printed form: values read back from a
// release record are JSON-decoded, so numbers come back as float64.
func contains(got, want map[string]any) bool {
	for k, w := range want {
		g, ok := got[k]
		if !ok {
			return false
		}
		wm, wIsMap := w.(map[string]any)
		gm, gIsMap := g.(map[string]any)
		switch {
		case wIsMap && gIsMap:
			if !contains(gm, wm) {
				return false
			}
		case wIsMap || gIsMap:
			return false
		case fmt.Sprint(g) != fmt.Sprint(w):
			return false
		}
	}
	return true
}

// Rollback points the release back at an earlier revision, as `helm
// rollback NAME REVISION` does: Helm records a new revision with that
// revision's chart and values and patches the objects to its manifest.
// It does not wait.
func (h *Helm) Rollback(name string, revision int, description string) error {
	rb := action.NewRollback(h.cfg)
	rb.Version = revision
	rb.Timeout = 5 * time.Minute
	rb.MaxHistory = 10
	if err := rb.Run(name); err != nil {
		return fmt.Errorf("helm rollback %s %d: %w", name, revision, err)
	}
	h.log.Info("release rolled back", zap.String("release", name), zap.Int("toRevision", revision), zap.String("why", description))
	return nil
}
