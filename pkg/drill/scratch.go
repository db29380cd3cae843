package drill

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"sort"
	"strings"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/rebind-dev/rebind/pkg/discovery"
	"github.com/rebind-dev/rebind/pkg/journal"
	"github.com/rebind-dev/rebind/pkg/workload"
)

// Labels and annotations on everything a drill creates, so an operator (or
// a later drill) can tell drill debris from real objects.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "rebind"
	LabelRun       = "rebind.dev/drill-run"
	AnnDrillOf     = "rebind.dev/drill-of"
	// AnnSourceSnapshot on a pre-provisioned VolumeSnapshotContent names the
	// production snapshot (namespace/name) whose data it shares; the
	// admission policy in manifests/admission-drill.yaml checks that the
	// drill may read that snapshot.
	AnnSourceSnapshot = "rebind.dev/drill-source-snapshot"
	// LabelScratch="true" marks a namespace prepared for drills: the only
	// kind of namespace a drill restores into (manifests/rbac-drill.yaml
	// creates rebind-drill-scratch with it), and what the admission policy
	// confines the drill's writes to.
	LabelScratch = "rebind.dev/drill-scratch"
	// DefaultScratchNamespace is the fixed scratch namespace the install
	// manifest creates.
	DefaultScratchNamespace = "rebind-drill-scratch"
	// scratchPrefix starts every name a drill generates (namespaces in the
	// opt-in mode, VolumeSnapshotContents, snapshots, Leases).
	scratchPrefix = "rebind-drill-"
)

func newRunID() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// ScratchNamespaceName is rebind-drill-<sts>-<run>, cut to the 63
// characters a namespace name may have: the namespace the opt-in mode
// (--create-scratch-namespace) creates.
func ScratchNamespaceName(sts, runID string) string {
	room := 63 - len(scratchPrefix) - 1 - len(runID)
	if len(sts) > room {
		sts = strings.TrimRight(sts[:room], "-")
	}
	return scratchPrefix + sts + "-" + runID
}

// ScratchLeaseName is the Lease a drill of StatefulSet sts holds in a fixed
// scratch namespace: the copy keeps the production names, so two drills of
// one StatefulSet name cannot share the namespace at once.
func ScratchLeaseName(sts string) string {
	return journal.LeaseName("drill-" + sts) // rebind-drill-<sts>
}

// clip cuts a generated name to max characters (and a trailing dash).
func clip(s string, max int) string {
	if len(s) > max {
		s = strings.TrimRight(s[:max], "-.")
	}
	return s
}

// snapshotName is the production VolumeSnapshot a drill takes of ordinal ord.
func snapshotName(sts string, ord int, runID string) string {
	return fmt.Sprintf("rebind-drill-%s-%d-%s", sts, ord, runID)
}

// contentName is the cluster-scoped pre-provisioned content that makes a
// production snapshot visible in the scratch namespace; unique per run, as
// drills of several targets share one scratch namespace.
func contentName(sts, runID string, ord int) string {
	return clip(fmt.Sprintf("%s%s-%s", scratchPrefix, sts, runID), 253-1-len(fmt.Sprint(ord))) + fmt.Sprintf("-%d", ord)
}

func runLabels(runID string) map[string]string {
	return map[string]string{LabelManagedBy: ManagedBy, LabelRun: runID}
}

// preProvisionedContent points at the production snapshot's data. Retain
// is what keeps the production snapshot intact: deleting this content
// afterwards removes only the API object, never the data it shares with
// the production content.
func preProvisionedContent(name, scratch, snapName, driver, handle, class, runID, source string) *snapv1.VolumeSnapshotContent {
	c := &snapv1.VolumeSnapshotContent{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: runLabels(runID), Annotations: map[string]string{AnnSourceSnapshot: source}},
		Spec: snapv1.VolumeSnapshotContentSpec{
			DeletionPolicy:    snapv1.VolumeSnapshotContentRetain,
			Driver:            driver,
			Source:            snapv1.VolumeSnapshotContentSource{SnapshotHandle: ptr.To(handle)},
			VolumeSnapshotRef: corev1.ObjectReference{Kind: "VolumeSnapshot", APIVersion: "snapshot.storage.k8s.io/v1", Namespace: scratch, Name: snapName},
		},
	}
	if class != "" {
		c.Spec.VolumeSnapshotClassName = ptr.To(class)
	}
	return c
}

func boundSnapshot(scratch, name, content, class, runID string) *snapv1.VolumeSnapshot {
	vs := &snapv1.VolumeSnapshot{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: scratch, Labels: runLabels(runID)},
		Spec:       snapv1.VolumeSnapshotSpec{Source: snapv1.VolumeSnapshotSource{VolumeSnapshotContentName: ptr.To(content)}},
	}
	if class != "" {
		vs.Spec.VolumeSnapshotClassName = ptr.To(class)
	}
	return vs
}

