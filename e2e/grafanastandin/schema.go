package grafanastandin

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// baseSchema is the 9.5 layout of the tables the stand-in uses: column names
// and types as in Grafana's migrations (conformance §7). Later versions add
// columns through migrations, as Grafana does on start-up, so a database
// written by an older version is upgraded in place when a newer one opens it.
var baseSchema = []string{
	`CREATE TABLE IF NOT EXISTS migration_log (
		id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
		migration_id TEXT NOT NULL,
		sql TEXT NOT NULL,
		success INTEGER NOT NULL,
		error TEXT NOT NULL,
		timestamp DATETIME NOT NULL)`,
	// conformance §7 "dashboard": 9.5.2 → 12.4.0 columns; folder_id is the
	// legacy id of the parent folder row (0 = General).
	`CREATE TABLE IF NOT EXISTS dashboard (
		id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
		version INTEGER NOT NULL,
		slug TEXT NOT NULL,
		title TEXT NOT NULL,
		data TEXT NOT NULL,
		org_id INTEGER NOT NULL,
		created DATETIME NOT NULL,
		updated DATETIME NOT NULL,
		updated_by INTEGER NULL,
		created_by INTEGER NULL,
		gnet_id INTEGER NULL,
		plugin_id TEXT NULL,
		folder_id INTEGER NOT NULL DEFAULT 0,
		is_folder INTEGER NOT NULL DEFAULT 0,
		has_acl INTEGER NOT NULL DEFAULT 0,
		uid TEXT NULL,
		is_public INTEGER NOT NULL DEFAULT 0)`,
	`CREATE UNIQUE INDEX IF NOT EXISTS UQE_dashboard_org_id_uid ON dashboard (org_id, uid)`,
	`CREATE INDEX IF NOT EXISTS IDX_dashboard_org_id ON dashboard (org_id)`,
	// conformance §7 "dashboard_version".
	`CREATE TABLE IF NOT EXISTS dashboard_version (
		id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
		dashboard_id INTEGER NOT NULL,
		parent_version INTEGER NOT NULL,
		restored_from INTEGER NOT NULL,
		version INTEGER NOT NULL,
		created DATETIME NOT NULL,
		created_by INTEGER NOT NULL,
		message TEXT NOT NULL,
		data TEXT NOT NULL)`,
	`CREATE INDEX IF NOT EXISTS IDX_dashboard_version_dashboard_id ON dashboard_version (dashboard_id)`,
	`CREATE TABLE IF NOT EXISTS dashboard_tag (
		id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
		dashboard_id INTEGER NOT NULL,
		term TEXT NOT NULL)`,
	`CREATE INDEX IF NOT EXISTS IDX_dashboard_tag_dashboard_id ON dashboard_tag (dashboard_id)`,
	// conformance §3 "SQL table folder": created in 9.3, written only with
	// nested folders on.
	`CREATE TABLE IF NOT EXISTS folder (
		id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
		uid TEXT NOT NULL,
		org_id INTEGER NOT NULL,
		title TEXT NOT NULL,
		description TEXT NULL,
		parent_uid TEXT NULL,
		created DATETIME NOT NULL,
		updated DATETIME NOT NULL)`,
	`CREATE UNIQUE INDEX IF NOT EXISTS UQE_folder_uid_org_id ON folder (uid, org_id)`,
	// conformance §7 "org", "org_user".
	`CREATE TABLE IF NOT EXISTS org (
		id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
		version INTEGER NOT NULL,
		name TEXT NOT NULL,
		address1 TEXT NULL, address2 TEXT NULL, city TEXT NULL, state TEXT NULL,
		zip_code TEXT NULL, country TEXT NULL, billing_email TEXT NULL,
		created DATETIME NOT NULL,
		updated DATETIME NOT NULL)`,
	`CREATE UNIQUE INDEX IF NOT EXISTS UQE_org_name ON org (name)`,
	`CREATE TABLE IF NOT EXISTS org_user (
		id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
		org_id INTEGER NOT NULL,
		user_id INTEGER NOT NULL,
		role TEXT NOT NULL,
		created DATETIME NOT NULL,
		updated DATETIME NOT NULL)`,
	`CREATE INDEX IF NOT EXISTS IDX_org_user_org_id ON org_user (org_id)`,
	`CREATE UNIQUE INDEX IF NOT EXISTS UQE_org_user_org_id_user_id ON org_user (org_id, user_id)`,
	// conformance §7 "user": is_admin = server admin, is_service_account,
	// org_id = last used org. uid is added for 10.4+ below.
	`CREATE TABLE IF NOT EXISTS user (
		id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
		version INTEGER NOT NULL,
		login TEXT NOT NULL,
		email TEXT NOT NULL,
		name TEXT NULL,
		password TEXT NULL,
		salt TEXT NULL,
		rands TEXT NULL,
		company TEXT NULL,
		org_id INTEGER NOT NULL,
		is_admin INTEGER NOT NULL,
		email_verified INTEGER NULL,
		theme TEXT NULL,
		created DATETIME NOT NULL,
		updated DATETIME NOT NULL,
		help_flags1 INTEGER NOT NULL DEFAULT 0,
		last_seen_at DATETIME NULL,
		is_disabled INTEGER NOT NULL DEFAULT 0,
		is_service_account INTEGER DEFAULT 0)`,
	`CREATE UNIQUE INDEX IF NOT EXISTS UQE_user_login ON user (login)`,
	// Service-account tokens are rows of api_key (service_account_id set),
	// holding a hash of the token, not the token (Grafana's column names;
	// its hashing scheme is not modelled: the stand-in stores sha256).
	// They live in grafana.db, so a restored volume brings its tokens.
	`CREATE TABLE IF NOT EXISTS api_key (
		id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
		org_id INTEGER NOT NULL,
		name TEXT NOT NULL,
		key TEXT NOT NULL,
		role TEXT NOT NULL,
		created DATETIME NOT NULL,
		updated DATETIME NOT NULL,
		expires INTEGER NULL,
		service_account_id INTEGER NULL,
		last_used_at DATETIME NULL,
		is_revoked INTEGER NULL DEFAULT 0)`,
	`CREATE UNIQUE INDEX IF NOT EXISTS UQE_api_key_key ON api_key (key)`,
	// conformance §7 "alert_rule" (9.5.2 columns; sqlstore/migrations/ualert/
	// tables.go @ v9.5.2): namespace_uid is the folder uid, "for" is in
	// nanoseconds, data/annotations/labels hold JSON.
	`CREATE TABLE IF NOT EXISTS alert_rule (
		id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
		org_id INTEGER NOT NULL,
		title TEXT NOT NULL,
		condition TEXT NOT NULL,
		data TEXT NOT NULL,
		updated DATETIME NOT NULL,
		interval_seconds INTEGER NOT NULL DEFAULT 60,
		version INTEGER NOT NULL DEFAULT 0,
		uid TEXT NOT NULL DEFAULT 0,
		namespace_uid TEXT NOT NULL,
		rule_group TEXT NOT NULL,
		no_data_state TEXT NOT NULL DEFAULT 'NoData',
		exec_err_state TEXT NOT NULL DEFAULT 'Alerting',
		"for" INTEGER NOT NULL DEFAULT 0,
		annotations TEXT NULL,
		labels TEXT NULL,
		dashboard_uid TEXT NULL,
		panel_id INTEGER NULL,
		rule_group_idx INTEGER NOT NULL DEFAULT 1,
		is_paused INTEGER NOT NULL DEFAULT 0)`,
	`CREATE UNIQUE INDEX IF NOT EXISTS UQE_alert_rule_org_id_uid ON alert_rule (org_id, uid)`,
	`CREATE INDEX IF NOT EXISTS IDX_alert_rule_org_id_namespace_uid_rule_group ON alert_rule (org_id, namespace_uid, rule_group)`,
	// conformance §7 "library_element" (sqlstore/migrations/libraryelements.go
	// @ v9.5.2); folder_uid is added for 11.6+ below. kind 1 = panel.
	`CREATE TABLE IF NOT EXISTS library_element (
		id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
		org_id INTEGER NOT NULL,
		folder_id INTEGER NOT NULL,
		uid TEXT NOT NULL,
		name TEXT NOT NULL,
		kind INTEGER NOT NULL,
		type TEXT NOT NULL,
		description TEXT NOT NULL,
		model TEXT NOT NULL,
		created DATETIME NOT NULL,
		created_by INTEGER NOT NULL,
		updated DATETIME NOT NULL,
		updated_by INTEGER NOT NULL,
		version INTEGER NOT NULL)`,
	`CREATE UNIQUE INDEX IF NOT EXISTS UQE_library_element_org_id_uid ON library_element (org_id, uid)`,
	`CREATE TABLE IF NOT EXISTS library_element_connection (
		id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
		element_id INTEGER NOT NULL,
		kind INTEGER NOT NULL,
		connection_id INTEGER NOT NULL,
		created DATETIME NOT NULL,
		created_by INTEGER NOT NULL)`,
	// data_source (sqlstore/migrations/datasource_mig.go @ v9.5.2, v2 table
	// plus uid); only what GET /api/datasources lists is filled in.
	`CREATE TABLE IF NOT EXISTS data_source (
		id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
		org_id INTEGER NOT NULL,
		version INTEGER NOT NULL,
		type TEXT NOT NULL,
		name TEXT NOT NULL,
		access TEXT NOT NULL,
		url TEXT NOT NULL,
		password TEXT NULL,
		user TEXT NULL,
		database TEXT NULL,
		basic_auth INTEGER NOT NULL,
		basic_auth_user TEXT NULL,
		basic_auth_password TEXT NULL,
		is_default INTEGER NOT NULL,
		json_data TEXT NULL,
		created DATETIME NOT NULL,
		updated DATETIME NOT NULL,
		with_credentials INTEGER NOT NULL DEFAULT 0,
		secure_json_data TEXT NULL,
		read_only INTEGER NULL,
		uid TEXT NOT NULL DEFAULT 0)`,
	`CREATE UNIQUE INDEX IF NOT EXISTS UQE_data_source_org_id_name ON data_source (org_id, name)`,
	`CREATE UNIQUE INDEX IF NOT EXISTS UQE_data_source_org_id_uid ON data_source (org_id, uid)`,
}

