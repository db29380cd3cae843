// Package app is the seam between the migration engine and the application
// whose data it moves. The engine only knows that an application can record
// what it serves (a capture) and later say whether it still serves the same.
// Grafana is the first implementation; Loki or Prometheus would add theirs
// without touching the engine.
package app

import (
	"context"
	"errors"
)

// Verdict is the outcome of comparing a pod's data with a capture.
type Verdict struct {
	OK bool `json:"ok"`
	// Summary is one short human line ("120 dashboards match").
	Summary string `json:"summary"`
	// Checked counts the items compared; Lost counts missing or changed ones.
	Checked int `json:"checked"`
	Lost    int `json:"lost"`
	// Detail is application-specific, included in JSON reports.
	Detail any `json:"detail,omitempty"`
}

// Checker captures and verifies an application's data through its own API.
type Checker interface {
	// Kind names the application ("grafana").
	Kind() string
	// Ready waits until the pod's application answers, since a pod that is
	// Ready to Kubernetes may still be opening its database.
	Ready(ctx context.Context, pod string) error
	// Capture records what the pod serves now.
	Capture(ctx context.Context, pod string) ([]byte, error)
	// Verify compares what the pod serves with a capture.
	Verify(ctx context.Context, pod string, capture []byte) (Verdict, error)
}

// Preflighter is a Checker that can tell, before anything changes, whether
// what it will capture can prove anything: every part of the application's
// data readable, and not empty unless that is expected. What it cannot
// check must stop the run, never count as verified.
type Preflighter interface {
	Preflight(ctx context.Context, pod string) error
}

// ErrIncomplete marks a Preflight failure where the application answers
// but part of its data could not be covered (unreadable parts, nothing to
// compare): the error's text says what and how to fix it.
var ErrIncomplete = errors.New("cannot be verified completely")

// Preflight runs c's Preflight when it has one, else Ready.
func Preflight(ctx context.Context, c Checker, pod string) error {
	if p, ok := c.(Preflighter); ok {
		return p.Preflight(ctx, pod)
	}
	return c.Ready(ctx, pod)
}

// DBCapturer is a Checker that can also capture from the application's
// files read offline (Grafana's grafana.db): the reference when the volume
// to verify is not the one the application serves from now.
type DBCapturer interface {
	CaptureDB(ctx context.Context, path string) ([]byte, error)
}
