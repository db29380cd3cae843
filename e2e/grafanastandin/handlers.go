package grafanastandin

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

const (
	standinVersion = "11.4.1"
	standinCommit  = "rebind-standin"
	defaultLimit   = 1000
	maxLimit       = 5000
)

type ctxKey struct{}

type reqInfo struct {
	p     principal
	orgID int64
}

func info(r *http.Request) reqInfo { return r.Context().Value(ctxKey{}).(reqInfo) }

// prepare compiles the per-request statements once; preparing them on every
// request was the stand-in's largest cost.
func (s *Server) prepare() error {
	var err error
	s.stmtDashboard, err = s.db.Prepare(`SELECT d.id, d.uid, d.title, d.slug, d.version, d.data, d.created, d.updated, d.created_by, d.updated_by, ` + folderCols + `
		FROM dashboard d` + folderJoin + `
		WHERE d.org_id = ? AND d.uid = ? AND d.is_folder = 0 AND d.deleted IS NULL`)
	if err != nil {
		return err
	}
	s.stmtOrgExists, err = s.db.Prepare(`SELECT COUNT(*) FROM org WHERE id = ?`)
	return err
}

func (s *Server) routes() {
	m := http.NewServeMux()
	m.HandleFunc("GET /api/health", s.health)
	m.Handle("GET /api/search", s.auth(s.search))
	m.Handle("GET /api/dashboards/uid/{uid}", s.auth(s.getDashboard))
	m.Handle("POST /api/dashboards/db", s.auth(s.saveDashboard))
	m.Handle("GET /api/folders", s.auth(s.listFolders))
	m.Handle("POST /api/folders", s.auth(s.createFolder))
	m.Handle("GET /api/user/orgs", s.auth(s.userOrgs))
	m.Handle("GET /api/orgs", s.auth(s.allOrgs))
	m.Handle("GET /api/org", s.auth(s.currentOrg))
	m.Handle("/api/", s.auth(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "Not found"})
	}))
	s.mux = m
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

func (s *Server) internal(w http.ResponseWriter, err error) {
	if s.closed.Load() {
		msg(w, http.StatusServiceUnavailable, "database is closed")
		return
	}
	msg(w, http.StatusInternalServerError, "Internal server error: "+err.Error())
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	body := map[string]string{"commit": standinCommit, "database": "ok", "version": standinVersion}
	if s.closed.Load() || s.dbCheck(r.Context()) != nil {
		body["database"] = "failing"
		writeJSON(w, http.StatusServiceUnavailable, body)
		return
	}
	writeJSON(w, http.StatusOK, body)
}

func (s *Server) dbCheck(ctx context.Context) error {
	var one int
	err := s.db.QueryRowContext(ctx, `SELECT 1 FROM dashboard LIMIT 1`).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	return err
}

func unauthorized(w http.ResponseWriter, messageID, m string) {
	body := map[string]any{"message": m}
	if messageID != "" {
		body["messageId"] = messageID
		body["statusCode"] = http.StatusUnauthorized
		body["traceID"] = ""
	}
	writeJSON(w, http.StatusUnauthorized, body)
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
			if _, ok := s.tokens[strings.TrimPrefix(h, "Bearer ")]; !ok {
				unauthorized(w, "api-key.invalid", "Invalid API key")
				return
			}
			p = principal{token: true, login: "sa-rebind", orgID: 1}
		case h != "":
			user, pw, ok := r.BasicAuth()
			if !ok {
				unauthorized(w, "", "Unauthorized")
				return
			}
			var err error
			p, err = s.checkBasic(r.Context(), user, pw)
			if errors.Is(err, errBadPassword) {
				unauthorized(w, "password-auth.failed", "Invalid username or password")
				return
			}
			if err != nil {
				s.internal(w, err)
				return
			}
		default:
			unauthorized(w, "", "Unauthorized")
			return
		}
		org := p.orgID
		if v := r.Header.Get("X-Grafana-Org-Id"); v != "" {
			id, err := strconv.ParseInt(v, 10, 64)
			if err != nil || id <= 0 {
				msg(w, http.StatusBadRequest, "invalid X-Grafana-Org-Id header")
				return
			}
			org = id
		}
		if p.token && org != 1 {
			msg(w, http.StatusForbidden, fmt.Sprintf("You'll need additional permissions to access organization %d", org))
			return
		}
		var exists int
		if err := s.stmtOrgExists.QueryRowContext(r.Context(), org).Scan(&exists); err != nil {
			s.internal(w, err)
			return
		}
		if exists == 0 {
			msg(w, http.StatusForbidden, fmt.Sprintf("You'll need additional permissions to access organization %d", org))
			return
		}
		ctx := context.WithValue(r.Context(), ctxKey{}, reqInfo{p: p, orgID: org})
		next(w, r.WithContext(ctx))
	})
}

