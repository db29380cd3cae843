// Package sandbox runs a real, disposable Kubernetes control plane on
// 127.0.0.1 for e2e tests and the demo: etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, the CSI snapshot controller and
// kwok (which plays the kubelets), plus in-process agents that play the CSI
// driver and serve Grafana for Ready pods.
package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	snapclientset "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	"go.uber.org/zap"
	apiextclientset "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Options tune Start. The zero value is what tests want.
type Options struct {
	// Dir holds data, certificates, kubeconfigs and logs. Empty means a new
	// temporary directory, removed by a successful Stop.
	Dir string
	// KeepDir keeps Dir after Stop (a temporary Dir is always kept when Start
	// fails, so its logs can be read).
	KeepDir bool
	// Nodes is how many kwok nodes to create; at least 2.
	Nodes int
	// Progress receives build and start progress lines; default os.Stderr.
	Progress io.Writer
	// Logger is given to the in-process agents; default: logs/agents.log
	// in Dir (klog output, from the provisioner library, goes there too).
	Logger *zap.Logger
	// ReadyTimeout bounds the start after the binaries exist; default 2m.
	ReadyTimeout time.Duration
	// NoVelero leaves Velero's CRDs without a server (no Velero, no
	// stand-in, no BackupStorageLocation).
	NoVelero bool
	// ObjectStore is the S3 endpoint (http://host:port, bucket "velero")
	// Velero's location points at. Empty means a store of the sandbox's
	// own; sandboxes given one store share their backups, as clusters of
	// one cloud account do (see StartObjectStore).
	ObjectStore string
	// SnapshotRoot is a directory the storage agent keeps its snapshots
	// in instead of its own root. Sandboxes given one SnapshotRoot (and one
	// ObjectStore) restore each other's CSI snapshots, as clusters of one
	// cloud account do: a Velero backup taken in one restores its volumes
	// in another. Volumes stay per sandbox. Never removed by Stop.
	SnapshotRoot string
}

// Timing tells where a start spent its time.
type Timing struct {
	Binaries  time.Duration // finding (or building) the binaries
	ToReady   time.Duration // processes started until etcd, apiserver and default SA are ready
	Bootstrap time.Duration // CRDs, nodes, classes and agents
	Velero    time.Duration // part of Bootstrap: Velero started until its location was Available
	Total     time.Duration // Start's whole duration
}

// StartToReady is the start time excluding builds: what a warm start costs.
func (t Timing) StartToReady() time.Duration { return t.ToReady + t.Bootstrap }

// Sandbox is a running control plane. Its clients act as cluster admin.
type Sandbox struct {
	Dir        string
	Kubeconfig string // admin kubeconfig (O=system:masters)
	RESTConfig *rest.Config
	Kube       kubernetes.Interface
	Snap       snapclientset.Interface
	APIExt     apiextclientset.Interface
	Server     string // https://127.0.0.1:<port>
	Timing     Timing

	opts    Options
	tmpDir  bool
	pki     *pki
	rss     *rssSampler
	logger  *zap.Logger
	agentRC *rest.Config // the in-process agents' own identity
	bins    Binaries
	// veleroKubeconfig is the Velero server's identity.
	veleroKubeconfig string
	// objectStore is the S3 endpoint Velero's location points at.
	objectStore string
	agentLog    *os.File

	mu       sync.Mutex
	children []*child
	stopped  bool

	addonCancel context.CancelFunc
	addonWG     sync.WaitGroup
	addonErrs   []error
	addons      addonState
	podNet      *podNetwork
}

