package snapshot

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/rebind-dev/rebind/pkg/volume"
)

// RestoreState is the progress of one restore, kept by the caller (in the
// journal, for a migration) so that a run killed at any point knows which
// volumes it must still hand back.
type RestoreState struct {
	// Candidates were Available in the class before the claim was created:
	// none of them can hold the snapshot's data.
	Candidates volume.Candidates `json:"candidates,omitempty"`
	// Mistaken are the PVs the binder gave the claim instead of a volume
	// provisioned from the snapshot; each is held until given back.
	Mistaken []volume.MistakenBinding `json:"mistaken,omitempty"`
}

// WrongVolumeError says the binder kept binding the restore claim to
// existing volumes instead of one provisioned from the snapshot.
type WrongVolumeError struct {
	Claim, Snapshot, Class string
	PVs                    []string
}

func (e *WrongVolumeError) Error() string {
	return fmt.Sprintf("wrong volume bound: the PV binder bound restore claim %s to existing PersistentVolume(s) %s of class %s instead of a volume provisioned from VolumeSnapshot %s (kubernetes/kubernetes#101878); rebind handed them back as it found them. Make them unavailable to class %s (reserve each for the claim it is meant for, or move it to another StorageClass) and re-run",
		e.Claim, strings.Join(e.PVs, ", "), e.Class, e.Snapshot, e.Class)
}

// Restorer restores a snapshot into a claim and makes sure the volume the
// claim ends up with is one provisioned from the snapshot.
//
// Kubernetes offers no way to stop the binder from matching a claim with a
// dataSource to an existing Available PV of its class (a label selector
// would, but provisioners refuse claims with one). So each binding is
// checked: a PV that existed before the claim is someone else's. It is
// held (Retain, so deleting the claim cannot destroy it), the claim is
// deleted, which leaves that PV Released with the dead claim's uid, where
// no new claim can bind it, and the claim is created again under the same
// name. Once the claim has its own volume, every held PV is handed back
// exactly as it was found.
type Restorer struct {
	Kube    kubernetes.Interface
	Claim   RestoreClaim
	Timeout time.Duration
	// Save persists the state before each change it announces.
	Save func(*RestoreState) error
	// Warn tells the user what happened (a mistaken binding).
	Warn func(string)
	// MaxAttempts bounds the re-creations (default 5).
	MaxAttempts int
}

// Run creates the claim (or takes up the one a killed run created), waits
// until it is bound to a volume provisioned for it and returns the claim
// and that volume. Volumes bound by mistake are given back on every
// return; ones it could not give back are in the error.
func (r *Restorer) Run(ctx context.Context, st *RestoreState) (c *corev1.PersistentVolumeClaim, pv *corev1.PersistentVolume, err error) {
	defer func() {
		// Hand back on every way out, also when interrupted: a held volume
		// is someone else's and must not stay out of their reach.
		gctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.Timeout)
		defer cancel()
		if gerr := r.GiveBack(gctx, st); gerr != nil {
			err = errors.Join(err, gerr)
		}
	}()
	// A run killed half-way through an attempt finds the claim in the
	// state it left: bound by mistake (held and detached below again, both
	// idempotent), or gone (created anew).
	maxAttempts := r.MaxAttempts
	if maxAttempts <= 0 {
		maxAttempts = 5
	}
	k, ns, name := r.Kube, r.Claim.Namespace, r.Claim.Name
	for {
		c, err := k.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil || c.DeletionTimestamp != nil {
			if _, err := volume.WaitTerminatingClaim(ctx, k, ns, name, r.Timeout); err != nil {
				return nil, nil, err
			}
			cands, err := volume.ListCandidates(ctx, k, r.Claim.StorageClass)
			if err != nil {
				return nil, nil, err
			}
			if st.Candidates == nil {
				st.Candidates = volume.Candidates{}
			}
			for n, ann := range cands {
				if _, seen := st.Candidates[n]; !seen {
					st.Candidates[n] = ann
				}
			}
			if err := r.save(st); err != nil {
				return nil, nil, err
			}
			if _, err := CreateRestoreClaim(ctx, k, r.Claim, false); err != nil {
				return nil, nil, err
			}
		}
		c, err = volume.WaitClaimBound(ctx, k, ns, name, "", r.Timeout)
		if err != nil {
			return nil, nil, err
		}
		pv, err := k.CoreV1().PersistentVolumes().Get(ctx, c.Spec.VolumeName, metav1.GetOptions{})
		if err != nil {
			return nil, nil, fmt.Errorf("reading PersistentVolume %s bound to claim %s/%s: %w", c.Spec.VolumeName, ns, name, err)
		}
		if volume.ProvisionedFor(pv, c, st.Candidates) {
			return c, pv, nil
		}
		m := volume.NewMistakenBinding(pv, c, st.Candidates)
		if !slices.ContainsFunc(st.Mistaken, func(x volume.MistakenBinding) bool { return x.ClaimUID == m.ClaimUID }) {
			st.Mistaken = append(st.Mistaken, m)
			if err := r.save(st); err != nil {
				return nil, nil, err
			}
		}
		r.warn(fmt.Sprintf("wrong volume bound: the PV binder gave restore claim %s/%s the existing %s, not a volume provisioned from VolumeSnapshot %s (kubernetes/kubernetes#101878); holding it aside and creating the claim again; it is given back as it was",
			ns, name, m, r.Claim.Snapshot))
		if err := m.Hold(ctx, k); err != nil {
			return nil, nil, err
		}
		if len(st.Mistaken) >= maxAttempts {
			pvs := make([]string, 0, len(st.Mistaken))
			for _, x := range st.Mistaken {
				pvs = append(pvs, x.PV)
			}
			return nil, nil, &WrongVolumeError{Claim: ns + "/" + name, Snapshot: r.Claim.Snapshot, Class: r.Claim.StorageClass, PVs: pvs}
		}
		if err := m.DetachClaim(ctx, k, r.Timeout); err != nil {
			return nil, nil, err
		}
	}
}

// GiveBack hands back every volume bound by mistake, forgetting each once
// it is back as it was (or taken over by someone else, which is reported).
func (r *Restorer) GiveBack(ctx context.Context, st *RestoreState) error {
	var errs []error
	for len(st.Mistaken) > 0 {
		m := st.Mistaken[0]
		err := m.GiveBack(ctx, r.Kube, r.Timeout)
		var taken *volume.TakenOverError
		if errors.As(err, &taken) {
			r.warn(err.Error())
			err = nil
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s is still held aside (reclaim policy Retain, Released): %w; re-run to hand it back", m, err))
			break
		}
		r.warn(fmt.Sprintf("%s handed back: Available, reclaim policy %s, as it was found", m.PV, m.ReclaimPolicy))
		st.Mistaken = st.Mistaken[1:]
		if err := r.save(st); err != nil {
			errs = append(errs, err)
			break
		}
	}
	return errors.Join(errs...)
}

func (r *Restorer) save(st *RestoreState) error {
	if r.Save == nil {
		return nil
	}
	return r.Save(st)
}

func (r *Restorer) warn(msg string) {
	if r.Warn != nil {
		r.Warn(msg)
	}
}
