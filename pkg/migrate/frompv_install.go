package migrate

// --from-pv when nothing is left: after `helm uninstall` (or the
// namespace's deletion) the data sits on a Released or Available PV that
// no claim and no workload points at. The user says what to redeploy:
// `--redeploy helm --chart CHART [-f values]` installs the release onto the
// PV, or `--values-out FILE` alone prepares the PV (Retain, reserved for
// the exact claim the chart will create) and prints the values and the
// helm command, then stops. The target is not discovered but worked out
// from the chart: rendered when rebind has it, else from the chart's
// naming rules and the values.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/releaseutil"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/rebind-dev/rebind/pkg/discovery"
	"github.com/rebind-dev/rebind/pkg/helmredeploy"
	"github.com/rebind-dev/rebind/pkg/plan"
	"github.com/rebind-dev/rebind/pkg/preflight"
	"github.com/rebind-dev/rebind/pkg/volume"
	"github.com/rebind-dev/rebind/pkg/workload"
)

// InstallOptions say what to redeploy onto --from-pv when the release's
// workload no longer exists.
type InstallOptions struct {
	// Chart is a chart directory, packaged chart or repository reference
	// (`--chart`); ChartVersion pins a repository chart's version.
	Chart        string
	ChartVersion string
	// ValuesFiles are the user's values (`-f`), merged in order: the
	// release's own values (admin password, persistence.type, ...).
	ValuesFiles []string
	// ValuesOnly (`--values-out` without `--redeploy helm`): prepare the
	// PV, print the values and the helm command, stop.
	ValuesOnly bool
	// ValuesOut is the file the values are written to, for the command.
	ValuesOut string
}

// InstallSpec is what the journal keeps of an install onto --from-pv. The
// values themselves are not kept (they may hold the admin password): a
// resumed run reads the same files again and must find the same digest.
type InstallSpec struct {
	Chart        string   `json:"chart,omitempty"`
	ChartVersion string   `json:"chartVersion,omitempty"`
	ValuesFiles  []string `json:"valuesFiles,omitempty"`
	ValuesDigest string   `json:"valuesDigest"`
	ValuesOnly   bool     `json:"valuesOnly,omitempty"`
	ValuesOut    string   `json:"valuesOut,omitempty"`
	// CreateClaim: the chart names a claim it does not render
	// (persistence.existingClaim) and that no longer exists: rebind
	// creates it, pre-bound to the PV.
	CreateClaim bool `json:"createClaim,omitempty"`
	// Unverified says why nothing can be verified (no --baseline and the
	// PV's database cannot be read offline), "" when it can.
	Unverified string `json:"unverified,omitempty"`

	values map[string]any // the user's values, read at the start of every run
	chart  *chart.Chart
}

// Journal keys of an install.
const (
	keyHelmInstalled = "helm/installed" // set just before rebind's helm install
)

// resolveInstall works out and checks an install onto --from-pv, changing
// nothing; every problem is reported at once, each with its fix.
func (m *Migrate) resolveInstall(ctx context.Context, o Options) (*Spec, error) {
	var r preflight.Report
	io := o.Install
	ns, rel := o.Target.Namespace, o.Target.Release
	checkOptions(o, 1, &r)
	if rel == "" {
		r.Add("--from-pv", "the release's workload is gone, so rebind installs it again and needs its name", "pass --release NAME (the release to install onto the volume)")
	}
	if !io.ValuesOnly && io.Chart == "" {
		r.Add("--redeploy helm", "no chart to install onto PersistentVolume "+o.FromPV, "pass --chart CHART (a chart directory, .tgz or repo/name) and -f VALUES with the release's values, or --values-out FILE alone to prepare the volume and get the helm command")
	}
	if !io.ValuesOnly && io.Chart != "" && o.Redeploy != RedeployHelm {
		r.Add("--chart", "is installed with Helm: it needs --redeploy helm", "add --redeploy helm, or drop --chart and pass --values-out FILE to only prepare the volume")
	}
	if io.ValuesOnly && io.Chart != "" {
		r.Add("--chart", "only applies with --redeploy helm", "add --redeploy helm to install it, or drop --chart to only prepare the volume (--values-out)")
	}
	if o.ToKind != "" {
		r.Add("--to-kind", "does not apply when rebind installs the release onto --from-pv", "set persistence.type in the values (-f): the chart renders that kind onto the volume")
	}
	if strings.Contains(o.FromPV, "{ordinal}") {
		r.Add("--from-pv", "names a PersistentVolume per ordinal, but rebind installs a release onto one volume (replicas 1)", "name one PersistentVolume; scale up after the install")
	}
	if rel != "" {
		// After a namespace's deletion the release goes back into a new
		// one of the same name, which the journal needs too.
		if _, err := m.Clients.Kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			r.Add("namespace "+ns, "does not exist", fmt.Sprintf("create it first (`kubectl create namespace %s`), with the Secrets and ConfigMaps the release's values refer to", ns))
		} else if err != nil && !apierrors.IsForbidden(err) {
			return nil, fmt.Errorf("reading namespace %s: %w", ns, err)
		}
	}
	if err := r.Err(); err != nil {
		return nil, err
	}
	vals, err := helmredeploy.ReadValues(io.ValuesFiles)
	if err != nil {
		r.Add("-f/--values", err.Error(), "pass readable YAML values files")
		return nil, r.Err()
	}
	is := &InstallSpec{Chart: io.Chart, ChartVersion: io.ChartVersion, ValuesFiles: io.ValuesFiles, ValuesOnly: io.ValuesOnly, ValuesOut: io.ValuesOut, values: vals, ValuesDigest: digest(vals)}
	if !io.ValuesOnly {
		h, err := helmredeploy.New(m.Clients.Config, ns, m.log())
		if err != nil {
			return nil, err
		}
		if cur, err := h.Exists(rel); err != nil {
			return nil, err
		} else if cur != nil {
			r.Add("Helm release "+ns+"/"+rel, fmt.Sprintf("exists (revision %d, %s) but runs no Grafana workload, so rebind will not install over it", cur.Version, cur.Info.Status),
				fmt.Sprintf("check `helm status %s -n %s`; uninstall it if it is a leftover (the volume is not touched: reclaim policy Retain), or upgrade it with persistence.volumeName=%s yourself", rel, ns, o.FromPV))
			return nil, r.Err()
		}
		if is.chart, err = helmredeploy.LoadChart(io.Chart, io.ChartVersion); err != nil {
			r.Add("--chart", err.Error(), "pass a chart directory, .tgz or repo/name that `helm install` accepts")
			return nil, r.Err()
		}
	}
	t, err := m.chartTarget(ctx, o, is)
	if err != nil {
		var pf *preflight.Error
		if errors.As(err, &pf) {
			return nil, err
		}
		subject := "--chart"
		if io.ValuesOnly {
			subject = "-f/--values"
		}
		r.Add(subject, err.Error(), "check the values: persistence.enabled must be true (the Grafana chart's default is false), and persistence.type says StatefulSet (statefulset) or Deployment (pvc)")
		return nil, r.Err()
	}
	spec := &Spec{Strategy: Reuse, Target: t, KeepRetain: o.KeepRetain, SkipVerify: o.SkipVerify, Timeouts: o.Timeouts, VolumeName: true, Install: is}
	if spec.Timeouts == (Timeouts{}) {
		spec.Timeouts = DefaultTimeouts()
	}
	if io.ValuesOnly {
		spec.Redeploy = ""
	} else {
		spec.Redeploy = RedeployHelm
	}
	if err := m.checkInstallPV(ctx, o, spec, &r); err != nil {
		return nil, err
	}
	switch {
	case o.SkipVerify:
		is.Unverified = "--skip-verify"
	case io.ValuesOnly:
		is.Unverified = "--values-out alone: rebind stopped before the install"
	case o.BaselineFile == "" && o.ReadDB == nil:
		is.Unverified = fmt.Sprintf("no --baseline, and the database on PersistentVolume %s cannot be read offline here (--offline-volume-root)", o.FromPV)
	}
	if is.Unverified != "" {
		spec.SkipVerify = true
	}
	return spec, r.Err()
}

