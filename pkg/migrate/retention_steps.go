package migrate

import (
	"context"
	"encoding/json"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/rebind-dev/rebind/pkg/kube"
)

// A StatefulSet's persistentVolumeClaimRetentionPolicy lets its controller
// delete claims: whenScaled=Delete those of pods scaled away (the quiesced
// scale to 0 would take every claim), whenDeleted=Delete all of them with
// the StatefulSet. rebind sets both to Retain for the migration and puts
// the user's policy back on the redeployed StatefulSet once verified.

var retainBoth = appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{
	WhenDeleted: appsv1.RetainPersistentVolumeClaimRetentionPolicyType,
	WhenScaled:  appsv1.RetainPersistentVolumeClaimRetentionPolicyType,
}

// deletesClaims says whether a policy lets the controller delete claims.
func deletesClaims(p *appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy) bool {
	return p != nil && (p.WhenDeleted == appsv1.DeletePersistentVolumeClaimRetentionPolicyType ||
		p.WhenScaled == appsv1.DeletePersistentVolumeClaimRetentionPolicyType)
}

func (s *Spec) originalRetention() *appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy {
	if s.Target.StatefulSet == nil {
		return nil // a Deployment's claim belongs to nothing that deletes it
	}
	return s.Target.StatefulSet.Spec.PersistentVolumeClaimRetentionPolicy
}

func policyString(p *appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy) string {
	if p == nil {
		return "whenDeleted=Retain, whenScaled=Retain (default)"
	}
	return fmt.Sprintf("whenDeleted=%s, whenScaled=%s", p.WhenDeleted, p.WhenScaled)
}

// setRetention writes a retention policy on the StatefulSet of that name
// only while it is the one with uid (an update carrying the resourceVersion
// it read), then waits until the controller has seen it, so that a scale
// down issued next is judged under the new policy.
func (e *env) setRetention(ctx context.Context, uid types.UID, p *appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy) error {
	ns, name := e.spec.ns(), e.spec.name()
	sts, err := e.c.Kube.AppsV1().StatefulSets(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("reading StatefulSet %s/%s: %w", ns, name, err)
	}
	if sts.UID != uid {
		return fmt.Errorf("StatefulSet %s/%s was recreated by someone else (uid %s, expected %s); rebind leaves its claim retention policy alone", ns, name, sts.UID, uid)
	}
	if retentionEqual(sts.Spec.PersistentVolumeClaimRetentionPolicy, p) {
		return nil
	}
	sts.Spec.PersistentVolumeClaimRetentionPolicy = p.DeepCopy()
	updated, err := e.c.Kube.AppsV1().StatefulSets(ns).Update(ctx, sts, metav1.UpdateOptions{})
	if err != nil {
		return fmt.Errorf("setting persistentVolumeClaimRetentionPolicy %s on StatefulSet %s/%s: %w", policyString(p), ns, name, err)
	}
	gen := updated.Generation
	_, err = kube.Until(ctx, e.spec.Timeouts.Wait, fmt.Sprintf("the StatefulSet controller to observe generation %d of %s/%s", gen, ns, name),
		kube.NamedLW(e.c.Kube.AppsV1().StatefulSets(ns), name),
		func(s *appsv1.StatefulSet, exists bool) (bool, error) {
			if !exists || s.UID != uid {
				return false, fmt.Errorf("StatefulSet %s/%s disappeared", ns, name)
			}
			return s.Status.ObservedGeneration >= gen, nil
		}, func(s *appsv1.StatefulSet) string {
			return fmt.Sprintf("observed generation %d", s.Status.ObservedGeneration)
		})
	return err
}

func retentionEqual(a, b *appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy) bool {
	norm := func(p *appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy) appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy {
		if p == nil {
			return retainBoth
		}
		return *p
	}
	return norm(a) == norm(b)
}

// ---------------------------------------------------------------- retention Retain

type retentionStep struct{ *env }

