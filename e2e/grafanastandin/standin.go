// Package grafanastandin serves the parts of Grafana's HTTP API that rebind
// uses, over a grafana.db laid out like Grafana's own, so that tests and demos
// exercise the same files a real Grafana would read after a migration. It is
// written from the public API contract and knows nothing about Kubernetes.
//
// The stand-in imitates real Grafana version by version (Options.Version,
// SeedSpec.Version; see Version). Its behaviour follows
// docs/grafana-conformance.md ("conformance §N" in comments), which was
// researched from Grafana's source and docs; the doc's "Stand-in" section
// lists which rows are modelled. Grafana is AGPL: none of its code is copied
// here.
//
// What is modelled: org membership only through org_user rows (a server admin
// is not implicitly a member of every org); X-Grafana-Org-Id for a non-member
// running the request in org -1; service-account tokens bound to one org,
// with the per-version answers to /api/user/orgs and to a foreign org header;
// per-version 401 bodies; /api/orgs paging (0-based page); search paging,
// limits and ordering; nested folders (/api/folders one level at a time from
// 11.6, with parentUid/parents); the per-version grafana.db layout (folder_uid
// from 10.4, deleted from 11.6, a written folder table with nesting on), with
// in-place upgrades when a newer version opens an older database; and a proxy
// in front of Grafana answering 429 or 503 on demand (ProxyFaults).
//
// Grafana 12.4 and 13.0 also serve the Kubernetes-style /apis (discovery,
// list and get of dashboards and folders, namespaces per org, paging with
// continue tokens), and keep dashboards and folders either in the legacy
// tables or, once the "folders and dashboards migration" marker is in
// unifiedstorage_migration_log, in unified storage's `resource` table, from
// which /api and /apis are then served while the legacy tables go stale
// (SeedSpec.UnifiedStorage, StaleLegacy; 13.0 migrates on open). Schema v2
// dashboards (SeedSpec.V2DashboardsPerOrg) are served converted, lossily, to
// classic JSON on /api and in the classic /apis versions. Alert rules
// (/api/v1/provisioning/alert-rules), library panels (/api/library-elements)
// and data sources (/api/datasources) are seeded and served in every version.
//
// Remaining simplifications:
//   - the only password user is the server admin; service accounts exist as
//     user rows but their tokens are given in Options, not read from the
//     api_key table; every member is Admin of its orgs, so RBAC never denies
//     anything but org-level and server-admin checks;
//   - 10.4 and 11.6 behave as the conformance doc infers (no source read);
//     11.6's /api/user/orgs under a token is modelled as 403 although 304
//     may already apply there (first release with 304 unconfirmed);
//   - 12.4 does not auto-migrate small instances (≤ 10 dashboards and
//     folders) at start-up; no "sharedwithme" folder; /apis is read-only,
//     serves only the dashboard and folder groups, and its later list pages
//     read current rows rather than a snapshot at the token's version;
//   - 13.0 is modelled from docs and issue threads: everything not
//     documented follows 12.4;
//   - in unified mode /api reads a projection of `resource` built when the
//     server opens: changes made to grafana.db by another process while it
//     is open are not seen;
//   - v2 <-> classic conversions are the stand-in's own, simplified;
//   - the 400 that 10.1-era Grafana gave for a bad password is not modelled
//     (10.4+ answer 401);
//   - no stars, no permissions, no provisioning, no expired or revoked
//     tokens, no brute-force lock-out; library panels have no connections
//     and alert rules no versions or provenance;
//   - search pages are ordered by title with a uid tie-break that real
//     Grafana does not have (conformance §2 "Order / paging determinism").
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
	// Tokens are bearer tokens of an Admin service account of org 1.
	Tokens []string
	// OrgTokens are bearer tokens of an Admin service account of the given
	// org: a service account belongs to exactly one org (conformance §1).
	OrgTokens map[string]int64
	// Version is the Grafana release imitated: any value ParseVersion
	// accepts; "" means DefaultVersion. Open upgrades the database layout to
	// it, as Grafana migrates its database on start-up.
	Version Version
	// BuildVersion is the version /api/health reports; "" gives a release of
	// Version (e.g. "11.6.0").
	BuildVersion string
	// APIsMaxPageSizeBytes is the byte budget of an /apis list page
	// (max_page_size_bytes); 0 means DefaultAPIsMaxPageSizeBytes (2 MiB).
	APIsMaxPageSizeBytes int
	// SignedInUserTTL is how long a member's role is served from the
	// signed-in user cache; 0 means Grafana's 5 s (a test shortens it to
	// watch an entry expire).
	SignedInUserTTL time.Duration
}

