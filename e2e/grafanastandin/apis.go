package grafanastandin

// The Kubernetes-style /apis of Grafana 12+ (conformance §8): discovery,
// and list/get of dashboards (dashboard.grafana.app) and folders
// (folder.grafana.app). Only reads are modelled.

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultAPIsMaxPageSizeBytes is the byte budget of one /apis list page of
// the resource server (max_page_size_bytes, default 2 MiB:
// storage/unified/resource/server.go @ v12.4.0): a page ends at `limit`
// items or once its objects reach this size, whichever comes first
// (conformance §8 "List paging").
const DefaultAPIsMaxPageSizeBytes = 2 << 20

// defaultAPIsLimit is the resource server's page size when the request
// names none (server.go List: "default max 500 items in a page" @ v12.4.0);
// there is no upper bound besides the byte budget.
const defaultAPIsLimit = 500

// defaultLegacyFolderLimit: folders read through the legacy folder storage
// page by 100 (registry/apis/folders/continue.go defaultPageLimit @ v12.4.0).
const defaultLegacyFolderLimit = 100

// k8sStatus writes a Kubernetes Status (metav1.Status) failure.
func k8sStatus(w http.ResponseWriter, code int, reason, message string, details map[string]string) {
	body := map[string]any{"kind": "Status", "apiVersion": "v1", "metadata": map[string]any{}, "status": "Failure", "message": message, "code": code}
	if reason != "" {
		body["reason"] = reason
	}
	if details != nil {
		body["details"] = details
	}
	writeJSON(w, code, body)
}

func k8sNotFound(w http.ResponseWriter) {
	// The apiserver's answer for a path it does not serve.
	k8sStatus(w, http.StatusNotFound, "NotFound", "the server could not find the requested resource", map[string]string{})
}

type groupVersion struct {
	GroupVersion string `json:"groupVersion"`
	Version      string `json:"version"`
}

type apiGroup struct {
	Kind             string         `json:"kind,omitempty"`
	APIVersion       string         `json:"apiVersion,omitempty"`
	Name             string         `json:"name"`
	Versions         []groupVersion `json:"versions"`
	PreferredVersion groupVersion   `json:"preferredVersion"`
}

// groups lists the API groups the stand-in serves, with their versions in
// priority order (conformance §8 "Dashboard versions", "Folder versions").
func (s *Server) groups() []apiGroup {
	mk := func(name string, versions []string) apiGroup {
		g := apiGroup{Name: name}
		for _, v := range versions {
			g.Versions = append(g.Versions, groupVersion{name + "/" + v, v})
		}
		g.PreferredVersion = g.Versions[0]
		return g
	}
	return []apiGroup{mk(dashboardGroup, s.f.dashboardVersions), mk(folderGroup, s.f.folderVersions)}
}

// namespaceInPath finds the namespace of an /apis path the way Grafana's
// authn does (authnimpl/service.go parseNamespace @ v12.4.0).
func namespaceInPath(path string) string {
	i := strings.Index(path, "/namespaces/")
	if i < 0 {
		return ""
	}
	ns, _, _ := strings.Cut(path[i+len("/namespaces/"):], "/")
	return ns
}

func isAPIsPath(path string) bool { return path == "/apis" || strings.HasPrefix(path, "/apis/") }