func (s retentionStep) ID() string { return "claim-retention" }
func (s retentionStep) Describe() string {
	return fmt.Sprintf("set persistentVolumeClaimRetentionPolicy of StatefulSet %s to Retain (was %s), so its controller deletes no claim", s.spec.name(), policyString(s.spec.originalRetention()))
}
func (s retentionStep) Precondition(ctx context.Context) error {
	sts, err := s.c.Kube.AppsV1().StatefulSets(s.spec.ns()).Get(ctx, s.spec.name(), metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("StatefulSet %s/%s: %w", s.spec.ns(), s.spec.name(), err)
	}
	if sts.UID != s.spec.Target.StatefulSet.UID {
		return fmt.Errorf("StatefulSet %s/%s was recreated by someone else", s.spec.ns(), s.spec.name())
	}
	return nil
}
func (s retentionStep) Apply(ctx context.Context) error {
	return s.setRetention(ctx, s.spec.Target.StatefulSet.UID, &retainBoth)
}
func (s retentionStep) Check(ctx context.Context) error {
	sts, err := s.c.Kube.AppsV1().StatefulSets(s.spec.ns()).Get(ctx, s.spec.name(), metav1.GetOptions{})
	if apierrors.IsNotFound(err) || (err == nil && sts.UID != s.spec.Target.StatefulSet.UID) {
		return nil // deleted by a later step: its policy no longer matters
	}
	if err != nil {
		return err
	}
	if deletesClaims(sts.Spec.PersistentVolumeClaimRetentionPolicy) {
		return fmt.Errorf("StatefulSet %s/%s has %s again", s.spec.ns(), s.spec.name(), policyString(sts.Spec.PersistentVolumeClaimRetentionPolicy))
	}
	return nil
}

// Undo puts the user's policy back on the original StatefulSet while it
// exists; once the orphan step's undo has recreated it, it already carries
// that policy.
func (s retentionStep) Undo(ctx context.Context) error {
	sts, err := s.c.Kube.AppsV1().StatefulSets(s.spec.ns()).Get(ctx, s.spec.name(), metav1.GetOptions{})
	if apierrors.IsNotFound(err) || (err == nil && sts.UID != s.spec.Target.StatefulSet.UID) {
		return nil
	}
	if err != nil {
		return err
	}
	return s.setRetention(ctx, sts.UID, s.spec.originalRetention())
}
func (s retentionStep) ServerDryRun(ctx context.Context) error {
	b, _ := json.Marshal(map[string]any{"spec": map[string]any{"persistentVolumeClaimRetentionPolicy": retainBoth}})
	_, err := s.c.Kube.AppsV1().StatefulSets(s.spec.ns()).Patch(ctx, s.spec.name(), types.MergePatchType, b, metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}})
	return err
}

// ---------------------------------------------------------------- retention back

// retentionBackStep gives the redeployed StatefulSet the user's policy
// once every dashboard is verified; until then it runs with Retain, so
// that a rollback scaling it down deletes nothing.
type retentionBackStep struct{ *env }

func (s retentionBackStep) ID() string { return "claim-retention-back" }
func (s retentionBackStep) Describe() string {
	return fmt.Sprintf("put persistentVolumeClaimRetentionPolicy %s back on the redeployed StatefulSet %s", policyString(s.spec.originalRetention()), s.spec.name())
}
func (s retentionBackStep) newUID() (types.UID, error) {
	uid := types.UID(s.value(keyNewSTS))
	if uid == "" {
		return "", fmt.Errorf("the redeployed StatefulSet %s/%s is not recorded in the journal", s.spec.ns(), s.spec.name())
	}
	return uid, nil
}
func (s retentionBackStep) Precondition(ctx context.Context) error {
	_, err := s.newUID()
	return err
}
func (s retentionBackStep) Apply(ctx context.Context) error {
	uid, err := s.newUID()
	if err != nil {
		return err
	}
	return s.setRetention(ctx, uid, s.spec.originalRetention())
}
func (s retentionBackStep) Check(ctx context.Context) error {
	sts, err := s.c.Kube.AppsV1().StatefulSets(s.spec.ns()).Get(ctx, s.spec.name(), metav1.GetOptions{})
	if err != nil {
		return err
	}
	if !retentionEqual(sts.Spec.PersistentVolumeClaimRetentionPolicy, s.spec.originalRetention()) {
		return fmt.Errorf("StatefulSet %s/%s has %s, not %s", s.spec.ns(), s.spec.name(), policyString(sts.Spec.PersistentVolumeClaimRetentionPolicy), policyString(s.spec.originalRetention()))
	}
	return nil
}
func (s retentionBackStep) Undo(ctx context.Context) error {
	uid, err := s.newUID()
	if err != nil {
		return nil
	}
	sts, err := s.c.Kube.AppsV1().StatefulSets(s.spec.ns()).Get(ctx, s.spec.name(), metav1.GetOptions{})
	if apierrors.IsNotFound(err) || (err == nil && sts.UID != uid) {
		return nil
	}
	if err != nil {
		return err
	}
	return s.setRetention(ctx, uid, &retainBoth)
}