// Server is one stand-in Grafana bound to one data directory.
type Server struct {
	dir string
	db  *sql.DB
	// q is where dashboards and folders are read and written through /api:
	// db in legacy mode, the projection of `resource` in unified mode.
	q       *sql.DB
	proj    *projection
	unified bool
	// maxPageBytes: Options.APIsMaxPageSizeBytes.
	maxPageBytes int
	f            features
	build        string
	tokens       map[string]tokenInfo
	closed       atomic.Bool
	mux          *http.ServeMux
	handler      http.Handler
	faults       ProxyFaults

	stmtDashboard, stmtRole *sql.Stmt

	// authOK caches successful basic-auth checks: pbkdf2 per request would
	// make the stand-in, not the client, the bottleneck of any benchmark.
	authOK sync.Map // sha256(login\x00password) -> principal
	// sessions: login session token -> principal (session.go).
	sessions sync.Map
	// roles: roleKey -> cachedRole, Grafana's signed-in user cache.
	roles   sync.Map
	roleTTL time.Duration

	lastUpdated lastUpdatedCache
}

type tokenInfo struct {
	orgID, userID int64
	login         string
}

// DBFile is the database file name inside the data directory, as in Grafana.
const DBFile = "grafana.db"

const timeLayout = "2006-01-02 15:04:05"

// execer is what both *sql.DB and *sql.Tx offer.
type execer interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
	QueryRowContext(context.Context, string, ...any) *sql.Row
}

func ensureOrg(ctx context.Context, ex execer, id int64, name string) error {
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

// Roles of org_user.role (conformance §7 "org_user").
const (
	roleAdmin = "Admin"
	roleNone  = ""
)

func addMember(ctx context.Context, ex execer, org, user int64, role string) error {
	now := time.Now().UTC().Format(timeLayout)
	_, err := ex.ExecContext(ctx, `INSERT OR IGNORE INTO org_user (org_id, user_id, role, created, updated) VALUES (?, ?, ?, ?, ?)`, org, user, role, now, now)
	return err
}

// adminUserID is the server admin's id, or 1 (the id Grafana gives the admin
// it creates on first start) when there is none yet.
func adminUserID(ctx context.Context, ex execer) (int64, error) {
	var id int64
	err := ex.QueryRowContext(ctx, `SELECT id FROM user WHERE is_admin = 1 AND COALESCE(is_service_account, 0) = 0 ORDER BY id LIMIT 1`).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return 1, nil
	}
	return id, err
}

// Open opens or creates <dataDir>/grafana.db. Like Grafana, it writes the
// admin user only when the database has none yet, so reopening with another
// password leaves the stored one in force; the new admin is an Admin member
// of org 1 ("Main Org.") only, unless Seed already recorded its memberships.
func Open(dataDir string, opts Options) (*Server, error) {
	v, err := ParseVersion(string(opts.Version))
	if err != nil {
		return nil, err
	}
	f := featuresOf(v)
	db, err := openDB(dataDir, f)
	if err != nil {
		return nil, err
	}
	s := &Server{dir: dataDir, db: db, f: f, build: opts.BuildVersion, tokens: map[string]tokenInfo{}}
	if s.build == "" {
		s.build = f.buildVersion
	}
	s.q = db
	s.maxPageBytes = opts.APIsMaxPageSizeBytes
	s.roleTTL = opts.SignedInUserTTL
	if s.roleTTL <= 0 {
		s.roleTTL = signedInUserTTL
	}
	if s.maxPageBytes <= 0 {
		s.maxPageBytes = DefaultAPIsMaxPageSizeBytes
	}
	if err := s.bootstrap(context.Background(), opts); err != nil {
		db.Close()
		return nil, fmt.Errorf("grafanastandin: %w", err)
	}
	if err := s.openStorage(context.Background()); err != nil {
		db.Close()
		return nil, fmt.Errorf("grafanastandin: %w", err)
	}
	if err := s.prepare(); err != nil {
		s.proj.close()
		db.Close()
		return nil, fmt.Errorf("grafanastandin: %w", err)
	}
	s.routes()
	return s, nil
}

