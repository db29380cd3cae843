package migrate

import (
	"context"
	"fmt"
	"io"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"go.uber.org/zap"

	"github.com/rebind-dev/rebind/pkg/app"
	"github.com/rebind-dev/rebind/pkg/journal"
	"github.com/rebind-dev/rebind/pkg/kube"
	"github.com/rebind-dev/rebind/pkg/volume"
)

// env is what every step needs.
type env struct {
	c        *kube.Clients
	j        *journal.Journal
	spec     *Spec
	checker  app.Checker
	log      *zap.Logger
	baseline string // file given with --baseline
	// readDB reads a PV's database offline (--from-pv's reference).
	readDB   func(ctx context.Context, pv *corev1.PersistentVolume) (string, func(), error)
	out      io.Writer // short human progress lines
	verdicts []app.Verdict
	warnings []string // what the user must act on after the run
	// confirmed holds what this process's own writes were answered with
	// during the run (a pod's deletion accepted, a claim created naming its
	// PV), so that a step's Check need not read it back: while Grafana is
	// down every request is outage. A resumed run starts without it and
	// reads.
	confirmed map[string]string
	// releases are the old claims being released in the background from
	// just before their pods stop (stopPodsStep) until the claim step
	// needs their names.
	releases map[string]*volume.ClaimRelease
}

func (e *env) confirm(key, value string) {
	if e.confirmed == nil {
		e.confirmed = map[string]string{}
	}
	e.confirmed[key] = value
}

func (e *env) wasConfirmed(key, value string) bool {
	v, ok := e.confirmed[key]
	return ok && v == value
}

// appKind names the application for messages; rollback runs without a
// checker, as it verifies nothing.
func (e *env) appKind() string {
	if e.checker == nil {
		return "application"
	}
	return e.checker.Kind()
}

// progress prints a short human line (nil out: plans printed before a run).
func (e *env) progress(line string) {
	if e.out != nil {
		fmt.Fprintln(e.out, "  "+line)
	}
}

// warn logs what the user must know and keeps it for the report.
func (e *env) warn(msg string) {
	e.log.Warn(msg)
	e.warnings = append(e.warnings, msg)
}

func (e *env) value(key string) string {
	if e.j == nil {
		return "" // a plan printed before any journal exists
	}
	v, _ := e.j.Value(key)
	return v
}

// pvFor is the PV an ordinal ends up on: its own for reuse, the restored
// one (known once the restore step ran) otherwise.
func (e *env) pvFor(ord int) (string, error) {
	if e.spec.Strategy == Reuse {
		if ord < len(e.spec.FromPVs) {
			return e.spec.FromPVs[ord], nil
		}
		return e.spec.Target.Ordinals[ord].PV.Name, nil
	}
	pv := e.value(keyNewPV(ord))
	if pv == "" {
		return "", fmt.Errorf("no restored PersistentVolume recorded for ordinal %d yet", ord)
	}
	return pv, nil
}

// targetPV reads the PV an ordinal ends up on.
func (e *env) targetPV(ctx context.Context, ord int) (string, *corev1.PersistentVolume, error) {
	name, err := e.pvFor(ord)
	if err != nil {
		return "", nil, err
	}
	pv, err := e.getPV(ctx, name)
	return name, pv, err
}

func (e *env) getPV(ctx context.Context, name string) (*corev1.PersistentVolume, error) {
	pv, err := e.c.Kube.CoreV1().PersistentVolumes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading PersistentVolume %s: %w", name, err)
	}
	return pv, nil
}

func (e *env) requireRetain(ctx context.Context, pvName string) error {
	pv, err := e.getPV(ctx, pvName)
	if err != nil {
		return err
	}
	if pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimRetain {
		return fmt.Errorf("PersistentVolume %s has reclaim policy %s: deleting its claim now would destroy it; rebind sets Retain first, so something changed it back", pvName, pv.Spec.PersistentVolumeReclaimPolicy)
	}
	return nil
}
