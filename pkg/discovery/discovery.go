// Package discovery finds everything a migration touches: the StatefulSet,
// its data claim template, the claim and PV of every ordinal, their classes,
// CSI driver and snapshot class, and the chart's admin Secret and Service.
package discovery

import (
	"context"
	"fmt"
	"sort"
	"strings"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/rebind-dev/rebind/pkg/kube"
)

// Helm's and the chart's labels.
const (
	LabelName           = "app.kubernetes.io/name"
	LabelInstance       = "app.kubernetes.io/instance"
	AnnHelmReleaseName  = "meta.helm.sh/release-name"
	AnnDefaultClass     = "storageclass.kubernetes.io/is-default-class"
	AnnDefaultSnapClass = "snapshot.storage.kubernetes.io/is-default-class"
)

// Options select the target.
type Options struct {
	Namespace   string
	Release     string
	StatefulSet string
	Deployment  string
	// ClaimTemplate names the data volume: the StatefulSet's claim
	// template, or the Deployment pod's volume; "storage" in the chart.
	ClaimTemplate string
	AppName       string // value of app.kubernetes.io/name, "grafana"
	SnapshotClass string // overrides the driver's default
}

// NotFoundError names what is missing and how to find the right name.
type NotFoundError struct {
	What string
	Hint string
}

func (e *NotFoundError) Error() string { return e.What + ": " + e.Hint }

// Target is the discovered state. It is stored in the journal at the start,
// because later steps delete the objects it was read from.
type Target struct {
	Namespace string `json:"namespace"`
	Release   string `json:"release,omitempty"`
	// Kind is KindStatefulSet (also when empty: journals written before
	// Deployments were supported) or KindDeployment; one of StatefulSet and
	// Deployment is set.
	Kind          string              `json:"kind,omitempty"`
	StatefulSet   *appsv1.StatefulSet `json:"statefulSet,omitempty"`
	Deployment    *appsv1.Deployment  `json:"deployment,omitempty"`
	ClaimTemplate string              `json:"claimTemplate"`
	Ordinals      []Ordinal           `json:"ordinals"`
	AdminSecret   string              `json:"adminSecret,omitempty"`
	Service       string              `json:"service,omitempty"`
	DefaultClass  string              `json:"defaultStorageClass,omitempty"`
}

// Workload kinds.
const (
	KindStatefulSet = "StatefulSet"
	KindDeployment  = "Deployment"
)

// IsDeployment says whether the target is a Deployment with one claim
// (the chart's default, persistence.type: pvc).
func (t *Target) IsDeployment() bool { return t.Kind == KindDeployment }

// KindName is "StatefulSet" or "Deployment", for messages.
func (t *Target) KindName() string {
	if t.IsDeployment() {
		return KindDeployment
	}
	return KindStatefulSet
}

// Object is the workload's metadata.
func (t *Target) Object() metav1.Object {
	if t.IsDeployment() {
		return t.Deployment
	}
	return t.StatefulSet
}

// PodTemplate is the workload's pod template.
func (t *Target) PodTemplate() *corev1.PodTemplateSpec {
	if t.IsDeployment() {
		return &t.Deployment.Spec.Template
	}
	return &t.StatefulSet.Spec.Template
}

// Selector is the workload's pod selector.
func (t *Target) Selector() *metav1.LabelSelector {
	if t.IsDeployment() {
		return t.Deployment.Spec.Selector
	}
	return t.StatefulSet.Spec.Selector
}

// Ordinal is one replica's volume.
type Ordinal struct {
	Index         int                           `json:"index"`
	Pod           string                        `json:"pod"`
	Claim         string                        `json:"claim"`
	PVC           *corev1.PersistentVolumeClaim `json:"pvc,omitempty"`
	PV            *corev1.PersistentVolume      `json:"pv,omitempty"`
	StorageClass  string                        `json:"storageClass,omitempty"`
	Driver        string                        `json:"driver,omitempty"` // CSI driver, or the class provisioner
	CSI           bool                          `json:"csi"`
	SnapshotClass string                        `json:"snapshotClass,omitempty"`
}

