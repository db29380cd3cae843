// Package migrate moves a StatefulSet's data volumes onto chosen
// PersistentVolumes (the same ones, or restored copies) as a plan of
// idempotent steps, verifies the application afterwards and rolls back when
// anything was lost.
package migrate

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"

	"github.com/rebind-dev/rebind/pkg/discovery"
	"github.com/rebind-dev/rebind/pkg/workload"
)

// Strategy chooses where the data comes from.
type Strategy string

const (
	// Reuse keeps every ordinal's PV and binds the redeployed StatefulSet to it.
	Reuse Strategy = "reuse"
	// Restore snapshots every ordinal's claim (or takes an existing snapshot)
	// and binds the StatefulSet to PVs restored from those snapshots.
	Restore Strategy = "restore"
	// VeleroRestore restores the claims from a Velero Backup (a data copy,
	// so any driver) and binds the StatefulSet to the restored PVs; see
	// velero_steps.go.
	VeleroRestore Strategy = "velero-restore"
)

// Timeouts bound every wait.
type Timeouts struct {
	Wait     time.Duration `json:"wait"`     // binds, deletions, pods
	Snapshot time.Duration `json:"snapshot"` // snapshot ready, restore provisioned
	Verify   time.Duration `json:"verify"`   // application answering after redeploy
	// VeleroPickup bounds the wait for the Velero server to take up a new
	// Backup or Restore (no phase means no server); default 1m.
	VeleroPickup time.Duration `json:"veleroPickup,omitempty"`
	// VeleroRestore bounds the wait for rebind's Velero Restore, queued
	// behind others included (a server runs one at a time); default: Snapshot.
	VeleroRestore time.Duration `json:"veleroRestore,omitempty"`
}

// DefaultTimeouts suit real clusters; tests shorten them.
func DefaultTimeouts() Timeouts {
	return Timeouts{Wait: 10 * time.Minute, Snapshot: 30 * time.Minute, Verify: 5 * time.Minute}
}

// Options is what the user asked for.
type Options struct {
	Target       discovery.Options
	Strategy     Strategy
	ToClass      string // target StorageClass; default: the current class
	Size         string // claim size for new claims; default: the template's
	FromSnapshot string // restore from existing snapshot(s); "{ordinal}" is replaced
	// FromPV binds reuse to these PVs (Released or Available, e.g. kept
	// after a helm uninstall) instead of the current ones; "{ordinal}" is
	// replaced.
	FromPV string
	// ReadDB gives the path of a PV's application database read offline
	// (--offline-volume-root): the reference for --from-pv.
	ReadDB       func(ctx context.Context, pv *corev1.PersistentVolume) (path string, done func(), err error)
	Quiesce      bool   // scale to 0 before snapshotting
	KeepRetain   bool   // leave Retain on the PVs in use
	NoRollback   bool   // keep the failed state for inspection
	BaselineFile string // inventory saved earlier, instead of capturing now
	SkipVerify   bool   // no application check (discouraged)
	// Again runs a migration even when the same one completed moments ago
	// (by default such a re-run, after a run killed at its very end,
	// reports that run instead of migrating a second time).
	Again         bool
	Timeouts      Timeouts
	HolderID      string // lease holder identity
	ChartVersion  string // Grafana chart version, for the values advice
	ChartHasVName *bool  // override detection of persistence.volumeName support

	// Engines the cluster already runs (velero_steps.go, helm_steps.go).
	Backup          string // BackupNone or BackupVelero
	VeleroNamespace string // where Velero runs; default velero
	FromBackup      string // Velero Backup to restore (strategy velero-restore)
	// SnapshotMoveData asks --backup velero for Velero's data mover (the
	// volume data copied to the backup location); it needs node-agent.
	SnapshotMoveData bool
	Redeploy         string // RedeployDirect or RedeployHelm
	// GrafanaPodProxy: the checker reaches Grafana through the API
	// server's pod proxy, so preflight checks PodProxyPermissions too.
	GrafanaPodProxy bool
	// Install says what to redeploy onto FromPV when the release's
	// workload no longer exists (frompv_install.go).
	Install *InstallOptions
	// ToKind switches the release's persistence.type (tokind.go):
	// ToStatefulSet or ToDeployment; "" keeps the kind.
	ToKind string
}

