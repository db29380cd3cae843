package grafanastandin

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

const (
	standinCommit = "rebind-standin"
	defaultLimit  = 1000
	maxLimit      = 5000
	// generalFolderUID names the root in folderUIDs (conformance §2 "folderUIDs param").
	generalFolderUID = "general"
)

type ctxKey struct{}

type reqInfo struct {
	p     principal
	orgID int64  // -1 when the user is not a member of the requested org
	role  string // org role in orgID; "" when none
}

func info(r *http.Request) reqInfo { return r.Context().Value(ctxKey{}).(reqInfo) }

// folderJoinSQL finds a row's parent folder the way the version does:
// 9.5 joins folder.id = dashboard.folder_id, 10.2.3+ joins on
// dashboard.folder_uid (conformance §2 "Dashboard hit folderUid").
func (s *Server) folderJoinSQL() string {
	if s.f.folderUIDColumn {
		return ` LEFT JOIN dashboard f ON f.org_id = d.org_id AND f.uid = d.folder_uid AND f.is_folder = 1`
	}
	return ` LEFT JOIN dashboard f ON f.id = d.folder_id AND d.folder_id > 0 AND f.org_id = d.org_id AND f.is_folder = 1`
}

// folderRefSQL is the parent reference of d as the version stores it; a
// reference whose row is missing makes GET /api/dashboards/uid answer
// "Folder not found" (conformance §4 "Not found").
func (s *Server) folderRefSQL() string {
	if s.f.folderUIDColumn {
		return `COALESCE(d.folder_uid, '')`
	}
	return `CASE WHEN d.folder_id > 0 THEN CAST(d.folder_id AS TEXT) ELSE '' END`
}

const folderCols = `COALESCE(f.id, 0), COALESCE(f.uid, ''), COALESCE(f.title, ''), COALESCE(f.slug, '')`

// liveSQL excludes soft-deleted rows where the version has them (conformance §7 "dashboard.deleted").
func (s *Server) liveSQL(alias string) string {
	if s.f.deletedColumn {
		return ` AND ` + alias + `.deleted IS NULL`
	}
	return ``
}

// prepare compiles the per-request statements once; preparing them on every
// request was the stand-in's largest cost.
func (s *Server) prepare() error {
	isFolder := ` AND d.is_folder = 0`
	if s.f.dashboardUIDServesFolders {
		isFolder = ``
	}
	apiVersion := `''`
	if s.unified {
		apiVersion = `COALESCE(d.api_version, '')` // see projectRecord
	}
	var err error
	s.stmtDashboard, err = s.q.Prepare(`SELECT d.id, d.uid, d.title, d.slug, d.version, d.data, d.created, d.updated,
		COALESCE((SELECT login FROM user WHERE id = d.created_by), ''), COALESCE((SELECT login FROM user WHERE id = d.updated_by), ''),
		d.is_folder, d.has_acl, ` + s.folderRefSQL() + `, ` + folderCols + `, ` + apiVersion + `
		FROM dashboard d` + s.folderJoinSQL() + `
		WHERE d.org_id = ? AND d.uid = ?` + isFolder + s.liveSQL("d"))
	if err != nil {
		return err
	}
	s.stmtRole, err = s.db.Prepare(`SELECT role FROM org_user WHERE org_id = ? AND user_id = ?`)
	if err != nil {
		s.stmtDashboard.Close()
	}
	return err
}

func (s *Server) routes() {
	m := http.NewServeMux()
	m.HandleFunc("GET /api/health", s.health) // GET patterns match HEAD too
	m.HandleFunc("POST /login", s.login)
	m.Handle("GET /api/search", s.auth(s.search))
	m.Handle("GET /api/dashboards/uid/{uid}", s.auth(s.getDashboard))
	m.Handle("POST /api/dashboards/db", s.auth(s.saveDashboard))
	m.Handle("GET /api/folders", s.auth(s.listFolders))
	m.Handle("GET /api/folders/{uid}", s.auth(s.getFolder))
	m.Handle("POST /api/folders", s.auth(s.createFolder))
	m.Handle("GET /api/user/orgs", s.auth(s.userOrgs))
	m.Handle("GET /api/orgs", s.auth(s.allOrgs))
	m.Handle("GET /api/org", s.auth(s.currentOrg))
	m.Handle("GET /api/v1/provisioning/alert-rules", s.auth(s.alertRules))
	m.Handle("GET /api/library-elements", s.auth(s.listLibraryElements))
	m.Handle("GET /api/library-elements/{uid}", s.auth(s.getLibraryElement))
	m.Handle("GET /api/datasources", s.auth(s.dataSources))
	// conformance §8: the Kubernetes-style APIs, same credentials as /api.
	m.Handle("/apis", s.auth(s.apis))
	m.Handle("/apis/", s.auth(s.apis))
	m.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		msg(w, http.StatusNotFound, "Not found")
	})
	s.mux = m
	s.handler = s.faults.Wrap(m)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeRaw(w, status, b)
}

