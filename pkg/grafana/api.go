package grafana

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// MaxSearchLimit is the largest page Grafana's search accepts; larger gives 422.
const MaxSearchLimit = 5000

// Health is the answer of /api/health.
type Health struct {
	Commit   string `json:"commit"`
	Database string `json:"database"`
	Version  string `json:"version"`
}

// UnhealthyError is returned by Health when Grafana answers but says its
// database check fails.
type UnhealthyError struct {
	URL      string
	Status   int
	Database string
}

func (e *UnhealthyError) Error() string {
	return fmt.Sprintf("grafana at %s is unhealthy (HTTP %d, database %q): Grafana cannot query grafana.db; check the volume and the pod logs",
		e.URL, e.Status, e.Database)
}

// Health calls /api/health. A 503 is reported as *UnhealthyError right away
// rather than retried, because the caller usually polls and wants the state.
func (c *Client) Health(ctx context.Context) (Health, error) {
	var h Health
	err := c.do(ctx, request{method: http.MethodGet, path: "/api/health", anonymous: true}, &h)
	var ae *APIError
	if errors.As(err, &ae) && ae.Status >= 500 {
		return h, &UnhealthyError{URL: c.display, Status: ae.Status, Database: nonEmpty(ae.database, ae.Message)}
	}
	return h, err
}

// Org is an organisation.
type Org struct {
	ID   int64  `json:"orgId"`
	Name string `json:"name"`
	Role string `json:"role,omitempty"`
}

// ErrNotForTokens is returned by UserOrgs for a service-account token:
// memberships exist only for users (docs/grafana-conformance.md §1).
var ErrNotForTokens = errors.New("/api/user/orgs is only available for users, not service-account tokens")

// UserOrgs lists the orgs the signed-in user is a member of
// (/api/user/orgs). A Grafana server admin is not a member of every org:
// membership is an org_user row. With a token Grafana answers 200 [] (9.5),
// 403 (10.x, 11.x) or 304 (12.x): all mean ErrNotForTokens, and a token is
// not even asked.
func (c *Client) UserOrgs(ctx context.Context) ([]Org, error) {
	if c.creds.Token != "" {
		return nil, ErrNotForTokens
	}
	var mine []Org
	if err := c.get(ctx, "/api/user/orgs", nil, &mine); err != nil {
		return nil, err
	}
	return mine, nil
}

// ErrNotServerAdmin is returned by AllOrgs when the credentials may not
// list every org (/api/orgs needs a Grafana server admin; tokens never can).
var ErrNotServerAdmin = errors.New("listing every org needs a Grafana server admin's credentials")

// AllOrgs lists every org of the Grafana (/api/orgs, server admins only).
// Pages are 0-based there, unlike search: page=1 would skip the first.
func (c *Client) AllOrgs(ctx context.Context) ([]Org, error) {
	if c.creds.Token != "" {
		return nil, ErrNotServerAdmin
	}
	const perPage = 1000
	var out []Org
	seen := map[int64]bool{}
	for page := 0; ; page++ {
		var batch []struct {
			ID   int64  `json:"id"`
			Name string `json:"name"`
		}
		q := url.Values{"perpage": {strconv.Itoa(perPage)}, "page": {strconv.Itoa(page)}}
		err := c.get(ctx, "/api/orgs", q, &batch)
		var ae *AuthError
		if errors.As(err, &ae) && ae.Kind == AuthForbidden {
			return nil, ErrNotServerAdmin
		}
		if err != nil {
			return nil, err
		}
		for _, o := range batch {
			// Grafana sorts nothing here: pages can overlap under writes.
			if !seen[o.ID] {
				seen[o.ID] = true
				out = append(out, Org{ID: o.ID, Name: o.Name})
			}
		}
		if len(batch) < perPage {
			return out, nil
		}
	}
}