// digest fingerprints the user's values, so that a resumed run can tell
// it was given the same ones without the journal keeping them.
func digest(v map[string]any) string {
	b, _ := json.Marshal(v) // map keys are sorted
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// installValues are the user's values with rebind's persistence values on
// top: the volume, and the claim the chart must not render when rebind
// created it (existingClaim).
func installValues(s *Spec) map[string]any {
	out := map[string]any{}
	for k, v := range s.Install.values {
		out[k] = v
	}
	p := map[string]any{}
	if cur, ok := out["persistence"].(map[string]any); ok {
		for k, v := range cur {
			p[k] = v
		}
	}
	for k, v := range rebindInstallValues(s)["persistence"].(map[string]any) {
		p[k] = v
	}
	out["persistence"] = p
	return out
}

// rebindInstallValues are the values rebind adds: the PV by name. The
// class, size and modes are the chart's, checked against the PV before.
func rebindInstallValues(s *Spec) map[string]any {
	return map[string]any{"persistence": map[string]any{"volumeName": s.FromPVs[0]}}
}

// chartTarget works out the workload and claim the release will have: by
// rendering the chart with the values (and volumeName) when rebind has the
// chart, else from the Grafana chart's naming rules and the values.
func (m *Migrate) chartTarget(ctx context.Context, o Options, is *InstallSpec) (*discovery.Target, error) {
	ns, rel := o.Target.Namespace, o.Target.Release
	tplName := o.Target.ClaimTemplate
	if tplName == "" {
		tplName = "storage"
	}
	t := &discovery.Target{Namespace: ns, Release: rel, ClaimTemplate: tplName}
	classes, err := m.Clients.Kube.StorageV1().StorageClasses().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing StorageClasses: %w", err)
	}
	for _, sc := range classes.Items {
		if sc.Annotations[discovery.AnnDefaultClass] == "true" {
			t.DefaultClass = sc.Name
		}
	}
	// Rendered as it will be installed: with the volume's name.
	vals := installValues(&Spec{Install: is, FromPVs: []string{o.FromPV}})
	var objs renderedObjects
	if is.chart != nil {
		manifest, err := helmredeploy.Render(is.chart, rel, ns, vals)
		if err != nil {
			return nil, err
		}
		if objs, err = parseManifest(manifest, ns); err != nil {
			return nil, err
		}
	} else {
		objs = fromValues(rel, ns, is.values, tplName)
	}
	var r preflight.Report
	sts, deps := objs.grafana(o.Target.AppName)
	switch {
	case len(sts)+len(deps) == 0:
		return nil, fmt.Errorf("with these values the chart renders no Grafana StatefulSet or Deployment with persistence")
	case len(sts)+len(deps) > 1:
		return nil, fmt.Errorf("with these values the chart renders %d Grafana workloads; rebind installs onto one", len(sts)+len(deps))
	case len(sts) == 1:
		s := sts[0]
		t.Kind, t.StatefulSet = discovery.KindStatefulSet, s
		if t.Template() == nil {
			r.Add(fmt.Sprintf("StatefulSet %s/%s (rendered)", ns, s.Name), fmt.Sprintf("has no claim template %q: its data would not be on a PersistentVolume", tplName), "enable persistence (persistence.enabled=true), or pass --claim-template")
			return nil, r.Err()
		}
		t.Ordinals = []discovery.Ordinal{{Index: 0, Pod: s.Name + "-0", Claim: discovery.ClaimName(tplName, s.Name, 0)}}
	default:
		d := deps[0]
		t.Kind, t.Deployment = discovery.KindDeployment, d
		claim := ""
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name == tplName && v.PersistentVolumeClaim != nil {
				claim = v.PersistentVolumeClaim.ClaimName
			}
		}
		if claim == "" {
			r.Add(fmt.Sprintf("Deployment %s/%s (rendered)", ns, d.Name), fmt.Sprintf("has no claim volume %q: its data would not be on a PersistentVolume", tplName), "enable persistence (persistence.enabled=true), or pass --claim-template")
			return nil, r.Err()
		}
		pvc := objs.claims[claim]
		if pvc == nil {
			// persistence.existingClaim: the chart names a claim it does
			// not render; the shape comes from the volume (checkInstallPV).
			is.CreateClaim = true
			pvc = &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: claim, Namespace: ns},
				Spec: corev1.PersistentVolumeClaimSpec{AccessModes: accessModes(is.values)}}
		}
		t.Ordinals = []discovery.Ordinal{{Index: 0, Pod: d.Name, Claim: claim, PVC: pvc}}
	}
	if t.Replicas() != 1 {
		r.Add(fmt.Sprintf("%s %s/%s (rendered)", t.KindName(), ns, t.Name()), fmt.Sprintf("has %d replicas: rebind installs onto one PersistentVolume", t.Replicas()), "install with replicas=1 (-f or the chart's default), verify, then scale")
		return nil, r.Err()
	}
	t.AdminSecret, t.Service = t.Name(), t.Name()
	return t, nil
}

