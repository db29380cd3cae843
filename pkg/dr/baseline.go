// Package dr is disaster recovery into another cluster: in cluster A a
// Velero Backup that carries its own baseline (every dashboard's inventory,
// written into the release namespace just before the Backup), and in
// cluster B the release restored from that Backup (namespace and class
// mapping), its workload waited Ready and every dashboard verified against
// the baseline it carried. The drill does the same into a scratch namespace
// of the DR cluster and removes everything it restored there.
//
// What makes it work across clusters is outside rebind: both clusters' Velero
// use one backup location (the Backup is synced into B), and B's CSI driver
// can restore A's snapshots (cloud disk snapshots are visible to every
// cluster of the account; the CSI snapshot handle travels in the backup).
package dr

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rebind-dev/rebind/pkg/discovery"
)

// Labels and annotations rebind puts on what it writes for DR.
const (
	// LabelBaseline marks the baseline ConfigMap; its value is the
	// workload's name.
	LabelBaseline = "rebind.dev/dr-baseline"
	// AnnBackup on a Velero Backup holds the Meta of what it carries: the
	// Backup object travels to the other cluster with its metadata (Velero
	// stores it next to the contents and its backup sync recreates it), so
	// B knows the workload, the classes and the baseline before it restores
	// anything.
	AnnBackup = "rebind.dev/dr"
	// AnnMapping on rebind's Velero Restore records the storage-class
	// mapping it found, to put back also after a resumed run.
	AnnMapping = "rebind.dev/dr-class-mapping"
	// LabelDrill marks the scratch namespace a DR drill made in the DR
	// cluster; its value is the drill's Backup.
	LabelDrill = "rebind.dev/dr-drill"
	// LabelBackup marks Backups rebind took for DR.
	LabelBackup = "rebind.dev/dr-backup"
	// Velero labels every restored object with its Restore's name.
	LabelVeleroRestore = "velero.io/restore-name"

	baselinePrefix = "rebind-dr-baseline-"
	keyMeta        = "meta.json"
	// A ConfigMap may hold 1 MiB in all; the inventories are gzipped
	// (binaryData) and refused above this, naming the workaround.
	maxBaselineBytes = 900 << 10
)

// MetaFormat is the version of Meta; a newer one is refused.
const MetaFormat = 1

// Meta describes the release a DR backup holds.
type Meta struct {
	Format    int       `json:"format"`
	Namespace string    `json:"namespace"`
	Release   string    `json:"release,omitempty"`
	Kind      string    `json:"kind"`     // StatefulSet or Deployment
	Workload  string    `json:"workload"` // its name
	Ordinals  []Ordinal `json:"ordinals"`
	// Baseline is the ConfigMap (in Namespace) with the inventories.
	Baseline string    `json:"baseline"`
	TakenAt  time.Time `json:"takenAt"`
}

// Ordinal is one replica's volume as it was backed up.
type Ordinal struct {
	Index        int    `json:"index"`
	Pod          string `json:"pod"` // the checker's key: a Deployment's is its name
	Claim        string `json:"claim"`
	StorageClass string `json:"storageClass,omitempty"`
	Driver       string `json:"driver,omitempty"`
}

// SourceClass is the class the claims were backed up in: the key of the
// storage-class mapping on restore.
func (m *Meta) SourceClass() string {
	for _, o := range m.Ordinals {
		if o.StorageClass != "" {
			return o.StorageClass
		}
	}
	return ""
}

// Driver is the CSI driver that took the snapshots.
func (m *Meta) Driver() string {
	for _, o := range m.Ordinals {
		if o.Driver != "" {
			return o.Driver
		}
	}
	return ""
}

// MetaOf describes a discovered target.
func MetaOf(t *discovery.Target, now time.Time) *Meta {
	m := &Meta{Format: MetaFormat, Namespace: t.Namespace, Release: t.Release, Kind: t.KindName(), Workload: t.Name(),
		Baseline: BaselineName(t.Name()), TakenAt: now.UTC().Truncate(time.Second)}
	for _, o := range t.Ordinals {
		pod := o.Pod
		if t.IsDeployment() {
			pod = t.Name()
		}
		m.Ordinals = append(m.Ordinals, Ordinal{Index: o.Index, Pod: pod, Claim: o.Claim, StorageClass: o.StorageClass, Driver: o.Driver})
	}
	return m
}

// BaselineName is the baseline ConfigMap's name for a workload.
func BaselineName(workload string) string {
	n := baselinePrefix + workload
	if len(n) > 253 {
		n = n[:253]
	}
	return n
}