func writeRaw(w http.ResponseWriter, status int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func msg(w http.ResponseWriter, status int, m string) {
	writeJSON(w, status, map[string]string{"message": m})
}

// legacyErr is the 9.5/10.0 JsonApiErr body: {"message"}, plus "traceID"
// when the handler passed an error (conformance §1 "Bad password", 9.5.2).
func legacyErr(w http.ResponseWriter, status int, m string, withErr bool) {
	body := map[string]any{"message": m}
	if withErr {
		body["traceID"] = ""
	}
	writeJSON(w, status, body)
}

// errutilErr is the ≥10.1 errutil body (conformance §1 "401, no credentials", ≥10.1).
func errutilErr(w http.ResponseWriter, status int, messageID, m string) {
	writeJSON(w, status, map[string]any{"extra": nil, "message": m, "messageId": messageID, "statusCode": status, "traceID": ""})
}

// rbacDenied is the RBAC middleware's 403 (conformance §1 "403, RBAC denial").
func rbacDenied(w http.ResponseWriter, action string) {
	id := make([]byte, 10)
	for i := range id {
		id[i] = byte('0' + rand.IntN(10))
	}
	writeJSON(w, http.StatusForbidden, map[string]string{
		"title":         "Access denied",
		"message":       "You'll need additional permissions to perform this action. Permissions needed: " + action,
		"accessErrorId": "ACE" + string(id),
	})
}

func (s *Server) internal(w http.ResponseWriter, err error) {
	if s.closed.Load() {
		msg(w, http.StatusServiceUnavailable, "database is closed")
		return
	}
	msg(w, http.StatusInternalServerError, "Internal server error: "+err.Error())
}

// health answers without auth, pretty-printed, 503 with "failing" when the
// database is unusable (conformance §5). 9.5 builds the body from a map
// (keys sorted), 12.4 from a struct.
func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	db := "ok"
	status := http.StatusOK
	if s.closed.Load() || s.dbCheck(r.Context()) != nil {
		db, status = "failing", http.StatusServiceUnavailable
	}
	var body any = struct {
		Database string `json:"database"`
		Version  string `json:"version,omitempty"`
		Commit   string `json:"commit,omitempty"`
	}{db, s.build, standinCommit}
	if s.f.sortedHealthKeys {
		body = map[string]string{"database": db, "version": s.build, "commit": standinCommit}
	}
	b, _ := json.MarshalIndent(body, "", "  ")
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func (s *Server) dbCheck(ctx context.Context) error {
	var one int
	err := s.db.QueryRowContext(ctx, `SELECT 1 FROM dashboard LIMIT 1`).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	return err
}

// unauthorized: no usable credentials (conformance §1 "401, no credentials").
func (s *Server) unauthorized(w http.ResponseWriter) {
	if s.f.legacyAuth {
		legacyErr(w, http.StatusUnauthorized, "Unauthorized", false)
		return
	}
	errutilErr(w, http.StatusUnauthorized, "auth.unauthorized", "Unauthorized")
}

// badPassword: conformance §1 "Bad password". The 10.1-era 400 is not
// modelled: 10.4+ answer 401 password-auth.failed as 12.4.0 does.
func (s *Server) badPassword(w http.ResponseWriter) {
	if s.f.legacyAuth {
		legacyErr(w, http.StatusUnauthorized, "invalid username or password", true)
		return
	}
	errutilErr(w, http.StatusUnauthorized, "password-auth.failed", "Invalid username or password")
}

// badToken: conformance §1 "Bad / expired / revoked token".
func (s *Server) badToken(w http.ResponseWriter) {
	if s.f.legacyAuth {
		legacyErr(w, http.StatusUnauthorized, "invalid API key", true)
		return
	}
	errutilErr(w, http.StatusUnauthorized, "api-key.invalid", "Invalid API key")
}

// requestedOrg reads the org a request asks for: X-Grafana-Org-Id, overridden
// by ?targetOrgId=; a value that is not an integer is ignored (conformance §1
// "Header parsing"; contexthandler.go @ v9.5.2 reads both the same way).
func requestedOrg(r *http.Request) int64 {
	var org int64
	if v := r.Header.Get("X-Grafana-Org-Id"); v != "" {
		if id, err := strconv.ParseInt(v, 10, 64); err == nil {
			org = id
		}
	}
	if q := r.URL.Query(); q.Has("targetOrgId") {
		if id, err := strconv.ParseInt(q.Get("targetOrgId"), 10, 64); err == nil {
			org = id
		}
	}
	return org
}

// auth resolves the caller and the org the request acts in.
func (s *Server) auth(next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.closed.Load() {
			msg(w, http.StatusServiceUnavailable, "database is closed")
			return
		}
		var p principal
		h := r.Header.Get("Authorization")
		switch {
		case strings.HasPrefix(h, "Bearer "):
			t, ok := s.tokens[tokenHash(strings.TrimPrefix(h, "Bearer "))]
			if !ok {
				s.badToken(w)
				return
			}
			p = principal{userID: t.userID, login: t.login, token: true, defaultOrg: t.orgID}
		case h != "":
			user, pw, ok := r.BasicAuth()
			if !ok {
				if s.f.legacyAuth {
					// contexthandler.go initContextWithBasicAuth @ v9.5.2.
					legacyErr(w, http.StatusUnauthorized, "Invalid Basic Auth Header", true)
				} else {
					// authn: no client recognises the header (clients/basic.go @ v12.4.0).
					s.unauthorized(w)
				}
				return
			}
			var err error
			p, err = s.checkBasic(r.Context(), user, pw)
			if errors.Is(err, errBadPassword) {
				s.badPassword(w)
				return
			}
			if err != nil {
				s.internal(w, err)
				return
			}
		default:
			// Without an Authorization header Grafana falls back to the
			// login session cookie; an unknown or expired one is a 401.
			sp, has, ok := s.session(r)
			if !has || !ok {
				s.unauthorized(w)
				return
			}
			p = sp
		}

		want := requestedOrg(r)
		if s.f.apis && isAPIsPath(r.URL.Path) {
			// conformance §1 "Header parsing", §8 "Path, namespaces": on
			// /apis the namespace sets the org (orgIDFromNamespace @
			// v12.4.0); a Cloud "stacks-<id>" namespace is refused, one that
			// does not parse leaves the header in force.
			if ns := namespaceInPath(r.URL.Path); ns != "" {
				org, stack, ok := parseNamespace(ns)
				if stack {
					errutilErr(w, http.StatusForbidden, "authn.invalid-namespace", "invalid namespace")
					return
				}
				if ok {
					want = org
				}
			}
		}
		ri := reqInfo{p: p}
		if p.token {
			// A service account lives in one org.
			ri.orgID, ri.role = p.defaultOrg, roleAdmin
			if want != 0 && want != p.defaultOrg && !s.f.legacyAuth {
				// conformance §1 "SA token + X-Grafana-Org-Id for another org", ≥10.3: 401.
				errutilErr(w, http.StatusUnauthorized, "api-key.organization-mismatch", "API key does not belong to the requested organization")
				return
			}
			// ≤10.2: the header is silently ignored, the token's org is served.
		} else {
			ri.orgID = want
			if ri.orgID == 0 {
				ri.orgID = p.defaultOrg
			}
			// conformance §1 "X-Grafana-Org-Id: N, basic-auth user not a
			// member of N": no error, the request runs in org -1.
			role, member, err := s.orgRole(r.Context(), ri.orgID, p.userID)
			switch {
			case err != nil:
				s.internal(w, err)
				return
			case !member:
				ri.orgID, ri.role = -1, roleNone
			default:
				ri.role = role
			}
		}
		next(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, ri)))
	})
}

// signedInUserTTL: conformance §1 "Signed-in user cache": Grafana keeps a
// user's org membership and role for 5 s after reading them, and nothing
// clears the entry sooner.
const signedInUserTTL = 5 * time.Second

type roleKey struct{ orgID, userID int64 }

type cachedRole struct {
	role    string
	expires time.Time
}

// orgRole is the user's role in the org, as the request's signed-in user
// carries it. Only a membership found is kept: Grafana files its entry
// under the org it resolved, which for a non-member (org -1) is never the
// one asked for again.
func (s *Server) orgRole(ctx context.Context, orgID, userID int64) (role string, member bool, err error) {
	k := roleKey{orgID, userID}
	if v, ok := s.roles.Load(k); ok {
		if c := v.(cachedRole); time.Now().Before(c.expires) {
			return c.role, true, nil
		}
	}
	err = s.stmtRole.QueryRowContext(ctx, orgID, userID).Scan(&role)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	s.roles.Store(k, cachedRole{role: role, expires: time.Now().Add(s.roleTTL)})
	return role, true, nil
}

