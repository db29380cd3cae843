// Package podproxy reaches an HTTP port of a pod through the Kubernetes API
// server's pod proxy (/api/v1/namespaces/NS/pods/POD:PORT/proxy/...), with
// the kubeconfig's own credentials: no port-forward, Ingress or cluster DNS.
// It needs RBAC `get` on pods/proxy (and `create` for POST requests).
//
// The API server looks the pod up by name on every request, so a URL for a
// StatefulSet pod follows the new pod of that name after it is replaced. A
// Deployment's pods change names: its URL is resolved to the current Ready
// pod of the Deployment when a request is made, and again after a request
// the old pod can no longer answer.
package podproxy

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// InCluster says rebind runs in a pod, where cluster DNS names resolve: the
// same signal client-go's rest.InClusterConfig uses.
func InCluster() bool {
	return os.Getenv("KUBERNETES_SERVICE_HOST") != "" && os.Getenv("KUBERNETES_SERVICE_PORT") != ""
}

// Proxy builds pod-proxy URLs and the transport that carries the user's
// credentials to the API server.
type Proxy struct {
	base *url.URL
	rt   http.RoundTripper
	kube kubernetes.Interface
}

// New uses cfg's server, TLS settings and credentials (client certificate,
// token, exec plugin) and no client-side rate limit: a Grafana inventory is
// thousands of small requests.
func New(cfg *rest.Config, kube kubernetes.Interface) (*Proxy, error) {
	base, _, err := rest.DefaultServerUrlFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("pod proxy: API server URL: %w", err)
	}
	rt, err := rest.TransportFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("pod proxy: transport from the kubeconfig: %w", err)
	}
	return newProxy(base, rt, kube), nil
}

func newProxy(base *url.URL, rt http.RoundTripper, kube kubernetes.Interface) *Proxy {
	b := *base
	b.Path = strings.TrimRight(b.Path, "/")
	return &Proxy{base: &b, rt: rt, kube: kube}
}

// podPath is the proxy path of a pod's port, without a trailing slash.
func podPath(ns, pod string, port int32) string {
	return "/api/v1/namespaces/" + url.PathEscape(ns) + "/pods/" + url.PathEscape(pod) + ":" + strconv.Itoa(int(port)) + "/proxy"
}

// Pod returns the base URL of port on the pod named pod, and the transport
// to use with it.
func (p *Proxy) Pod(ns, pod string, port int32) (string, http.RoundTripper) {
	u := *p.base
	u.Path += podPath(ns, pod, port)
	return u.String(), p.rt
}

// Deployment returns a base URL for port on the current Ready pod of the
// Deployment, and the transport that resolves it. The URL names the
// Deployment in place of a pod; the transport puts the pod's name there on
// every request.
func (p *Proxy) Deployment(ns, name string, port int32) (string, http.RoundTripper) {
	u := *p.base
	prefix := u.Path + podPath(ns, name, port)
	u.Path = prefix
	return u.String(), &deploymentTransport{p: p, ns: ns, name: name, port: port, prefix: prefix}
}

// DeploymentSelector is Deployment for a caller that knows the
// Deployment's pod selector already (the drill, from discovery): the
// transport then only lists pods, and needs no right to read the
// Deployment.
func (p *Proxy) DeploymentSelector(ns, name string, selector *metav1.LabelSelector, port int32) (string, http.RoundTripper, error) {
	sel, err := metav1.LabelSelectorAsSelector(selector)
	if err != nil {
		return "", nil, fmt.Errorf("pod proxy: selector of Deployment %s/%s: %w", ns, name, err)
	}
	u, rt := p.Deployment(ns, name, port)
	rt.(*deploymentTransport).selector = sel
	return u, rt, nil
}

// deploymentTransport rewrites .../pods/<deployment>:PORT/proxy to the
// Deployment's current pod. The pod found is kept until a request through
// it fails as a request to a pod that is gone does.
type deploymentTransport struct {
	p      *Proxy
	ns     string
	name   string
	port   int32
	prefix string

	mu       sync.Mutex
	selector labels.Selector
	pod      string
}

