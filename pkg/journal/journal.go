// Package journal records a migration's progress in the target's namespace,
// so that a run killed at any point can be resumed or rolled back by any
// machine that can reach the cluster, not only the one that started it.
package journal

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/rebind-dev/rebind/pkg/plan"
)

// FormatVersion is bumped when Record changes incompatibly; an older binary
// must refuse to resume a journal it does not understand.
//
// Format 2 keeps nothing secret in the ConfigMap: the spec recorded there
// has literal env values redacted and no last-applied-configuration, and
// what a resume or a rollback needs to recreate the workload is in the
// Secret named by Record.Secret. A format-1 binary would recreate the
// workload from the redacted copy, so it must refuse format 2 (and does).
// Format 1 (the whole spec in the ConfigMap, no Secret) is still resumed
// and rolled back; it stays format 1 until a new run replaces it.
const FormatVersion = 2

// OldestFormat is the oldest format this binary resumes and rolls back.
const OldestFormat = 1

const (
	dataKey        = "journal.json"
	LabelManagedBy = "app.kubernetes.io/managed-by"
	LabelTarget    = "rebind.dev/statefulset"
	// LabelRun on the journal's Secret names the run it belongs to: a
	// Secret of another run is never taken for this one's.
	LabelRun  = "rebind.dev/run"
	ManagedBy = "rebind"
)

// Phase of the whole operation.
type Phase string

const (
	Running     Phase = "Running"
	Failed      Phase = "Failed"
	Completed   Phase = "Completed"
	RollingBack Phase = "RollingBack"
	RolledBack  Phase = "RolledBack"
)

// Record is the journal's content.
type Record struct {
	FormatVersion int             `json:"formatVersion"`
	RunID         string          `json:"runID"`
	Operation     string          `json:"operation"`
	Phase         Phase           `json:"phase"`
	Spec          json.RawMessage `json:"spec,omitempty"`
	// Secret names the Secret that holds the private part of the spec
	// (format 2); empty when there is none.
	Secret    string                     `json:"secret,omitempty"`
	Steps     map[string]plan.StepRecord `json:"steps"`
	Values    map[string]string          `json:"values"`
	StartedAt time.Time                  `json:"startedAt"`
	UpdatedAt time.Time                  `json:"updatedAt"`
	LastError string                     `json:"lastError,omitempty"`
}

// Journal is a Record kept in a ConfigMap owned by nothing, so that deleting
// the StatefulSet (which the migration does) never garbage-collects it.
// What must not be readable by everyone who can read ConfigMaps (the
// workload's manifest with its literal env values) is kept in a Secret of
// the same name, also owned by nothing, written once when the journal is
// created and deleted when a new run replaces the journal.
type Journal struct {
	kube      kubernetes.Interface
	namespace string
	name      string

	mu  sync.Mutex
	cm  *corev1.ConfigMap
	rec Record

	private    map[string][]byte // the Secret's data
	privateErr error             // why there is no Secret to read
}

// Name returns the ConfigMap name used for a StatefulSet's journal; its
// Secret has the same name.
func Name(statefulSet string) string { return "rebind-journal-" + statefulSet }

// Unfinished is true for a run that stopped half-way: a resume or a
// rollback has to finish it before the target is in a known state.
func (p Phase) Unfinished() bool {
	switch p {
	case Running, Failed, RollingBack:
		return true
	}
	return false
}

// LoadRecord reads only the journal's ConfigMap (no Secret, so read-only
// callers such as the drill need no right on it): nil when there is none.
func LoadRecord(ctx context.Context, kube kubernetes.Interface, namespace, statefulSet string) (*Record, error) {
	j, err := loadConfigMap(ctx, kube, namespace, statefulSet)
	if j == nil || err != nil {
		return nil, err
	}
	rec := j.rec
	return &rec, nil
}