// apis serves everything under /apis.
func (s *Server) apis(w http.ResponseWriter, r *http.Request) {
	if !s.f.apis {
		// conformance §8: /apis dashboards and folders are Grafana 12+. Older
		// versions answer like any unknown API path (NotFoundHandler, index.go
		// @ v9.5.2: "/apis" is an API request, so JSON). Grafana 10/11 did
		// embed an apiserver for other groups behind feature flags; the
		// stand-in serves none of them.
		msg(w, http.StatusNotFound, "Not found")
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		k8sStatus(w, http.StatusMethodNotAllowed, "MethodNotAllowed", "the server does not allow this method on the requested resource", map[string]string{})
		return
	}
	var parts []string
	if rest := strings.Trim(strings.TrimPrefix(r.URL.Path, "/apis"), "/"); rest != "" {
		parts = strings.Split(rest, "/")
	}
	groups := s.groups()
	if len(parts) == 0 {
		// conformance §8 "GET /apis discovery": a Kubernetes APIGroupList.
		writeJSON(w, http.StatusOK, map[string]any{"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
		return
	}
	var g *apiGroup
	for i := range groups {
		if groups[i].Name == parts[0] {
			g = &groups[i]
		}
	}
	if g == nil {
		k8sNotFound(w)
		return
	}
	if len(parts) == 1 {
		out := *g
		out.Kind, out.APIVersion = "APIGroup", "v1"
		writeJSON(w, http.StatusOK, out)
		return
	}
	version := parts[1]
	served := false
	for _, v := range g.Versions {
		served = served || v.Version == version
	}
	if !served {
		k8sNotFound(w)
		return
	}
	resource, kind := dashboardResource, "Dashboard"
	if g.Name == folderGroup {
		resource, kind = folderResource, "Folder"
	}
	if len(parts) == 2 {
		writeJSON(w, http.StatusOK, map[string]any{"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": g.Name + "/" + version,
			"resources": []map[string]any{{"name": resource, "singularName": strings.ToLower(kind), "namespaced": true, "kind": kind,
				"verbs": []string{"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"}}}})
		return
	}
	if len(parts) < 5 || len(parts) > 6 || parts[2] != "namespaces" || parts[4] != resource {
		k8sNotFound(w)
		return
	}
	ns, name := parts[3], ""
	verb := "list"
	if len(parts) == 6 {
		name, verb = parts[5], "get"
	}
	org, ok := s.apisOrg(w, r, ns, g.Name, resource, name, verb)
	if !ok {
		return
	}
	req := apisRequest{org: org, ns: ns, group: g.Name, resource: resource, kind: kind, version: version, name: name}
	if name != "" {
		s.apisGet(w, r, req)
		return
	}
	s.apisList(w, r, req)
}

type apisRequest struct {
	org                                      int64
	ns, group, resource, kind, version, name string
}

// apisOrg checks that the caller acts in the namespace's org. The
// namespace sets the request org (conformance §1 "Header parsing", §8);
// a basic-auth user who is not a member of it runs in org -1 (§1), and then:
//   - a user who is not a server admin is stopped by the namespace
//     authorizer: 403 Forbidden, reason "invalid org"
//     (apiserver/auth/authorizer/namespace.go @ v12.4.0);
//   - a server admin passes that authorizer (it defers to others for
//     Grafana admins), and the storage access check then fails on the
//     identity's namespace ("org--1") not matching: the error is not an API
//     status, so the apiserver answers 500 with authlib's "namespace
//     mismatch" message (storage/unified/resource/server.go List/Read,
//     errors.go AsErrorResult @ v12.4.0; authlib authz client). Code-derived,
//     not executed; the message text depends on the authlib release.
//
// A token's foreign namespace never gets here: authn answers 401
// api-key.organization-mismatch (§8 "Path, namespaces").
func (s *Server) apisOrg(w http.ResponseWriter, r *http.Request, ns, group, resource, name, verb string) (int64, bool) {
	ri := info(r)
	org, _, ok := parseNamespace(ns)
	if ok && org == ri.orgID {
		return org, true
	}
	if !ri.p.serverAdm {
		details := map[string]string{"group": group, "kind": resource}
		if name != "" {
			details["name"] = name
		}
		what := resource + "." + group
		if name != "" {
			what += ` "` + name + `"`
		}
		k8sStatus(w, http.StatusForbidden, "Forbidden", fmt.Sprintf("%s is forbidden: User %q cannot %s resource %q in API group %q in the namespace %q: invalid org",
			what, ri.p.login, verb, resource, group, ns), details)
		return 0, false
	}
	k8sStatus(w, http.StatusInternalServerError, "", fmt.Sprintf("namespace mismatch: got %s but expected %s", namespaceOf(ri.orgID), ns), nil)
	return 0, false
}

// serve turns a stored object into the answer for version: apiVersion set,
// resourceVersion filled in, the spec converted between classic and v2 when
// the families differ, and status.conversion{storedVersion,failed,error}
// whenever the version differs from the stored one (conformance §8
// "Object shape"; migration/conversion/v0.go, v1.go, v2.go @ v12.4.0).
func serve(o *object, group, version string, rv int64) {
	o.Metadata.ResourceVersion = strconv.FormatInt(rv, 10)
	if group == folderGroup {
		o.APIVersion = folderGroup + "/" + version
		return
	}
	stored := strings.TrimPrefix(o.APIVersion, dashboardGroup+"/")
	o.APIVersion = dashboardGroup + "/" + version
	if stored == version {
		o.Status = json.RawMessage(`{}`)
		return
	}
	var (
		spec []byte
		err  error
	)
	switch {
	case isV2(stored) && !isV2(version):
		spec, err = v2ToClassic(o.Spec)
	case !isV2(stored) && isV2(version):
		spec, err = classicToV2(o.Spec)
	default:
		spec = o.Spec
	}
	conv := map[string]any{"storedVersion": stored, "failed": err != nil}
	if err != nil {
		conv["error"] = err.Error()
		spec = []byte(`{}`)
	}
	o.Spec = spec
	o.Status = mustJSON(map[string]any{"conversion": conv})
}

// object returns r as an object (as stored, without resourceVersion).
func (r record) object(folderVersion string) (object, error) {
	return r.newObject(folderVersion), nil
}

// item is one listed object.
type item struct {
	o  object
	rv int64
	id int64 // legacy id, for the legacy continue token
}

// apisGet implements GET .../namespaces/<ns>/<resource>/<name>: 404 with a
// Kubernetes NotFound Status when missing.
func (s *Server) apisGet(w http.ResponseWriter, r *http.Request, req apisRequest) {
	var (
		it    item
		found bool
		err   error
	)
	if s.unified {
		it, found, err = s.unifiedGet(r.Context(), req)
	} else {
		var items []item
		items, err = s.legacyItems(r.Context(), req, req.name, 0, 1, 0)
		if len(items) > 0 {
			it, found = items[0], true
		}
	}
	if err != nil {
		s.apisInternal(w, err)
		return
	}
	if !found {
		k8sStatus(w, http.StatusNotFound, "NotFound", fmt.Sprintf("%s.%s %q not found", req.resource, req.group, req.name),
			map[string]string{"name": req.name, "group": req.group, "kind": req.resource})
		return
	}
	serve(&it.o, req.group, req.version, it.rv)
	writeJSON(w, http.StatusOK, it.o)
}

func (s *Server) apisInternal(w http.ResponseWriter, err error) {
	if s.closed.Load() {
		k8sStatus(w, http.StatusServiceUnavailable, "ServiceUnavailable", "database is closed", nil)
		return
	}
	k8sStatus(w, http.StatusInternalServerError, "InternalError", err.Error(), nil)
}

func (s *Server) unifiedGet(ctx context.Context, req apisRequest) (item, bool, error) {
	var it item
	var value []byte
	err := s.db.QueryRowContext(ctx, `SELECT resource_version, value FROM resource WHERE namespace = ? AND "group" = ? AND resource = ? AND name = ?`,
		req.ns, req.group, req.resource, req.name).Scan(&it.rv, &value)
	if errors.Is(err, sql.ErrNoRows) {
		return it, false, nil
	}
	if err == nil {
		err = json.Unmarshal(value, &it.o)
	}
	return it, err == nil, err
}

// legacyItems reads dashboards or folders of the legacy tables as objects,
// as 12.4's legacy storage does (registry/apis/dashboard/legacy/
// sql_dashboards.go and query_dashboards.sql, registry/apis/folders/
// conversions.go @ v12.4.0):
//   - dashboards newest id first (ORDER BY id DESC, after an id when
//     continuing), resourceVersion = version, createdBy "user:<uid>";
//   - folders by title, resourceVersion = updated in milliseconds, createdBy
//     "user:<numeric id>".
//
// name selects one object; beforeID, limit and offset page.
func (s *Server) legacyItems(ctx context.Context, req apisRequest, name string, beforeID int64, limit, offset int) ([]item, error) {
	isFolder := req.resource == folderResource
	q := `SELECT d.id, d.uid, d.title, d.version, d.data, d.created, d.updated, COALESCE(d.created_by, 0), COALESCE(d.updated_by, 0),
		COALESCE(fo.parent_uid, d.folder_uid, ''), COALESCE(d.api_version, ''), COALESCE(fo.description, '')
		FROM dashboard d LEFT JOIN folder fo ON fo.org_id = d.org_id AND fo.uid = d.uid AND d.is_folder = 1
		WHERE d.org_id = ? AND d.is_folder = ? AND d.deleted IS NULL`
	args := []any{req.org, isFolder}
	if name != "" {
		q += ` AND d.uid = ?`
		args = append(args, name)
	}
	if beforeID > 0 {
		q += ` AND d.id < ?`
		args = append(args, beforeID)
	}
	if isFolder {
		q += ` ORDER BY d.title, d.uid`
	} else {
		q += ` ORDER BY d.id DESC`
	}
	q += ` LIMIT ? OFFSET ?`
	args = append(args, limit, offset)
	users, err := userUIDs(ctx, s.db)
	if err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []item
	for rows.Next() {
		var (
			rec              record
			data             []byte
			created, updated string
			cby, uby         int64
		)
		if err := rows.Scan(&rec.id, &rec.uid, &rec.title, &rec.version, &data, &created, &updated, &cby, &uby, &rec.folderUID, &rec.storedVersion, &rec.folderDescription); err != nil {
			return nil, err
		}
		rec.org, rec.isFolder = req.org, isFolder
		rec.created, rec.updated = parseDBTime(created), parseDBTime(updated)
		it := item{id: rec.id, rv: rec.version}
		if isFolder {
			if cby > 0 {
				rec.createdBy = "user:" + strconv.FormatInt(cby, 10)
			}
			if uby > 0 {
				rec.updatedBy = "user:" + strconv.FormatInt(uby, 10)
			}
			it.rv = rec.updated.UnixMilli()
		} else {
			rec.createdBy, rec.updatedBy = users[cby], users[uby]
			if rec.storedVersion == "" || rec.storedVersion == "v1alpha1" {
				rec.storedVersion = s.f.classicStoredVersion
			}
			if rec.spec, err = classicSpec(data); err != nil {
				return nil, fmt.Errorf("dashboard %s: %w", rec.uid, err)
			}
		}
		if it.o, err = rec.object(s.f.folderVersions[0]); err != nil {
			return nil, err
		}
		out = append(out, it)
	}
	return out, rows.Err()
}

// apisList implements GET .../namespaces/<ns>/<resource>?limit=&continue=:
// a Kubernetes List; metadata.continue is set while more items follow and
// absent on the last page (conformance §8 "List paging").
func (s *Server) apisList(w http.ResponseWriter, r *http.Request, req apisRequest) {
	ctx := r.Context()
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	cont := r.URL.Query().Get("continue")
	var (
		items  []item
		next   string
		listRV int64
		err    error
	)
	switch {
	case s.unified:
		items, next, listRV, err = s.unifiedList(ctx, req, limit, cont)
	case req.resource == folderResource:
		items, next, listRV, err = s.legacyFolderList(ctx, req, limit, cont)
	default:
		items, next, listRV, err = s.legacyDashboardList(ctx, req, limit, cont)
	}
	if err != nil {
		// Storage errors, a bad continue token included, are plain errors:
		// the apiserver answers 500 with their text.
		s.apisInternal(w, err)
		return
	}
	meta := map[string]string{"resourceVersion": strconv.FormatInt(listRV, 10)}
	if next != "" {
		meta["continue"] = next
	}
	var b bytes.Buffer
	b.WriteString(`{"kind":"` + req.kind + `List","apiVersion":"` + req.group + "/" + req.version + `","metadata":`)
	b.Write(mustJSON(meta))
	b.WriteString(`,"items":[`)
	for i := range items {
		if i > 0 {
			b.WriteByte(',')
		}
		serve(&items[i].o, req.group, req.version, items[i].rv)
		ob, err := items[i].o.appendJSON(b.AvailableBuffer())
		if err != nil {
			s.apisInternal(w, err)
			return
		}
		b.Write(ob)
	}
	b.WriteString(`]}`)
	writeRaw(w, http.StatusOK, b.Bytes())
}

// pageCut takes items up to limit or until their stored size reaches the
// byte budget, the resource server's rule (server.go List @ v12.4.0: the
// item that crosses the budget is still included).
func (s *Server) pageCut(sizes []int, limit int) int {
	budget, n := 0, 0
	for _, sz := range sizes {
		n++
		budget += sz
		if n >= limit || budget >= s.maxPageBytes {
			break
		}
	}
	return n
}

type unifiedToken struct {
	Offset int64 `json:"o"`
	RV     int64 `json:"v"`
	Sort   bool  `json:"s"`
}

// unifiedList pages `resource` by name, with Grafana's unified continue
// token (base64 of {"o":offset,"v":listRV,"s":false}, storage/unified/sql/
// continue.go @ v12.4.0). Later pages read the current rows, not a snapshot
// at the token's resource version (Grafana reads history at that version).
func (s *Server) unifiedList(ctx context.Context, req apisRequest, limit int, cont string) ([]item, string, int64, error) {
	if limit <= 0 {
		limit = defaultAPIsLimit
	}
	var tok unifiedToken
	if cont != "" {
		raw, err := base64.StdEncoding.DecodeString(cont)
		if err != nil {
			return nil, "", 0, errors.New("error decoding continue token")
		}
		if err := json.Unmarshal(raw, &tok); err != nil {
			return nil, "", 0, err
		}
	}
	var listRV sql.NullInt64
	if err := s.db.QueryRowContext(ctx, `SELECT resource_version FROM resource_version WHERE "group" = ? AND resource = ?`, req.group, req.resource).Scan(&listRV); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, "", 0, err
	}
	if tok.RV > 0 {
		listRV.Int64 = tok.RV
	}
	if listRV.Int64 < 1 {
		listRV.Int64 = time.Now().UnixMicro()
	}
	rows, err := s.db.QueryContext(ctx, `SELECT resource_version, value FROM resource WHERE namespace = ? AND "group" = ? AND resource = ?
		ORDER BY namespace, name LIMIT ? OFFSET ?`, req.ns, req.group, req.resource, limit+1, tok.Offset)
	if err != nil {
		return nil, "", 0, err
	}
	defer rows.Close()
	var (
		items []item
		sizes []int
	)
	for rows.Next() {
		var it item
		var value []byte
		if err := rows.Scan(&it.rv, &value); err != nil {
			return nil, "", 0, err
		}
		if err := json.Unmarshal(value, &it.o); err != nil {
			return nil, "", 0, err
		}
		items, sizes = append(items, it), append(sizes, len(value))
	}
	if err := rows.Err(); err != nil {
		return nil, "", 0, err
	}
	n := s.pageCut(sizes, limit)
	var next string
	if n < len(items) {
		next = continueToken(unifiedToken{Offset: tok.Offset + int64(n), RV: listRV.Int64})
	}
	return items[:n], next, listRV.Int64, nil
}

// legacyDashboardList pages the legacy dashboard table through 12.4's
// legacy backend: newest id first, continue token "org:<org>/start:<last
// id>/folder:" (registry/apis/dashboard/legacy/token.go, storage.go
// ListIterator @ v12.4.0: list RV = latest `updated` in microseconds).
func (s *Server) legacyDashboardList(ctx context.Context, req apisRequest, limit int, cont string) ([]item, string, int64, error) {
	if limit <= 0 {
		limit = defaultAPIsLimit
	}
	var before int64
	if cont != "" {
		parts := strings.Split(cont, "/")
		if len(parts) < 3 || !strings.HasPrefix(parts[0], "org:") || !strings.HasPrefix(parts[1], "start:") || !strings.HasPrefix(parts[2], "folder") {
			return nil, "", 0, errors.New("invalid continue token")
		}
		org, err1 := strconv.ParseInt(strings.TrimPrefix(parts[0], "org:"), 10, 64)
		id, err2 := strconv.ParseInt(strings.TrimPrefix(parts[1], "start:"), 10, 64)
		if err1 != nil || err2 != nil {
			return nil, "", 0, errors.New("invalid continue token")
		}
		if org > 0 && org != req.org {
			return nil, "", 0, errors.New("token and orgID mismatch")
		}
		before = id
	}
	updated, err := s.lastUpdated.get(ctx, s.db)
	if err != nil {
		return nil, "", 0, err
	}
	listRV := parseDBTime(updated).UnixMilli() * 1000
	if listRV < 1 {
		listRV = time.Now().UnixMicro()
	}
	items, err := s.legacyItems(ctx, req, "", before, limit+1, 0)
	if err != nil {
		return nil, "", 0, err
	}
	sizes := make([]int, len(items))
	for i, it := range items {
		sizes[i] = len(it.o.Spec) + 512
	}
	n := s.pageCut(sizes, limit)
	var next string
	if n < len(items) {
		next = fmt.Sprintf("org:%d/start:%d/folder:", req.org, items[n-1].id)
	}
	return items[:n], next, listRV, nil
}

// lastUpdatedCache holds MAX(dashboard.updated), the legacy list's
// resourceVersion. Computing it scans the whole table, whose rows carry the
// dashboards' JSON, for every page of a list. The cached value is checked
// with PRAGMA data_version on a connection of its own: SQLite changes it
// whenever another connection (the stand-in's writers, another process)
// commits, so the answer is what the query would give.
type lastUpdatedCache struct {
	mu      sync.Mutex
	conn    *sql.Conn
	version int64
	value   string
	valid   bool
}

func (c *lastUpdatedCache) get(ctx context.Context, db *sql.DB) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		conn, err := db.Conn(ctx)
		if err != nil {
			return "", err
		}
		c.conn = conn
	}
	var version int64
	if err := c.conn.QueryRowContext(ctx, `PRAGMA data_version`).Scan(&version); err != nil {
		return "", err
	}
	if c.valid && version == c.version {
		return c.value, nil
	}
	var updated sql.NullString
	if err := c.conn.QueryRowContext(ctx, `SELECT MAX(updated) FROM dashboard`).Scan(&updated); err != nil {
		return "", err
	}
	c.version, c.value, c.valid = version, updated.String, true
	return c.value, nil
}

