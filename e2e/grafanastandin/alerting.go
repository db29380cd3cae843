package grafanastandin

// Alert rules, library panels and data sources (conformance §7
// "alert_rule", "library_element"; §9).

import (
	"context"
	"crypto/md5"
	"database/sql"
	"encoding/hex"
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

// seedAlerting writes the alert rules, library panels and data sources of
// one org. Rows already there (same org and uid) are left alone.
func seedAlerting(ctx context.Context, tx *sql.Tx, f features, spec SeedSpec, org int64, folderIDs []int64, folderUIDs []string, created time.Time) error {
	rng := rand.New(rand.NewPCG(uint64(spec.Seed)^0x51ed2701, uint64(org)<<8|3))
	ts := created.Format(timeLayout)
	for i := 0; i < spec.DataSourcesPerOrg; i++ {
		typ, name, uid, url := "prometheus", "Prometheus", "prom-main", "http://prometheus:9090"
		if i > 0 {
			typ = []string{"prometheus", "loki", "tempo", "postgres"}[rng.IntN(4)]
			name = fmt.Sprintf("%s %02d", strings.ToUpper(typ[:1])+typ[1:], i+1)
			uid = "ds" + seedUID(rng, 12)
			url = fmt.Sprintf("http://%s-%d:%d", typ, i+1, 3000+i)
		}
		if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO data_source (org_id, version, type, name, access, url, basic_auth, is_default, json_data, created, updated, uid, read_only)
			VALUES (?, 1, ?, ?, 'proxy', ?, 0, ?, '{}', ?, ?, ?, 0)`, org, typ, name, url, i == 0, ts, ts, uid); err != nil {
			return fmt.Errorf("seeding data source: %w", err)
		}
	}
	for i := 0; i < spec.AlertRulesPerOrg; i++ {
		k := i % len(folderUIDs)
		uid := "a" + seedUID(rng, 13)
		metric := seedWords[rng.IntN(len(seedWords))]
		title := fmt.Sprintf("%s alert %03d", metric, i+1)
		group := fmt.Sprintf("%s group %d", strings.ToLower(metric), i/5+1)
		data := mustJSON([]any{
			map[string]any{"refId": "A", "queryType": "", "relativeTimeRange": map[string]any{"from": 600, "to": 0}, "datasourceUid": "prom-main",
				"model": map[string]any{"expr": fmt.Sprintf(`sum(rate(http_requests_total{job="%s",code=~"5.."}[5m]))`, metric), "intervalMs": 1000, "maxDataPoints": 43200, "refId": "A"}},
			map[string]any{"refId": "C", "queryType": "", "relativeTimeRange": map[string]any{"from": 0, "to": 0}, "datasourceUid": "__expr__",
				"model": map[string]any{"type": "threshold", "expression": "A", "refId": "C", "datasource": map[string]any{"type": "__expr__", "uid": "__expr__"},
					"conditions": []any{map[string]any{"evaluator": map[string]any{"type": "gt", "params": []any{float64(rng.IntN(100)) / 4}}}}}},
		})
		forNS := int64(time.Duration(1+rng.IntN(10)) * time.Minute)
		cols := `org_id, title, condition, data, updated, interval_seconds, version, uid, namespace_uid, rule_group, no_data_state, exec_err_state, "for", annotations, labels, rule_group_idx, is_paused`
		args := []any{org, title, "C", string(data), ts, 60, 1, uid, folderUIDs[k], group, "NoData", "Error", forNS,
			string(mustJSON(map[string]string{"summary": title + " is firing"})), string(mustJSON(map[string]string{"team": seedTags[rng.IntN(len(seedTags))]})),
			i%5 + 1, false}
		if f.v12Columns {
			cols += `, guid`
			args = append(args, guidFor("alert_rule", strconv.FormatInt(org, 10), uid))
		}
		if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO alert_rule (`+cols+`) VALUES (`+placeholders(len(args))+`)`, args...); err != nil {
			return fmt.Errorf("seeding alert rule: %w", err)
		}
	}
	for i := 0; i < spec.LibraryPanelsPerOrg; i++ {
		uid := "l" + seedUID(rng, 13)
		metric := seedWords[rng.IntN(len(seedWords))]
		name := fmt.Sprintf("%s library panel %03d", metric, i+1)
		typ := []string{"timeseries", "stat", "table"}[rng.IntN(3)]
		var folderID int64
		var folderUID string
		if k := i % (len(folderUIDs) + 1); k > 0 {
			folderID, folderUID = folderIDs[k-1], folderUIDs[k-1]
		}
		model := mustJSON(map[string]any{
			"type": typ, "title": name, "description": "", "datasource": map[string]any{"type": "prometheus", "uid": "prom-main"},
			"targets":      []any{map[string]any{"refId": "A", "expr": fmt.Sprintf(`up{job="%s"}`, metric)}},
			"fieldConfig":  map[string]any{"defaults": map[string]any{"unit": "short"}, "overrides": []any{}},
			"options":      map[string]any{},
			"libraryPanel": map[string]any{"uid": uid, "name": name},
		})
		cols := `org_id, folder_id, uid, name, kind, type, description, model, created, created_by, updated, updated_by, version`
		args := []any{org, folderID, uid, name, 1, typ, "seeded " + metric, string(model), ts, 1, ts, 1, 1}
		if f.libraryElementFolderUID {
			cols += `, folder_uid`
			args = append(args, nullIfEmpty(folderUID))
		}
		if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO library_element (`+cols+`) VALUES (`+placeholders(len(args))+`)`, args...); err != nil {
			return fmt.Errorf("seeding library panel: %w", err)
		}
	}
	return nil
}

// modelDuration prints a duration the way Prometheus' model.Duration does
// ("5m", "1h30m", "0s"): the `for` of a provisioned rule (conformance §9).
func modelDuration(d time.Duration) string {
	if d == 0 {
		return "0s"
	}
	ms := d.Milliseconds()
	var b strings.Builder
	for _, u := range []struct {
		n    int64
		unit string
	}{{365 * 24 * 3600 * 1000, "y"}, {7 * 24 * 3600 * 1000, "w"}, {24 * 3600 * 1000, "d"}, {3600 * 1000, "h"}, {60 * 1000, "m"}, {1000, "s"}, {1, "ms"}} {
		if ms >= u.n {
			fmt.Fprintf(&b, "%d%s", ms/u.n, u.unit)
			ms %= u.n
		}
	}
	return b.String()
}

// alertRules implements GET /api/v1/provisioning/alert-rules: every rule
// of the request org, no paging, ordered by folder, group, index, id
// (conformance §9; ngalert/store/alert_rule.go ListAlertRules @ v12.4.0).
// 12.4 adds keep_firing_for, notification_settings and record.
func (s *Server) alertRules(w http.ResponseWriter, r *http.Request) {
	ri := info(r)
	if ri.role == roleNone {
		// RBAC: any of alert.provisioning:read, alert.rules.provisioning:read,
		// alert.provisioning.secrets:read, ... (ngalert/api/authorization.go
		// @ v12.4.0); none of them is global, so a server admin in org -1 is
		// denied too. The message names the first one only (simplified).
		rbacDenied(w, "alert.provisioning:read")
		return
	}
	rows, err := s.db.QueryContext(r.Context(), `SELECT id, uid, org_id, namespace_uid, rule_group, title, condition, data, updated, no_data_state, exec_err_state, "for",
		COALESCE(annotations, ''), COALESCE(labels, ''), is_paused FROM alert_rule WHERE org_id = ? ORDER BY namespace_uid, rule_group, rule_group_idx, id`, ri.orgID)
	if err != nil {
		s.internal(w, err)
		return
	}
	defer rows.Close()
	out := []map[string]any{}
	for rows.Next() {
		var (
			id, org, forNS                       int64
			uid, ns, group, title, cond, upd     string
			data                                 []byte
			noData, execErr, annotations, labels string
			paused                               bool
		)
		if err := rows.Scan(&id, &uid, &org, &ns, &group, &title, &cond, &data, &upd, &noData, &execErr, &forNS, &annotations, &labels, &paused); err != nil {
			s.internal(w, err)
			return
		}
		rule := map[string]any{"id": id, "uid": uid, "orgID": org, "folderUID": ns, "ruleGroup": group, "title": title, "condition": cond,
			"data": json.RawMessage(data), "updated": parseDBTime(upd).Format(time.RFC3339), "noDataState": noData, "execErrState": execErr,
			"for": modelDuration(time.Duration(forNS)), "isPaused": paused}
		for k, v := range map[string]string{"annotations": annotations, "labels": labels} {
			var m map[string]string
			if json.Unmarshal([]byte(v), &m) == nil && len(m) > 0 {
				rule[k] = m
			}
		}
		if s.f.v12Columns {
			// tooling/definitions/provisioning_alert_rules.go @ v12.4.0.
			rule["keep_firing_for"], rule["notification_settings"], rule["record"] = "0s", nil, nil
		}
		out = append(out, rule)
	}
	if err := rows.Err(); err != nil {
		s.internal(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

type libraryElementUser struct {
	ID        int64  `json:"id"`
	Name      string `json:"name"`
	AvatarURL string `json:"avatarUrl"`
}

type libraryElementDTO struct {
	ID          int64           `json:"id"`
	OrgID       int64           `json:"orgId"`
	FolderID    int64           `json:"folderId"`
	FolderUID   string          `json:"folderUid"`
	UID         string          `json:"uid"`
	Name        string          `json:"name"`
	Kind        int64           `json:"kind"`
	Type        string          `json:"type"`
	Description string          `json:"description"`
	Model       json.RawMessage `json:"model"`
	Version     int64           `json:"version"`
	Meta        struct {
		FolderName          string             `json:"folderName"`
		FolderUID           string             `json:"folderUid"`
		ConnectedDashboards int64              `json:"connectedDashboards"`
		Created             string             `json:"created"`
		Updated             string             `json:"updated"`
		CreatedBy           libraryElementUser `json:"createdBy"`
		UpdatedBy           libraryElementUser `json:"updatedBy"`
	} `json:"meta"`
}

// gravatar is dtos.GetGravatarUrl: /avatar/<md5 of the lower-case email>.
func gravatar(email string) string {
	if email == "" {
		return ""
	}
	sum := md5.Sum([]byte(strings.ToLower(strings.TrimSpace(email))))
	return "/avatar/" + hex.EncodeToString(sum[:])
}

func (s *Server) libraryElements(ctx context.Context, org int64, uid string, kind, perPage, page int) ([]libraryElementDTO, int64, error) {
	folderUID := `COALESCE(fd.uid, '')`
	if s.f.libraryElementFolderUID {
		folderUID = `COALESCE(le.folder_uid, fd.uid, '')`
	}
	where := ` WHERE le.org_id = ?`
	args := []any{org}
	if uid != "" {
		where += ` AND le.uid = ?`
		args = append(args, uid)
	}
	if kind > 0 {
		where += ` AND le.kind = ?`
		args = append(args, kind)
	}
	var total int64
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM library_element le`+where, args...).Scan(&total); err != nil {
		return nil, 0, err
	}
	q := `SELECT le.id, le.org_id, le.folder_id, ` + folderUID + `, le.uid, le.name, le.kind, le.type, le.description, le.model, le.version, le.created, le.updated,
		le.created_by, COALESCE(u1.login, ''), COALESCE(u1.email, ''), le.updated_by, COALESCE(u2.login, ''), COALESCE(u2.email, ''),
		(SELECT COUNT(*) FROM library_element_connection c WHERE c.element_id = le.id AND c.kind = 1)
		FROM library_element le LEFT JOIN dashboard fd ON fd.id = le.folder_id AND fd.org_id = le.org_id AND fd.is_folder = 1
		LEFT JOIN user u1 ON u1.id = le.created_by LEFT JOIN user u2 ON u2.id = le.updated_by` + where + ` ORDER BY le.name ASC, le.id LIMIT ? OFFSET ?`
	rows, err := s.db.QueryContext(ctx, q, append(args, perPage, (page-1)*perPage)...)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	out := []libraryElementDTO{}
	for rows.Next() {
		var (
			e                libraryElementDTO
			model            []byte
			created, updated string
			cEmail, uEmail   string
		)
		if err := rows.Scan(&e.ID, &e.OrgID, &e.FolderID, &e.FolderUID, &e.UID, &e.Name, &e.Kind, &e.Type, &e.Description, &model, &e.Version, &created, &updated,
			&e.Meta.CreatedBy.ID, &e.Meta.CreatedBy.Name, &cEmail, &e.Meta.UpdatedBy.ID, &e.Meta.UpdatedBy.Name, &uEmail, &e.Meta.ConnectedDashboards); err != nil {
			return nil, 0, err
		}
		e.Model = model
		e.Meta.FolderUID = e.FolderUID
		e.Meta.Created, e.Meta.Updated = parseDBTime(created).Format(time.RFC3339), parseDBTime(updated).Format(time.RFC3339)
		e.Meta.CreatedBy.AvatarURL, e.Meta.UpdatedBy.AvatarURL = gravatar(cEmail), gravatar(uEmail)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, err
	}
	rows.Close()
	// meta.folderName: the folder's title, "General" at the root
	// (libraryelements/database.go @ v12.4.0, dashboards.RootFolderName).
	for i := range out {
		out[i].Meta.FolderName = "General"
		if out[i].FolderUID == "" {
			continue
		}
		var title string
		err := s.q.QueryRowContext(ctx, `SELECT title FROM dashboard WHERE org_id = ? AND uid = ? AND is_folder = 1`, org, out[i].FolderUID).Scan(&title)
		if err == nil {
			out[i].Meta.FolderName = title
		} else if !errors.Is(err, sql.ErrNoRows) {
			return nil, 0, err
		}
	}
	return out, total, nil
}

