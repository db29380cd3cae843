// Package velerostandin plays a Velero server WITH its node-agent data mover
// in the sandbox, the one Velero path the real server (which the sandbox
// also runs, in namespace velero) cannot take on kwok: the data mover runs
// in node-agent pods, and kwok runs no containers. It serves namespace
// velero-datamover only, just enough for a move across CSI drivers to run
// against real velero.io/v1 objects:
//
//   - at start, the namespace, a BackupStorageLocation "default" with
//     status Available, which is how rebind tells that a server runs, and a
//     node-agent DaemonSet (kwok makes its pods Ready), which is how rebind
//     and Velero tell that the data mover runs;
//   - Backups (New -> InProgress -> Completed, PartiallyFailed or Failed):
//     for every claim of the included namespaces (label selector honoured)
//     it records the claim and PV manifests and copies the volume directory
//     of the storage agent (<storage root>/volumes/<handle>) into its own
//     store, the way Velero's data mover copies a snapshot to object storage;
//   - Restores (same phases): claims re-created in the mapped namespace, the
//     class changed per the change-storage-class ConfigMap, each bound to a
//     new CSI PV of the target class's driver whose directory is a copy of the
//     backed-up data. A PV is created directly, as Velero does for restored
//     volumes, so a move between drivers works where a CSI snapshot cannot.
//
// Failure injection: a claim annotated FailAnnotation makes the Backup of
// its namespace end Failed with the annotation's value as failureReason; a
// claim whose volume directory is missing makes it PartiallyFailed.
//
// Not played: object storage and backup sync (the store is a directory and
// lives only as long as the sandbox), any resource but claims and their PVs
// (a Backup records nothing else; a Restore of other resources restores
// nothing), plugins and item actions other than the storage-class mapping,
// hooks, schedules, TTL expiry and deletion (DeleteBackupRequest),
// existingResourcePolicy (an existing claim is skipped with a warning), the
// pod volume (fs) backup path, validation beyond a missing backup, and
// download requests (`velero backup logs` has nothing to show).
package velerostandin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	"go.uber.org/zap"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

const (
	// Namespace is where the stand-in serves; the real Velero server has
	// namespace velero.
	Namespace = "velero-datamover"
	// LocationName is the BackupStorageLocation it creates.
	LocationName = "default"
	// FailAnnotation on a claim makes the Backup that includes it fail.
	FailAnnotation = "velero-standin.rebind.test/fail-backup"
)

var (
	backupsGVR   = velerov1.SchemeGroupVersion.WithResource("backups")
	restoresGVR  = velerov1.SchemeGroupVersion.WithResource("restores")
	locationsGVR = velerov1.SchemeGroupVersion.WithResource("backupstoragelocations")
)

// Config wires the stand-in.
type Config struct {
	Kube kubernetes.Interface
	Dyn  dynamic.Interface
	// StorageRoot is the storage agent's root (volumes/<handle> below it).
	StorageRoot string
	// StoreDir is the stand-in's backup store.
	StoreDir string
	Log      *zap.Logger
}

// StandIn is the pretend Velero server.
type StandIn struct {
	cfg Config
	log *zap.Logger
}

// New checks the configuration.
func New(cfg Config) (*StandIn, error) {
	if cfg.Kube == nil || cfg.Dyn == nil || cfg.StorageRoot == "" || cfg.StoreDir == "" {
		return nil, errors.New("velerostandin: Kube, Dyn, StorageRoot and StoreDir are required")
	}
	if err := os.MkdirAll(cfg.StoreDir, 0o755); err != nil {
		return nil, err
	}
	log := cfg.Log
	if log == nil {
		log = zap.NewNop()
	}
	return &StandIn{cfg: cfg, log: log.Named("velero-standin")}, nil
}

// Setup creates the namespace and an Available BackupStorageLocation. It
// is separate from Run so that the sandbox is "Velero present" as soon as
// Start returns.
func (s *StandIn) Setup(ctx context.Context) error {
	_, err := s.cfg.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("velerostandin: namespace: %w", err)
	}
	bsl := &velerov1.BackupStorageLocation{
		TypeMeta:   metav1.TypeMeta{APIVersion: velerov1.SchemeGroupVersion.String(), Kind: "BackupStorageLocation"},
		ObjectMeta: metav1.ObjectMeta{Name: LocationName, Namespace: Namespace},
		Spec: velerov1.BackupStorageLocationSpec{Provider: "sandbox", Default: true,
			StorageType: velerov1.StorageType{ObjectStorage: &velerov1.ObjectStorageLocation{Bucket: "sandbox"}}},
	}
	u, err := toUnstructured(bsl)
	if err != nil {
		return err
	}
	res := s.cfg.Dyn.Resource(locationsGVR).Namespace(Namespace)
	got, err := res.Create(ctx, u, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		got, err = res.Get(ctx, LocationName, metav1.GetOptions{})
	}
	if err != nil {
		return fmt.Errorf("velerostandin: BackupStorageLocation: %w", err)
	}
	if err := s.setupNodeAgent(ctx); err != nil {
		return err
	}
	now := metav1.Now()
	_ = unstructured.SetNestedField(got.Object, string(velerov1.BackupStorageLocationPhaseAvailable), "status", "phase")
	_ = unstructured.SetNestedField(got.Object, now.UTC().Format(time.RFC3339), "status", "lastValidationTime")
	// Velero's BackupStorageLocation CRD has no status subresource
	// (subresources: {}), so status is written with the object itself.
	if _, err := res.Update(ctx, got, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("velerostandin: BackupStorageLocation status: %w", err)
	}
	return nil
}