func queryInt(r *http.Request, name string) int {
	n, _ := strconv.Atoi(r.URL.Query().Get(name))
	return n
}

type searchHit struct {
	ID          int64    `json:"id"`
	UID         string   `json:"uid"`
	OrgID       *int64   `json:"orgId,omitempty"`
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
	SortMeta    int      `json:"sortMeta"`
	IsDeleted   *bool    `json:"isDeleted,omitempty"`
}

// search implements GET /api/search (conformance §2).
func (s *Server) search(w http.ResponseWriter, r *http.Request) {
	ri := info(r)
	q := r.URL.Query()
	deleted := s.f.v12Hits && q.Get("deleted") == "true"
	// conformance §2 "deleted=true", 12.4.0: non-Admin → 401 {"message":"Unauthorized"}.
	if deleted && ri.role != roleAdmin {
		msg(w, http.StatusUnauthorized, "Unauthorized")
		return
	}
	// conformance §2 "Params": limit default 1000, max 5000 (422), page 1-based.
	limit, page := queryInt(r, "limit"), queryInt(r, "page")
	if limit > maxLimit {
		msg(w, http.StatusUnprocessableEntity, fmt.Sprintf("Limit is above maximum allowed (%d), use page parameter to access hits beyond limit", maxLimit))
		return
	}
	if limit <= 0 {
		limit = defaultLimit
	}
	if page <= 0 {
		page = 1
	}
	hits, err := s.searchHits(r.Context(), ri.orgID, searchFilter{
		typ:        q.Get("type"),
		query:      q.Get("query"),
		tags:       q["tag"],
		uids:       q["dashboardUIDs"],
		folderUIDs: q["folderUIDs"],
		starred:    q.Get("starred") == "true",
		deleted:    deleted,
	}, limit, page)
	if err != nil {
		s.internal(w, err)
		return
	}
	writeJSON(w, http.StatusOK, hits)
}

type searchFilter struct {
	typ, query       string
	tags, uids       []string
	folderUIDs       []string
	starred, deleted bool
}

func (s *Server) searchHits(ctx context.Context, org int64, sf searchFilter, limit, page int) ([]searchHit, error) {
	hits := make([]searchHit, 0, 64)
	if sf.starred {
		return hits, nil // the stand-in has no stars
	}
	q := `SELECT d.id, d.uid, d.title, d.slug, d.is_folder, ` + folderCols + `,
		(SELECT group_concat(t.term, char(31)) FROM dashboard_tag t WHERE t.dashboard_id = d.id)
		FROM dashboard d` + s.folderJoinSQL() + `
		WHERE d.org_id = ?`
	args := []any{org}
	switch {
	case sf.deleted:
		q += ` AND d.deleted IS NOT NULL`
	default:
		q += s.liveSQL("d")
	}
	switch sf.typ {
	case "dash-db":
		q += ` AND d.is_folder = 0`
	case "dash-folder":
		q += ` AND d.is_folder = 1`
	}
	if sf.query != "" {
		q += ` AND d.title LIKE ? ESCAPE '\'`
		esc := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(sf.query)
		args = append(args, "%"+esc+"%")
	}
	for _, t := range sf.tags {
		q += ` AND EXISTS (SELECT 1 FROM dashboard_tag t WHERE t.dashboard_id = d.id AND t.term = ?)`
		args = append(args, t)
	}
	if len(sf.uids) > 0 {
		q += ` AND d.uid IN (` + placeholders(len(sf.uids)) + `)`
		for _, u := range sf.uids {
			args = append(args, u)
		}
	}
	// conformance §2 "folderUIDs param": ignored (no filter) where absent;
	// direct children only, "general" meaning the root.
	if s.f.searchFolderUIDs && len(sf.folderUIDs) > 0 {
		var conds []string
		var uids []any
		for _, u := range sf.folderUIDs {
			if u == generalFolderUID {
				conds = append(conds, `COALESCE(d.folder_uid, '') = ''`)
			} else {
				uids = append(uids, u)
			}
		}
		if len(uids) > 0 {
			conds = append(conds, `d.folder_uid IN (`+placeholders(len(uids))+`)`)
			args = append(args, uids...)
		}
		q += ` AND (` + strings.Join(conds, ` OR `) + `)`
	}
	// conformance §2 "Order / paging determinism": ORDER BY title with no
	// tie-breaker in Grafana; the uid tie-break is the stand-in's, so that
	// pages never overlap in tests.
	q += ` ORDER BY d.title, d.uid LIMIT ? OFFSET ?`
	args = append(args, limit, (page-1)*limit)
	rows, err := s.q.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			h                   searchHit
			isFolder            int
			fID                 int64
			fUID, fTitle, fSlug string
			tags                sql.NullString
		)
		if err := rows.Scan(&h.ID, &h.UID, &h.Title, &h.Slug, &isFolder, &fID, &fUID, &fTitle, &fSlug, &tags); err != nil {
			return nil, err
		}
		h.URI = "db/" + h.Slug
		h.Tags = []string{}
		if tags.Valid && tags.String != "" {
			h.Tags = strings.Split(tags.String, "\x1f")
			slices.Sort(h.Tags)
		}
		if isFolder == 1 {
			h.Type = "dash-folder"
			h.URL = "/dashboards/f/" + h.UID + "/" + h.Slug
		} else {
			h.Type = "dash-db"
			h.URL = "/d/" + h.UID + "/" + h.Slug
		}
		// conformance §2: folder fields are omitted at the root; a folder
		// hit's own parent is known only from 10.2.3 (folder_uid), which
		// folderJoinSQL already encodes.
		if fUID != "" {
			h.FolderID, h.FolderUID, h.FolderTitle = fID, fUID, fTitle
			h.FolderURL = "/dashboards/f/" + fUID + "/" + fSlug
		}
		if s.f.v12Hits {
			// conformance §2 "Hit fields": 12.4.0 adds orgId and isDeleted.
			o, del := org, sf.deleted
			h.OrgID, h.IsDeleted = &o, &del
		}
		hits = append(hits, h)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	// conformance §2: each page is re-sorted, folders first, then by
	// lower-case title (HitList.Less @ v12.4.0).
	slices.SortStableFunc(hits, func(a, b searchHit) int {
		if (a.Type == "dash-folder") != (b.Type == "dash-folder") {
			if a.Type == "dash-folder" {
				return -1
			}
			return 1
		}
		return strings.Compare(strings.ToLower(a.Title), strings.ToLower(b.Title))
	})
	return hits, nil
}

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?,", n), ",")
}

