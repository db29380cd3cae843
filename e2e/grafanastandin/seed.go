package grafanastandin

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"
)

// SeedSpec describes deterministic content: the same spec always yields the
// same uids, titles and dashboard JSON.
type SeedSpec struct {
	Orgs, FoldersPerOrg, DashboardsPerOrg int
	Seed                                  int64
	// BlobData stores dashboard JSON as BLOB instead of TEXT; Grafana databases
	// migrated from MySQL or written by some versions hold either.
	BlobData bool
	// Version is the Grafana release whose grafana.db layout is written (any
	// value ParseVersion accepts; "" means DefaultVersion): 9.5 has no
	// dashboard.folder_uid and an empty folder table, 10.4 adds folder_uid,
	// 11.6 adds dashboard.deleted and writes the folder table, 12.4 adds
	// api_version (conformance §7). An existing database is upgraded first.
	Version Version
	// FolderDepth > 1 nests each org's folders in chains that deep: folder i
	// sits at level i % FolderDepth, under the last folder of the level
	// above. Dashboards are spread over the General folder and every level.
	// Needs a version with nested folders on by default (11.6, 12.4;
	// conformance §3) and at most 4 levels (MaxNestedFolderDepth @ v12.4.0).
	FolderDepth int
	// AdminNotMemberOf lists orgs the server admin is not a member of. By
	// default Seed makes the admin an Admin member of every seeded org
	// through org_user rows, as Grafana does for the user who creates an
	// org; membership is nothing but those rows (conformance §1). Listed orgs
	// lose any admin membership row, org 1 included.
	AdminNotMemberOf []int64
	// Tokens are service-account tokens to store in grafana.db, each of
	// the org it maps to, so that they come back with a restored volume as
	// real Grafana's do.
	Tokens map[string]int64
	// DeletedPerOrg soft-deletes the last that many seeded dashboards of each
	// org (dashboard.deleted set, conformance §7); needs 11.6 or later.
	DeletedPerOrg int

	// UnifiedStorage (12.4, 13.0) seeds a database in which the folders and
	// dashboards migration to unified storage has run: every live seeded
	// dashboard and folder is also a `resource` row (value = the object
	// JSON, conformance §7 "Unified storage") with a resource_history row,
	// and unifiedstorage_migration_log holds the marker, so Open serves /api
	// and /apis from `resource` (conformance §7 "When legacy dashboard is
	// stale"). Without it a 12.4 database stays in legacy mode, while 13.0
	// runs the migration itself when it opens the database.
	UnifiedStorage bool
	// StaleLegacy (needs UnifiedStorage) makes the legacy tables lag behind
	// `resource`, as they do once Grafana writes to unified storage only.
	// Per org, the seeded dashboard number i (0-based):
	//   - i%5 == 1 was edited after the migration: `resource` holds version
	//     2 (another description and first panel title), `dashboard` still
	//     version 1;
	//   - i%7 == 3 was created after it: no `dashboard` row at all;
	// and one more dashboard per org ("Retired ...") was deleted after it:
	// its `dashboard` row is still there, `resource` has none (its history
	// ends with a delete). See StaleLegacyPlan.
	StaleLegacy bool
	// V2DashboardsPerOrg (needs UnifiedStorage) adds that many schema v2
	// dashboards per org, stored at v2beta1 (12.4) or v2 (13.0) with
	// `elements` and a RowsLayout `layout`. They were created after the
	// migration, so the legacy `dashboard` table never has them; /api serves
	// them converted to classic JSON, losing their v2-only fields
	// (conformance §4 "Schema v2 dashboards on the legacy endpoint").
	V2DashboardsPerOrg int
	// AlertRulesPerOrg writes that many alert rules per org into alert_rule
	// (conformance §9), in the org's folders round-robin (namespace_uid),
	// five rules per rule group; needs FoldersPerOrg > 0 (a rule lives in a
	// folder).
	AlertRulesPerOrg int
	// LibraryPanelsPerOrg writes that many library panels (library_element,
	// kind 1) per org, spread over the General folder and the org's folders
	// (conformance §7 "library_element", §9).
	LibraryPanelsPerOrg int
	// DataSourcesPerOrg writes that many data sources per org (the first is
	// the Prometheus "prom-main" the seeded dashboards query).
	DataSourcesPerOrg int
}