// Name is the workload's name.
func (t *Target) Name() string { return t.Object().GetName() }

// Replicas is the workload's desired replica count.
func (t *Target) Replicas() int {
	if t.IsDeployment() {
		return int(ptr.Deref(t.Deployment.Spec.Replicas, 1))
	}
	return int(ptr.Deref(t.StatefulSet.Spec.Replicas, 1))
}

// Template returns the data claim template. A Deployment has none: its
// one claim stands in for it, so that a claim made from the template asks
// for what the original claim asked.
func (t *Target) Template() *corev1.PersistentVolumeClaim {
	if t.IsDeployment() {
		if len(t.Ordinals) == 0 || t.Ordinals[0].PVC == nil {
			return nil
		}
		c := t.Ordinals[0].PVC
		tpl := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: t.ClaimTemplate, Labels: c.Labels, Annotations: c.Annotations}, Spec: *c.Spec.DeepCopy()}
		tpl.Spec.VolumeName, tpl.Spec.DataSource, tpl.Spec.DataSourceRef = "", nil, nil
		return tpl
	}
	for i := range t.StatefulSet.Spec.VolumeClaimTemplates {
		if t.StatefulSet.Spec.VolumeClaimTemplates[i].Name == t.ClaimTemplate {
			return &t.StatefulSet.Spec.VolumeClaimTemplates[i]
		}
	}
	return nil
}

// ClaimName is the StatefulSet controller's naming rule.
func ClaimName(template, sts string, ordinal int) string {
	return fmt.Sprintf("%s-%s-%d", template, sts, ordinal)
}

// Discover reads the cluster. It changes nothing.
func Discover(ctx context.Context, c *kube.Clients, o Options) (*Target, error) {
	if o.ClaimTemplate == "" {
		o.ClaimTemplate = "storage"
	}
	if o.AppName == "" {
		o.AppName = "grafana"
	}
	sts, dep, err := findWorkload(ctx, c, o)
	if err != nil {
		return nil, err
	}
	if dep != nil {
		return discoverDeployment(ctx, c, o, dep)
	}
	t := &Target{Namespace: o.Namespace, Release: o.Release, Kind: KindStatefulSet, StatefulSet: sts, ClaimTemplate: o.ClaimTemplate}
	if t.Release == "" {
		t.Release = sts.Annotations[AnnHelmReleaseName]
	}
	if t.Template() == nil {
		var names []string
		for _, vct := range sts.Spec.VolumeClaimTemplates {
			names = append(names, vct.Name)
		}
		if len(names) == 0 {
			return nil, &NotFoundError{What: fmt.Sprintf("StatefulSet %s/%s has no volumeClaimTemplates", o.Namespace, sts.Name), Hint: "its data is not on a per-replica PersistentVolume; enable persistence (persistence.enabled=true, persistence.type=statefulset) first"}
		}
		return nil, &NotFoundError{What: fmt.Sprintf("StatefulSet %s/%s has no claim template %q", o.Namespace, sts.Name, o.ClaimTemplate), Hint: fmt.Sprintf("pass --claim-template with one of %v", names)}
	}

	vols, err := newVolumeReader(ctx, c, o)
	if err != nil {
		return nil, err
	}
	t.DefaultClass = vols.defaultClass
	for i := 0; i < t.Replicas(); i++ {
		ord, err := vols.ordinal(ctx, i, fmt.Sprintf("%s-%d", sts.Name, i), ClaimName(o.ClaimTemplate, sts.Name, i))
		if err != nil {
			return nil, err
		}
		t.Ordinals = append(t.Ordinals, ord)
	}

	t.AdminSecret = findByName(ctx, c, o.Namespace, "secret", sts.Name)
	t.Service = sts.Spec.ServiceName
	if svc := findByName(ctx, c, o.Namespace, "service", sts.Name); svc != "" {
		t.Service = svc
	}
	return t, nil
}

