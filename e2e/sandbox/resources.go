package sandbox

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	velerocrds "github.com/vmware-tanzu/velero/config/crd/v1/crds"
	velerov2crds "github.com/vmware-tanzu/velero/config/crd/v2alpha1/crds"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/rebind-dev/rebind/pkg/kube"
)

// Names of the storage objects every sandbox has; see docs/ARCHITECTURE.md.
const (
	DriverName          = "hostpath.csi.rebind.test"
	OtherDriverName     = "copy.csi.rebind.test"
	StorageClassDefault = "standard"
	StorageClassPremium = "premium"
	StorageClassOther   = "other-driver"
	SnapshotClassName   = "hostpath-snapclass"
)

const snapshotClientModule = "github.com/kubernetes-csi/external-snapshotter/client/v8"

// NodeName is the name of the i-th kwok node.
func NodeName(i int) string { return fmt.Sprintf("kwok-node-%d", i) }

func (s *Sandbox) bootstrap(ctx context.Context) error {
	if err := s.installCRDs(ctx); err != nil {
		return err
	}
	if err := s.createNodes(ctx); err != nil {
		return err
	}
	if err := s.createStorageClasses(ctx); err != nil {
		return err
	}
	return s.waitNodesSchedulable(ctx)
}

// snapshotCRDs reads the VolumeSnapshot CRDs from the module the tool itself
// builds against, so the schema always matches the generated client.
func snapshotCRDs(ctx context.Context) ([]*apiextv1.CustomResourceDefinition, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, goTool(), "list", "-m", "-f", "{{.Dir}}", snapshotClientModule)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOWORK=off")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("locate %s: %w: %s", snapshotClientModule, err, stderr.String())
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" {
		return nil, fmt.Errorf("module %s is not downloaded (run go mod download)", snapshotClientModule)
	}
	files, err := filepath.Glob(filepath.Join(dir, "config", "crd", "snapshot.storage.k8s.io_*.yaml"))
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("no snapshot CRDs under %s", dir)
	}
	var crds []*apiextv1.CustomResourceDefinition
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		crd := &apiextv1.CustomResourceDefinition{}
		if err := yaml.UnmarshalStrict(b, crd); err != nil {
			// The upstream files carry only a CRD each; strictness guards
			// against silently dropping fields after an upgrade.
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		crds = append(crds, crd)
	}
	return crds, nil
}

func (s *Sandbox) installCRDs(ctx context.Context) error {
	crds, err := snapshotCRDs(ctx)
	if err != nil {
		return err
	}
	// The server refuses to start without every CRD it watches, the
	// data mover's v2alpha1 DataUpload and DataDownload included.
	for _, c := range append(velerocrds.CRDs, velerov2crds.CRDs...) {
		crds = append(crds, c.DeepCopy())
	}
	want := map[string]bool{}
	for _, crd := range crds {
		want[crd.Name] = true
		_, err := s.APIExt.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, crd, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create CRD %s: %w", crd.Name, err)
		}
	}
	crdClient := s.APIExt.ApiextensionsV1().CustomResourceDefinitions()
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return crdClient.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return crdClient.Watch(ctx, o)
		},
	}
	established := map[string]bool{}
	_, err = watchtools.UntilWithSync(ctx, lw, &apiextv1.CustomResourceDefinition{}, nil, func(ev watch.Event) (bool, error) {
		crd, ok := ev.Object.(*apiextv1.CustomResourceDefinition)
		if !ok || !want[crd.Name] {
			return false, nil
		}
		for _, c := range crd.Status.Conditions {
			if c.Type == apiextv1.Established && c.Status == apiextv1.ConditionTrue {
				established[crd.Name] = true
			}
		}
		return len(established) == len(want), nil
	})
	if err != nil {
		return fmt.Errorf("CRDs not established (%d of %d): %w", len(established), len(want), err)
	}
	return nil
}