// Spec is the resolved, immutable input of a run. It is stored in the
// journal so that a resumed run rebuilds exactly the same plan even though
// the objects it was read from have since been deleted.
type Spec struct {
	RunID        string            `json:"runID"`
	Strategy     Strategy          `json:"strategy"`
	Target       *discovery.Target `json:"target"`
	ToClass      string            `json:"toClass"`
	Size         string            `json:"size"`
	Snapshots    []string          `json:"snapshots,omitempty"`    // per ordinal
	ExistingSnap bool              `json:"existingSnap,omitempty"` // true: snapshots are the user's, never deleted
	FromPVs      []string          `json:"fromPVs,omitempty"`      // per ordinal, reuse onto these PVs
	Quiesce      bool              `json:"quiesce,omitempty"`
	KeepRetain   bool              `json:"keepRetain,omitempty"`
	SkipVerify   bool              `json:"skipVerify,omitempty"`
	VolumeName   bool              `json:"volumeNameInTemplate"` // replicas == 1
	// KeepClaims: a StatefulSet reusing the volumes its claims are bound
	// to keeps those claims. The controller adopts a claim of the right
	// name as it is, so only the StatefulSet is recreated (with volumeName
	// in its template); the pods keep serving and no volume is ever
	// released, even for a moment. A journal written before this field
	// existed decodes it false and resumes the claim swap it planned.
	KeepClaims bool     `json:"keepClaims,omitempty"`
	Timeouts   Timeouts `json:"timeouts"`

	Backup          string `json:"backup,omitempty"`
	VeleroNamespace string `json:"veleroNamespace,omitempty"`
	FromBackup      string `json:"fromBackup,omitempty"`
	SnapshotMove    bool   `json:"snapshotMoveData,omitempty"`
	Redeploy        string `json:"redeploy,omitempty"`
	// Install: the release is installed onto FromPVs[0] (its workload was
	// gone); frompv_install.go.
	Install *InstallSpec `json:"install,omitempty"`
	// ToKind: the workload kind the data moves to (tokind.go).
	ToKind string `json:"toKind,omitempty"`
}

// privateTarget is the key, in the journal's Secret, of the target as
// discovered: the workload's whole manifest (literal env values and
// last-applied-configuration included) and the original claims and PVs.
const privateTarget = "target.json"

// forJournal splits the spec for the journal: a copy without anything
// secret for its ConfigMap (readable by whoever may read ConfigMaps in the
// namespace), and the target as discovered for its Secret, from which a
// resume or a rollback recreates the workload exactly as it was.
func (s *Spec) forJournal() (*Spec, map[string][]byte, error) {
	full, err := json.Marshal(s.Target)
	if err != nil {
		return nil, nil, err
	}
	public := *s
	public.Target = redactTarget(s.Target)
	return &public, map[string][]byte{privateTarget: full}, nil
}

// redactTarget is a copy of t without literal env values and without
// kubectl's last-applied-configuration (or managedFields) on any object it
// holds.
func redactTarget(t *discovery.Target) *discovery.Target {
	c := *t
	c.StatefulSet = workload.RedactStatefulSet(t.StatefulSet)
	c.Deployment = workload.RedactDeployment(t.Deployment)
	c.Ordinals = make([]discovery.Ordinal, len(t.Ordinals))
	for i, o := range t.Ordinals {
		if o.PVC != nil {
			o.PVC = o.PVC.DeepCopy()
			workload.DropLastApplied(&o.PVC.ObjectMeta)
			o.PVC.ManagedFields = nil
		}
		if o.PV != nil {
			o.PV = o.PV.DeepCopy()
			workload.DropLastApplied(&o.PV.ObjectMeta)
			o.PV.ManagedFields = nil
		}
		c.Ordinals[i] = o
	}
	return &c
}

// Fingerprint is what a resumed command must agree with.
func (s *Spec) Fingerprint() string {
	return fmt.Sprintf("strategy=%s class=%s size=%s snapshots=%v quiesce=%v", s.Strategy, s.ToClass, s.Size, s.Snapshots, s.Quiesce)
}

func (s *Spec) ns() string { return s.Target.Namespace }

// name is the workload's: the StatefulSet or the Deployment.
func (s *Spec) name() string { return s.Target.Name() }

func (s *Spec) replicas() int32 { return int32(s.Target.Replicas()) }

// stagingClaim is the temporary claim a snapshot is restored into before
// its PV is handed to the StatefulSet.
func (s *Spec) stagingClaim(ord int) string {
	return trim63(fmt.Sprintf("rebind-%s-%s", s.RunID, s.Target.Ordinals[ord].Claim))
}

// snapshotName is the VolumeSnapshot rebind takes of an ordinal.
func (s *Spec) snapshotName(ord int) string {
	if len(s.Snapshots) > ord && s.Snapshots[ord] != "" {
		return s.Snapshots[ord]
	}
	return trim63(fmt.Sprintf("%s-%s", s.Target.Ordinals[ord].Claim, s.RunID))
}

func trim63(n string) string {
	if len(n) > 63 {
		return n[:63]
	}
	return n
}

// templateSpec is the claim template as the redeployed StatefulSet will
// carry it: new class, new size.
func (s *Spec) templateSpec() corev1.PersistentVolumeClaimSpec {
	spec := *s.Target.Template().Spec.DeepCopy()
	spec.StorageClassName = ptr.To(s.ToClass)
	spec.Resources.Requests = corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(s.Size)}
	spec.DataSource, spec.DataSourceRef = nil, nil
	return spec
}

// Journal value keys.
func keyReclaim(pv string) string    { return "reclaim/" + pv }
func keyNewPV(ord int) string        { return fmt.Sprintf("newpv/%d", ord) }
func keyClaimRef(pv string) string   { return "claimref/" + pv }
func keyBaseline(ord int) string     { return fmt.Sprintf("baseline-%d", ord) }
func keyRestoreState(ord int) string { return fmt.Sprintf("restore/%d", ord) }

const (
	keyReplicas = "replicas"
	keyVerified = "verified"
	keyNewSTS   = "new-sts-uid"
)
