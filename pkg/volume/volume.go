// Package volume holds the PersistentVolume rules that decide whether a
// migration can keep its data: reclaim policies, safe reservation of a PV
// for exactly one claim, and claim/PV compatibility.
package volume

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	corev1helper "k8s.io/component-helpers/scheduling/corev1"
	"k8s.io/utils/ptr"

	"github.com/rebind-dev/rebind/pkg/kube"
)

// AnnBoundByController marks a claimRef set by the PV binder; a claimRef
// without it is a user's pre-binding, which the binder honours.
const AnnBoundByController = "pv.kubernetes.io/bound-by-controller"

// Incompatible explains why a claim cannot bind a PV, with the fix.
type Incompatible struct {
	PV, Claim string
	Reasons   []string
}

func (e *Incompatible) Error() string {
	return fmt.Sprintf("claim %s cannot bind PersistentVolume %s: %s", e.Claim, e.PV, strings.Join(e.Reasons, "; "))
}

// ClaimShape is what a claim will ask of the PV it binds.
type ClaimShape struct {
	Namespace, Name  string
	StorageClassName string
	Request          resource.Quantity
	AccessModes      []corev1.PersistentVolumeAccessMode
	VolumeMode       corev1.PersistentVolumeMode
}

// ShapeFromSpec derives a claim's demands from a claim spec (a StatefulSet's
// template, typically). An empty class means the cluster default, which the
// caller must resolve first: the binder compares the admitted value.
func ShapeFromSpec(ns, name string, spec corev1.PersistentVolumeClaimSpec) ClaimShape {
	s := ClaimShape{Namespace: ns, Name: name, StorageClassName: ptr.Deref(spec.StorageClassName, ""),
		Request: spec.Resources.Requests[corev1.ResourceStorage], AccessModes: spec.AccessModes,
		VolumeMode: ptr.Deref(spec.VolumeMode, corev1.PersistentVolumeFilesystem)}
	return s
}

// CheckFits applies the PV binder's matching rules for a claim naming the PV
// in spec.volumeName, so a mismatch is found before anything is deleted
// rather than as a claim stuck Pending afterwards.
func CheckFits(pv *corev1.PersistentVolume, c ClaimShape) error {
	var reasons []string
	if pv.Spec.StorageClassName != c.StorageClassName {
		reasons = append(reasons, fmt.Sprintf("storageClassName differs (PV %q, claim %q): the claim must use the PV's class", pv.Spec.StorageClassName, c.StorageClassName))
	}
	capacity := pv.Spec.Capacity[corev1.ResourceStorage]
	if capacity.Cmp(c.Request) < 0 {
		reasons = append(reasons, fmt.Sprintf("capacity %s is smaller than the request %s: lower the request or use a larger volume", capacity.String(), c.Request.String()))
	}
	for _, m := range c.AccessModes {
		if !slices.Contains(pv.Spec.AccessModes, m) {
			reasons = append(reasons, fmt.Sprintf("access mode %s is not offered (PV has %v)", m, pv.Spec.AccessModes))
		}
	}
	if pvMode := ptr.Deref(pv.Spec.VolumeMode, corev1.PersistentVolumeFilesystem); pvMode != c.VolumeMode {
		reasons = append(reasons, fmt.Sprintf("volumeMode differs (PV %s, claim %s)", pvMode, c.VolumeMode))
	}
	if len(reasons) > 0 {
		return &Incompatible{PV: pv.Name, Claim: c.Namespace + "/" + c.Name, Reasons: reasons}
	}
	return nil
}

// RefState is what a PV's claimRef says about who may use the PV, seen
// from one claim (the one rebind wants to bind).
type RefState int

const (
	// RefNone: no claimRef; the binder gives the PV to any matching claim.
	RefNone RefState = iota
	// RefReservedForUs: namespace/name of our claim, no uid.
	RefReservedForUs
	// RefBoundToUs: our claim's name and the uid of the live claim.
	RefBoundToUs
	// RefStale: a uid whose claim is gone or was replaced by a new claim of
	// the same name; the binder will never bind it again (Released).
	RefStale
	// RefReservedElsewhere: another claim's namespace/name with no uid. It
	// is a pre-binding for a claim that may not exist yet, and it belongs
	// to that claim: "the claim does not exist" does not make it free.
	RefReservedElsewhere
	// RefBoundElsewhere: another claim's name and the uid of that live claim.
	RefBoundElsewhere
)

