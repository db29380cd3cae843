// Package grafanastandin serves the parts of Grafana's HTTP API that rebind
// uses, over a grafana.db laid out like Grafana's own, so that tests and demos
// exercise the same files a real Grafana would read after a migration. It is
// written from the public API contract and knows nothing about Kubernetes.
//
// Deliberate simplifications: the admin user is a member of every org; bearer
// tokens act as Admin service accounts of org 1; /api/folders lists nested
// folders too (with parentUid) unless ?parentUid= narrows it.
package grafanastandin

import (
	"context"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // registers driver "sqlite"
)

// Options configure a stand-in. Empty AdminUser/AdminPassword mean admin/admin,
// Grafana's own defaults.
type Options struct {
	AdminUser, AdminPassword string
	Tokens                   []string
}

// Server is one stand-in Grafana bound to one data directory.
type Server struct {
	dir    string
	db     *sql.DB
	tokens map[string]struct{}
	closed atomic.Bool
	mux    *http.ServeMux

	stmtDashboard, stmtOrgExists *sql.Stmt

	// authOK caches successful basic-auth checks: pbkdf2 per request would
	// make the stand-in, not the client, the bottleneck of any benchmark.
	authOK sync.Map // sha256(login\x00password) -> principal
}

// DBFile is the database file name inside the data directory, as in Grafana.
const DBFile = "grafana.db"

const timeLayout = "2006-01-02 15:04:05"

// schema mirrors the column names and types of Grafana's tables so that
// offline readers see the real layout. Only the tables the stand-in uses exist.
var schema = []string{
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
		is_public INTEGER NOT NULL DEFAULT 0,
		folder_uid TEXT NULL,
		deleted DATETIME NULL)`,
	`CREATE UNIQUE INDEX IF NOT EXISTS UQE_dashboard_org_id_uid ON dashboard (org_id, uid)`,
	`CREATE INDEX IF NOT EXISTS IDX_dashboard_org_id ON dashboard (org_id)`,
	`CREATE INDEX IF NOT EXISTS IDX_dashboard_org_id_folder_uid ON dashboard (org_id, folder_uid)`,
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
	`CREATE TABLE IF NOT EXISTS org (
		id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
		version INTEGER NOT NULL,
		name TEXT NOT NULL,
		address1 TEXT NULL, address2 TEXT NULL, city TEXT NULL, state TEXT NULL,
		zip_code TEXT NULL, country TEXT NULL, billing_email TEXT NULL,
		created DATETIME NOT NULL,
		updated DATETIME NOT NULL)`,
	`CREATE UNIQUE INDEX IF NOT EXISTS UQE_org_name ON org (name)`,
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
		is_service_account INTEGER DEFAULT 0,
		uid TEXT NULL)`,
	`CREATE UNIQUE INDEX IF NOT EXISTS UQE_user_login ON user (login)`,
}

// openDB opens (creating) the database read-write and makes sure the schema exists.
func openDB(dataDir string) (*sql.DB, error) {
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(filepath.Join(dataDir, DBFile))
	if err != nil {
		return nil, err
	}
	// Immediate transactions avoid the deadlock-prone read-to-write lock upgrade.
	dsn := "file:" + (&url.URL{Path: abs}).EscapedPath() + "?_pragma=busy_timeout(10000)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(4)
	for _, stmt := range schema {
		if _, err := db.Exec(stmt); err != nil {
			db.Close()
			return nil, fmt.Errorf("grafanastandin: creating schema in %s: %w", abs, err)
		}
	}
	return db, nil
}

func ensureOrg(ctx context.Context, ex interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}, id int64, name string) error {
	now := time.Now().UTC().Format(timeLayout)
	_, err := ex.ExecContext(ctx, `INSERT OR IGNORE INTO org (id, version, name, created, updated) VALUES (?, 0, ?, ?, ?)`, id, name, now, now)
	return err
}

func orgName(id int64) string {
	if id == 1 {
		return "Main Org."
	}
	return fmt.Sprintf("Org %d", id)
}