// Load returns the journal of a target, or (nil, nil) when there is none.
func Load(ctx context.Context, kube kubernetes.Interface, namespace, statefulSet string) (*Journal, error) {
	j, err := loadConfigMap(ctx, kube, namespace, statefulSet)
	if j == nil || err != nil {
		return nil, err
	}
	if j.rec.Secret != "" {
		if err := j.loadSecret(ctx); err != nil {
			return nil, err
		}
	}
	return j, nil
}

func loadConfigMap(ctx context.Context, kube kubernetes.Interface, namespace, statefulSet string) (*Journal, error) {
	cm, err := kube.CoreV1().ConfigMaps(namespace).Get(ctx, Name(statefulSet), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading journal ConfigMap %s/%s: %w", namespace, Name(statefulSet), err)
	}
	j := &Journal{kube: kube, namespace: namespace, name: cm.Name, cm: cm}
	if err := json.Unmarshal([]byte(cm.Data[dataKey]), &j.rec); err != nil {
		return nil, fmt.Errorf("journal ConfigMap %s/%s is not a rebind journal (%v); move it aside before running rebind", namespace, cm.Name, err)
	}
	if j.rec.FormatVersion < OldestFormat || j.rec.FormatVersion > FormatVersion {
		return nil, fmt.Errorf("journal %s/%s has format version %d, this rebind understands %d to %d: finish or roll back with the rebind version that started it", namespace, cm.Name, j.rec.FormatVersion, OldestFormat, FormatVersion)
	}
	if j.rec.Steps == nil {
		j.rec.Steps = map[string]plan.StepRecord{}
	}
	if j.rec.Values == nil {
		j.rec.Values = map[string]string{}
	}
	return j, nil
}

// loadSecret reads the journal's Secret. A Secret that is gone or belongs
// to another run is not an error here (a finished journal does not need
// it); Private reports it to whoever needs the data.
func (j *Journal) loadSecret(ctx context.Context) error {
	s, err := j.kube.CoreV1().Secrets(j.namespace).Get(ctx, j.rec.Secret, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		j.privateErr = fmt.Errorf("Secret %s/%s, which journal ConfigMap %s/%s of run %s names, does not exist", j.namespace, j.rec.Secret, j.namespace, j.name, j.rec.RunID)
	case err != nil:
		return fmt.Errorf("reading journal Secret %s/%s: %w", j.namespace, j.rec.Secret, err)
	case s.Labels[LabelRun] != j.rec.RunID:
		j.privateErr = fmt.Errorf("Secret %s/%s belongs to run %q, not to run %s of journal ConfigMap %s/%s", j.namespace, s.Name, s.Labels[LabelRun], j.rec.RunID, j.namespace, j.name)
	default:
		j.private = s.Data
	}
	return nil
}

// Private returns data that Create kept in the journal's Secret.
func (j *Journal) Private(key string) ([]byte, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.rec.Secret == "" {
		return nil, fmt.Errorf("journal %s/%s of run %s keeps no Secret", j.namespace, j.name, j.rec.RunID)
	}
	if j.privateErr != nil {
		return nil, j.privateErr
	}
	v, ok := j.private[key]
	if !ok {
		return nil, fmt.Errorf("Secret %s/%s holds no %s", j.namespace, j.rec.Secret, key)
	}
	return v, nil
}

// SecretName is the journal's Secret, or "" when it keeps none.
func (j *Journal) SecretName() string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.rec.Secret
}