func (c *lastUpdatedCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

// legacyFolderList pages folders through 12.4's legacy folder storage:
// limit default 100, token base64("<limit>|<page>"), a limit that differs
// from the token's is refused, and a continue token is handed out whenever
// a page is full, so a last page of exactly `limit` items is followed by an
// empty one (registry/apis/folders/continue.go, legacy_storage.go List
// @ v12.4.0). Not subject to the resource server's byte budget.
func (s *Server) legacyFolderList(ctx context.Context, req apisRequest, limit int, cont string) ([]item, string, int64, error) {
	lim, page := int64(defaultLegacyFolderLimit), int64(1)
	if cont == "" {
		if limit > 0 {
			lim = int64(limit)
		}
	} else {
		raw, err := base64.StdEncoding.DecodeString(cont)
		if err != nil {
			return nil, "", 0, errors.New("error decoding continue token")
		}
		parts := strings.Split(string(raw), "|")
		if len(parts) != 2 {
			return nil, "", 0, errors.New("error decoding continue token (expected two parts)")
		}
		var err1, err2 error
		page, err1 = strconv.ParseInt(parts[1], 10, 64)
		lim, err2 = strconv.ParseInt(parts[0], 10, 64)
		if err1 != nil || err2 != nil {
			return nil, "", 0, errors.New("error decoding continue token")
		}
		if limit > 0 && int64(limit) != lim {
			return nil, "", 0, errors.New("limit does not match continue token")
		}
	}
	items, err := s.legacyItems(ctx, req, "", 0, int(lim), int((page-1)*lim))
	if err != nil {
		return nil, "", 0, err
	}
	var listRV int64
	for _, it := range items {
		listRV = max(listRV, it.rv)
	}
	var next string
	if int64(len(items)) >= lim {
		next = base64.StdEncoding.EncodeToString([]byte(fmt.Sprintf("%d|%d", lim, page+1)))
	}
	return items, next, listRV, nil
}
