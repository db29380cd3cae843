package sandbox

import "context"

// The storage agent and Grafana runner are wired in addons.go once their
// packages exist; until then the sandbox runs without them.
type addonState struct{}

func (s *Sandbox) startAddons(context.Context) error { return nil }

func (s *Sandbox) stopAddons() []error { return nil }
