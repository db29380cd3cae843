package drill_test

import (
	"context"
	"strings"
	"testing"
	"time"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	appsv1 "k8s.io/api/apps/v1"
	authv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/e2e/sandbox"
	"github.com/rebind-dev/rebind/pkg/drill"
	"github.com/rebind-dev/rebind/pkg/kube"
	"github.com/rebind-dev/rebind/pkg/snapshot"
)

// policyName is the admission policy of manifests/admission-drill.yaml.
const policyName = "rebind-drill.rebind.dev"

var dryRun = []string{metav1.DryRunAll}

// refusal is what the API server must answer: Forbidden (RBAC) or Invalid
// (the admission policy, whose message names it).
type refusal int

const (
	byRBAC refusal = iota
	byPolicy
	admitted // a documented limit, or the drill's own shape
)

func (r refusal) check(t *testing.T, what string, err error) {
	t.Helper()
	switch r {
	case byRBAC:
		if !apierrors.IsForbidden(err) {
			t.Errorf("%s: want Forbidden by RBAC, got %v", what, err)
		}
	case byPolicy:
		if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), policyName) {
			t.Errorf("%s: want Invalid from ValidatingAdmissionPolicy %s, got %v", what, policyName, err)
		}
		if err != nil && strings.Contains(err.Error(), "failed expression") {
			t.Errorf("%s: the policy's message did not render: %v", what, err)
		}
	case admitted:
		if err != nil {
			t.Errorf("%s: want admitted, got %v", what, err)
		}
	}
	if err != nil {
		t.Logf("refused as it should be: %v", err)
	}
}