func isoTime(v sql.NullString) string {
	if !v.Valid {
		return "0001-01-01T00:00:00Z"
	}
	for _, l := range []string{timeLayout, time.RFC3339Nano, "2006-01-02 15:04:05.999999999-07:00", "2006-01-02 15:04:05.999999999 -0700 MST"} {
		if t, err := time.Parse(l, v.String); err == nil {
			return t.UTC().Format(time.RFC3339)
		}
	}
	return "0001-01-01T00:00:00Z"
}

// dashboardModel returns the stored JSON with id, uid and version
// overwritten from the row, as Grafana does when it serves a dashboard
// (conformance §4 "JSON rewriting": version forced to the DB version; the
// store sets id and uid, database.go GetDashboard @ v9.5.2, and 12.4 sets
// uid and id too). The title is served as stored.
func dashboardModel(data []byte, id int64, uid string, version int64) ([]byte, error) {
	return rewriteModel(data, map[string]any{"id": id, "uid": uid, "version": version})
}

func rewriteModel(data []byte, set map[string]any) ([]byte, error) {
	if members, ok := compactTopMembers(data); ok {
		// One scan instead of a decode: serving a dashboard was
		// dominated by decoding it.
		members = slices.DeleteFunc(members, func(m topMember) bool { _, ok := set[m.key]; return ok })
		for k, v := range set {
			b, err := json.Marshal(v)
			if err != nil {
				return nil, err
			}
			members = append(members, topMember{key: k, value: b})
		}
		return writeTopMembers(members), nil
	}
	return rewriteModelSlow(data, set)
}

// rewriteModelSlow decodes the top level, sets, and re-encodes: for
// models compactTopMembers leaves aside, and the reference in tests.
func rewriteModelSlow(data []byte, set map[string]any) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	if m == nil {
		m = map[string]json.RawMessage{}
	}
	for k, v := range set {
		b, _ := json.Marshal(v)
		m[k] = b
	}
	return encodeRaw(m), nil
}

// encodeRaw writes m as a JSON object with sorted keys.
func encodeRaw(m map[string]json.RawMessage) []byte {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	// Written by hand: json.Marshal would re-validate and compact every
	// value, which Unmarshal above has already checked.
	n := 2
	for k, v := range m {
		n += len(k) + len(v) + 4
	}
	out := make([]byte, 0, n)
	out = append(out, '{')
	for i, k := range keys {
		if i > 0 {
			out = append(out, ',')
		}
		kb, _ := json.Marshal(k)
		out = append(out, kb...)
		out = append(out, ':')
		out = append(out, m[k]...)
	}
	return append(out, '}')
}

func loginOr(login string) string {
	if login == "" {
		return "Anonymous"
	}
	return login
}

// dashboardMeta is the "meta" of GET /api/dashboards/uid/:uid: the fields
// the stand-in serves, in the order and with the omitempty of Grafana's
// DashboardMeta (conformance §4 "Success": pkg/api/dtos/dashboard.go
// @ v12.4.0; isStarred, isSnapshot and apiVersion are left out when
// empty, so a dashboard nobody starred has no isStarred).
type dashboardMeta struct {
	IsStarred              bool                 `json:"isStarred,omitempty"`
	Type                   string               `json:"type,omitempty"`
	CanSave                bool                 `json:"canSave"`
	CanEdit                bool                 `json:"canEdit"`
	CanAdmin               bool                 `json:"canAdmin"`
	CanStar                bool                 `json:"canStar"`
	CanDelete              bool                 `json:"canDelete"`
	Slug                   string               `json:"slug"`
	URL                    string               `json:"url"`
	Expires                string               `json:"expires"`
	Created                string               `json:"created"`
	Updated                string               `json:"updated"`
	UpdatedBy              string               `json:"updatedBy"`
	CreatedBy              string               `json:"createdBy"`
	Version                int64                `json:"version"`
	HasACL                 bool                 `json:"hasAcl"`
	IsFolder               bool                 `json:"isFolder"`
	APIVersion             string               `json:"apiVersion,omitempty"`
	FolderID               int64                `json:"folderId"`
	FolderUID              string               `json:"folderUid"`
	FolderTitle            string               `json:"folderTitle"`
	FolderURL              string               `json:"folderUrl"`
	Provisioned            bool                 `json:"provisioned"`
	ProvisionedExternalID  string               `json:"provisionedExternalId"`
	AnnotationsPermissions annotationPermission `json:"annotationsPermissions"`
}

type annotationPermission struct {
	Dashboard    annotationActions `json:"dashboard"`
	Organization annotationActions `json:"organization"`
}

type annotationActions struct {
	CanAdd    bool `json:"canAdd"`
	CanEdit   bool `json:"canEdit"`
	CanDelete bool `json:"canDelete"`
}

// getDashboard implements GET /api/dashboards/uid/:uid (conformance §4).
// In org -1 nothing matches, so a non-member gets the plain 404
// (conformance §1; 403 vs 404 there is unconfirmed).
func (s *Server) getDashboard(w http.ResponseWriter, r *http.Request) {
	ri := info(r)
	var (
		id, version, fID     int64
		uid, title, slug     string
		ref                  string
		fUID, fTitle, fSlug  string
		data                 []byte
		created, updated     sql.NullString
		createdBy, updatedBy string
		isFolder, hasACL     bool
		apiVersion           string
	)
	err := s.stmtDashboard.QueryRowContext(r.Context(), ri.orgID, r.PathValue("uid")).
		Scan(&id, &uid, &title, &slug, &version, &data, &created, &updated, &createdBy, &updatedBy, &isFolder, &hasACL, &ref, &fID, &fUID, &fTitle, &fSlug, &apiVersion)
	if errors.Is(err, sql.ErrNoRows) {
		msg(w, http.StatusNotFound, "Dashboard not found")
		return
	}
	if err != nil {
		s.internal(w, err)
		return
	}
	if ref != "" && fUID == "" {
		// The parent folder row is gone (conformance §4 "Not found").
		msg(w, http.StatusNotFound, "Folder not found")
		return
	}
	model, err := dashboardModel(data, id, uid, version)
	if err != nil {
		s.internal(w, fmt.Errorf("dashboard %s holds invalid JSON: %w", uid, err))
		return
	}
	url := "/d/" + uid + "/" + slug
	if isFolder {
		url = "/dashboards/f/" + uid + "/" + slug
	}
	perms := annotationActions{CanAdd: true, CanEdit: true, CanDelete: true}
	meta := dashboardMeta{
		Type: "db", CanSave: true, CanEdit: true, CanAdmin: true, CanStar: true, CanDelete: true,
		Slug: slug, URL: url, Expires: "0001-01-01T00:00:00Z",
		Created: isoTime(created), Updated: isoTime(updated), UpdatedBy: loginOr(updatedBy), CreatedBy: loginOr(createdBy),
		Version: version, HasACL: hasACL, IsFolder: isFolder, FolderID: fID, FolderUID: fUID,
		FolderTitle:            "General",
		AnnotationsPermissions: annotationPermission{Dashboard: perms, Organization: perms},
	}
	if fUID != "" {
		meta.FolderTitle = fTitle
		meta.FolderURL = "/dashboards/f/" + fUID + "/" + fSlug
	}
	if s.f.metaAPIVersion {
		// conformance §4 "Success": 12.x meta.apiVersion; 12.4.0 reads
		// dashboards through v0alpha1 (client.go K8sClientWithFallback.Get)
		// and reports the version of the object it got back
		// (dashboard_service.go unstructuredToLegacyDashboardWithUsers):
		// v0alpha1 also for a v2 dashboard, which arrives converted
		// ("Schema v2 dashboards on the legacy endpoint"). When that
		// conversion fails, the stored version is served and reported.
		// 13.0 is modelled like 12.4.
		meta.APIVersion = s.f.classicStoredVersion
		if apiVersion != "" {
			meta.APIVersion = apiVersion
		}
	}
	mb, err := json.Marshal(meta)
	if err != nil {
		s.internal(w, err)
		return
	}
	// Meta first, as Grafana's DashboardFullWithMeta declares it.
	var b bytes.Buffer
	b.Grow(len(model) + len(mb) + 32)
	b.WriteString(`{"meta":`)
	b.Write(mb)
	b.WriteString(`,"dashboard":`)
	b.Write(model)
	b.WriteString("}")
	writeRaw(w, http.StatusOK, b.Bytes())
}