// Open opens or creates <dataDir>/grafana.db. Like Grafana, it writes the
// admin user only when the database has none yet, so reopening with another
// password leaves the stored one in force.
func Open(dataDir string, opts Options) (*Server, error) {
	db, err := openDB(dataDir)
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	if err := ensureOrg(ctx, db, 1, orgName(1)); err != nil {
		db.Close()
		return nil, err
	}
	user, pw := opts.AdminUser, opts.AdminPassword
	if user == "" {
		user = "admin"
	}
	if pw == "" {
		pw = "admin"
	}
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM user WHERE is_service_account = 0`).Scan(&n); err != nil {
		db.Close()
		return nil, err
	}
	if n == 0 {
		salt := randString(10)
		now := time.Now().UTC().Format(timeLayout)
		_, err := db.Exec(`INSERT INTO user (version, login, email, name, password, salt, rands, company, org_id, is_admin, email_verified, theme, created, updated, uid)
			VALUES (0, ?, ?, '', ?, ?, ?, '', 1, 1, 0, '', ?, ?, ?)`,
			user, user+"@localhost", hashPassword(pw, salt), salt, randString(10), now, now, randString(14))
		if err != nil {
			db.Close()
			return nil, fmt.Errorf("grafanastandin: creating admin user: %w", err)
		}
	}
	s := &Server{dir: dataDir, db: db, tokens: map[string]struct{}{}}
	for _, t := range opts.Tokens {
		if t != "" {
			s.tokens[t] = struct{}{}
		}
	}
	if err := s.prepare(); err != nil {
		db.Close()
		return nil, fmt.Errorf("grafanastandin: %w", err)
	}
	s.routes()
	return s, nil
}

// Close releases the database; afterwards /api/health answers 503.
func (s *Server) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.stmtDashboard.Close()
	s.stmtOrgExists.Close()
	return s.db.Close()
}

// Handler serves the API.
func (s *Server) Handler() http.Handler { return s.mux }

// hashPassword stretches like Grafana does (PBKDF2-SHA256, 10000 rounds, 50
// bytes, hex) so the stored column looks familiar; nothing depends on the match.
func hashPassword(pw, salt string) string {
	k, err := pbkdf2.Key(sha256.New, pw, []byte(salt), 10000, 50)
	if err != nil {
		panic(err) // only for invalid parameters, which are constants here
	}
	return hex.EncodeToString(k)
}

const alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

func randString(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	for i := range b {
		b[i] = alnum[int(b[i])%len(alnum)]
	}
	return string(b)
}

// principal is who a request runs as.
type principal struct {
	userID    int64
	login     string
	token     bool
	serverAdm bool
	orgID     int64 // default org
}

var errBadPassword = errors.New("bad password")

func (s *Server) checkBasic(ctx context.Context, login, pw string) (principal, error) {
	key := sha256.Sum256([]byte(login + "\x00" + pw))
	if p, ok := s.authOK.Load(key); ok {
		return p.(principal), nil
	}
	var (
		p          principal
		hash, salt string
		isAdmin    int
	)
	err := s.db.QueryRowContext(ctx, `SELECT id, login, COALESCE(password,''), COALESCE(salt,''), is_admin, org_id FROM user
		WHERE (login = ? OR email = ?) AND is_disabled = 0 AND COALESCE(is_service_account,0) = 0`, login, login).
		Scan(&p.userID, &p.login, &hash, &salt, &isAdmin, &p.orgID)
	if errors.Is(err, sql.ErrNoRows) {
		return p, errBadPassword
	}
	if err != nil {
		return p, err
	}
	if subtle.ConstantTimeCompare([]byte(hashPassword(pw, salt)), []byte(hash)) != 1 {
		return p, errBadPassword
	}
	p.serverAdm = isAdmin == 1
	s.authOK.Store(key, p)
	return p, nil
}

func slugify(title string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(title) {
		switch {
		case r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
			b.WriteRune(r)
			dash = false
		case r > 127:
			b.WriteRune(r)
			dash = false
		default:
			if !dash && b.Len() > 0 {
				b.WriteByte('-')
				dash = true
			}
		}
	}
	return strings.TrimRight(b.String(), "-")
}
