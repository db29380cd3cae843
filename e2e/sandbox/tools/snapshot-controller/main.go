// Command snapshot-controller runs external-snapshotter's common controller
// (the part that binds VolumeSnapshots to VolumeSnapshotContents) against the
// e2e sandbox. Upstream's cmd cannot be installed from the module proxy because
// of its replace directives, so this is a minimal main: no leader election,
// no metrics endpoint, no volume group snapshots (the sandbox installs only the
// snapshot.storage.k8s.io CRDs).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	snapclientset "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	snapscheme "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned/scheme"
	snapinformers "github.com/kubernetes-csi/external-snapshotter/client/v8/informers/externalversions"
	controller "github.com/kubernetes-csi/external-snapshotter/v8/pkg/common-controller"
	"github.com/kubernetes-csi/external-snapshotter/v8/pkg/metrics"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	coreinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
)

func main() {
	kubeconfig := flag.String("kubeconfig", "", "path to the kubeconfig of the cluster")
	workers := flag.Int("worker-threads", 4, "number of workers per queue")
	resync := flag.Duration("resync-period", 15*time.Minute, "informer resync interval")
	klog.InitFlags(flag.CommandLine)
	flag.Parse()

	if err := run(*kubeconfig, *workers, *resync); err != nil {
		fmt.Fprintln(os.Stderr, "snapshot-controller:", err)
		os.Exit(1)
	}
}

func run(kubeconfig string, workers int, resync time.Duration) error {
	if kubeconfig == "" {
		return fmt.Errorf("--kubeconfig is required")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	// The sandbox is local and small: client-side throttling only slows tests.
	cfg.QPS, cfg.Burst = 50, 100

	coreCfg := rest.CopyConfig(cfg)
	coreCfg.ContentType = runtime.ContentTypeProtobuf
	kube, err := kubernetes.NewForConfig(coreCfg)
	if err != nil {
		return err
	}
	snap, err := snapclientset.NewForConfig(cfg)
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// The controller's informers fail noisily forever if the CRDs are missing;
	// the sandbox installs them right after the apiserver is ready, so wait.
	if err := waitForCRDs(ctx, snap); err != nil {
		return err
	}

	// Events about snapshot objects need their types in the shared scheme.
	if err := snapscheme.AddToScheme(scheme.Scheme); err != nil {
		return err
	}

	snapFactory := snapinformers.NewSharedInformerFactory(snap, resync)
	coreFactory := coreinformers.NewSharedInformerFactory(kube, resync)
	limiter := func() workqueue.TypedRateLimiter[string] {
		return workqueue.NewTypedItemExponentialFailureRateLimiter[string](100*time.Millisecond, 30*time.Second)
	}
	ctrl := controller.NewCSISnapshotCommonController(
		snap, kube,
		snapFactory.Snapshot().V1().VolumeSnapshots(),
		snapFactory.Snapshot().V1().VolumeSnapshotContents(),
		snapFactory.Snapshot().V1().VolumeSnapshotClasses(),
		nil, nil, nil, // no volume group snapshots
		coreFactory.Core().V1().PersistentVolumeClaims(),
		coreFactory.Core().V1().PersistentVolumes(),
		nil, // no distributed snapshotting, so no node informer
		metrics.NewMetricsManager(),
		resync,
		limiter(), limiter(), limiter(), limiter(),
		false, // distributed snapshotting
		true,  // prevent volume mode conversion, as upstream defaults
		false, // volume group snapshots
	)

	stopCh := ctx.Done()
	snapFactory.Start(stopCh)
	coreFactory.Start(stopCh)
	// Run needs a WaitGroup when the ReleaseLeaderElectionOnExit gate is on
	// (its default), and returns once the workers are started or stopCh closes.
	var wg sync.WaitGroup
	go ctrl.Run(workers, stopCh, &wg)
	<-stopCh
	wg.Wait()
	snapFactory.Shutdown()
	coreFactory.Shutdown()
	return nil
}

func waitForCRDs(ctx context.Context, snap snapclientset.Interface) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		opts := metav1.ListOptions{Limit: 1}
		_, err := snap.SnapshotV1().VolumeSnapshots("").List(ctx, opts)
		if err == nil {
			_, err = snap.SnapshotV1().VolumeSnapshotContents().List(ctx, opts)
		}
		if err == nil {
			_, err = snap.SnapshotV1().VolumeSnapshotClasses().List(ctx, opts)
		}
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("snapshot CRDs not served: %w", err)
		case <-tick.C:
		}
	}
}
