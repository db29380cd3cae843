package grafana

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// Grafana 12 serves dashboards and folders as Kubernetes-style resources
// under /apis (docs/grafana-conformance.md §8), and Grafana 13 deprecates
// the legacy /api for them. A list returns full objects a page at a time,
// where the legacy path needs one request per dashboard, and an object is
// served in its stored schema (v1 or v2), where /api/dashboards/uid
// converts a v2 dashboard, losing what the classic schema cannot hold.

// API groups and resources rebind reads.
const (
	DashboardGroup    = "dashboard.grafana.app"
	FolderGroup       = "folder.grafana.app"
	DashboardResource = "dashboards"
	FolderResource    = "folders"

	// AnnFolder holds the uid of an object's parent folder.
	AnnFolder = "grafana.app/folder"
)

// APIs is what a Grafana serves under /apis: the preferred version of the
// dashboard and folder groups, empty when it serves none (before 12).
type APIs struct {
	Dashboards, Folders string
	// DashboardVersions lists every served dashboard version.
	DashboardVersions []string
}

// Served says whether dashboards and folders can be read through /apis.
func (a *APIs) Served() bool { return a != nil && a.Dashboards != "" && a.Folders != "" }

// DiscoverAPIs reads /apis as kubectl reads a cluster's discovery. A
// Grafana without it (404) gives an empty APIs, not an error.
func (c *Client) DiscoverAPIs(ctx context.Context) (*APIs, error) {
	var list struct {
		Groups []struct {
			Name     string `json:"name"`
			Versions []struct {
				Version string `json:"version"`
			} `json:"versions"`
			Preferred struct {
				Version string `json:"version"`
			} `json:"preferredVersion"`
		} `json:"groups"`
	}
	err := c.get(ctx, "/apis", nil, &list)
	if errors.Is(err, ErrNotFound) {
		return &APIs{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("discovering /apis: %w", err)
	}
	out := &APIs{}
	for _, g := range list.Groups {
		pref := g.Preferred.Version
		if pref == "" && len(g.Versions) > 0 {
			pref = g.Versions[0].Version
		}
		switch g.Name {
		case DashboardGroup:
			out.Dashboards = pref
			for _, v := range g.Versions {
				out.DashboardVersions = append(out.DashboardVersions, v.Version)
			}
		case FolderGroup:
			out.Folders = pref
		}
	}
	return out, nil
}

// Namespace is the /apis namespace of an org: "default" for org 1,
// "org-<id>" otherwise (docs/grafana-conformance.md §8).
func Namespace(orgID int64) string {
	if orgID == 1 {
		return "default"
	}
	return "org-" + strconv.FormatInt(orgID, 10)
}

// OrgOfNamespace is Namespace's inverse; false for a namespace of another
// deployment shape (Grafana Cloud's stacks-<id>).
func OrgOfNamespace(ns string) (int64, bool) {
	if ns == "default" {
		return 1, true
	}
	id, err := strconv.ParseInt(strings.TrimPrefix(ns, "org-"), 10, 64)
	if !strings.HasPrefix(ns, "org-") || err != nil || id <= 0 {
		return 0, false
	}
	return id, true
}

// Object is a dashboard or folder as /apis serves it.
type Object struct {
	APIVersion string          `json:"apiVersion"`
	Kind       string          `json:"kind"`
	Metadata   ObjectMeta      `json:"metadata"`
	Spec       json.RawMessage `json:"spec"`
	// Read is what a list's SpecReader made of Spec (nil when none read it).
	Read   any `json:"-"`
	Status struct {
		// Conversion is set when the object was served in another version
		// than it is stored in.
		Conversion *struct {
			StoredVersion string `json:"storedVersion"`
			Failed        bool   `json:"failed"`
			Error         string `json:"error"`
		} `json:"conversion,omitempty"`
	} `json:"status"`
}

// ObjectMeta is the part of an object's metadata rebind uses.
type ObjectMeta struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace"`
	Generation  int64             `json:"generation"`
	Annotations map[string]string `json:"annotations"`
	Labels      map[string]string `json:"labels"`
}

// StoredVersion is the version the object is stored at: the served one
// unless a conversion says otherwise.
func (o *Object) StoredVersion() string {
	if cv := o.Status.Conversion; cv != nil && cv.StoredVersion != "" {
		return cv.StoredVersion
	}
	if _, v, ok := strings.Cut(o.APIVersion, "/"); ok {
		return v
	}
	return o.APIVersion
}

