package podproxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func pod(name string, age time.Duration, ready, deleting bool) corev1.Pod {
	p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "mon", Labels: map[string]string{"app": "grafana"},
		CreationTimestamp: metav1.NewTime(time.Unix(1_000_000, 0).Add(-age))}}
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}
	if deleting {
		now := metav1.Now()
		p.DeletionTimestamp = &now
	}
	return p
}

func TestReadyPod(t *testing.T) {
	tests := []struct {
		name string
		pods []corev1.Pod
		want string
	}{
		{"none", nil, ""},
		{"not ready", []corev1.Pod{pod("a", time.Minute, false, false)}, ""},
		{"terminating is skipped", []corev1.Pod{pod("old", time.Hour, true, true), pod("new", time.Minute, true, false)}, "new"},
		{"newest ready wins", []corev1.Pod{pod("old", time.Hour, true, false), pod("new", time.Minute, true, false)}, "new"},
		{"newest not ready loses", []corev1.Pod{pod("old", time.Hour, true, false), pod("new", time.Minute, false, false)}, "old"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ReadyPod(tt.pods); got != tt.want {
				t.Fatalf("ReadyPod = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestContainerPort(t *testing.T) {
	spec := &corev1.PodSpec{Containers: []corev1.Container{
		{Name: "sidecar", Ports: []corev1.ContainerPort{{Name: "grafana", ContainerPort: 9999}}},
		{Name: "grafana", Ports: []corev1.ContainerPort{{Name: "metrics", ContainerPort: 9100}, {Name: "grafana", ContainerPort: 3001}}},
	}}
	tests := []struct {
		name      string
		spec      *corev1.PodSpec
		container string
		want      int32
	}{
		{"named port of the named container", spec, "grafana", 3001},
		{"first port without the name", &corev1.PodSpec{Containers: []corev1.Container{{Name: "grafana", Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}}}, "grafana", 8080},
		{"no such container", spec, "other", 3000},
		{"no spec", nil, "grafana", 3000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ContainerPort(tt.spec, tt.container, "grafana", 3000); got != tt.want {
				t.Fatalf("port %d, want %d", got, tt.want)
			}
		})
	}
}

// apiServer records the paths asked and answers 404 for pods listed in gone.
type apiServer struct {
	mu    sync.Mutex
	paths []string
	gone  map[string]bool
}

func (a *apiServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.paths = append(a.paths, r.URL.Path)
	for p := range a.gone {
		if strings.Contains(r.URL.Path, "/pods/"+p+":") {
			w.WriteHeader(http.StatusNotFound)
			return
		}
	}
	_, _ = io.WriteString(w, "ok")
}

func TestDeploymentFollowsTheCurrentPod(t *testing.T) {
	api := &apiServer{gone: map[string]bool{}}
	srv := httptest.NewServer(api)
	defer srv.Close()
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "grafana", Namespace: "mon"},
		Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "grafana"}}}}
	first := pod("grafana-abc", time.Hour, true, false)
	kube := fake.NewClientset(dep, &first)
	base, _ := url.Parse(srv.URL + "/prefix")
	p := newProxy(base, http.DefaultTransport, kube)

	if u, _ := p.Pod("mon", "grafana-0", 3000); u != srv.URL+"/prefix/api/v1/namespaces/mon/pods/grafana-0:3000/proxy" {
		t.Fatalf("pod URL %s", u)
	}
	u, rt := p.Deployment("mon", "grafana", 3000)
	c := &http.Client{Transport: rt}
	get := func() int {
		t.Helper()
		resp, err := c.Get(u + "/api/health")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := get(); st != 200 {
		t.Fatalf("status %d", st)
	}
	// The old pod is replaced: its name is gone, a new one is Ready.
	api.mu.Lock()
	api.gone["grafana-abc"] = true
	api.mu.Unlock()
	second := pod("grafana-xyz", time.Minute, true, false)
	if _, err := kube.CoreV1().Pods("mon").Create(t.Context(), &second, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if st := get(); st != http.StatusNotFound {
		t.Fatalf("request to the vanished pod: %d", st)
	}
	if st := get(); st != 200 {
		t.Fatalf("after re-resolving: %d", st)
	}
	want := []string{
		"/prefix/api/v1/namespaces/mon/pods/grafana-abc:3000/proxy/api/health",
		"/prefix/api/v1/namespaces/mon/pods/grafana-abc:3000/proxy/api/health",
		"/prefix/api/v1/namespaces/mon/pods/grafana-xyz:3000/proxy/api/health",
	}
	if strings.Join(api.paths, "\n") != strings.Join(want, "\n") {
		t.Fatalf("paths:\n%s\nwant:\n%s", strings.Join(api.paths, "\n"), strings.Join(want, "\n"))
	}
}

// TestDeploymentSelectorNeedsNoDeploymentRead: with the selector given, the
// transport finds the pod without reading the Deployment (a drill may list
// pods but not get Deployments), and a bad selector is refused up front.
func TestDeploymentSelectorNeedsNoDeploymentRead(t *testing.T) {
	api := &apiServer{gone: map[string]bool{}}
	srv := httptest.NewServer(api)
	defer srv.Close()
	ready := pod("grafana-abc", time.Minute, true, false)
	other := pod("other-def", time.Second, true, false)
	other.Labels = map[string]string{"app": "other"}
	kube := fake.NewClientset(&ready, &other) // no Deployment object
	base, _ := url.Parse(srv.URL)
	p := newProxy(base, http.DefaultTransport, kube)

	u, rt, err := p.DeploymentSelector("mon", "grafana", &metav1.LabelSelector{MatchLabels: map[string]string{"app": "grafana"}}, 3000)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Transport: rt}).Get(u + "/api/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || len(api.paths) != 1 || api.paths[0] != "/api/v1/namespaces/mon/pods/grafana-abc:3000/proxy/api/health" {
		t.Fatalf("status %d, paths %v", resp.StatusCode, api.paths)
	}
	bad := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: "Nope"}}}
	if _, _, err := p.DeploymentSelector("mon", "grafana", bad, 3000); err == nil || !strings.Contains(err.Error(), "selector of Deployment mon/grafana") {
		t.Fatalf("bad selector: %v", err)
	}
}