func paging(r *http.Request, def int) (limit, page int, bad bool) {
	limit, page = def, 1
	if v := r.URL.Query().Get("limit"); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			limit = n
		}
	}
	if v := r.URL.Query().Get("page"); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			page = n
		}
	}
	return limit, page, limit > maxLimit
}

type searchHit struct {
	ID          int64    `json:"id"`
	UID         string   `json:"uid"`
	Title       string   `json:"title"`
	URI         string   `json:"uri"`
	URL         string   `json:"url"`
	Slug        string   `json:"slug"`
	Type        string   `json:"type"`
	Tags        []string `json:"tags"`
	IsStarred   bool     `json:"isStarred"`
	SortMeta    int      `json:"sortMeta"`
	FolderID    int64    `json:"folderId,omitempty"`
	FolderUID   string   `json:"folderUid,omitempty"`
	FolderTitle string   `json:"folderTitle,omitempty"`
	FolderURL   string   `json:"folderUrl,omitempty"`
}

// folderJoin finds a row's folder by folder_uid (Grafana 10+) or, for rows
// written by older versions, by folder_id.
const folderJoin = `
	LEFT JOIN dashboard f1 ON f1.org_id = d.org_id AND f1.uid = d.folder_uid AND f1.is_folder = 1
	LEFT JOIN dashboard f2 ON f2.id = d.folder_id AND d.folder_id > 0 AND f2.org_id = d.org_id AND f2.is_folder = 1`

const folderCols = `COALESCE(f1.id, f2.id, 0), COALESCE(f1.uid, f2.uid, ''), COALESCE(f1.title, f2.title, ''), COALESCE(f1.slug, f2.slug, '')`

