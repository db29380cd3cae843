package faults_test

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
	"k8s.io/utils/ptr"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/e2e/grafanastandin"
	"github.com/rebind-dev/rebind/pkg/helmredeploy"
	"github.com/rebind-dev/rebind/pkg/inventory"
	"github.com/rebind-dev/rebind/pkg/journal"
	"github.com/rebind-dev/rebind/pkg/velero"
)

// strategy is one way of migrating that the matrix kills: how to deploy a
// fresh release for it and which command migrates it.
type strategy struct {
	name string
	rel  fixtures.Release
	helm bool // installed with the Helm SDK, migrated with --redeploy helm
	// args are the strategy's own migrate flags; backup is the Velero
	// Backup of the release's namespace (velero-restore only).
	args func(backup string) []string
}

const chartDir = "../charts/grafana-like"

var strategies = []strategy{
	{name: "reuse", rel: fixtures.Release{Name: "grafana", Replicas: 1, StorageClass: "standard"},
		args: func(string) []string { return []string{"--strategy", "reuse"} }},
	{name: "restore", rel: fixtures.Release{Name: "grafana", Replicas: 1},
		args: func(string) []string { return []string{"--strategy", "restore", "--to-storage-class", "premium"} }},
	{name: "velero-restore", rel: fixtures.Release{Name: "grafana", Replicas: 1, StorageClass: "standard"},
		args: func(b string) []string {
			// The real Velero server: a CSI-snapshot backup restored into
			// another class of the same driver (a move to another driver
			// needs Velero's node-agent, which kwok cannot run).
			return []string{"--strategy", "velero-restore", "--from-backup", b, "--to-storage-class", "premium"}
		}},
	{name: "helm", rel: fixtures.Release{Name: "grafana", Replicas: 1}, helm: true,
		args: func(string) []string {
			return []string{"--strategy", "restore", "--to-storage-class", "premium", "--redeploy", "helm"}
		}},
	{name: "deployment-reuse", rel: fixtures.Release{Name: "grafana", Replicas: 1, Deployment: true, StorageClass: "standard"},
		args: func(string) []string { return []string{"--strategy", "reuse"} }},
	{name: "deployment-restore", rel: fixtures.Release{Name: "grafana", Replicas: 1, Deployment: true},
		args: func(string) []string { return []string{"--strategy", "restore", "--to-storage-class", "premium"} }},
	{name: "deployment-velero-restore", rel: fixtures.Release{Name: "grafana", Replicas: 1, Deployment: true, StorageClass: "standard"},
		args: func(b string) []string {
			return []string{"--strategy", "velero-restore", "--from-backup", b, "--to-storage-class", "premium"}
		}},
}

// target is one deployed, seeded release and what it held before rebind
// touched it.
type target struct {
	*e2eutil.Grafana
	strategy strategy
	backup   string
	// baseline is what each ordinal's Grafana served before the run.
	baseline []*inventory.Inventory
	// original are the PVs bound before the run, by ordinal; every one
	// must survive with its data.
	original []*corev1.PersistentVolume
}

// deploy makes a fresh release for s in a namespace of t's own, seeded
// with a few dashboards in 2 orgs (enough to tell a lost one), and takes
// the baseline.
func deploy(t *testing.T, s strategy) *target {
	t.Helper()
	var g *e2eutil.Grafana
	spec := grafanastandin.SeedSpec{Orgs: 2, FoldersPerOrg: 2, DashboardsPerOrg: 4, Seed: 11}
	if s.helm {
		g = e2eutil.NewGrafana(t, sb, s.rel)
		h, err := helmredeploy.New(sb.RESTConfig, g.Rel.Namespace, nil)
		if err != nil {
			t.Fatal(err)
		}
		ch, err := loader.Load(chartDir)
		if err != nil {
			t.Fatal(err)
		}
		inst := action.NewInstall(h.Configuration())
		inst.ReleaseName, inst.Namespace = g.Rel.Name, g.Rel.Namespace
		if _, err := inst.RunWithContext(g.Ctx, ch, map[string]any{
			"adminPassword": g.Rel.Password,
			"persistence":   map[string]any{"storageClassName": "standard"},
		}); err != nil {
			t.Fatal(err)
		}
		g.Seed(spec)
	} else {
		g = e2eutil.DeploySeeded(t, sb, s.rel, spec)
	}
	tg := &target{Grafana: g, strategy: s}
	for i := 0; i < int(g.Rel.Replicas); i++ {
		tg.baseline = append(tg.baseline, g.Inventory(i))
		tg.original = append(tg.original, g.BoundPV(i))
	}
	if strings.HasSuffix(s.name, "velero-restore") {
		tg.backup = "nightly-" + g.Rel.Namespace
		v := velero.New(g.Clients, "", nil)
		if _, err := v.CreateBackup(g.Ctx, velero.BackupRequest{Name: tg.backup, Namespace: g.Rel.Namespace}); err != nil {
			t.Fatal(err)
		}
		if _, err := v.WaitBackup(g.Ctx, tg.backup, velero.Wait{Pickup: 30 * time.Second, Timeout: 2 * time.Minute}); err != nil {
			t.Fatal(err)
		}
	}
	return tg
}