// Start builds what is missing, starts every component and returns once the
// cluster is ready for tests. ctx bounds only the start: the sandbox runs
// until Stop. On failure nothing started is left running.
func Start(ctx context.Context, opts Options) (_ *Sandbox, err error) {
	begin := time.Now()
	if opts.Nodes < 2 {
		opts.Nodes = 2
	}
	if opts.Progress == nil {
		opts.Progress = os.Stderr
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 2 * time.Minute
	}
	s := &Sandbox{opts: opts, rss: newRSSSampler(), logger: opts.Logger}
	if s.logger == nil {
		s.logger = zap.NewNop()
	}

	bins, err := EnsureBinaries(ctx, opts.Progress)
	if err != nil {
		s.rss.close()
		return nil, err
	}
	s.Timing.Binaries = time.Since(begin)
	s.bins = bins

	if opts.Dir == "" {
		if opts.Dir, err = os.MkdirTemp("", "rebind-sandbox-"); err != nil {
			s.rss.close()
			return nil, err
		}
		s.tmpDir = true
	} else if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		s.rss.close()
		return nil, err
	}
	s.Dir, s.opts.Dir = opts.Dir, opts.Dir

	defer func() {
		if err != nil {
			_ = s.stop(false)
			err = fmt.Errorf("%w\nsandbox: logs are in %s", err, filepath.Join(s.Dir, "logs"))
		}
	}()

	ctx, cancel := context.WithTimeout(ctx, opts.ReadyTimeout)
	defer cancel()
	started := time.Now()
	if err := s.startProcesses(ctx, bins); err != nil {
		return nil, err
	}
	s.Timing.ToReady = time.Since(started)

	booted := time.Now()
	if err := s.bootstrap(ctx); err != nil {
		return nil, fmt.Errorf("sandbox: bootstrap: %w", err)
	}
	if err := s.startAddons(ctx); err != nil {
		return nil, fmt.Errorf("sandbox: agents: %w", err)
	}
	s.Timing.Bootstrap = time.Since(booted)
	s.Timing.Total = time.Since(begin)
	return s, nil
}

type ports struct{ etcdClient, etcdPeer, apiserver, kcm, scheduler int }