// openStorage decides where dashboards and folders live (conformance §7):
// with the migration marker they are unified-only and /api is served from
// a projection of `resource`; 13.0 runs the migration first when the
// marker is missing.
func (s *Server) openStorage(ctx context.Context) error {
	if !s.f.unifiedTables {
		return nil
	}
	ok, err := hasMarker(ctx, s.db)
	if err != nil {
		return err
	}
	if !ok && s.f.migrateOnStart {
		if err := migrateToUnified(ctx, s.db, s.f, time.Now().UTC()); err != nil {
			return fmt.Errorf("folders and dashboards migration: %w", err)
		}
		ok = true
	}
	if !ok {
		return nil
	}
	if s.proj, err = openProjection(ctx, s.db, s.f); err != nil {
		return err
	}
	s.q, s.unified = s.proj.db, true
	return nil
}

// UnifiedStorage reports whether dashboards and folders are served from the
// unified `resource` table (conformance §7 "When legacy dashboard is stale").
func (s *Server) UnifiedStorage() bool { return s.unified }

func (s *Server) bootstrap(ctx context.Context, opts Options) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := ensureOrg(ctx, tx, 1, orgName(1)); err != nil {
		return err
	}
	user, pw := opts.AdminUser, opts.AdminPassword
	if user == "" {
		user = "admin"
	}
	if pw == "" {
		pw = "admin"
	}
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM user WHERE COALESCE(is_service_account, 0) = 0`).Scan(&n); err != nil {
		return err
	}
	var placeholder int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM user WHERE id = 1 AND is_admin = 1 AND password IS NULL AND COALESCE(is_service_account, 0) = 0`).Scan(&placeholder); err != nil {
		return err
	}
	if n == 1 && placeholder == 1 {
		// The admin row Seed reserved (SeedSpec.UnifiedStorage): Grafana's
		// first start makes it the configured admin.
		pwh := hashPassword(pw, randString(10))
		if _, err := tx.ExecContext(ctx, `UPDATE user SET login = ?, email = ?, password = ?, salt = ?, rands = ? WHERE id = 1`,
			user, user+"@localhost", pwh.hash, pwh.salt, randString(10)); err != nil {
			return err
		}
	}
	if n == 0 {
		// Grafana's first user gets id 1; Seed may already have written
		// org_user rows for it.
		var taken int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM user WHERE id = 1`).Scan(&taken); err != nil {
			return err
		}
		var id any
		if taken == 0 {
			id = int64(1)
		}
		res, err := s.insertUser(ctx, tx, id, user, user+"@localhost", hashPassword(pw, randString(10)), true, false, 1)
		if err != nil {
			return fmt.Errorf("creating admin user: %w", err)
		}
		adminID, _ := res.LastInsertId()
		var memberships int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM org_user WHERE user_id = ?`, adminID).Scan(&memberships); err != nil {
			return err
		}
		if memberships == 0 {
			// conformance §1: the admin is a member of the orgs with an
			// org_user row; Grafana creates it as Admin of Main Org.
			if err := addMember(ctx, tx, 1, adminID, roleAdmin); err != nil {
				return err
			}
		}
	}
	all := map[string]int64{}
	for _, t := range opts.Tokens {
		if t != "" {
			all[t] = 1
		}
	}
	for t, org := range opts.OrgTokens {
		if t != "" {
			all[t] = org
		}
	}
	for t, org := range all {
		if err := s.ensureToken(ctx, tx, org, t); err != nil {
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	return s.loadTokens(ctx)
}

// ensureToken records token as one of org's service-account tokens: the
// service account (a user row with is_service_account = 1, member of its
// one org: conformance §7 "user") and an api_key row holding its hash.
func (s *Server) ensureToken(ctx context.Context, tx *sql.Tx, org int64, token string) error {
	login := fmt.Sprintf("sa-%d-rebind-standin", org)
	var id int64
	err := tx.QueryRowContext(ctx, `SELECT id FROM user WHERE login = ?`, login).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		// Id 1 stays free for the admin that Grafana creates on first start
		// (Seed may run before it exists and has given it memberships).
		if err = tx.QueryRowContext(ctx, `SELECT MAX(COALESCE(MAX(id), 0), 1) + 1 FROM user`).Scan(&id); err == nil {
			_, err = s.insertUser(ctx, tx, id, login, login, passwordHash{}, false, true, org)
		}
	}
	if err != nil {
		return fmt.Errorf("creating service account of org %d: %w", org, err)
	}
	if err := addMember(ctx, tx, org, id, roleAdmin); err != nil {
		return err
	}
	now := time.Now().UTC().Format(timeLayout)
	_, err = tx.ExecContext(ctx, `INSERT OR IGNORE INTO api_key (org_id, name, key, role, created, updated, service_account_id, is_revoked)
		VALUES (?, ?, ?, 'Admin', ?, ?, ?, 0)`, org, fmt.Sprintf("%s-%d", login, time.Now().UnixNano()), tokenHash(token), now, now, id)
	return err
}

func tokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// loadTokens reads the service-account tokens stored in grafana.db.
func (s *Server) loadTokens(ctx context.Context) error {
	rows, err := s.db.QueryContext(ctx, `SELECT k.key, k.org_id, u.id, u.login FROM api_key k JOIN user u ON u.id = k.service_account_id
		WHERE COALESCE(k.is_revoked, 0) = 0 AND u.is_service_account = 1`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var hash string
		var t tokenInfo
		if err := rows.Scan(&hash, &t.orgID, &t.userID, &t.login); err != nil {
			return err
		}
		s.tokens[hash] = t
	}
	return rows.Err()
}

// insertUser writes a user row with the columns of s's version; a zero pw
// leaves password and salt NULL (service accounts have none).
func (s *Server) insertUser(ctx context.Context, tx *sql.Tx, id any, login, email string, pw passwordHash, admin, sa bool, org int64) (sql.Result, error) {
	now := time.Now().UTC().Format(timeLayout)
	cols := `id, version, login, email, name, password, salt, rands, company, org_id, is_admin, email_verified, theme, created, updated, is_service_account`
	args := []any{id, 0, login, email, "", nullIfEmpty(pw.hash), nullIfEmpty(pw.salt), randString(10), "", org, admin, false, "", now, now, sa}
	if s.f.userUIDColumn {
		cols += `, uid`
		args = append(args, randString(14))
	}
	ph := strings.TrimSuffix(strings.Repeat("?, ", len(args)), ", ")
	return tx.ExecContext(ctx, `INSERT INTO user (`+cols+`) VALUES (`+ph+`)`, args...)
}

func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// Close releases the database; afterwards /api/health answers 503.
func (s *Server) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.stmtDashboard.Close()
	s.stmtRole.Close()
	s.lastUpdated.close()
	s.proj.close()
	return s.db.Close()
}

// Handler serves the API, behind the proxy faults (Throttle, Unavailable).
func (s *Server) Handler() http.Handler { return s.handler }

// Version is the Grafana version the server imitates.
func (s *Server) Version() Version { return s.f.v }

// Throttle makes every /api request except /api/health answer 429 for the
// next d, as a rate-limiting proxy in front of Grafana would (Grafana itself
// never does, conformance §6). See ProxyFaults.Throttle.
func (s *Server) Throttle(d time.Duration, retryAfter int) { s.faults.Throttle(d, retryAfter) }

// Unavailable makes every /api request except /api/health answer nginx's
// 503 for the next d (conformance §6). See ProxyFaults.Unavailable.
func (s *Server) Unavailable(d time.Duration, retryAfter int) { s.faults.Unavailable(d, retryAfter) }

type passwordHash struct{ hash, salt string }

// hashPassword stretches like Grafana does (PBKDF2-SHA256, 10000 rounds, 50
// bytes, hex) so the stored column looks familiar; nothing depends on the match.
func hashPassword(pw, salt string) passwordHash {
	return passwordHash{hash: pbkdf2Hex(pw, salt), salt: salt}
}

func pbkdf2Hex(pw, salt string) string {
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
	userID     int64
	login      string
	token      bool
	serverAdm  bool
	defaultOrg int64 // user.org_id (last used org), or a token's org
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
		Scan(&p.userID, &p.login, &hash, &salt, &isAdmin, &p.defaultOrg)
	if errors.Is(err, sql.ErrNoRows) {
		return p, errBadPassword
	}
	if err != nil {
		return p, err
	}
	if hash == "" || subtle.ConstantTimeCompare([]byte(pbkdf2Hex(pw, salt)), []byte(hash)) != 1 {
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
