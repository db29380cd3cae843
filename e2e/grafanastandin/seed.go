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
	var nextID int64
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(id),0)+1 FROM dashboard`).Scan(&nextID); err != nil {
		return err
	}
	admin, err := adminUserID(ctx, tx)
	if err != nil {
		return err
	}
	// A fixed clock keeps seeded files identical between runs.
	created := time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)
	ts := created.Format(timeLayout)

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
				fo.id, err = seedFolder(ctx, tx, f, org, fo.uid, fo.ttl, parent, created)
				nextID = max(nextID, fo.id+1)
			}
			if err != nil {
				return fmt.Errorf("seeding folder: %w", err)
			}
			folders = append(folders, fo)
			lastAt[i%depth] = fo
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
			data, err := json.Marshal(seedDashboard(rng, id, uid, title, tags))
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
			res, err := insertDashboard(ctx, tx, f, dashRow{id: id, version: 1, slug: slugify(title), title: title, data: dataArg, org: org,
				created: ts, by: 1, folderID: fo.id, folderUID: fo.uid, uid: uid, deleted: deleted, onlyIfAbsent: true})
			if err != nil {
				return fmt.Errorf("seeding dashboard %s: %w", uid, err)
			}
			if n, _ := res.RowsAffected(); n == 0 {
				continue // already seeded
			}
			nextID++
			if _, err := insVer.ExecContext(ctx, id, ts, dataArg); err != nil {
				return err
			}
			for _, t := range tags {
				if _, err := insTag.ExecContext(ctx, id, t); err != nil {
					return err
				}
			}
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

// seedFolder writes a folder as Server.insertFolder does, for layout f.
func seedFolder(ctx context.Context, tx *sql.Tx, f features, org int64, uid, title, parentUID string, now time.Time) (int64, error) {
	s := &Server{f: f}
	return s.insertFolder(ctx, tx, org, uid, title, parentUID, 1, now)
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