// unifiedSchema is the unified-storage layout of 12.4.0 (conformance §7
// "Unified storage"; storage/unified/sql/db/migrations/resource_mig.go and
// migrator/snapshot/00-schema.sql @ v12.4.0), written by the version's own
// migrator into resource_migration_log. unifiedstorage_migration_log holds
// the data migrations (conformance §7 "When legacy dashboard is stale").
var unifiedSchema = []string{
	`CREATE TABLE IF NOT EXISTS resource_migration_log (
		id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
		migration_id TEXT NOT NULL,
		sql TEXT NOT NULL,
		success INTEGER NOT NULL,
		error TEXT NOT NULL,
		timestamp DATETIME NOT NULL)`,
	`CREATE TABLE IF NOT EXISTS resource (
		guid TEXT PRIMARY KEY NOT NULL,
		resource_version INTEGER NULL,
		"group" TEXT NOT NULL,
		resource TEXT NOT NULL,
		namespace TEXT NOT NULL,
		name TEXT NOT NULL,
		value TEXT NULL,
		action INTEGER NOT NULL,
		label_set TEXT NULL,
		previous_resource_version INTEGER NULL,
		folder TEXT NOT NULL DEFAULT '')`,
	`CREATE UNIQUE INDEX IF NOT EXISTS UQE_resource_namespace_group_resource_name ON resource (namespace, "group", resource, name)`,
	`CREATE INDEX IF NOT EXISTS IDX_resource_group_resource ON resource ("group", resource)`,
	`CREATE TABLE IF NOT EXISTS resource_history (
		guid TEXT PRIMARY KEY NOT NULL,
		resource_version INTEGER NULL,
		"group" TEXT NOT NULL,
		resource TEXT NOT NULL,
		namespace TEXT NOT NULL,
		name TEXT NOT NULL,
		value TEXT NULL,
		action INTEGER NOT NULL,
		label_set TEXT NULL,
		previous_resource_version INTEGER NULL,
		folder TEXT NOT NULL DEFAULT '',
		generation INTEGER NOT NULL DEFAULT 0,
		key_path TEXT NOT NULL DEFAULT '')`,
	`CREATE UNIQUE INDEX IF NOT EXISTS UQE_resource_history_namespace_group_name_version ON resource_history (namespace, "group", resource, name, resource_version)`,
	`CREATE INDEX IF NOT EXISTS IDX_resource_history_resource_version ON resource_history (resource_version)`,
	`CREATE TABLE IF NOT EXISTS resource_version (
		"group" TEXT NOT NULL,
		resource TEXT NOT NULL,
		resource_version INTEGER NOT NULL,
		PRIMARY KEY ("group", resource))`,
	`CREATE TABLE IF NOT EXISTS unifiedstorage_migration_log (
		id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
		migration_id TEXT NOT NULL,
		sql TEXT NOT NULL,
		success INTEGER NOT NULL,
		error TEXT NOT NULL,
		timestamp DATETIME NOT NULL)`,
}

