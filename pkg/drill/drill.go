// Package drill proves that a Grafana StatefulSet's volumes can be restored
// without touching production: it snapshots every ordinal's claim, restores
// the snapshots into a scratch namespace, starts a throwaway copy of the
// StatefulSet there (or reads the restored database offline), compares the
// dashboards with what production serves, and removes everything it made.
package drill

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/rebind-dev/rebind/pkg/app"
	"github.com/rebind-dev/rebind/pkg/discovery"
	"github.com/rebind-dev/rebind/pkg/kube"
	"github.com/rebind-dev/rebind/pkg/preflight"
	"github.com/rebind-dev/rebind/pkg/report"
)

// Outcomes of one target's drill.
const (
	// Passed: every dashboard production serves came back from the restore.
	Passed = "passed"
	// Failed: the restore completed but dashboards are missing or changed.
	Failed = "failed"
	// Errored: the drill could not complete (snapshot, restore or Grafana
	// never became ready); the restore is unproven.
	Errored = "error"
	// Refused: preflight found problems; nothing was created.
	Refused = "preflight-failed"
)

// Timeouts bound each wait of a drill.
type Timeouts struct {
	Wait     time.Duration // claims bound, the copy Ready
	Snapshot time.Duration // snapshots readyToUse
	Verify   time.Duration // Grafana of a restored pod answering
	Cleanup  time.Duration // everything the drill made gone
}

// DefaultTimeouts suit a nightly job: generous, but a stuck drill still ends.
func DefaultTimeouts() Timeouts {
	return Timeouts{Wait: 5 * time.Minute, Snapshot: 10 * time.Minute, Verify: 3 * time.Minute, Cleanup: 5 * time.Minute}
}

// Options of one target's drill.
type Options struct {
	Target discovery.Options
	// ScratchNamespace is where the drill restores (default
	// DefaultScratchNamespace). It must exist and carry LabelScratch=true
	// (the install manifest prepares it); the drill neither creates nor
	// deletes it, refuses it when it holds objects no drill created or
	// objects in the way of this drill, and removes exactly what it
	// created there. A Lease in it keeps two drills of one StatefulSet name
	// apart; drills of different StatefulSet names share it.
	ScratchNamespace string
	// CreateScratchNamespace is the opt-in mode: the drill creates the
	// scratch namespace (ScratchNamespace, which must not exist, or
	// rebind-drill-<sts>-<random>) and deletes it with everything in it.
	// It needs cluster-wide namespace create and delete
	// (manifests/rbac-drill-create-namespace.yaml).
	CreateScratchNamespace bool
	// RestoreStorageClass restores into this class (same CSI driver) instead
	// of the production volumes' class.
	RestoreStorageClass string
	// UseLatestSnapshot restores the newest readyToUse snapshot of each
	// claim instead of taking one.
	UseLatestSnapshot bool
	// KeepSnapshot keeps the production VolumeSnapshot the drill took.
	KeepSnapshot bool
	// Offline reads the restored grafana.db through DBReader instead of
	// starting a copy of Grafana.
	Offline bool
	// PodProxy says where the Checker reaches Grafana through the API
	// server's pod proxy, for preflight to ask for those rights.
	PodProxy PodProxyUse
	Timeouts Timeouts
	// LeaseDuration of the production Lease the drill shares with migrate
	// (default journal.DefaultLeaseDuration).
	LeaseDuration time.Duration
}

// DBReader makes a restored volume's grafana.db readable where rebind runs:
// it returns the file's path and a cleanup to call when done.
type DBReader func(ctx context.Context, pv *corev1.PersistentVolume) (path string, cleanup func(), err error)

// Restored describes the restored volumes, handed to Drill.AfterRestore.
type Restored struct {
	Namespace string
	Claims    []string
	Volumes   []*corev1.PersistentVolume
}

// Drill runs drills.
type Drill struct {
	Clients *kube.Clients
	// Checker reaches the Grafana of target's pods in namespace: the
	// production namespace for the live inventory, the scratch namespace
	// for the restored copy (credentials are production's in both).
	Checker  func(t *discovery.Target, namespace string) app.Checker
	DBReader DBReader
	Out      io.Writer
	Log      *zap.Logger
	// AfterRestore runs once the restored claims are bound, before the
	// restored data is checked (tests damage the data or cancel here).
	AfterRestore func(ctx context.Context, r Restored) error
}

// SnapshotUse records which snapshot an ordinal was restored from.
type SnapshotUse struct {
	Ordinal     int        `json:"ordinal"`
	Claim       string     `json:"claim"`
	Snapshot    string     `json:"snapshot"`
	Content     string     `json:"content,omitempty"`
	Taken       bool       `json:"taken"` // by this drill, rather than --use-latest-snapshot
	CreatedAt   *time.Time `json:"createdAt,omitempty"`
	RestoreSize string     `json:"restoreSize,omitempty"`
	RestoredPV  string     `json:"restoredPV,omitempty"`
}