// command is the migrate command line an operator would run, and run
// again after a kill.
func (tg *target) command() []string {
	ns := tg.Rel.Namespace
	args := []string{"migrate", "-n", ns, "--release", tg.Rel.Name, "-o", "json",
		"--wait-timeout", timeouts.Wait.String(), "--snapshot-timeout", timeouts.Snapshot.String(), "--verify-timeout", timeouts.Verify.String()}
	for i := 0; i < int(tg.Rel.Replicas); i++ {
		pod := tg.Rel.Pod(i)
		args = append(args, "--grafana-pod-url", pod+"="+sb.PodURL(ns, pod))
	}
	return append(args, tg.strategy.args(tg.backup)...)
}

func (tg *target) workloadName() string { return tg.Rel.FullName() }

// journalPhase is the phase the target's journal records ("" without one).
func (tg *target) journalPhase(ctx context.Context) (journal.Phase, string, error) {
	j, err := journal.Load(ctx, sb.Kube, tg.Rel.Namespace, tg.workloadName())
	if err != nil || j == nil {
		return "", "", err
	}
	return j.Record().Phase, j.Record().RunID, nil
}

// shape renders the end state of the namespace without what differs
// between two correct runs (names generated per run, uids, namespace,
// timestamps), so a killed-and-resumed run compares with a clean one:
// the workload Ready on the claims, each claim bound to the intended
// volume (the original one, by ordinal, or a new one of the target class),
// every PV claimed from the namespace with its class, policy and phase,
// the snapshots and contents, the journal and its Secret, the Lease, the
// Velero objects and the Helm release's state. A leftover claim, PV,
// snapshot or held Lease shows as a line a clean run does not have.
func (tg *target) shape(ctx context.Context) ([]string, error) {
	ns := tg.Rel.Namespace
	_, runID, err := tg.journalPhase(ctx)
	if err != nil {
		return nil, err
	}
	role := func(pv string) string {
		for i, o := range tg.original {
			if o.Name == pv {
				return fmt.Sprintf("original-%d", i)
			}
		}
		if pv == "" {
			return "none"
		}
		return "new"
	}
	var lines []string
	add := func(format string, a ...any) { lines = append(lines, fmt.Sprintf(format, a...)) }

	if tg.Rel.Deployment {
		d, err := sb.Kube.AppsV1().Deployments(ns).Get(ctx, tg.workloadName(), metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		add("deployment %s replicas=%d ready=%d", d.Name, ptr.Deref(d.Spec.Replicas, 1), d.Status.ReadyReplicas)
	} else {
		s, err := sb.Kube.AppsV1().StatefulSets(ns).Get(ctx, tg.workloadName(), metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		tpl := s.Spec.VolumeClaimTemplates[0].Spec
		add("statefulset %s replicas=%d ready=%d template class=%s volume=%s retention=%v helm=%s", s.Name, ptr.Deref(s.Spec.Replicas, 1), s.Status.ReadyReplicas,
			ptr.Deref(tpl.StorageClassName, ""), role(tpl.VolumeName), s.Spec.PersistentVolumeClaimRetentionPolicy, s.Labels["app.kubernetes.io/managed-by"])
	}
	pods, err := sb.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	for _, p := range pods.Items {
		ready := false
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady {
				ready = c.Status == corev1.ConditionTrue
			}
		}
		var claims []string
		for _, v := range p.Spec.Volumes {
			if v.PersistentVolumeClaim != nil {
				claims = append(claims, v.PersistentVolumeClaim.ClaimName)
			}
		}
		// A Deployment's pod names are random: its owner names it.
		name := p.Name
		if tg.Rel.Deployment {
			name = "of " + tg.workloadName()
		}
		add("pod %s ready=%t deleting=%t claims=%v", name, ready, p.DeletionTimestamp != nil, claims)
	}
	claims, err := sb.Kube.CoreV1().PersistentVolumeClaims(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	live := map[string]string{} // claim uid -> name
	for _, c := range claims.Items {
		live[string(c.UID)] = c.Name
		add("claim %s phase=%s pv=%s class=%s deleting=%t", c.Name, c.Status.Phase, role(c.Spec.VolumeName), ptr.Deref(c.Spec.StorageClassName, ""), c.DeletionTimestamp != nil)
	}
	pvs, err := sb.Kube.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	for _, pv := range pvs.Items {
		ref := pv.Spec.ClaimRef
		if ref == nil || ref.Namespace != ns {
			continue
		}
		bound := "stale"
		if ref.UID == "" {
			bound = "reserved"
		} else if live[string(ref.UID)] == ref.Name {
			bound = "live"
		}
		phase := pv.Status.Phase
		if bound == "stale" && phase == corev1.VolumeBound {
			// The PV controller marks a PV whose claim is gone Released
			// on its own schedule (seconds later on a loaded machine);
			// the claimRef already says what the phase will say.
			phase = corev1.VolumeReleased
		}
		add("pv %s class=%s policy=%s phase=%s claim=%s (%s) deleting=%t", role(pv.Name), pv.Spec.StorageClassName, pv.Spec.PersistentVolumeReclaimPolicy, phase, ref.Name, bound, pv.DeletionTimestamp != nil)
	}
	snaps, err := sb.Snap.SnapshotV1().VolumeSnapshots(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	for _, s := range snaps.Items {
		ready := s.Status != nil && ptr.Deref(s.Status.ReadyToUse, false)
		add("snapshot %s ready=%t source=%s deleting=%t", s.Name, ready, ptr.Deref(s.Spec.Source.PersistentVolumeClaimName, ""), s.DeletionTimestamp != nil)
	}
	contents, err := sb.Snap.SnapshotV1().VolumeSnapshotContents().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	for _, c := range contents.Items {
		if c.Spec.VolumeSnapshotRef.Namespace == ns {
			ready := c.Status != nil && ptr.Deref(c.Status.ReadyToUse, false)
			add("content for %s policy=%s ready=%t deleting=%t", c.Spec.VolumeSnapshotRef.Name, c.Spec.DeletionPolicy, ready, c.DeletionTimestamp != nil)
		}
	}
	leases, err := sb.Kube.CoordinationV1().Leases(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	for _, l := range leases.Items {
		add("lease %s held=%t", l.Name, ptr.Deref(l.Spec.HolderIdentity, "") != "")
	}
	cms, err := sb.Kube.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{LabelSelector: journal.LabelManagedBy + "=" + journal.ManagedBy})
	if err != nil {
		return nil, err
	}
	for _, cm := range cms.Items {
		add("journal configmap %s", cm.Name)
	}
	if phase, _, err := tg.journalPhase(ctx); err == nil {
		add("journal phase=%s", phase)
	}
	secrets, err := sb.Kube.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	helmStatus := map[string]int{}
	latest, latestStatus := 0, ""
	for _, s := range secrets.Items {
		switch {
		case s.Labels[journal.LabelManagedBy] == journal.ManagedBy:
			add("journal secret %s", s.Name)
		case s.Labels["owner"] == "helm":
			helmStatus[s.Labels["status"]]++
			if n, err := strconv.Atoi(s.Labels["version"]); err == nil && n > latest {
				latest, latestStatus = n, s.Labels["status"]
			}
		}
	}
	if tg.strategy.helm {
		// A failed revision is history a user may have too; a pending
		// one blocks every later helm command.
		add("helm latest=%s pending=%d", latestStatus, helmStatus["pending-upgrade"]+helmStatus["pending-install"]+helmStatus["pending-rollback"])
	}
	for _, kind := range []struct {
		name string
		list func() (*unstructured.UnstructuredList, error)
	}{
		{"backup", func() (*unstructured.UnstructuredList, error) {
			return tg.Clients.Dynamic.Resource(velero.BackupsGVR).Namespace(velero.DefaultNamespace).List(ctx, metav1.ListOptions{})
		}},
		{"restore", func() (*unstructured.UnstructuredList, error) {
			return tg.Clients.Dynamic.Resource(velero.RestoresGVR).Namespace(velero.DefaultNamespace).List(ctx, metav1.ListOptions{})
		}},
	} {
		list, err := kind.list()
		if err != nil {
			return nil, err
		}
		for _, u := range list.Items {
			if !strings.Contains(fmt.Sprint(u.Object["spec"]), ns) {
				continue
			}
			phase, _, _ := unstructured.NestedString(u.Object, "status", "phase")
			add("velero %s %s phase=%s", kind.name, u.GetName(), phase)
		}
	}
	for i := range lines {
		lines[i] = strings.ReplaceAll(lines[i], ns, "<ns>")
		if runID != "" {
			lines[i] = strings.ReplaceAll(lines[i], runID, "<run>")
		}
	}
	sort.Strings(lines)
	return lines, nil
}

// dataCheck counts what the run lost: dashboards each ordinal's Grafana no
// longer serves as they were (through the stand-in, against the baseline),
// original PVs gone or marked for deletion, and dashboards missing from an
// original PV's own grafana.db (read offline from the volume).
func (tg *target) dataCheck(ctx context.Context) (lostDashboards, lostPVs int, problems []string) {
	for i, base := range tg.baseline {
		c, err := tg.Client(tg.Rel.Pod(i))
		if err == nil {
			// Bounded: a run that never brought Grafana back must fail
			// the episode, not hang it.
			rctx, cancel := context.WithTimeout(ctx, timeouts.Verify)
			err = tg.Checker().Ready(rctx, tg.Rel.Pod(i))
			cancel()
		}
		var cur *inventory.Inventory
		if err == nil {
			cur, err = inventory.FromGrafana(ctx, c, inventory.Options{})
		}
		if err != nil {
			problems = append(problems, fmt.Sprintf("ordinal %d: Grafana does not answer: %v", i, err))
			lostDashboards += base.Totals().Dashboards
			continue
		}
		r := inventory.Compare(base, cur)
		missing, _, changed, moved, _ := r.Totals()
		if n := missing + changed + moved; n > 0 {
			lostDashboards += n
			problems = append(problems, fmt.Sprintf("ordinal %d: Grafana serves %d dashboards not as they were:\n%s", i, n, r.Summary()))
		}
	}
	for i, o := range tg.original {
		pv, err := sb.Kube.CoreV1().PersistentVolumes().Get(ctx, o.Name, metav1.GetOptions{})
		if err != nil || pv.DeletionTimestamp != nil {
			lostPVs++
			problems = append(problems, fmt.Sprintf("original PV %s of ordinal %d: gone or deleting (%v)", o.Name, i, err))
			continue
		}
		dir, err := fixtures.VolumeDir(sb.StorageRoot(), pv)
		var inv *inventory.Inventory
		if err == nil {
			inv, err = inventory.FromSQLiteContext(ctx, dir+"/grafana.db")
		}
		if err != nil {
			problems = append(problems, fmt.Sprintf("original PV %s: reading its grafana.db: %v", o.Name, err))
			lostDashboards += tg.baseline[i].Totals().Dashboards
			continue
		}
		r := inventory.Compare(tg.baseline[i], inv)
		missing, _, changed, moved, _ := r.Totals()
		if n := missing + changed + moved; n > 0 {
			lostDashboards += n
			problems = append(problems, fmt.Sprintf("original PV %s: its grafana.db lost %d dashboards:\n%s", o.Name, n, r.Summary()))
		}
	}
	return lostDashboards, lostPVs, problems
}

// pvDeletions watches, from now until stop, for any PV claimed from the
// namespace being deleted or marked for deletion: rebind must never delete
// a PV, whatever it holds. The watch resumes across an API server restart.
func pvDeletions(ctx context.Context, ns string) (stop func() []string, err error) {
	list, err := sb.Kube.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	lw := &cache.ListWatch{WatchFunc: func(o metav1.ListOptions) (watch.Interface, error) {
		return sb.Kube.CoreV1().PersistentVolumes().Watch(context.WithoutCancel(ctx), o)
	}}
	rw, err := watchtools.NewRetryWatcherWithContext(ctx, list.ResourceVersion, lw)
	if err != nil {
		return nil, err
	}
	var seen []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range rw.ResultChan() {
			pv, ok := ev.Object.(*corev1.PersistentVolume)
			if !ok || pv.Spec.ClaimRef == nil || pv.Spec.ClaimRef.Namespace != ns {
				continue
			}
			if ev.Type == watch.Deleted || pv.DeletionTimestamp != nil {
				seen = append(seen, fmt.Sprintf("%s %s (claim %s, policy %s)", ev.Type, pv.Name, pv.Spec.ClaimRef.Name, pv.Spec.PersistentVolumeReclaimPolicy))
			}
		}
	}()
	return func() []string {
		rw.Stop()
		<-done
		return seen
	}, nil
}