// checkInstallPV checks the PV against the claim the chart will create:
// free, or held only by a claim that is gone (or by that very claim); the
// class, size, access and volume modes the chart asks for; a node that
// can mount it; and that no other claim of that name stands in the way.
func (m *Migrate) checkInstallPV(ctx context.Context, o Options, spec *Spec, r *preflight.Report) error {
	t := spec.Target
	ord := t.Ordinals[0]
	name := o.FromPV
	ref := "PersistentVolume " + name
	pv, err := m.Clients.Kube.CoreV1().PersistentVolumes().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		r.Add(ref, "not found", "list the volumes with `kubectl get pv` and pass one with --from-pv")
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", ref, err)
	}
	spec.FromPVs = []string{name}
	if err := volume.CheckReservable(ctx, m.Clients.Kube, pv, t.Namespace, ord.Claim); err != nil {
		r.Add(ref, err.Error(), "pass a PersistentVolume that is free, or whose claim is gone")
		return nil
	}
	if c, err := m.Clients.Kube.CoreV1().PersistentVolumeClaims(t.Namespace).Get(ctx, ord.Claim, metav1.GetOptions{}); err == nil {
		if c.Spec.VolumeName != name {
			r.Add(fmt.Sprintf("claim %s/%s", t.Namespace, ord.Claim), fmt.Sprintf("exists (on %q, %s): the %s the chart renders would use it, not PersistentVolume %s", c.Spec.VolumeName, c.Status.Phase, t.KindName(), name),
				fmt.Sprintf("delete claim %s after checking its volume's reclaim policy (`kubectl get pv %s`), or migrate onto it without --chart", ord.Claim, c.Spec.VolumeName))
			return nil
		}
		// The claim a StatefulSet made survives `helm uninstall`: the new
		// StatefulSet adopts it, still on the PV.
		spec.Install.CreateClaim = false
	} else if !apierrors.IsNotFound(err) {
		return fmt.Errorf("reading claim %s/%s: %w", t.Namespace, ord.Claim, err)
	}
	claimSpec := t.Template().Spec
	if spec.Install.CreateClaim {
		// rebind makes the claim the chart only names: in the PV's class,
		// its whole capacity, its volume mode.
		claimSpec.StorageClassName = ptr.To(pv.Spec.StorageClassName)
		claimSpec.Resources.Requests = corev1.ResourceList{corev1.ResourceStorage: pv.Spec.Capacity[corev1.ResourceStorage]}
		claimSpec.VolumeMode = pv.Spec.VolumeMode
		t.Ordinals[0].PVC.Spec = *claimSpec.DeepCopy()
	}
	// An absent class is the cluster default, filled in by admission
	// before the binder compares; an empty one means "no class".
	class := ptr.Deref(claimSpec.StorageClassName, t.DefaultClass)
	claimSpec.StorageClassName = ptr.To(class)
	spec.ToClass = class
	size := claimSpec.Resources.Requests[corev1.ResourceStorage]
	spec.Size = size.String()
	// The chart renders the claim: what it asks is in the values, not in
	// rebind's flags, which would otherwise be silently ignored.
	if o.ToClass != "" && o.ToClass != class {
		r.Add("--to-storage-class", fmt.Sprintf("%q is not the class the chart's claim asks for (%q): when rebind installs the release, the values decide it", o.ToClass, class), "drop --to-storage-class; set persistence.storageClassName in the values (-f)")
	}
	if q, err := resource.ParseQuantity(o.Size); o.Size != "" && (err != nil || q.Cmp(size) != 0) {
		r.Add("--size", fmt.Sprintf("%q is not the size the chart's claim asks for (%s): when rebind installs the release, the values decide it", o.Size, size.String()), "drop --size; set persistence.size in the values (-f)")
	}
	fix := fmt.Sprintf("set the chart's values to the volume's (-f): persistence.storageClassName=%q, persistence.size at most %s, persistence.accessModes among %v", pv.Spec.StorageClassName, capacityOf(pv), pv.Spec.AccessModes)
	if err := volume.CheckFits(pv, volume.ShapeFromSpec(t.Namespace, ord.Claim, claimSpec)); err != nil {
		r.Add(ref, err.Error(), fix)
		return nil
	}
	nodes, err := m.Clients.Kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil && !apierrors.IsForbidden(err) {
		return fmt.Errorf("listing nodes: %w", err)
	}
	if err == nil {
		if msg := volume.Unreachable(pv, nodes.Items); msg != "" {
			r.Add(ref, msg, "a local volume lives on its node: bring the node back, or restore a copy with --strategy restore")
		}
	}
	return nil
}

