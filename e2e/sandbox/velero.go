package sandbox

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/rebind-dev/rebind/e2e/sandbox/velerostandin"
	"github.com/rebind-dev/rebind/pkg/kube"
)

// What the sandbox's real Velero runs as, like a default `velero install`.
const (
	VeleroNamespace = "velero"
	VeleroLocation  = "default"
	VeleroBucket    = "velero"
	// DataMoverNamespace is where the Velero stand-in serves: the one
	// Velero path the real server cannot take on kwok is the node-agent
	// data mover (it runs in pods), so a move across CSI drivers is
	// tested against the stand-in there.
	DataMoverNamespace = velerostandin.Namespace
)

// The object store's credentials: gofakes3 accepts any, the AWS plugin
// insists on some.
const s3Key, s3Secret = "sandbox", "sandbox-secret"

// startVelero runs the real Velero server (and the data-mover stand-in in
// its own namespace) unless Options.NoVelero: Velero's CRDs are then still
// installed, which is the "installed but no server" case rebind must refuse.
func (s *Sandbox) startVelero(ctx context.Context, kube kubernetes.Interface) error {
	if s.opts.NoVelero {
		return nil
	}
	begin := time.Now()
	dyn, err := dynamic.NewForConfig(s.agentRC)
	if err != nil {
		return err
	}
	setupCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := s.startRealVelero(setupCtx, kube, dyn); err != nil {
		return err
	}
	v, err := velerostandin.New(velerostandin.Config{Kube: kube, Dyn: dyn, StorageRoot: s.StorageRoot(), StoreDir: s.VeleroStore(), Log: s.logger})
	if err != nil {
		return err
	}
	if err := v.Setup(setupCtx); err != nil {
		return err
	}
	s.goAddon(ctx, "velero stand-in", v.Run)
	if err := s.waitLocationAvailable(setupCtx, dyn); err != nil {
		return err
	}
	s.Timing.Velero = time.Since(begin)
	return nil
}

// VeleroStore is the Velero stand-in's backup store.
func (s *Sandbox) VeleroStore() string { return filepath.Join(s.Dir, "velero-datamover") }

// ObjectStore is the S3 endpoint of the sandbox's Velero location.
func (s *Sandbox) ObjectStore() string { return s.objectStore }

func (s *Sandbox) startRealVelero(ctx context.Context, kc kubernetes.Interface, dyn dynamic.Interface) error {
	s.objectStore = s.opts.ObjectStore
	if s.objectStore == "" {
		url, err := s.startObjectStore(ctx)
		if err != nil {
			return err
		}
		s.objectStore = url
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: VeleroNamespace}}
	if _, err := kc.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("velero namespace: %w", err)
	}
	// Velero's pod-volume restore action reads the server image from its
	// Deployment; with replicas 0 nothing runs it, the process below does.
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "velero", Namespace: VeleroNamespace, Labels: map[string]string{"component": "velero"}},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](0),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"deploy": "velero"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"deploy": "velero"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "velero", Image: "velero/velero:" + VeleroVersion}}},
			},
		},
	}
	if _, err := kc.AppsV1().Deployments(VeleroNamespace).Create(ctx, dep, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("velero deployment: %w", err)
	}
	bsl := &velerov1.BackupStorageLocation{
		TypeMeta:   metav1.TypeMeta{APIVersion: velerov1.SchemeGroupVersion.String(), Kind: "BackupStorageLocation"},
		ObjectMeta: metav1.ObjectMeta{Name: VeleroLocation, Namespace: VeleroNamespace},
		Spec: velerov1.BackupStorageLocationSpec{
			Provider: "aws", Default: true,
			StorageType: velerov1.StorageType{ObjectStorage: &velerov1.ObjectStorageLocation{Bucket: VeleroBucket}},
			Config:      map[string]string{"region": "us-east-1", "s3ForcePathStyle": "true", "s3Url": s.objectStore},
		},
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(bsl)
	if err != nil {
		return err
	}
	if _, err := dyn.Resource(velerov1.SchemeGroupVersion.WithResource("backupstoragelocations")).Namespace(VeleroNamespace).
		Create(ctx, &unstructured.Unstructured{Object: m}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("velero BackupStorageLocation: %w", err)
	}
	// Velero finds plugins by scanning a directory for executables: the
	// cache directory also holds the server itself, so the plugin gets a
	// directory of its own (a symlink: Velero follows it).
	plugins := filepath.Join(s.Dir, "velero-plugins")
	if err := os.MkdirAll(plugins, 0o755); err != nil {
		return err
	}
	if err := os.Symlink(s.bins["velero-plugin-for-aws"], filepath.Join(plugins, "velero-plugin-for-aws")); err != nil && !os.IsExist(err) {
		return err
	}
	return s.start("velero", s.bins["velero"], []string{
		"server",
		"--kubeconfig=" + s.veleroKubeconfig,
		"--namespace=" + VeleroNamespace,
		"--plugin-dir=" + plugins,
		"--features=EnableCSI",
		"--metrics-address=127.0.0.1:0", "--profiler-address=127.0.0.1:0",
		// Defaults are a minute: a location must be Available, and a
		// backup taken in another cluster visible, within a test's time.
		"--store-validation-frequency=10s",
		"--backup-sync-period=5s",
		"--resource-timeout=30s",
	}, []string{"AWS_ACCESS_KEY_ID=" + s3Key, "AWS_SECRET_ACCESS_KEY=" + s3Secret, "AWS_REGION=us-east-1", "HOME=" + s.Dir})
}

