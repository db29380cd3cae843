package e2eutil

import (
	"fmt"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
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
// that a refused run changed nothing.
func (g *Grafana) ClusterState() string {
	g.T.Helper()
	lines := g.WorkloadLines(
		func(s appsv1.StatefulSet) string {
			return fmt.Sprintf("sts %s uid=%s rv=%s replicas=%d", s.Name, s.UID, s.ResourceVersion, ptr.Deref(s.Spec.Replicas, 1))
		},
		func(pv corev1.PersistentVolume) string {
			return fmt.Sprintf("%s phase=%s", PVLine(pv), pv.Status.Phase)
		})
	lines = append(lines, fmt.Sprintf("journals %d", g.Journals()))
	snaps, err := g.SB.Snap.SnapshotV1().VolumeSnapshots(g.Rel.Namespace).List(g.Ctx, metav1.ListOptions{})
	if err != nil {
		g.T.Fatal(err)
	}
	lines = append(lines, fmt.Sprintf("snapshots %d", len(snaps.Items)))
	return Fingerprint(lines)
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
