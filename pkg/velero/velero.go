// Package velero drives the Velero server a cluster already runs: it takes a
// Backup of a namespace before rebind changes anything, and restores claims
// from a Backup into a staging namespace with a storage-class mapping, which
// moves data between CSI drivers where a CSI snapshot cannot.
//
// It talks to velero.io/v1 through the dynamic client and converts to
// Velero's own Go types, so rebind needs neither controller-runtime nor a
// generated clientset.
package velero

import (
	"context"
	"errors"
	"fmt"
	"time"

	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	"go.uber.org/zap"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/rebind-dev/rebind/pkg/kube"
)

// DefaultNamespace is where `velero install` puts the server.
const DefaultNamespace = "velero"

// Resources rebind uses.
var (
	BackupsGVR   = velerov1.SchemeGroupVersion.WithResource("backups")
	RestoresGVR  = velerov1.SchemeGroupVersion.WithResource("restores")
	LocationsGVR = velerov1.SchemeGroupVersion.WithResource("backupstoragelocations")
)

// Client reaches Velero's custom resources in one namespace.
type Client struct {
	Dyn       dynamic.Interface
	Kube      kubernetes.Interface
	Namespace string
	Log       *zap.Logger
}

// New returns a client for Velero in namespace ns ("" means velero).
func New(c *kube.Clients, ns string, log *zap.Logger) *Client {
	if ns == "" {
		ns = DefaultNamespace
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Client{Dyn: c.Dynamic, Kube: c.Kube, Namespace: ns, Log: log.Named("velero")}
}

// NotReadyError says why Velero cannot be used and what to do about it.
// It is a preflight finding: nothing was changed when it is returned.
type NotReadyError struct {
	What string
	Hint string
}

func (e *NotReadyError) Error() string { return e.What + "; " + e.Hint }

// Detect checks, without changing anything, that Velero is installed (its
// CRDs are served) and that a server runs in the namespace (a
// BackupStorageLocation exists and was validated Available). It returns the
// location backups will go to.
func (c *Client) Detect(ctx context.Context) (string, error) {
	list, err := c.Kube.Discovery().ServerResourcesForGroupVersion(velerov1.SchemeGroupVersion.String())
	if apierrors.IsNotFound(err) || (err == nil && !serves(list, "backups", "restores", "backupstoragelocations")) {
		return "", &NotReadyError{What: "Velero is not installed: no velero.io CRDs", Hint: "install Velero (`velero install`), or run without --backup velero / --strategy velero-restore"}
	}
	if err != nil {
		return "", fmt.Errorf("looking for Velero's API (velero.io/v1): %w", err)
	}
	bsls, err := c.Dyn.Resource(LocationsGVR).Namespace(c.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return "", fmt.Errorf("listing Velero BackupStorageLocations in %s: %w", c.Namespace, err)
	}
	if len(bsls.Items) == 0 {
		return "", &NotReadyError{
			What: fmt.Sprintf("Velero's CRDs are installed but no Velero server runs in namespace %s: it has no BackupStorageLocation", c.Namespace),
			Hint: "pass --velero-namespace with the namespace Velero runs in, or finish the install (`velero install` creates the location and the server)",
		}
	}
	var chosen *velerov1.BackupStorageLocation
	for i := range bsls.Items {
		bsl, err := fromUnstructured[velerov1.BackupStorageLocation](&bsls.Items[i])
		if err != nil {
			return "", err
		}
		if chosen == nil || bsl.Spec.Default {
			chosen = bsl
		}
	}
	switch chosen.Status.Phase {
	case velerov1.BackupStorageLocationPhaseAvailable:
		return chosen.Name, nil
	case "":
		return "", &NotReadyError{
			What: fmt.Sprintf("BackupStorageLocation %s/%s has never been validated: the Velero server is not running", c.Namespace, chosen.Name),
			Hint: fmt.Sprintf("check the Velero deployment (kubectl -n %s get deploy velero) and its logs", c.Namespace),
		}
	default:
		msg := chosen.Status.Message
		if msg == "" {
			msg = "no message"
		}
		return "", &NotReadyError{
			What: fmt.Sprintf("BackupStorageLocation %s/%s is %s (%s): Velero cannot write or read backups", c.Namespace, chosen.Name, chosen.Status.Phase, msg),
			Hint: fmt.Sprintf("fix the location (velero backup-location get -n %s) and re-run", c.Namespace),
		}
	}
}

func serves(list *metav1.APIResourceList, names ...string) bool {
	have := map[string]bool{}
	for _, r := range list.APIResources {
		have[r.Name] = true
	}
	for _, n := range names {
		if !have[n] {
			return false
		}
	}
	return true
}

// Wait bounds a wait for Velero. Pickup is how long the server may take to
// give a new object its first phase: a Backup that never gets one means no
// server is watching, and waiting the whole Timeout for that helps nobody.
type Wait struct {
	Pickup  time.Duration
	Timeout time.Duration
	// Progress receives short human lines while a Restore waits (queued,
	// in progress); nil discards them. ProgressEvery repeats the current
	// line with the time waited; default 30s.
	Progress      func(string)
	ProgressEvery time.Duration
}

func (w Wait) progress(line string) {
	if w.Progress != nil {
		w.Progress(line)
	}
}

func (w Wait) withDefaults() Wait {
	if w.Pickup <= 0 {
		w.Pickup = time.Minute
	}
	if w.Timeout <= 0 {
		w.Timeout = 30 * time.Minute
	}
	if w.ProgressEvery <= 0 {
		w.ProgressEvery = 30 * time.Second
	}
	return w
}

// PhaseError is a Backup or Restore that ended without completing.
type PhaseError struct {
	Kind, Namespace, Name string
	Phase                 string
	FailureReason         string
	ValidationErrors      []string
	Errors, Warnings      int
}

func (e *PhaseError) Error() string {
	msg := fmt.Sprintf("Velero %s %s/%s ended %s", e.Kind, e.Namespace, e.Name, e.Phase)
	if e.FailureReason != "" {
		msg += ": " + e.FailureReason
	}
	for _, v := range e.ValidationErrors {
		msg += "; validation: " + v
	}
	msg += fmt.Sprintf(" (%d errors, %d warnings); see `velero %s describe %s --details -n %s` and `velero %s logs %s`",
		e.Errors, e.Warnings, lower(e.Kind), e.Name, e.Namespace, lower(e.Kind), e.Name)
	return msg
}

func lower(kind string) string {
	switch kind {
	case "Backup":
		return "backup"
	case "Restore":
		return "restore"
	}
	return kind
}

// BackupOutcome says whether a Backup is finished (done) and, if so,
// whether it can be trusted (err == nil). Only Completed is trusted:
// PartiallyFailed means some item, maybe the very volume rebind is about to
// move, is not in it.
func BackupOutcome(b *velerov1.Backup) (done bool, err error) {
	switch b.Status.Phase {
	case velerov1.BackupPhaseCompleted:
		return true, nil
	case velerov1.BackupPhasePartiallyFailed, velerov1.BackupPhaseFailed, velerov1.BackupPhaseFailedValidation, velerov1.BackupPhaseDeleting:
		return true, &PhaseError{Kind: "Backup", Namespace: b.Namespace, Name: b.Name, Phase: string(b.Status.Phase),
			FailureReason: b.Status.FailureReason, ValidationErrors: b.Status.ValidationErrors, Errors: b.Status.Errors, Warnings: b.Status.Warnings}
	}
	return false, nil
}

// RestoreOutcome is BackupOutcome for a Restore.
func RestoreOutcome(r *velerov1.Restore) (done bool, err error) {
	switch r.Status.Phase {
	case velerov1.RestorePhaseCompleted:
		return true, nil
	case velerov1.RestorePhasePartiallyFailed, velerov1.RestorePhaseFailed, velerov1.RestorePhaseFailedValidation:
		return true, &PhaseError{Kind: "Restore", Namespace: r.Namespace, Name: r.Name, Phase: string(r.Status.Phase),
			FailureReason: r.Status.FailureReason, ValidationErrors: r.Status.ValidationErrors, Errors: r.Status.Errors, Warnings: r.Status.Warnings}
	}
	return false, nil
}

// BackupRequest is what rebind asks Velero to back up.
type BackupRequest struct {
	Name      string
	Namespace string // the namespace to back up
	// MoveData copies volume data to the backup location (Velero's data
	// mover) instead of leaving it in a CSI snapshot next to the original:
	// a backup that survives the loss of the storage system, and that can
	// be restored by another CSI driver.
	MoveData bool
	Labels   map[string]string
	// Annotations travel with the Backup into every cluster that syncs
	// it from the location (rebind's DR metadata).
	Annotations map[string]string
	Location    string
	TTL         time.Duration
}

// CreateBackup creates the Backup, or returns the existing one of that name
// so that a retried step does not fail on its own earlier attempt.
func (c *Client) CreateBackup(ctx context.Context, req BackupRequest) (*velerov1.Backup, error) {
	b := &velerov1.Backup{
		TypeMeta:   metav1.TypeMeta{APIVersion: velerov1.SchemeGroupVersion.String(), Kind: "Backup"},
		ObjectMeta: metav1.ObjectMeta{Name: req.Name, Namespace: c.Namespace, Labels: req.Labels, Annotations: req.Annotations},
		Spec: velerov1.BackupSpec{
			IncludedNamespaces: []string{req.Namespace},
			SnapshotVolumes:    ptrTo(true),
			SnapshotMoveData:   ptrTo(req.MoveData),
			StorageLocation:    req.Location,
		},
	}
	if req.TTL > 0 {
		b.Spec.TTL = metav1.Duration{Duration: req.TTL}
	}
	u, err := toUnstructured(b)
	if err != nil {
		return nil, err
	}
	got, err := c.Dyn.Resource(BackupsGVR).Namespace(c.Namespace).Create(ctx, u, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return c.GetBackup(ctx, req.Name)
	}
	if err != nil {
		return nil, fmt.Errorf("creating Velero Backup %s/%s: %w", c.Namespace, req.Name, err)
	}
	c.Log.Info("backup created", zap.String("backup", req.Name), zap.String("namespace", req.Namespace))
	return fromUnstructured[velerov1.Backup](got)
}

// GetBackup reads a Backup.
func (c *Client) GetBackup(ctx context.Context, name string) (*velerov1.Backup, error) {
	u, err := c.Dyn.Resource(BackupsGVR).Namespace(c.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading Velero Backup %s/%s: %w", c.Namespace, name, err)
	}
	return fromUnstructured[velerov1.Backup](u)
}

// WaitBackup watches a Backup until it ends; any end but Completed is an
// error carrying Velero's reason and counts.
func (c *Client) WaitBackup(ctx context.Context, name string, w Wait) (*velerov1.Backup, error) {
	u, err := c.waitPhase(ctx, BackupsGVR, "Backup", name, w, func(u *unstructured.Unstructured) (bool, error) {
		b, err := fromUnstructured[velerov1.Backup](u)
		if err != nil {
			return false, err
		}
		return BackupOutcome(b)
	})
	if err != nil {
		return nil, err
	}
	return fromUnstructured[velerov1.Backup](u)
}

// RestoreRequest restores part of a backup.
type RestoreRequest struct {
	Name       string
	BackupName string
	// Namespace of the backup to restore from, restored into Into.
	Namespace, Into string
	Resources       []string
	Selector        *metav1.LabelSelector
	Labels          map[string]string
	Annotations     map[string]string
}

// CreateRestore creates the Restore (or returns the existing one of that name).
func (c *Client) CreateRestore(ctx context.Context, req RestoreRequest) (*velerov1.Restore, error) {
	r := &velerov1.Restore{
		TypeMeta:   metav1.TypeMeta{APIVersion: velerov1.SchemeGroupVersion.String(), Kind: "Restore"},
		ObjectMeta: metav1.ObjectMeta{Name: req.Name, Namespace: c.Namespace, Labels: req.Labels, Annotations: req.Annotations},
		Spec: velerov1.RestoreSpec{
			BackupName:         req.BackupName,
			IncludedNamespaces: []string{req.Namespace},
			IncludedResources:  req.Resources,
			LabelSelector:      req.Selector,
			RestorePVs:         ptrTo(true),
		},
	}
	if req.Into != "" && req.Into != req.Namespace {
		r.Spec.NamespaceMapping = map[string]string{req.Namespace: req.Into}
	}
	u, err := toUnstructured(r)
	if err != nil {
		return nil, err
	}
	got, err := c.Dyn.Resource(RestoresGVR).Namespace(c.Namespace).Create(ctx, u, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		got, err = c.Dyn.Resource(RestoresGVR).Namespace(c.Namespace).Get(ctx, req.Name, metav1.GetOptions{})
	}
	if err != nil {
		return nil, fmt.Errorf("creating Velero Restore %s/%s: %w", c.Namespace, req.Name, err)
	}
	c.Log.Info("restore created", zap.String("restore", req.Name), zap.String("backup", req.BackupName), zap.String("into", req.Into))
	return fromUnstructured[velerov1.Restore](got)
}

// GetRestore reads a Restore.
func (c *Client) GetRestore(ctx context.Context, name string) (*velerov1.Restore, error) {
	u, err := c.Dyn.Resource(RestoresGVR).Namespace(c.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading Velero Restore %s/%s: %w", c.Namespace, name, err)
	}
	return fromUnstructured[velerov1.Restore](u)
}

// waitPhase first waits (Pickup) for the server to give the object any
// phase, then (Timeout) for done.
func (c *Client) waitPhase(ctx context.Context, gvr schema.GroupVersionResource, kind, name string, w Wait, done func(*unstructured.Unstructured) (bool, error)) (*unstructured.Unstructured, error) {
	w = w.withDefaults()
	ref := fmt.Sprintf("Velero %s %s/%s", kind, c.Namespace, name)
	picked := func(u *unstructured.Unstructured) (bool, error) {
		phase, _, _ := unstructured.NestedString(u.Object, "status", "phase")
		return phase != "", nil
	}
	if _, err := c.until(ctx, gvr, name, w.Pickup, ref+" to be picked up by the Velero server", picked); err != nil {
		var te *kube.TimeoutError
		if errors.As(err, &te) {
			return nil, &NotReadyError{
				What: fmt.Sprintf("%s got no phase within %s: no Velero server is processing namespace %s", ref, w.Pickup, c.Namespace),
				Hint: fmt.Sprintf("check the Velero deployment (kubectl -n %s get deploy velero) and its logs", c.Namespace),
			}
		}
		return nil, err
	}
	return c.until(ctx, gvr, name, w.Timeout, ref+" to finish", done)
}

func (c *Client) until(ctx context.Context, gvr schema.GroupVersionResource, name string, timeout time.Duration, what string, cond func(*unstructured.Unstructured) (bool, error)) (*unstructured.Unstructured, error) {
	res := c.Dyn.Resource(gvr).Namespace(c.Namespace)
	lw := kube.NamedLW(res, name)
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last *unstructured.Unstructured
	check := func(u *unstructured.Unstructured) (bool, error) {
		last = u
		return cond(u)
	}
	_, err := watchtools.UntilWithSync(wctx, lw, &unstructured.Unstructured{}, func(store cache.Store) (bool, error) {
		items := store.List()
		if len(items) == 0 {
			return false, fmt.Errorf("%s: not found", what)
		}
		return check(items[0].(*unstructured.Unstructured))
	}, func(ev watch.Event) (bool, error) {
		if ev.Type == watch.Deleted {
			return false, fmt.Errorf("%s: it was deleted", what)
		}
		u, ok := ev.Object.(*unstructured.Unstructured)
		if !ok {
			return false, nil
		}
		return check(u)
	})
	if err == nil {
		return last, nil
	}
	if ctx.Err() == nil && wctx.Err() != nil {
		te := &kube.TimeoutError{What: what, Timeout: timeout}
		if last != nil {
			phase, _, _ := unstructured.NestedString(last.Object, "status", "phase")
			te.LastSeen = "phase " + phase
		}
		return last, te
	}
	return last, err
}

func fromUnstructured[T any](u *unstructured.Unstructured) (*T, error) {
	out := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, out); err != nil {
		return nil, fmt.Errorf("decoding %s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
	}
	return out, nil
}

func toUnstructured(obj runtime.Object) (*unstructured.Unstructured, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, err
	}
	return &unstructured.Unstructured{Object: m}, nil
}

func ptrTo[T any](v T) *T { return &v }
