// Package kube loads cluster access the way kubectl does and provides
// watch-based waits with timeouts that say what they were waiting for.
package kube

import (
	"fmt"

	snapclient "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Clients bundles the API clients rebind uses.
type Clients struct {
	Config  *rest.Config
	Kube    kubernetes.Interface
	Snap    snapclient.Interface
	Dynamic dynamic.Interface
	// Namespace is the kubeconfig context's namespace (or the in-cluster
	// service account's), used when --namespace is not given.
	Namespace string
}

// LoadOptions mirrors kubectl's --kubeconfig and --context.
type LoadOptions struct {
	Kubeconfig string
	Context    string
}

// Load follows kubectl's rules: --kubeconfig, then $KUBECONFIG, then
// ~/.kube/config, then the in-cluster service account.
func Load(opts LoadOptions) (*Clients, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = opts.Kubeconfig
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: opts.Context})
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("loading cluster access (kubeconfig %q, context %q): %w; set --kubeconfig or KUBECONFIG", opts.Kubeconfig, opts.Context, err)
	}
	ns, _, err := cc.Namespace()
	if err != nil {
		ns = "default"
	}
	c, err := New(cfg)
	if err != nil {
		return nil, err
	}
	c.Namespace = ns
	return c, nil
}

const defaultBurst = 300

// New builds clients from a REST config.
func New(cfg *rest.Config) (*Clients, error) {
	cfg = rest.CopyConfig(cfg)
	// The defaults (5 qps) make waits on many claims crawl. The burst is
	// kubectl's: a restore makes some 130 requests in the second before
	// its outage, and with a burst of 100 the bucket ran dry just as the
	// pods stopped, so each request of the outage waited 13-18 ms for a
	// token (seen in the sandbox).
	if cfg.QPS == 0 {
		cfg.QPS, cfg.Burst = 50, defaultBurst
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "rebind"
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	snap, err := snapclient.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &Clients{Config: cfg, Kube: kube, Snap: snap, Dynamic: dyn, Namespace: "default"}, nil
}

// ForParallelRuns returns clients whose rate limit grows with the number
// of runs sharing them (a fleet of drills): each run keeps what one run
// gets alone, up to a ceiling that spares the API server.
func (c *Clients) ForParallelRuns(n int) (*Clients, error) {
	const perRun, ceiling = 50, 400
	if n <= 1 || c.Config == nil {
		return c, nil
	}
	cfg := rest.CopyConfig(c.Config)
	cfg.QPS = float32(min(perRun*n, ceiling))
	cfg.Burst = max(int(2*cfg.QPS), defaultBurst)
	out, err := New(cfg)
	if err != nil {
		return nil, err
	}
	out.Namespace = c.Namespace
	return out, nil
}
