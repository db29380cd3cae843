package grafanastandin

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
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
}

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
	db, err := openDB(dataDir)
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
	insDash, err := tx.PrepareContext(ctx, `INSERT OR IGNORE INTO dashboard (id, version, slug, title, data, org_id, created, updated, updated_by, created_by, gnet_id, folder_id, is_folder, has_acl, uid, is_public, folder_uid)
		VALUES (?, 1, ?, ?, ?, ?, ?, ?, 1, 1, 0, ?, 0, 0, ?, 0, NULLIF(?, ''))`)
	if err != nil {
		return err
	}
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
	// A fixed clock keeps seeded files identical between runs.
	created := time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)
	ts := created.Format(timeLayout)

	for org := int64(1); org <= int64(spec.Orgs); org++ {
		if err := ensureOrg(ctx, tx, org, orgName(org)); err != nil {
			return err
		}
		rng := rand.New(rand.NewPCG(uint64(spec.Seed), uint64(org)))
		type folder struct {
			id       int64
			uid, ttl string
		}
		folders := make([]folder, 0, spec.FoldersPerOrg)
		for i := 0; i < spec.FoldersPerOrg; i++ {
			f := folder{uid: "f" + seedUID(rng, 9), ttl: fmt.Sprintf("%s %02d", seedWords[rng.IntN(len(seedWords))], i+1)}
			err := tx.QueryRowContext(ctx, `SELECT id FROM dashboard WHERE org_id = ? AND uid = ?`, org, f.uid).Scan(&f.id)
			if err == sql.ErrNoRows {
				f.id, err = insertFolder(ctx, tx, org, f.uid, f.ttl, "", 0, 1, created)
				nextID = max(nextID, f.id+1)
			}
			if err != nil {
				return fmt.Errorf("seeding folder: %w", err)
			}
			folders = append(folders, f)
		}
		for i := 0; i < spec.DashboardsPerOrg; i++ {
			uid := seedUID(rng, 12)
			title := fmt.Sprintf("%s %s %05d", seedWords[rng.IntN(len(seedWords))], seedWords[rng.IntN(len(seedWords))], i+1)
			var f folder
			if k := i % (len(folders) + 1); k > 0 {
				f = folders[k-1]
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
			res, err := insDash.ExecContext(ctx, id, slugify(title), title, dataArg, org, ts, ts, f.id, uid, f.uid)
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
	return tx.Commit()
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
