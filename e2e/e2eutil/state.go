package e2eutil

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"

	"github.com/rebind-dev/rebind/pkg/velero"
)

// WorkloadLines fingerprints what a migration of g mutates, a line an
// object: the StatefulSets of its namespace as sts renders them, its claims,
// and the PVs claimed from it as pv renders them. Suites differ in which
// fields of a StatefulSet and a PV must not change.
func (g *Grafana) WorkloadLines(sts func(appsv1.StatefulSet) string, pv func(corev1.PersistentVolume) string) []string {
	g.T.Helper()
	stss, err := g.SB.Kube.AppsV1().StatefulSets(g.Rel.Namespace).List(g.Ctx, metav1.ListOptions{})
	if err != nil {
		g.T.Fatal(err)
	}
	pvcs, err := g.SB.Kube.CoreV1().PersistentVolumeClaims(g.Rel.Namespace).List(g.Ctx, metav1.ListOptions{})
	if err != nil {
		g.T.Fatal(err)
	}
	deps, err := g.SB.Kube.AppsV1().Deployments(g.Rel.Namespace).List(g.Ctx, metav1.ListOptions{})
	if err != nil {
		g.T.Fatal(err)
	}
	var lines []string
	for _, s := range stss.Items {
		lines = append(lines, sts(s))
	}
	for _, d := range deps.Items {
		lines = append(lines, fmt.Sprintf("deployment %s uid=%s generation=%d replicas=%d", d.Name, d.UID, d.Generation, ptr.Deref(d.Spec.Replicas, 1)))
	}
	for _, c := range pvcs.Items {
		lines = append(lines, fmt.Sprintf("pvc %s uid=%s volume=%s phase=%s labels=%v annotations=%v", c.Name, c.UID, c.Spec.VolumeName, c.Status.Phase, c.Labels, claimAnnotations(c.Annotations)))
	}
	for _, v := range g.ClaimedPVs() {
		lines = append(lines, pv(v))
	}
	return lines
}

// ClaimedPVs lists the PVs claimed from g's namespace. Other tests'
// namespaces are being deleted in the background, and their Delete-policy
// PVs go with them, so only these are stable.
func (g *Grafana) ClaimedPVs() []corev1.PersistentVolume {
	g.T.Helper()
	list, err := g.SB.Kube.CoreV1().PersistentVolumes().List(g.Ctx, metav1.ListOptions{})
	if err != nil {
		g.T.Fatal(err)
	}
	var out []corev1.PersistentVolume
	for _, pv := range list.Items {
		if pv.Spec.ClaimRef != nil && pv.Spec.ClaimRef.Namespace == g.Rel.Namespace {
			out = append(out, pv)
		}
	}
	return out
}