func capacityOf(pv *corev1.PersistentVolume) string {
	q := pv.Spec.Capacity[corev1.ResourceStorage]
	return q.String()
}

// renderedObjects are the objects a chart renders that matter here.
type renderedObjects struct {
	statefulSets []*appsv1.StatefulSet
	deployments  []*appsv1.Deployment
	claims       map[string]*corev1.PersistentVolumeClaim
}

// grafana picks the Grafana workloads, as discovery tells them apart.
func (r renderedObjects) grafana(app string) (sts []*appsv1.StatefulSet, deps []*appsv1.Deployment) {
	if app == "" {
		app = "grafana"
	}
	isGrafana := func(labels map[string]string, tpl *corev1.PodTemplateSpec) bool {
		if labels[discovery.LabelName] == app {
			return true
		}
		for _, c := range tpl.Spec.Containers {
			if strings.Contains(c.Image, "grafana/grafana") {
				return true
			}
		}
		return false
	}
	for _, s := range r.statefulSets {
		if isGrafana(s.Labels, &s.Spec.Template) {
			sts = append(sts, s)
		}
	}
	for _, d := range r.deployments {
		if isGrafana(d.Labels, &d.Spec.Template) {
			deps = append(deps, d)
		}
	}
	return sts, deps
}

// parseManifest reads the StatefulSets, Deployments and claims of a
// rendered manifest.
func parseManifest(manifest, ns string) (renderedObjects, error) {
	out := renderedObjects{claims: map[string]*corev1.PersistentVolumeClaim{}}
	docs := releaseutil.SplitManifests(manifest)
	keys := make([]string, 0, len(docs))
	for k := range docs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		doc := docs[k]
		var head metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			return out, fmt.Errorf("reading the rendered chart: %w", err)
		}
		switch head.Kind {
		case "StatefulSet":
			s := &appsv1.StatefulSet{}
			if err := yaml.Unmarshal([]byte(doc), s); err != nil {
				return out, fmt.Errorf("reading the rendered StatefulSet: %w", err)
			}
			if s.Namespace == "" {
				s.Namespace = ns
			}
			out.statefulSets = append(out.statefulSets, s)
		case "Deployment":
			d := &appsv1.Deployment{}
			if err := yaml.Unmarshal([]byte(doc), d); err != nil {
				return out, fmt.Errorf("reading the rendered Deployment: %w", err)
			}
			if d.Namespace == "" {
				d.Namespace = ns
			}
			out.deployments = append(out.deployments, d)
		case "PersistentVolumeClaim":
			c := &corev1.PersistentVolumeClaim{}
			if err := yaml.Unmarshal([]byte(doc), c); err != nil {
				return out, fmt.Errorf("reading the rendered claim: %w", err)
			}
			out.claims[c.Name] = c
		}
	}
	return out, nil
}

// fromValues is what the Grafana chart renders for these values, by its
// rules (grafana/helm-charts charts/grafana: _helpers.tpl "grafana.fullname",
// statefulset.yaml, deployment.yaml, pvc.yaml; values.yaml defaults:
// accessModes [ReadWriteOnce], size 10Gi, replicas 1), for --values-out
// without a chart: only the workload's kind, name and claim, and the claim
// it will ask for.
func fromValues(rel, ns string, v map[string]any, tplName string) renderedObjects {
	out := renderedObjects{claims: map[string]*corev1.PersistentVolumeClaim{}}
	p, _ := v["persistence"].(map[string]any)
	if enabled, _ := p["enabled"].(bool); !enabled {
		return out // nothing on a PersistentVolume: refused by the caller
	}
	full := chartFullName(rel, v)
	labels := map[string]string{discovery.LabelName: "grafana", discovery.LabelInstance: rel}
	if n, _ := v["nameOverride"].(string); n != "" {
		labels[discovery.LabelName] = n
	}
	replicas := int32(1)
	if r, ok := v["replicas"].(float64); ok {
		replicas = int32(r)
	}
	claimSpec := corev1.PersistentVolumeClaimSpec{AccessModes: accessModes(v),
		Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("10Gi")}}}
	if s, _ := p["size"].(string); s != "" {
		if q, err := resource.ParseQuantity(s); err == nil {
			claimSpec.Resources.Requests[corev1.ResourceStorage] = q
		}
	}
	if c, _ := p["storageClassName"].(string); c != "" {
		claimSpec.StorageClassName = ptr.To(c)
	}
	meta := metav1.ObjectMeta{Name: full, Namespace: ns, Labels: labels}
	typ, _ := p["type"].(string)
	useSTS, _ := v["useStatefulSet"].(bool)
	if useSTS || typ == "sts" || typ == "statefulset" || typ == "StatefulSet" {
		out.statefulSets = append(out.statefulSets, &appsv1.StatefulSet{ObjectMeta: meta, Spec: appsv1.StatefulSetSpec{Replicas: &replicas,
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{ObjectMeta: metav1.ObjectMeta{Name: tplName}, Spec: claimSpec}}}})
		return out
	}
	claim := full
	if ec, _ := p["existingClaim"].(string); ec != "" {
		claim = ec
	} else {
		out.claims[claim] = &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: claim, Namespace: ns, Labels: labels}, Spec: claimSpec}
	}
	out.deployments = append(out.deployments, &appsv1.Deployment{ObjectMeta: meta, Spec: appsv1.DeploymentSpec{Replicas: &replicas,
		Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Volumes: []corev1.Volume{{Name: tplName,
			VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}}}}}}})
	return out
}