// objectRef is a ConfigMap or Secret the pod template needs to start.
type objectRef struct {
	Kind     string // Secret or ConfigMap
	Name     string
	Optional bool
}

// referencedObjects lists the Secrets and ConfigMaps a pod template reads
// (volumes, env, envFrom, image pull secrets): the copy in the scratch
// namespace cannot start without them. A name referenced both optionally
// and not counts as required.
func referencedObjects(spec *corev1.PodSpec) []objectRef {
	seen := map[[2]string]bool{} // kind,name -> optional
	add := func(kind, name string, optional *bool) {
		if name == "" {
			return
		}
		k := [2]string{kind, name}
		opt := ptr.Deref(optional, false)
		if prev, ok := seen[k]; ok {
			seen[k] = prev && opt
			return
		}
		seen[k] = opt
	}
	for _, v := range spec.Volumes {
		if v.Secret != nil {
			add("Secret", v.Secret.SecretName, v.Secret.Optional)
		}
		if v.ConfigMap != nil {
			add("ConfigMap", v.ConfigMap.Name, v.ConfigMap.Optional)
		}
		if v.Projected != nil {
			for _, s := range v.Projected.Sources {
				if s.Secret != nil {
					add("Secret", s.Secret.Name, s.Secret.Optional)
				}
				if s.ConfigMap != nil {
					add("ConfigMap", s.ConfigMap.Name, s.ConfigMap.Optional)
				}
			}
		}
	}
	containers := append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...)
	for _, c := range containers {
		for _, e := range c.Env {
			if e.ValueFrom == nil {
				continue
			}
			if r := e.ValueFrom.SecretKeyRef; r != nil {
				add("Secret", r.Name, r.Optional)
			}
			if r := e.ValueFrom.ConfigMapKeyRef; r != nil {
				add("ConfigMap", r.Name, r.Optional)
			}
		}
		for _, e := range c.EnvFrom {
			if e.SecretRef != nil {
				add("Secret", e.SecretRef.Name, e.SecretRef.Optional)
			}
			if e.ConfigMapRef != nil {
				add("ConfigMap", e.ConfigMapRef.Name, e.ConfigMapRef.Optional)
			}
		}
	}
	for _, s := range spec.ImagePullSecrets {
		add("Secret", s.Name, ptr.To(true))
	}
	out := make([]objectRef, 0, len(seen))
	for k, opt := range seen {
		out = append(out, objectRef{Kind: k[0], Name: k[1], Optional: opt})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Kind != out[j].Kind {
			return out[i].Kind < out[j].Kind
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// scratchMeta keeps a production object's name and labels (the chart's
// selector labels are what the pod template and Services expect) but drops
// Helm's ownership: the copy belongs to the drill, not to a release.
func scratchMeta(in metav1.ObjectMeta, scratch, drillOf, runID string) metav1.ObjectMeta {
	labels := maps.Clone(in.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	maps.Copy(labels, runLabels(runID))
	return metav1.ObjectMeta{Name: in.Name, Namespace: scratch, Labels: labels, Annotations: map[string]string{AnnDrillOf: drillOf}}
}

func copySecret(in *corev1.Secret, scratch, drillOf, runID string) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: scratchMeta(in.ObjectMeta, scratch, drillOf, runID), Type: in.Type, Data: in.Data, Immutable: in.Immutable}
}

func copyConfigMap(in *corev1.ConfigMap, scratch, drillOf, runID string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: scratchMeta(in.ObjectMeta, scratch, drillOf, runID), Data: in.Data, BinaryData: in.BinaryData, Immutable: in.Immutable}
}

// copyService keeps the ports and selector; the cluster allocates new
// addresses (a headless Service stays headless), so that each scratch pod
// gets the DNS name <pod>.<service>.<scratch>.svc the checker uses.
func copyService(in *corev1.Service, scratch, drillOf, runID string) *corev1.Service {
	out := &corev1.Service{ObjectMeta: scratchMeta(in.ObjectMeta, scratch, drillOf, runID)}
	out.Spec = corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, Selector: maps.Clone(in.Spec.Selector), PublishNotReadyAddresses: in.Spec.PublishNotReadyAddresses}
	if in.Spec.ClusterIP == corev1.ClusterIPNone {
		out.Spec.ClusterIP = corev1.ClusterIPNone
	}
	for _, p := range in.Spec.Ports {
		out.Spec.Ports = append(out.Spec.Ports, corev1.ServicePort{Name: p.Name, Port: p.Port, TargetPort: p.TargetPort, Protocol: p.Protocol, AppProtocol: p.AppProtocol})
	}
	return out
}

