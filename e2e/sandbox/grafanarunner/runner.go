// Package grafanarunner stands in for the Grafana containers kwok never runs.
// Every Ready pod labelled app.kubernetes.io/name=grafana gets a Grafana API
// stand-in opened on the directory of the PersistentVolume bound to the pod's
// `storage` claim, reachable at a loopback URL that stays the same for the pod
// name across pod re-creation. The data served is whatever that PV holds: a
// migration that binds the wrong volume serves the wrong dashboards, which is
// exactly what the end-to-end tests need to see.
//
// Each stand-in imitates the Grafana release of the pod's image tag
// (grafanastandin.ParseVersion), and each pod URL sits behind a proxy whose
// rate limiting tests can switch on (Throttle, Unavailable).
package grafanarunner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/rebind-dev/rebind/e2e/grafanastandin"
)

// Selector picks the pods the runner serves: the Grafana chart's name label.
const Selector = "app.kubernetes.io/name=grafana"

// Config configures a Runner.
type Config struct {
	Kube kubernetes.Interface
	// VolumeDir maps a PV to its directory; false when it has none (normally the
	// storage agent's VolumeDir).
	VolumeDir func(*corev1.PersistentVolume) (string, bool)
	Log       *zap.Logger
}

// Runner serves the Grafana stand-ins.
type Runner struct {
	kube      kubernetes.Interface
	volumeDir func(*corev1.PersistentVolume) (string, bool)
	log       *zap.Logger

	mu        sync.Mutex
	endpoints map[types.NamespacedName]*endpoint
	// following maps a workload's endpoint to the pod endpoint it shows.
	following map[types.NamespacedName]types.NamespacedName
	ended     bool
	runOnce   sync.Once
}

// New returns a Runner; nothing is served before Run except 502s at URLs
// handed out by PodURL.
func New(cfg Config) *Runner {
	log := cfg.Log
	if log == nil {
		log = zap.NewNop()
	}
	return &Runner{
		kube:      cfg.Kube,
		volumeDir: cfg.VolumeDir,
		log:       log.Named("grafanarunner"),
		endpoints: map[types.NamespacedName]*endpoint{},
		following: map[types.NamespacedName]types.NamespacedName{},
	}
}

// PodURL returns the base URL (http://127.0.0.1:<port>) for the pod name in
// namespace. A workload's name (a Deployment's, whose pods change names)
// gets a URL too, showing whichever of its pods became Ready last, as the
// chart's Service would. The listener is made on first use, whether or not such a pod
// exists yet, and lives until Run returns; "" after that.
func (r *Runner) PodURL(namespace, pod string) string {
	e, err := r.endpoint(types.NamespacedName{Namespace: namespace, Name: pod})
	if err != nil {
		r.log.Warn("no endpoint for pod", zap.String("pod", namespace+"/"+pod), zap.Error(err))
		return ""
	}
	return e.url
}

// Run watches Grafana pods until ctx is done, then closes every listener and
// stand-in. It may be called once.
func (r *Runner) Run(ctx context.Context) error {
	err := errors.New("grafanarunner: Run called twice")
	r.runOnce.Do(func() { err = r.run(ctx) })
	return err
}

func (r *Runner) run(ctx context.Context) error {
	defer r.closeAll()
	if r.kube == nil || r.volumeDir == nil {
		return errors.New("grafanarunner: Kube and VolumeDir are required")
	}

	factory := informers.NewSharedInformerFactoryWithOptions(r.kube, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = Selector }))
	podInformer := factory.Core().V1().Pods()
	pods := podInformer.Lister()
	queue := workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[types.NamespacedName](200*time.Millisecond, 10*time.Second),
		workqueue.TypedRateLimitingQueueConfig[types.NamespacedName]{Name: "grafana-pods"})
	enqueue := func(obj any) {
		if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = tomb.Obj
		}
		if p, ok := obj.(*corev1.Pod); ok {
			queue.Add(types.NamespacedName{Namespace: p.Namespace, Name: p.Name})
		}
	}
	if _, err := podInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: enqueue,
	}); err != nil {
		return fmt.Errorf("grafanarunner: %w", err)
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("grafanarunner: cache for %v did not sync: %w", typ, context.Cause(ctx))
		}
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	defer queue.ShutDown()
	wg.Go(func() {
		for {
			key, quit := queue.Get()
			if quit {
				return
			}
			if err := r.sync(ctx, pods, key); err != nil && ctx.Err() == nil {
				r.log.Info("pod not served yet; will retry", zap.Stringer("pod", key), zap.Error(err))
				queue.AddRateLimited(key)
			} else {
				queue.Forget(key)
			}
			queue.Done(key)
		}
	})
	r.log.Info("grafana runner running", zap.String("selector", Selector))
	<-ctx.Done()
	return nil
}