// chartFullName is the chart's "grafana.fullname": fullnameOverride, else
// the release name when it contains the chart's name (nameOverride), else
// <release>-<name>; 63 characters, no trailing dash.
func chartFullName(rel string, v map[string]any) string {
	trim := func(s string) string {
		if len(s) > 63 {
			s = s[:63]
		}
		return strings.TrimSuffix(s, "-")
	}
	if f, _ := v["fullnameOverride"].(string); f != "" {
		return trim(f)
	}
	name := "grafana"
	if n, _ := v["nameOverride"].(string); n != "" {
		name = n
	}
	if strings.Contains(rel, name) {
		return trim(rel)
	}
	return trim(rel + "-" + name)
}

func accessModes(v map[string]any) []corev1.PersistentVolumeAccessMode {
	p, _ := v["persistence"].(map[string]any)
	if list, ok := p["accessModes"].([]any); ok && len(list) > 0 {
		var out []corev1.PersistentVolumeAccessMode
		for _, m := range list {
			if s, ok := m.(string); ok {
				out = append(out, corev1.PersistentVolumeAccessMode(s))
			}
		}
		return out
	}
	return []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
}

// buildInstallPlan: protect the volume, take the reference, reserve the
// volume for the claim the chart will create, install, verify, put the
// reclaim policy back. With --values-out alone it stops after the
// reservation.
func buildInstallPlan(e *env) *plan.Plan {
	s := e.spec
	p := &plan.Plan{Name: fmt.Sprintf("install %s/%s onto %s (%s)", s.ns(), s.Target.Release, s.FromPVs[0], s.RunID)}
	claim := s.Target.Ordinals[0].Claim
	// A Released PV with policy Delete can be deleted any moment: Retain
	// comes before anything.
	p.Steps = append(p.Steps, retainStep{e, s.FromPVs[0], claim})
	if !s.SkipVerify {
		p.Steps = append(p.Steps, baselineStep{e})
	}
	p.Steps = append(p.Steps, installReserveStep{e})
	if s.Install.ValuesOnly {
		return p
	}
	if s.Install.CreateClaim {
		p.Steps = append(p.Steps, claimStep{e, 0})
	}
	p.Steps = append(p.Steps, helmInstallStep{e})
	if !s.SkipVerify {
		p.Steps = append(p.Steps, verifyStep{e})
	}
	if !s.KeepRetain {
		p.Steps = append(p.Steps, reclaimBackStep{e})
	}
	return p
}

// ---------------------------------------------------------------- reserve for the chart's claim

// installReserveStep reserves the PV for the claim the chart will create:
// claimRef namespace/name with no uid, written in one update that replaces
// a stale uid (never a claimRef cleared to nil, which would make the PV
// Available to any claim), conditional on the version read. Its undo puts
// the claimRef back exactly as it was found.
type installReserveStep struct{ *env }

func (s installReserveStep) ID() string { return "reserve/0" }
func (s installReserveStep) claim() string {
	return s.spec.Target.Ordinals[0].Claim
}
func (s installReserveStep) Describe() string {
	return fmt.Sprintf("reserve PersistentVolume %s for claim %s, the one the chart's %s %s will use (claimRef namespace/name, no uid)", s.spec.FromPVs[0], s.claim(), s.spec.Target.KindName(), s.spec.name())
}
func (s installReserveStep) Precondition(ctx context.Context) error {
	pv, err := s.getPV(ctx, s.spec.FromPVs[0])
	if err != nil {
		return err
	}
	if err := s.requireRetain(ctx, pv.Name); err != nil {
		return err
	}
	return volume.CheckReservable(ctx, s.c.Kube, pv, s.spec.ns(), s.claim())
}
func (s installReserveStep) Apply(ctx context.Context) error {
	pv, err := s.getPV(ctx, s.spec.FromPVs[0])
	if err != nil {
		return err
	}
	// The first claimRef recorded is the one found (SetValue keeps it): a
	// resumed run's own reservation is not what the undo puts back.
	if err := s.j.SetValue(ctx, keyClaimRef(pv.Name), claimRefJSON(pv)); err != nil {
		return err
	}
	return volume.Reserve(ctx, s.c.Kube, pv.Name, s.spec.ns(), s.claim(), false)
}
func (s installReserveStep) Check(ctx context.Context) error {
	pv, err := s.getPV(ctx, s.spec.FromPVs[0])
	if err != nil {
		return err
	}
	if !volume.IsReservedFor(pv, s.spec.ns(), s.claim()) {
		return fmt.Errorf("PersistentVolume %s is not reserved for claim %s/%s", pv.Name, s.spec.ns(), s.claim())
	}
	return nil
}