// startObjectStore runs the sandbox's own S3 store as a child.
func (s *Sandbox) startObjectStore(ctx context.Context) (string, error) {
	addrFile := filepath.Join(s.Dir, "s3server.addr")
	if err := s.start("s3server", s.bins["s3server"], []string{"--bucket=" + VeleroBucket, "--address-file=" + addrFile}, nil); err != nil {
		return "", err
	}
	var addr string
	err := s.poll(ctx, "object store address", func(context.Context) error {
		b, err := os.ReadFile(addrFile)
		if err != nil {
			return err
		}
		addr = strings.TrimSpace(string(b))
		return nil
	})
	return "http://" + addr, err
}

// waitLocationAvailable waits for the server's first validation of its
// location: from then on Backups and Restores are processed.
func (s *Sandbox) waitLocationAvailable(ctx context.Context, dyn dynamic.Interface) error {
	res := dyn.Resource(velerov1.SchemeGroupVersion.WithResource("backupstoragelocations")).Namespace(VeleroNamespace)
	_, err := kube.Until(ctx, 45*time.Second, "Velero location "+VeleroNamespace+"/"+VeleroLocation+" to be Available", kube.NamedLW(res, VeleroLocation),
		func(u *unstructured.Unstructured, exists bool) (bool, error) {
			if err := s.deadChild(); err != nil {
				return false, err
			}
			if !exists {
				return false, nil
			}
			phase, _, _ := unstructured.NestedString(u.Object, "status", "phase")
			return phase == string(velerov1.BackupStorageLocationPhaseAvailable), nil
		}, func(u *unstructured.Unstructured) string {
			if u == nil {
				return "absent"
			}
			phase, _, _ := unstructured.NestedString(u.Object, "status", "phase")
			msg, _, _ := unstructured.NestedString(u.Object, "status", "message")
			return strings.TrimSpace(phase + " " + msg)
		})
	if derr := s.deadChild(); err != nil && derr != nil {
		return derr
	}
	return err
}

// ObjectStore is an S3 store of its own, for sandboxes that share backups
// (Options.ObjectStore): clusters of one cloud account see one bucket, so
// a backup taken in one sandbox is synced into the other's Velero, and it
// outlives a sandbox that is stopped (a lost cluster).
type ObjectStore struct {
	URL   string
	child *child
}

// StartObjectStore runs an S3 store (bucket velero) with logs in dir.
func StartObjectStore(ctx context.Context, dir string) (*ObjectStore, error) {
	bins, err := EnsureBinaries(ctx, nil)
	if err != nil {
		return nil, err
	}
	addrFile := filepath.Join(dir, "s3server.addr")
	_ = os.Remove(addrFile)
	c, err := startChild(dir, "s3server", bins["s3server"], []string{"--bucket=" + VeleroBucket, "--address-file=" + addrFile}, nil)
	if err != nil {
		return nil, err
	}
	// The store writes its address once it listens; a file appears
	// without an event to watch on every filesystem, hence the short poll.
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if b, err := os.ReadFile(addrFile); err == nil {
			return &ObjectStore{URL: "http://" + strings.TrimSpace(string(b)), child: c}, nil
		}
		if c.exited() {
			return nil, fmt.Errorf("sandbox: object store exited (%v): %s", c.err, c.tail(10))
		}
		select {
		case <-ctx.Done():
			c.stop(time.Second)
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// Stop ends the store; its content is gone with it.
func (o *ObjectStore) Stop() { o.child.stop(2 * time.Second) }