func (s *Server) search(w http.ResponseWriter, r *http.Request) {
	ri := info(r)
	limit, page, tooBig := paging(r, defaultLimit)
	if tooBig {
		msg(w, http.StatusUnprocessableEntity, fmt.Sprintf("Limit is above maximum allowed (%d), use page parameter to access hits beyond limit", maxLimit))
		return
	}
	q := `SELECT d.id, d.uid, d.title, d.slug, d.is_folder, ` + folderCols + `,
		(SELECT group_concat(t.term, char(31)) FROM dashboard_tag t WHERE t.dashboard_id = d.id)
		FROM dashboard d` + folderJoin + `
		WHERE d.org_id = ? AND d.deleted IS NULL`
	args := []any{ri.orgID}
	switch r.URL.Query().Get("type") {
	case "dash-db":
		q += ` AND d.is_folder = 0`
	case "dash-folder":
		q += ` AND d.is_folder = 1`
	}
	if qs := r.URL.Query().Get("query"); qs != "" {
		q += ` AND d.title LIKE ? ESCAPE '\'`
		esc := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(qs)
		args = append(args, "%"+esc+"%")
	}
	q += ` ORDER BY d.is_folder DESC, lower(d.title), d.id LIMIT ? OFFSET ?`
	args = append(args, limit, (page-1)*limit)
	rows, err := s.db.QueryContext(r.Context(), q, args...)
	if err != nil {
		s.internal(w, err)
		return
	}
	defer rows.Close()
	hits := make([]searchHit, 0, 64)
	for rows.Next() {
		var (
			h                   searchHit
			isFolder            int
			fID                 int64
			fUID, fTitle, fSlug string
			tags                sql.NullString
		)
		if err := rows.Scan(&h.ID, &h.UID, &h.Title, &h.Slug, &isFolder, &fID, &fUID, &fTitle, &fSlug, &tags); err != nil {
			s.internal(w, err)
			return
		}
		h.URI = "db/" + h.Slug
		h.Tags = []string{}
		if tags.Valid && tags.String != "" {
			h.Tags = strings.Split(tags.String, "\x1f")
		}
		if isFolder == 1 {
			h.Type = "dash-folder"
			h.URL = "/dashboards/f/" + h.UID + "/" + h.Slug
		} else {
			h.Type = "dash-db"
			h.URL = "/d/" + h.UID + "/" + h.Slug
		}
		if fUID != "" {
			h.FolderID, h.FolderUID, h.FolderTitle = fID, fUID, fTitle
			h.FolderURL = "/dashboards/f/" + fUID + "/" + fSlug
		}
		hits = append(hits, h)
	}
	if err := rows.Err(); err != nil {
		s.internal(w, err)
		return
	}
	writeJSON(w, http.StatusOK, hits)
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

// dashboardModel returns the stored JSON with id, uid, title and version
// overwritten from the row, as Grafana does when it serves a dashboard.
func dashboardModel(data []byte, id int64, uid, title string, version int64) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	if m == nil {
		m = map[string]json.RawMessage{}
	}
	set := func(k string, v any) {
		b, _ := json.Marshal(v)
		m[k] = b
	}
	set("id", id)
	set("uid", uid)
	set("title", title)
	set("version", version)
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	// Written by hand: json.Marshal would re-validate and compact every
	// value, which Unmarshal above has already checked.
	out := make([]byte, 0, len(data)+64)
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
	return append(out, '}'), nil
}