// Undo puts the claimRef back as found once no live claim uses the PV
// (the install's undo removed rebind's): a PV that was Released stays
// Released for its dead claim, one that was Available is Available again.
// A PV someone else took meanwhile is left alone.
func (s installReserveStep) Undo(ctx context.Context) error {
	name := s.spec.FromPVs[0]
	prior, ok := s.j.Value(keyClaimRef(name))
	if !ok {
		return nil // never changed
	}
	var ref *corev1.ObjectReference
	if prior != "" {
		ref = &corev1.ObjectReference{}
		if err := json.Unmarshal([]byte(prior), ref); err != nil {
			return fmt.Errorf("journal value %s: %w", keyClaimRef(name), err)
		}
	}
	ns, claim := s.spec.ns(), s.claim()
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pv, err := s.getPV(ctx, name)
		if err != nil {
			return err
		}
		if !volume.IsReservedFor(pv, ns, claim) {
			if cur := pv.Spec.ClaimRef; cur != nil {
				s.warn(fmt.Sprintf("PersistentVolume %s is now claimed by %s/%s, not rebind's reservation: left as it is", name, cur.Namespace, cur.Name))
			}
			return nil
		}
		if c, err := s.c.Kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, claim, metav1.GetOptions{}); err == nil && (pv.Spec.ClaimRef.UID == "" || c.UID == pv.Spec.ClaimRef.UID) {
			return fmt.Errorf("claim %s/%s still holds PersistentVolume %s; the install's undo removes it first: re-run the rollback", ns, claim, name)
		} else if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		if ref != nil && pv.Spec.ClaimRef.UID == ref.UID && pv.Spec.ClaimRef.Name == ref.Name && pv.Spec.ClaimRef.Namespace == ref.Namespace {
			return nil // already as found
		}
		pv.Spec.ClaimRef = ref
		// The version read above: a change in between is a conflict, read
		// and checked again.
		_, err = s.c.Kube.CoreV1().PersistentVolumes().Update(ctx, pv, metav1.UpdateOptions{})
		return err
	})
}
func (s installReserveStep) ServerDryRun(ctx context.Context) error {
	return volume.Reserve(ctx, s.c.Kube, s.spec.FromPVs[0], s.spec.ns(), s.claim(), true)
}

// ---------------------------------------------------------------- helm install

// helmInstallStep installs the release with the user's chart and values
// plus persistence.volumeName, and waits until the claim is Bound to the
// PV and the workload is Ready.
type helmInstallStep struct{ *env }

func (s helmInstallStep) ID() string { return "helm-install" }
func (s helmInstallStep) Describe() string {
	files := "no values files"
	if len(s.spec.Install.ValuesFiles) > 0 {
		files = "values " + strings.Join(s.spec.Install.ValuesFiles, ", ")
	}
	return fmt.Sprintf("helm install release %s (chart %s, %s, persistence.volumeName=%s) and wait until %s %s is Ready on claim %s Bound to it",
		s.spec.Target.Release, s.spec.Install.Chart, files, s.spec.FromPVs[0], s.spec.Target.KindName(), s.spec.name(), s.spec.Target.Ordinals[0].Claim)
}
func (s helmInstallStep) Precondition(ctx context.Context) error {
	if s.spec.Install.chart == nil {
		return fmt.Errorf("no chart loaded: run the same command again with --chart %s", s.spec.Install.Chart)
	}
	pv, err := s.getPV(ctx, s.spec.FromPVs[0])
	if err != nil {
		return err
	}
	if !volume.IsReservedFor(pv, s.spec.ns(), s.spec.Target.Ordinals[0].Claim) {
		return fmt.Errorf("PersistentVolume %s is no longer reserved for claim %s/%s (claimRef changed by someone else?); nothing was installed", pv.Name, s.spec.ns(), s.spec.Target.Ordinals[0].Claim)
	}
	return s.requireRetain(ctx, pv.Name)
}
func (s helmInstallStep) description() string {
	return fmt.Sprintf("rebind run %s: installed onto PersistentVolume %s", s.spec.RunID, s.spec.FromPVs[0])
}
func (s helmInstallStep) Apply(ctx context.Context) error {
	h, err := s.helm()
	if err != nil {
		return err
	}
	name := s.spec.Target.Release
	vals := installValues(s.spec)
	cur, err := h.Exists(name)
	if err != nil {
		return err
	}
	replace := false
	switch {
	case cur == nil:
	case s.value(keyHelmInstalled) == "":
		return fmt.Errorf("Helm release %s/%s appeared (revision %d, %s) since preflight and is not this run's: nothing was installed; run `rebind rollback` for this run, then decide which install to keep", s.spec.ns(), name, cur.Version, cur.Info.Status)
	case cur.Info.Status == release.StatusDeployed:
		return s.wait(ctx) // a resumed run: the install went through
	case cur.Info.Status.IsPending() || cur.Info.Status == release.StatusFailed:
		// This run's install was killed inside Helm (pending for ever) or
		// failed: mark it failed and install again over it, adopting what
		// it created.
		if _, err := h.FailPending(name, cur.Version, rebindInstallValues(s.spec), s.description()+" (interrupted; marked failed by the next run)"); err != nil {
			return err
		}
		replace = true
	default:
		return fmt.Errorf("Helm release %s/%s is %s at revision %d: run `rebind rollback` for this run", s.spec.ns(), name, cur.Info.Status, cur.Version)
	}
	if err := s.j.SetValue(ctx, keyHelmInstalled, "true"); err != nil {
		return err
	}
	if _, err := h.Install(ctx, s.spec.Install.chart, name, vals, s.description(), replace); err != nil {
		return err
	}
	return s.wait(ctx)
}