// TestDrillServiceAccountConfined applies rbac-drill.yaml and
// admission-drill.yaml exactly as shipped (moved to the test's
// namespaces) and acts as the drill's ServiceAccount: everything outside
// its job is refused by the API server, by RBAC or by the admission
// policy; a full drill into the fixed scratch namespace passes and leaves
// nothing behind. Then the optional rbac-drill-create-namespace.yaml:
// its cluster-wide grants stay confined by the policy, and a drill with
// --create-scratch-namespace passes too.
func TestDrillServiceAccountConfined(t *testing.T) {
	e2eutil.NeedSandbox(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	ns := sb.NewNamespace(t)
	suffix := "conf-" + ns
	scratch := scratchFor(suffix)
	sa := applyRBAC(t, "rbac-drill.yaml", ns, suffix, nil)
	applyRBAC(t, "admission-drill.yaml", ns, suffix, nil)
	assertPolicyTypeChecks(t, policyName+"-"+suffix)

	// Someone else's release, with a snapshot, and a production snapshot
	// of the user's own in the drilled namespace.
	victim := deployGrafana(t, fixtures.Release{Name: "victim", Replicas: 1}, 1)
	victimSnap := takeSnapshot(t, ctx, victim.Rel.Namespace, "team-backup", victim.Rel.Claim(0))
	r := deployGrafana(t, fixtures.Release{Name: "grafana", Namespace: ns, Replicas: 1}, 4)
	userSnap := takeSnapshot(t, ctx, ns, "users-own", r.Rel.Claim(0))
	victimContent := boundContent(t, ctx, victimSnap)
	userContent := boundContent(t, ctx, userSnap)

	c := saClients(t, ns, sa)
	waitPolicy(t, ctx, c, scratch)

	k, s := c.Kube, c.Snap
	drillLabels := map[string]string{drill.LabelManagedBy: drill.ManagedBy, drill.LabelRun: "probe1"}
	// content is the shape of the drill's own pre-provisioned content.
	content := func(mod func(*snapv1.VolumeSnapshotContent)) *snapv1.VolumeSnapshotContent {
		vc := &snapv1.VolumeSnapshotContent{
			ObjectMeta: metav1.ObjectMeta{Name: "rebind-drill-probe-" + ns, Labels: drillLabels,
				Annotations: map[string]string{drill.AnnSourceSnapshot: ns + "/" + userSnap.Name}},
			Spec: snapv1.VolumeSnapshotContentSpec{
				DeletionPolicy: snapv1.VolumeSnapshotContentRetain, Driver: sandbox.DriverName,
				Source:            snapv1.VolumeSnapshotContentSource{SnapshotHandle: userContent.Status.SnapshotHandle},
				VolumeSnapshotRef: corev1.ObjectReference{Kind: "VolumeSnapshot", APIVersion: "snapshot.storage.k8s.io/v1", Namespace: scratch, Name: "probe"},
			},
		}
		if mod != nil {
			mod(vc)
		}
		return vc
	}
	createContent := func(vc *snapv1.VolumeSnapshotContent) error {
		_, err := s.SnapshotV1().VolumeSnapshotContents().Create(ctx, vc, metav1.CreateOptions{DryRun: dryRun})
		return err
	}
	sts := func(namespace string, mod func(*appsv1.StatefulSet)) *appsv1.StatefulSet {
		labels := map[string]string{"app": "probe", drill.LabelRun: "probe1"}
		st := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "probe", Namespace: namespace, Labels: drillLabels},
			Spec: appsv1.StatefulSetSpec{Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
					AutomountServiceAccountToken: ptr.To(false),
					Containers:                   []corev1.Container{{Name: "c", Image: "example.invalid/probe"}}}}}}
		if mod != nil {
			mod(st)
		}
		return st
	}
	createSts := func(st *appsv1.StatefulSet) error {
		_, err := k.AppsV1().StatefulSets(st.Namespace).Create(ctx, st, metav1.CreateOptions{DryRun: dryRun})
		return err
	}
	claim := func(mod func(*corev1.PersistentVolumeClaim)) error {
		pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "probe", Labels: drillLabels},
			Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				StorageClassName: ptr.To(sandbox.StorageClassDefault),
				Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
				DataSource:       &corev1.TypedLocalObjectReference{APIGroup: ptr.To(snapshot.Group), Kind: "VolumeSnapshot", Name: "probe"}}}
		mod(pvc)
		_, err := k.CoreV1().PersistentVolumeClaims(scratch).Create(ctx, pvc, metav1.CreateOptions{DryRun: dryRun})
		return err
	}
	deleteNamespace := func(name string) error {
		return k.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{DryRun: dryRun})
	}

	t.Run("refused", func(t *testing.T) {
		for _, tc := range []struct {
			what string
			want refusal
			do   func() error
		}{
			// RBAC: nothing namespaced outside the scratch namespace.
			{"StatefulSet in the production namespace", byRBAC, func() error { return createSts(sts(ns, nil)) }},
			{"StatefulSet in another team's namespace", byRBAC, func() error { return createSts(sts(victim.Rel.Namespace, nil)) }},
			{"StatefulSet in kube-system", byRBAC, func() error { return createSts(sts("kube-system", nil)) }},
			{"Secret in another team's namespace", byRBAC, func() error {
				_, err := k.CoreV1().Secrets(victim.Rel.Namespace).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "probe", Labels: drillLabels}}, metav1.CreateOptions{DryRun: dryRun})
				return err
			}},
			{"reading a production Secret other than the admin Secret", byRBAC, func() error {
				_, err := k.CoreV1().Secrets(ns).Get(ctx, "some-other-secret", metav1.GetOptions{})
				return err
			}},
			{"deleting a namespace it did not create", byRBAC, func() error { return deleteNamespace(victim.Rel.Namespace) }},
			{"deleting the scratch namespace", byRBAC, func() error { return deleteNamespace(scratch) }},
			{"creating a namespace", byRBAC, func() error {
				_, err := k.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "rebind-drill-probe", Labels: drillLabels}}, metav1.CreateOptions{DryRun: dryRun})
				return err
			}},
			{"listing VolumeSnapshotContents (every namespace's snapshot handles)", byRBAC, func() error {
				_, err := s.SnapshotV1().VolumeSnapshotContents().List(ctx, metav1.ListOptions{})
				return err
			}},
			{"deleting a production claim", byRBAC, func() error {
				return k.CoreV1().PersistentVolumeClaims(ns).Delete(ctx, r.Rel.Claim(0), metav1.DeleteOptions{DryRun: dryRun})
			}},

			// The admission policy: VolumeSnapshotContents.
			{"VolumeSnapshotContent bound into another team's namespace", byPolicy, func() error {
				return createContent(content(func(vc *snapv1.VolumeSnapshotContent) { vc.Spec.VolumeSnapshotRef.Namespace = victim.Rel.Namespace }))
			}},
			{"VolumeSnapshotContent bound into another rebind-drill-* namespace", byPolicy, func() error {
				return createContent(content(func(vc *snapv1.VolumeSnapshotContent) { vc.Spec.VolumeSnapshotRef.Namespace = "rebind-drill-elsewhere" }))
			}},
			{"VolumeSnapshotContent for another team's snapshot (declared)", byPolicy, func() error {
				return createContent(content(func(vc *snapv1.VolumeSnapshotContent) {
					vc.Annotations[drill.AnnSourceSnapshot] = victim.Rel.Namespace + "/" + victimSnap.Name
					vc.Spec.Source.SnapshotHandle = victimContent.Status.SnapshotHandle
				}))
			}},
			{"VolumeSnapshotContent naming no source snapshot", byPolicy, func() error {
				return createContent(content(func(vc *snapv1.VolumeSnapshotContent) { vc.Annotations = nil }))
			}},
			{"VolumeSnapshotContent with deletionPolicy Delete", byPolicy, func() error {
				return createContent(content(func(vc *snapv1.VolumeSnapshotContent) { vc.Spec.DeletionPolicy = snapv1.VolumeSnapshotContentDelete }))
			}},
			{"VolumeSnapshotContent snapshotting a volume (source.volumeHandle)", byPolicy, func() error {
				return createContent(content(func(vc *snapv1.VolumeSnapshotContent) {
					vc.Spec.Source = snapv1.VolumeSnapshotContentSource{VolumeHandle: ptr.To("any-volume")}
				}))
			}},
			{"VolumeSnapshotContent without the drill's labels", byPolicy, func() error {
				return createContent(content(func(vc *snapv1.VolumeSnapshotContent) { vc.Labels = nil }))
			}},
			{"deleting another team's VolumeSnapshotContent", byPolicy, func() error {
				return s.SnapshotV1().VolumeSnapshotContents().Delete(ctx, victimContent.Name, metav1.DeleteOptions{DryRun: dryRun})
			}},
			{"deleting the user's own production VolumeSnapshot", byPolicy, func() error {
				return s.SnapshotV1().VolumeSnapshots(ns).Delete(ctx, userSnap.Name, metav1.DeleteOptions{DryRun: dryRun})
			}},

			// The admission policy: the restored copy in the scratch namespace.
			{"claim naming a PersistentVolume", byPolicy, func() error {
				return claim(func(c *corev1.PersistentVolumeClaim) { c.Spec.VolumeName = victim.BoundPV(0).Name })
			}},
			{"claim not restored from a snapshot", byPolicy, func() error {
				return claim(func(c *corev1.PersistentVolumeClaim) { c.Spec.DataSource = nil })
			}},
			{"StatefulSet mounting a ServiceAccount token", byPolicy, func() error {
				return createSts(sts(scratch, func(st *appsv1.StatefulSet) { st.Spec.Template.Spec.AutomountServiceAccountToken = nil }))
			}},
			{"StatefulSet running as another ServiceAccount", byPolicy, func() error {
				return createSts(sts(scratch, func(st *appsv1.StatefulSet) { st.Spec.Template.Spec.ServiceAccountName = "builder" }))
			}},
			{"StatefulSet whose claim template names a volume", byPolicy, func() error {
				return createSts(sts(scratch, func(st *appsv1.StatefulSet) {
					st.Spec.VolumeClaimTemplates = []corev1.PersistentVolumeClaim{{ObjectMeta: metav1.ObjectMeta{Name: "storage"}, Spec: corev1.PersistentVolumeClaimSpec{
						AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, VolumeName: victim.BoundPV(0).Name,
						Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}}}
				}))
			}},
			{"StatefulSet without the drill's labels", byPolicy, func() error {
				return createSts(sts(scratch, func(st *appsv1.StatefulSet) { st.Labels = nil }))
			}},
			{"Service with externalIPs", byPolicy, func() error {
				_, err := k.CoreV1().Services(scratch).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "probe", Labels: drillLabels},
					Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}, ExternalIPs: []string{"192.0.2.10"}}}, metav1.CreateOptions{DryRun: dryRun})
				return err
			}},
			{"ServiceAccount token Secret", byPolicy, func() error {
				_, err := k.CoreV1().Secrets(scratch).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "probe", Labels: drillLabels,
					Annotations: map[string]string{corev1.ServiceAccountNameKey: "default"}}, Type: corev1.SecretTypeServiceAccountToken}, metav1.CreateOptions{DryRun: dryRun})
				return err
			}},

			// What the drill itself does is admitted.
			{"the drill's own VolumeSnapshotContent", admitted, func() error { return createContent(content(nil)) }},
			{"the drill's own StatefulSet copy", admitted, func() error { return createSts(sts(scratch, nil)) }},
			// A documented limit: CEL cannot look up a content's handle, so
			// a content that declares the drilled namespace's snapshot but
			// carries another handle passes. The drill cannot learn such a
			// handle: it may not list contents (above), and content names
			// derive from snapshot uids it cannot see.
			{"limit: a content declaring production's snapshot with a foreign handle", admitted, func() error {
				return createContent(content(func(vc *snapv1.VolumeSnapshotContent) {
					vc.Spec.Source.SnapshotHandle = victimContent.Status.SnapshotHandle
				}))
			}},
		} {
			t.Run(tc.what, func(t *testing.T) { tc.want.check(t, tc.what, tc.do()) })
		}
	})

	t.Run("drill in the fixed scratch namespace", func(t *testing.T) {
		before := takeState(t, ns, victim.Rel.Namespace)
		o := r.options()
		o.ScratchNamespace = scratch
		res := newDrill(t, c).Run(ctx, o)
		t.Logf("TIMING drill as ServiceAccount %s with RBAC and admission policy: %s, %s", sa, time.Duration(res.Duration).Round(10*time.Millisecond), cleanupLine(res))
		if res.Outcome != drill.Passed || res.Checked != r.total() {
			t.Fatalf("outcome %s, checked %d of %d: %s", res.Outcome, res.Checked, r.total(), res.Error)
		}
		assertNothingLeft(t, before, res)
		if _, err := sb.Snap.SnapshotV1().VolumeSnapshots(ns).Get(ctx, userSnap.Name, metav1.GetOptions{}); err != nil {
			t.Errorf("the user's snapshot: %v", err)
		}
	})

	// The opt-in mode: cluster-wide create and namespace create/delete,
	// confined by the same policy.
	applyRBAC(t, "rbac-drill-create-namespace.yaml", ns, suffix, nil)
	waitAllowed(t, ctx, c.Kube, authv1.ResourceAttributes{Verb: "create", Resource: "namespaces"})

	t.Run("refused with the opt-in ClusterRole", func(t *testing.T) {
		for _, tc := range []struct {
			what string
			want refusal
			do   func() error
		}{
			{"deleting a namespace it did not create", byPolicy, func() error { return deleteNamespace(victim.Rel.Namespace) }},
			{"deleting the fixed scratch namespace", byPolicy, func() error { return deleteNamespace(scratch) }},
			{"deleting the production namespace", byPolicy, func() error { return deleteNamespace(ns) }},
			{"creating a namespace not named rebind-drill-*", byPolicy, func() error {
				labels := map[string]string{drill.LabelScratch: "true", drill.LabelManagedBy: drill.ManagedBy, drill.LabelRun: "probe1"}
				_, err := k.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "payments", Labels: labels}}, metav1.CreateOptions{DryRun: dryRun})
				return err
			}},
			{"StatefulSet in another team's namespace", byPolicy, func() error { return createSts(sts(victim.Rel.Namespace, nil)) }},
			{"StatefulSet in kube-system", byPolicy, func() error { return createSts(sts("kube-system", nil)) }},
			{"Secret in the production namespace", byPolicy, func() error {
				_, err := k.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "probe", Labels: drillLabels}}, metav1.CreateOptions{DryRun: dryRun})
				return err
			}},
			{"a content bound into a rebind-drill-* namespace", admitted, func() error {
				return createContent(content(func(vc *snapv1.VolumeSnapshotContent) { vc.Spec.VolumeSnapshotRef.Namespace = "rebind-drill-elsewhere" }))
			}},
		} {
			t.Run(tc.what, func(t *testing.T) { tc.want.check(t, tc.what, tc.do()) })
		}
	})

	t.Run("drill with --create-scratch-namespace", func(t *testing.T) {
		before := takeState(t, ns, victim.Rel.Namespace)
		o := r.options()
		o.ScratchNamespace, o.CreateScratchNamespace = "", true
		res := newDrill(t, c).Run(ctx, o)
		t.Logf("TIMING drill as ServiceAccount %s, --create-scratch-namespace: %s, %s", sa, time.Duration(res.Duration).Round(10*time.Millisecond), cleanupLine(res))
		if res.Outcome != drill.Passed || res.Checked != r.total() || !res.ScratchCreated {
			t.Fatalf("outcome %s, checked %d of %d, created %v: %s", res.Outcome, res.Checked, r.total(), res.ScratchCreated, res.Error)
		}
		assertNothingLeft(t, before, res)
	})
}