func (s *Sandbox) createNodes(ctx context.Context) error {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("32"),
		corev1.ResourceMemory: resource.MustParse("256Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	for i := range s.opts.Nodes {
		name := NodeName(i)
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{
				Name: name,
				// kwok's own conventions, so kwokctl-style tooling recognises
				// the nodes; --manage-all-nodes manages them regardless.
				Annotations: map[string]string{"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
				Labels: map[string]string{
					"type":                   "kwok",
					"kubernetes.io/hostname": name,
					"kubernetes.io/os":       "linux",
					"kubernetes.io/arch":     "amd64",
					"kubernetes.io/role":     "agent",
				},
			},
			Spec: corev1.NodeSpec{PodCIDR: fmt.Sprintf("10.244.%d.0/24", i+1), PodCIDRs: []string{fmt.Sprintf("10.244.%d.0/24", i+1)}},
			Status: corev1.NodeStatus{
				Capacity:    capacity,
				Allocatable: capacity,
				Addresses: []corev1.NodeAddress{
					{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("10.96.0.%d", i+10)},
					{Type: corev1.NodeHostName, Address: name},
				},
			},
		}
		if _, err := s.Kube.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create node %s: %w", name, err)
		}
	}
	return nil
}

func (s *Sandbox) createStorageClasses(ctx context.Context) error {
	immediate := storagev1.VolumeBindingImmediate
	del := corev1.PersistentVolumeReclaimDelete
	class := func(name, driver string, isDefault bool) *storagev1.StorageClass {
		sc := &storagev1.StorageClass{
			ObjectMeta:           metav1.ObjectMeta{Name: name},
			Provisioner:          driver,
			ReclaimPolicy:        &del,
			VolumeBindingMode:    &immediate,
			AllowVolumeExpansion: ptr.To(true),
		}
		if isDefault {
			sc.Annotations = map[string]string{"storageclass.kubernetes.io/is-default-class": "true"}
		}
		return sc
	}
	for _, sc := range []*storagev1.StorageClass{
		class(StorageClassDefault, DriverName, true),
		class(StorageClassPremium, DriverName, false),
		class(StorageClassOther, OtherDriverName, false),
	} {
		if _, err := s.Kube.StorageV1().StorageClasses().Create(ctx, sc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create StorageClass %s: %w", sc.Name, err)
		}
	}
	vsc := &snapv1.VolumeSnapshotClass{
		ObjectMeta:     metav1.ObjectMeta{Name: SnapshotClassName, Annotations: map[string]string{"snapshot.storage.kubernetes.io/is-default-class": "true"}},
		Driver:         DriverName,
		DeletionPolicy: snapv1.VolumeSnapshotContentDelete,
	}
	if _, err := s.Snap.SnapshotV1().VolumeSnapshotClasses().Create(ctx, vsc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create VolumeSnapshotClass: %w", err)
	}
	return nil
}

// waitNodesSchedulable waits until kwok has made every node Ready and the
// node-lifecycle controller has lifted the not-ready taints; before that the
// scheduler would leave test pods Pending.
func (s *Sandbox) waitNodesSchedulable(ctx context.Context) error {
	nodes := s.Kube.CoreV1().Nodes()
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return nodes.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return nodes.Watch(ctx, o)
		},
	}
	ready := map[string]bool{}
	_, err := watchtools.UntilWithSync(ctx, lw, &corev1.Node{}, nil, func(ev watch.Event) (bool, error) {
		n, ok := ev.Object.(*corev1.Node)
		if !ok {
			return false, nil
		}
		ready[n.Name] = nodeSchedulable(n)
		count := 0
		for _, r := range ready {
			if r {
				count++
			}
		}
		return count >= s.opts.Nodes, nil
	})
	if err != nil {
		return fmt.Errorf("nodes not schedulable: %w", err)
	}
	return nil
}

func nodeSchedulable(n *corev1.Node) bool {
	if n.Spec.Unschedulable {
		return false
	}
	for _, t := range n.Spec.Taints {
		if t.Effect != corev1.TaintEffectPreferNoSchedule && strings.HasPrefix(t.Key, "node.kubernetes.io/") {
			return false
		}
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func (s *Sandbox) waitDefaultServiceAccount(ctx context.Context) error {
	sas := s.Kube.CoreV1().ServiceAccounts(metav1.NamespaceDefault)
	lw := kube.NamedLW(sas, "default")
	_, err := watchtools.UntilWithSync(ctx, lw, &corev1.ServiceAccount{}, nil, func(ev watch.Event) (bool, error) {
		return ev.Type == watch.Added || ev.Type == watch.Modified, nil
	})
	if err != nil {
		if dead := s.deadChild(); dead != nil {
			return dead
		}
		return fmt.Errorf("sandbox: ServiceAccount default/default: %w", err)
	}
	return nil
}