// StaleLegacyPlan says what SeedSpec.StaleLegacy does to the seeded
// dashboard number i (0-based) of an org: edited after the migration
// (legacy row one version behind) or created after it (no legacy row).
func StaleLegacyPlan(i int) (editedAfter, createdAfter bool) {
	return i%5 == 1, i%7 == 3
}

// MaxFolderDepth is the deepest folder nesting Seed writes: Grafana 12.4's
// MaxNestedFolderDepth (pkg/services/folder/model.go @ v12.4.0).
const MaxFolderDepth = 4

var seedWords = []string{"API", "Latency", "Kafka", "Nodes", "Ingress", "Postgres", "Billing", "Errors", "Übersicht", "ダッシュボード",
	"Cache", "Queue", "Storage", "Checkout", "Search", "DNS", "Edge", "Tenants", "Batch", "Quota"}

var seedTags = []string{"prod", "staging", "sre", "team-a", "team-b", "k8s", "slo"}

// Seed writes orgs, folders and dashboards straight into <dataDir>/grafana.db,
// creating it when missing. Rows that already exist (same org and uid) are
// left alone, so seeding twice with one spec is harmless.
func Seed(dataDir string, spec SeedSpec) error {
	if spec.Orgs <= 0 {
		spec.Orgs = 1
	}
	v, err := ParseVersion(string(spec.Version))
	if err != nil {
		return err
	}
	f := featuresOf(v)
	if spec.FolderDepth > 1 && !f.nestedFolders {
		return fmt.Errorf("grafanastandin: FolderDepth %d: Grafana %s has nested folders off by default (conformance §3)", spec.FolderDepth, v)
	}
	if spec.FolderDepth > MaxFolderDepth {
		return fmt.Errorf("grafanastandin: FolderDepth %d is deeper than Grafana allows (%d)", spec.FolderDepth, MaxFolderDepth)
	}
	if spec.DeletedPerOrg > 0 && !f.deletedColumn {
		return fmt.Errorf("grafanastandin: DeletedPerOrg: Grafana %s has no dashboard.deleted column (conformance §7)", v)
	}
	if spec.UnifiedStorage && !f.unifiedTables {
		return fmt.Errorf("grafanastandin: UnifiedStorage: Grafana %s has no unified storage (conformance §7)", v)
	}
	if (spec.StaleLegacy || spec.V2DashboardsPerOrg > 0) && !spec.UnifiedStorage {
		return fmt.Errorf("grafanastandin: StaleLegacy and V2DashboardsPerOrg need UnifiedStorage")
	}
	if spec.AlertRulesPerOrg > 0 && spec.FoldersPerOrg <= 0 {
		return fmt.Errorf("grafanastandin: AlertRulesPerOrg needs FoldersPerOrg > 0: an alert rule lives in a folder")
	}
	depth := max(spec.FolderDepth, 1)
	db, err := openDB(dataDir, f)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx := context.Background()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	insVer, err := tx.PrepareContext(ctx, `INSERT INTO dashboard_version (dashboard_id, parent_version, restored_from, version, created, created_by, message, data) VALUES (?, 0, 0, 1, ?, 1, 'seeded', ?)`)
	if err != nil {
		return err
	}
	insTag, err := tx.PrepareContext(ctx, `INSERT INTO dashboard_tag (dashboard_id, term) VALUES (?, ?)`)
	if err != nil {
		return err
	}
	cache := newStmtCache(tx)
	defer cache.close()
	ts0 := time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC).Format(timeLayout)
	var nextID int64
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(id),0)+1 FROM dashboard`).Scan(&nextID); err != nil {
		return err
	}
	if f.unifiedTables {
		// Dashboards that exist only in unified storage hold their id in a label.
		var maxLabel sql.NullInt64
		if err := tx.QueryRowContext(ctx, `SELECT MAX(CAST(json_extract(value, '$.metadata.labels."`+labelInternalID+`"') AS INTEGER)) FROM resource`).Scan(&maxLabel); err != nil {
			return err
		}
		nextID = max(nextID, maxLabel.Int64+1)
	}
	if spec.UnifiedStorage {
		// Unified objects name their creator by user uid (grafana.app/
		// createdBy "user:<uid>"): a volume seeded before Grafana's first
		// start gets the admin's row now, without a password; the first
		// Open completes it (see Server.bootstrap).
		if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO user (id, version, login, email, name, org_id, is_admin, email_verified, theme, created, updated, is_service_account, uid)
			VALUES (1, 0, 'admin', 'admin@localhost', '', 1, 1, 0, '', ?, ?, 0, ?)`, ts0, ts0, "u"+seedUID(rand.New(rand.NewPCG(uint64(spec.Seed), 0)), 13)); err != nil {
			return err
		}
	}
	admin, err := adminUserID(ctx, tx)
	if err != nil {
		return err
	}
	users, err := userUIDs(ctx, tx)
	if err != nil {
		return err
	}
	// A fixed clock keeps seeded files identical between runs.
	created := time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)
	ts := created.Format(timeLayout)
	// With UnifiedStorage: the migration ran an hour after the content was
	// made; what StaleLegacy and V2DashboardsPerOrg add happened after it.
	migratedAt := created.Add(time.Hour)
	u := &unifiedSeed{}
	if spec.UnifiedStorage {
		if u.w, err = newResourceWriter(ctx, tx, f.folderVersions[0]); err != nil {
			return err
		}
		defer u.w.close()
	}
	// What the seeding of an org writes into unified storage, in order.
	type event struct {
		r      record
		at     time.Time
		delete bool
	}

	for org := int64(1); org <= int64(spec.Orgs); org++ {
		if err := ensureOrg(ctx, tx, org, orgName(org)); err != nil {
			return err
		}
		if !slices.Contains(spec.AdminNotMemberOf, org) {
			if err := addMember(ctx, tx, org, admin, roleAdmin); err != nil {
				return err
			}
		}
		rng := rand.New(rand.NewPCG(uint64(spec.Seed), uint64(org)))
		// Content added after the legacy seed (v2 dashboards, the retired
		// dashboard, alert rules, library panels) draws from its own stream,
		// so that the classic content of a spec never changes.
		rng2 := rand.New(rand.NewPCG(uint64(spec.Seed)^0x9e3779b97f4a7c15, uint64(org)<<8|2))
		var events []event
		base := record{org: org, version: 1, created: created, updated: created, createdBy: users[1], updatedBy: users[1], storedVersion: f.classicStoredVersion}
		type folder struct {
			id       int64
			uid, ttl string
		}
		folders := make([]folder, 0, spec.FoldersPerOrg)
		lastAt := make([]folder, depth) // last folder made at each level
		for i := 0; i < spec.FoldersPerOrg; i++ {
			fo := folder{uid: "f" + seedUID(rng, 9), ttl: fmt.Sprintf("%s %02d", seedWords[rng.IntN(len(seedWords))], i+1)}
			var parent string
			if level := i % depth; level > 0 {
				parent = lastAt[level-1].uid
			}
			err := tx.QueryRowContext(ctx, `SELECT id FROM dashboard WHERE org_id = ? AND uid = ?`, org, fo.uid).Scan(&fo.id)
			if err == sql.ErrNoRows {
				fo.id, err = seedFolder(ctx, tx, f, nextID, org, fo.uid, fo.ttl, parent, created)
				nextID = max(nextID, fo.id+1)
			}
			if err != nil {
				return fmt.Errorf("seeding folder: %w", err)
			}
			folders = append(folders, fo)
			lastAt[i%depth] = fo
			fr := base
			fr.id, fr.uid, fr.title, fr.folderUID, fr.isFolder = fo.id, fo.uid, fo.ttl, parent, true
			events = append(events, event{r: fr, at: migratedAt})
		}
		for i := 0; i < spec.DashboardsPerOrg; i++ {
			uid := seedUID(rng, 12)
			title := fmt.Sprintf("%s %s %05d", seedWords[rng.IntN(len(seedWords))], seedWords[rng.IntN(len(seedWords))], i+1)
			var fo folder
			if k := i % (len(folders) + 1); k > 0 {
				fo = folders[k-1]
			}
			tags := []string{seedTags[rng.IntN(len(seedTags))]}
			if rng.IntN(2) == 0 {
				tags = append(tags, seedTags[rng.IntN(len(seedTags))])
			}
			if tags[len(tags)-1] == tags[0] && len(tags) == 2 {
				tags = tags[:1]
			}
			id := nextID
			model := seedDashboard(rng, id, uid, title, tags)
			data, err := json.Marshal(model)
			if err != nil {
				return err
			}
			var dataArg any = string(data)
			if spec.BlobData {
				dataArg = data
			}
			var deleted string
			if i >= spec.DashboardsPerOrg-spec.DeletedPerOrg {
				deleted = ts
			}
			edited, createdAfter := StaleLegacyPlan(i)
			edited, createdAfter = edited && spec.StaleLegacy, createdAfter && spec.StaleLegacy
			dr := base
			dr.id, dr.uid, dr.title, dr.folderUID = id, uid, title, fo.uid
			if createdAfter {
				// Made after the migration: unified storage only.
				if ok, err := u.exists(ctx, dr); err != nil || ok {
					if err != nil {
						return err
					}
					continue // already seeded
				}
			} else {
				res, err := insertDashboard(ctx, cache, f, dashRow{id: id, version: 1, slug: slugify(title), title: title, data: dataArg, org: org,
					created: ts, by: 1, folderID: fo.id, folderUID: fo.uid, uid: uid, deleted: deleted, onlyIfAbsent: true})
				if err != nil {
					return fmt.Errorf("seeding dashboard %s: %w", uid, err)
				}
				if n, _ := res.RowsAffected(); n == 0 {
					continue // already seeded
				}
				if _, err := insVer.ExecContext(ctx, id, ts, dataArg); err != nil {
					return err
				}
				for _, t := range tags {
					if _, err := insTag.ExecContext(ctx, id, t); err != nil {
						return err
					}
				}
			}
			nextID++
			if !spec.UnifiedStorage || deleted != "" {
				continue // the migration leaves soft-deleted dashboards behind
			}
			if dr.spec, err = classicSpec(data); err != nil {
				return err
			}
			switch {
			case createdAfter:
				dr.created, dr.updated = migratedAt.Add(time.Duration(i+1)*time.Second), migratedAt.Add(time.Duration(i+1)*time.Second)
				events = append(events, event{r: dr, at: dr.updated})
			case edited:
				events = append(events, event{r: dr, at: migratedAt})
				er := dr
				er.version, er.updated = 2, migratedAt.Add(time.Hour+time.Duration(i+1)*time.Second)
				if er.spec, err = editedSpec(model); err != nil {
					return err
				}
				events = append(events, event{r: er, at: er.updated})
			default:
				events = append(events, event{r: dr, at: migratedAt})
			}
		}
		if spec.StaleLegacy {
			// Deleted after the migration: the legacy row stays.
			uid := "r" + seedUID(rng2, 11)
			title := fmt.Sprintf("Retired %s %s", seedWords[rng2.IntN(len(seedWords))], uid[1:5])
			id := nextID
			data := mustJSON(seedDashboard(rng2, id, uid, title, []string{"retired"}))
			res, err := insertDashboard(ctx, tx, f, dashRow{id: id, version: 1, slug: slugify(title), title: title, data: string(data), org: org,
				created: ts, by: 1, uid: uid, onlyIfAbsent: true})
			if err != nil {
				return fmt.Errorf("seeding dashboard %s: %w", uid, err)
			}
			if n, _ := res.RowsAffected(); n > 0 {
				nextID++
				if _, err := insVer.ExecContext(ctx, id, ts, string(data)); err != nil {
					return err
				}
				rr := base
				rr.id, rr.uid, rr.title = id, uid, title
				if rr.spec, err = classicSpec(data); err != nil {
					return err
				}
				events = append(events, event{r: rr, at: migratedAt}, event{r: rr, at: migratedAt.Add(2 * time.Hour), delete: true})
			}
		}
		for j := 0; j < spec.V2DashboardsPerOrg; j++ {
			vr := base
			vr.uid = "v2" + seedUID(rng2, 10)
			vr.title = fmt.Sprintf("%s %s v2 %05d", seedWords[rng2.IntN(len(seedWords))], seedWords[rng2.IntN(len(seedWords))], j+1)
			if k := j % (len(folders) + 1); k > 0 {
				vr.folderUID = folders[k-1].uid
			}
			vr.storedVersion = f.v2StoredVersion
			vr.spec = mustJSON(seedV2Spec(rng2, vr.title, []string{seedTags[rng2.IntN(len(seedTags))], "v2"}))
			vr.created = migratedAt.Add(30*time.Minute + time.Duration(j)*time.Second)
			vr.updated = vr.created
			if ok, err := u.exists(ctx, vr); err != nil || ok {
				if err != nil {
					return err
				}
				continue
			}
			vr.id = nextID
			nextID++
			events = append(events, event{r: vr, at: vr.created})
		}
		if spec.UnifiedStorage {
			for _, e := range events {
				if err := u.apply(ctx, tx, e.r, e.at, e.delete); err != nil {
					return fmt.Errorf("seeding unified storage: %w", err)
				}
			}
		}
		fuids := make([]string, len(folders))
		fids := make([]int64, len(folders))
		for k, fo := range folders {
			fuids[k], fids[k] = fo.uid, fo.id
		}
		if err := seedAlerting(ctx, tx, f, spec, org, fids, fuids, created); err != nil {
			return err
		}
	}
	if spec.UnifiedStorage {
		if err := u.w.flush(ctx); err != nil {
			return err
		}
		if err := writeMarker(ctx, tx, migratedAt); err != nil {
			return err
		}
	}
	for _, org := range spec.AdminNotMemberOf {
		if _, err := tx.ExecContext(ctx, `DELETE FROM org_user WHERE org_id = ? AND user_id = ?`, org, admin); err != nil {
			return err
		}
	}
	for token, org := range spec.Tokens {
		if err := (&Server{f: f}).ensureToken(ctx, tx, org, token); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// unifiedSeed writes seeded events into unified storage (w is nil
// without SeedSpec.UnifiedStorage).
type unifiedSeed struct{ w *resourceWriter }

func (u *unifiedSeed) exists(ctx context.Context, r record) (bool, error) {
	if u.w == nil {
		return false, nil
	}
	return u.w.exists(ctx, r)
}

// apply writes one event, unless an earlier Seed already gave the object a
// `resource` row (or, for a delete, a history).
func (u *unifiedSeed) apply(ctx context.Context, tx *sql.Tx, r record, at time.Time, del bool) error {
	group, res := r.group()
	ns := namespaceOf(r.org)
	if del {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM resource_history WHERE namespace = ? AND "group" = ? AND resource = ? AND name = ? AND action = ?`,
			ns, group, res, r.uid, actionDeleted).Scan(&n); err != nil || n > 0 {
			return err
		}
		_, err := u.w.put(ctx, at, group, res, ns, r.uid, r.folderUID, r.version, nil, actionDeleted)
		return err
	}
	if r.version == 1 {
		if ok, err := u.w.exists(ctx, r); err != nil || ok {
			return err
		}
	}
	_, err := u.w.putRecord(ctx, r, at)
	return err
}

// editedSpec is the spec of a dashboard edited after the migration
// (SeedSpec.StaleLegacy): another description and first panel title.
func editedSpec(model map[string]any) (json.RawMessage, error) {
	m := make(map[string]any, len(model))
	for k, v := range model {
		m[k] = v
	}
	m["description"] = "edited after the migration to unified storage"
	if panels, _ := m["panels"].([]any); len(panels) > 0 {
		p0 := map[string]any{}
		for k, v := range panels[0].(map[string]any) {
			p0[k] = v
		}
		p0["title"] = fmt.Sprint(p0["title"], " (edited)")
		panels = append([]any{p0}, panels[1:]...)
		m["panels"] = panels
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return classicSpec(b)
}

// seedFolder writes a folder as Server.insertFolder does, for layout f.
// Ids of dashboards that exist only in unified storage are not in the
// dashboard table: minID keeps clear of them.
func seedFolder(ctx context.Context, tx *sql.Tx, f features, minID, org int64, uid, title, parentUID string, now time.Time) (int64, error) {
	s := &Server{f: f}
	return s.insertFolderMinID(ctx, tx, minID, org, uid, title, parentUID, 1, now)
}

func seedUID(rng *rand.Rand, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = alnum[rng.IntN(len(alnum))]
	}
	return string(b)
}

// seedDashboard builds a plausible dashboard model: several panels with
// queries, thresholds and floats, so hashing has realistic work to do.
func seedDashboard(rng *rand.Rand, id int64, uid, title string, tags []string) map[string]any {
	panels := make([]any, 0, 8)
	n := 3 + rng.IntN(6)
	for p := 0; p < n; p++ {
		metric := seedWords[rng.IntN(len(seedWords))]
		panels = append(panels, map[string]any{
			"id":         p + 1,
			"type":       []string{"timeseries", "stat", "gauge", "table", "barchart"}[rng.IntN(5)],
			"title":      fmt.Sprintf("%s p%d", metric, p+1),
			"gridPos":    map[string]any{"h": 8, "w": 12, "x": (p % 2) * 12, "y": (p / 2) * 8},
			"datasource": map[string]any{"type": "prometheus", "uid": "prom-main"},
			"targets": []any{map[string]any{
				"refId": "A",
				"expr":  fmt.Sprintf(`sum(rate(http_requests_total{job="%s",code=~"5.."}[5m])) / sum(rate(http_requests_total{job="%s"}[5m]))`, metric, metric),
			}},
			"fieldConfig": map[string]any{
				"defaults": map[string]any{
					"unit":     "percentunit",
					"decimals": rng.IntN(4),
					"thresholds": map[string]any{"mode": "absolute", "steps": []any{
						map[string]any{"color": "green", "value": nil},
						map[string]any{"color": "red", "value": float64(rng.IntN(1000)) / 8},
					}},
				},
				"overrides": []any{},
			},
			"options": map[string]any{"legend": map[string]any{"displayMode": "list", "placement": "bottom", "showLegend": true}, "tooltip": map[string]any{"mode": "single"}},
		})
	}
	return map[string]any{
		"id": id, "uid": uid, "title": title, "version": 1, "tags": tags,
		"schemaVersion": 39, "editable": true, "graphTooltip": 0, "timezone": "browser",
		"time":                 map[string]any{"from": "now-6h", "to": "now"},
		"refresh":              "30s",
		"annotations":          map[string]any{"list": []any{map[string]any{"builtIn": 1, "enable": true, "name": "Annotations & Alerts", "type": "dashboard"}}},
		"templating":           map[string]any{"list": []any{map[string]any{"name": "cluster", "type": "query", "query": "label_values(up, cluster)", "refresh": 1}}},
		"panels":               panels,
		"fiscalYearStartMonth": 0,
		"weekStart":            "",
		"description":          fmt.Sprintf("seeded \u00e9\u00e8 \"quoted\" <tag> & %g", rng.Float64()*1e-3),
	}
}
