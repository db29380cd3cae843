package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	snapclientset "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/rebind-dev/rebind/e2e/sandbox/grafanarunner"
	"github.com/rebind-dev/rebind/e2e/sandbox/storage"
)

// addonState holds the in-process agents: the storage agent plays both CSI
// drivers, the Grafana runner serves Grafana for Ready pods.
type addonState struct {
	agent  *storage.Agent
	runner *grafanarunner.Runner
}

func (s *Sandbox) startAddons(context.Context) error {
	if err := s.openAgentLog(); err != nil {
		return err
	}
	// The agents use their own identity so the audit trail and any RBAC
	// change separate them from the admin the tests act as.
	kube, err := kubernetes.NewForConfig(s.agentRC)
	if err != nil {
		return err
	}
	snap, err := snapclientset.NewForConfig(s.agentRC)
	if err != nil {
		return err
	}
	agent, err := storage.New(storage.Config{Root: s.StorageRoot(), SnapshotRoot: s.opts.SnapshotRoot, Kube: kube, Snap: snap, Log: s.logger})
	if err != nil {
		return err
	}
	runner := grafanarunner.New(grafanarunner.Config{Kube: kube, VolumeDir: agent.VolumeDir, Log: s.logger})
	s.addons = addonState{agent: agent, runner: runner}
	s.podNet.setRoute(runner.PodAddress)

	// Not derived from Start's context: that one ends when Start returns,
	// the agents must live until Stop.
	ctx, cancel := context.WithCancel(context.Background())
	s.addonCancel = cancel
	s.goAddon(ctx, "storage agent", agent.Run)
	s.goAddon(ctx, "grafana runner", runner.Run)
	return s.startVelero(ctx, kube)
}

func (s *Sandbox) goAddon(ctx context.Context, name string, run func(context.Context) error) {
	s.addonWG.Add(1)
	go func() {
		defer s.addonWG.Done()
		err := run(ctx)
		if err == nil || (ctx.Err() != nil && errors.Is(err, context.Canceled)) {
			return
		}
		if ctx.Err() == nil {
			// Stopping early leaves tests waiting on volumes or URLs that
			// never come; make the cause visible right away.
			s.logger.Error("sandbox agent stopped", zap.String("agent", name), zap.Error(err))
		}
		s.mu.Lock()
		s.addonErrs = append(s.addonErrs, fmt.Errorf("%s: %w", name, err))
		s.mu.Unlock()
	}()
}

// openAgentLog sends the agents' logs to logs/agents.log unless the caller
// gave a logger: test output then shows only the tests' own lines, and a
// failure still has the agents' story next to the components' logs.
func (s *Sandbox) openAgentLog() error {
	if s.opts.Logger != nil {
		return nil
	}
	f, err := os.OpenFile(filepath.Join(s.Dir, "logs", "agents.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	s.agentLog = f
	enc := zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig())
	s.logger = zap.New(zapcore.NewCore(enc, zapcore.AddSync(f), zap.DebugLevel))
	// The provisioner library inside the storage agent logs through klog,
	// which is process-global: the last sandbox started owns it.
	klog.LogToStderr(false)
	klog.SetOutput(f)
	return nil
}

// stopAddons runs before the control plane stops so the agents never see
// the apiserver vanish under them.
func (s *Sandbox) stopAddons() []error {
	if s.addonCancel == nil {
		return nil
	}
	s.addonCancel()
	s.addonWG.Wait()
	if s.agentLog != nil {
		_ = s.logger.Sync()
		klog.Flush()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]error(nil), s.addonErrs...)
}

// PodURL is the stable loopback URL of the Grafana stand-in for pod ns/pod;
// see docs/ARCHITECTURE.md for its behaviour across pod re-creation.
func (s *Sandbox) PodURL(ns, pod string) string { return s.addons.runner.PodURL(ns, pod) }

// ThrottleGrafana makes the pod's Grafana URL answer 429 Too Many Requests
// with Retry-After for d, as a rate-limiting Ingress in front of Grafana
// would (Grafana itself never does: docs/grafana-conformance.md §6).
func (s *Sandbox) ThrottleGrafana(ns, pod string, d time.Duration, retryAfter int) error {
	return s.addons.runner.Throttle(ns, pod, d, retryAfter)
}

// UnavailableGrafana makes the pod's Grafana URL answer 503 with nginx's
// error page for d (Retry-After when retryAfter > 0), as a proxy in front of
// Grafana does while Grafana restarts or its limit_req trips. It outlives
// pod re-creation under the same name and may be set before the pod exists.
func (s *Sandbox) UnavailableGrafana(ns, pod string, d time.Duration, retryAfter int) error {
	return s.addons.runner.Unavailable(ns, pod, d, retryAfter)
}

// GrafanaAttached says whether the runner serves a Ready pod under ns/pod
// (its stand-in opens the database on the first request).
func (s *Sandbox) GrafanaAttached(ns, pod string) bool {
	_, ok := s.addons.runner.PodVersion(ns, pod)
	return ok
}

// StorageRoot is the storage agent's root: volumes/<handle> and
// snapshots/<handle> below it.
func (s *Sandbox) StorageRoot() string { return filepath.Join(s.Dir, "storage") }

// SnapshotRoot is where the storage agent keeps snapshots/<handle>:
// Options.SnapshotRoot when given (shared with other sandboxes), else
// below StorageRoot.
func (s *Sandbox) SnapshotRoot() string {
	if s.opts.SnapshotRoot != "" {
		return s.opts.SnapshotRoot
	}
	return filepath.Join(s.StorageRoot(), "snapshots")
}