// migration is one step applied when a version that needs it opens the
// database, recorded in migration_log like Grafana's own.
type migration struct {
	id   string
	need func(features) bool
	// addColumns are added when missing (a database written by the previous
	// stand-in may already have them).
	addColumns [][3]string // table, column, type
	stmts      []string
}

var migrations = []migration{
	{
		// conformance §7 "dashboard.folder_uid": column plus a data migration
		// (PR #76504, CL 10.2.3) filling it from folder_id.
		id:         "Add folder_uid for dashboard",
		need:       func(f features) bool { return f.folderUIDColumn },
		addColumns: [][3]string{{"dashboard", "folder_uid", "TEXT NULL"}},
		stmts: []string{
			`CREATE INDEX IF NOT EXISTS IDX_dashboard_org_id_folder_uid ON dashboard (org_id, folder_uid)`,
			`UPDATE dashboard SET folder_uid = (SELECT f.uid FROM dashboard f WHERE f.id = dashboard.folder_id AND f.org_id = dashboard.org_id AND f.is_folder = 1)
				WHERE folder_id > 0 AND (folder_uid IS NULL OR folder_uid = '')`,
		},
	},
	{
		// conformance §7 "user": uid absent 9.5.2, present 12.4.0.
		id:         "Add uid column to user",
		need:       func(f features) bool { return f.userUIDColumn },
		addColumns: [][3]string{{"user", "uid", "TEXT NULL"}},
	},
	{
		// conformance §7 "dashboard.deleted" (PR #83131, 11.0 inferred).
		id:         "Add deleted for dashboard",
		need:       func(f features) bool { return f.deletedColumn },
		addColumns: [][3]string{{"dashboard", "deleted", "DATETIME NULL"}},
	},
	{
		// conformance §3 "SQL table folder": with nesting on, every folder has
		// a folder row; the 12.4.0 tree has a "Sync dashboard and folder table"
		// migration (release that added it unconfirmed). Modelled as running
		// when a nested-folders version first opens the database.
		id:   "Sync dashboard and folder table",
		need: func(f features) bool { return f.nestedFolders },
		stmts: []string{
			`INSERT INTO folder (uid, org_id, title, description, parent_uid, created, updated)
				SELECT d.uid, d.org_id, d.title, '', NULLIF(d.folder_uid, ''), d.created, d.updated FROM dashboard d
				WHERE d.is_folder = 1 AND NOT EXISTS (SELECT 1 FROM folder f WHERE f.org_id = d.org_id AND f.uid = d.uid)`,
		},
	},
	{
		// conformance §7 "dashboard.api_version" and "user" (is_provisioned), 12.4.0.
		id:   "Add api_version and is_provisioned",
		need: func(f features) bool { return f.v12Columns },
		addColumns: [][3]string{
			{"dashboard", "api_version", "TEXT NULL"},
			{"dashboard_version", "api_version", "TEXT NULL"},
			{"user", "is_provisioned", "INTEGER NOT NULL DEFAULT 0"},
		},
	},
	{
		// conformance §7 "library_element": "add library_element folder uid"
		// plus "populate library_element folder_uid" (libraryelements.go
		// @ v12.4.0; PR #83819, 11.0 inferred).
		id:         "add library_element folder uid",
		need:       func(f features) bool { return f.libraryElementFolderUID },
		addColumns: [][3]string{{"library_element", "folder_uid", "TEXT NULL"}},
		stmts: []string{
			`UPDATE library_element SET folder_uid = (SELECT d.uid FROM dashboard d WHERE d.id = library_element.folder_id AND d.org_id = library_element.org_id AND d.is_folder = 1)
				WHERE folder_id > 0 AND folder_uid IS NULL`,
		},
	},
	{
		// conformance §7 "alert_rule": the 12.4.0 columns beyond 9.5.2
		// (migrator/snapshot/00-schema.sql @ v12.4.0).
		id:   "Add alert_rule columns of 12.x",
		need: func(f features) bool { return f.v12Columns },
		addColumns: [][3]string{
			{"alert_rule", "notification_settings", "TEXT NULL"},
			{"alert_rule", "record", "TEXT NULL"},
			{"alert_rule", "metadata", "TEXT NULL"},
			{"alert_rule", "updated_by", "TEXT NULL"},
			{"alert_rule", "guid", "TEXT NOT NULL DEFAULT ''"},
			{"alert_rule", "keep_firing_for", "INTEGER NOT NULL DEFAULT 0"},
			{"alert_rule", "missing_series_evals_to_resolve", "INTEGER NULL"},
		},
	},
	{
		// conformance §7 "Unified storage": the resource tables exist from
		// 12.x on (created by unified storage's own migrator).
		id:    "Initialize resource tables",
		need:  func(f features) bool { return f.unifiedTables },
		stmts: unifiedSchema,
	},
}