func (s RefState) String() string {
	return [...]string{"free", "reserved for this claim", "bound to this claim", "stale (its claim is gone)",
		"reserved for another claim", "bound to another claim"}[s]
}

// ClassifyClaimRef reads the PV's claimRef as the PV binder does, from the
// point of view of claim ns/name. It reads the claim the uid names, since
// only a uid whose claim is gone makes a claimRef stale.
func ClassifyClaimRef(ctx context.Context, k kubernetes.Interface, pv *corev1.PersistentVolume, ns, name string) (RefState, error) {
	ref := pv.Spec.ClaimRef
	if ref == nil {
		return RefNone, nil
	}
	ours := ref.Namespace == ns && ref.Name == name
	if ref.UID == "" {
		if ours {
			return RefReservedForUs, nil
		}
		return RefReservedElsewhere, nil
	}
	owner, err := k.CoreV1().PersistentVolumeClaims(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return RefStale, nil
	}
	if err != nil {
		return 0, fmt.Errorf("checking claim %s/%s that holds PersistentVolume %s: %w", ref.Namespace, ref.Name, pv.Name, err)
	}
	switch {
	case owner.UID != ref.UID:
		return RefStale, nil
	case ours:
		return RefBoundToUs, nil
	default:
		return RefBoundElsewhere, nil
	}
}

// HeldElsewhereError says a PV is bound to, or reserved for, another claim.
type HeldElsewhereError struct {
	PV, Owner, Wanted string
	// Reserved: a claimRef without uid (a pre-binding), not a binding.
	Reserved bool
}

func (e *HeldElsewhereError) Error() string {
	if e.Reserved {
		return fmt.Sprintf("PersistentVolume %s is reserved for claim %s (claimRef with namespace and name, no uid: a pre-binding that belongs to that claim even before it exists); rebind will not take it for %s. Choose another volume, or, if that reservation is stale and yours to drop, clear it with `kubectl patch pv %s --type json -p '[{\"op\":\"remove\",\"path\":\"/spec/claimRef\"}]'` and re-run",
			e.PV, e.Owner, e.Wanted, e.PV)
	}
	return fmt.Sprintf("PersistentVolume %s is bound to claim %s, which still exists; rebind will not take it for %s. Choose another volume, or delete claim %s yourself if its data is not needed", e.PV, e.Owner, e.Wanted, e.Owner)
}

// CheckReservable says whether a PV may be reserved for claim ns/name: it
// is free, already ours, or held only by a claim that no longer exists.
func CheckReservable(ctx context.Context, k kubernetes.Interface, pv *corev1.PersistentVolume, ns, name string) error {
	st, err := ClassifyClaimRef(ctx, k, pv, ns, name)
	if err != nil {
		return err
	}
	switch st {
	case RefReservedElsewhere, RefBoundElsewhere:
		ref := pv.Spec.ClaimRef
		return &HeldElsewhereError{PV: pv.Name, Owner: ref.Namespace + "/" + ref.Name, Wanted: ns + "/" + name, Reserved: st == RefReservedElsewhere}
	}
	return nil
}

// IsReservedFor says whether the PV is reserved (or bound) for ns/name.
func IsReservedFor(pv *corev1.PersistentVolume, ns, name string) bool {
	r := pv.Spec.ClaimRef
	return r != nil && r.Namespace == ns && r.Name == name
}

// Reserve points the PV's claimRef at ns/name with no uid. Clearing the
// claimRef instead would make the PV Available to any claim that matches,
// and data could end up under the wrong claim; with namespace and name only,
// the binder keeps it for exactly that claim.
func Reserve(ctx context.Context, k kubernetes.Interface, pvName, ns, name string, dryRun bool) error {
	// The binder updates the PV's status as claims come and go; re-read and
	// retry rather than fail a step on its write.
	return retry.RetryOnConflict(retry.DefaultRetry, func() error { return reserve(ctx, k, pvName, ns, name, dryRun) })
}