// governingService is the Service the copy needs: a StatefulSet's
// governing one; a Deployment's copy gets none (nothing resolves its pod
// by DNS, and the drill reaches it by name).
func governingService(t *discovery.Target) string {
	if t.IsDeployment() {
		return ""
	}
	return t.StatefulSet.Spec.ServiceName
}

// scratchPod is the name of the copy's pod for an ordinal: production's
// for a StatefulSet, the first ordinal of the one-replica StatefulSet that
// runs a Deployment's pod template.
func scratchPod(t *discovery.Target, ord int, prodPod string) string {
	if t.IsDeployment() {
		return fmt.Sprintf("%s-%d", t.Name(), ord)
	}
	return prodPod
}

// scratchStatefulSetOfDeployment runs a Deployment's pod template as the
// throwaway copy. A StatefulSet rather than a Deployment: the copy then
// falls under the same admission confinement, RBAC and cleanup as every
// other drill's (manifests/admission-drill.yaml), and its pod has a name
// the drill can reach. Its pod mounts the restored claim by the name the
// Deployment's pod uses (restored in the scratch namespace under that
// name); it has no claim template, so it names no PersistentVolume.
func scratchStatefulSetOfDeployment(prod *appsv1.Deployment, scratch, runID string) *appsv1.StatefulSet {
	sel := prod.Spec.Selector.DeepCopy()
	if sel == nil {
		sel = &metav1.LabelSelector{}
	}
	s := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: prod.Name, Namespace: prod.Namespace, Labels: prod.Labels, Annotations: prod.Annotations},
		Spec: appsv1.StatefulSetSpec{
			Replicas:    ptr.To(int32(1)),
			Selector:    sel,
			Template:    *prod.Spec.Template.DeepCopy(),
			ServiceName: prod.Name,
			// One pod; Parallel starts it without waiting on ordinal order.
			PodManagementPolicy: appsv1.ParallelPodManagement,
		},
	}
	return confineCopy(s, scratch, prod.Namespace+"/"+prod.Name, runID)
}

// scratchStatefulSet is the throwaway copy: same name (so pods, claims and
// the admin Secret keep the names Grafana and the chart expect), same pod
// template and replica count, the claim template pointing at the restored
// class. The controller adopts the restored claims created beforehand under
// its naming rule. No claim template names a volume (production's may, the
// shape `rebind migrate` leaves behind): the restored claims are bound
// already, and a claim naming a volume could bind someone else's Available
// PV, which the admission policy refuses.
func scratchStatefulSet(prod *appsv1.StatefulSet, claimTemplate, scratch, restoreClass, runID string) *appsv1.StatefulSet {
	s := confineCopy(workload.Sanitize(prod), scratch, prod.Namespace+"/"+prod.Name, runID)
	for i := range s.Spec.VolumeClaimTemplates {
		t := &s.Spec.VolumeClaimTemplates[i]
		t.Spec.VolumeName = ""
		if t.Name == claimTemplate {
			t.Spec.StorageClassName = ptr.To(restoreClass)
		}
	}
	return s
}

// confineCopy makes s a throwaway copy in the scratch namespace: the run's
// labels on it and its pods, no API access, no grace period.
func confineCopy(s *appsv1.StatefulSet, scratch, drillOf, runID string) *appsv1.StatefulSet {
	s.ObjectMeta = scratchMeta(s.ObjectMeta, scratch, drillOf, runID)
	s.Spec.PersistentVolumeClaimRetentionPolicy = nil
	if s.Spec.Selector == nil {
		s.Spec.Selector = &metav1.LabelSelector{}
	}
	s.Spec.Selector = s.Spec.Selector.DeepCopy()
	if s.Spec.Selector.MatchLabels == nil {
		s.Spec.Selector.MatchLabels = map[string]string{}
	}
	s.Spec.Selector.MatchLabels[LabelRun] = runID
	if s.Spec.Template.Labels == nil {
		s.Spec.Template.Labels = map[string]string{}
	}
	s.Spec.Template.Labels[LabelRun] = runID
	// The production ServiceAccount (and whatever RBAC it holds) does not
	// exist here; the copy serves dashboards and needs no API access.
	s.Spec.Template.Spec.ServiceAccountName = ""
	s.Spec.Template.Spec.DeprecatedServiceAccount = ""
	s.Spec.Template.Spec.AutomountServiceAccountToken = ptr.To(false)
	// The copy's data is thrown away with it: no reason to wait out the
	// chart's grace period when it is deleted.
	s.Spec.Template.Spec.TerminationGracePeriodSeconds = ptr.To(int64(0))
	return s
}