type saveBody struct {
	Dashboard map[string]json.RawMessage `json:"dashboard"`
	FolderUID string                     `json:"folderUid"`
	FolderID  int64                      `json:"folderId"`
	Overwrite bool                       `json:"overwrite"`
	Message   string                     `json:"message"`
}

func rawString(m map[string]json.RawMessage, k string) string {
	var s string
	_ = json.Unmarshal(m[k], &s)
	return s
}

func rawInt(m map[string]json.RawMessage, k string) int64 {
	var f float64
	_ = json.Unmarshal(m[k], &f)
	return int64(f)
}

func (s *Server) folderByUID(ctx context.Context, q execer, org int64, uid string) (id int64, err error) {
	err = q.QueryRowContext(ctx, `SELECT id FROM dashboard d WHERE d.org_id = ? AND d.uid = ? AND d.is_folder = 1`+s.liveSQL("d"), org, uid).Scan(&id)
	return id, err
}

func folderNotFound(w http.ResponseWriter, status int) {
	// apierrors/folder.go ToFolderErrorResponse @ v12.4.0 (conformance §3 "GET /api/folders/:uid").
	writeJSON(w, status, map[string]string{"message": "folder not found", "status": "not-found"})
}

// saveDashboard implements POST /api/dashboards/db.
func (s *Server) saveDashboard(w http.ResponseWriter, r *http.Request) {
	ri := info(r)
	if ri.role == roleNone {
		// Route guarded by RBAC any(dashboards:create, dashboards:write)
		// (pkg/api/api.go @ v12.4.0); a non-member has neither in org -1.
		rbacDenied(w, "any of dashboards:create, dashboards:write")
		return
	}
	var body saveBody
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Dashboard == nil {
		msg(w, http.StatusBadRequest, "bad request data")
		return
	}
	title := strings.TrimSpace(rawString(body.Dashboard, "title"))
	if title == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"message": "Dashboard title cannot be empty", "status": "empty-name"})
		return
	}
	uid := rawString(body.Dashboard, "uid")
	version := rawInt(body.Dashboard, "version")
	ctx := r.Context()
	tx, err := s.q.BeginTx(ctx, nil)
	if err != nil {
		s.internal(w, err)
		return
	}
	defer tx.Rollback()

	var folderID int64
	folderUID := body.FolderUID
	switch {
	case folderUID != "":
		folderID, err = s.folderByUID(ctx, tx, ri.orgID, folderUID)
		if errors.Is(err, sql.ErrNoRows) {
			folderNotFound(w, http.StatusBadRequest)
			return
		}
	case body.FolderID > 0:
		folderID = body.FolderID
		err = tx.QueryRowContext(ctx, `SELECT uid FROM dashboard WHERE org_id = ? AND id = ? AND is_folder = 1`, ri.orgID, folderID).Scan(&folderUID)
		if errors.Is(err, sql.ErrNoRows) {
			folderNotFound(w, http.StatusBadRequest)
			return
		}
	}
	if err != nil {
		s.internal(w, err)
		return
	}

	var (
		existingID      int64
		existingVersion int64
		found           bool
	)
	live := s.liveSQL("dashboard")
	if uid != "" {
		err = tx.QueryRowContext(ctx, `SELECT id, version FROM dashboard WHERE org_id = ? AND uid = ? AND is_folder = 0`+live, ri.orgID, uid).
			Scan(&existingID, &existingVersion)
		switch {
		case err == nil:
			found = true
		case !errors.Is(err, sql.ErrNoRows):
			s.internal(w, err)
			return
		}
	}
	if found && !body.Overwrite && version != existingVersion {
		writeJSON(w, http.StatusPreconditionFailed, map[string]string{"status": "version-mismatch", "message": "The dashboard has been changed by someone else"})
		return
	}
	// A title is unique per folder.
	var clashID int64
	var clashUID string
	err = tx.QueryRowContext(ctx, `SELECT id, uid FROM dashboard WHERE org_id = ? AND is_folder = 0`+live+` AND folder_id = ? AND lower(title) = lower(?) AND id != ?`,
		ri.orgID, folderID, title, existingID).Scan(&clashID, &clashUID)
	switch {
	case err == nil:
		if !body.Overwrite {
			writeJSON(w, http.StatusPreconditionFailed, map[string]string{"status": "name-exists", "message": "A dashboard with the same name in the folder already exists"})
			return
		}
		if !found {
			// Overwriting by title takes over the other dashboard's row.
			found, existingID = true, clashID
			_ = tx.QueryRowContext(ctx, `SELECT version FROM dashboard WHERE id = ?`, clashID).Scan(&existingVersion)
			if uid == "" {
				uid = clashUID
			}
		}
	case !errors.Is(err, sql.ErrNoRows):
		s.internal(w, err)
		return
	}
	if uid == "" {
		uid = randString(14)
	}
	slug := slugify(title)
	now := time.Now().UTC().Format(timeLayout)
	newVersion := int64(1)
	id := existingID
	if found {
		newVersion = existingVersion + 1
	} else {
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(id),0)+1 FROM dashboard`).Scan(&id); err != nil {
			s.internal(w, err)
			return
		}
	}
	delete(body.Dashboard, "id")
	data, err := rewriteModel(mustJSON(body.Dashboard), map[string]any{"id": id, "uid": uid, "title": title, "version": newVersion})
	if err != nil {
		s.internal(w, err)
		return
	}
	if found {
		set := `version = ?, slug = ?, title = ?, data = ?, updated = ?, updated_by = ?, folder_id = ?, uid = ?`
		args := []any{newVersion, slug, title, string(data), now, ri.p.userID, folderID, uid}
		if s.f.folderUIDColumn {
			set += `, folder_uid = ?`
			args = append(args, nullIfEmpty(folderUID))
		}
		_, err = tx.ExecContext(ctx, `UPDATE dashboard SET `+set+` WHERE id = ?`, append(args, id)...)
	} else {
		err = s.insertDashboardRow(ctx, tx, dashRow{id: id, version: newVersion, slug: slug, title: title, data: string(data), org: ri.orgID,
			created: now, by: ri.p.userID, folderID: folderID, folderUID: folderUID, uid: uid})
	}
	if err == nil {
		_, err = tx.ExecContext(ctx, `INSERT INTO dashboard_version (dashboard_id, parent_version, restored_from, version, created, created_by, message, data) VALUES (?, ?, 0, ?, ?, ?, ?, ?)`,
			id, newVersion-1, newVersion, now, ri.p.userID, body.Message, string(data))
	}
	if err == nil {
		err = writeTags(ctx, tx, id, body.Dashboard["tags"])
	}
	if err == nil && s.unified {
		// conformance §7: in unified mode a save writes resource and
		// resource_history; the legacy tables stay as they were.
		err = s.mirror(ctx, tx, id)
	}
	if err == nil {
		err = tx.Commit()
	}
	if err != nil {
		s.internal(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "uid": uid, "url": "/d/" + uid + "/" + slug, "status": "success", "version": newVersion, "slug": slug, "folderUid": folderUID})
}

// dashRow is one row of the dashboard table, written with the columns of
// the version (conformance §7).
type dashRow struct {
	id, version    int64
	slug, title    string
	data           any
	org            int64
	created        string
	by             int64
	folderID       int64
	folderUID, uid string
	isFolder       bool
	deleted        string // "" = live
	onlyIfAbsent   bool
	updated        string // "" = created
	updatedBy      int64  // 0 = by
	apiVersion     string // dashboard.api_version (12.4+), "" = NULL
}

func (s *Server) insertDashboardRow(ctx context.Context, ex execer, d dashRow) error {
	_, err := insertDashboard(ctx, ex, s.f, d)
	return err
}

func insertDashboard(ctx context.Context, ex execer, f features, d dashRow) (sql.Result, error) {
	cols := `id, version, slug, title, data, org_id, created, updated, updated_by, created_by, gnet_id, folder_id, is_folder, has_acl, uid, is_public`
	updated, updatedBy := d.updated, d.updatedBy
	if updated == "" {
		updated = d.created
	}
	if updatedBy == 0 {
		updatedBy = d.by
	}
	args := []any{d.id, d.version, d.slug, d.title, d.data, d.org, d.created, updated, updatedBy, d.by, 0, d.folderID, d.isFolder, false, d.uid, false}
	if f.folderUIDColumn {
		cols += `, folder_uid`
		args = append(args, nullIfEmpty(d.folderUID))
	}
	if f.deletedColumn {
		cols += `, deleted`
		args = append(args, nullIfEmpty(d.deleted))
	}
	if f.v12Columns && d.apiVersion != "" {
		cols += `, api_version`
		args = append(args, d.apiVersion)
	}
	verb := `INSERT`
	if d.onlyIfAbsent {
		verb = `INSERT OR IGNORE`
	}
	q := verb + ` INTO dashboard (` + cols + `) VALUES (` + placeholders(len(args)) + `)`
	if c, ok := ex.(*stmtCache); ok {
		return c.exec(ctx, q, args...)
	}
	return ex.ExecContext(ctx, q, args...)
}

// stmtCache runs statements of one transaction, preparing each text once:
// bulk writers (Seed, the unified projection) would otherwise spend most of
// their time parsing SQL.
type stmtCache struct {
	*sql.Tx
	stmts map[string]*sql.Stmt
}

func newStmtCache(tx *sql.Tx) *stmtCache { return &stmtCache{Tx: tx, stmts: map[string]*sql.Stmt{}} }

func (c *stmtCache) exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	st, ok := c.stmts[q]
	if !ok {
		var err error
		if st, err = c.Tx.PrepareContext(ctx, q); err != nil {
			return nil, err
		}
		c.stmts[q] = st
	}
	return st.ExecContext(ctx, args...)
}

func (c *stmtCache) close() {
	for _, st := range c.stmts {
		st.Close()
	}
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

func writeTags(ctx context.Context, tx *sql.Tx, id int64, raw json.RawMessage) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM dashboard_tag WHERE dashboard_id = ?`, id); err != nil {
		return err
	}
	var tags []string
	_ = json.Unmarshal(raw, &tags)
	for _, t := range tags {
		if _, err := tx.ExecContext(ctx, `INSERT INTO dashboard_tag (dashboard_id, term) VALUES (?, ?)`, id, t); err != nil {
			return err
		}
	}
	return nil
}

