package main

import (
	"context"
	"fmt"
	"net/http"
	"sync"

	"github.com/urfave/cli/v2"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
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

// grafanaPort is the chart's Grafana container port (container and port
// both named grafana), read from the live workload, else 3000. Cached per
// key: after the first answer the workload may be gone for the swap.
type grafanaPorts struct {
	clients *kube.Clients
	ns      string
	mu      sync.Mutex
	ports   map[string]int32
}

func (g *grafanaPorts) port(ctx context.Context, key string) int32 {
	g.mu.Lock()
	defer g.mu.Unlock()
	if p, ok := g.ports[key]; ok {
		return p
	}
	const def = 3000
	p := int32(def)
	found := false
	if w := workloadOf(key); w != key {
		if sts, err := g.clients.Kube.AppsV1().StatefulSets(g.ns).Get(ctx, w, metav1.GetOptions{}); err == nil {
			p, found = podproxy.ContainerPort(&sts.Spec.Template.Spec, "grafana", "grafana", def), true
		} else if pod, err := g.clients.Kube.CoreV1().Pods(g.ns).Get(ctx, key, metav1.GetOptions{}); err == nil {
			p, found = podproxy.ContainerPort(&pod.Spec, "grafana", "grafana", def), true
		}
	} else if d, err := g.clients.Kube.AppsV1().Deployments(g.ns).Get(ctx, key, metav1.GetOptions{}); err == nil {
		p, found = podproxy.ContainerPort(&d.Spec.Template.Spec, "grafana", "grafana", def), true
	} else if !apierrors.IsNotFound(err) {
		return p // not cached: a later call may read it
	}
	if found {
		g.ports[key] = p
	}
	return p
}

// podProxyTarget is the pod-proxy URL and transport of a checker's key: a
// StatefulSet pod by name, or a Deployment (its name) resolved to its
// current pod on every request.
func podProxyTarget(ctx context.Context, px *podproxy.Proxy, ports *grafanaPorts, ns, key string) (string, http.RoundTripper) {
	port := ports.port(ctx, key)
	if workloadOf(key) == key {
		return px.Deployment(ns, key, port)
	}
	return px.Pod(ns, key, port)
}