func reserve(ctx context.Context, k kubernetes.Interface, pvName, ns, name string, dryRun bool) error {
	pv, err := k.CoreV1().PersistentVolumes().Get(ctx, pvName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("reading PersistentVolume %s: %w", pvName, err)
	}
	st, err := ClassifyClaimRef(ctx, k, pv, ns, name)
	if err != nil {
		return err
	}
	switch st {
	case RefReservedForUs, RefBoundToUs:
		return nil
	case RefReservedElsewhere, RefBoundElsewhere:
		return CheckReservable(ctx, k, pv, ns, name)
	}
	if pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimRetain {
		return fmt.Errorf("refusing to reserve PersistentVolume %s with reclaim policy %s: it must be Retain first", pvName, pv.Spec.PersistentVolumeReclaimPolicy)
	}
	pv.Spec.ClaimRef = &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: ns, Name: name}
	delete(pv.Annotations, AnnBoundByController)
	// pv carries the resourceVersion the check above was made on: if anyone
	// changed the PV since, the update is a conflict, re-read and re-checked,
	// never an overwrite.
	_, err = k.CoreV1().PersistentVolumes().Update(ctx, pv, updateOpts(dryRun))
	if err != nil && !apierrors.IsConflict(err) {
		return fmt.Errorf("reserving PersistentVolume %s for claim %s/%s: %w", pvName, ns, name, err)
	}
	return err
}

// SetReclaimPolicy changes a PV's policy and returns the previous one.
func SetReclaimPolicy(ctx context.Context, k kubernetes.Interface, pvName string, policy corev1.PersistentVolumeReclaimPolicy, dryRun bool) (prev corev1.PersistentVolumeReclaimPolicy, err error) {
	return SetReclaimPolicyIf(ctx, k, pvName, policy, nil, dryRun)
}

// SetReclaimPolicyIf changes a PV's policy only while guard accepts the PV
// as read just before the write (and the write carries that read's
// resourceVersion, so a change in between is re-read and re-checked).
func SetReclaimPolicyIf(ctx context.Context, k kubernetes.Interface, pvName string, policy corev1.PersistentVolumeReclaimPolicy, guard func(*corev1.PersistentVolume) error, dryRun bool) (prev corev1.PersistentVolumeReclaimPolicy, err error) {
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var e error
		prev, e = setReclaimPolicy(ctx, k, pvName, policy, guard, dryRun)
		return e
	})
	return prev, err
}

// ClaimedBy accepts a PV whose claimRef names claim ns/name: the guard for
// putting Delete back, which only the owner of a volume may do.
func ClaimedBy(ns, name string) func(*corev1.PersistentVolume) error {
	return func(pv *corev1.PersistentVolume) error {
		if r := pv.Spec.ClaimRef; r == nil || r.Namespace != ns || r.Name != name {
			owner := "nobody"
			if r != nil {
				owner = r.Namespace + "/" + r.Name
			}
			return fmt.Errorf("PersistentVolume %s now belongs to %s, not claim %s/%s: rebind leaves its reclaim policy alone", pv.Name, owner, ns, name)
		}
		return nil
	}
}

func setReclaimPolicy(ctx context.Context, k kubernetes.Interface, pvName string, policy corev1.PersistentVolumeReclaimPolicy, guard func(*corev1.PersistentVolume) error, dryRun bool) (corev1.PersistentVolumeReclaimPolicy, error) {
	pv, err := k.CoreV1().PersistentVolumes().Get(ctx, pvName, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("reading PersistentVolume %s: %w", pvName, err)
	}
	prev := pv.Spec.PersistentVolumeReclaimPolicy
	if prev == policy {
		return prev, nil
	}
	if guard != nil {
		if err := guard(pv); err != nil {
			return prev, err
		}
	}
	if policy == corev1.PersistentVolumeReclaimDelete && pv.Status.Phase == corev1.VolumeReleased {
		// The binder would delete the disk at once.
		return prev, fmt.Errorf("refusing to set reclaim policy Delete on Released PersistentVolume %s: that would destroy its data", pvName)
	}
	pv.Spec.PersistentVolumeReclaimPolicy = policy
	if _, err := k.CoreV1().PersistentVolumes().Update(ctx, pv, updateOpts(dryRun)); err != nil {
		if apierrors.IsConflict(err) {
			return prev, err
		}
		return prev, fmt.Errorf("setting reclaim policy %s on PersistentVolume %s: %w", policy, pvName, err)
	}
	return prev, nil
}

func updateOpts(dryRun bool) metav1.UpdateOptions {
	if dryRun {
		return metav1.UpdateOptions{DryRun: []string{metav1.DryRunAll}}
	}
	return metav1.UpdateOptions{}
}

