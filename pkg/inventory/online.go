package inventory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

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
	// API chooses how dashboards and folders are read: APIAuto (default)
	// takes /apis where Grafana serves it (12+), else the legacy /api;
	// APILegacy forces the legacy path.
	API string
	// PageSize bounds an /apis list page (default 500, Grafana's own).
	PageSize int
}

// Ways to read dashboards and folders.
const (
	APIAuto   = ""
	APILegacy = "legacy"
)

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
	// Which orgs, and which APIs: two independent round trips, asked at
	// once. The access error wins: it says what the credentials lack.
	var (
		apis    *grafana.APIs
		apisErr error
		found   = make(chan struct{})
	)
	dctx, stopDiscovery := context.WithCancel(ctx)
	defer stopDiscovery()
	go func() {
		defer close(found)
		if opts.API != APILegacy {
			apis, apisErr = c.DiscoverAPIs(dctx)
		}
	}()
	acc, err := c.ResolveAccess(ctx, want)
	if err != nil {
		stopDiscovery()
		<-found
		return nil, err
	}
	<-found
	if apisErr != nil {
		return nil, apisErr
	}
	inv := &Inventory{FormatVersion: FormatVersion, Source: c.URL(), TakenAt: time.Now().UTC(), LimitedTo: acc.Limited}
	if apis.Served() {
		inv.API = "apis/" + apis.Dashboards
	}
	// Orgs are read side by side through /apis, where each is a sequence of
	// pages (the server works on one org's page while rebind hashes
	// another's). The per-uid path keeps workers busy within an org; taking
	// orgs side by side there was measured slower: the server's searches then
	// compete with its dashboard reads.
	parallel := 1
	if apis.Served() {
		parallel = min(len(acc.Orgs), maxOrgsAtOnce)
	}
	inv.Orgs = make([]Org, len(acc.Orgs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	for i, r := range acc.Orgs {
		g.Go(func() error {
			// Alert rules and library panels are read while the
			// dashboards are: their few requests then cost no time.
			var org, items Org
			og, octx := errgroup.WithContext(gctx)
			og.Go(func() (err error) {
				if apis.Served() {
					org, err = orgFromAPIs(octx, r.Client, r.Org, apis, opts.PageSize, opts.Progress)
				} else {
					org, err = orgFromGrafana(octx, r.Client, r.Org, workers, log, opts.Progress)
				}
				return err
			})
			og.Go(func() error { return itemsFromGrafana(octx, r.Client, &items) })
			if err := og.Wait(); err != nil {
				return fmt.Errorf("org %d (%s): %w", r.Org.ID, r.Org.Name, err)
			}
			org.AlertRules, org.LibraryPanels = items.AlertRules, items.LibraryPanels
			inv.Orgs[i] = org
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	inv.normalize()
	return inv, nil
}

// maxOrgsAtOnce bounds the orgs read at once through /apis: each holds up
// to two pages (a few MB) and one connection.
const maxOrgsAtOnce = 4

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
	entry := Dashboard{UID: h.UID, Title: h.Title, FolderUID: h.FolderUID}
	meta, err := c.ReadDashboard(ctx, h.UID, func(model []byte) (int, error) {
		sum, n, err := hashDashboardPrefix(model, h.UID, h.Title)
		if err != nil {
			return 0, fmt.Errorf("dashboard %s: %w", h.UID, err)
		}
		entry.SHA256 = sum
		return n, nil
	})
	if err != nil {
		return Dashboard{}, err
	}
	entry.Version = meta.Version
	if meta.FolderUID != "" {
		entry.FolderUID = meta.FolderUID
	}
	return entry, nil
}

// orgFromAPIs reads an org's folders and dashboards through /apis: whole
// objects a page at a time, each dashboard hashed in the schema it is
// stored in. An object served converted (another stored version) is read
// again in its own version, since the conversion can drop what the served
// schema cannot hold (docs/grafana-conformance.md §§4, 8).
func orgFromAPIs(ctx context.Context, c *grafana.Client, o grafana.Org, apis *grafana.APIs, pageSize int, progress func(int64, int)) (Org, error) {
	org := Org{ID: o.ID, Name: o.Name}
	ns := grafana.Namespace(o.ID)
	if pageSize <= 0 {
		pageSize = 500
	}
	err := c.ListObjects(ctx, grafana.FolderGroup, apis.Folders, ns, grafana.FolderResource, pageSize, func(obj *grafana.Object) error {
		var spec struct {
			Title string `json:"title"`
		}
		if err := json.Unmarshal(obj.Spec, &spec); err != nil {
			return fmt.Errorf("folder %s: %w", obj.Metadata.Name, err)
		}
		org.Folders = append(org.Folders, Folder{UID: obj.Metadata.Name, Title: spec.Title, ParentUID: obj.Metadata.Annotations[grafana.AnnFolder]})
		return nil
	})
	if err != nil {
		return org, fmt.Errorf("listing folders: %w", err)
	}
	done := 0
	err = c.ListObjectsReading(ctx, grafana.DashboardGroup, apis.Dashboards, ns, grafana.DashboardResource, pageSize, readDashboardSpec, func(obj *grafana.Object) error {
		// Classic versions (v0, v1) share one spec; only a v2 dashboard
		// served as classic, or the reverse, went through a conversion
		// that can lose something.
		if stored := obj.StoredVersion(); schemaFamily(stored) != schemaFamily(apis.Dashboards) && slices.Contains(apis.DashboardVersions, stored) {
			again, err := c.GetObject(ctx, grafana.DashboardGroup, stored, ns, grafana.DashboardResource, obj.Metadata.Name)
			if errors.Is(err, grafana.ErrNotFound) {
				return nil // deleted meanwhile: not there to lose
			}
			if err != nil {
				return fmt.Errorf("dashboard %s in its stored version %s: %w", obj.Metadata.Name, stored, err)
			}
			obj = again
		}
		d, err := dashboardFromObject(obj)
		if err != nil {
			return err
		}
		org.Dashboards = append(org.Dashboards, d)
		done++
		if progress != nil {
			progress(o.ID, done)
		}
		return nil
	})
	if err != nil {
		return org, fmt.Errorf("listing dashboards: %w", err)
	}
	return org, nil
}

// schemaFamily is "v2" for the v2 dashboard schema, "classic" otherwise.
func schemaFamily(version string) string {
	if strings.HasPrefix(version, "v2") {
		return "v2"
	}
	return "classic"
}

// specDigest is a dashboard spec hashed as its list page was decoded.
type specDigest struct{ uid, sum, title string }

// readDashboardSpec hashes a spec where the list decoder finds it, which
// spares walking it once to delimit it and again to hash it.
func readDashboardSpec(obj *grafana.Object, rest []byte) (int, error) {
	uid := obj.Metadata.Name
	if uid == "" {
		return 0, nil // metadata after the spec: hashed once the object is whole
	}
	sum, title, n, err := hashDashboardSpecPrefix(rest, uid)
	if err != nil {
		return 0, fmt.Errorf("dashboard %s: %w", uid, err)
	}
	obj.Read = specDigest{uid: uid, sum: sum, title: title}
	return n, nil
}

// dashboardFromObject hashes a dashboard object's spec like a legacy model
// (id and version dropped, uid and title from the object), so that a
// classic dashboard hashes the same through /api, /apis and grafana.db.
func dashboardFromObject(obj *grafana.Object) (Dashboard, error) {
	dg, ok := obj.Read.(specDigest)
	if !ok || dg.uid != obj.Metadata.Name { // not read, or renamed by a later metadata member
		var err error
		if dg.sum, dg.title, err = HashDashboardSpec(obj.Spec, obj.Metadata.Name); err != nil {
			return Dashboard{}, fmt.Errorf("dashboard %s: %w", obj.Metadata.Name, err)
		}
	}
	sum, title := dg.sum, dg.title
	d := Dashboard{UID: obj.Metadata.Name, Title: title, FolderUID: obj.Metadata.Annotations[grafana.AnnFolder], Version: obj.Metadata.Generation, SHA256: sum}
	if schemaFamily(obj.StoredVersion()) == "v2" {
		d.Schema = "v2"
	}
	return d, nil
}