func takeSnapshot(t *testing.T, ctx context.Context, ns, name, claim string) *snapv1.VolumeSnapshot {
	t.Helper()
	if _, err := snapshot.Create(ctx, sb.Snap, ns, name, claim, sandbox.SnapshotClassName, nil); err != nil {
		t.Fatal(err)
	}
	vs, err := snapshot.WaitReady(ctx, sb.Snap, ns, name, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

func boundContent(t *testing.T, ctx context.Context, vs *snapv1.VolumeSnapshot) *snapv1.VolumeSnapshotContent {
	t.Helper()
	c, err := sb.Snap.SnapshotV1().VolumeSnapshotContents().Get(ctx, *vs.Status.BoundVolumeSnapshotContentName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Status == nil || c.Status.SnapshotHandle == nil {
		t.Fatalf("content %s has no snapshot handle", c.Name)
	}
	return c
}

// waitPolicy waits until the API server enforces the policy for the
// ServiceAccount (policies and bindings take effect asynchronously): a
// Secret without the drill's labels in the scratch namespace, which RBAC
// allows, is refused.
func waitPolicy(t *testing.T, ctx context.Context, c *kube.Clients, scratch string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	var err error
	for time.Now().Before(deadline) {
		_, err = c.Kube.CoreV1().Secrets(scratch).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "policy-probe"}}, metav1.CreateOptions{DryRun: dryRun})
		if apierrors.IsInvalid(err) && strings.Contains(err.Error(), policyName) {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("the admission policy is not enforced after a minute: last answer %v", err)
}

// waitAllowed waits until the authorizer grants what was just bound.
func waitAllowed(t *testing.T, ctx context.Context, k kubernetes.Interface, attrs authv1.ResourceAttributes) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		got, err := k.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx,
			&authv1.SelfSubjectAccessReview{Spec: authv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &attrs}}, metav1.CreateOptions{})
		if err == nil && got.Status.Allowed {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("not allowed to %s %s after a minute", attrs.Verb, attrs.Resource)
}

// assertPolicyTypeChecks fails on the API server's type-checking warnings
// about the policy: each would be an expression that errs at run time.
func assertPolicyTypeChecks(t *testing.T, name string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		p, err := sb.Kube.AdmissionregistrationV1().ValidatingAdmissionPolicies().Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if p.Status.TypeChecking != nil {
			for _, w := range p.Status.TypeChecking.ExpressionWarnings {
				t.Errorf("policy type checking: %s: %s", w.FieldRef, w.Warning)
			}
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Log("policy type checking: no status yet")
}
