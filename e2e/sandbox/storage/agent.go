// Package storage is the sandbox storage agent. It plays, with plain directories,
// the parts of a CSI deployment that a cluster without kubelets or real disks
// lacks: the driver and external-provisioner (dynamic provisioning, restore from
// a VolumeSnapshot, clone from a claim, deletion) and the csi-snapshotter sidecar
// (cutting and deleting snapshots for the real common snapshot controller).
//
// Layout under Config.Root:
//
//	volumes/<volumeHandle>/          one directory per PersistentVolume
//	snapshots/<snapshotHandle>/      one directory per snapshot
//	snapshots/<snapshotHandle>.json  what the snapshot was cut from (size, time)
//
// Config.SnapshotRoot moves the snapshots elsewhere: agents of several
// sandboxes given one SnapshotRoot see each other's snapshots, as clusters
// of one cloud account see one snapshot store (a disk snapshot taken in
// one region's cluster restores in another's), while each keeps its own
// volumes. Handles are "snapshot-<content UID>", unique across clusters.
package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sync"

	snapclientset "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
)

const (
	// DriverName is the CSI driver behind StorageClasses standard and premium and
	// VolumeSnapshotClass hostpath-snapclass.
	DriverName = "hostpath.csi.rebind.test"
	// OtherDriverName is a second driver (StorageClass other-driver) with no
	// snapshot class, so that cross-driver restores can be shown to fail.
	OtherDriverName = "copy.csi.rebind.test"
)

// Config configures an Agent.
type Config struct {
	// Root holds the volume and snapshot directories; created if missing.
	Root string
	// SnapshotRoot holds the snapshot directories instead of
	// Root/snapshots when set (shared by several agents, see the package
	// comment).
	SnapshotRoot string
	Kube         kubernetes.Interface
	Snap         snapclientset.Interface
	Log          *zap.Logger
}

// Agent provisions volumes and cuts snapshots for both sandbox drivers.
type Agent struct {
	root      string
	snapshots string // directory of the snapshots
	kube      kubernetes.Interface
	snap      snapclientset.Interface
	log       *zap.Logger

	runOnce sync.Once
}

// New checks the configuration and prepares the directory layout. Nothing
// watches the cluster until Run.
func New(cfg Config) (*Agent, error) {
	if cfg.Root == "" {
		return nil, errors.New("storage: Root is required")
	}
	if cfg.Kube == nil || cfg.Snap == nil {
		return nil, errors.New("storage: Kube and Snap clients are required")
	}
	root, err := filepath.Abs(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("storage: root: %w", err)
	}
	snapshots := snapshotsDir(root)
	if cfg.SnapshotRoot != "" {
		if snapshots, err = filepath.Abs(cfg.SnapshotRoot); err != nil {
			return nil, fmt.Errorf("storage: snapshot root: %w", err)
		}
	}
	for _, d := range []string{volumesDir(root), snapshots} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("storage: %w", err)
		}
	}
	log := cfg.Log
	if log == nil {
		log = zap.NewNop()
	}
	return &Agent{root: root, snapshots: snapshots, kube: cfg.Kube, snap: cfg.Snap, log: log.Named("storage")}, nil
}

// Run provisions, deletes and snapshots until ctx is done. It may be called once.
func (a *Agent) Run(ctx context.Context) error {
	err := errors.New("storage: Run called twice")
	a.runOnce.Do(func() { err = a.run(ctx) })
	return err
}

// VolumeDir returns the directory backing pv when pv is one of the agent's CSI
// volumes and its directory exists. Pre-provisioned PVs naming an existing
// directory count too: that is how a test hands a prepared volume to a workload.
func (a *Agent) VolumeDir(pv *corev1.PersistentVolume) (string, bool) {
	if pv == nil || pv.Spec.CSI == nil || !isOurDriver(pv.Spec.CSI.Driver) {
		return "", false
	}
	dir, err := a.volumePath(pv.Spec.CSI.VolumeHandle)
	if err != nil {
		return "", false
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return "", false
	}
	return dir, true
}

func isOurDriver(name string) bool { return name == DriverName || name == OtherDriverName }

func volumesDir(root string) string   { return filepath.Join(root, "volumes") }
func snapshotsDir(root string) string { return filepath.Join(root, "snapshots") }

// Handles come from API objects anyone can write; only a single plain path
// element may turn into a path, so a handle can never reach outside the root.
var handlePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$`)

func checkHandle(h string) error {
	if !handlePattern.MatchString(h) {
		return fmt.Errorf("invalid handle %q", h)
	}
	return nil
}

func (a *Agent) volumePath(handle string) (string, error) {
	if err := checkHandle(handle); err != nil {
		return "", err
	}
	return filepath.Join(volumesDir(a.root), handle), nil
}

func (a *Agent) snapshotPath(handle string) (string, error) {
	if err := checkHandle(handle); err != nil {
		return "", err
	}
	return filepath.Join(a.snapshots, handle), nil
}