// Workload finds only the target's StatefulSet or Deployment, without its
// volumes: enough to reach its Grafana (inventory, verify), with no right
// to read claims, volumes or classes. AdminSecret is the chart's name for
// it (the workload's), whether or not it exists.
func Workload(ctx context.Context, c *kube.Clients, o Options) (*Target, error) {
	if o.AppName == "" {
		o.AppName = "grafana"
	}
	sts, dep, err := findWorkload(ctx, c, o)
	if err != nil {
		return nil, err
	}
	t := &Target{Namespace: o.Namespace, Release: o.Release, Kind: KindStatefulSet, StatefulSet: sts, ClaimTemplate: o.ClaimTemplate}
	if dep != nil {
		t.Kind, t.StatefulSet, t.Deployment = KindDeployment, nil, dep
	}
	t.AdminSecret = t.Name()
	return t, nil
}

// discoverDeployment reads a Deployment-mode release: one claim, named in
// the pod's data volume (<fullname>, or persistence.existingClaim).
func discoverDeployment(ctx context.Context, c *kube.Clients, o Options, dep *appsv1.Deployment) (*Target, error) {
	t := &Target{Namespace: o.Namespace, Release: o.Release, Kind: KindDeployment, Deployment: dep, ClaimTemplate: o.ClaimTemplate}
	if t.Release == "" {
		t.Release = dep.Annotations[AnnHelmReleaseName]
	}
	ref := fmt.Sprintf("Deployment %s/%s", o.Namespace, dep.Name)
	var claim string
	var names []string
	for _, v := range dep.Spec.Template.Spec.Volumes {
		names = append(names, v.Name)
		if v.Name != o.ClaimTemplate {
			continue
		}
		if v.PersistentVolumeClaim == nil {
			return nil, &NotFoundError{What: fmt.Sprintf("%s keeps its data volume %q in an %s, not on a PersistentVolume", ref, v.Name, volumeSourceKind(v)),
				Hint: "its dashboards are lost whenever the pod restarts: enable persistence (persistence.enabled=true) first"}
		}
		claim = v.PersistentVolumeClaim.ClaimName
	}
	if claim == "" {
		return nil, &NotFoundError{What: fmt.Sprintf("%s has no volume %q", ref, o.ClaimTemplate), Hint: fmt.Sprintf("pass --claim-template with the pod volume that holds /var/lib/grafana (volumes: %v)", names)}
	}
	vols, err := newVolumeReader(ctx, c, o)
	if err != nil {
		return nil, err
	}
	t.DefaultClass = vols.defaultClass
	// One claim whatever the replica count: the pods share it. The
	// "pod" of the ordinal names the workload, whose Service the Grafana
	// checks reach, since the pod's own name changes with every restart.
	ord, err := vols.ordinal(ctx, 0, dep.Name, claim)
	if err != nil {
		return nil, err
	}
	t.Ordinals = []Ordinal{ord}
	t.AdminSecret = findByName(ctx, c, o.Namespace, "secret", dep.Name)
	t.Service = findByName(ctx, c, o.Namespace, "service", dep.Name)
	return t, nil
}

func volumeSourceKind(v corev1.Volume) string {
	switch {
	case v.EmptyDir != nil:
		return "emptyDir"
	case v.HostPath != nil:
		return "hostPath"
	}
	return "non-claim volume"
}

// volumeReader reads each ordinal's claim, PV, class, driver and snapshot
// class.
type volumeReader struct {
	c             *kube.Clients
	ns            string
	snapshotClass string
	classes       map[string]*storagev1.StorageClass
	defaultClass  string
	snapClasses   []snapv1.VolumeSnapshotClass
	snapErr       error
}