// CurrentOrg is the org the client's requests run in (/api/org): the
// token's own org, or the X-Grafana-Org-Id org for a member. For a user
// who is not a member of that org Grafana runs the request in org -1 and
// answers 404 here (while search answers an empty list): ErrNotFound.
func (c *Client) CurrentOrg(ctx context.Context) (Org, error) {
	var cur struct {
		ID   int64  `json:"id"`
		Name string `json:"name"`
	}
	if err := c.get(ctx, "/api/org", nil, &cur); err != nil {
		return Org{}, err
	}
	return Org{ID: cur.ID, Name: cur.Name}, nil
}

// SearchHit is one entry of /api/search. Folder fields are empty for the
// General folder.
type SearchHit struct {
	ID          int64    `json:"id"`
	UID         string   `json:"uid"`
	Title       string   `json:"title"`
	URI         string   `json:"uri"`
	URL         string   `json:"url"`
	Slug        string   `json:"slug"`
	Type        string   `json:"type"`
	Tags        []string `json:"tags"`
	IsStarred   bool     `json:"isStarred"`
	FolderID    int64    `json:"folderId,omitempty"`
	FolderUID   string   `json:"folderUid,omitempty"`
	FolderTitle string   `json:"folderTitle,omitempty"`
	FolderURL   string   `json:"folderUrl,omitempty"`
}

// Search types.
const (
	TypeDashboard = "dash-db"
	TypeFolder    = "dash-folder"
)

// SearchQuery selects hits; Type is TypeDashboard or TypeFolder.
type SearchQuery struct {
	Type  string
	Query string
	// PageSize defaults to MaxSearchLimit.
	PageSize int
}

// Search walks every page of /api/search, calling fn per hit, so callers can
// start work before the last page arrives. Pages run 1..n until a short page.
func (c *Client) Search(ctx context.Context, q SearchQuery, fn func(SearchHit) error) error {
	limit := q.PageSize
	if limit <= 0 || limit > MaxSearchLimit {
		limit = MaxSearchLimit
	}
	var prevFirst string
	for page := 1; ; page++ {
		v := url.Values{}
		if q.Type != "" {
			v.Set("type", q.Type)
		}
		if q.Query != "" {
			v.Set("query", q.Query)
		}
		v.Set("limit", strconv.Itoa(limit))
		v.Set("page", strconv.Itoa(page))
		var hits []SearchHit
		if err := c.get(ctx, "/api/search", v, &hits); err != nil {
			return err
		}
		if len(hits) > 0 {
			first := hits[0].Type + "/" + hits[0].UID
			// A server that ignores "page" would otherwise loop forever.
			if page > 1 && first == prevFirst {
				return fmt.Errorf("grafana %s: search returned the same page twice (page=%d); the server ignores paging", c.display, page)
			}
			prevFirst = first
		}
		for _, h := range hits {
			if err := fn(h); err != nil {
				return err
			}
		}
		if len(hits) < limit {
			return nil
		}
	}
}

// SearchDashboards lists every dashboard (type=dash-db) of the client's org.
func (c *Client) SearchDashboards(ctx context.Context) ([]SearchHit, error) {
	var out []SearchHit
	err := c.Search(ctx, SearchQuery{Type: TypeDashboard}, func(h SearchHit) error {
		out = append(out, h)
		return nil
	})
	return out, err
}

// DashboardMeta is the "meta" part of /api/dashboards/uid/:uid.
type DashboardMeta struct {
	Type        string    `json:"type"`
	Slug        string    `json:"slug"`
	URL         string    `json:"url"`
	Created     time.Time `json:"created"`
	Updated     time.Time `json:"updated"`
	Version     int64     `json:"version"`
	FolderID    int64     `json:"folderId"`
	FolderUID   string    `json:"folderUid"`
	FolderTitle string    `json:"folderTitle"`
	Provisioned bool      `json:"provisioned"`
}

// Dashboard is a dashboard with its raw JSON model, kept raw so that callers
// can hash exactly what Grafana stored.
type Dashboard struct {
	Dashboard json.RawMessage `json:"dashboard"`
	Meta      DashboardMeta   `json:"meta"`
}

