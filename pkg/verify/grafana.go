// Package verify implements the application checks behind the app seam.
// Grafana is checked by comparing dashboard inventories taken through its
// HTTP API before and after the migration.
package verify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rebind-dev/rebind/pkg/app"
	"github.com/rebind-dev/rebind/pkg/grafana"
	"github.com/rebind-dev/rebind/pkg/inventory"
)

// Grafana is the app.Checker for Grafana.
type Grafana struct {
	// ClientFor returns the client that reaches one pod's Grafana.
	ClientFor func(pod string) (*grafana.Client, error)
	Inventory inventory.Options
	// PollInterval paces Ready's health probes.
	PollInterval time.Duration
}

var _ app.Checker = (*Grafana)(nil)

func (g *Grafana) Kind() string { return "grafana" }

// Ready polls /api/health until the database answers (a pod Ready to
// Kubernetes may still be migrating its database), then proves the
// credentials work: a refused password never heals by waiting, so it is
// returned at once with its fix.
func (g *Grafana) Ready(ctx context.Context, pod string) error {
	c, err := g.ClientFor(pod)
	if err != nil {
		return err
	}
	interval := g.PollInterval
	if interval == 0 {
		interval = 250 * time.Millisecond
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var last error
	for {
		_, err := c.Health(ctx)
		if err == nil {
			_, err = c.Orgs(ctx)
			var auth *grafana.AuthError
			if errors.As(err, &auth) {
				return err
			}
			if err == nil {
				return nil
			}
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("Grafana of pod %s at %s not healthy: %w (last error: %v)", pod, c.URL(), ctx.Err(), last)
		case <-t.C:
		}
	}
}

// Capture takes the pod's inventory.
func (g *Grafana) Capture(ctx context.Context, pod string) ([]byte, error) {
	c, err := g.ClientFor(pod)
	if err != nil {
		return nil, err
	}
	inv, err := inventory.FromGrafana(ctx, c, g.Inventory)
	if err != nil {
		return nil, fmt.Errorf("dashboard inventory of pod %s at %s: %w", pod, c.URL(), err)
	}
	var buf bytes.Buffer
	if err := inv.Save(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Verify compares the pod's inventory with the capture.
func (g *Grafana) Verify(ctx context.Context, pod string, capture []byte) (app.Verdict, error) {
	base, err := inventory.Load(bytes.NewReader(capture))
	if err != nil {
		return app.Verdict{}, fmt.Errorf("baseline inventory: %w", err)
	}
	c, err := g.ClientFor(pod)
	if err != nil {
		return app.Verdict{}, err
	}
	cur, err := inventory.FromGrafana(ctx, c, g.Inventory)
	if err != nil {
		return app.Verdict{}, fmt.Errorf("dashboard inventory of pod %s at %s: %w", pod, c.URL(), err)
	}
	return Verdict(base, cur), nil
}

// Verdict turns an inventory comparison into the seam's verdict.
func Verdict(base, cur *inventory.Inventory) app.Verdict {
	r := inventory.Compare(base, cur)
	missing, extra, changed, moved, identical := r.Totals()
	v := app.Verdict{OK: r.OK(), Checked: base.Totals().Dashboards, Lost: missing + changed, Detail: r}
	if v.OK {
		v.Summary = fmt.Sprintf("%d of %d dashboards identical", identical, v.Checked)
		if extra > 0 {
			v.Summary += fmt.Sprintf(", %d extra", extra)
		}
	} else {
		v.Summary = fmt.Sprintf("%d missing, %d changed, %d moved of %d dashboards", missing, changed, moved, v.Checked)
	}
	return v
}