// wait: the claim Bound to the PV (a claim bound elsewhere would serve
// other data), then the workload Ready.
func (s helmInstallStep) wait(ctx context.Context) error {
	ns, claim, pv := s.spec.ns(), s.spec.Target.Ordinals[0].Claim, s.spec.FromPVs[0]
	if _, err := volume.WaitClaimBound(ctx, s.c.Kube, ns, claim, pv, s.spec.Timeouts.Wait); err != nil {
		return err
	}
	if s.spec.Target.IsDeployment() {
		return workload.WaitDeploymentReady(ctx, s.c.Kube, ns, s.spec.name(), s.spec.Timeouts.Wait)
	}
	return workload.WaitReady(ctx, s.c.Kube, ns, s.spec.name(), s.spec.Timeouts.Wait)
}
func (s helmInstallStep) Check(ctx context.Context) error {
	c, err := s.c.Kube.CoreV1().PersistentVolumeClaims(s.spec.ns()).Get(ctx, s.spec.Target.Ordinals[0].Claim, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if c.Spec.VolumeName != s.spec.FromPVs[0] || c.Status.Phase != corev1.ClaimBound {
		return fmt.Errorf("claim %s/%s is %s on %q, not Bound to PersistentVolume %s", c.Namespace, c.Name, c.Status.Phase, c.Spec.VolumeName, s.spec.FromPVs[0])
	}
	return nil
}

// Undo uninstalls the release rebind installed (never one it did not) and
// waits until the claim on the PV is gone; the PV itself stays, Retain
// (checked first: uninstalling with Delete would destroy the data). The
// claim a StatefulSet made is not Helm's, so it is deleted here.
func (s helmInstallStep) Undo(ctx context.Context) error {
	if s.value(keyHelmInstalled) == "" {
		return nil
	}
	ns, name, pv := s.spec.ns(), s.spec.Target.Release, s.spec.FromPVs[0]
	if err := s.requireRetain(ctx, pv); err != nil {
		return err
	}
	h, err := s.helm()
	if err != nil {
		return err
	}
	cur, err := h.Exists(name)
	if err != nil {
		return err
	}
	if cur != nil {
		if cur.Version != 1 && !strings.Contains(cur.Info.Description, s.spec.RunID) {
			w := fmt.Sprintf("Helm release %s/%s is at revision %d: someone upgraded it after rebind's install, so rebind did not uninstall it; run `helm uninstall %s -n %s` yourself and then `rebind rollback` again", ns, name, cur.Version, name, ns)
			return errors.New(w)
		}
		if err := h.Uninstall(name, "rebind rollback of run "+s.spec.RunID); err != nil {
			return err
		}
	}
	if s.spec.Target.IsDeployment() {
		if err := workload.WaitNoPods(ctx, s.c.Kube, ns, s.spec.Target.Selector(), s.spec.Timeouts.Wait); err != nil {
			return err
		}
	} else if err := workload.WaitGone(ctx, s.c.Kube, ns, s.spec.name(), "", s.spec.Timeouts.Wait); err != nil {
		return err
	}
	claim := s.spec.Target.Ordinals[0].Claim
	c, err := s.c.Kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, claim, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if c.Spec.VolumeName != pv {
		return nil // not on the PV: not rebind's to delete
	}
	if err := s.requireRetain(ctx, pv); err != nil {
		return err
	}
	if c.DeletionTimestamp == nil {
		if err := s.c.Kube.CoreV1().PersistentVolumeClaims(ns).Delete(ctx, claim, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &c.UID}}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting claim %s/%s (its PersistentVolume %s stays, Retain): %w", ns, claim, pv, err)
		}
	}
	return volume.WaitClaimGone(ctx, s.c.Kube, ns, claim, c.UID, s.spec.Timeouts.Wait)
}

// ---------------------------------------------------------------- values and notes

// installNotes are the values a later `helm upgrade` needs, and for
// --values-out alone the exact helm command to run next.
func installNotes(s *Spec) (map[string]any, []string) {
	values := rebindInstallValues(s)
	var notes []string
	cmd := helmInstallCommand(s)
	if s.Install.ValuesOnly {
		notes = append(notes, fmt.Sprintf("PersistentVolume %s is reserved for claim %s/%s and kept with reclaim policy Retain; rebind stopped there: install the release onto it with\n    %s\n  then verify (`rebind verify`) against a baseline; nothing was verified",
			s.FromPVs[0], s.ns(), s.Target.Ordinals[0].Claim, cmd))
		if s.Install.CreateClaim {
			notes = append(notes, fmt.Sprintf("the values name claim %s (persistence.existingClaim), which does not exist: create it with spec.volumeName %s in class %q before the install", s.Target.Ordinals[0].Claim, s.FromPVs[0], s.ToClass))
		}
		return values, notes
	}
	notes = append(notes, fmt.Sprintf("release %s was installed by rebind with these values on top of yours (%s); keep them for the next `helm upgrade` (with --reuse-values they are kept)", s.Target.Release, strings.Join(s.Install.ValuesFiles, ", ")))
	return values, notes
}