// Create writes a new journal, replacing a finished one (Completed or
// RolledBack) of the same target. An unfinished one is never replaced.
//
// spec goes into the ConfigMap, readable by anyone who may read ConfigMaps
// in the namespace: it must hold nothing secret. private, when not empty,
// goes into Secret Name(statefulSet) (type Opaque, immutable, owned by
// nothing), written before the ConfigMap; the Secret of the journal being
// replaced, or one left by a run that never wrote its ConfigMap, is
// deleted first. A Secret of that name that rebind did not make is never
// touched: Create refuses.
func Create(ctx context.Context, kube kubernetes.Interface, namespace, statefulSet, runID, operation string, spec any, private map[string][]byte) (*Journal, error) {
	raw, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	j := &Journal{kube: kube, namespace: namespace, name: Name(statefulSet), rec: Record{
		FormatVersion: FormatVersion, RunID: runID, Operation: operation, Phase: Running, Spec: raw,
		Steps: map[string]plan.StepRecord{}, Values: map[string]string{}, StartedAt: now, UpdatedAt: now,
	}}
	old, err := Load(ctx, kube, namespace, statefulSet)
	if err != nil {
		return nil, err
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
		Name: j.name, Namespace: namespace,
		Labels: map[string]string{LabelManagedBy: ManagedBy, LabelTarget: statefulSet},
		Annotations: map[string]string{
			"rebind.dev/purpose": "progress of a rebind migration; do not delete while it is running (rebind rollback needs it)",
		},
	}}
	if old != nil {
		switch old.rec.Phase {
		case Completed, RolledBack:
		default:
			return nil, fmt.Errorf("an unfinished %s (run %s, phase %s) is recorded in ConfigMap %s/%s: re-run the same command to resume it, or run `rebind rollback`", old.rec.Operation, old.rec.RunID, old.rec.Phase, namespace, j.name)
		}
		cm = old.cm.DeepCopy()
		cm.BinaryData = nil
	}
	if err := deleteSecret(ctx, kube, namespace, j.name); err != nil {
		return nil, err
	}
	var created *corev1.Secret
	if len(private) > 0 {
		created, err = kube.CoreV1().Secrets(namespace).Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{
				Name: j.name, Namespace: namespace,
				Labels: map[string]string{LabelManagedBy: ManagedBy, LabelTarget: statefulSet, LabelRun: runID},
				Annotations: map[string]string{
					"rebind.dev/purpose": "what `rebind rollback` and a resumed run need to recreate the workload (its manifest, literal env values included); the journal ConfigMap of the same name holds the progress",
				},
			},
			Type:      corev1.SecretTypeOpaque,
			Immutable: ptr.To(true),
			Data:      private,
		}, metav1.CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("writing journal Secret %s/%s: %w", namespace, j.name, err)
		}
		j.rec.Secret, j.private = j.name, private
	}
	if err := j.encode(cm); err != nil {
		return nil, err
	}
	if old == nil {
		j.cm, err = kube.CoreV1().ConfigMaps(namespace).Create(ctx, cm, metav1.CreateOptions{})
	} else {
		j.cm, err = kube.CoreV1().ConfigMaps(namespace).Update(ctx, cm, metav1.UpdateOptions{})
	}
	if err != nil {
		if created != nil {
			// No journal names it: it would only be deleted by the next run.
			_ = kube.CoreV1().Secrets(namespace).Delete(context.WithoutCancel(ctx), created.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &created.UID}})
		}
		return nil, fmt.Errorf("writing journal ConfigMap %s/%s: %w", namespace, j.name, err)
	}
	return j, nil
}

// deleteSecret removes the journal Secret of a finished run (or of a run
// that stopped before writing its ConfigMap), refusing one rebind did not
// make.
func deleteSecret(ctx context.Context, kube kubernetes.Interface, namespace, name string) error {
	s, err := kube.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading journal Secret %s/%s: %w", namespace, name, err)
	}
	if s.Labels[LabelManagedBy] != ManagedBy {
		return fmt.Errorf("Secret %s/%s exists and was not made by rebind (no label %s=%s): rebind keeps the manifest it needs for a rollback under that name; move that Secret aside", namespace, name, LabelManagedBy, ManagedBy)
	}
	err = kube.CoreV1().Secrets(namespace).Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &s.UID}})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting journal Secret %s/%s of the previous run: %w", namespace, name, err)
	}
	return nil
}

func (j *Journal) encode(cm *corev1.ConfigMap) error {
	raw, err := json.MarshalIndent(j.rec, "", "  ")
	if err != nil {
		return err
	}
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	cm.Data[dataKey] = string(raw)
	return nil
}