// sync makes the endpoint of one pod name match the pod as it is now.
func (r *Runner) sync(ctx context.Context, pods corelisters.PodLister, key types.NamespacedName) error {
	e, err := r.endpoint(key)
	if err != nil {
		return nil // Run is ending
	}
	pod, err := pods.Pods(key.Namespace).Get(key.Name)
	if apierrors.IsNotFound(err) {
		r.unfollow(key)
		e.detach(r.log, "pod deleted")
		return nil
	}
	if err != nil {
		return err
	}
	if pod.DeletionTimestamp != nil || !podReady(pod) {
		r.unfollow(key)
		e.detach(r.log, "pod not ready")
		return nil
	}
	if e.servesUID(pod.UID) {
		return nil
	}
	// A different pod under the same name must never see its predecessor's
	// stand-in, even if opening its own fails below.
	r.unfollow(key)
	e.detach(r.log, "pod replaced")
	b, err := r.open(ctx, pod)
	if err != nil {
		return err
	}
	e.attach(b)
	r.follow(pod, key, b)
	r.log.Info("serving grafana pod", zap.Stringer("pod", key), zap.String("uid", string(pod.UID)), zap.String("grafanaVersion", string(b.version)),
		zap.String("pv", b.pv), zap.String("dir", b.dir), zap.String("url", e.url), zap.String("podAddress", b.podAddr))
	return nil
}

// workloadOf names the pod's StatefulSet or Deployment ("" for neither):
// a ReplicaSet is named <deployment>-<pod-template-hash>.
func workloadOf(p *corev1.Pod) string {
	for _, ref := range p.OwnerReferences {
		switch ref.Kind {
		case "StatefulSet":
			return ref.Name
		case "ReplicaSet":
			if h := p.Labels["pod-template-hash"]; h != "" {
				return strings.TrimSuffix(ref.Name, "-"+h)
			}
		}
	}
	return ""
}

// follow makes the pod's workload URL show the pod's stand-in.
func (r *Runner) follow(pod *corev1.Pod, podKey types.NamespacedName, b *backend) {
	w := workloadOf(pod)
	if w == "" || w == pod.Name {
		return
	}
	wk := types.NamespacedName{Namespace: pod.Namespace, Name: w}
	e, err := r.endpoint(wk)
	if err != nil {
		return
	}
	r.mu.Lock()
	r.following[wk] = podKey
	r.mu.Unlock()
	e.share(b)
}