func (s *Server) getDashboard(w http.ResponseWriter, r *http.Request) {
	ri := info(r)
	var (
		id, version, fID     int64
		uid, title, slug     string
		fUID, fTitle, fSlug  string
		data                 []byte
		created, updated     sql.NullString
		createdBy, updatedBy sql.NullInt64
	)
	err := s.stmtDashboard.QueryRowContext(r.Context(), ri.orgID, r.PathValue("uid")).
		Scan(&id, &uid, &title, &slug, &version, &data, &created, &updated, &createdBy, &updatedBy, &fID, &fUID, &fTitle, &fSlug)
	if errors.Is(err, sql.ErrNoRows) {
		msg(w, http.StatusNotFound, "Dashboard not found")
		return
	}
	if err != nil {
		s.internal(w, err)
		return
	}
	model, err := dashboardModel(data, id, uid, title, version)
	if err != nil {
		s.internal(w, fmt.Errorf("dashboard %s holds invalid JSON: %w", uid, err))
		return
	}
	meta := map[string]any{
		"type": "db", "canSave": true, "canEdit": true, "canAdmin": true, "canStar": true, "canDelete": true,
		"slug": slug, "url": "/d/" + uid + "/" + slug, "expires": "0001-01-01T00:00:00Z",
		"created": isoTime(created), "updated": isoTime(updated), "updatedBy": "admin", "createdBy": "admin",
		"version": version, "hasAcl": false, "isFolder": false, "folderId": fID, "folderUid": fUID,
		"folderTitle": "General", "folderUrl": "", "provisioned": false, "provisionedExternalId": "",
	}
	if fUID != "" {
		meta["folderTitle"] = fTitle
		meta["folderUrl"] = "/dashboards/f/" + fUID + "/" + fSlug
	}
	mb, err := json.Marshal(meta)
	if err != nil {
		s.internal(w, err)
		return
	}
	var b bytes.Buffer
	b.Grow(len(model) + len(mb) + 32)
	b.WriteString(`{"dashboard":`)
	b.Write(model)
	b.WriteString(`,"meta":`)
	b.Write(mb)
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

func (s *Server) folderByUID(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, org int64, uid string) (id int64, err error) {
	err = q.QueryRowContext(ctx, `SELECT id FROM dashboard WHERE org_id = ? AND uid = ? AND is_folder = 1 AND deleted IS NULL`, org, uid).Scan(&id)
	return id, err
}

func (s *Server) saveDashboard(w http.ResponseWriter, r *http.Request) {
	ri := info(r)
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
	tx, err := s.db.BeginTx(ctx, nil)
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
			writeJSON(w, http.StatusBadRequest, map[string]string{"message": "folder not found", "status": "not-found"})
			return
		}
	case body.FolderID > 0:
		folderID = body.FolderID
		err = tx.QueryRowContext(ctx, `SELECT uid FROM dashboard WHERE org_id = ? AND id = ? AND is_folder = 1`, ri.orgID, folderID).Scan(&folderUID)
		if errors.Is(err, sql.ErrNoRows) {
			writeJSON(w, http.StatusBadRequest, map[string]string{"message": "folder not found", "status": "not-found"})
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
	if uid != "" {
		err = tx.QueryRowContext(ctx, `SELECT id, version FROM dashboard WHERE org_id = ? AND uid = ? AND is_folder = 0 AND deleted IS NULL`, ri.orgID, uid).
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
	err = tx.QueryRowContext(ctx, `SELECT id, uid FROM dashboard WHERE org_id = ? AND is_folder = 0 AND deleted IS NULL AND COALESCE(folder_uid,'') = ? AND lower(title) = lower(?) AND id != ?`,
		ri.orgID, folderUID, title, existingID).Scan(&clashID, &clashUID)
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
	data, err := dashboardModel(mustJSON(body.Dashboard), id, uid, title, newVersion)
	if err != nil {
		s.internal(w, err)
		return
	}
	if found {
		_, err = tx.ExecContext(ctx, `UPDATE dashboard SET version = ?, slug = ?, title = ?, data = ?, updated = ?, updated_by = ?, folder_id = ?, folder_uid = NULLIF(?, ''), uid = ? WHERE id = ?`,
			newVersion, slug, title, string(data), now, ri.p.userID, folderID, folderUID, uid, id)
	} else {
		_, err = tx.ExecContext(ctx, `INSERT INTO dashboard (id, version, slug, title, data, org_id, created, updated, updated_by, created_by, gnet_id, folder_id, is_folder, has_acl, uid, is_public, folder_uid)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, 0, 0, ?, 0, NULLIF(?, ''))`,
			id, newVersion, slug, title, string(data), ri.orgID, now, now, ri.p.userID, ri.p.userID, folderID, uid, folderUID)
	}
	if err == nil {
		_, err = tx.ExecContext(ctx, `INSERT INTO dashboard_version (dashboard_id, parent_version, restored_from, version, created, created_by, message, data) VALUES (?, ?, 0, ?, ?, ?, ?, ?)`,
			id, newVersion-1, newVersion, now, ri.p.userID, body.Message, string(data))
	}
	if err == nil {
		err = writeTags(ctx, tx, id, body.Dashboard["tags"])
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

func (s *Server) listFolders(w http.ResponseWriter, r *http.Request) {
	ri := info(r)
	limit, page, _ := paging(r, defaultLimit)
	q := `SELECT id, uid, title, COALESCE(folder_uid, '') FROM dashboard WHERE org_id = ? AND is_folder = 1 AND deleted IS NULL`
	args := []any{ri.orgID}
	if p, ok := r.URL.Query()["parentUid"]; ok {
		q += ` AND COALESCE(folder_uid, '') = ?`
		args = append(args, p[0])
	}
	q += ` ORDER BY lower(title), id LIMIT ? OFFSET ?`
	args = append(args, limit, (page-1)*limit)
	rows, err := s.db.QueryContext(r.Context(), q, args...)
	if err != nil {
		s.internal(w, err)
		return
	}
	defer rows.Close()
	out := []folderOut{}
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

func (s *Server) createFolder(w http.ResponseWriter, r *http.Request) {
	ri := info(r)
	var body struct {
		UID       string `json:"uid"`
		Title     string `json:"title"`
		ParentUID string `json:"parentUid"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || strings.TrimSpace(body.Title) == "" {
		msg(w, http.StatusBadRequest, "folder title cannot be empty")
		return
	}
	ctx := r.Context()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		s.internal(w, err)
		return
	}
	defer tx.Rollback()
	var parentID int64
	if body.ParentUID != "" {
		parentID, err = s.folderByUID(ctx, tx, ri.orgID, body.ParentUID)
		if errors.Is(err, sql.ErrNoRows) {
			msg(w, http.StatusNotFound, "parent folder not found")
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
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM dashboard WHERE org_id = ? AND is_folder = 1 AND deleted IS NULL AND COALESCE(folder_uid,'') = ? AND lower(title) = lower(?)`,
		ri.orgID, body.ParentUID, body.Title).Scan(&n); err != nil {
		s.internal(w, err)
		return
	}
	if n > 0 {
		msg(w, http.StatusConflict, "a folder with the same name already exists")
		return
	}
	id, err := insertFolder(ctx, tx, ri.orgID, body.UID, body.Title, body.ParentUID, parentID, ri.p.userID, time.Now().UTC())
	if err == nil {
		err = tx.Commit()
	}
	if err != nil {
		s.internal(w, err)
		return
	}
	slug := slugify(body.Title)
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "uid": body.UID, "title": body.Title, "url": "/dashboards/f/" + body.UID + "/" + slug,
		"version": 1, "parentUid": body.ParentUID})
}

// insertFolder writes a folder row the way Grafana keeps folders in the
// dashboard table, with the next free id.
func insertFolder(ctx context.Context, tx *sql.Tx, org int64, uid, title, parentUID string, parentID, by int64, now time.Time) (int64, error) {
	var id int64
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(id),0)+1 FROM dashboard`).Scan(&id); err != nil {
		return 0, err
	}
	data := mustJSON(map[string]any{"id": id, "uid": uid, "title": title, "version": 1, "schemaVersion": 17})
	ts := now.Format(timeLayout)
	_, err := tx.ExecContext(ctx, `INSERT INTO dashboard (id, version, slug, title, data, org_id, created, updated, updated_by, created_by, gnet_id, folder_id, is_folder, has_acl, uid, is_public, folder_uid)
		VALUES (?, 1, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, 1, 0, ?, 0, NULLIF(?, ''))`,
		id, slugify(title), title, string(data), org, ts, ts, by, by, parentID, uid, parentUID)
	return id, err
}

type orgOut struct {
	OrgID int64  `json:"orgId"`
	Name  string `json:"name"`
	Role  string `json:"role"`
}

func (s *Server) orgs(ctx context.Context) ([]orgOut, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, name FROM org ORDER BY id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []orgOut
	for rows.Next() {
		o := orgOut{Role: "Admin"}
		if err := rows.Scan(&o.OrgID, &o.Name); err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, rows.Err()
}

func (s *Server) userOrgs(w http.ResponseWriter, r *http.Request) {
	if info(r).p.token {
		// Service accounts are not users; Grafana has no "user" for them here.
		msg(w, http.StatusNotFound, "user not found")
		return
	}
	out, err := s.orgs(r.Context())
	if err != nil {
		s.internal(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) allOrgs(w http.ResponseWriter, r *http.Request) {
	if !info(r).p.serverAdm {
		msg(w, http.StatusForbidden, "Permission denied")
		return
	}
	orgs, err := s.orgs(r.Context())
	if err != nil {
		s.internal(w, err)
		return
	}
	type o struct {
		ID   int64  `json:"id"`
		Name string `json:"name"`
	}
	out := make([]o, 0, len(orgs))
	for _, x := range orgs {
		out = append(out, o{x.OrgID, x.Name})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) currentOrg(w http.ResponseWriter, r *http.Request) {
	id := info(r).orgID
	var name string
	if err := s.db.QueryRowContext(r.Context(), `SELECT name FROM org WHERE id = ?`, id).Scan(&name); err != nil {
		s.internal(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "name": name})
}