// WaitClaimBound waits until the claim is Bound (to pvName when given).
func WaitClaimBound(ctx context.Context, k kubernetes.Interface, ns, name, pvName string, timeout time.Duration) (*corev1.PersistentVolumeClaim, error) {
	what := fmt.Sprintf("claim %s/%s to be Bound", ns, name)
	if pvName != "" {
		what = fmt.Sprintf("claim %s/%s to bind PersistentVolume %s", ns, name, pvName)
	}
	return kube.Until(ctx, timeout, what, kube.ClaimLW(k, ns, name),
		func(c *corev1.PersistentVolumeClaim, exists bool) (bool, error) {
			if !exists {
				return false, nil
			}
			if c.Status.Phase == corev1.ClaimBound {
				if pvName != "" && c.Spec.VolumeName != pvName {
					return false, fmt.Errorf("claim %s/%s bound PersistentVolume %s instead of %s", ns, name, c.Spec.VolumeName, pvName)
				}
				return true, nil
			}
			return false, nil
		}, func(c *corev1.PersistentVolumeClaim) string {
			return claimState(ctx, k, c)
		})
}

// claimState explains a pending claim using its latest event, which is
// where the binder says "storageClassName does not match" and the like.
func claimState(ctx context.Context, k kubernetes.Interface, c *corev1.PersistentVolumeClaim) string {
	s := fmt.Sprintf("phase %s", c.Status.Phase)
	evs, err := k.CoreV1().Events(c.Namespace).List(context.WithoutCancel(ctx), metav1.ListOptions{
		FieldSelector: "involvedObject.kind=PersistentVolumeClaim,involvedObject.name=" + c.Name,
	})
	if err == nil && len(evs.Items) > 0 {
		latest := evs.Items[0]
		for _, e := range evs.Items[1:] {
			if e.LastTimestamp.After(latest.LastTimestamp.Time) {
				latest = e
			}
		}
		s += fmt.Sprintf(", event %s: %s", latest.Reason, latest.Message)
	}
	return s
}

// WaitGone waits until a claim no longer exists (its finalizer cleared).
func WaitClaimGone(ctx context.Context, k kubernetes.Interface, ns, name string, uid types.UID, timeout time.Duration) error {
	_, err := kube.Until(ctx, timeout, fmt.Sprintf("claim %s/%s to be deleted", ns, name), kube.ClaimLW(k, ns, name),
		func(c *corev1.PersistentVolumeClaim, exists bool) (bool, error) {
			return !exists || (uid != "" && c.UID != uid), nil
		}, func(c *corev1.PersistentVolumeClaim) string {
			return fmt.Sprintf("finalizers %v (a pod may still use it)", c.Finalizers)
		})
	return err
}

// WaitTerminatingClaim waits until a claim of that name that is being
// deleted is gone, so the name can be used again; it reports whether it
// had to wait. A live claim, or none, returns at once.
func WaitTerminatingClaim(ctx context.Context, k kubernetes.Interface, ns, name string, timeout time.Duration) (bool, error) {
	c, err := k.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil || c.DeletionTimestamp == nil {
		return false, nil
	}
	return true, WaitClaimGone(ctx, k, ns, name, c.UID, timeout)
}

// WaitPVPhase waits for a PV to reach one of the phases.
func WaitPVPhase(ctx context.Context, k kubernetes.Interface, name string, timeout time.Duration, phases ...corev1.PersistentVolumePhase) (*corev1.PersistentVolume, error) {
	return kube.Until(ctx, timeout, fmt.Sprintf("PersistentVolume %s to be %v", name, phases), kube.PVLW(k, name),
		func(pv *corev1.PersistentVolume, exists bool) (bool, error) {
			// Not there may only mean the watch cache has not seen a PV
			// just created yet: keep waiting.
			return exists && slices.Contains(phases, pv.Status.Phase), nil
		}, func(pv *corev1.PersistentVolume) string { return "phase " + string(pv.Status.Phase) })
}

// Unreachable says why no node can use the PV (its required node affinity
// matches none of nodes: a local volume on a node that is gone), or "".
func Unreachable(pv *corev1.PersistentVolume, nodes []corev1.Node) string {
	na := pv.Spec.NodeAffinity
	if na == nil || na.Required == nil || len(na.Required.NodeSelectorTerms) == 0 {
		return ""
	}
	for i := range nodes {
		if ok, err := corev1helper.MatchNodeSelectorTerms(&nodes[i], na.Required); err == nil && ok {
			return ""
		}
	}
	return fmt.Sprintf("its node affinity matches none of the cluster's %d nodes, so no pod could mount it", len(nodes))
}