func newVolumeReader(ctx context.Context, c *kube.Clients, o Options) (*volumeReader, error) {
	classes, err := c.Kube.StorageV1().StorageClasses().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing StorageClasses: %w", err)
	}
	r := &volumeReader{c: c, ns: o.Namespace, snapshotClass: o.SnapshotClass, classes: map[string]*storagev1.StorageClass{}}
	for i := range classes.Items {
		sc := &classes.Items[i]
		r.classes[sc.Name] = sc
		if sc.Annotations[AnnDefaultClass] == "true" {
			r.defaultClass = sc.Name
		}
	}
	snaps, err := c.Snap.SnapshotV1().VolumeSnapshotClasses().List(ctx, metav1.ListOptions{})
	if err == nil {
		r.snapClasses = snaps.Items
	}
	r.snapErr = err
	return r, nil
}

func (r *volumeReader) ordinal(ctx context.Context, i int, pod, claim string) (Ordinal, error) {
	ord := Ordinal{Index: i, Pod: pod, Claim: claim}
	pvc, err := r.c.Kube.CoreV1().PersistentVolumeClaims(r.ns).Get(ctx, ord.Claim, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return ord, fmt.Errorf("reading claim %s/%s: %w", r.ns, ord.Claim, err)
	default:
		ord.PVC = pvc
		ord.StorageClass = ptr.Deref(pvc.Spec.StorageClassName, "")
		if pvc.Spec.VolumeName != "" {
			pv, err := r.c.Kube.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
			if err != nil && !apierrors.IsNotFound(err) {
				return ord, fmt.Errorf("reading PersistentVolume %s: %w", pvc.Spec.VolumeName, err)
			}
			if err == nil {
				ord.PV = pv
				if pv.Spec.StorageClassName != "" {
					ord.StorageClass = pv.Spec.StorageClassName
				}
				if pv.Spec.CSI != nil {
					ord.CSI = true
					ord.Driver = pv.Spec.CSI.Driver
				}
			}
		}
	}
	if ord.Driver == "" {
		if sc := r.classes[ord.StorageClass]; sc != nil {
			ord.Driver = sc.Provisioner
		}
	}
	if r.snapErr == nil && ord.Driver != "" {
		ord.SnapshotClass = pickSnapshotClass(r.snapClasses, ord.Driver, r.snapshotClass)
	}
	return ord, nil
}

// pickSnapshotClass returns the requested class if it serves the driver,
// else the driver's default, else its only class.
func pickSnapshotClass(classes []snapv1.VolumeSnapshotClass, driver, requested string) string {
	var forDriver []snapv1.VolumeSnapshotClass
	for _, c := range classes {
		if c.Driver != driver {
			continue
		}
		if requested != "" && c.Name == requested {
			return c.Name
		}
		forDriver = append(forDriver, c)
	}
	if requested != "" {
		return ""
	}
	for _, c := range forDriver {
		if c.Annotations[AnnDefaultSnapClass] == "true" {
			return c.Name
		}
	}
	if len(forDriver) == 1 {
		return forDriver[0].Name
	}
	return ""
}

func findByName(ctx context.Context, c *kube.Clients, ns, kind, name string) string {
	var err error
	switch kind {
	case "secret":
		_, err = c.Kube.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	case "service":
		_, err = c.Kube.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
	}
	if err != nil {
		return ""
	}
	return name
}