func freePorts(n int) ([]int, error) {
	// Hold all listeners until every port is picked so none repeats.
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	out := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

func (s *Sandbox) startProcesses(ctx context.Context, bins Binaries) error {
	pp, err := freePorts(5)
	if err != nil {
		return err
	}
	p := ports{pp[0], pp[1], pp[2], pp[3], pp[4]}
	s.Server = "https://127.0.0.1:" + strconv.Itoa(p.apiserver)

	if s.pki, err = newPKI(filepath.Join(s.Dir, "pki")); err != nil {
		return fmt.Errorf("sandbox: pki: %w", err)
	}
	kc := map[string]string{}
	for _, id := range []struct{ name, user, group string }{
		{"admin", userAdmin, groupMasters},
		{"controller-manager", userControllerManager, ""},
		{"scheduler", userScheduler, ""},
		{"kwok", userKwok, groupMasters},
		{"snapshot-controller", userSnapshotter, groupMasters},
		{"agents", userAgents, groupMasters},
		// `velero install` binds the server's ServiceAccount to cluster-admin.
		{"velero", userVelero, groupMasters},
	} {
		var groups []string
		if id.group != "" {
			groups = []string{id.group}
		}
		if kc[id.name], err = s.pki.clientKubeconfig(id.name, s.Server, id.user, groups...); err != nil {
			return err
		}
	}
	// The admin kubeconfig sits at the top of the directory: it is what
	// users and tests point KUBECONFIG at.
	s.Kubeconfig = filepath.Join(s.Dir, "kubeconfig")
	if err := os.Rename(kc["admin"], s.Kubeconfig); err != nil {
		return err
	}
	if s.RESTConfig, err = clientcmd.BuildConfigFromFlags("", s.Kubeconfig); err != nil {
		return err
	}
	// Tests create many objects quickly; client throttling would only add
	// latency to a local apiserver.
	s.RESTConfig.QPS, s.RESTConfig.Burst = 200, 400
	if s.Kube, err = kubernetes.NewForConfig(s.RESTConfig); err != nil {
		return err
	}
	if s.Snap, err = snapclientset.NewForConfig(s.RESTConfig); err != nil {
		return err
	}
	if s.APIExt, err = apiextclientset.NewForConfig(s.RESTConfig); err != nil {
		return err
	}
	if s.agentRC, err = clientcmd.BuildConfigFromFlags("", kc["agents"]); err != nil {
		return err
	}
	s.agentRC.QPS, s.agentRC.Burst = 200, 400
	s.veleroKubeconfig = kc["velero"]

	// etcd
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(p.etcdClient)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(p.etcdPeer)
	if err := s.start("etcd", bins["etcd"], []string{
		"--name=sandbox",
		"--data-dir=" + filepath.Join(s.Dir, "etcd"),
		"--listen-client-urls=" + etcdURL, "--advertise-client-urls=" + etcdURL,
		"--listen-peer-urls=" + peerURL, "--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=sandbox=" + peerURL,
		"--unsafe-no-fsync",
		"--log-level=warn",
	}, nil); err != nil {
		return err
	}
	if err := s.waitHTTP(ctx, "etcd", etcdURL+"/health", http.DefaultClient); err != nil {
		return err
	}

	// kube-apiserver, reaching pod IPs through the sandbox's pod network
	// (podnet.go).
	if s.podNet, err = newPodNetwork(); err != nil {
		return err
	}
	podNetEnv := []string{"HTTP_PROXY=" + s.podNet.proxyURL(), "http_proxy=" + s.podNet.proxyURL(),
		"NO_PROXY=127.0.0.1,localhost", "no_proxy=127.0.0.1,localhost"}
	if err := s.start("kube-apiserver", bins["kube-apiserver"], []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(p.apiserver),
		"--cert-dir=" + filepath.Join(s.Dir, "kube-apiserver"),
		"--tls-cert-file=" + s.pki.apiserverCert, "--tls-private-key-file=" + s.pki.apiserverKey,
		"--client-ca-file=" + s.pki.caFile,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + s.pki.saPublic,
		"--service-account-signing-key-file=" + s.pki.saPrivate,
		"--service-cluster-ip-range=10.0.0.0/24",
		"--authorization-mode=Node,RBAC",
		// With a loopback advertise address the default reconciler would
		// publish an unusable kubernetes endpoint and fight over it.
		"--endpoint-reconciler-type=none",
		"--profiling=false",
	}, podNetEnv); err != nil {
		return err
	}
	if err := s.waitReadyz(ctx, s.Kube.Discovery().RESTClient()); err != nil {
		return err
	}

	// Controllers and kwok only need the API; start them together.
	if err := s.start("kube-controller-manager", bins["kube-controller-manager"], []string{
		"--kubeconfig=" + kc["controller-manager"],
		"--authentication-kubeconfig=" + kc["controller-manager"],
		"--authorization-kubeconfig=" + kc["controller-manager"],
		"--bind-address=127.0.0.1", "--secure-port=" + strconv.Itoa(p.kcm),
		"--cert-dir=" + filepath.Join(s.Dir, "kube-controller-manager"),
		"--leader-elect=false",
		"--use-service-account-credentials",
		"--controllers=*",
		"--root-ca-file=" + s.pki.caFile,
		"--service-account-private-key-file=" + s.pki.saPrivate,
		"--service-cluster-ip-range=10.0.0.0/24",
		"--profiling=false",
	}, nil); err != nil {
		return err
	}
	if err := s.start("kube-scheduler", bins["kube-scheduler"], []string{
		"--kubeconfig=" + kc["scheduler"],
		"--authentication-kubeconfig=" + kc["scheduler"],
		"--authorization-kubeconfig=" + kc["scheduler"],
		"--bind-address=127.0.0.1", "--secure-port=" + strconv.Itoa(p.scheduler),
		"--cert-dir=" + filepath.Join(s.Dir, "kube-scheduler"),
		"--leader-elect=false",
		"--profiling=false",
	}, nil); err != nil {
		return err
	}
	if err := s.start("snapshot-controller", bins["snapshot-controller"], []string{
		"--kubeconfig=" + kc["snapshot-controller"],
	}, nil); err != nil {
		return err
	}
	kwokConfig := filepath.Join(s.Dir, "kwok.yaml")
	if err := os.WriteFile(kwokConfig, []byte(kwokStages), 0o644); err != nil {
		return err
	}
	kwokHome := filepath.Join(s.Dir, "kwok-home")
	if err := os.MkdirAll(kwokHome, 0o755); err != nil {
		return err
	}
	if err := s.start("kwok", bins["kwok"], []string{
		"--kubeconfig=" + kc["kwok"],
		"--config=" + kwokConfig,
		"--manage-all-nodes=true",
		// Away from the service range; nodes get their own podCIDR from it.
		"--cidr=10.244.0.0/16",
		"--node-ip=10.96.0.1",
		// Leases are the node heartbeat; without them the node-lifecycle
		// controller taints the nodes unreachable after ~50 s.
		"--node-lease-duration-seconds=40",
	}, []string{"HOME=" + kwokHome}); err != nil {
		return err
	}

	return s.waitDefaultServiceAccount(ctx)
}

