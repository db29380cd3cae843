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
	Namespace     string
	Release       string
	StatefulSet   string
	ClaimTemplate string // "storage" in the Grafana chart
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
	Namespace     string              `json:"namespace"`
	Release       string              `json:"release,omitempty"`
	StatefulSet   *appsv1.StatefulSet `json:"statefulSet"`
	ClaimTemplate string              `json:"claimTemplate"`
	Ordinals      []Ordinal           `json:"ordinals"`
	AdminSecret   string              `json:"adminSecret,omitempty"`
	Service       string              `json:"service,omitempty"`
	DefaultClass  string              `json:"defaultStorageClass,omitempty"`
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

// Name is the StatefulSet's name.
func (t *Target) Name() string { return t.StatefulSet.Name }

// Replicas is the StatefulSet's desired replica count.
func (t *Target) Replicas() int { return int(ptr.Deref(t.StatefulSet.Spec.Replicas, 1)) }

// Template returns the data claim template.
func (t *Target) Template() *corev1.PersistentVolumeClaim {
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
	sts, err := findStatefulSet(ctx, c, o)
	if err != nil {
		return nil, err
	}
	t := &Target{Namespace: o.Namespace, Release: o.Release, StatefulSet: sts, ClaimTemplate: o.ClaimTemplate}
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

	classes, err := c.Kube.StorageV1().StorageClasses().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing StorageClasses: %w", err)
	}
	byName := map[string]*storagev1.StorageClass{}
	for i := range classes.Items {
		sc := &classes.Items[i]
		byName[sc.Name] = sc
		if sc.Annotations[AnnDefaultClass] == "true" {
			t.DefaultClass = sc.Name
		}
	}
	snapClasses, snapErr := c.Snap.SnapshotV1().VolumeSnapshotClasses().List(ctx, metav1.ListOptions{})

	replicas := t.Replicas()
	for i := 0; i < replicas; i++ {
		ord := Ordinal{Index: i, Pod: fmt.Sprintf("%s-%d", sts.Name, i), Claim: ClaimName(o.ClaimTemplate, sts.Name, i)}
		pvc, err := c.Kube.CoreV1().PersistentVolumeClaims(o.Namespace).Get(ctx, ord.Claim, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return nil, fmt.Errorf("reading claim %s/%s: %w", o.Namespace, ord.Claim, err)
		default:
			ord.PVC = pvc
			ord.StorageClass = ptr.Deref(pvc.Spec.StorageClassName, "")
			if pvc.Spec.VolumeName != "" {
				pv, err := c.Kube.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
				if err != nil && !apierrors.IsNotFound(err) {
					return nil, fmt.Errorf("reading PersistentVolume %s: %w", pvc.Spec.VolumeName, err)
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
			if sc := byName[ord.StorageClass]; sc != nil {
				ord.Driver = sc.Provisioner
			}
		}
		if snapErr == nil && ord.Driver != "" {
			ord.SnapshotClass = pickSnapshotClass(snapClasses.Items, ord.Driver, o.SnapshotClass)
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

func findStatefulSet(ctx context.Context, c *kube.Clients, o Options) (*appsv1.StatefulSet, error) {
	stsClient := c.Kube.AppsV1().StatefulSets(o.Namespace)
	if o.StatefulSet != "" {
		sts, err := stsClient.Get(ctx, o.StatefulSet, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil, &NotFoundError{What: fmt.Sprintf("StatefulSet %s/%s not found", o.Namespace, o.StatefulSet), Hint: fmt.Sprintf("list them with `kubectl get statefulsets -n %s`", o.Namespace)}
		}
		if err != nil {
			return nil, fmt.Errorf("reading StatefulSet %s/%s: %w", o.Namespace, o.StatefulSet, err)
		}
		return sts, nil
	}
	if o.Release == "" {
		return nil, &NotFoundError{What: "no target given", Hint: "pass --release (the Helm release) or --statefulset"}
	}
	list, err := stsClient.List(ctx, metav1.ListOptions{LabelSelector: LabelInstance + "=" + o.Release})
	if err != nil {
		return nil, fmt.Errorf("listing StatefulSets of release %s in %s: %w", o.Release, o.Namespace, err)
	}
	var matches []*appsv1.StatefulSet
	for i := range list.Items {
		s := &list.Items[i]
		if s.Labels[LabelName] == o.AppName || s.Annotations[AnnHelmReleaseName] == o.Release {
			matches = append(matches, s)
		}
	}
	switch len(matches) {
	case 1:
		return matches[0], nil
	case 0:
		hint := fmt.Sprintf("check the release name and namespace (`helm list -n %s`)", o.Namespace)
		deps, err := c.Kube.AppsV1().Deployments(o.Namespace).List(ctx, metav1.ListOptions{LabelSelector: LabelInstance + "=" + o.Release})
		if err == nil && len(deps.Items) > 0 {
			hint = fmt.Sprintf("release %s runs %s as a Deployment (chart value persistence.type: pvc); rebind moves StatefulSets: redeploy with persistence.type=statefulset first", o.Release, deps.Items[0].Name)
		}
		return nil, &NotFoundError{What: fmt.Sprintf("no StatefulSet of Helm release %q in namespace %s", o.Release, o.Namespace), Hint: hint}
	default:
		var names []string
		for _, m := range matches {
			names = append(names, m.Name)
		}
		sort.Strings(names)
		return nil, &NotFoundError{What: fmt.Sprintf("release %q has several StatefulSets (%s)", o.Release, strings.Join(names, ", ")), Hint: "pass --statefulset to choose one"}
	}
}