// findWorkload finds the release's Grafana: a StatefulSet
// (persistence.type: statefulset) or else a Deployment (the chart's
// default), also as a subchart (kube-prometheus-stack: <release>-grafana)
// or renamed (fullnameOverride, nameOverride).
func findWorkload(ctx context.Context, c *kube.Clients, o Options) (*appsv1.StatefulSet, *appsv1.Deployment, error) {
	stsClient := c.Kube.AppsV1().StatefulSets(o.Namespace)
	depClient := c.Kube.AppsV1().Deployments(o.Namespace)
	switch {
	case o.StatefulSet != "" && o.Deployment != "":
		return nil, nil, &NotFoundError{What: "both --statefulset and --deployment given", Hint: "name one workload"}
	case o.StatefulSet != "":
		sts, err := stsClient.Get(ctx, o.StatefulSet, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil, nil, &NotFoundError{What: fmt.Sprintf("StatefulSet %s/%s not found", o.Namespace, o.StatefulSet), Hint: fmt.Sprintf("list them with `kubectl get statefulsets -n %s`", o.Namespace)}
		}
		if err != nil {
			return nil, nil, fmt.Errorf("reading StatefulSet %s/%s: %w", o.Namespace, o.StatefulSet, err)
		}
		return sts, nil, nil
	case o.Deployment != "":
		dep, err := depClient.Get(ctx, o.Deployment, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil, nil, &NotFoundError{What: fmt.Sprintf("Deployment %s/%s not found", o.Namespace, o.Deployment), Hint: fmt.Sprintf("list them with `kubectl get deployments -n %s`", o.Namespace)}
		}
		if err != nil {
			return nil, nil, fmt.Errorf("reading Deployment %s/%s: %w", o.Namespace, o.Deployment, err)
		}
		return nil, dep, nil
	case o.Release == "":
		return nil, nil, &NotFoundError{What: "no target given", Hint: "pass --release (the Helm release), --statefulset or --deployment"}
	}
	sel := metav1.ListOptions{LabelSelector: LabelInstance + "=" + o.Release}
	list, err := stsClient.List(ctx, sel)
	if err != nil {
		return nil, nil, fmt.Errorf("listing StatefulSets of release %s in %s: %w", o.Release, o.Namespace, err)
	}
	var stss []*appsv1.StatefulSet
	for i := range list.Items {
		if s := &list.Items[i]; isGrafana(s.ObjectMeta, &s.Spec.Template, o) {
			stss = append(stss, s)
		}
	}
	deps, err := depClient.List(ctx, sel)
	if err != nil {
		return nil, nil, fmt.Errorf("listing Deployments of release %s in %s: %w", o.Release, o.Namespace, err)
	}
	var ds []*appsv1.Deployment
	for i := range deps.Items {
		if d := &deps.Items[i]; isGrafana(d.ObjectMeta, &d.Spec.Template, o) {
			ds = append(ds, d)
		}
	}
	switch {
	case len(stss) == 1 && len(ds) == 0:
		return stss[0], nil, nil
	case len(stss) == 0 && len(ds) == 1:
		return nil, ds[0], nil
	case len(stss) == 0 && len(ds) == 0:
		return nil, nil, &NotFoundError{What: fmt.Sprintf("no Grafana StatefulSet or Deployment of Helm release %q in namespace %s", o.Release, o.Namespace),
			Hint: fmt.Sprintf("check the release name and namespace (`helm list -n %s`), or name the workload with --statefulset or --deployment", o.Namespace)}
	}
	var names []string
	for _, m := range stss {
		names = append(names, "StatefulSet "+m.Name)
	}
	for _, m := range ds {
		names = append(names, "Deployment "+m.Name)
	}
	sort.Strings(names)
	return nil, nil, &NotFoundError{What: fmt.Sprintf("release %q has several Grafana workloads (%s)", o.Release, strings.Join(names, ", ")), Hint: "pass --statefulset or --deployment to choose one"}
}

// isGrafana tells the release's Grafana from its other workloads (a
// kube-prometheus-stack release runs several): the chart's name label
// (changed by nameOverride), or a Grafana image.
func isGrafana(meta metav1.ObjectMeta, tpl *corev1.PodTemplateSpec, o Options) bool {
	if meta.Labels[LabelName] == o.AppName {
		return true
	}
	for _, c := range tpl.Spec.Containers {
		if strings.Contains(c.Image, "grafana/grafana") {
			return true
		}
	}
	return false
}
