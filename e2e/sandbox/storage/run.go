package storage

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/zapr"
	snapinformers "github.com/kubernetes-csi/external-snapshotter/client/v8/informers/externalversions"
	"go.uber.org/zap"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"
)

// Retries start fast and stay short: a sandbox test waits on them, and a claim
// restored from a snapshot that is not ready yet is the normal case there.
const (
	retryBase = 200 * time.Millisecond
	retryMax  = 10 * time.Second
)

func (a *Agent) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The provisioning library logs (and records events) through the context's
	// logger; without one its chatter goes to klog's stderr instead of our log.
	ctx = klog.NewContext(ctx, zapr.NewLogger(a.log.Named("provisioner")))

	core := informers.NewSharedInformerFactory(a.kube, 0)
	claims := core.Core().V1().PersistentVolumeClaims().Informer()
	volumes := core.Core().V1().PersistentVolumes().Informer()
	classes := core.Storage().V1().StorageClasses().Informer()
	if err := volumes.AddIndexers(cache.Indexers{pvHandleIndex: indexPVByHandle}); err != nil {
		return fmt.Errorf("storage: %w", err)
	}

	snaps := snapinformers.NewSharedInformerFactory(a.snap, 0)
	contentInformer := snaps.Snapshot().V1().VolumeSnapshotContents()
	sn := &snapshotter{
		a:        a,
		contents: contentInformer.Lister(),
		pvs:      volumes.GetIndexer(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](retryBase, retryMax),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "sandbox-snapshot-contents"}),
	}
	if _, err := contentInformer.Informer().AddEventHandler(sn.handlers()); err != nil {
		return fmt.Errorf("storage: %w", err)
	}

	// One provision controller serves both drivers; the class says which one a
	// claim wants. Leader election is off: there is exactly one agent.
	pc := controller.NewProvisionController(ctx, a.kube, DriverName,
		&provisioner{a: a, identity: newIdentity()},
		controller.AdditionalProvisionerNames([]string{OtherDriverName}),
		controller.LeaderElection(false),
		controller.AddFinalizer(true),
		controller.ClaimsInformer(claims),
		controller.VolumesInformer(volumes),
		controller.ClassesInformer(classes),
		controller.RateLimiter(workqueue.NewTypedItemExponentialFailureRateLimiter[string](retryBase, retryMax)),
		controller.CreateProvisionedPVInterval(time.Second),
		// Retry forever at the capped backoff instead of giving up after 15
		// failures: a restore waiting minutes for its snapshot must still
		// happen, and our informers do not resync to revive abandoned claims.
		controller.FailedProvisionThreshold(0),
		controller.FailedDeleteThreshold(0),
		controller.ResyncPeriod(0),
		controller.Threadiness(2),
	)

	core.Start(ctx.Done())
	snaps.Start(ctx.Done())
	defer core.Shutdown()
	defer snaps.Shutdown()
	for typ, ok := range core.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("storage: cache for %v did not sync: %w", typ, context.Cause(ctx))
		}
	}
	for typ, ok := range snaps.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("storage: cache for %v did not sync: %w", typ, context.Cause(ctx))
		}
	}

	var wg sync.WaitGroup
	pc.ControllerWaitGroup(&wg)
	wg.Go(func() { pc.Run(ctx) })
	for range 2 {
		wg.Go(func() { sn.worker(ctx) })
	}
	a.log.Info("storage agent running", zap.String("root", a.root), zap.Strings("drivers", []string{DriverName, OtherDriverName}))

	<-ctx.Done()
	sn.queue.ShutDown()
	wg.Wait()
	return nil
}
