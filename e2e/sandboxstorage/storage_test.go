// Package sandboxstorage proves the sandbox's storage agent and Grafana runner
// against the real control plane: the real PV binder, StatefulSet controller
// and common snapshot controller must all accept what the agent does.
package sandboxstorage

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/utils/ptr"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/grafanastandin"
	"github.com/rebind-dev/rebind/e2e/sandbox"
)

var sb *sandbox.Sandbox

func TestMain(m *testing.M) { os.Exit(e2eutil.RunMain(m, &sb, sandbox.Options{})) }

func claims(ns string) lister[*corev1.PersistentVolumeClaimList] {
	c := sb.Kube.CoreV1().PersistentVolumeClaims(ns)
	return lister[*corev1.PersistentVolumeClaimList]{list: c.List, watch: c.Watch}
}

func waitBound(ctx context.Context, t *testing.T, ns, name string) *corev1.PersistentVolumeClaim {
	t.Helper()
	return until(ctx, t, "claim "+name+" Bound", claims(ns).lw(byName(name)), &corev1.PersistentVolumeClaim{}, time.Minute,
		func(c *corev1.PersistentVolumeClaim) bool { return c.Status.Phase == corev1.ClaimBound })
}

// volumeDirOf returns the directory of the PV bound to a claim, checking on
// the way that the PV is the agent's CSI volume of the expected driver.
func volumeDirOf(ctx context.Context, t *testing.T, c *corev1.PersistentVolumeClaim, driver string) string {
	t.Helper()
	pv, err := sb.Kube.CoreV1().PersistentVolumes().Get(ctx, c.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != driver {
		t.Fatalf("PV %s of claim %s: CSI source %+v, want driver %s", pv.Name, c.Name, pv.Spec.CSI, driver)
	}
	if pv.Spec.ClaimRef == nil || pv.Spec.ClaimRef.UID != c.UID {
		t.Fatalf("PV %s is not bound to claim %s: %+v", pv.Name, c.Name, pv.Spec.ClaimRef)
	}
	dir := filepath.Join(sb.StorageRoot(), "volumes", pv.Spec.CSI.VolumeHandle)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		t.Fatalf("PV %s has no directory: %v", pv.Name, err)
	}
	return dir
}

func newClaim(name, class, size string, source *corev1.TypedObjectReference) *corev1.PersistentVolumeClaim {
	c := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:     corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)}},
			DataSourceRef: source,
		},
	}
	if class != "" {
		c.Spec.StorageClassName = &class
	}
	return c
}

func snapshotSource(name string) *corev1.TypedObjectReference {
	return &corev1.TypedObjectReference{APIGroup: ptr.To(snapv1.GroupName), Kind: "VolumeSnapshot", Name: name}
}

func statefulSet(name string, replicas int32, labels map[string]string, claimTemplate string, container corev1.Container) *appsv1.StatefulSet {
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.StatefulSetSpec{
			Replicas:    &replicas,
			ServiceName: name,
			Selector:    &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{container}},
			},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{*newClaim(claimTemplate, "", "1Gi", nil)},
		},
	}
}

func waitStatefulSetReady(ctx context.Context, t *testing.T, ns, name string, replicas int32) {
	t.Helper()
	c := sb.Kube.AppsV1().StatefulSets(ns)
	lw := lister[*appsv1.StatefulSetList]{list: c.List, watch: c.Watch}.lw(byName(name))
	until(ctx, t, "statefulset "+name+" ready", lw, &appsv1.StatefulSet{}, 2*time.Minute, func(s *appsv1.StatefulSet) bool {
		return s.Status.ObservedGeneration >= s.Generation && s.Status.ReadyReplicas == replicas && s.Status.Replicas == replicas
	})
}