func (s *Sandbox) start(name, bin string, args, env []string) error {
	c, err := startChild(s.Dir, name, bin, args, env)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.children = append(s.children, c)
	s.mu.Unlock()
	s.rss.add(c)
	return nil
}

// deadChild reports a component that has exited, with the end of its log:
// waiting any longer for readiness would only hide why.
func (s *Sandbox) deadChild() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.children {
		if c.exited() {
			return fmt.Errorf("sandbox: %s exited (%v); last log lines:\n%s", c.name, c.err, c.tail(30))
		}
	}
	return nil
}

// poll runs check on a ticker until it succeeds, a component dies or ctx ends.
func (s *Sandbox) poll(ctx context.Context, what string, check func(context.Context) error) error {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	var last error
	for {
		if last = check(ctx); last == nil {
			return nil
		}
		if err := s.deadChild(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("sandbox: waiting for %s: %w (last error: %v)", what, ctx.Err(), last)
		case <-t.C:
		}
	}
}

func (s *Sandbox) waitHTTP(ctx context.Context, what, url string, client *http.Client) error {
	return s.poll(ctx, what, func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", url, resp.Status)
		}
		return nil
	})
}

func (s *Sandbox) waitReadyz(ctx context.Context, rc rest.Interface) error {
	return s.poll(ctx, "kube-apiserver /readyz", func(ctx context.Context) error {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return rc.Get().AbsPath("/readyz").Do(rctx).Error()
	})
}

// Stop stops every component in reverse start order, waits for each, and
// removes a temporary directory. Safe to call more than once.
func (s *Sandbox) Stop() error {
	return s.stop(true)
}

func (s *Sandbox) stop(removeDir bool) error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	children := s.children
	s.mu.Unlock()

	errs := s.stopAddons()
	for i := len(children) - 1; i >= 0; i-- {
		children[i].stop(5 * time.Second)
	}
	if s.podNet != nil {
		if err := s.podNet.close(); err != nil {
			errs = append(errs, err)
		}
	}
	s.rss.sample()
	s.rss.close()
	if s.agentLog != nil {
		// klog may still point here; writes to a closed os.File fail
		// without harm, so no global reset is needed.
		_ = s.agentLog.Close()
	}
	if removeDir && s.tmpDir && !s.opts.KeepDir {
		if err := os.RemoveAll(s.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// KeepDir keeps the directory after Stop, for its logs.
func (s *Sandbox) KeepDir() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opts.KeepDir = true
}

// PeakRSS is the highest summed resident memory of the control-plane
// processes seen so far, in bytes (sampled from /proc every 200 ms).
func (s *Sandbox) PeakRSS() int64 { return s.rss.peak.Load() }

// PIDs lists the component processes (each leads its own process group).
func (s *Sandbox) PIDs() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]int, 0, len(s.children))
	for _, c := range s.children {
		out = append(out, c.pid())
	}
	return out
}

// CAData is the PEM of the cluster CA, for kubeconfigs made elsewhere.
func (s *Sandbox) CAData() []byte { return s.pki.caPEM }
