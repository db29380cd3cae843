package inventory

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers driver "sqlite"

	"github.com/rebind-dev/rebind/pkg/grafana"
)

// FromSQLite takes an inventory from a grafana.db file without Grafana running.
func FromSQLite(path string) (*Inventory, error) {
	return FromSQLiteContext(context.Background(), path)
}

// Storage says which copy of the dashboards and folders an offline read
// takes. Grafana 12+ can keep them in unified storage (table resource)
// while the legacy dashboard table goes stale (docs/grafana-conformance.md
// §7).
type Storage string

const (
	// StorageAuto reads the copy Grafana serves: resource once the
	// unified-storage migration is logged, else the legacy tables; when no
	// migration is logged but resource holds a different copy, it refuses,
	// since only Grafana's configuration ([unified_storage]) says which one
	// it serves.
	StorageAuto    Storage = ""
	StorageLegacy  Storage = "legacy"
	StorageUnified Storage = "unified"
)

// FromSQLiteContext is FromSQLite with a context. The file is opened
// read-only; it is never written, not even its journal.
func FromSQLiteContext(ctx context.Context, path string) (*Inventory, error) {
	return FromSQLiteStorage(ctx, path, StorageAuto)
}

// FromSQLiteStorage reads the given copy (see Storage).
func FromSQLiteStorage(ctx context.Context, path string, storage Storage) (*Inventory, error) {
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
	inv, err := readSQLite(ctx, abs, false, storage)
	var ambiguous *AmbiguousStorageError
	if err != nil && !errors.As(err, &ambiguous) && immutableSafe(abs) {
		// mode=ro still needs a writable directory for a WAL database's -shm
		// file; a snapshot or read-only mount has none. With no WAL content
		// outstanding, treating the file as immutable reads the same data.
		if inv2, err2 := readSQLite(ctx, abs, true, storage); err2 == nil {
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

func readSQLite(ctx context.Context, abs string, immutable bool, storage Storage) (*Inventory, error) {
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
	if err := chooseStorage(ctx, db, inv, orgs, orgOf, storage); err != nil {
		return nil, err
	}
	if err := itemsFromSQLite(ctx, db, orgOf); err != nil {
		return nil, err
	}
	for _, o := range orgs {
		if o.AlertRules == nil {
			o.AlertRules = []Item{}
		}
		if o.LibraryPanels == nil {
			o.LibraryPanels = []Item{}
		}
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

// migrationMarker is the unifiedstorage_migration_log row after which
// Grafana serves dashboards and folders from unified storage only, leaving
// the legacy tables stale (docs/grafana-conformance.md §7, "When legacy
// dashboard is stale": pkg/storage/unified/migrations @ v12.4.0).
const migrationMarker = "folders and dashboards migration"

// AmbiguousStorageError: grafana.db holds two different copies and nothing
// in the file says which one Grafana serves.
type AmbiguousStorageError struct{ Differ int }

func (e *AmbiguousStorageError) Error() string {
	return fmt.Sprintf("grafana.db holds dashboards both in the legacy tables and in unified storage (table resource), %d of them different, and no unified-storage migration is logged: which copy Grafana serves depends on its [unified_storage] configuration, which the file does not hold. Read it through the API instead, or choose the copy with --db-storage legacy|unified", e.Differ)
}

// chooseStorage replaces the legacy dashboards and folders read into orgs
// by unified storage's when that is the copy Grafana serves, and notes
// what the other copy says.
func chooseStorage(ctx context.Context, db *sql.DB, inv *Inventory, orgs map[int64]*Org, orgOf func(int64) *Org, storage Storage) error {
	if storage == StorageLegacy {
		return nil
	}
	unified, err := readUnified(ctx, db)
	if err != nil {
		return err
	}
	if unified == nil {
		if storage == StorageUnified {
			return errors.New("grafana.db has no unified storage (table resource): it is a legacy database")
		}
		return nil
	}
	marked := false
	if cols, err := tableColumns(ctx, db, "unifiedstorage_migration_log"); err != nil {
		return err
	} else if cols["migration_id"] {
		var n int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM unifiedstorage_migration_log WHERE migration_id = ?`, migrationMarker).Scan(&n); err != nil {
			return err
		}
		marked = n > 0
	}
	differ := diffCopies(orgs, unified)
	if !marked && storage == StorageAuto {
		if differ == 0 {
			return nil // the same either way
		}
		return &AmbiguousStorageError{Differ: differ}
	}
	inv.API = "resource"
	if differ > 0 {
		inv.Notes = append(inv.Notes, fmt.Sprintf("read unified storage (table resource), the copy Grafana serves after its unified-storage migration; the legacy dashboard table differs in %d dashboard(s) or folder(s) and is stale", differ))
	}
	for id, o := range orgs {
		if u, ok := unified[id]; ok {
			o.Folders, o.Dashboards = u.Folders, u.Dashboards
		} else {
			o.Folders, o.Dashboards = nil, nil
		}
	}
	for id, u := range unified {
		o := orgOf(id)
		o.Folders, o.Dashboards = u.Folders, u.Dashboards
	}
	return nil
}

// readUnified reads dashboards and folders from table resource, each
// value the whole object as /apis serves it; nil when there is none.
func readUnified(ctx context.Context, db *sql.DB) (map[int64]*Org, error) {
	cols, err := tableColumns(ctx, db, "resource")
	if err != nil || !cols["value"] {
		return nil, err
	}
	rows, err := db.QueryContext(ctx, `SELECT namespace, "group", resource, name, value FROM resource
		WHERE ("group" = ? AND resource = ?) OR ("group" = ? AND resource = ?)`,
		grafana.DashboardGroup, grafana.DashboardResource, grafana.FolderGroup, grafana.FolderResource)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out map[int64]*Org
	for rows.Next() {
		var ns, group, resource, name string
		var value []byte
		if err := rows.Scan(&ns, &group, &resource, &name, &value); err != nil {
			return nil, err
		}
		org, ok := grafana.OrgOfNamespace(ns)
		if !ok {
			return nil, fmt.Errorf("unified storage holds %s %s in namespace %q, which names no org of a self-hosted Grafana", resource, name, ns)
		}
		var obj grafana.Object
		if err := json.Unmarshal(value, &obj); err != nil {
			return nil, fmt.Errorf("unified storage %s %s: %w", resource, name, err)
		}
		if obj.Metadata.Name == "" {
			obj.Metadata.Name = name
		}
		if out == nil {
			out = map[int64]*Org{}
		}
		o := out[org]
		if o == nil {
			o = &Org{ID: org}
			out[org] = o
		}
		if resource == grafana.FolderResource {
			var spec struct {
				Title string `json:"title"`
			}
			if err := json.Unmarshal(obj.Spec, &spec); err != nil {
				return nil, fmt.Errorf("unified storage folder %s: %w", name, err)
			}
			o.Folders = append(o.Folders, Folder{UID: name, Title: spec.Title, ParentUID: obj.Metadata.Annotations[grafana.AnnFolder]})
			continue
		}
		d, err := dashboardFromObject(&obj)
		if err != nil {
			return nil, err
		}
		o.Dashboards = append(o.Dashboards, d)
	}
	return out, rows.Err()
}

// diffCopies counts dashboards and folders that differ between the legacy
// and the unified copy.
func diffCopies(legacy, unified map[int64]*Org) int {
	n := 0
	ids := map[int64]bool{}
	for id := range legacy {
		ids[id] = true
	}
	for id := range unified {
		ids[id] = true
	}
	for id := range ids {
		l, u := legacy[id], unified[id]
		if l == nil {
			l = &Org{}
		}
		if u == nil {
			u = &Org{}
		}
		var r OrgResult
		compareOrg(&r, l, u)
		n += len(r.Missing) + len(r.Extra) + len(r.Changed) + len(r.Moved) + len(r.MissingFolders) + len(r.ExtraFolders) + len(r.RenamedFolders) + len(r.MovedFolders)
	}
	return n
}
