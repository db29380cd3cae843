package sandbox_test

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	watchtools "k8s.io/client-go/tools/watch"
	"k8s.io/utils/ptr"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/sandbox"
	"github.com/rebind-dev/rebind/pkg/kube"
)

var sb *sandbox.Sandbox

func TestMain(m *testing.M) { os.Exit(e2eutil.RunMain(m, &sb, sandbox.Options{})) }

func TestStatefulSetWithoutVolumesGoesReady(t *testing.T) {
	e2eutil.NeedSandbox(t)
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	ns := sb.NewNamespace(t)
	labels := map[string]string{"app": "web"}
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.StatefulSetSpec{
			Replicas:    ptr.To[int32](1),
			ServiceName: "web",
			Selector:    &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "example.invalid/web:1"}}},
			},
		},
	}
	if _, err := sb.Kube.AppsV1().StatefulSets(ns).Create(ctx, sts, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sets := sb.Kube.AppsV1().StatefulSets(ns)
	lw := kube.NamedLW(sets, "web")
	_, err := watchtools.UntilWithSync(ctx, lw, &appsv1.StatefulSet{}, nil, func(ev watch.Event) (bool, error) {
		s, ok := ev.Object.(*appsv1.StatefulSet)
		return ok && s.Status.ObservedGeneration >= s.Generation && s.Status.ReadyReplicas == 1, nil
	})
	if err != nil {
		t.Fatalf("StatefulSet not ready: %v", err)
	}
	pod, err := sb.Kube.CoreV1().Pods(ns).Get(ctx, "web-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pod.Spec.NodeName == "" || pod.Status.PodIP == "" || pod.Status.Phase != corev1.PodRunning {
		t.Fatalf("pod web-0: node %q, IP %q, phase %s", pod.Spec.NodeName, pod.Status.PodIP, pod.Status.Phase)
	}
	t.Logf("web-0 on %s with IP %s", pod.Spec.NodeName, pod.Status.PodIP)

	// kwok's delete stage must finish what the StatefulSet controller starts,
	// or scale-down and migrations would hang on Terminating pods.
	if _, err := sets.Patch(ctx, "web", types.MergePatchType, []byte(`{"spec":{"replicas":0}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	waitPodGone(ctx, t, sb.Kube, ns, "web-0")
}

func waitPodGone(ctx context.Context, t *testing.T, k kubernetes.Interface, ns, name string) {
	t.Helper()
	pods := k.CoreV1().Pods(ns)
	lw := kube.NamedLW(pods, name)
	_, err := watchtools.UntilWithSync(ctx, lw, &corev1.Pod{}, func(store cache.Store) (bool, error) {
		return len(store.List()) == 0, nil
	}, func(ev watch.Event) (bool, error) {
		return ev.Type == watch.Deleted, nil
	})
	if err != nil {
		t.Fatalf("pod %s/%s not deleted: %v", ns, name, err)
	}
}

func TestRBACIsEnforced(t *testing.T) {
	e2eutil.NeedSandbox(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	ns := sb.NewNamespace(t)
	kc, err := sb.ServiceAccountKubeconfig(ctx, ns, "migrator")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatal(err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("list pods without a role: want Forbidden, got %v", err)
	}

	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "pod-reader"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list"}}},
	}
	if _, err := sb.Kube.RbacV1().Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "migrator-reads-pods"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "pod-reader"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "migrator", Namespace: ns}},
	}
	if _, err := sb.Kube.RbacV1().RoleBindings(ns).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The RBAC authorizer reads roles from an informer: allow it to catch up
	// by retrying on the apiserver's answer, which is what changes.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		_, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err == nil {
			break
		}
		if !apierrors.IsForbidden(err) {
			t.Fatal(err)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("still forbidden after the RoleBinding: %v", err)
		case <-tick.C:
		}
	}
	if _, err := client.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("list secrets with only pod-reader: want Forbidden, got %v", err)
	}
}

func TestCRDsAndStorageObjects(t *testing.T) {
	e2eutil.NeedSandbox(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	ns := sb.NewNamespace(t)

	vs := &snapv1.VolumeSnapshot{
		ObjectMeta: metav1.ObjectMeta{Name: "snap"},
		Spec: snapv1.VolumeSnapshotSpec{
			Source:                  snapv1.VolumeSnapshotSource{PersistentVolumeClaimName: ptr.To("data")},
			VolumeSnapshotClassName: ptr.To(sandbox.SnapshotClassName),
		},
	}
	if _, err := sb.Snap.SnapshotV1().VolumeSnapshots(ns).Create(ctx, vs, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create VolumeSnapshot: %v", err)
	}

	dyn, err := dynamic.NewForConfig(sb.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	backup := &velerov1.Backup{
		TypeMeta:   metav1.TypeMeta{APIVersion: velerov1.SchemeGroupVersion.String(), Kind: "Backup"},
		ObjectMeta: metav1.ObjectMeta{Name: "nightly", Namespace: ns},
		Spec:       velerov1.BackupSpec{IncludedNamespaces: []string{ns}},
	}
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(backup)
	if err != nil {
		t.Fatal(err)
	}
	backups := dyn.Resource(schema.GroupVersionResource{Group: "velero.io", Version: "v1", Resource: "backups"}).Namespace(ns)
	if _, err := backups.Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create velero Backup: %v", err)
	}

	classes, err := sb.Kube.StorageV1().StorageClasses().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		sandbox.StorageClassDefault: sandbox.DriverName,
		sandbox.StorageClassPremium: sandbox.DriverName,
		sandbox.StorageClassOther:   sandbox.OtherDriverName,
	}
	for _, c := range classes.Items {
		if drv, ok := want[c.Name]; ok && c.Provisioner == drv {
			delete(want, c.Name)
		}
	}
	if len(want) != 0 {
		t.Fatalf("missing StorageClasses: %v", want)
	}
	if _, err := sb.Snap.SnapshotV1().VolumeSnapshotClasses().Get(ctx, sandbox.SnapshotClassName, metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestStorageAgentIsWired(t *testing.T) {
	e2eutil.NeedSandbox(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	ns := sb.NewNamespace(t)
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "data"},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
	claims := sb.Kube.CoreV1().PersistentVolumeClaims(ns)
	if _, err := claims.Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	lw := kube.NamedLW(claims, "data")
	ev, err := watchtools.UntilWithSync(ctx, lw, &corev1.PersistentVolumeClaim{}, nil, func(ev watch.Event) (bool, error) {
		c, ok := ev.Object.(*corev1.PersistentVolumeClaim)
		return ok && c.Status.Phase == corev1.ClaimBound, nil
	})
	if err != nil {
		t.Fatalf("claim on the default class not bound (storage agent not running?): %v", err)
	}
	pv, err := sb.Kube.CoreV1().PersistentVolumes().Get(ctx, ev.Object.(*corev1.PersistentVolumeClaim).Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != sandbox.DriverName {
		t.Fatalf("PV %s is not a %s volume: %+v", pv.Name, sandbox.DriverName, pv.Spec.PersistentVolumeSource)
	}
	dir := filepath.Join(sb.StorageRoot(), "volumes", pv.Spec.CSI.VolumeHandle)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		t.Fatalf("volume directory %s: %v", dir, err)
	}
	if u := sb.PodURL(ns, "grafana-0"); !strings.HasPrefix(u, "http://127.0.0.1:") {
		t.Fatalf("PodURL = %q, want a loopback URL", u)
	}
}

func TestFailedStartLeavesNoProcess(t *testing.T) {
	e2eutil.NeedSandbox(t)
	before := childPIDs(t)
	// Too short for the apiserver: Start fails midway with etcd (and maybe
	// more) already running, which it must clean up.
	s, err := sandbox.Start(t.Context(), sandbox.Options{Dir: t.TempDir(), ReadyTimeout: 1500 * time.Millisecond, Progress: io.Discard})
	if err == nil {
		s.Stop()
		t.Skip("the sandbox started within 1.5 s; nothing to check")
	}
	t.Logf("expected failure: %.200s", err)
	for pid := range childPIDs(t) {
		if !before[pid] {
			t.Errorf("process %d survived a failed Start", pid)
		}
	}
}

// childPIDs lists this test process's live children.
func childPIDs(t *testing.T) map[int]bool {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	self := strconv.Itoa(os.Getpid())
	out := map[int]bool{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// Fields after the parenthesised command: state, ppid, ...
		rest := string(b[strings.LastIndexByte(string(b), ')')+2:])
		f := strings.Fields(rest)
		if len(f) > 1 && f[1] == self && f[0] != "Z" {
			out[pid] = true
		}
	}
	return out
}

func BenchmarkWarmStart(b *testing.B) {
	e2eutil.NeedSandbox(b)
	for b.Loop() {
		s, err := sandbox.Start(b.Context(), sandbox.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(s.Timing.StartToReady().Seconds(), "start-s")
		// Part of start-s: the real Velero server until its location was
		// validated Available.
		b.ReportMetric(s.Timing.Velero.Seconds(), "velero-s")
		b.ReportMetric(float64(s.PeakRSS())/(1<<20), "peak-rss-MiB")
		if err := s.Stop(); err != nil {
			b.Fatal(err)
		}
	}
}

// TestComponentRestart stops and starts components in place, as the fault
// tests do mid-run: only that component's process changes, the API answers
// again with the same data, and stopping a stopped or starting a running
// component is refused.
func TestComponentRestart(t *testing.T) {
	e2eutil.NeedSandbox(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	ns := sb.NewNamespace(t)
	for _, name := range []string{sandbox.ComponentAPIServer, sandbox.ComponentSnapshotController} {
		before := sb.PIDs()
		if err := sb.RestartComponent(ctx, name, time.Second); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		after := sb.PIDs()
		changed := 0
		for i := range before {
			if before[i] != after[i] {
				changed++
			}
		}
		if changed != 1 || len(after) != len(before) {
			t.Errorf("%s: %d processes changed (%v -> %v), want 1", name, changed, before, after)
		}
		if _, err := sb.Kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err != nil {
			t.Errorf("after restarting %s the namespace made before is not readable: %v", name, err)
		}
	}
	if err := sb.StartComponent(ctx, sandbox.ComponentSnapshotController); err == nil {
		t.Error("starting a running component was not refused")
	}
	if err := sb.StopComponent(sandbox.ComponentSnapshotController, time.Second); err != nil {
		t.Fatal(err)
	}
	if err := sb.StopComponent(sandbox.ComponentSnapshotController, time.Second); err == nil {
		t.Error("stopping a stopped component was not refused")
	}
	if err := sb.StartComponent(ctx, sandbox.ComponentSnapshotController); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkVeleroBuild reports the build of the Velero component (server,
// AWS plugin, S3 store) as recorded when it filled the cache. With
// REBIND_BENCH_COLD_VELERO=1 it builds it again from nothing (an empty Go
// build cache; modules from the module cache) and reports that: tens of
// minutes on 2 cores, so only on request.
func BenchmarkVeleroBuild(b *testing.B) {
	e2eutil.NeedSandbox(b)
	cold := os.Getenv("REBIND_BENCH_COLD_VELERO") == "1"
	for b.Loop() {
		if !cold {
			sec, ok := sandbox.BuildSeconds("velero")
			if !ok {
				b.Skip("the cache holds no recorded Velero build; run an e2e test or `make sandbox` first")
			}
			b.ReportMetric(sec, "cached-build-s")
			continue
		}
		root, err := sandbox.RepoRoot()
		if err != nil {
			b.Fatal(err)
		}
		out := b.TempDir()
		start := time.Now()
		cmd := exec.CommandContext(b.Context(), "go", "build", "-trimpath", "-o", out+string(filepath.Separator),
			".", "github.com/vmware-tanzu/velero-plugin-for-aws/velero-plugin-for-aws", "./s3server")
		cmd.Dir = filepath.Join(root, "e2e", "sandbox", "tools", "velero")
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly", "GOCACHE="+filepath.Join(out, "gocache"))
		if msg, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%v\n%s", err, msg)
		}
		b.ReportMetric(time.Since(start).Seconds(), "cold-build-s")
	}
}
