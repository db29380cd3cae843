package inventory

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/rebind-dev/rebind/pkg/grafana"
)

// Options tune FromGrafana.
type Options struct {
	// Workers fetch dashboards in parallel (default 8). Each holds at most one
	// dashboard body at a time, which bounds memory whatever the count.
	Workers int
	// OrgIDs limits the inventory to these orgs on purpose
	// (--grafana-org-id). Empty: the client's org when it has one, else
	// every org that exists; one that cannot be read is an error.
	OrgIDs []int64
	Logger *zap.Logger
	// Progress, if set, is called after each dashboard (from several goroutines).
	Progress func(orgID int64, done int)
}

// FromGrafana takes an inventory through the HTTP API.
func FromGrafana(ctx context.Context, c *grafana.Client, opts Options) (*Inventory, error) {
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = 8
	}
	want := opts.OrgIDs
	if len(want) == 0 && c.OrgID() > 0 {
		want = []int64{c.OrgID()}
	}
	acc, err := c.ResolveAccess(ctx, want)
	if err != nil {
		return nil, err
	}
	inv := &Inventory{FormatVersion: FormatVersion, Source: c.URL(), TakenAt: time.Now().UTC(), LimitedTo: acc.Limited}
	for _, r := range acc.Orgs {
		org, err := orgFromGrafana(ctx, r.Client, r.Org, workers, log, opts.Progress)
		if err != nil {
			return nil, fmt.Errorf("org %d (%s): %w", r.Org.ID, r.Org.Name, err)
		}
		inv.Orgs = append(inv.Orgs, org)
	}
	inv.normalize()
	return inv, nil
}

func orgFromGrafana(ctx context.Context, c *grafana.Client, o grafana.Org, workers int, log *zap.Logger, progress func(int64, int)) (Org, error) {
	org := Org{ID: o.ID, Name: o.Name}
	// Search rather than /api/folders: with nested folders the latter lists
	// only one level, while search returns every folder with its parent.
	err := c.Search(ctx, grafana.SearchQuery{Type: grafana.TypeFolder}, func(h grafana.SearchHit) error {
		org.Folders = append(org.Folders, Folder{UID: h.UID, Title: h.Title, ParentUID: h.FolderUID})
		return nil
	})
	if err != nil {
		return org, fmt.Errorf("listing folders: %w", err)
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	hits := make(chan grafana.SearchHit, workers*4)
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		done int
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for h := range hits {
				d, err := dashboardEntry(ctx, c, h)
				if errors.Is(err, grafana.ErrNotFound) {
					// Deleted between search and fetch: it is not there to lose.
					log.Warn("dashboard vanished during inventory", zap.String("uid", h.UID), zap.Int64("org", o.ID))
					continue
				}
				if err != nil {
					cancel(err)
					continue // keep draining so the producer never blocks
				}
				mu.Lock()
				org.Dashboards = append(org.Dashboards, d)
				done++
				n := done
				mu.Unlock()
				if progress != nil {
					progress(o.ID, n)
				}
			}
		}()
	}
	searchErr := c.Search(ctx, grafana.SearchQuery{Type: grafana.TypeDashboard}, func(h grafana.SearchHit) error {
		select {
		case hits <- h:
			return nil
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	})
	close(hits)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return org, err
	}
	if searchErr != nil {
		return org, fmt.Errorf("searching dashboards: %w", searchErr)
	}
	return org, nil
}

func dashboardEntry(ctx context.Context, c *grafana.Client, h grafana.SearchHit) (Dashboard, error) {
	if err := ctx.Err(); err != nil {
		return Dashboard{}, err
	}
	d, err := c.Dashboard(ctx, h.UID)
	if err != nil {
		return Dashboard{}, err
	}
	sum, err := HashDashboard(d.Dashboard, h.UID, h.Title)
	if err != nil {
		return Dashboard{}, fmt.Errorf("dashboard %s: %w", h.UID, err)
	}
	folder := d.Meta.FolderUID
	if folder == "" {
		folder = h.FolderUID
	}
	return Dashboard{UID: h.UID, Title: h.Title, FolderUID: folder, Version: d.Meta.Version, SHA256: sum}, nil
}