// Result is one target's report.
type Result struct {
	Namespace        string              `json:"namespace"`
	StatefulSet      string              `json:"statefulSet"`
	RunID            string              `json:"runID"`
	Outcome          string              `json:"outcome"`
	Mode             string              `json:"mode"` // online or offline
	ScratchNamespace string              `json:"scratchNamespace,omitempty"`
	ScratchCreated   bool                `json:"scratchNamespaceCreated,omitempty"` // opt-in mode: created and deleted by the drill
	StartedAt        time.Time           `json:"startedAt"`
	FinishedAt       time.Time           `json:"finishedAt"`
	Duration         report.Duration     `json:"duration"`
	Snapshots        []SnapshotUse       `json:"snapshots,omitempty"`
	Verification     []app.Verdict       `json:"verification,omitempty"`
	Checked          int                 `json:"dashboardsChecked"`
	Lost             int                 `json:"dashboardsLost"`
	Problems         []preflight.Problem `json:"problems,omitempty"`
	Cleaned          []string            `json:"cleanedUp,omitempty"`
	Leftovers        []string            `json:"leftovers,omitempty"`
	Notes            []string            `json:"notes,omitempty"`
	Error            string              `json:"error,omitempty"`
}

// Target names the drilled StatefulSet.
func (r *Result) Target() string { return r.Namespace + "/" + r.StatefulSet }

