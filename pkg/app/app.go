// Package app is the seam between the migration engine and the application
// whose data it moves. The engine only knows that an application can record
// what it serves (a capture) and later say whether it still serves the same.
// Grafana is the first implementation; Loki or Prometheus would add theirs
// without touching the engine.
package app

import (
	"context"
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