// openDB opens (creating) <dataDir>/grafana.db read-write and brings its
// layout up to version f, never down: like Grafana, an older version leaves
// columns it does not know alone.
func openDB(dataDir string, f features) (*sql.DB, error) {
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(filepath.Join(dataDir, DBFile))
	if err != nil {
		return nil, err
	}
	// Immediate transactions avoid the deadlock-prone read-to-write lock
	// upgrade. A page cache of 64 MiB per connection keeps a listed
	// database in memory (the default 2 MiB rereads it from the file for
	// every page of a list); it changes nothing in the file. Reading the
	// file through a memory map (up to 1 GiB) spares every page read a
	// system call and a copy; that changes nothing in the file either, and
	// SQLite keeps the map right when another process writes the file.
	dsn := "file:" + (&url.URL{Path: abs}).EscapedPath() + "?_pragma=busy_timeout(10000)&_pragma=cache_size(-65536)&_pragma=mmap_size(1073741824)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(4)
	// As many kept idle as may be open: closing and reopening connections
	// (and re-preparing statements, and refilling the page cache) under
	// concurrent requests cost more than the queries.
	db.SetMaxIdleConns(4)
	if err := migrate(context.Background(), db, f); err != nil {
		db.Close()
		return nil, fmt.Errorf("grafanastandin: preparing %s for Grafana %s: %w", abs, f.v, err)
	}
	return db, nil
}