type folderOut struct {
	ID        int64  `json:"id"`
	UID       string `json:"uid"`
	Title     string `json:"title"`
	ParentUID string `json:"parentUid,omitempty"`
}

// listFolders implements GET /api/folders (conformance §3).
func (s *Server) listFolders(w http.ResponseWriter, r *http.Request) {
	ri := info(r)
	limit, page := queryInt(r, "limit"), queryInt(r, "page")
	if page <= 0 {
		page = 1
	}
	out := []folderOut{}
	if !s.f.nestedFolders {
		// conformance §3 "GET /api/folders, nestedFolders off": a flat list of
		// all folders via search, [{"id","uid","title"}], limit default 1000,
		// page 1-based; parentUid means nothing.
		if limit <= 0 {
			limit = defaultLimit
		}
		hits, err := s.searchHits(r.Context(), ri.orgID, searchFilter{typ: "dash-folder"}, limit, page)
		if err != nil {
			s.internal(w, err)
			return
		}
		for _, h := range hits {
			out = append(out, folderOut{ID: h.ID, UID: h.UID, Title: h.Title})
		}
		writeJSON(w, http.StatusOK, out)
		return
	}
	// conformance §3 "same, nesting on": only the children of parentUid
	// (default: the root), with parentUid, ordered by title; "12.4
	// specifics": default limit 100000. An unknown parent gives [] (the
	// legacy GetChildren checks access, not existence, folder.go @ v12.4.0).
	if limit <= 0 {
		limit = s.f.foldersDefaultLimit
	}
	parent := r.URL.Query().Get("parentUid")
	rows, err := s.q.QueryContext(r.Context(), `SELECT d.id, fo.uid, fo.title, COALESCE(fo.parent_uid, '')
		FROM folder fo JOIN dashboard d ON d.org_id = fo.org_id AND d.uid = fo.uid AND d.is_folder = 1`+s.liveSQL("d")+`
		WHERE fo.org_id = ? AND COALESCE(fo.parent_uid, '') = ?
		ORDER BY fo.title, fo.uid LIMIT ? OFFSET ?`, ri.orgID, parent, limit, (page-1)*limit)
	if err != nil {
		s.internal(w, err)
		return
	}
	defer rows.Close()
	for rows.Next() {
		var f folderOut
		if err := rows.Scan(&f.ID, &f.UID, &f.Title, &f.ParentUID); err != nil {
			s.internal(w, err)
			return
		}
		out = append(out, f)
	}
	if err := rows.Err(); err != nil {
		s.internal(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// folderDTO is the body of GET /api/folders/:uid (conformance §3; dtos.Folder).
type folderDTO struct {
	ID        int64       `json:"id"`
	UID       string      `json:"uid"`
	OrgID     int64       `json:"orgId"`
	Title     string      `json:"title"`
	URL       string      `json:"url"`
	HasACL    bool        `json:"hasAcl"`
	CanSave   bool        `json:"canSave"`
	CanEdit   bool        `json:"canEdit"`
	CanAdmin  bool        `json:"canAdmin"`
	CanDelete bool        `json:"canDelete"`
	CreatedBy string      `json:"createdBy"`
	Created   string      `json:"created"`
	UpdatedBy string      `json:"updatedBy"`
	Updated   string      `json:"updated"`
	Version   int64       `json:"version,omitempty"`
	ParentUID string      `json:"parentUid,omitempty"`
	Parents   []folderDTO `json:"parents,omitempty"`
}

func (s *Server) loadFolder(ctx context.Context, org int64, uid string) (folderDTO, error) {
	f := folderDTO{OrgID: org, CanSave: true, CanEdit: true, CanAdmin: true, CanDelete: true}
	var (
		slug             string
		created, updated sql.NullString
	)
	err := s.q.QueryRowContext(ctx, `SELECT d.id, d.uid, d.title, d.slug, d.has_acl, d.version, d.created, d.updated,
		COALESCE((SELECT login FROM user WHERE id = d.created_by), ''), COALESCE((SELECT login FROM user WHERE id = d.updated_by), '')
		FROM dashboard d WHERE d.org_id = ? AND d.uid = ? AND d.is_folder = 1`+s.liveSQL("d"), org, uid).
		Scan(&f.ID, &f.UID, &f.Title, &slug, &f.HasACL, &f.Version, &created, &updated, &f.CreatedBy, &f.UpdatedBy)
	if err != nil {
		return f, err
	}
	f.URL = "/dashboards/f/" + f.UID + "/" + slug
	f.Created, f.Updated = isoTime(created), isoTime(updated)
	f.CreatedBy, f.UpdatedBy = loginOr(f.CreatedBy), loginOr(f.UpdatedBy)
	if s.f.nestedFolders {
		err = s.q.QueryRowContext(ctx, `SELECT COALESCE(parent_uid, '') FROM folder WHERE org_id = ? AND uid = ?`, org, uid).Scan(&f.ParentUID)
		if errors.Is(err, sql.ErrNoRows) {
			err = nil
		}
	}
	return f, err
}

// getFolder implements GET /api/folders/:uid: parentUid and parents (root
// first) only with nesting on (conformance §3 "GET /api/folders/:uid").
func (s *Server) getFolder(w http.ResponseWriter, r *http.Request) {
	ri := info(r)
	f, err := s.loadFolder(r.Context(), ri.orgID, r.PathValue("uid"))
	if errors.Is(err, sql.ErrNoRows) {
		folderNotFound(w, http.StatusNotFound)
		return
	}
	if err != nil {
		s.internal(w, err)
		return
	}
	for p, seen := f.ParentUID, map[string]bool{f.UID: true}; p != "" && !seen[p]; {
		seen[p] = true
		pf, err := s.loadFolder(r.Context(), ri.orgID, p)
		if errors.Is(err, sql.ErrNoRows) {
			break // Grafana logs a failed parent lookup and serves what it has
		}
		if err != nil {
			s.internal(w, err)
			return
		}
		f.Parents = append([]folderDTO{pf}, f.Parents...)
		p = pf.ParentUID
	}
	writeJSON(w, http.StatusOK, f)
}

// createFolder implements POST /api/folders. Without nesting the parentUid
// is ignored and the folder is made at the root (folderimpl Create @ v10.0.1
// uses the parent only with nestedFolders on; the conformance doc has no row
// for it).
func (s *Server) createFolder(w http.ResponseWriter, r *http.Request) {
	ri := info(r)
	if ri.role == roleNone {
		rbacDenied(w, "folders:create")
		return
	}
	var body struct {
		UID       string `json:"uid"`
		Title     string `json:"title"`
		ParentUID string `json:"parentUid"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || strings.TrimSpace(body.Title) == "" {
		msg(w, http.StatusBadRequest, "folder title cannot be empty")
		return
	}
	if !s.f.nestedFolders {
		body.ParentUID = ""
	}
	ctx := r.Context()
	tx, err := s.q.BeginTx(ctx, nil)
	if err != nil {
		s.internal(w, err)
		return
	}
	defer tx.Rollback()
	if body.ParentUID != "" {
		_, err = s.folderByUID(ctx, tx, ri.orgID, body.ParentUID)
		if errors.Is(err, sql.ErrNoRows) {
			folderNotFound(w, http.StatusNotFound)
			return
		} else if err != nil {
			s.internal(w, err)
			return
		}
	}
	if body.UID == "" {
		body.UID = randString(14)
	}
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM dashboard WHERE org_id = ? AND uid = ?`, ri.orgID, body.UID).Scan(&n); err != nil {
		s.internal(w, err)
		return
	}
	if n > 0 {
		msg(w, http.StatusConflict, "a folder with the same uid already exists")
		return
	}
	parentCond, parentArgs := ` AND folder_id = 0`, []any{}
	if s.f.folderUIDColumn {
		parentCond, parentArgs = ` AND COALESCE(folder_uid, '') = ?`, []any{body.ParentUID}
	}
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM dashboard WHERE org_id = ? AND is_folder = 1`+s.liveSQL("dashboard")+parentCond+` AND lower(title) = lower(?)`,
		append(append([]any{ri.orgID}, parentArgs...), body.Title)...).Scan(&n); err != nil {
		s.internal(w, err)
		return
	}
	if n > 0 {
		msg(w, http.StatusConflict, "a folder with the same name already exists")
		return
	}
	id, err := s.insertFolder(ctx, tx, ri.orgID, body.UID, body.Title, body.ParentUID, ri.p.userID, time.Now().UTC())
	if err == nil && s.unified {
		err = s.mirror(ctx, tx, id) // conformance §7, as for dashboards
	}
	if err == nil {
		err = tx.Commit()
	}
	if err != nil {
		s.internal(w, err)
		return
	}
	f, err := s.loadFolder(ctx, ri.orgID, body.UID)
	if err != nil {
		s.internal(w, err)
		return
	}
	writeJSON(w, http.StatusOK, f)
}

// insertFolder writes a folder the way the version keeps it: a dashboard row
// with is_folder = 1 and folder_id = 0 (conformance §2 "Folder hit
// folderUid": the legacy row keeps folder_id 0), folder_uid = parent from
// 10.2.3 (§3 "dashboard row with is_folder=1"), and a folder-table row when
// nesting is on (§3 "SQL table folder").
func (s *Server) insertFolder(ctx context.Context, tx *sql.Tx, org int64, uid, title, parentUID string, by int64, now time.Time) (int64, error) {
	return s.insertFolderMinID(ctx, tx, 0, org, uid, title, parentUID, by, now)
}

// insertFolderMinID is insertFolder with an id of at least minID.
func (s *Server) insertFolderMinID(ctx context.Context, tx *sql.Tx, minID, org int64, uid, title, parentUID string, by int64, now time.Time) (int64, error) {
	var id int64
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(id),0)+1 FROM dashboard`).Scan(&id); err != nil {
		return 0, err
	}
	id = max(id, minID)
	ts := now.Format(timeLayout)
	data := mustJSON(map[string]any{"id": id, "uid": uid, "title": title, "version": 1, "schemaVersion": 17})
	err := s.insertDashboardRow(ctx, tx, dashRow{id: id, version: 1, slug: slugify(title), title: title, data: string(data), org: org,
		created: ts, by: by, uid: uid, folderUID: parentUID, isFolder: true})
	if err == nil && s.f.nestedFolders {
		_, err = tx.ExecContext(ctx, `INSERT INTO folder (uid, org_id, title, description, parent_uid, created, updated) VALUES (?, ?, ?, '', ?, ?, ?)`,
			uid, org, title, nullIfEmpty(parentUID), ts, ts)
	}
	return id, err
}

type orgOut struct {
	OrgID int64  `json:"orgId"`
	Name  string `json:"name"`
	Role  string `json:"role"`
}

// userOrgs implements GET /api/user/orgs (conformance §1).
func (s *Server) userOrgs(w http.ResponseWriter, r *http.Request) {
	ri := info(r)
	if ri.p.token {
		switch s.f.userOrgsForToken {
		case http.StatusForbidden:
			// conformance §1 "/api/user/orgs, SA token", ~10.2 – early 11.x.
			msg(w, http.StatusForbidden, "Endpoint only available for users")
			return
		case http.StatusNotModified:
			// conformance §1, 12.4.0: 304; net/http sends no body with it.
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotModified)
			return
		}
		// 9.5: the handler runs the membership query with the service
		// account's user id, which filters service accounts out: 200 [].
	}
	// conformance §1: only orgs with an org_user row, never service
	// accounts, sorted by org name (orgimpl/store.go GetUserOrgList, ByOrgName).
	rows, err := s.db.QueryContext(r.Context(), `SELECT ou.org_id, o.name, ou.role FROM org_user ou
		JOIN org o ON o.id = ou.org_id JOIN user u ON u.id = ou.user_id
		WHERE ou.user_id = ? AND COALESCE(u.is_service_account, 0) = 0 ORDER BY o.name`, ri.p.userID)
	if err != nil {
		s.internal(w, err)
		return
	}
	defer rows.Close()
	out := []orgOut{}
	for rows.Next() {
		var o orgOut
		if err := rows.Scan(&o.OrgID, &o.Name, &o.Role); err != nil {
			s.internal(w, err)
			return
		}
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		s.internal(w, err)
		return
	}
	slices.SortStableFunc(out, func(a, b orgOut) int {
		if c := strings.Compare(strings.ToLower(a.Name), strings.ToLower(b.Name)); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	writeJSON(w, http.StatusOK, out)
}

// allOrgs implements GET /api/orgs: server admins only (RBAC orgs:read in
// the global org; a token never is one), perpage default 1000, page 0-based,
// query = name prefix, name = exact (conformance §1 "GET /api/orgs").
func (s *Server) allOrgs(w http.ResponseWriter, r *http.Request) {
	ri := info(r)
	if ri.p.token || !ri.p.serverAdm {
		rbacDenied(w, "orgs:read")
		return
	}
	perPage, page := queryInt(r, "perpage"), queryInt(r, "page")
	if perPage <= 0 {
		perPage = 1000
	}
	if page < 0 {
		page = 0
	}
	q := `SELECT id, name FROM org WHERE 1 = 1`
	var args []any
	if v := r.URL.Query().Get("query"); v != "" {
		q += ` AND name LIKE ?`
		args = append(args, v+"%")
	}
	if v := r.URL.Query().Get("name"); v != "" {
		q += ` AND name = ?`
		args = append(args, v)
	}
	// Grafana has no ORDER BY here; SQLite hands rows out by id.
	q += ` ORDER BY id LIMIT ? OFFSET ?`
	args = append(args, perPage, perPage*page)
	rows, err := s.db.QueryContext(r.Context(), q, args...)
	if err != nil {
		s.internal(w, err)
		return
	}
	defer rows.Close()
	type o struct {
		ID   int64  `json:"id"`
		Name string `json:"name"`
	}
	out := []o{}
	for rows.Next() {
		var x o
		if err := rows.Scan(&x.ID, &x.Name); err != nil {
			s.internal(w, err)
			return
		}
		out = append(out, x)
	}
	if err := rows.Err(); err != nil {
		s.internal(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// currentOrg implements GET /api/org: needs orgs:read, which members have
// and a server admin has everywhere (fixed:organization:reader); in org -1
// the admin then gets 404 "Organization not found", anyone else the RBAC
// 403 (conformance §1 "GET /api/org" and "X-Grafana-Org-Id: N").
func (s *Server) currentOrg(w http.ResponseWriter, r *http.Request) {
	ri := info(r)
	if ri.role == roleNone && !ri.p.serverAdm {
		rbacDenied(w, "orgs:read")
		return
	}
	var (
		name                                          string
		address1, address2, city, zip, state, country sql.NullString
	)
	err := s.db.QueryRowContext(r.Context(), `SELECT name, address1, address2, city, zip_code, state, country FROM org WHERE id = ?`, ri.orgID).
		Scan(&name, &address1, &address2, &city, &zip, &state, &country)
	if errors.Is(err, sql.ErrNoRows) {
		msg(w, http.StatusNotFound, "Organization not found")
		return
	}
	if err != nil {
		s.internal(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": ri.orgID, "name": name, "address": map[string]string{
		"address1": address1.String, "address2": address2.String, "city": city.String,
		"zipCode": zip.String, "state": state.String, "country": country.String,
	}})
}