func TestStatefulSetSnapshotRestoreAndDrivers(t *testing.T) {
	e2eutil.NeedSandbox(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	ns := sb.NewNamespace(t)

	// A StatefulSet's claims are provisioned by the agent and bound by the
	// real PV binder; the scheduler only places pods whose claims are bound.
	labels := map[string]string{"app": "web"}
	sts := statefulSet("web", 2, labels, "data", corev1.Container{Name: "web", Image: "example.invalid/web:1"})
	if _, err := sb.Kube.AppsV1().StatefulSets(ns).Create(ctx, sts, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitStatefulSetReady(ctx, t, ns, "web", 2)
	c0 := waitBound(ctx, t, ns, "data-web-0")
	c1 := waitBound(ctx, t, ns, "data-web-1")
	dir0 := volumeDirOf(ctx, t, c0, sandbox.DriverName)
	if dir1 := volumeDirOf(ctx, t, c1, sandbox.DriverName); dir1 == dir0 {
		t.Fatalf("both replicas share directory %s", dir0)
	}
	if err := os.MkdirAll(filepath.Join(dir0, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{"hello.txt": "from web-0\n", "sub/nested.txt": "nested\n"} {
		if err := os.WriteFile(filepath.Join(dir0, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// Snapshot web-0's claim through the real snapshot controller.
	snaps := sb.Snap.SnapshotV1().VolumeSnapshots(ns)
	vs := &snapv1.VolumeSnapshot{
		ObjectMeta: metav1.ObjectMeta{Name: "web-0-snap"},
		Spec: snapv1.VolumeSnapshotSpec{
			VolumeSnapshotClassName: ptr.To(sandbox.SnapshotClassName),
			Source:                  snapv1.VolumeSnapshotSource{PersistentVolumeClaimName: ptr.To("data-web-0")},
		},
	}
	if _, err := snaps.Create(ctx, vs, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	snapLW := lister[*snapv1.VolumeSnapshotList]{list: snaps.List, watch: snaps.Watch}.lw(byName(vs.Name))
	vs = until(ctx, t, "snapshot ready", snapLW, &snapv1.VolumeSnapshot{}, time.Minute, func(s *snapv1.VolumeSnapshot) bool {
		return s.Status != nil && s.Status.ReadyToUse != nil && *s.Status.ReadyToUse
	})
	if vs.Status.RestoreSize == nil || vs.Status.RestoreSize.Cmp(resource.MustParse("1Gi")) != 0 {
		t.Fatalf("restoreSize = %v, want 1Gi (the source PV's capacity)", vs.Status.RestoreSize)
	}
	content, err := sb.Snap.SnapshotV1().VolumeSnapshotContents().Get(ctx, *vs.Status.BoundVolumeSnapshotContentName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	snapshotDir := filepath.Join(sb.StorageRoot(), "snapshots", *content.Status.SnapshotHandle)
	if _, err := os.Stat(filepath.Join(snapshotDir, "hello.txt")); err != nil {
		t.Fatalf("snapshot directory lacks the data: %v", err)
	}
	// Written after the cut: must not show up in the restore.
	if err := os.WriteFile(filepath.Join(dir0, "late.txt"), []byte("after"), 0o644); err != nil {
		t.Fatal(err)
	}

	pvcs := sb.Kube.CoreV1().PersistentVolumeClaims(ns)
	for _, c := range []*corev1.PersistentVolumeClaim{
		newClaim("restored", sandbox.StorageClassPremium, "1Gi", snapshotSource(vs.Name)),
		newClaim("fresh-premium", sandbox.StorageClassPremium, "1Gi", nil),
		newClaim("fresh-other", sandbox.StorageClassOther, "1Gi", nil),
		newClaim("cross-driver", sandbox.StorageClassOther, "1Gi", snapshotSource(vs.Name)),
	} {
		if _, err := pvcs.Create(ctx, c, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	restoredDir := volumeDirOf(ctx, t, waitBound(ctx, t, ns, "restored"), sandbox.DriverName)
	for name, want := range map[string]string{"hello.txt": "from web-0\n", "sub/nested.txt": "nested\n"} {
		if got, err := os.ReadFile(filepath.Join(restoredDir, name)); err != nil || string(got) != want {
			t.Errorf("restored %s = %q, %v; want %q", name, got, err, want)
		}
	}
	if _, err := os.Stat(filepath.Join(restoredDir, "late.txt")); !os.IsNotExist(err) {
		t.Errorf("restore holds a file written after the snapshot: %v", err)
	}
	volumeDirOf(ctx, t, waitBound(ctx, t, ns, "fresh-premium"), sandbox.DriverName)
	volumeDirOf(ctx, t, waitBound(ctx, t, ns, "fresh-other"), sandbox.OtherDriverName)

	// A hostpath snapshot cannot be restored by the other driver: the claim
	// gets a ProvisioningFailed event naming the driver and stays Pending.
	events := sb.Kube.CoreV1().Events(ns)
	evLW := lister[*corev1.EventList]{list: events.List, watch: events.Watch}.lw(fields.AndSelectors(
		fields.OneTermEqualSelector("involvedObject.name", "cross-driver"),
		fields.OneTermEqualSelector("reason", "ProvisioningFailed")).String())
	ev := until(ctx, t, "refusal event on cross-driver", evLW, &corev1.Event{}, time.Minute, func(e *corev1.Event) bool {
		return strings.Contains(e.Message, sandbox.DriverName)
	})
	t.Logf("refused as expected: %s", ev.Message)
	cross, err := pvcs.Get(ctx, "cross-driver", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cross.Status.Phase != corev1.ClaimPending || cross.Spec.VolumeName != "" {
		t.Fatalf("cross-driver claim: phase %s volume %q, want Pending and unbound", cross.Status.Phase, cross.Spec.VolumeName)
	}

	// The snapshot controller keeps a snapshot that a Pending claim is being
	// restored from; the refused claim goes first, then the snapshot.
	if err := pvcs.Delete(ctx, "cross-driver", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	untilGone(ctx, t, "claim cross-driver", claims(ns).lw(byName("cross-driver")), &corev1.PersistentVolumeClaim{}, time.Minute)
	if err := snaps.Delete(ctx, vs.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	untilGone(ctx, t, "snapshot "+vs.Name, snapLW, &snapv1.VolumeSnapshot{}, time.Minute)
	contents := sb.Snap.SnapshotV1().VolumeSnapshotContents()
	untilGone(ctx, t, "content "+content.Name,
		lister[*snapv1.VolumeSnapshotContentList]{list: contents.List, watch: contents.Watch}.lw(byName(content.Name)),
		&snapv1.VolumeSnapshotContent{}, time.Minute)
	if _, err := os.Stat(snapshotDir); !os.IsNotExist(err) {
		t.Fatalf("snapshot directory %s survived deletion: %v", snapshotDir, err)
	}

	// Reclaim policy Delete: deleting a claim removes its PV and directory.
	freshOther := waitBound(ctx, t, ns, "fresh-other")
	otherDir := volumeDirOf(ctx, t, freshOther, sandbox.OtherDriverName)
	if err := pvcs.Delete(ctx, "fresh-other", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	pvs := sb.Kube.CoreV1().PersistentVolumes()
	untilGone(ctx, t, "PV "+freshOther.Spec.VolumeName,
		lister[*corev1.PersistentVolumeList]{list: pvs.List, watch: pvs.Watch}.lw(byName(freshOther.Spec.VolumeName)),
		&corev1.PersistentVolume{}, time.Minute)
	if _, err := os.Stat(otherDir); !os.IsNotExist(err) {
		t.Fatalf("volume directory %s survived its PV: %v", otherDir, err)
	}
}

func TestGrafanaRunnerServesBoundVolume(t *testing.T) {
	e2eutil.NeedSandbox(t)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	ns := sb.NewNamespace(t)
	const user, password = "admin", "s3cret-from-secret"

	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "grafana"},
		Data:       map[string][]byte{"admin-user": []byte(user), "admin-password": []byte(password)},
	}
	if _, err := sb.Kube.CoreV1().Secrets(ns).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// Pre-create the claim the StatefulSet will adopt and put a dashboard in
	// its volume, so that what the pod's URL serves can only come from there.
	pvcs := sb.Kube.CoreV1().PersistentVolumeClaims(ns)
	if _, err := pvcs.Create(ctx, newClaim("storage-grafana-0", "", "1Gi", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dir := volumeDirOf(ctx, t, waitBound(ctx, t, ns, "storage-grafana-0"), sandbox.DriverName)
	seedDashboard(t, dir, user, password, "seeded-uid", "Seeded in the volume")

	url := sb.PodURL(ns, "grafana-0")
	if url == "" {
		t.Fatal("no URL for grafana-0")
	}
	waitHTTP(ctx, t, url+"/api/health", "", "", http.StatusBadGateway)

	secretEnv := func(name, key string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "grafana"}, Key: key}}}
	}
	labels := map[string]string{"app.kubernetes.io/name": "grafana", "app.kubernetes.io/instance": "grafana"}
	sts := statefulSet("grafana", 1, labels, "storage", corev1.Container{
		Name: "grafana", Image: "docker.io/grafana/grafana:11.4.1",
		Env:          []corev1.EnvVar{secretEnv("GF_SECURITY_ADMIN_USER", "admin-user"), secretEnv("GF_SECURITY_ADMIN_PASSWORD", "admin-password")},
		VolumeMounts: []corev1.VolumeMount{{Name: "storage", MountPath: "/var/lib/grafana"}},
	})
	sets := sb.Kube.AppsV1().StatefulSets(ns)
	if _, err := sets.Create(ctx, sts, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitStatefulSetReady(ctx, t, ns, "grafana", 1)

	waitHTTP(ctx, t, url+"/api/health", "", "", http.StatusOK)
	body := waitHTTP(ctx, t, url+"/api/dashboards/uid/seeded-uid", user, password, http.StatusOK)
	var got struct {
		Dashboard struct{ Title string } `json:"dashboard"`
	}
	if err := json.Unmarshal(body, &got); err != nil || got.Dashboard.Title != "Seeded in the volume" {
		t.Fatalf("dashboard from the volume: %s (%v)", body, err)
	}
	if sb.PodURL(ns, "grafana-0") != url {
		t.Fatal("PodURL changed")
	}
	// The real API server's pod proxy reaches the same Grafana at the pod's
	// IP, through the sandbox's pod network.
	viaPodProxy(ctx, t, ns, "grafana-0", "api/health", http.StatusOK)

	// A re-created pod keeps the URL and is served from the same claim.
	pods := sb.Kube.CoreV1().Pods(ns)
	old, err := pods.Get(ctx, "grafana-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := pods.Delete(ctx, "grafana-0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	podLW := lister[*corev1.PodList]{list: pods.List, watch: pods.Watch}.lw(byName("grafana-0"))
	until(ctx, t, "re-created grafana-0 Ready", podLW, &corev1.Pod{}, 2*time.Minute, func(p *corev1.Pod) bool {
		if p.UID == old.UID || p.DeletionTimestamp != nil {
			return false
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				return true
			}
		}
		return false
	})
	if sb.PodURL(ns, "grafana-0") != url {
		t.Fatal("PodURL changed across pod re-creation")
	}
	waitHTTP(ctx, t, url+"/api/dashboards/uid/seeded-uid", user, password, http.StatusOK)
	viaPodProxy(ctx, t, ns, "grafana-0", "api/health", http.StatusOK)

	// Scaled to zero: no pod, so no backend.
	scale, err := sets.GetScale(ctx, "grafana", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	scale.Spec.Replicas = 0
	if _, err := sets.UpdateScale(ctx, "grafana", scale, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	untilGone(ctx, t, "pod grafana-0", podLW, &corev1.Pod{}, 2*time.Minute)
	waitHTTP(ctx, t, url+"/api/health", "", "", http.StatusBadGateway)
	viaPodProxy(ctx, t, ns, "grafana-0", "api/health", http.StatusNotFound)
}

// viaPodProxy asks the API server's pod proxy for path on the pod's port
// 3000 until the answer has status want.
func viaPodProxy(ctx context.Context, t *testing.T, ns, pod, path string, want int) {
	t.Helper()
	var got int
	var body []byte
	for ctx.Err() == nil {
		res := sb.Kube.CoreV1().RESTClient().Get().Namespace(ns).Resource("pods").Name(pod + ":3000").SubResource("proxy").Suffix(path).Do(ctx)
		body, _ = res.Raw()
		res.StatusCode(&got)
		if got == want {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	t.Fatalf("pod proxy %s/%s %s: last status %d, want %d: %s", ns, pod, path, got, want, body)
}

// seedDashboard writes a dashboard into a volume the way a Grafana that ran
// there earlier would have left it.
func seedDashboard(t *testing.T, dir, user, password, uid, title string) {
	t.Helper()
	s, err := grafanastandin.Open(dir, grafanastandin.Options{AdminUser: user, AdminPassword: password})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}()
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	payload, _ := json.Marshal(map[string]any{"dashboard": map[string]any{"uid": uid, "title": title}, "overwrite": true})
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/api/dashboards/db", bytes.NewReader(payload))
	req.Header.Set("Content-Type", "application/json")
	req.SetBasicAuth(user, password)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("seeding dashboard: HTTP %d", resp.StatusCode)
	}
}