// Journals counts rebind's journals in g's namespace.
func (g *Grafana) Journals() int {
	g.T.Helper()
	cms, err := g.SB.Kube.CoreV1().ConfigMaps(g.Rel.Namespace).List(g.Ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=rebind"})
	if err != nil {
		g.T.Fatal(err)
	}
	return len(cms.Items)
}

// ClusterState fingerprints every object a migration could touch, to prove
// that a refused run changed nothing: the workloads, claims and claimed PVs
// (labels and annotations included), the pods, Leases, journals,
// VolumeSnapshots and their contents, and the Velero Backups and Restores of
// the namespace.
//
// Left out on purpose, because they change without anyone acting on the
// objects: resourceVersion and managedFields of everything but the
// StatefulSet (the status writers of the controllers, kwok and the snapshot
// controller bump them on their own schedule; the StatefulSet's rv is kept
// because nothing but a writer of its spec or rebind touches it once Ready),
// every timestamp (a live Lease holder renews RenewTime; conditions carry
// transition times), and pod conditions (kwok rewrites them).
func (g *Grafana) ClusterState() string {
	g.T.Helper()
	lines := g.WorkloadLines(
		func(s appsv1.StatefulSet) string {
			return fmt.Sprintf("sts %s uid=%s rv=%s replicas=%d", s.Name, s.UID, s.ResourceVersion, ptr.Deref(s.Spec.Replicas, 1))
		},
		func(pv corev1.PersistentVolume) string {
			return fmt.Sprintf("%s phase=%s labels=%v annotations=%v", PVLine(pv), pv.Status.Phase, pv.Labels, pv.Annotations)
		})
	lines = append(lines, fmt.Sprintf("journals %d", g.Journals()))
	lines = append(lines, g.podLines()...)
	lines = append(lines, g.leaseLines()...)
	lines = append(lines, g.snapshotLines()...)
	lines = append(lines, g.veleroLines()...)
	return Fingerprint(lines)
}

// podLines: a refused run must not stop, start or move a pod.
func (g *Grafana) podLines() []string {
	pods, err := g.SB.Kube.CoreV1().Pods(g.Rel.Namespace).List(g.Ctx, metav1.ListOptions{})
	if err != nil {
		g.T.Fatal(err)
	}
	var out []string
	for _, p := range pods.Items {
		var claims []string
		for _, v := range p.Spec.Volumes {
			if v.PersistentVolumeClaim != nil {
				claims = append(claims, v.PersistentVolumeClaim.ClaimName)
			}
		}
		out = append(out, fmt.Sprintf("pod %s uid=%s node=%s phase=%s deleting=%t claims=%v", p.Name, p.UID, p.Spec.NodeName, p.Status.Phase, p.DeletionTimestamp != nil, claims))
	}
	return out
}

// leaseLines: taking a Lease is a change even when nothing else happens
// (it blocks the next run). RenewTime is left out: a live holder renews it.
func (g *Grafana) leaseLines() []string {
	leases, err := g.SB.Kube.CoordinationV1().Leases(g.Rel.Namespace).List(g.Ctx, metav1.ListOptions{})
	if err != nil {
		g.T.Fatal(err)
	}
	var out []string
	for _, l := range leases.Items {
		acquired := ""
		if l.Spec.AcquireTime != nil {
			// Acquiring is the event; its instant only identifies it.
			acquired = l.Spec.AcquireTime.UTC().Format(time.RFC3339Nano)
		}
		out = append(out, fmt.Sprintf("lease %s uid=%s holder=%q acquired=%s transitions=%d labels=%v annotations=%v",
			l.Name, l.UID, ptr.Deref(l.Spec.HolderIdentity, ""), acquired, ptr.Deref(l.Spec.LeaseTransitions, 0), l.Labels, l.Annotations))
	}
	return out
}

// snapshotLines covers the namespace's VolumeSnapshots and every content
// bound (or pre-provisioned) for one of them: a content is cluster-scoped
// and outlives its snapshot when its deletionPolicy is Retain.
func (g *Grafana) snapshotLines() []string {
	ns := g.Rel.Namespace
	snaps, err := g.SB.Snap.SnapshotV1().VolumeSnapshots(ns).List(g.Ctx, metav1.ListOptions{})
	if err != nil {
		g.T.Fatal(err)
	}
	out := []string{fmt.Sprintf("snapshots %d", len(snaps.Items))}
	for _, s := range snaps.Items {
		ready, content := false, ""
		if s.Status != nil {
			ready, content = ptr.Deref(s.Status.ReadyToUse, false), ptr.Deref(s.Status.BoundVolumeSnapshotContentName, "")
		}
		out = append(out, fmt.Sprintf("snapshot %s uid=%s source=%s/%s ready=%t content=%s deleting=%t labels=%v",
			s.Name, s.UID, ptr.Deref(s.Spec.Source.PersistentVolumeClaimName, ""), ptr.Deref(s.Spec.Source.VolumeSnapshotContentName, ""),
			ready, content, s.DeletionTimestamp != nil, s.Labels))
	}
	contents, err := g.SB.Snap.SnapshotV1().VolumeSnapshotContents().List(g.Ctx, metav1.ListOptions{})
	if err != nil {
		g.T.Fatal(err)
	}
	for _, c := range contents.Items {
		if c.Spec.VolumeSnapshotRef.Namespace != ns {
			continue
		}
		handle, ready := "", false
		if c.Status != nil {
			handle, ready = ptr.Deref(c.Status.SnapshotHandle, ""), ptr.Deref(c.Status.ReadyToUse, false)
		}
		out = append(out, fmt.Sprintf("content %s uid=%s ref=%s/%s policy=%s handle=%s ready=%t deleting=%t labels=%v",
			c.Name, c.UID, c.Spec.VolumeSnapshotRef.Name, c.Spec.VolumeSnapshotRef.UID, c.Spec.DeletionPolicy, handle, ready, c.DeletionTimestamp != nil, c.Labels))
	}
	return out
}

// veleroLines covers the Backups of the namespace and the Restores from or
// into it, in Velero's namespace. The sandbox installs Velero's CRDs also
// without a Velero server; a cluster without them has nothing to compare.
func (g *Grafana) veleroLines() []string {
	ns := g.Rel.Namespace
	var out []string
	for _, r := range []struct {
		kind string
		gvr  schema.GroupVersionResource
	}{{"backup", velero.BackupsGVR}, {"restore", velero.RestoresGVR}} {
		list, err := g.Clients.Dynamic.Resource(r.gvr).Namespace(velero.DefaultNamespace).List(g.Ctx, metav1.ListOptions{})
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			g.T.Fatal(err)
		}
		for _, u := range list.Items {
			included, _, _ := unstructured.NestedStringSlice(u.Object, "spec", "includedNamespaces")
			mapping, _, _ := unstructured.NestedStringMap(u.Object, "spec", "namespaceMapping")
			if !slices.Contains(included, ns) && !slices.Contains(slices.Collect(maps.Values(mapping)), ns) {
				continue
			}
			phase, _, _ := unstructured.NestedString(u.Object, "status", "phase")
			out = append(out, fmt.Sprintf("velero %s %s uid=%s phase=%s labels=%v", r.kind, u.GetName(), u.GetUID(), phase, u.GetLabels()))
		}
	}
	return out
}

// PVLine renders what keeps or destroys a claimed PV's data.
func PVLine(pv corev1.PersistentVolume) string {
	return fmt.Sprintf("pv %s policy=%s claim=%s/%s", pv.Name, pv.Spec.PersistentVolumeReclaimPolicy, pv.Spec.ClaimRef.Name, pv.Spec.ClaimRef.UID)
}

// Fingerprint joins lines in an order that does not depend on the List
// calls, so two fingerprints compare with ==.
func Fingerprint(lines []string) string {
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// claimAnnotations leaves out what the binder writes on its own schedule.
func claimAnnotations(in map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range in {
		if !strings.HasPrefix(k, "pv.kubernetes.io/") && !strings.HasPrefix(k, "volume.") {
			out[k] = v
		}
	}
	return out
}
