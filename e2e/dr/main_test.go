// Package dr_test runs disaster recovery into another cluster against two
// real sandboxes, A and B, as two clusters of one cloud account: one S3
// store both clusters' real Velero servers use, and one snapshot store both
// storage agents read (a CSI snapshot cut in A restores in B), each cluster
// with its own volumes. rebind backs a release up in A with its baseline,
// A is lost (stopped), and rebind restores it in B into another class and
// verifies every dashboard against the baseline the backup carried.
package dr_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/sandbox"
)

var (
	clusterA, clusterB *sandbox.Sandbox
	// kubeconfig holds both clusters, as contexts "a" and "b".
	kubeconfig string
	// clusterALost: TestDisasterRecovery stopped A (its disaster); tests
	// that need A run before it (their files sort first), and say so if
	// not (go test -shuffle).
	clusterALost bool
)

// needClusterA fails a test that needs cluster A once it was stopped.
func needClusterA(t *testing.T) {
	t.Helper()
	if clusterALost {
		t.Fatal("cluster A was stopped by TestDisasterRecovery, which must run last in this package (no -shuffle)")
	}
}

func TestMain(m *testing.M) {
	os.Exit(e2eutil.RunMainWith(m, func(ctx context.Context) (func(bool) error, error) {
		dir, err := os.MkdirTemp("", "rebind-dr-")
		if err != nil {
			return nil, err
		}
		store, err := sandbox.StartObjectStore(ctx, dir)
		if err != nil {
			return nil, err
		}
		opts := sandbox.Options{ObjectStore: store.URL, SnapshotRoot: filepath.Join(dir, "snapshots"), Progress: io.Discard}
		var started []*sandbox.Sandbox
		stop := func(failed bool) error {
			var errs []error
			for _, s := range started {
				if failed {
					s.KeepDir()
					fmt.Fprintf(os.Stderr, "sandbox: tests failed; logs kept in %s\n", filepath.Join(s.Dir, "logs"))
				}
				errs = append(errs, s.Stop())
			}
			store.Stop()
			if !failed {
				errs = append(errs, os.RemoveAll(dir))
			}
			return errors.Join(errs...)
		}
		// One after the other: two Velero warm starts at once on 2 cores
		// only make both slower.
		for _, name := range []string{"A", "B"} {
			s, err := sandbox.Start(ctx, opts)
			if err != nil {
				_ = stop(true)
				return nil, fmt.Errorf("cluster %s: %w", name, err)
			}
			fmt.Fprintf(os.Stderr, "sandbox %s: ready in %.1fs (Velero %.1fs), dir %s\n", name, s.Timing.StartToReady().Seconds(), s.Timing.Velero.Seconds(), s.Dir)
			started = append(started, s)
		}
		clusterA, clusterB = started[0], started[1]
		kubeconfig = filepath.Join(dir, "kubeconfig")
		if err := mergeKubeconfigs(kubeconfig, map[string]string{"a": clusterA.Kubeconfig, "b": clusterB.Kubeconfig}); err != nil {
			_ = stop(true)
			return nil, err
		}
		return stop, nil
	}))
}

// mergeKubeconfigs writes one kubeconfig with a context per cluster, as an
// operator's kubeconfig holds production and the DR cluster.
func mergeKubeconfigs(out string, in map[string]string) error {
	merged := clientcmdapi.NewConfig()
	for name, path := range in {
		cfg, err := clientcmd.LoadFromFile(path)
		if err != nil {
			return err
		}
		cur := cfg.Contexts[cfg.CurrentContext]
		if cur == nil {
			return fmt.Errorf("%s: no current context", path)
		}
		merged.Clusters[name] = cfg.Clusters[cur.Cluster]
		merged.AuthInfos[name] = cfg.AuthInfos[cur.AuthInfo]
		merged.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name}
	}
	merged.CurrentContext = "a"
	return clientcmd.WriteToFile(*merged, out)
}
