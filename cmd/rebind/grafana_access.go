package main

import (
	"context"
	"fmt"
	"net/http"
	"sync"

	"github.com/urfave/cli/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rebind-dev/rebind/pkg/kube"
	"github.com/rebind-dev/rebind/pkg/podproxy"
)

const (
	flagGrafanaAccess = "grafana-access"

	accessAuto       = "auto"
	accessPodProxy   = "pod-proxy"
	accessClusterDNS = "cluster-dns"
)

func grafanaAccessFlag() cli.Flag {
	return &cli.StringFlag{Name: flagGrafanaAccess, Category: grafanaCategory, Value: accessAuto,
		Usage: "how to reach a pod's Grafana when no --grafana-url/--grafana-pod-url applies: pod-proxy (the API server's pod proxy, with the kubeconfig's credentials; needs get and create on pods/proxy), cluster-dns (the pod's in-cluster DNS name), or auto: cluster-dns when rebind runs in a pod, pod-proxy otherwise"}
}

// usePodProxy decides --grafana-access.
func usePodProxy(c *cli.Context) (bool, error) {
	switch a := c.String(flagGrafanaAccess); a {
	case accessAuto:
		return !podproxy.InCluster(), nil
	case accessPodProxy:
		return true, nil
	case accessClusterDNS:
		return false, nil
	default:
		return false, fmt.Errorf("--%s %q: use auto, pod-proxy or cluster-dns", flagGrafanaAccess, a)
	}
}

// podProxyUnlessURL is usePodProxy with --grafana-url winning: a URL the
// user gave reaches Grafana directly.
func podProxyUnlessURL(c *cli.Context) (bool, error) {
	viaProxy, err := usePodProxy(c)
	return viaProxy && c.String(flagGrafanaURL) == "", err
}

// grafanaTargets finds what a checker key names (a StatefulSet pod, or a
// Deployment whose pods change names) and the chart's Grafana container
// port there (container and port both named grafana), from the live
// workload, else 3000. Cached per key: after the first answer the workload
// may be gone for the swap.
type grafanaTargets struct {
	clients *kube.Clients
	ns      string
	mu      sync.Mutex
	known   map[string]grafanaTarget
}

type grafanaTarget struct {
	deployment bool
	port       int32
}

func (g *grafanaTargets) lookup(ctx context.Context, key string) grafanaTarget {
	g.mu.Lock()
	defer g.mu.Unlock()
	if t, ok := g.known[key]; ok {
		return t
	}
	const def = 3000
	apps := g.clients.Kube.AppsV1()
	// A key with an ordinal is a StatefulSet pod, unless no such
	// StatefulSet exists and a Deployment has the key's name.
	if w := workloadOf(key); w != key {
		if sts, err := apps.StatefulSets(g.ns).Get(ctx, w, metav1.GetOptions{}); err == nil {
			return g.keep(key, grafanaTarget{port: podproxy.ContainerPort(&sts.Spec.Template.Spec, "grafana", "grafana", def)})
		}
	}
	d, err := apps.Deployments(g.ns).Get(ctx, key, metav1.GetOptions{})
	if err == nil {
		return g.keep(key, grafanaTarget{deployment: true, port: podproxy.ContainerPort(&d.Spec.Template.Spec, "grafana", "grafana", def)})
	}
	if workloadOf(key) == key {
		// Not cached: a later call may read it.
		return grafanaTarget{deployment: true, port: def}
	}
	if pod, err := g.clients.Kube.CoreV1().Pods(g.ns).Get(ctx, key, metav1.GetOptions{}); err == nil {
		return g.keep(key, grafanaTarget{port: podproxy.ContainerPort(&pod.Spec, "grafana", "grafana", def)})
	}
	return grafanaTarget{port: def}
}

func (g *grafanaTargets) keep(key string, t grafanaTarget) grafanaTarget {
	g.known[key] = t
	return t
}

// podProxyTarget is the pod-proxy URL and transport of a checker's key: a
// StatefulSet pod by name, or a Deployment resolved to its current pod on
// every request.
func podProxyTarget(ctx context.Context, px *podproxy.Proxy, targets *grafanaTargets, ns, key string) (string, http.RoundTripper) {
	t := targets.lookup(ctx, key)
	if t.deployment {
		return px.Deployment(ns, key, t.port)
	}
	return px.Pod(ns, key, t.port)
}