// listLibraryElements implements GET /api/library-elements: perPage default
// 100, page 1-based, ordered by name, scoped to the request org, kind
// filter (1 = panels) (conformance §9).
func (s *Server) listLibraryElements(w http.ResponseWriter, r *http.Request) {
	ri := info(r)
	if ri.role == roleNone {
		// Route guarded by library.panels:read (libraryelements/api.go @
		// v12.4.0), an org permission: org -1 has none.
		rbacDenied(w, "library.panels:read")
		return
	}
	perPage, page := queryInt(r, "perPage"), queryInt(r, "page")
	if perPage <= 0 {
		perPage = 100
	}
	if page <= 0 {
		page = 1
	}
	els, total, err := s.libraryElements(r.Context(), ri.orgID, "", queryInt(r, "kind"), perPage, page)
	if err != nil {
		s.internal(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"result": map[string]any{"totalCount": total, "page": page, "perPage": perPage, "elements": els}})
}

// getLibraryElement implements GET /api/library-elements/:uid: {"result":
// element}, 404 {"message":"library element could not be found"}
// (libraryelements/api.go toLibraryElementError @ v12.4.0).
func (s *Server) getLibraryElement(w http.ResponseWriter, r *http.Request) {
	ri := info(r)
	if ri.role == roleNone {
		rbacDenied(w, "library.panels:read")
		return
	}
	els, _, err := s.libraryElements(r.Context(), ri.orgID, r.PathValue("uid"), 0, 1, 1)
	if err != nil {
		s.internal(w, err)
		return
	}
	if len(els) == 0 {
		msg(w, http.StatusNotFound, "library element could not be found")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"result": els[0]})
}

