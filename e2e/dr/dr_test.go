package dr_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/e2e/sandbox"
	"github.com/rebind-dev/rebind/pkg/app"
	"github.com/rebind-dev/rebind/pkg/dr"
	"github.com/rebind-dev/rebind/pkg/grafana"
	"github.com/rebind-dev/rebind/pkg/inventory"
	"github.com/rebind-dev/rebind/pkg/journal"
	"github.com/rebind-dev/rebind/pkg/kube"
	"github.com/rebind-dev/rebind/pkg/report"
	"github.com/rebind-dev/rebind/pkg/velero"
	"github.com/rebind-dev/rebind/pkg/verify"
)

const releaseNS = "monitoring"

// TestDisasterRecovery is one story, in order, because cluster A is lost
// half-way: a drill from A into B (which must leave nothing in B), a
// backup in A, A stopped, then in B the restore into another class
// verified from the carried baseline, the refusal of a namespace that holds
// a Grafana, and a damaged restore caught.
func TestDisasterRecovery(t *testing.T) {
	e2eutil.NeedSandbox(t)
	bin := e2eutil.BuildRebind(t)
	if _, err := clusterA.Kube.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: releaseNS}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	g := e2eutil.DeployGrafana(t, clusterA, fixtures.Release{Name: "grafana", Namespace: releaseNS, Replicas: 2, StorageClass: sandbox.StorageClassDefault}, 5)
	ctx := g.Ctx
	var seeded []*inventory.Inventory
	for i := range 2 {
		seeded = append(seeded, g.Inventory(i))
	}
	rebind := func(t *testing.T, context string, args ...string) e2eutil.CLIResult {
		t.Helper()
		begin := time.Now()
		r := e2eutil.RunRebind(t, bin, kubeconfig, append([]string{"--context", context}, args...)...)
		t.Logf("rebind --context %s %s: exit %d in %s\n%s", context, strings.Join(args, " "), r.Code, time.Since(begin).Round(100*time.Millisecond), r.Stderr)
		return r
	}
	pickup := []string{"--velero-pickup-timeout", "30s", "--grafana-access", "pod-proxy"}

	t.Run("drill refused before anything is backed up", func(t *testing.T) {
		before := leftovers(t, clusterB, "")
		r := rebind(t, "a", append([]string{"drill", "-n", releaseNS, "--release", "grafana", "--to-context", "b",
			"--restore-storage-class", sandbox.StorageClassOther}, pickup...)...)
		if r.Code != 2 || !strings.Contains(r.Stderr, "is provisioned by "+sandbox.OtherDriverName) || !strings.Contains(r.Stderr, "nothing was changed") {
			t.Fatalf("exit %d, want 2 naming the driver:\n%s", r.Code, r.Stderr)
		}
		va := velero.New(g.Clients, sandbox.VeleroNamespace, nil)
		// Only the release's: TestDRManifestsAsServiceAccount, run
		// before, backs up a namespace of its own in A.
		list, err := va.Dyn.Resource(velero.BackupsGVR).Namespace(va.Namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range list.Items {
			if nss, _, _ := unstructured.NestedStringSlice(b.Object, "spec", "includedNamespaces"); slices.Contains(nss, releaseNS) {
				t.Errorf("a refused drill backed up: Backup %s", b.GetName())
			}
		}
		if after := leftovers(t, clusterB, ""); after != before {
			t.Errorf("a refused drill changed B:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	})

	t.Run("drill into B cleans up there", func(t *testing.T) {
		beforeA := workloadState(t, clusterA, releaseNS)
		before := leftovers(t, clusterB, "")
		r := rebind(t, "a", append([]string{"drill", "-n", releaseNS, "--release", "grafana", "--to-context", "b",
			"--restore-storage-class", sandbox.StorageClassPremium, "--sync-timeout", "2m", "--cleanup-timeout", "2m", "-o", "json"}, pickup...)...)
		if r.Code != 0 {
			t.Fatalf("drill exit %d\n%s", r.Code, r.Stdout)
		}
		rep := r.Report(t)
		assertVerdicts(t, rep, g.Dashboards)
		for _, v := range rep.VolumesAfter {
			if v.StorageClass != sandbox.StorageClassPremium {
				t.Errorf("drill restored %s into class %q, want %s", v.Claim, v.StorageClass, sandbox.StorageClassPremium)
			}
		}
		if len(rep.Leftovers) > 0 {
			t.Errorf("leftovers: %v", rep.Leftovers)
		}
		if after := leftovers(t, clusterB, ""); after != before {
			t.Errorf("the drill left objects in B:\nbefore:\n%s\nafter:\n%s", before, after)
		}
		// Production keeps only the Backup: no baseline ConfigMap, the
		// workload and volumes as they were.
		if cms, _ := clusterA.Kube.CoreV1().ConfigMaps(releaseNS).List(ctx, metav1.ListOptions{LabelSelector: dr.LabelBaseline}); len(cms.Items) > 0 {
			t.Errorf("baseline ConfigMap left in A: %s", cms.Items[0].Name)
		}
		if after := workloadState(t, clusterA, releaseNS); after != beforeA {
			t.Errorf("the drill changed production:\nbefore:\n%s\nafter:\n%s", beforeA, after)
		}
	})

	t.Run("backup refused while a migration holds the workload's Lease", func(t *testing.T) {
		held, err := journal.TakeLease(ctx, clusterA.Kube, journal.LeaseOptions{Namespace: releaseNS, Name: journal.LeaseName("grafana"),
			Holder: "migrate-test-holder", Duration: 3 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = held.Release(context.WithoutCancel(ctx)) }()
		r := rebind(t, "a", append([]string{"backup", "-n", releaseNS, "--release", "grafana", "--backup-name", "dr-held"}, pickup...)...)
		if r.Code != 2 || !strings.Contains(r.Stderr, "Lease "+releaseNS+"/"+journal.LeaseName("grafana")) || !strings.Contains(r.Stderr, "migrate-test-holder") {
			t.Fatalf("exit %d, want 2 naming the Lease and its holder:\n%s", r.Code, r.Stderr)
		}
		va := velero.New(g.Clients, sandbox.VeleroNamespace, nil)
		if _, err := va.GetBackup(ctx, "dr-held"); err == nil {
			t.Errorf("a refused backup created Velero Backup dr-held")
		}
		if cms, _ := clusterA.Kube.CoreV1().ConfigMaps(releaseNS).List(ctx, metav1.ListOptions{LabelSelector: dr.LabelBaseline}); len(cms.Items) > 0 {
			t.Errorf("a refused backup wrote baseline ConfigMap %s", cms.Items[0].Name)
		}
	})

	t.Run("backup in A", func(t *testing.T) {
		r := rebind(t, "a", append([]string{"backup", "-n", releaseNS, "--release", "grafana", "--backup-name", "dr-1", "-o", "json"}, pickup...)...)
		if r.Code != 0 {
			t.Fatalf("backup exit %d\n%s", r.Code, r.Stdout)
		}
		if rep := r.Report(t); rep.VeleroBackup != "dr-1" || rep.Outcome != report.Succeeded {
			t.Fatalf("report: %+v", rep)
		}
	})

	// A is lost. What survives: the S3 store and the snapshot store.
	clusterALost = true
	if err := clusterA.Stop(); err != nil {
		t.Fatal(err)
	}
	waitBackupInB(t, ctx, "dr-1")

	t.Run("restore in B into another class, verified from the carried baseline", func(t *testing.T) {
		r := rebind(t, "b", append([]string{"restore", "--from-backup", "dr-1", "--to-storage-class", sandbox.StorageClassPremium, "-o", "json"}, pickup...)...)
		if r.Code != 0 {
			t.Fatalf("restore exit %d\n%s", r.Code, r.Stdout)
		}
		rep := r.Report(t)
		assertVerdicts(t, rep, g.Dashboards)
		for i, v := range rep.VolumesAfter {
			pv, err := clusterB.Kube.CoreV1().PersistentVolumes().Get(ctx, v.PV, metav1.GetOptions{})
			if err != nil || pv.Spec.StorageClassName != sandbox.StorageClassPremium || pv.Spec.CSI == nil || pv.Spec.CSI.Driver != sandbox.DriverName {
				t.Errorf("ordinal %d: PV %s %v, want a %s volume of %s", i, v.PV, err, sandbox.StorageClassPremium, sandbox.DriverName)
			}
		}
		// What B serves, read independently of rebind, is what A served.
		for i := range 2 {
			e2eutil.AssertSameDashboards(t, seeded[i], inventoryIn(t, clusterB, releaseNS, g, i))
		}
		vb := veleroB(t)
		if mapped, err := vb.MappedClass(ctx, sandbox.StorageClassDefault); err != nil || mapped != "" {
			t.Errorf("storage-class mapping left in B: %q %v", mapped, err)
		}
		// The same command again resumes: it finds its Restore, changes
		// nothing and verifies again.
		if r := rebind(t, "b", append([]string{"restore", "--from-backup", "dr-1", "--to-storage-class", sandbox.StorageClassPremium}, pickup...)...); r.Code != 0 {
			t.Errorf("re-run exit %d:\n%s", r.Code, r.Stdout)
		}
	})

	t.Run("a namespace holding a Grafana is refused", func(t *testing.T) {
		const occupied = "occupied"
		if _, err := clusterB.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: occupied}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		other := fixtures.Release{Name: "team-grafana", Namespace: occupied, Replicas: 1, Password: "other"}
		if err := other.Deploy(ctx, clusterB.Kube); err != nil {
			t.Fatal(err)
		}
		// Settled before the fingerprint: its claim binds on its own.
		if _, _, err := fixtures.ClaimVolumeDir(ctx, clusterB.Kube, clusterB.StorageRoot(), occupied, other.Claim(0), time.Minute); err != nil {
			t.Fatal(err)
		}
		before := leftovers(t, clusterB, occupied)
		r := rebind(t, "b", append([]string{"restore", "--from-backup", "dr-1", "--into-namespace", occupied, "--to-storage-class", sandbox.StorageClassPremium}, pickup...)...)
		if r.Code != 2 {
			t.Fatalf("exit %d, want 2\n%s", r.Code, r.Stdout)
		}
		for _, want := range []string{"namespace occupied", "StatefulSet occupied/team-grafana", "--into-namespace", "--allow-existing-grafana", "nothing was changed"} {
			if !strings.Contains(r.Stderr, want) {
				t.Errorf("stderr lacks %q:\n%s", want, r.Stderr)
			}
		}
		if after := leftovers(t, clusterB, occupied); after != before {
			t.Errorf("a refused restore changed B:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	})

	t.Run("a damaged backup is caught by the binary", func(t *testing.T) {
		// B is production now: back it up, then damage ordinal 0's snapshot
		// in the snapshot store, as a torn snapshot would be.
		if r := rebind(t, "b", append([]string{"backup", "-n", releaseNS, "--release", "grafana", "--backup-name", "dr-2"}, pickup...)...); r.Code != 0 {
			t.Fatalf("backup in B: exit %d\n%s", r.Code, r.Stdout)
		}
		pv := boundPV(t, clusterB, releaseNS, g.Rel.Claim(0))
		snap := snapshotOf(t, clusterB.SnapshotRoot(), pv.Spec.CSI.VolumeHandle)
		if err := e2eutil.DeleteSomeDashboards(filepath.Join(snap, "grafana.db"), 2); err != nil {
			t.Fatal(err)
		}
		r := rebind(t, "b", append([]string{"restore", "--from-backup", "dr-2", "--into-namespace", "damaged-backup", "--to-storage-class", sandbox.StorageClassDefault, "-o", "json"}, pickup...)...)
		if r.Code != 3 {
			t.Fatalf("exit %d, want 3\n%s", r.Code, r.Stdout)
		}
		rep := r.Report(t)
		if rep.Outcome != report.Failed || len(rep.Verification) != 2 || rep.Verification[0].Lost != 2 || !rep.Verification[1].OK {
			t.Errorf("outcome %s, verdicts %+v", rep.Outcome, rep.Verification)
		}
		if !strings.Contains(r.Stderr, "verification of the restored StatefulSet damaged-backup/grafana failed") {
			t.Errorf("stderr: %s", r.Stderr)
		}
	})

	t.Run("a damaged restore is caught", func(t *testing.T) {
		// Through the package entry point: its hook damages ordinal 0's
		// restored volume once the workload is Ready, before the check,
		// as a bad snapshot would.
		const into = "damaged"
		clients, err := kube.New(clusterB.RESTConfig)
		if err != nil {
			t.Fatal(err)
		}
		env := &dr.Env{Clients: clients, Out: e2eutil.TestWriter{T: t}, AfterRestore: func(ctx context.Context, ns string) error {
			dir, _, err := fixtures.ClaimVolumeDir(ctx, clusterB.Kube, clusterB.StorageRoot(), ns, g.Rel.Claim(0), time.Minute)
			if err != nil {
				return err
			}
			return e2eutil.DeleteSomeDashboards(filepath.Join(dir, "grafana.db"), 3)
		}}
		rep, err := env.Restore(ctx, dr.RestoreOptions{FromBackup: "dr-1", IntoNamespace: into, ToClass: sandbox.StorageClassPremium,
			Pickup: 30 * time.Second, Restore: 2 * time.Minute, Wait: 2 * time.Minute, Verify: time.Minute,
			CheckerFor: func(ns string) (app.Checker, error) { return checkerIn(clusterB, ns, g), nil }})
		var failed *dr.VerificationFailedError
		if !errors.As(err, &failed) {
			t.Fatalf("want a failed verification, got %v", err)
		}
		if rep.Outcome != report.Failed || len(rep.Verification) != 2 || rep.Verification[0].OK || rep.Verification[0].Lost != 3 || !rep.Verification[1].OK {
			t.Errorf("verdicts %+v", rep.Verification)
		}
	})
}

func assertVerdicts(t *testing.T, rep *report.Report, dashboards []int) {
	t.Helper()
	if rep.Outcome != report.Succeeded || len(rep.Verification) != len(dashboards) {
		t.Fatalf("outcome %s, %d verdicts: %s", rep.Outcome, len(rep.Verification), rep.Error)
	}
	for i, v := range rep.Verification {
		if !v.OK || v.Checked != dashboards[i] || v.Lost != 0 {
			t.Errorf("ordinal %d: %+v, want %d dashboards identical", i, v, dashboards[i])
		}
	}
}

// checkerIn reaches the restored pods of ns in sb with the release's
// credentials (the restored Secret holds the same password).
func checkerIn(sb *sandbox.Sandbox, ns string, g *e2eutil.Grafana) *verify.Grafana {
	return &verify.Grafana{PollInterval: 100 * time.Millisecond, ClientFor: func(pod string) (*grafana.Client, error) {
		return grafana.New(grafana.Options{URL: sb.PodURL(ns, pod), Credentials: grafana.Credentials{User: "admin", Password: g.Rel.Password},
			OrgTokens: g.OrgTokens, MaxAttempts: 2, Timeout: 10 * time.Second})
	}}
}

func inventoryIn(t *testing.T, sb *sandbox.Sandbox, ns string, g *e2eutil.Grafana, i int) *inventory.Inventory {
	t.Helper()
	c, err := checkerIn(sb, ns, g).ClientFor(g.Rel.Pod(i))
	if err != nil {
		t.Fatal(err)
	}
	inv, err := inventory.FromGrafana(g.Ctx, c, inventory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

func veleroB(t *testing.T) *velero.Client {
	t.Helper()
	clients, err := kube.New(clusterB.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	return velero.New(clients, sandbox.VeleroNamespace, nil)
}

// waitBackupInB waits for B's backup sync to bring the Backup in.
func waitBackupInB(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	v := veleroB(t)
	_, err := kube.Until(ctx, time.Minute, "Backup "+name+" synced into B", kube.NamedLW(v.Dyn.Resource(velero.BackupsGVR).Namespace(v.Namespace), name),
		func(u *unstructured.Unstructured, exists bool) (bool, error) {
			if !exists {
				return false, nil
			}
			phase, _, _ := unstructured.NestedString(u.Object, "status", "phase")
			return phase == string(velerov1.BackupPhaseCompleted), nil
		}, nil)
	if err != nil {
		t.Fatal(err)
	}
}

// workloadState fingerprints a release namespace: workloads, claims and
// their PVs, ConfigMaps.
func workloadState(t *testing.T, sb *sandbox.Sandbox, ns string) string {
	t.Helper()
	ctx := context.Background()
	var lines []string
	sts, err := sb.Kube.AppsV1().StatefulSets(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sts.Items {
		lines = append(lines, stsLine(s))
	}
	claims, err := sb.Kube.CoreV1().PersistentVolumeClaims(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range claims.Items {
		lines = append(lines, "pvc "+c.Name+" -> "+c.Spec.VolumeName+" uid="+string(c.UID))
		if pv, err := sb.Kube.CoreV1().PersistentVolumes().Get(ctx, c.Spec.VolumeName, metav1.GetOptions{}); err == nil {
			lines = append(lines, pvLine(*pv))
		}
	}
	cms, err := sb.Kube.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cms.Items {
		lines = append(lines, "configmap "+c.Name)
	}
	return e2eutil.Fingerprint(lines)
}

func stsLine(s appsv1.StatefulSet) string {
	return fmt.Sprintf("sts %s uid=%s gen=%d replicas=%d", s.Name, s.UID, s.Generation, ptr.Deref(s.Spec.Replicas, 1))
}

func pvLine(pv corev1.PersistentVolume) string {
	claim := "-"
	if r := pv.Spec.ClaimRef; r != nil {
		claim = r.Namespace + "/" + r.Name + "/" + string(r.UID)
	}
	return fmt.Sprintf("pv %s class=%s policy=%s claim=%s", pv.Name, pv.Spec.StorageClassName, pv.Spec.PersistentVolumeReclaimPolicy, claim)
}

// leftovers lists what a drill or a refused restore could leave in a
// cluster: namespaces, PVs, VolumeSnapshotContents, Velero Restores, the
// storage-class mapping, and (with ns) that namespace's objects.
func leftovers(t *testing.T, sb *sandbox.Sandbox, ns string) string {
	t.Helper()
	ctx := context.Background()
	var lines []string
	nss, err := sb.Kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nss.Items {
		lines = append(lines, "ns "+n.Name)
	}
	pvs, err := sb.Kube.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, pv := range pvs.Items {
		lines = append(lines, pvLine(pv))
	}
	vscs, err := sb.Snap.SnapshotV1().VolumeSnapshotContents().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range vscs.Items {
		lines = append(lines, "vsc "+c.Name)
	}
	v := veleroB(t)
	if sb != clusterB {
		t.Fatal("leftovers reads B's Velero")
	}
	rs, err := v.Dyn.Resource(velero.RestoresGVR).Namespace(v.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs.Items {
		lines = append(lines, "restore "+r.GetName())
	}
	cms, err := sb.Kube.CoreV1().ConfigMaps(sandbox.VeleroNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cms.Items {
		lines = append(lines, "velero configmap "+c.Name)
	}
	if ns != "" {
		lines = append(lines, workloadState(t, sb, ns))
	}
	return e2eutil.Fingerprint(lines)
}

func boundPV(t *testing.T, sb *sandbox.Sandbox, ns, claim string) *corev1.PersistentVolume {
	t.Helper()
	c, err := sb.Kube.CoreV1().PersistentVolumeClaims(ns).Get(context.Background(), claim, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pv, err := sb.Kube.CoreV1().PersistentVolumes().Get(context.Background(), c.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pv.Spec.CSI == nil {
		t.Fatalf("PV %s is not CSI", pv.Name)
	}
	return pv
}

// snapshotOf finds the newest snapshot directory cut from a volume, by the
// storage agent's record next to it (<dir>.json, sourceVolumeHandle).
func snapshotOf(t *testing.T, root, volumeHandle string) string {
	t.Helper()
	metas, err := filepath.Glob(filepath.Join(root, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	var best string
	var newest int64
	for _, m := range metas {
		b, err := os.ReadFile(m)
		if err != nil {
			t.Fatal(err)
		}
		var rec struct {
			Source  string `json:"sourceVolumeHandle"`
			Created int64  `json:"creationTime"`
		}
		if err := json.Unmarshal(b, &rec); err != nil {
			t.Fatal(err)
		}
		if rec.Source == volumeHandle && rec.Created > newest {
			best, newest = strings.TrimSuffix(m, ".json"), rec.Created
		}
	}
	if best == "" {
		t.Fatalf("no snapshot of volume %s under %s", volumeHandle, root)
	}
	return best
}