func (t *deploymentTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !strings.HasPrefix(req.URL.Path, t.prefix) {
		return t.p.rt.RoundTrip(req)
	}
	pod, err := t.current(req.Context())
	if err != nil {
		return nil, err
	}
	r := req.Clone(req.Context())
	rest := strings.TrimPrefix(req.URL.Path, t.prefix)
	r.URL.Path = strings.TrimSuffix(t.prefix, podPath(t.ns, t.name, t.port)) + podPath(t.ns, pod, t.port) + rest
	r.URL.RawPath = ""
	resp, err := t.p.rt.RoundTrip(r)
	if err != nil || gone(resp) {
		t.forget(pod)
	}
	return resp, err
}

// gone: the API server could not reach the pod (404: no pod of that name;
// 400: it has no address yet; 502/503: nothing answers at its address).
// Grafana's own 404s carry no Kubernetes Status, but forgetting the pod
// after one only costs a lookup.
func gone(resp *http.Response) bool {
	switch resp.StatusCode {
	case http.StatusNotFound, http.StatusBadRequest, http.StatusBadGateway, http.StatusServiceUnavailable:
		return true
	}
	return false
}

func (t *deploymentTransport) forget(pod string) {
	t.mu.Lock()
	if t.pod == pod {
		t.pod = ""
	}
	t.mu.Unlock()
}

func (t *deploymentTransport) current(ctx context.Context) (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.pod != "" {
		return t.pod, nil
	}
	if t.selector == nil {
		d, err := t.p.kube.AppsV1().Deployments(t.ns).Get(ctx, t.name, metav1.GetOptions{})
		if err != nil {
			return "", fmt.Errorf("pod proxy: Deployment %s/%s: %w", t.ns, t.name, err)
		}
		sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
		if err != nil {
			return "", fmt.Errorf("pod proxy: selector of Deployment %s/%s: %w", t.ns, t.name, err)
		}
		// A Deployment's selector is immutable (apps/v1).
		t.selector = sel
	}
	pods, err := t.p.kube.CoreV1().Pods(t.ns).List(ctx, metav1.ListOptions{LabelSelector: t.selector.String()})
	if err != nil {
		return "", fmt.Errorf("pod proxy: pods of Deployment %s/%s: %w", t.ns, t.name, err)
	}
	pod := ReadyPod(pods.Items)
	if pod == "" {
		return "", &NoReadyPodError{Namespace: t.ns, Deployment: t.name}
	}
	t.pod = pod
	return pod, nil
}

// ReadyPod picks the newest Ready pod that is not terminating ("" for none):
// during a rollout the new pod is the one that will stay.
func ReadyPod(pods []corev1.Pod) string {
	var ready []corev1.Pod
	for _, p := range pods {
		if p.DeletionTimestamp == nil && isReady(&p) {
			ready = append(ready, p)
		}
	}
	if len(ready) == 0 {
		return ""
	}
	sort.Slice(ready, func(i, j int) bool {
		a, b := ready[i].CreationTimestamp, ready[j].CreationTimestamp
		if !a.Equal(&b) {
			return b.Before(&a)
		}
		return ready[i].Name < ready[j].Name
	})
	return ready[0].Name
}

func isReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// NoReadyPodError: the Deployment has no Ready pod to proxy to (yet).
type NoReadyPodError struct{ Namespace, Deployment string }

func (e *NoReadyPodError) Error() string {
	return fmt.Sprintf("pod proxy: Deployment %s/%s has no Ready pod", e.Namespace, e.Deployment)
}

// ContainerPort is the port named portName of the container named
// container, else that container's first port, else def.
func ContainerPort(spec *corev1.PodSpec, container, portName string, def int32) int32 {
	if spec == nil {
		return def
	}
	for _, c := range spec.Containers {
		if c.Name != container {
			continue
		}
		for _, p := range c.Ports {
			if p.Name == portName {
				return p.ContainerPort
			}
		}
		if len(c.Ports) > 0 {
			return c.Ports[0].ContainerPort
		}
	}
	return def
}