// unfollow clears workload URLs that show the pod, before its stand-in is
// closed: share's lock waits for their requests in flight.
func (r *Runner) unfollow(podKey types.NamespacedName) {
	r.mu.Lock()
	var eps []*endpoint
	for wk, pk := range r.following {
		if pk == podKey {
			delete(r.following, wk)
			if e, ok := r.endpoints[wk]; ok {
				eps = append(eps, e)
			}
		}
	}
	r.mu.Unlock()
	for _, e := range eps {
		e.share(nil)
	}
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// endpoint returns the listener for a pod name, making it on first sight.
func (r *Runner) endpoint(key types.NamespacedName) (*endpoint, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ended {
		return nil, errors.New("runner has stopped")
	}
	if e, ok := r.endpoints[key]; ok {
		return e, nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	e := &endpoint{key: key, url: "http://" + ln.Addr().String()}
	e.srv = &http.Server{Handler: e.faults.Wrap(e), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := e.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			r.log.Warn("pod endpoint stopped", zap.Stringer("pod", key), zap.Error(err))
		}
	}()
	r.endpoints[key] = e
	return e, nil
}

func (r *Runner) closeAll() {
	r.mu.Lock()
	r.ended = true
	eps := r.endpoints
	r.endpoints = map[types.NamespacedName]*endpoint{}
	r.mu.Unlock()
	for _, e := range eps {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = e.srv.Shutdown(ctx)
		cancel()
		e.detach(r.log, "runner stopping")
	}
}

// Throttle makes the pod's URL answer every /api request except
// /api/health with 429 and Retry-After: retryAfter (when > 0) for the next d,
// like a rate-limiting ingress in front of Grafana; Grafana itself never
// sends 429 (docs/grafana-conformance.md §6). The proxy outlives pod
// re-creation under the same name, and may be set before the pod exists.
// d <= 0 lifts it. The error says the runner has stopped.
func (r *Runner) Throttle(namespace, pod string, d time.Duration, retryAfter int) error {
	e, err := r.endpoint(types.NamespacedName{Namespace: namespace, Name: pod})
	if err != nil {
		return err
	}
	e.faults.Throttle(d, retryAfter)
	return nil
}

// Unavailable is Throttle with nginx's default limit_req answer: 503 and
// nginx's HTML error page (docs/grafana-conformance.md §6).
func (r *Runner) Unavailable(namespace, pod string, d time.Duration, retryAfter int) error {
	e, err := r.endpoint(types.NamespacedName{Namespace: namespace, Name: pod})
	if err != nil {
		return err
	}
	e.faults.Unavailable(d, retryAfter)
	return nil
}

// PodAddress is the handler of the Grafana listening at a pod address
// (IP:port), for the sandbox's pod network; nil when no Ready pod served by
// the runner has that address and port, as for a connection refused.
func (r *Runner) PodAddress(hostport string) http.Handler {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.endpoints {
		e.mu.RLock()
		match := e.backend != nil && !e.view && e.backend.podAddr == hostport
		e.mu.RUnlock()
		if match {
			// The endpoint without its faults: those model an Ingress,
			// which the pod proxy does not pass through.
			return e
		}
	}
	r.log.Debug("nothing serves pod address", zap.String("addr", hostport))
	return nil
}

// PodVersion is the Grafana version the stand-in of the pod imitates; false
// while no ready pod is served under that name.
func (r *Runner) PodVersion(namespace, pod string) (grafanastandin.Version, bool) {
	r.mu.Lock()
	e, ok := r.endpoints[types.NamespacedName{Namespace: namespace, Name: pod}]
	r.mu.Unlock()
	if !ok {
		return "", false
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.backend == nil {
		return "", false
	}
	return e.backend.version, true
}

// endpoint is the stable listener of one pod name. Requests hold the read lock
// while they run, so swapping the backend waits for in-flight requests and a
// stand-in is never closed under a request.
type endpoint struct {
	key    types.NamespacedName
	url    string
	srv    *http.Server
	faults grafanastandin.ProxyFaults // the proxy in front of the pod

	mu      sync.RWMutex
	backend *backend
	// view: the endpoint is a workload's, showing a pod endpoint's
	// stand-in that it does not own.
	view bool
}

type backend struct {
	uid     types.UID
	pv, dir string
	// podAddr is the pod's IP and Grafana port, where the API server's pod
	// proxy connects (through the sandbox's pod network).
	podAddr string
	version grafanastandin.Version
	opts    grafanastandin.Options

	// The stand-in opens the database on the first request, not when the
	// pod turns Ready: tests seed a volume after the pod is scheduled, and
	// a stand-in that opened first would have started on the empty
	// database (a 13.0 migrates it to unified storage then, and never again).
	// Nothing is served before the first request, so nothing outside can
	// tell the difference.
	mu      sync.Mutex
	standin *grafanastandin.Server
	handler http.Handler
	closed  bool
}

var errBackendClosed = errors.New("grafana stand-in closed")

// server opens the stand-in on first use; a failed open is tried again on
// the next request.
func (b *backend) server() (http.Handler, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, errBackendClosed
	}
	if b.standin == nil {
		s, err := grafanastandin.Open(b.dir, b.opts)
		if err != nil {
			return nil, fmt.Errorf("opening grafana stand-in on %s: %w", b.dir, err)
		}
		b.standin, b.handler = s, s.Handler()
	}
	return b.handler, nil
}

func (b *backend) close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	if b.standin == nil {
		return nil
	}
	return b.standin.Close()
}

func (e *endpoint) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.backend == nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadGateway)
		_, _ = w.Write([]byte(`{"message":"no ready pod"}` + "\n"))
		return
	}
	h, err := e.backend.server()
	if err != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadGateway)
		b, _ := json.Marshal(map[string]string{"message": err.Error()})
		_, _ = w.Write(append(b, '\n'))
		return
	}
	h.ServeHTTP(w, req)
}

func (e *endpoint) servesUID(uid types.UID) bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.backend != nil && e.backend.uid == uid
}

func (e *endpoint) attach(b *backend) {
	e.mu.Lock()
	old := e.backend
	e.backend = b
	e.mu.Unlock()
	if old != nil {
		_ = old.close()
	}
}

// share shows a stand-in owned by another endpoint (a pod's), or nothing;
// it never closes one.
func (e *endpoint) share(b *backend) {
	e.mu.Lock()
	e.backend, e.view = b, true
	e.mu.Unlock()
}

func (e *endpoint) detach(log *zap.Logger, why string) {
	e.mu.Lock()
	old := e.backend
	e.backend = nil
	view := e.view
	e.mu.Unlock()
	if old == nil || view {
		return
	}
	if err := old.close(); err != nil {
		log.Warn("closing grafana stand-in", zap.Stringer("pod", e.key), zap.Error(err))
	}
	log.Info("stopped serving grafana pod", zap.Stringer("pod", e.key), zap.String("uid", string(old.uid)), zap.String("reason", why))
}