func migrate(ctx context.Context, db *sql.DB, f features) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, stmt := range baseSchema {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return err
		}
	}
	now := time.Now().UTC().Format(timeLayout)
	for _, m := range migrations {
		if !m.need(f) {
			continue
		}
		var done int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM migration_log WHERE migration_id = ? AND success = 1`, m.id).Scan(&done); err != nil {
			return err
		}
		if done > 0 {
			continue
		}
		var applied []string
		for _, c := range m.addColumns {
			has, err := hasColumn(ctx, tx, c[0], c[1])
			if err != nil {
				return err
			}
			if has {
				continue
			}
			stmt := fmt.Sprintf("ALTER TABLE %q ADD COLUMN %s %s", c[0], c[1], c[2])
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("%s: %w", m.id, err)
			}
			applied = append(applied, stmt)
		}
		for _, stmt := range m.stmts {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("%s: %w", m.id, err)
			}
			applied = append(applied, stmt)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO migration_log (migration_id, sql, success, error, timestamp) VALUES (?, ?, 1, '', ?)`,
			m.id, strings.Join(applied, ";\n"), now); err != nil {
			return err
		}
	}
	return tx.Commit()
}

func hasColumn(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, table, column string) (bool, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM pragma_table_info(?) WHERE name = ?`, table, column).Scan(&n)
	return n > 0, err
}