// Run processes Backups and Restores until ctx ends.
func (s *StandIn) Run(ctx context.Context) error {
	f := dynamicinformer.NewFilteredDynamicSharedInformerFactory(s.cfg.Dyn, 0, Namespace, nil)
	q := workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[item](100*time.Millisecond, 5*time.Second),
		workqueue.TypedRateLimitingQueueConfig[item]{Name: "velero-standin"})
	defer q.ShutDown()
	for _, gvr := range []schema.GroupVersionResource{backupsGVR, restoresGVR} {
		gvr := gvr
		add := func(obj any) {
			if u, ok := obj.(*unstructured.Unstructured); ok {
				q.Add(item{gvr: gvr, name: u.GetName()})
			}
		}
		if _, err := f.ForResource(gvr).Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: add, UpdateFunc: func(_, n any) { add(n) },
		}); err != nil {
			return err
		}
	}
	f.Start(ctx.Done())
	defer f.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), f.ForResource(backupsGVR).Informer().HasSynced, f.ForResource(restoresGVR).Informer().HasSynced) {
		return ctx.Err()
	}
	go func() {
		<-ctx.Done()
		q.ShutDown()
	}()
	for {
		it, quit := q.Get()
		if quit {
			return ctx.Err()
		}
		var err error
		if it.gvr == backupsGVR {
			err = s.syncBackup(ctx, it.name)
		} else {
			err = s.syncRestore(ctx, it.name)
		}
		if err != nil && ctx.Err() == nil {
			s.log.Warn("retrying", zap.String("resource", it.gvr.Resource), zap.String("name", it.name), zap.Error(err))
			q.AddRateLimited(it)
		} else {
			q.Forget(it)
		}
		q.Done(it)
	}
}

type item struct {
	gvr  schema.GroupVersionResource
	name string
}

// record is one backed-up claim in the store's index.
type record struct {
	Namespace string                        `json:"namespace"`
	Claim     *corev1.PersistentVolumeClaim `json:"claim"`
	Volume    *corev1.PersistentVolume      `json:"volume"`
	DataDir   string                        `json:"dataDir"` // relative to the backup's directory
}

func (s *StandIn) backupDir(name string) string {
	return filepath.Join(s.cfg.StoreDir, "backups", name)
}

func toUnstructured(obj runtime.Object) (*unstructured.Unstructured, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, err
	}
	return &unstructured.Unstructured{Object: m}, nil
}

func fromUnstructured(u *unstructured.Unstructured, out any) error {
	return runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, out)
}

// copyDir copies a volume directory tree into a fresh dst through a
// temporary sibling, so a half-done copy never looks finished.
func copyDir(src, dst string) error {
	tmp := dst + ".partial"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(tmp, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case info.IsDir():
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
			return os.Chmod(target, info.Mode().Perm())
		case info.Mode().IsRegular():
			in, err := os.Open(path)
			if err != nil {
				return err
			}
			defer in.Close()
			out, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, info.Mode().Perm())
			if err != nil {
				return err
			}
			if _, err := io.Copy(out, in); err != nil {
				out.Close()
				return err
			}
			return out.Close()
		}
		return nil // a volume of Grafana data has only files and directories
	})
	if err != nil {
		_ = os.RemoveAll(tmp)
		return err
	}
	if err := os.RemoveAll(dst); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// setupNodeAgent creates the DaemonSet `velero install --use-node-agent`
// creates (name node-agent, pods labelled name=node-agent); its pods do
// nothing on kwok, the stand-in moves the data itself.
func (s *StandIn) setupNodeAgent(ctx context.Context) error {
	labels := map[string]string{"name": "node-agent", "role": "node-agent"}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "node-agent", Namespace: Namespace, Labels: map[string]string{"component": "velero"}},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "node-agent", Image: "velero/velero:v1.18.3",
					Command: []string{"/velero"}, Args: []string{"node-agent", "server"}}}},
			},
		},
	}
	_, err := s.cfg.Kube.AppsV1().DaemonSets(Namespace).Create(ctx, ds, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("velerostandin: node-agent DaemonSet: %w", err)
	}
	return nil
}