// Summary is the one line put in the Event and printed per target.
func (r *Result) Summary() string {
	d := time.Duration(r.Duration).Round(100 * time.Millisecond)
	var b strings.Builder
	fmt.Fprintf(&b, "drill of %s %s in %s", r.Target(), strings.ToUpper(r.Outcome), d)
	switch r.Outcome {
	case Passed, Failed:
		fmt.Fprintf(&b, ": %d dashboards checked, %d lost or changed", r.Checked, r.Lost)
		var parts []string
		for _, v := range r.Verification {
			parts = append(parts, v.Summary)
		}
		if len(parts) > 0 {
			fmt.Fprintf(&b, " (%s)", strings.Join(parts, "; "))
		}
	case Refused:
		fmt.Fprintf(&b, ": %d preflight problem(s)", len(r.Problems))
	}
	if r.Error != "" && r.Outcome != Refused {
		fmt.Fprintf(&b, ": %s", firstLine(r.Error))
	}
	if len(r.Leftovers) > 0 {
		fmt.Fprintf(&b, "; %d object(s) left behind", len(r.Leftovers))
	}
	return b.String()
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// WriteText prints the result for people.
func (r *Result) WriteText(w io.Writer) {
	fmt.Fprintln(w, r.Summary())
	for _, v := range r.Verification {
		mark := "✓"
		if !v.OK {
			mark = "✗"
		}
		fmt.Fprintf(w, "  %s %s\n", mark, v.Summary)
	}
	for _, p := range r.Problems {
		fmt.Fprintf(w, "  - %s: %s\n    fix: %s\n", p.Object, p.Message, p.Fix)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
	for _, l := range r.Leftovers {
		fmt.Fprintf(w, "  LEFT BEHIND: %s\n", l)
	}
	if r.Error != "" && r.Outcome != Refused {
		fmt.Fprintf(w, "  error: %s\n", r.Error)
	}
}

func (d *Drill) log() *zap.Logger {
	if d.Log == nil {
		return zap.NewNop()
	}
	return d.Log
}

func (d *Drill) out() io.Writer {
	if d.Out == nil {
		return io.Discard
	}
	return d.Out
}

func (o Options) withDefaults() Options {
	def := DefaultTimeouts()
	if o.Timeouts.Wait == 0 {
		o.Timeouts.Wait = def.Wait
	}
	if o.Timeouts.Snapshot == 0 {
		o.Timeouts.Snapshot = def.Snapshot
	}
	if o.Timeouts.Verify == 0 {
		o.Timeouts.Verify = def.Verify
	}
	if o.Timeouts.Cleanup == 0 {
		o.Timeouts.Cleanup = def.Cleanup
	}
	return o
}

// ordinalPlan is what preflight resolved for one ordinal.
type ordinalPlan struct {
	Index         int
	Pod, Claim    string
	PV            *corev1.PersistentVolume
	Driver        string
	SnapshotClass string
	RestoreClass  string
	Size          resource.Quantity
	Latest        *snapv1.VolumeSnapshot
}

// Run drills one target. It never returns without having removed what it
// created, or listing in Leftovers what it could not remove.
func (d *Drill) Run(ctx context.Context, o Options) *Result {
	o = o.withDefaults()
	res := &Result{Namespace: o.Target.Namespace, StatefulSet: o.Target.StatefulSet, RunID: newRunID(), StartedAt: time.Now(), Mode: "online"}
	if o.Offline {
		res.Mode = "offline"
	}
	if res.StatefulSet == "" {
		res.StatefulSet = o.Target.Release
	}
	defer func() {
		res.FinishedAt = time.Now()
		res.Duration = report.Duration(res.FinishedAt.Sub(res.StartedAt))
	}()

	t, err := discovery.Discover(ctx, d.Clients, o.Target)
	if err != nil {
		var nf *discovery.NotFoundError
		if errors.As(err, &nf) {
			res.Outcome = Refused
			res.Problems = append(res.Problems, preflight.Problem{Object: "target", Message: nf.What, Fix: nf.Hint})
		} else {
			res.Outcome = Errored
		}
		res.Error = err.Error()
		return res
	}
	res.StatefulSet = t.Name()
	log := d.log().With(zap.String("target", res.Target()), zap.String("run", res.RunID))
	scratch := o.ScratchNamespace
	switch {
	case scratch == "" && o.CreateScratchNamespace:
		scratch = ScratchNamespaceName(t.Name(), res.RunID)
	case scratch == "":
		scratch = DefaultScratchNamespace
	}
	res.ScratchNamespace, res.ScratchCreated = scratch, o.CreateScratchNamespace

	refuse := func(err error) *Result {
		var pf *preflight.Error
		if errors.As(err, &pf) {
			res.Outcome = Refused
			res.Problems = pf.Problems
		} else {
			res.Outcome = Errored
		}
		res.Error = err.Error()
		d.emitEvent(ctx, t, res)
		return res
	}
	plans, err := d.preflight(ctx, o, t, scratch, res.RunID)
	if err != nil {
		return refuse(err)
	}
	// Both Leases are taken after the other checks: a refused drill holds
	// nothing.
	target, err := d.lockTarget(ctx, o, t, res)
	if err != nil {
		return refuse(err)
	}
	outer := ctx
	// Losing the production Lease stops the drill's waits; cleanup runs
	// on its own context.
	ctx, stopGuard := target.Guard(ctx)
	defer stopGuard()
	var lease *scratchLease
	if !o.CreateScratchNamespace {
		// The scratch namespace is checked again under its Lease.
		if lease, err = d.lockScratch(ctx, o, t, scratch, res); err != nil {
			d.unlockTarget(outer, target, res, log)
			return refuse(err)
		}
		d.step(res, "scratch namespace %s taken (Lease %s)", scratch, lease.name)
	}

	cl := &created{namespace: scratch, runID: res.RunID, createNamespace: o.CreateScratchNamespace}
	runErr := d.execute(ctx, o, t, scratch, plans, cl, res, log)
	d.cleanup(outer, o, cl, res, log)
	if lease != nil {
		d.unlockScratch(outer, lease, res, log)
	}
	lostErr := target.Err()
	d.unlockTarget(outer, target, res, log)
	ctx = outer
	switch {
	case lostErr != nil:
		// Whatever was checked, a migration may have started meanwhile.
		res.Outcome = Errored
		res.Error = lostErr.Error()
	case runErr != nil:
		res.Outcome = Errored
		res.Error = runErr.Error()
		if ctx.Err() != nil {
			res.Error = "interrupted: " + res.Error
		}
	case res.Lost > 0:
		res.Outcome = Failed
	default:
		res.Outcome = Passed
		for _, v := range res.Verification {
			if !v.OK {
				res.Outcome = Failed
			}
		}
	}
	if len(res.Leftovers) > 0 && res.Outcome == Passed {
		// A drill that leaks scratch objects every night is a problem too.
		res.Outcome = Errored
		res.Error = "the restore was verified, but cleanup left objects behind"
	}
	d.emitEvent(ctx, t, res)
	log.Info("drill finished", zap.String("outcome", res.Outcome), zap.Int("checked", res.Checked), zap.Int("lost", res.Lost))
	return res
}

// RunAll drills several targets, at most parallel at a time, and returns
// the results in the order of targets. Targets whose copies would share a
// fixed scratch namespace under one StatefulSet name run one after the
// other (their Lease would refuse the second otherwise).
func (d *Drill) RunAll(ctx context.Context, targets []Options, parallel int) []*Result {
	if parallel < 1 {
		parallel = 1
	}
	results := make([]*Result, len(targets))
	// The targets ask the same cluster-wide access questions: once each.
	ctx = preflight.WithAccessReviewer(ctx, &preflight.AccessReviewer{Kube: d.Clients.Kube})
	sem := make(chan struct{}, parallel)
	var mu sync.Mutex
	serial := map[string]*sync.Mutex{}
	lockFor := func(o Options) *sync.Mutex {
		if o.CreateScratchNamespace {
			return nil
		}
		name := o.Target.StatefulSet
		if name == "" {
			name = "release " + o.Target.Release
		}
		scratch := o.ScratchNamespace
		if scratch == "" {
			scratch = DefaultScratchNamespace
		}
		mu.Lock()
		defer mu.Unlock()
		key := scratch + "/" + name
		if serial[key] == nil {
			serial[key] = &sync.Mutex{}
		}
		return serial[key]
	}
	var wg sync.WaitGroup
	for i, o := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if l := lockFor(o); l != nil {
				l.Lock()
				defer l.Unlock()
			}
			sem <- struct{}{}
			defer func() { <-sem }()
			results[i] = d.Run(ctx, o)
		}()
	}
	wg.Wait()
	return results
}

func (d *Drill) step(res *Result, format string, args ...any) {
	fmt.Fprintf(d.out(), "[%s] %s\n", res.Target(), fmt.Sprintf(format, args...))
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "rebind"
	}
	return h
}
