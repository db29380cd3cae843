package inventory

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers driver "sqlite"
)

// FromSQLite takes an inventory from a grafana.db file without Grafana running.
func FromSQLite(path string) (*Inventory, error) {
	return FromSQLiteContext(context.Background(), path)
}

// FromSQLiteContext is FromSQLite with a context. The file is opened
// read-only; it is never written, not even its journal.
func FromSQLiteContext(ctx context.Context, path string) (*Inventory, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("grafana database: %w", err)
	}
	if st.IsDir() {
		return nil, fmt.Errorf("grafana database %s is a directory; pass the grafana.db file inside it", abs)
	}
	inv, err := readSQLite(ctx, abs, false)
	if err != nil && immutableSafe(abs) {
		// mode=ro still needs a writable directory for a WAL database's -shm
		// file; a snapshot or read-only mount has none. With no WAL content
		// outstanding, treating the file as immutable reads the same data.
		if inv2, err2 := readSQLite(ctx, abs, true); err2 == nil {
			return inv2, nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", abs, err)
	}
	return inv, nil
}

// immutableSafe: no write-ahead log or hot journal that immutable mode would ignore.
func immutableSafe(abs string) bool {
	for _, suffix := range []string{"-wal", "-journal"} {
		if st, err := os.Stat(abs + suffix); err == nil && st.Size() > 0 {
			return false
		}
	}
	return true
}

func readSQLite(ctx context.Context, abs string, immutable bool) (*Inventory, error) {
	dsn := "file:" + (&url.URL{Path: abs}).EscapedPath() + "?mode=ro"
	if immutable {
		dsn += "&immutable=1"
	}
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)

	cols, err := tableColumns(ctx, db, "dashboard")
	if err != nil {
		return nil, err
	}
	if len(cols) == 0 {
		return nil, errors.New("no dashboard table: this is not a Grafana database")
	}
	for _, c := range []string{"org_id", "uid", "title", "data", "is_folder", "version"} {
		if !cols[c] {
			return nil, fmt.Errorf("dashboard table lacks column %q: unsupported Grafana schema", c)
		}
	}
	inv := &Inventory{FormatVersion: FormatVersion, Source: "sqlite:" + abs, TakenAt: time.Now().UTC()}
	orgs := map[int64]*Org{}
	orgOf := func(id int64) *Org {
		if o, ok := orgs[id]; ok {
			return o
		}
		o := &Org{ID: id}
		orgs[id] = o
		return o
	}

	if orgCols, err := tableColumns(ctx, db, "org"); err != nil {
		return nil, err
	} else if orgCols["id"] && orgCols["name"] {
		rows, err := db.QueryContext(ctx, `SELECT id, name FROM org`)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var id int64
			var name string
			if err := rows.Scan(&id, &name); err != nil {
				rows.Close()
				return nil, err
			}
			orgOf(id).Name = name
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}

	// Grafana 10+ keeps nested-folder parents in the folder table.
	parents := map[[2]string]string{}
	if fc, err := tableColumns(ctx, db, "folder"); err != nil {
		return nil, err
	} else if fc["uid"] && fc["org_id"] && fc["parent_uid"] {
		rows, err := db.QueryContext(ctx, `SELECT org_id, uid, COALESCE(parent_uid, '') FROM folder`)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var org int64
			var uid, parent string
			if err := rows.Scan(&org, &uid, &parent); err != nil {
				rows.Close()
				return nil, err
			}
			parents[[2]string{fmt.Sprint(org), uid}] = parent
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}

	// Grafana 10+ writes folder_uid; older rows only have folder_id.
	var parts []string
	join := ``
	if cols["folder_uid"] {
		parts = append(parts, `NULLIF(d.folder_uid, '')`)
	}
	if cols["folder_id"] {
		parts = append(parts, `f.uid`)
		join = ` LEFT JOIN dashboard f ON f.id = d.folder_id AND d.folder_id > 0 AND f.org_id = d.org_id AND f.is_folder = 1`
	}
	folderExpr := `''`
	if len(parts) > 0 {
		folderExpr = `COALESCE(` + strings.Join(parts, ", ") + `, '')`
	}
	where := ``
	if cols["deleted"] {
		// Grafana 11 soft-deletes by stamping a time; such rows are in the trash, not on view.
		where = ` WHERE d.deleted IS NULL OR d.deleted = '' OR d.deleted = 0`
	}
	q := `SELECT d.org_id, COALESCE(d.uid, ''), d.title, d.version, d.is_folder, ` + folderExpr + `,
		CASE WHEN d.is_folder = 1 THEN NULL ELSE d.data END
		FROM dashboard d` + join + where
	rows, err := db.QueryContext(ctx, q)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			orgID, version int64
			isFolder       bool
			uid, title     string
			folder         string
			data           sql.RawBytes
		)
		if err := rows.Scan(&orgID, &uid, &title, &version, &isFolder, &folder, &data); err != nil {
			return nil, err
		}
		o := orgOf(orgID)
		if isFolder {
			if p, ok := parents[[2]string{fmt.Sprint(orgID), uid}]; ok {
				folder = p
			}
			o.Folders = append(o.Folders, Folder{UID: uid, Title: title, ParentUID: folder})
			continue
		}
		// RawBytes is reused by the next row: hash now, keep nothing.
		sum, err := HashDashboard(data, uid, title)
		if err != nil {
			return nil, fmt.Errorf("dashboard %s (org %d): %w", uid, orgID, err)
		}
		o.Dashboards = append(o.Dashboards, Dashboard{UID: uid, Title: title, FolderUID: folder, Version: version, SHA256: sum})
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for _, o := range orgs {
		inv.Orgs = append(inv.Orgs, *o)
	}
	inv.normalize()
	return inv, nil
}

func tableColumns(ctx context.Context, db *sql.DB, table string) (map[string]bool, error) {
	rows, err := db.QueryContext(ctx, `SELECT name FROM pragma_table_info(?)`, table)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols := map[string]bool{}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		cols[strings.ToLower(n)] = true
	}
	return cols, rows.Err()
}