// save writes the record; callers hold mu. A conflict means another writer
// touched the journal, which the Lease should have prevented: refuse rather
// than overwrite someone else's progress.
func (j *Journal) save(ctx context.Context) error {
	j.rec.UpdatedAt = time.Now().UTC()
	cm := j.cm.DeepCopy()
	if err := j.encode(cm); err != nil {
		return err
	}
	updated, err := j.kube.CoreV1().ConfigMaps(j.namespace).Update(ctx, cm, metav1.UpdateOptions{})
	if err != nil {
		return fmt.Errorf("updating journal ConfigMap %s/%s: %w", j.namespace, j.name, err)
	}
	j.cm = updated
	return nil
}

// Record returns a copy of the current record.
func (j *Journal) Record() Record {
	j.mu.Lock()
	defer j.mu.Unlock()
	r := j.rec
	r.Steps = maps.Clone(j.rec.Steps)
	r.Values = maps.Clone(j.rec.Values)
	return r
}

// Namespace and ConfigMapName identify the journal for messages.
func (j *Journal) Namespace() string     { return j.namespace }
func (j *Journal) ConfigMapName() string { return j.name }

// Step implements plan.Store.
func (j *Journal) Step(id string) plan.StepRecord {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.rec.Steps[id]
}

// SetStep implements plan.Store.
func (j *Journal) SetStep(ctx context.Context, id string, rec plan.StepRecord) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.rec.Steps[id] = rec
	return j.save(ctx)
}

// SetSteps implements plan.BatchStore: several records in one write.
func (j *Journal) SetSteps(ctx context.Context, recs map[string]plan.StepRecord) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	for id, rec := range recs {
		j.rec.Steps[id] = rec
	}
	return j.save(ctx)
}

// Value returns a value recorded by a step (for example a PV's original
// reclaim policy), and whether it exists.
func (j *Journal) Value(key string) (string, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	v, ok := j.rec.Values[key]
	return v, ok
}

// SetValue records a value; a value that is already recorded is kept, so
// that a re-run never overwrites what the first run saw (the original
// reclaim policy must survive a resume that sees Retain).
func (j *Journal) SetValue(ctx context.Context, key, value string) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, ok := j.rec.Values[key]; ok {
		return nil
	}
	j.rec.Values[key] = value
	return j.save(ctx)
}

// PutValue records a value, replacing any earlier one: for progress that
// moves on (a restore's state), not for what the first run saw.
func (j *Journal) PutValue(ctx context.Context, key, value string) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if v, ok := j.rec.Values[key]; ok && v == value {
		return nil
	}
	j.rec.Values[key] = value
	return j.save(ctx)
}

// SetPhase records the operation's phase and last error.
func (j *Journal) SetPhase(ctx context.Context, p Phase, lastErr error) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.rec.Phase = p
	j.rec.LastError = ""
	if lastErr != nil {
		j.rec.LastError = lastErr.Error()
	}
	return j.save(ctx)
}

// SetBlob stores compressed binary data next to the record (the baseline
// inventory). ConfigMaps are limited to 1 MiB, so a blob that does not fit
// is refused with the way out.
func (j *Journal) SetBlob(ctx context.Context, key string, data []byte) error {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(data); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	const limit = 900 << 10
	if buf.Len() > limit {
		return fmt.Errorf("%s is %d KiB compressed, too large for journal ConfigMap %s/%s (limit %d KiB)", key, buf.Len()>>10, j.namespace, j.name, limit>>10)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.cm.BinaryData == nil {
		j.cm.BinaryData = map[string][]byte{}
	}
	j.cm.BinaryData[key+".gz"] = buf.Bytes()
	return j.save(ctx)
}

// Blob returns data stored with SetBlob, or nil when absent.
func (j *Journal) Blob(key string) ([]byte, error) {
	j.mu.Lock()
	raw, ok := j.cm.BinaryData[key+".gz"]
	j.mu.Unlock()
	if !ok {
		return nil, nil
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("journal blob %s: %w", key, err)
	}
	return io.ReadAll(zr)
}
