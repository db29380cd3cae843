package inventory

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/rebind-dev/rebind/pkg/grafana"
)

// Alert rules and library panels live in grafana.db next to the dashboards
// (tables alert_rule and library_element) and come back, or not, with the
// same volume: a restore that lost one of them must not pass. Each is
// identified by uid and compared by a hash of its content in canonical
// form, computed alike from the API and from the table
// (docs/grafana-conformance.md §§7, 9).

// hashItem hashes the canonical JSON of v.
func hashItem(v map[string]any) (string, error) {
	b, err := CanonicalJSON(v)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// decodeJSON decodes with numbers kept as written, as the dashboard hash does.
func decodeJSON(raw []byte) (any, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

// alertRuleHash covers what a rule does: its title, group, condition, the
// queries and expressions it evaluates (data), labels and annotations.
// Timing and state settings (for, noDataState...) are stored in forms the
// API rewrites (a duration string against nanoseconds) and are left out.
func alertRuleHash(title, group, condition string, data []byte, labels, annotations map[string]string) (string, error) {
	d, err := decodeJSON(data)
	if err != nil {
		return "", fmt.Errorf("alert rule data: %w", err)
	}
	return hashItem(map[string]any{"title": title, "ruleGroup": group, "condition": condition, "data": d,
		"labels": stringMap(labels), "annotations": stringMap(annotations)})
}

func stringMap(m map[string]string) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

// libraryPanelHash covers a panel's name and model.
func libraryPanelHash(name string, model []byte) (string, error) {
	m, err := decodeJSON(model)
	if err != nil {
		return "", fmt.Errorf("library panel model: %w", err)
	}
	return hashItem(map[string]any{"name": name, "model": m})
}

// itemsFromGrafana reads an org's alert rules and library panels.
func itemsFromGrafana(ctx context.Context, c *grafana.Client, org *Org) error {
	rules, err := c.AlertRules(ctx)
	if err != nil {
		return fmt.Errorf("listing alert rules: %w", err)
	}
	org.AlertRules = []Item{}
	for _, r := range rules {
		sum, err := alertRuleHash(r.Title, r.RuleGroup, r.Condition, r.Data, r.Labels, r.Annotations)
		if err != nil {
			return fmt.Errorf("alert rule %s: %w", r.UID, err)
		}
		org.AlertRules = append(org.AlertRules, Item{UID: r.UID, Title: r.Title, FolderUID: r.FolderUID, SHA256: sum})
	}
	panels, err := c.LibraryPanels(ctx)
	if err != nil {
		return fmt.Errorf("listing library panels: %w", err)
	}
	org.LibraryPanels = []Item{}
	for _, p := range panels {
		sum, err := libraryPanelHash(p.Name, p.Model)
		if err != nil {
			return fmt.Errorf("library panel %s: %w", p.UID, err)
		}
		org.LibraryPanels = append(org.LibraryPanels, Item{UID: p.UID, Title: p.Name, FolderUID: p.FolderUID, SHA256: sum})
	}
	return nil
}

// itemsFromSQLite reads every org's alert rules and library panels; a
// database without those tables (Grafana before unified alerting) has none.
func itemsFromSQLite(ctx context.Context, db *sql.DB, orgOf func(int64) *Org) error {
	if cols, err := tableColumns(ctx, db, "alert_rule"); err != nil {
		return err
	} else if cols["uid"] {
		rows, err := db.QueryContext(ctx, `SELECT org_id, uid, title, COALESCE(namespace_uid, ''), COALESCE(rule_group, ''), COALESCE(condition, ''), data,
			COALESCE(labels, ''), COALESCE(annotations, '') FROM alert_rule`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				org                             int64
				uid, title, folder, group, cond string
				data                            []byte
				labelsJSON, annotationsJSON     string
				labels, annotations             map[string]string
			)
			if err := rows.Scan(&org, &uid, &title, &folder, &group, &cond, &data, &labelsJSON, &annotationsJSON); err != nil {
				return err
			}
			// Empty or "null" columns mean no labels, as the API shows it.
			_ = json.Unmarshal([]byte(labelsJSON), &labels)
			_ = json.Unmarshal([]byte(annotationsJSON), &annotations)
			sum, err := alertRuleHash(title, group, cond, data, labels, annotations)
			if err != nil {
				return fmt.Errorf("alert rule %s (org %d): %w", uid, org, err)
			}
			o := orgOf(org)
			o.AlertRules = append(o.AlertRules, Item{UID: uid, Title: title, FolderUID: folder, SHA256: sum})
		}
		if err := rows.Err(); err != nil {
			return err
		}
	}
	cols, err := tableColumns(ctx, db, "library_element")
	if err != nil || !cols["uid"] {
		return err
	}
	// folder_uid from 11.x; older rows name the folder by its dashboard id.
	folder := `COALESCE(f.uid, '')`
	if cols["folder_uid"] {
		folder = `COALESCE(NULLIF(le.folder_uid, ''), f.uid, '')`
	}
	rows, err := db.QueryContext(ctx, `SELECT le.org_id, le.uid, le.name, `+folder+`, le.model FROM library_element le
		LEFT JOIN dashboard f ON f.id = le.folder_id AND le.folder_id > 0 AND f.org_id = le.org_id AND f.is_folder = 1 WHERE le.kind = 1`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			org                 int64
			uid, name, folderID string
			model               []byte
		)
		if err := rows.Scan(&org, &uid, &name, &folderID, &model); err != nil {
			return err
		}
		sum, err := libraryPanelHash(name, model)
		if err != nil {
			return fmt.Errorf("library panel %s (org %d): %w", uid, org, err)
		}
		o := orgOf(org)
		o.LibraryPanels = append(o.LibraryPanels, Item{UID: uid, Title: name, FolderUID: folderID, SHA256: sum})
	}
	return rows.Err()
}