// MetaFromBackup reads what a Backup carries; ok is false for a Backup
// rebind did not take (no baseline in it).
func MetaFromBackup(b *velerov1.Backup) (m *Meta, ok bool, err error) {
	raw, ok := b.Annotations[AnnBackup]
	if !ok {
		return nil, false, nil
	}
	m = &Meta{}
	if err := json.Unmarshal([]byte(raw), m); err != nil {
		return nil, true, fmt.Errorf("annotation %s of Velero Backup %s/%s: %w", AnnBackup, b.Namespace, b.Name, err)
	}
	if m.Format > MetaFormat {
		return nil, true, fmt.Errorf("Velero Backup %s/%s was taken by a newer rebind (DR format %d, this one reads %d): use that rebind", b.Namespace, b.Name, m.Format, MetaFormat)
	}
	if m.Workload == "" || m.Namespace == "" || len(m.Ordinals) == 0 {
		return nil, true, fmt.Errorf("annotation %s of Velero Backup %s/%s names no workload", AnnBackup, b.Namespace, b.Name)
	}
	return m, true, nil
}

func (m *Meta) annotation() (string, error) {
	b, err := json.Marshal(m)
	return string(b), err
}

// BaselineConfigMap is the ConfigMap a DR backup carries: the Meta and,
// per ordinal, the gzipped inventory the checker captured (uids, titles,
// folders, versions and content hashes; never a credential).
func BaselineConfigMap(m *Meta, captures [][]byte) (*corev1.ConfigMap, error) {
	if len(captures) != len(m.Ordinals) {
		return nil, fmt.Errorf("%d inventories for %d ordinals", len(captures), len(m.Ordinals))
	}
	meta, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: m.Baseline, Namespace: m.Namespace, Labels: map[string]string{LabelBaseline: m.Workload}},
		Data:       map[string]string{keyMeta: string(meta)},
		BinaryData: map[string][]byte{},
	}
	total := len(meta)
	for i, c := range captures {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		if _, err := zw.Write(c); err != nil {
			return nil, err
		}
		if err := zw.Close(); err != nil {
			return nil, err
		}
		total += buf.Len()
		cm.BinaryData[inventoryKey(m.Ordinals[i].Index)] = buf.Bytes()
	}
	if total > maxBaselineBytes {
		return nil, &TooLargeError{Name: m.Namespace + "/" + m.Baseline, Bytes: total}
	}
	return cm, nil
}

// TooLargeError is a baseline that does not fit a ConfigMap.
type TooLargeError struct {
	Name  string
	Bytes int
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("the baseline ConfigMap %s would hold %d KiB of compressed inventories, more than a ConfigMap takes (1 MiB): keep the baseline outside the backup (`rebind inventory -o FILE`) and verify the restore with `rebind verify --baseline FILE`", e.Name, e.Bytes>>10)
}

func inventoryKey(ordinal int) string { return "inventory-" + strconv.Itoa(ordinal) + ".json.gz" }

// ErrNoBaseline: what is restored carries no usable baseline, so nothing
// can be verified (reported unverified, never passing).
var ErrNoBaseline = errors.New("no baseline in the backup")

// Baselines reads the inventories from a restored baseline ConfigMap, by
// ordinal index, checking it describes the same workload as m.
func Baselines(cm *corev1.ConfigMap, m *Meta) (map[int][]byte, error) {
	if cm == nil {
		return nil, fmt.Errorf("%w: ConfigMap %s was not restored", ErrNoBaseline, m.Baseline)
	}
	var got Meta
	if err := json.Unmarshal([]byte(cm.Data[keyMeta]), &got); err != nil {
		return nil, fmt.Errorf("%w: ConfigMap %s/%s: %s: %v", ErrNoBaseline, cm.Namespace, cm.Name, keyMeta, err)
	}
	if got.Workload != m.Workload || got.Kind != m.Kind || len(got.Ordinals) != len(m.Ordinals) {
		return nil, fmt.Errorf("%w: ConfigMap %s/%s describes %s %s with %d ordinal(s), the backup %s %s with %d", ErrNoBaseline, cm.Namespace, cm.Name,
			got.Kind, got.Workload, len(got.Ordinals), m.Kind, m.Workload, len(m.Ordinals))
	}
	out := map[int][]byte{}
	for _, o := range m.Ordinals {
		raw, ok := cm.BinaryData[inventoryKey(o.Index)]
		if !ok {
			return nil, fmt.Errorf("%w: ConfigMap %s/%s has no inventory of ordinal %d", ErrNoBaseline, cm.Namespace, cm.Name, o.Index)
		}
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("%w: ConfigMap %s/%s, ordinal %d: %v", ErrNoBaseline, cm.Namespace, cm.Name, o.Index, err)
		}
		b, err := io.ReadAll(io.LimitReader(zr, 256<<20))
		if err != nil {
			return nil, fmt.Errorf("%w: ConfigMap %s/%s, ordinal %d: %v", ErrNoBaseline, cm.Namespace, cm.Name, o.Index, err)
		}
		out[o.Index] = b
	}
	return out, nil
}

// trim63 keeps a generated name within the 63 characters of a label value
// (Velero labels restored objects with the Restore's name).
func trim63(n string) string {
	if len(n) > 63 {
		n = n[:63]
	}
	return strings.TrimRight(n, "-.")
}
