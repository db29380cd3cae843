package volume

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
)

// Candidates are the PVs the binder could hand a new claim of one class
// instead of provisioning one: Available, reserved for nobody. The value
// says whether the PV carried the bound-by-controller annotation, so that
// one bound by mistake can be put back exactly as it was.
type Candidates map[string]bool

// ListCandidates lists the Available, unreserved PVs of a class. Taken just
// before a claim is created, it is what the claim can be bound to without
// a volume being provisioned for it.
func ListCandidates(ctx context.Context, k kubernetes.Interface, class string) (Candidates, error) {
	list, err := k.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing PersistentVolumes of class %s: %w", class, err)
	}
	out := Candidates{}
	for _, pv := range list.Items {
		if pv.Spec.StorageClassName == class && pv.Spec.ClaimRef == nil && pv.Status.Phase == corev1.VolumeAvailable {
			_, ann := pv.Annotations[AnnBoundByController]
			out[pv.Name] = ann
		}
	}
	return out, nil
}

// ProvisionedFor says whether pv was made for claim c rather than matched
// to it. The PV binder binds a claim with a dataSource to any existing
// Available PV that fits (kubernetes/kubernetes#101878): such a PV holds
// someone else's data, not the snapshot's. A PV provisioned for the claim
// is bound to its uid, did not exist when the candidates were listed and
// was not created before the claim.
func ProvisionedFor(pv *corev1.PersistentVolume, c *corev1.PersistentVolumeClaim, before Candidates) bool {
	if r := pv.Spec.ClaimRef; r == nil || r.UID != c.UID {
		return false
	}
	if _, existed := before[pv.Name]; existed {
		return false
	}
	return !pv.CreationTimestamp.Before(&c.CreationTimestamp)
}

// MistakenBinding records a PV the binder gave one of rebind's claims
// although it was not provisioned for it: someone else's volume, which
// rebind must hand back exactly as it found it.
type MistakenBinding struct {
	PV             string                               `json:"pv"`
	ClaimNamespace string                               `json:"claimNamespace"`
	Claim          string                               `json:"claim"`
	ClaimUID       types.UID                            `json:"claimUID"`
	ReclaimPolicy  corev1.PersistentVolumeReclaimPolicy `json:"reclaimPolicy"`
	// BoundByController: the PV had the annotation before the binder took it.
	BoundByController bool `json:"boundByController,omitempty"`
}

func (m MistakenBinding) String() string {
	return fmt.Sprintf("PersistentVolume %s (bound by the PV binder to claim %s/%s)", m.PV, m.ClaimNamespace, m.Claim)
}

// NewMistakenBinding describes pv, bound to c by mistake.
func NewMistakenBinding(pv *corev1.PersistentVolume, c *corev1.PersistentVolumeClaim, before Candidates) MistakenBinding {
	return MistakenBinding{PV: pv.Name, ClaimNamespace: c.Namespace, Claim: c.Name, ClaimUID: c.UID,
		ReclaimPolicy: pv.Spec.PersistentVolumeReclaimPolicy, BoundByController: before[pv.Name]}
}

// TakenOverError says someone else changed a PV rebind meant to hand back
// since; it is theirs to manage now, and rebind only reports it.
type TakenOverError struct {
	MistakenBinding
	// PolicyLeft: the claimRef was given back, but someone bound the PV
	// before its original reclaim policy could be put back.
	PolicyLeft bool
}

func (e *TakenOverError) Error() string {
	if e.PolicyLeft {
		return fmt.Sprintf("%s was given back and bound by another claim before its reclaim policy could be put back: it stays Retain (it was %s); set it back once you know whose it is", e.MistakenBinding, e.ReclaimPolicy)
	}
	return fmt.Sprintf("%s has been taken over by someone else since; rebind left it as they set it", e.MistakenBinding)
}

// stillOurs accepts the PV only while its claimRef carries the uid of
// rebind's claim.
func (m MistakenBinding) stillOurs(pv *corev1.PersistentVolume) error {
	if r := pv.Spec.ClaimRef; r == nil || r.UID != m.ClaimUID {
		return &TakenOverError{MistakenBinding: m}
	}
	return nil
}