// dataSources implements GET /api/datasources: the org's data sources,
// sorted by name (pkg/api/datasources.go GetDataSources @ v12.4.0; plugin
// metadata is not modelled: typeName = type, a fixed logo).
func (s *Server) dataSources(w http.ResponseWriter, r *http.Request) {
	ri := info(r)
	if ri.role == roleNone {
		rbacDenied(w, "datasources:read")
		return
	}
	rows, err := s.db.QueryContext(r.Context(), `SELECT id, uid, org_id, name, type, access, url, COALESCE(user, ''), COALESCE(database, ''), basic_auth, is_default,
		COALESCE(json_data, '{}'), COALESCE(read_only, 0) FROM data_source WHERE org_id = ?`, ri.orgID)
	if err != nil {
		s.internal(w, err)
		return
	}
	defer rows.Close()
	type ds struct {
		ID          int64           `json:"id"`
		UID         string          `json:"uid"`
		OrgID       int64           `json:"orgId"`
		Name        string          `json:"name"`
		Type        string          `json:"type"`
		TypeName    string          `json:"typeName"`
		TypeLogoURL string          `json:"typeLogoUrl"`
		Access      string          `json:"access"`
		URL         string          `json:"url"`
		User        string          `json:"user"`
		Database    string          `json:"database"`
		BasicAuth   bool            `json:"basicAuth"`
		IsDefault   bool            `json:"isDefault"`
		JSONData    json.RawMessage `json:"jsonData"`
		ReadOnly    bool            `json:"readOnly"`
	}
	out := []ds{}
	for rows.Next() {
		var d ds
		var jd []byte
		if err := rows.Scan(&d.ID, &d.UID, &d.OrgID, &d.Name, &d.Type, &d.Access, &d.URL, &d.User, &d.Database, &d.BasicAuth, &d.IsDefault, &jd, &d.ReadOnly); err != nil {
			s.internal(w, err)
			return
		}
		d.JSONData, d.TypeName, d.TypeLogoURL = jd, d.Type, "public/img/icn-datasource.svg"
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		s.internal(w, err)
		return
	}
	slices.SortFunc(out, func(a, b ds) int { return strings.Compare(strings.ToLower(a.Name), strings.ToLower(b.Name)) })
	writeJSON(w, http.StatusOK, out)
}