// Dashboard fetches one dashboard; a missing one gives an error matching ErrNotFound.
func (c *Client) Dashboard(ctx context.Context, uid string) (*Dashboard, error) {
	var d Dashboard
	if err := c.get(ctx, "/api/dashboards/uid/"+url.PathEscape(uid), nil, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// ReadDashboard fetches one dashboard and returns its meta. Its model is
// handed to readModel where the answer's decoder finds it, so that it is
// walked once instead of delimited, copied and then read: readModel must
// read exactly one JSON value at the start of rest, return its length, and
// not keep rest (a buffer reused once ReadDashboard returns). An answer
// with two models calls it twice, and the last reading is the one that
// counts, as with encoding/json; an answer without one is an error, so a
// caller never takes a dashboard it could not read for one it did.
func (c *Client) ReadDashboard(ctx context.Context, uid string, readModel func(rest []byte) (int, error)) (DashboardMeta, error) {
	a := &dashboardAnswer{readModel: readModel}
	if err := c.get(ctx, "/api/dashboards/uid/"+url.PathEscape(uid), nil, a); err != nil {
		return DashboardMeta{}, err
	}
	if !a.read {
		return DashboardMeta{}, fmt.Errorf("grafana at %s: the answer for dashboard %s holds no dashboard model", c.display, uid)
	}
	return a.meta, nil
}

// dashboardAnswer decodes an answer in its pooled buffer.
type dashboardAnswer struct {
	readModel func([]byte) (int, error)
	meta      DashboardMeta
	read      bool // readModel was handed a model
}

func (a *dashboardAnswer) decodeBody(body []byte) error {
	var d Dashboard
	a.read = false
	err := d.decodeIn(body, func(rest []byte) (int, error) {
		a.read = true
		return a.readModel(rest)
	})
	a.meta = d.Meta
	return err
}

// Folder is an entry of /api/folders. ParentUID is set for nested folders.
type Folder struct {
	ID        int64  `json:"id"`
	UID       string `json:"uid"`
	Title     string `json:"title"`
	ParentUID string `json:"parentUid,omitempty"`
}

// Folders lists folders through /api/folders, page by page.
func (c *Client) Folders(ctx context.Context) ([]Folder, error) {
	const limit = 1000
	var out []Folder
	for page := 1; ; page++ {
		v := url.Values{"limit": {strconv.Itoa(limit)}, "page": {strconv.Itoa(page)}}
		var fs []Folder
		if err := c.get(ctx, "/api/folders", v, &fs); err != nil {
			return nil, err
		}
		out = append(out, fs...)
		if len(fs) < limit {
			return out, nil
		}
	}
}

// SaveRequest is the body of POST /api/dashboards/db.
type SaveRequest struct {
	Dashboard json.RawMessage `json:"dashboard"`
	FolderUID string          `json:"folderUid,omitempty"`
	Overwrite bool            `json:"overwrite"`
	Message   string          `json:"message,omitempty"`
}

// SaveResult is the 200 answer of POST /api/dashboards/db.
type SaveResult struct {
	ID      int64  `json:"id"`
	UID     string `json:"uid"`
	URL     string `json:"url"`
	Status  string `json:"status"`
	Version int64  `json:"version"`
	Slug    string `json:"slug"`
}

// SaveDashboard creates or updates a dashboard. It is never retried on 5xx: a
// save that did land would then fail with 412 or, with Overwrite, save twice.
// A 412 comes back as *APIError with GrafanaStatus version-mismatch or name-exists.
func (c *Client) SaveDashboard(ctx context.Context, sr SaveRequest) (SaveResult, error) {
	var res SaveResult
	body, err := json.Marshal(sr)
	if err != nil {
		return res, err
	}
	err = c.do(ctx, request{method: http.MethodPost, path: "/api/dashboards/db", body: body}, &res)
	return res, err
}
