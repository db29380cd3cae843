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
	"github.com/rebind-dev/rebind/pkg/waits"
)

// Grafana is the app.Checker for Grafana.
type Grafana struct {
	// ClientFor returns the client that reaches one pod's Grafana.
	ClientFor func(pod string) (*grafana.Client, error)
	Inventory inventory.Options
	// AllowEmptyBaseline accepts a Grafana without a single dashboard as a
	// baseline; otherwise "0 of 0 identical" would pass any restore.
	AllowEmptyBaseline bool
	// PollInterval paces Ready's health probes.
	PollInterval time.Duration
}

var (
	_ app.Checker     = (*Grafana)(nil)
	_ app.Preflighter = (*Grafana)(nil)
)

// EmptyBaselineError refuses a baseline with no dashboard at all.
type EmptyBaselineError struct{ Where string }

func (e *EmptyBaselineError) Error() string {
	return fmt.Sprintf("%s holds no dashboard in any org it can read: a verification against it would pass whatever the restore brings back. If that Grafana really is empty, pass --allow-empty-baseline; if it is not, check the credentials and --grafana-org-id, or pass --baseline FILE from an earlier `rebind inventory`", e.Where)
}

// permanent: errors that waiting cannot heal, returned at once by Ready.
func permanent(err error) bool {
	var (
		auth       *grafana.AuthError
		unreadable *grafana.UnreadableOrgsError
		unknown    *grafana.UnknownOrgsError
		wrongOrg   *grafana.WrongOrgError
	)
	return errors.As(err, &auth) || errors.As(err, &unreadable) || errors.As(err, &unknown) || errors.As(err, &wrongOrg)
}

func (g *Grafana) Kind() string { return "grafana" }

// Ready polls /api/health until the database answers (a pod Ready to
// Kubernetes may still be migrating its database), then proves the
// credentials work: a refused password never heals by waiting, so it is
// returned at once with its fix.
func (g *Grafana) Ready(ctx context.Context, pod string) error {
	defer waits.Begin(ctx, "Grafana of "+pod+" to answer")()
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
			// The credentials, and a reader for every org: neither heals
			// by waiting.
			_, err = c.ResolveAccess(ctx, g.Inventory.OrgIDs)
			if permanent(err) {
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

// Preflight checks, before anything changes, that what Capture will take
// can prove something: every org readable (Ready) and at least one
// dashboard, unless an empty Grafana is expected.
func (g *Grafana) Preflight(ctx context.Context, pod string) error {
	if err := g.Ready(ctx, pod); err != nil {
		if permanent(err) && !isAuth(err) {
			return fmt.Errorf("%w: %w", app.ErrIncomplete, err)
		}
		return err
	}
	if g.AllowEmptyBaseline {
		return nil
	}
	c, err := g.ClientFor(pod)
	if err != nil {
		return err
	}
	acc, err := c.ResolveAccess(ctx, g.Inventory.OrgIDs)
	if err != nil {
		return err
	}
	for _, r := range acc.Orgs {
		found := false
		err := r.Client.Search(ctx, grafana.SearchQuery{Type: grafana.TypeDashboard, PageSize: 1}, func(grafana.SearchHit) error {
			found = true
			return errStop
		})
		if err != nil && !errors.Is(err, errStop) {
			return err
		}
		if found {
			return nil
		}
	}
	return fmt.Errorf("%w: %w", app.ErrIncomplete, &EmptyBaselineError{Where: fmt.Sprintf("Grafana of pod %s at %s", pod, c.URL())})
}

func isAuth(err error) bool {
	var auth *grafana.AuthError
	return errors.As(err, &auth)
}

var errStop = errors.New("stop")

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
	if inv.Totals().Dashboards == 0 && !g.AllowEmptyBaseline {
		return nil, &EmptyBaselineError{Where: fmt.Sprintf("Grafana of pod %s at %s", pod, c.URL())}
	}
	var buf bytes.Buffer
	if err := inv.Save(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// CaptureDB takes the inventory of a grafana.db read offline.
func (g *Grafana) CaptureDB(ctx context.Context, path string) ([]byte, error) {
	inv, err := inventory.FromSQLiteContext(ctx, path)
	if err != nil {
		return nil, err
	}
	if inv.Totals().Dashboards == 0 && !g.AllowEmptyBaseline {
		return nil, &EmptyBaselineError{Where: inv.Source}
	}
	var buf bytes.Buffer
	if err := inv.Save(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

var _ app.DBCapturer = (*Grafana)(nil)

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

// Verdict turns an inventory comparison into the seam's verdict. Lost
// counts dashboards, alert rules and library panels missing or changed.
func Verdict(base, cur *inventory.Inventory) app.Verdict {
	r := inventory.Compare(base, cur)
	missing, extra, changed, moved, identical := r.Totals()
	it := r.ItemTotals()
	v := app.Verdict{OK: r.OK(), Checked: r.Checked, Lost: missing + changed + it.Lost(), Detail: r}
	if v.OK {
		v.Summary = fmt.Sprintf("%d of %d dashboards identical", identical, v.Checked)
		if extra > 0 {
			v.Summary += fmt.Sprintf(", %d extra", extra)
		}
		if n := r.Baseline.AlertRules + r.Baseline.LibraryPanels; n > 0 {
			v.Summary += fmt.Sprintf("; %d alert rules and %d library panels identical", r.Baseline.AlertRules, r.Baseline.LibraryPanels)
		}
		if it.NotChecked > 0 {
			v.Summary += "; alert rules and library panels not checked (the baseline is an older inventory)"
		}
		if len(r.NotChecked) > 0 {
			v.Summary += fmt.Sprintf("; org(s) %v not checked (--grafana-org-id)", r.NotChecked)
		}
		return v
	}
	v.Summary = fmt.Sprintf("%d missing, %d changed, %d moved of %d dashboards", missing, changed, moved, v.Checked)
	if it.Unverifiable > 0 {
		v.Summary += fmt.Sprintf(", %d unverifiable (schema v2 read through different APIs)", it.Unverifiable)
	}
	if it.Lost() > 0 {
		v.Summary += fmt.Sprintf("; alert rules %d missing, %d changed; library panels %d missing, %d changed",
			it.MissingAlertRules, it.ChangedAlertRules, it.MissingLibraryPanels, it.ChangedLibraryPanels)
	}
	return v
}