// helmInstallCommand is the command that installs the release onto the
// prepared volume.
func helmInstallCommand(s *Spec) string {
	chartRef := s.Install.Chart
	if chartRef == "" {
		chartRef = "grafana/grafana"
	}
	parts := []string{"helm install", s.Target.Release, chartRef, "-n", s.ns()}
	for _, f := range s.Install.ValuesFiles {
		parts = append(parts, "-f", f)
	}
	if s.Install.ValuesOut != "" {
		parts = append(parts, "-f", s.Install.ValuesOut)
	} else {
		parts = append(parts, "--set", "persistence.volumeName="+s.FromPVs[0])
	}
	return strings.Join(parts, " ")
}

// installWarnings say what was not verified.
func installWarnings(s *Spec) []string {
	if s.Install.Unverified == "" {
		return nil
	}
	return []string{fmt.Sprintf("NOT verified (%s): rebind could not compare the dashboards, so this run proves nothing about them", s.Install.Unverified)}
}

// sameInstall refuses a resume with another chart or other values.
func sameInstall(s *Spec, o Options) []string {
	if s.Install == nil {
		return nil
	}
	var diffs []string
	if o.Install == nil {
		return []string{"--chart/--values-out none (recorded an install onto " + strings.Join(s.FromPVs, ",") + ")"}
	}
	if o.Install.Chart != s.Install.Chart {
		diffs = append(diffs, fmt.Sprintf("--chart %q (recorded %q)", o.Install.Chart, s.Install.Chart))
	}
	if o.Install.ValuesOnly != s.Install.ValuesOnly {
		diffs = append(diffs, fmt.Sprintf("--values-out alone %v (recorded %v)", o.Install.ValuesOnly, s.Install.ValuesOnly))
	}
	if vals, err := helmredeploy.ReadValues(o.Install.ValuesFiles); err != nil {
		diffs = append(diffs, err.Error())
	} else if digest(vals) != s.Install.ValuesDigest {
		diffs = append(diffs, fmt.Sprintf("values %v differ from the recorded run's", o.Install.ValuesFiles))
	}
	return diffs
}

// loadInstall gives a resumed install the values and chart it needs
// (neither is in the journal).
func (m *Migrate) loadInstall(s *Spec, o Options) error {
	if s.Install == nil || o.Install == nil {
		return nil
	}
	vals, err := helmredeploy.ReadValues(o.Install.ValuesFiles)
	if err != nil {
		return err
	}
	s.Install.values = vals
	if !s.Install.ValuesOnly {
		if s.Install.chart, err = helmredeploy.LoadChart(s.Install.Chart, s.Install.ChartVersion); err != nil {
			return err
		}
	}
	return nil
}

// logInstall notes the resolved install target.
func (m *Migrate) logInstall(s *Spec) {
	m.log().Info("install onto a kept volume", zap.String("release", s.Target.Release), zap.String("kind", s.Target.KindName()),
		zap.String("workload", s.Target.Name()), zap.String("claim", s.Target.Ordinals[0].Claim), zap.String("pv", s.FromPVs[0]), zap.Duration("waitTimeout", s.Timeouts.Wait.Round(time.Second)))
}

// wantsInstall says whether this run installs the release onto --from-pv:
// the release's workload is gone and the user said what to redeploy. A
// workload that still runs takes the ordinary reuse path, and --chart is
// then refused (it would not be used).
func (m *Migrate) wantsInstall(ctx context.Context, o Options) (bool, error) {
	if o.FromPV == "" {
		return false, nil
	}
	_, err := discovery.Discover(ctx, m.Clients, o.Target)
	var nf *discovery.NotFoundError
	switch {
	case err == nil:
		if o.Install != nil && o.Install.Chart != "" {
			var r preflight.Report
			r.Add("--chart", fmt.Sprintf("release %s still runs its Grafana workload in %s: rebind binds that workload to PersistentVolume %s and installs nothing", o.Target.Release, o.Target.Namespace, o.FromPV), "drop --chart (and -f); --redeploy helm then upgrades the running release")
			return false, r.Err()
		}
		return false, nil
	case !errors.As(err, &nf) || o.Target.StatefulSet != "" || o.Target.Deployment != "":
		return false, err
	case o.Install == nil:
		return false, &discovery.NotFoundError{What: nf.What + fmt.Sprintf(", so nothing points at PersistentVolume %s", o.FromPV),
			Hint: fmt.Sprintf("say what to redeploy onto it: --redeploy helm --chart CHART -f VALUES (rebind installs release %s onto it and verifies), or --values-out FILE (rebind prepares the volume and prints the helm command)", o.Target.Release)}
	}
	return true, nil
}

// printInstallTarget is the progress line of an install's target.
func (m *Migrate) printInstallTarget(s *Spec) {
	m.logInstall(s)
	fmt.Fprintf(m.out(), "Target: release %s/%s is not running: %s %s (as the chart renders it), claim %s, onto PersistentVolume %s\n",
		s.ns(), s.Target.Release, s.Target.KindName(), s.Target.Name(), s.Target.Ordinals[0].Claim, s.FromPVs[0])
}

// InstallPermissions are the rights an install onto --from-pv adds: Helm
// reads and writes its release Secrets, creates the chart's objects, and a
// rollback uninstalls them.
func InstallPermissions(ns string) []preflight.Permission {
	var out []preflight.Permission
	for _, res := range []struct{ group, resource string }{
		{"", "secrets"}, {"", "services"}, {"", "persistentvolumeclaims"}, {"apps", "statefulsets"}, {"apps", "deployments"},
	} {
		for _, verb := range []string{"list", "create", "update", "patch", "delete"} {
			out = append(out, preflight.Permission{Verb: verb, Group: res.group, Resource: res.resource, Namespace: ns})
		}
	}
	return out
}