// givenBack: the PV is as rebind found it.
func (m MistakenBinding) givenBack(pv *corev1.PersistentVolume) bool {
	return pv.Spec.ClaimRef == nil && pv.Spec.PersistentVolumeReclaimPolicy == m.ReclaimPolicy
}

// Hold makes the PV survive the deletion of rebind's claim: with reclaim
// policy Delete, deleting the claim would destroy someone else's data.
func (m MistakenBinding) Hold(ctx context.Context, k kubernetes.Interface) error {
	_, err := SetReclaimPolicyIf(ctx, k, m.PV, corev1.PersistentVolumeReclaimRetain, m.stillOurs, false)
	return err
}

// DetachClaim deletes rebind's claim (only that claim, by uid) and waits
// until it is gone. The PV is then Released, its claimRef still carrying
// the dead claim's uid: no claim, not even a new one of the same name, can
// bind it, so the name can be used again for another attempt.
func (m MistakenBinding) DetachClaim(ctx context.Context, k kubernetes.Interface, timeout time.Duration) error {
	pv, err := k.CoreV1().PersistentVolumes().Get(ctx, m.PV, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("reading %s: %w", m, err)
	}
	if pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimRetain {
		return fmt.Errorf("%s has reclaim policy %s: rebind will not delete the claim that holds it", m, pv.Spec.PersistentVolumeReclaimPolicy)
	}
	uid := m.ClaimUID
	err = k.CoreV1().PersistentVolumeClaims(m.ClaimNamespace).Delete(ctx, m.Claim, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("deleting claim %s/%s to free %s: %w", m.ClaimNamespace, m.Claim, m, err)
	}
	return WaitClaimGone(ctx, k, m.ClaimNamespace, m.Claim, m.ClaimUID, timeout)
}

// GiveBack deletes rebind's claim if it still exists and returns the PV to
// the state it was found in: no claimRef (Available again), the
// bound-by-controller annotation as it was, the original reclaim policy.
// It is idempotent. A PV someone else took meanwhile is left as they set
// it: *TakenOverError.
//
// The policy goes back only once the PV is Available: a PV whose status
// still says Released with policy Delete is deleted by the CSI provisioner
// (sig-storage-lib-external-provisioner's shouldDelete looks at the phase
// and the policy, not at the claimRef), so clearing the claimRef and
// restoring Delete in one write would destroy the volume.
func (m MistakenBinding) GiveBack(ctx context.Context, k kubernetes.Interface, timeout time.Duration) error {
	pv, err := k.CoreV1().PersistentVolumes().Get(ctx, m.PV, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", m, err)
	}
	if m.givenBack(pv) {
		return nil
	}
	if pv.Spec.ClaimRef != nil {
		if err := m.Hold(ctx, k); err != nil {
			return err
		}
		if err := m.DetachClaim(ctx, k, timeout); err != nil {
			return err
		}
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			pv, err := k.CoreV1().PersistentVolumes().Get(ctx, m.PV, metav1.GetOptions{})
			if err != nil {
				return fmt.Errorf("reading %s: %w", m, err)
			}
			if pv.Spec.ClaimRef == nil {
				return nil
			}
			if err := m.stillOurs(pv); err != nil {
				return err
			}
			pv.Spec.ClaimRef = nil
			if !m.BoundByController {
				delete(pv.Annotations, AnnBoundByController)
			}
			// pv carries the resourceVersion just checked: a change in
			// between is a conflict, re-read and re-checked.
			_, err = k.CoreV1().PersistentVolumes().Update(ctx, pv, metav1.UpdateOptions{})
			if err != nil && !apierrors.IsConflict(err) {
				return fmt.Errorf("clearing the claimRef of %s: %w", m, err)
			}
			return err
		})
		if err != nil {
			return err
		}
	}
	if _, err := WaitPVPhase(ctx, k, m.PV, timeout, corev1.VolumeAvailable, corev1.VolumeBound); err != nil {
		return fmt.Errorf("%s: %w", m, err)
	}
	_, err = SetReclaimPolicyIf(ctx, k, m.PV, m.ReclaimPolicy, func(pv *corev1.PersistentVolume) error {
		if pv.Spec.ClaimRef != nil || pv.Status.Phase != corev1.VolumeAvailable {
			return &TakenOverError{MistakenBinding: m, PolicyLeft: true}
		}
		return nil
	}, false)
	return err
}