// ListObjects walks every page of a resource list in a namespace (limit
// and continue, as Kubernetes lists page), calling fn per object in order.
// The next page is read while fn works through the current one, so that
// the server's time and the caller's overlap; at most two pages are held.
func (c *Client) ListObjects(ctx context.Context, group, version, ns, resource string, limit int, fn func(*Object) error) error {
	return c.ListObjectsReading(ctx, group, version, ns, resource, limit, nil, fn)
}

// ListObjectsReading is ListObjects with each spec read by readSpec as its
// page is decoded (in the goroutine that reads ahead, while fn works on
// the page before).
func (c *Client) ListObjectsReading(ctx context.Context, group, version, ns, resource string, limit int, readSpec SpecReader, fn func(*Object) error) error {
	path := fmt.Sprintf("/apis/%s/%s/namespaces/%s/%s", group, version, url.PathEscape(ns), resource)
	ctx, cancel := context.WithCancel(ctx)
	type page struct {
		items []*Object
		err   error
	}
	pages := make(chan page) // unbuffered: one page read ahead, no more
	stopped := make(chan struct{})
	defer func() {
		cancel()
		<-stopped // the reader never outlives the call
	}()
	go func() {
		defer close(stopped)
		defer close(pages)
		cont := ""
		seen := map[string]bool{}
		for {
			q := url.Values{}
			if limit > 0 {
				q.Set("limit", strconv.Itoa(limit))
			}
			if cont != "" {
				q.Set("continue", cont)
			}
			body := objectPage{readSpec: readSpec}
			p := page{}
			if err := c.get(ctx, path, q, &body); err != nil {
				p.err = fmt.Errorf("listing %s: %w", path, err)
			} else if next := body.Continue; next != "" && seen[next] {
				// A server that hands out the same token again would loop forever.
				p.err = fmt.Errorf("listing %s: the server repeated continue token %q", path, next)
			}
			p.items = body.Items
			select {
			case pages <- p:
			case <-ctx.Done():
				return
			}
			if p.err != nil || body.Continue == "" {
				return
			}
			seen[body.Continue] = true
			cont = body.Continue
		}
	}()
	for p := range pages {
		if p.err != nil {
			return p.err
		}
		for _, it := range p.items {
			if err := fn(it); err != nil {
				return err
			}
		}
	}
	return nil
}

// GetObject reads one object in a version; a missing one matches ErrNotFound.
func (c *Client) GetObject(ctx context.Context, group, version, ns, resource, name string) (*Object, error) {
	var o Object
	path := fmt.Sprintf("/apis/%s/%s/namespaces/%s/%s/%s", group, version, url.PathEscape(ns), resource, url.PathEscape(name))
	if err := c.get(ctx, path, nil, &o); err != nil {
		return nil, err
	}
	return &o, nil
}

// AlertRule is an entry of /api/v1/provisioning/alert-rules, with the
// fields rebind compares (note Grafana's orgID/folderUID spelling).
type AlertRule struct {
	UID         string            `json:"uid"`
	OrgID       int64             `json:"orgID"`
	FolderUID   string            `json:"folderUID"`
	RuleGroup   string            `json:"ruleGroup"`
	Title       string            `json:"title"`
	Condition   string            `json:"condition"`
	Data        json.RawMessage   `json:"data"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

// AlertRules lists every alert rule of the client's org (the endpoint does
// not page: docs/grafana-conformance.md §9).
func (c *Client) AlertRules(ctx context.Context) ([]AlertRule, error) {
	var out []AlertRule
	if err := c.get(ctx, "/api/v1/provisioning/alert-rules", nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// LibraryPanel is an entry of /api/library-elements.
type LibraryPanel struct {
	UID       string          `json:"uid"`
	Name      string          `json:"name"`
	FolderUID string          `json:"folderUid"`
	Model     json.RawMessage `json:"model"`
}

// LibraryPanels lists the org's library panels (kind 1), page by page.
func (c *Client) LibraryPanels(ctx context.Context) ([]LibraryPanel, error) {
	const perPage = 100
	var out []LibraryPanel
	for page := 1; ; page++ {
		var res struct {
			Result struct {
				TotalCount int64          `json:"totalCount"`
				Elements   []LibraryPanel `json:"elements"`
			} `json:"result"`
		}
		q := url.Values{"kind": {"1"}, "perPage": {strconv.Itoa(perPage)}, "page": {strconv.Itoa(page)}}
		if err := c.get(ctx, "/api/library-elements", q, &res); err != nil {
			return nil, err
		}
		out = append(out, res.Result.Elements...)
		if len(res.Result.Elements) < perPage || int64(len(out)) >= res.Result.TotalCount {
			return out, nil
		}
	}
}
