package grafanastandin_test

// These tests pin real Grafana's behaviour as docs/grafana-conformance.md
// states it ("§N" below), version by version; they are not a record of what
// the stand-in happens to do.

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rebind-dev/rebind/e2e/grafanastandin"
)

type env struct {
	t   *testing.T
	dir string
	s   *grafanastandin.Server
	srv *httptest.Server
}

func newEnv(t *testing.T, spec grafanastandin.SeedSpec, opts grafanastandin.Options) *env {
	t.Helper()
	dir := t.TempDir()
	if spec.DashboardsPerOrg > 0 || spec.Orgs > 0 || spec.FoldersPerOrg > 0 {
		if err := grafanastandin.Seed(dir, spec); err != nil {
			t.Fatal(err)
		}
	}
	return openEnv(t, dir, opts)
}

func openEnv(t *testing.T, dir string, opts grafanastandin.Options) *env {
	t.Helper()
	s, err := grafanastandin.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(func() { srv.Close(); s.Close() })
	return &env{t: t, dir: dir, s: s, srv: srv}
}

type call struct {
	method, path, body string
	user, pass, token  string
	org                string
	noAuth             bool
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (e *env) call(c call) resp {
	e.t.Helper()
	var body io.Reader
	if c.body != "" {
		body = strings.NewReader(c.body)
	}
	if c.method == "" {
		c.method = http.MethodGet
	}
	req, _ := http.NewRequest(c.method, e.srv.URL+c.path, body)
	switch {
	case c.noAuth:
	case c.token != "":
		req.Header.Set("Authorization", "Bearer "+c.token)
	case c.user != "":
		req.SetBasicAuth(c.user, c.pass)
	default:
		req.SetBasicAuth("admin", "pw")
	}
	if c.org != "" {
		req.Header.Set("X-Grafana-Org-Id", c.org)
	}
	if c.body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return resp{r.StatusCode, r.Header, b}
}

func (e *env) do(c call) (int, []byte) {
	e.t.Helper()
	r := e.call(c)
	return r.status, r.body
}

func decode[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
	return v
}

// jsonEq compares JSON documents by value, ignoring key order and spacing.
func jsonEq(t *testing.T, got []byte, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("body %q is not JSON: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("bad want %q: %v", want, err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("body %s, want %s", got, want)
	}
}

var stdOpts = grafanastandin.Options{AdminUser: "admin", AdminPassword: "pw", Tokens: []string{"glsa_token"}}

func optsFor(v grafanastandin.Version) grafanastandin.Options {
	o := stdOpts
	o.Version = v
	return o
}

// perVersion picks the expectation for v from a map keyed by version.
func perVersion[T any](v grafanastandin.Version, m map[grafanastandin.Version]T) T {
	x, ok := m[v]
	if !ok {
		panic("no expectation for " + v)
	}
	return x
}

const (
	errutil401 = `{"extra":null,"message":"Unauthorized","messageId":"auth.unauthorized","statusCode":401,"traceID":""}`
	legacy401  = `{"message":"Unauthorized"}`
)

func TestParseVersion(t *testing.T) {
	tests := []struct {
		in   string
		want grafanastandin.Version
	}{
		{"", grafanastandin.DefaultVersion},
		{"9.5", grafanastandin.V9_5}, {"9.5.2", grafanastandin.V9_5}, {"8.5.0", grafanastandin.V9_5},
		{"10.0.1", grafanastandin.V10_4}, {"10.4", grafanastandin.V10_4},
		{"11.4.1", grafanastandin.V11_6}, {"v11.0.0", grafanastandin.V11_6}, {"11.4.1-ubuntu", grafanastandin.V11_6},
		{"12.0.0", grafanastandin.V12_4}, {"12.4", grafanastandin.V12_4}, {"12.4.3-ubuntu", grafanastandin.V12_4},
		{"13.0.1", grafanastandin.V13_0}, {"13.0", grafanastandin.V13_0}, {"v13.2.0", grafanastandin.V13_0}, {"14.0.0", grafanastandin.V13_0},
		{"latest", grafanastandin.V13_0}, {"main", grafanastandin.V13_0},
	}
	for _, tt := range tests {
		if got, err := grafanastandin.ParseVersion(tt.in); err != nil || got != tt.want {
			t.Errorf("ParseVersion(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"sha-abc", "x", "."} {
		if _, err := grafanastandin.ParseVersion(bad); err == nil {
			t.Errorf("ParseVersion(%q) accepted", bad)
		}
	}
	if grafanastandin.DefaultVersion != grafanastandin.V11_6 {
		t.Fatalf("default %s", grafanastandin.DefaultVersion)
	}
	if _, err := grafanastandin.Open(t.TempDir(), grafanastandin.Options{Version: "nope"}); err == nil {
		t.Fatal("Open accepted an unknown version")
	}
}

// TestAuthErrorBodies: §1 rows "401, no credentials", "Bad password",
// "Bad / expired / revoked token".
func TestAuthErrorBodies(t *testing.T) {
	type want struct {
		status int
		body   string
	}
	cases := []struct {
		name string
		c    call
		want map[grafanastandin.Version]want
	}{
		{"no credentials", call{path: "/api/search", noAuth: true}, map[grafanastandin.Version]want{
			grafanastandin.V9_5:  {401, legacy401},
			grafanastandin.V10_4: {401, errutil401},
			grafanastandin.V11_6: {401, errutil401},
			grafanastandin.V12_4: {401, errutil401},
		}},
		{"bad password", call{path: "/api/search", user: "admin", pass: "nope"}, map[grafanastandin.Version]want{
			grafanastandin.V9_5:  {401, `{"message":"invalid username or password","traceID":""}`},
			grafanastandin.V10_4: {401, `{"extra":null,"message":"Invalid username or password","messageId":"password-auth.failed","statusCode":401,"traceID":""}`},
			grafanastandin.V11_6: {401, `{"extra":null,"message":"Invalid username or password","messageId":"password-auth.failed","statusCode":401,"traceID":""}`},
			grafanastandin.V12_4: {401, `{"extra":null,"message":"Invalid username or password","messageId":"password-auth.failed","statusCode":401,"traceID":""}`},
		}},
		{"unknown user", call{path: "/api/org", user: "bob", pass: "pw"}, map[grafanastandin.Version]want{
			grafanastandin.V9_5:  {401, `{"message":"invalid username or password","traceID":""}`},
			grafanastandin.V10_4: {401, `{"extra":null,"message":"Invalid username or password","messageId":"password-auth.failed","statusCode":401,"traceID":""}`},
			grafanastandin.V11_6: {401, `{"extra":null,"message":"Invalid username or password","messageId":"password-auth.failed","statusCode":401,"traceID":""}`},
			grafanastandin.V12_4: {401, `{"extra":null,"message":"Invalid username or password","messageId":"password-auth.failed","statusCode":401,"traceID":""}`},
		}},
		{"bad token", call{path: "/api/search", token: "glsa_other"}, map[grafanastandin.Version]want{
			grafanastandin.V9_5:  {401, `{"message":"invalid API key","traceID":""}`},
			grafanastandin.V10_4: {401, `{"extra":null,"message":"Invalid API key","messageId":"api-key.invalid","statusCode":401,"traceID":""}`},
			grafanastandin.V11_6: {401, `{"extra":null,"message":"Invalid API key","messageId":"api-key.invalid","statusCode":401,"traceID":""}`},
			grafanastandin.V12_4: {401, `{"extra":null,"message":"Invalid API key","messageId":"api-key.invalid","statusCode":401,"traceID":""}`},
		}},
	}
	for _, v := range grafanastandin.Versions {
		e := newEnv(t, grafanastandin.SeedSpec{DashboardsPerOrg: 1, Seed: 1, Version: v}, optsFor(v))
		for _, c := range cases {
			t.Run(string(v)+"/"+c.name, func(t *testing.T) {
				w := perVersion(v, c.want)
				st, b := e.do(c.c)
				if st != w.status {
					t.Fatalf("status %d, want %d: %s", st, w.status, b)
				}
				jsonEq(t, b, w.body)
			})
		}
	}
}

// TestTokenScope: §1 rows "/api/user/orgs, SA token", "SA token +
// X-Grafana-Org-Id for another org", "GET /api/orgs with SA token", "GET /api/org".
func TestTokenScope(t *testing.T) {
	mismatch := `{"extra":null,"message":"API key does not belong to the requested organization","messageId":"api-key.organization-mismatch","statusCode":401,"traceID":""}`
	type want struct {
		status int
		body   string // "" = empty body; otherwise compared as JSON
	}
	cases := []struct {
		name string
		c    call
		want map[grafanastandin.Version]want
	}{
		{"user orgs", call{path: "/api/user/orgs", token: "glsa_token"}, map[grafanastandin.Version]want{
			grafanastandin.V9_5:  {200, `[]`},
			grafanastandin.V10_4: {403, `{"message":"Endpoint only available for users"}`},
			grafanastandin.V11_6: {403, `{"message":"Endpoint only available for users"}`},
			grafanastandin.V12_4: {304, ``},
		}},
		{"foreign org header", call{path: "/api/org", token: "glsa_token", org: "2"}, map[grafanastandin.Version]want{
			grafanastandin.V9_5:  {200, `{"id":1,"name":"Main Org.","address":{"address1":"","address2":"","city":"","zipCode":"","state":"","country":""}}`},
			grafanastandin.V10_4: {401, mismatch},
			grafanastandin.V11_6: {401, mismatch},
			grafanastandin.V12_4: {401, mismatch},
		}},
		{"foreign targetOrgId", call{path: "/api/org?targetOrgId=2", token: "glsa_token"}, map[grafanastandin.Version]want{
			grafanastandin.V9_5:  {200, `{"id":1,"name":"Main Org.","address":{"address1":"","address2":"","city":"","zipCode":"","state":"","country":""}}`},
			grafanastandin.V10_4: {401, mismatch},
			grafanastandin.V11_6: {401, mismatch},
			grafanastandin.V12_4: {401, mismatch},
		}},
	}
	same := map[grafanastandin.Version]want{}
	for _, v := range grafanastandin.Versions {
		same[v] = want{200, `{"id":1,"name":"Main Org.","address":{"address1":"","address2":"","city":"","zipCode":"","state":"","country":""}}`}
	}
	cases = append(cases,
		struct {
			name string
			c    call
			want map[grafanastandin.Version]want
		}{"current org", call{path: "/api/org", token: "glsa_token"}, same},
		struct {
			name string
			c    call
			want map[grafanastandin.Version]want
		}{"own org header", call{path: "/api/org", token: "glsa_token", org: "1"}, same},
	)
	for _, v := range grafanastandin.Versions {
		e := newEnv(t, grafanastandin.SeedSpec{Orgs: 2, DashboardsPerOrg: 2, Seed: 1, Version: v}, optsFor(v))
		for _, c := range cases {
			t.Run(string(v)+"/"+c.name, func(t *testing.T) {
				w := perVersion(v, c.want)
				st, b := e.do(c.c)
				if st != w.status {
					t.Fatalf("status %d, want %d: %s", st, w.status, b)
				}
				if w.body == "" {
					if len(b) != 0 {
						t.Fatalf("body %q, want none", b)
					}
					return
				}
				jsonEq(t, b, w.body)
			})
		}
		t.Run(string(v)+"/all orgs", func(t *testing.T) {
			st, b := e.do(call{path: "/api/orgs", token: "glsa_token"})
			if st != 403 {
				t.Fatalf("%d %s", st, b)
			}
			assertRBAC(t, b, "orgs:read")
		})
	}
}

var aceID = regexp.MustCompile(`^ACE[0-9]{10}$`)

// assertRBAC: §1 "403, RBAC denial".
func assertRBAC(t *testing.T, b []byte, action string) {
	t.Helper()
	m := decode[map[string]string](t, b)
	if len(m) != 3 || m["title"] != "Access denied" || !aceID.MatchString(m["accessErrorId"]) ||
		m["message"] != "You'll need additional permissions to perform this action. Permissions needed: "+action {
		t.Fatalf("RBAC body %s", b)
	}
}

// TestOrgMembership: §1 rows "GET /api/user/orgs", "Server admin is not
// implicitly a member", "X-Grafana-Org-Id: N, basic-auth user not a member of
// N", "Header parsing". Same in every modelled version.
func TestOrgMembership(t *testing.T) {
	for _, v := range grafanastandin.Versions {
		t.Run(string(v), func(t *testing.T) {
			e := newEnv(t, grafanastandin.SeedSpec{Orgs: 3, FoldersPerOrg: 1, DashboardsPerOrg: 3, Seed: 5, Version: v, AdminNotMemberOf: []int64{2}},
				grafanastandin.Options{AdminPassword: "pw", Version: v, OrgTokens: map[string]int64{"tok2": 2}})
			// The token of org 2 sees org 2's dashboards...
			st, b := e.do(call{path: "/api/search?type=dash-db", token: "tok2"})
			org2 := decode[[]hit](t, b)
			if st != 200 || len(org2) != 3 {
				t.Fatalf("token of org 2: %d %s", st, b)
			}
			cases := []struct {
				name   string
				c      call
				status int
				body   string
			}{
				{"memberships only", call{path: "/api/user/orgs"}, 200,
					`[{"orgId":1,"name":"Main Org.","role":"Admin"},{"orgId":3,"name":"Org 3","role":"Admin"}]`},
				{"memberships under a foreign header", call{path: "/api/user/orgs", org: "2"}, 200,
					`[{"orgId":1,"name":"Main Org.","role":"Admin"},{"orgId":3,"name":"Org 3","role":"Admin"}]`},
				{"search in a non-member org", call{path: "/api/search", org: "2"}, 200, `[]`},
				{"org of a non-member org", call{path: "/api/org", org: "2"}, 404, `{"message":"Organization not found"}`},
				{"dashboard of a non-member org", call{path: "/api/dashboards/uid/" + org2[0].UID, org: "2"}, 404, `{"message":"Dashboard not found"}`},
				{"folders of a non-member org", call{path: "/api/folders", org: "2"}, 200, `[]`},
				{"search in an org that does not exist", call{path: "/api/search", org: "9"}, 200, `[]`},
				{"org that does not exist", call{path: "/api/org", org: "9"}, 404, `{"message":"Organization not found"}`},
				{"member org", call{path: "/api/org", org: "3"}, 200,
					`{"id":3,"name":"Org 3","address":{"address1":"","address2":"","city":"","zipCode":"","state":"","country":""}}`},
				{"non-integer header is ignored", call{path: "/api/org", org: "x"}, 200,
					`{"id":1,"name":"Main Org.","address":{"address1":"","address2":"","city":"","zipCode":"","state":"","country":""}}`},
				{"targetOrgId wins over the header", call{path: "/api/org?targetOrgId=3", org: "1"}, 200,
					`{"id":3,"name":"Org 3","address":{"address1":"","address2":"","city":"","zipCode":"","state":"","country":""}}`},
				{"server admin lists every org", call{path: "/api/orgs"}, 200, `[{"id":1,"name":"Main Org."},{"id":2,"name":"Org 2"},{"id":3,"name":"Org 3"}]`},
			}
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					st, b := e.do(c.c)
					if st != c.status {
						t.Fatalf("status %d, want %d: %s", st, c.status, b)
					}
					jsonEq(t, b, c.body)
				})
			}
			t.Run("save in a non-member org", func(t *testing.T) {
				st, b := e.do(call{method: "POST", path: "/api/dashboards/db", org: "2", body: `{"dashboard":{"title":"x"}}`})
				if st != 403 {
					t.Fatalf("%d %s", st, b)
				}
				assertRBAC(t, b, "any of dashboards:create, dashboards:write")
			})
		})
	}
}

// TestOrgInvisibleToAdminVisibleToToken: an org the admin is not a member of
// shows nothing through basic auth and everything through a token of that org.
func TestOrgInvisibleToAdminVisibleToToken(t *testing.T) {
	for _, v := range grafanastandin.Versions {
		t.Run(string(v), func(t *testing.T) {
			e := newEnv(t, grafanastandin.SeedSpec{Orgs: 2, FoldersPerOrg: 2, DashboardsPerOrg: 4, Seed: 3, Version: v, AdminNotMemberOf: []int64{2}},
				grafanastandin.Options{AdminPassword: "pw", Version: v, OrgTokens: map[string]int64{"tok2": 2}})
			var member []struct{ OrgID int64 }
			_, b := e.do(call{path: "/api/user/orgs"})
			member = decode[[]struct{ OrgID int64 }](t, b)
			if len(member) != 1 || member[0].OrgID != 1 {
				t.Fatalf("memberships %s", b)
			}
			if _, b := e.do(call{path: "/api/search", org: "2"}); string(b) != "[]" {
				t.Fatalf("basic auth sees org 2: %s", b)
			}
			st, b := e.do(call{path: "/api/search", token: "tok2"})
			if hits := decode[[]hit](t, b); st != 200 || len(hits) != 6 {
				t.Fatalf("token of org 2: %d, %d hits", st, len(hits))
			}
			jsonEq(t, e.call(call{path: "/api/org", token: "tok2"}).body,
				`{"id":2,"name":"Org 2","address":{"address1":"","address2":"","city":"","zipCode":"","state":"","country":""}}`)
			// The org 1 token cannot reach org 2 either.
			if st, _ := e.do(call{path: "/api/search", token: "glsa_token", org: "2"}); v != grafanastandin.V9_5 && st != 401 {
				t.Fatalf("org 1 token in org 2: %d", st)
			}
		})
	}
}

// TestMembershipRows: membership is org_user rows, written whichever of Seed
// and Open runs first; service accounts are user rows (§7 "org", "user").
func TestMembershipRows(t *testing.T) {
	orders := []struct {
		name      string
		seedFirst bool
	}{{"seed then open", true}, {"open then seed", false}}
	for _, o := range orders {
		t.Run(o.name, func(t *testing.T) {
			dir := t.TempDir()
			spec := grafanastandin.SeedSpec{Orgs: 3, DashboardsPerOrg: 1, Seed: 1, AdminNotMemberOf: []int64{3}}
			opts := grafanastandin.Options{AdminPassword: "pw", OrgTokens: map[string]int64{"t3": 3}}
			var e *env
			if o.seedFirst {
				if err := grafanastandin.Seed(dir, spec); err != nil {
					t.Fatal(err)
				}
				e = openEnv(t, dir, opts)
			} else {
				e = openEnv(t, dir, opts)
				if err := grafanastandin.Seed(dir, spec); err != nil {
					t.Fatal(err)
				}
			}
			jsonEq(t, e.call(call{path: "/api/user/orgs"}).body,
				`[{"orgId":1,"name":"Main Org.","role":"Admin"},{"orgId":2,"name":"Org 2","role":"Admin"}]`)
			db := roDB(t, dir)
			var got []string
			rows, err := db.Query(`SELECT u.login, u.is_admin, u.is_service_account, ou.org_id, ou.role FROM org_user ou JOIN user u ON u.id = ou.user_id ORDER BY u.login, ou.org_id`)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			for rows.Next() {
				var login, role string
				var adm, sa, org int
				if err := rows.Scan(&login, &adm, &sa, &org, &role); err != nil {
					t.Fatal(err)
				}
				got = append(got, fmt.Sprintf("%s admin=%d sa=%d org=%d %s", login, adm, sa, org, role))
			}
			want := []string{"admin admin=1 sa=0 org=1 Admin", "admin admin=1 sa=0 org=2 Admin", "sa-3-rebind-standin admin=0 sa=1 org=3 Admin"}
			if !slices.Equal(got, want) {
				t.Fatalf("org_user rows\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

// TestOrgsPaging: §1 "GET /api/orgs, basic-auth server admin": perpage
// default 1000, 0-based page, query = name prefix, name = exact.
func TestOrgsPaging(t *testing.T) {
	e := newEnv(t, grafanastandin.SeedSpec{Orgs: 5, Seed: 1}, stdOpts)
	cases := []struct {
		query string
		ids   []int64
	}{
		{"", []int64{1, 2, 3, 4, 5}},
		{"?perpage=2", []int64{1, 2}},
		{"?perpage=2&page=0", []int64{1, 2}},
		{"?perpage=2&page=1", []int64{3, 4}},
		{"?perpage=2&page=2", []int64{5}},
		{"?perpage=2&page=3", nil},
		{"?query=Org", []int64{2, 3, 4, 5}},
		{"?query=Main", []int64{1}},
		{"?name=Org%203", []int64{3}},
	}
	for _, c := range cases {
		t.Run(c.query, func(t *testing.T) {
			st, b := e.do(call{path: "/api/orgs" + c.query})
			if st != 200 {
				t.Fatalf("%d %s", st, b)
			}
			var ids []int64
			for _, o := range decode[[]struct{ ID int64 }](t, b) {
				ids = append(ids, o.ID)
			}
			if !slices.Equal(ids, c.ids) {
				t.Fatalf("ids %v, want %v (%s)", ids, c.ids, b)
			}
		})
	}
}

// TestHealth: §5: no auth, pretty-printed JSON, application/json; charset=UTF-8.
func TestHealth(t *testing.T) {
	for _, v := range grafanastandin.Versions {
		t.Run(string(v), func(t *testing.T) {
			e := newEnv(t, grafanastandin.SeedSpec{DashboardsPerOrg: 1, Version: v}, optsFor(v))
			r := e.call(call{path: "/api/health", noAuth: true})
			build := map[grafanastandin.Version]string{grafanastandin.V9_5: "9.5.2", grafanastandin.V10_4: "10.4.0", grafanastandin.V11_6: "11.6.0", grafanastandin.V12_4: "12.4.0"}[v]
			want := "{\n  \"database\": \"ok\",\n  \"version\": \"" + build + "\",\n  \"commit\": \"rebind-standin\"\n}"
			if v == grafanastandin.V9_5 || v == grafanastandin.V10_4 {
				want = "{\n  \"commit\": \"rebind-standin\",\n  \"database\": \"ok\",\n  \"version\": \"" + build + "\"\n}"
			}
			if r.status != 200 || string(r.body) != want || r.header.Get("Content-Type") != "application/json; charset=UTF-8" {
				t.Fatalf("%d %q %q", r.status, r.header.Get("Content-Type"), r.body)
			}
		})
	}
	e := newEnv(t, grafanastandin.SeedSpec{DashboardsPerOrg: 1}, grafanastandin.Options{AdminPassword: "pw", BuildVersion: "11.4.1"})
	if _, b := e.do(call{path: "/api/health", noAuth: true}); !strings.Contains(string(b), `"version": "11.4.1"`) {
		t.Fatalf("build version: %s", b)
	}
}

func TestUnknownAPIPath(t *testing.T) {
	e := newEnv(t, grafanastandin.SeedSpec{DashboardsPerOrg: 1}, stdOpts)
	if st, b := e.do(call{path: "/api/nope"}); st != 404 || string(b) != `{"message":"Not found"}` {
		t.Fatalf("%d %s", st, b)
	}
}

type hit struct {
	ID          int64    `json:"id"`
	UID         string   `json:"uid"`
	Title       string   `json:"title"`
	Type        string   `json:"type"`
	URL         string   `json:"url"`
	Tags        []string `json:"tags"`
	FolderUID   string   `json:"folderUid"`
	FolderTitle string   `json:"folderTitle"`
}

func roDB(t *testing.T, dir string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "grafana.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func rwDB(t *testing.T, dir string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(dir, "grafana.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// nestedSpec seeds 6 folders per org in two chains of depth 3 where the
// version nests folders, flat otherwise.
func nestedSpec(v grafanastandin.Version, dashboards int) grafanastandin.SeedSpec {
	spec := grafanastandin.SeedSpec{Orgs: 1, FoldersPerOrg: 6, DashboardsPerOrg: dashboards, Seed: 7, Version: v}
	if v == grafanastandin.V11_6 || v == grafanastandin.V12_4 {
		spec.FolderDepth = 3
	}
	return spec
}

// TestSearch: §2 "Params", "Depth", "Dashboard hit folderUid", "Folder hit
// folderUid", "Order / paging determinism", "Hit fields", per version.
func TestSearch(t *testing.T) {
	for _, v := range grafanastandin.Versions {
		t.Run(string(v), func(t *testing.T) {
			// 6 folders + 1203 dashboards: more than one default page.
			e := newEnv(t, nestedSpec(v, 1203), optsFor(v))
			nested := v == grafanastandin.V11_6 || v == grafanastandin.V12_4
			tests := []struct {
				name   string
				query  string
				status int
				count  int
				check  func(t *testing.T, raw []byte, hits []hit)
			}{
				{"default limit 1000", "?type=dash-db", 200, 1000, nil},
				{"page 2 of default", "?type=dash-db&page=2", 200, 203, nil},
				{"page 0 is page 1", "?type=dash-db&page=0&limit=3", 200, 3, nil},
				{"max limit, all depths", "?type=dash-db&limit=5000", 200, 1203, nil},
				{"everything", "?limit=5000", 200, 1209, nil},
				{"small pages do not overlap", "?type=dash-db&limit=600&page=3", 200, 3, nil},
				{"beyond last page", "?type=dash-db&page=9", 200, 0, func(t *testing.T, raw []byte, _ []hit) {
					if string(raw) != "[]" {
						t.Errorf("empty page is %s, want []", raw)
					}
				}},
				{"folders first on a page", "?limit=5000", 200, 1209, func(t *testing.T, _ []byte, hits []hit) {
					for i, h := range hits {
						if (i < 6) != (h.Type == "dash-folder") {
							t.Fatalf("hit %d is %s", i, h.Type)
						}
						if i > 0 && hits[i-1].Type == h.Type && strings.ToLower(hits[i-1].Title) > strings.ToLower(h.Title) {
							t.Fatalf("page not sorted by lower-case title: %q before %q", hits[i-1].Title, h.Title)
						}
					}
				}},
				{"folder hits and their parents", "?type=dash-folder", 200, 6, func(t *testing.T, _ []byte, hits []hit) {
					withParent := 0
					for _, h := range hits {
						if h.Type != "dash-folder" || !strings.HasPrefix(h.URL, "/dashboards/f/") {
							t.Errorf("folder hit %+v", h)
						}
						if h.FolderUID != "" {
							withParent++
						}
					}
					// Two chains of three: four folders have a parent.
					if want := map[bool]int{true: 4, false: 0}[nested]; withParent != want {
						t.Fatalf("%d folder hits with folderUid, want %d", withParent, want)
					}
				}},
				{"dashboard hits carry their immediate parent", "?type=dash-db&limit=5000", 200, 1203, func(t *testing.T, raw []byte, hits []hit) {
					var objs []map[string]any
					_ = json.Unmarshal(raw, &objs)
					parents := map[string]int{}
					for _, o := range objs {
						for _, k := range []string{"id", "uid", "title", "uri", "url", "slug", "type", "tags", "isStarred", "sortMeta"} {
							if _, ok := o[k]; !ok {
								t.Fatalf("hit lacks %s: %v", k, o)
							}
						}
						_, hasOrg := o["orgId"]
						_, hasDel := o["isDeleted"]
						if hasOrg != (v == grafanastandin.V12_4) || hasDel != (v == grafanastandin.V12_4) {
							t.Fatalf("orgId/isDeleted only in 12.4: %v", o)
						}
						_, has := o["folderUid"]
						_, hasID := o["folderId"]
						_, hasTitle := o["folderTitle"]
						_, hasURL := o["folderUrl"]
						if has != hasID || has != hasTitle || has != hasURL {
							t.Fatalf("folder fields partly present: %v", o)
						}
						uid, _ := o["folderUid"].(string)
						parents[uid]++
					}
					// General plus every one of the 6 folders, whatever its depth.
					if len(parents) != 7 {
						t.Fatalf("dashboards spread over %d parents, want 7: %v", len(parents), parents)
					}
				}},
				{"over max", "?type=dash-db&limit=5001", 422, -1, func(t *testing.T, raw []byte, _ []hit) {
					jsonEq(t, raw, `{"message":"Limit is above maximum allowed (5000), use page parameter to access hits beyond limit"}`)
				}},
				{"folderUIDs", "?type=dash-db&limit=5000&folderUIDs=general", 200, map[bool]int{true: 1203, false: 172}[v == grafanastandin.V9_5], nil},
				{"dashboardUIDs", "", 200, -1, nil}, // filled below
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					if tt.name == "dashboardUIDs" {
						_, b := e.do(call{path: "/api/search?type=dash-db&limit=2"})
						two := decode[[]hit](t, b)
						_, b = e.do(call{path: "/api/search?dashboardUIDs=" + two[0].UID + "&dashboardUIDs=" + two[1].UID})
						if got := decode[[]hit](t, b); len(got) != 2 {
							t.Fatalf("dashboardUIDs: %s", b)
						}
						return
					}
					st, b := e.do(call{path: "/api/search" + tt.query})
					if st != tt.status {
						t.Fatalf("status %d want %d: %.200s", st, tt.status, b)
					}
					if tt.count >= 0 {
						if hits := decode[[]hit](t, b); len(hits) != tt.count {
							t.Fatalf("%d hits, want %d", len(hits), tt.count)
						}
					}
					if tt.check != nil {
						var hits []hit
						if tt.count >= 0 {
							hits = decode[[]hit](t, b)
						}
						tt.check(t, b, hits)
					}
				})
			}
			// Paging walks every dashboard exactly once.
			seen := map[string]bool{}
			for page := 1; ; page++ {
				_, b := e.do(call{path: "/api/search?type=dash-db&limit=500&page=" + itoa(page)})
				hits := decode[[]hit](t, b)
				for _, h := range hits {
					if seen[h.UID] {
						t.Fatalf("uid %s on two pages", h.UID)
					}
					seen[h.UID] = true
				}
				if len(hits) < 500 {
					break
				}
			}
			if len(seen) != 1203 {
				t.Fatalf("paging saw %d dashboards, want 1203", len(seen))
			}
		})
	}
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

// TestFolderHitParentIsVersionSpecific: the same nested database read by
// 9.5 (folder_id join: folder rows keep folder_id 0) and by 10.4 (folder_uid
// join) — §2 "Folder hit folderUid".
func TestFolderHitParentIsVersionSpecific(t *testing.T) {
	dir := t.TempDir()
	if err := grafanastandin.Seed(dir, grafanastandin.SeedSpec{FoldersPerOrg: 3, FolderDepth: 3, DashboardsPerOrg: 4, Seed: 2, Version: grafanastandin.V11_6}); err != nil {
		t.Fatal(err)
	}
	for v, want := range map[grafanastandin.Version]int{grafanastandin.V9_5: 0, grafanastandin.V10_4: 2, grafanastandin.V12_4: 2} {
		t.Run(string(v), func(t *testing.T) {
			e := openEnv(t, dir, optsFor(v))
			_, b := e.do(call{path: "/api/search"})
			folders, dashboards := 0, 0
			for _, h := range decode[[]hit](t, b) {
				switch {
				case h.Type == "dash-folder" && h.FolderUID != "":
					folders++
				case h.Type == "dash-db" && h.FolderUID != "":
					dashboards++
				}
			}
			if folders != want || dashboards != 3 {
				t.Fatalf("%d folder hits and %d dashboard hits with a parent, want %d and 3: %s", folders, dashboards, want, b)
			}
			e.s.Close()
		})
	}
}

// TestFolders: §3 "GET /api/folders" (flat vs one level), "GET /api/folders/:uid".
func TestFolders(t *testing.T) {
	for _, v := range grafanastandin.Versions {
		t.Run(string(v), func(t *testing.T) {
			nested := v == grafanastandin.V11_6 || v == grafanastandin.V12_4
			e := newEnv(t, nestedSpec(v, 0), optsFor(v))
			_, b := e.do(call{path: "/api/search?type=dash-folder"})
			all := decode[[]hit](t, b)
			parent := map[string]string{}
			for _, h := range all {
				parent[h.UID] = h.FolderUID
			}
			st, b := e.do(call{path: "/api/folders"})
			if st != 200 {
				t.Fatalf("%d %s", st, b)
			}
			list := decode[[]map[string]any](t, b)
			for _, f := range list {
				keys := slices.Sorted(func(yield func(string) bool) {
					for k := range f {
						if !yield(k) {
							return
						}
					}
				})
				if !slices.Equal(keys, []string{"id", "title", "uid"}) {
					t.Fatalf("folder entry %v: want id, uid, title (parentUid only below the root)", f)
				}
			}
			if want := map[bool]int{true: 2, false: 6}[nested]; len(list) != want {
				t.Fatalf("%d folders listed, want %d: %s", len(list), want, b)
			}
			root := list[0]["uid"].(string)
			_, b = e.do(call{path: "/api/folders?parentUid=" + root})
			children := decode[[]map[string]any](t, b)
			if nested {
				if len(children) != 1 || children[0]["parentUid"] != root {
					t.Fatalf("children of %s: %s", root, b)
				}
			} else if len(children) != 6 {
				t.Fatalf("parentUid narrowed a flat list: %s", b)
			}
			if _, b = e.do(call{path: "/api/folders?parentUid=nope"}); nested && string(b) != "[]" {
				t.Fatalf("unknown parent: %s", b)
			}

			// The deepest folder of the first chain.
			deepest := ""
			for uid := range parent {
				if nested && parent[uid] != "" && parent[parent[uid]] != "" {
					deepest = uid
				}
			}
			if !nested {
				deepest = root
			}
			st, b = e.do(call{path: "/api/folders/" + deepest})
			if st != 200 {
				t.Fatalf("%d %s", st, b)
			}
			f := decode[map[string]any](t, b)
			for _, k := range []string{"id", "uid", "orgId", "title", "url", "hasAcl", "canSave", "canEdit", "canAdmin", "canDelete", "createdBy", "created", "updatedBy", "updated", "version"} {
				if _, ok := f[k]; !ok {
					t.Errorf("folder lacks %s: %s", k, b)
				}
			}
			_, hasParent := f["parentUid"]
			_, hasParents := f["parents"]
			if !nested {
				if hasParent || hasParents {
					t.Fatalf("flat folder with parents: %s", b)
				}
			} else {
				ps, _ := f["parents"].([]any)
				if f["parentUid"] != parent[deepest] || len(ps) != 2 {
					t.Fatalf("nested folder: %s", b)
				}
				first, second := ps[0].(map[string]any), ps[1].(map[string]any)
				if first["uid"] != parent[parent[deepest]] || second["uid"] != parent[deepest] || first["title"] == "" || first["url"] == "" {
					t.Fatalf("parents not root first: %s", b)
				}
			}
			st, b = e.do(call{path: "/api/folders/missing"})
			if st != 404 {
				t.Fatalf("%d %s", st, b)
			}
			jsonEq(t, b, `{"message":"folder not found","status":"not-found"}`)

			// Creating under a parent nests only where nesting is on.
			st, b = e.do(call{method: "POST", path: "/api/folders", body: `{"uid":"child","title":"Child","parentUid":"` + root + `"}`})
			if st != 200 {
				t.Fatalf("create: %d %s", st, b)
			}
			_, b = e.do(call{path: "/api/folders/child"})
			if got := decode[map[string]any](t, b)["parentUid"]; (got == root) != nested {
				t.Fatalf("created folder: %s", b)
			}
			if nested {
				st, b = e.do(call{method: "POST", path: "/api/folders", body: `{"title":"Orphan","parentUid":"nope"}`})
				if st != 404 {
					t.Fatalf("unknown parent: %d %s", st, b)
				}
			}
		})
	}
}

func TestFoldersPaging(t *testing.T) {
	for _, v := range []grafanastandin.Version{grafanastandin.V9_5, grafanastandin.V12_4} {
		t.Run(string(v), func(t *testing.T) {
			e := newEnv(t, grafanastandin.SeedSpec{Orgs: 1, FoldersPerOrg: 5, Seed: 2, Version: v}, optsFor(v))
			seen := map[string]bool{}
			for _, page := range []string{"1", "2", "3"} {
				code, b := e.do(call{path: "/api/folders?limit=2&page=" + page})
				if code != 200 {
					t.Fatalf("%d %s", code, b)
				}
				for _, f := range decode[[]struct {
					ID         int64
					UID, Title string
				}](t, b) {
					if f.ID == 0 || f.UID == "" || f.Title == "" || seen[f.UID] {
						t.Fatalf("bad or repeated folder %+v", f)
					}
					seen[f.UID] = true
				}
			}
			if len(seen) != 5 {
				t.Fatalf("saw %d folders", len(seen))
			}
		})
	}
}

// TestDashboardGet: §4 "Success", "JSON rewriting", "Not found".
func TestDashboardGet(t *testing.T) {
	for _, v := range grafanastandin.Versions {
		t.Run(string(v), func(t *testing.T) {
			e := newEnv(t, grafanastandin.SeedSpec{FoldersPerOrg: 1, DashboardsPerOrg: 3, Seed: 4, Version: v}, optsFor(v))
			_, b := e.do(call{path: "/api/search?type=dash-db"})
			hits := decode[[]hit](t, b)
			var inFolder, atRoot hit
			for _, h := range hits {
				if h.FolderUID != "" {
					inFolder = h
				} else {
					atRoot = h
				}
			}
			db := rwDB(t, e.dir)
			// The stored JSON disagrees with the row: Grafana serves the row's version.
			if _, err := db.Exec(`UPDATE dashboard SET version = 7, data = json_set(data, '$.version', 99, '$.title', 'Stored title') WHERE uid = ?`, atRoot.UID); err != nil {
				t.Fatal(err)
			}
			st, b := e.do(call{path: "/api/dashboards/uid/" + atRoot.UID})
			if st != 200 {
				t.Fatalf("%d %s", st, b)
			}
			var got struct {
				Dashboard map[string]any `json:"dashboard"`
				Meta      map[string]any `json:"meta"`
			}
			got = decode[struct {
				Dashboard map[string]any `json:"dashboard"`
				Meta      map[string]any `json:"meta"`
			}](t, b)
			if got.Dashboard["version"] != float64(7) || got.Meta["version"] != float64(7) || got.Dashboard["uid"] != atRoot.UID || got.Dashboard["title"] != "Stored title" {
				t.Fatalf("model %v meta %v", got.Dashboard, got.Meta)
			}
			if got.Meta["folderTitle"] != "General" || got.Meta["folderUid"] != "" || got.Meta["createdBy"] != "admin" {
				t.Fatalf("meta %v", got.Meta)
			}
			for _, k := range []string{"type", "canSave", "canEdit", "canAdmin", "canStar", "canDelete", "slug", "url", "expires", "created", "updated",
				"updatedBy", "createdBy", "version", "hasAcl", "isFolder", "folderId", "folderUid", "folderTitle", "folderUrl", "provisioned",
				"provisionedExternalId", "annotationsPermissions"} {
				if _, ok := got.Meta[k]; !ok {
					t.Errorf("meta lacks %s", k)
				}
			}
			if api, ok := got.Meta["apiVersion"]; ok != (v == grafanastandin.V12_4) || ok && api != "v0alpha1" {
				t.Fatalf("meta.apiVersion %v (only 12.x)", api)
			}

			// A folder uid on the dashboards endpoint: the 9.5 store does not filter is_folder.
			_, b = e.do(call{path: "/api/search?type=dash-folder"})
			fuid := decode[[]hit](t, b)[0].UID
			st, b = e.do(call{path: "/api/dashboards/uid/" + fuid})
			if v == grafanastandin.V9_5 {
				if st != 200 || !strings.Contains(string(b), `"isFolder":true`) {
					t.Fatalf("9.5 folder via dashboards api: %d %s", st, b)
				}
			} else if st != 404 {
				t.Fatalf("folder via dashboards api: %d %s", st, b)
			}

			st, b = e.do(call{path: "/api/dashboards/uid/missing"})
			if st != 404 || string(b) != `{"message":"Dashboard not found"}` {
				t.Fatalf("missing: %d %s", st, b)
			}
			// The parent folder row vanished: 404 Folder not found.
			if _, err := db.Exec(`DELETE FROM dashboard WHERE uid = ?`, inFolder.FolderUID); err != nil {
				t.Fatal(err)
			}
			st, b = e.do(call{path: "/api/dashboards/uid/" + inFolder.UID})
			if st != 404 || string(b) != `{"message":"Folder not found"}` {
				t.Fatalf("orphan: %d %s", st, b)
			}
		})
	}
}

// TestSoftDeleted: §7 "dashboard.deleted", §2 "deleted=true".
func TestSoftDeleted(t *testing.T) {
	for _, v := range []grafanastandin.Version{grafanastandin.V11_6, grafanastandin.V12_4} {
		t.Run(string(v), func(t *testing.T) {
			e := newEnv(t, grafanastandin.SeedSpec{FoldersPerOrg: 1, DashboardsPerOrg: 5, DeletedPerOrg: 2, Seed: 4, Version: v}, optsFor(v))
			_, b := e.do(call{path: "/api/search?type=dash-db"})
			if n := len(decode[[]hit](t, b)); n != 3 {
				t.Fatalf("%d live dashboards, want 3", n)
			}
			var gone string
			if err := roDB(t, e.dir).QueryRow(`SELECT uid FROM dashboard WHERE deleted IS NOT NULL LIMIT 1`).Scan(&gone); err != nil {
				t.Fatal(err)
			}
			if st, _ := e.do(call{path: "/api/dashboards/uid/" + gone}); st != 404 {
				t.Fatalf("soft-deleted dashboard served: %d", st)
			}
			st, b := e.do(call{path: "/api/search?deleted=true"})
			if v == grafanastandin.V12_4 {
				if got := decode[[]map[string]any](t, b); st != 200 || len(got) != 2 || got[0]["isDeleted"] != true {
					t.Fatalf("trash: %d %s", st, b)
				}
			}
		})
	}
	if err := grafanastandin.Seed(t.TempDir(), grafanastandin.SeedSpec{DashboardsPerOrg: 2, DeletedPerOrg: 1, Version: grafanastandin.V10_4}); err == nil {
		t.Fatal("10.4 has no deleted column, yet DeletedPerOrg was accepted")
	}
}

func columns(t *testing.T, db *sql.DB, table string) []string {
	t.Helper()
	rows, err := db.Query(`SELECT name FROM pragma_table_info(?) ORDER BY name`, table)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		_ = rows.Scan(&n)
		out = append(out, n)
	}
	return out
}

// TestLayouts: §7 and §3 "SQL table folder", per version.
func TestLayouts(t *testing.T) {
	type layout struct {
		folderUID, deleted, apiVersion, userUID bool
		folderRows                              int
	}
	want := map[grafanastandin.Version]layout{
		grafanastandin.V9_5:  {},
		grafanastandin.V10_4: {folderUID: true, userUID: true},
		grafanastandin.V11_6: {folderUID: true, deleted: true, userUID: true, folderRows: 6},
		grafanastandin.V12_4: {folderUID: true, deleted: true, apiVersion: true, userUID: true, folderRows: 6},
	}
	for _, v := range grafanastandin.Versions {
		t.Run(string(v), func(t *testing.T) {
			dir := t.TempDir()
			if err := grafanastandin.Seed(dir, nestedSpec(v, 10)); err != nil {
				t.Fatal(err)
			}
			s, err := grafanastandin.Open(dir, optsFor(v))
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
			db := roDB(t, dir)
			dash, user := columns(t, db, "dashboard"), columns(t, db, "user")
			w := want[v]
			got := layout{
				folderUID:  slices.Contains(dash, "folder_uid"),
				deleted:    slices.Contains(dash, "deleted"),
				apiVersion: slices.Contains(dash, "api_version"),
				userUID:    slices.Contains(user, "uid"),
			}
			if err := db.QueryRow(`SELECT COUNT(*) FROM folder`).Scan(&got.folderRows); err != nil {
				t.Fatal(err)
			}
			if got != w {
				t.Fatalf("layout %+v, want %+v", got, w)
			}
			for _, c := range []string{"is_admin", "is_service_account", "org_id"} {
				if !slices.Contains(user, c) {
					t.Errorf("user lacks %s", c)
				}
			}
			if c := columns(t, db, "org_user"); !slices.Equal(c, []string{"created", "id", "org_id", "role", "updated", "user_id"}) {
				t.Errorf("org_user columns %v", c)
			}
			if c := columns(t, db, "folder"); !slices.Equal(c, []string{"created", "description", "id", "org_id", "parent_uid", "title", "uid", "updated"}) {
				t.Errorf("folder columns %v", c)
			}
			// Folder rows of the dashboard table keep folder_id 0 (§2 "Folder hit folderUid").
			var n int
			if err := db.QueryRow(`SELECT COUNT(*) FROM dashboard WHERE is_folder = 1 AND folder_id != 0`).Scan(&n); err != nil || n != 0 {
				t.Fatalf("%d folder rows with folder_id, %v", n, err)
			}
			if w.folderRows > 0 {
				// The folder table and dashboard.folder_uid agree on every parent.
				if err := db.QueryRow(`SELECT COUNT(*) FROM folder f JOIN dashboard d ON d.uid = f.uid AND d.org_id = f.org_id
					WHERE COALESCE(f.parent_uid, '') != COALESCE(d.folder_uid, '')`).Scan(&n); err != nil || n != 0 {
					t.Fatalf("%d disagreeing parents, %v", n, err)
				}
			}
		})
	}
}

// TestUpgradeInPlace: a 9.5 database opened by 11.6 gets folder_uid filled
// from folder_id, a deleted column and a synced folder table, as Grafana's
// migrations do (§7 "dashboard.folder_uid", §3 "SQL table folder").
func TestUpgradeInPlace(t *testing.T) {
	dir := t.TempDir()
	if err := grafanastandin.Seed(dir, grafanastandin.SeedSpec{Orgs: 2, FoldersPerOrg: 2, DashboardsPerOrg: 9, Seed: 9, Version: grafanastandin.V9_5}); err != nil {
		t.Fatal(err)
	}
	old := openEnv(t, dir, optsFor(grafanastandin.V9_5))
	_, before := old.do(call{path: "/api/search?limit=5000"})
	old.s.Close()

	e := openEnv(t, dir, optsFor(grafanastandin.V11_6))
	_, after := e.do(call{path: "/api/search?limit=5000"})
	if !bytes.Equal(before, after) {
		t.Fatalf("search changed across the upgrade:\n%s\n%s", before, after)
	}
	db := roDB(t, dir)
	var unset, folders, logged int
	_ = db.QueryRow(`SELECT COUNT(*) FROM dashboard WHERE folder_id > 0 AND folder_uid IS NULL`).Scan(&unset)
	_ = db.QueryRow(`SELECT COUNT(*) FROM folder`).Scan(&folders)
	_ = db.QueryRow(`SELECT COUNT(*) FROM migration_log WHERE migration_id IN ('Add folder_uid for dashboard', 'Add deleted for dashboard', 'Sync dashboard and folder table')`).Scan(&logged)
	if unset != 0 || folders != 4 || logged != 3 {
		t.Fatalf("after upgrade: %d rows without folder_uid, %d folder rows, %d migrations logged", unset, folders, logged)
	}
	if _, b := e.do(call{path: "/api/folders"}); len(decode[[]hit](t, b)) != 2 {
		t.Fatalf("folders after upgrade: %s", b)
	}
}

func TestSeedRejectsImpossibleNesting(t *testing.T) {
	for _, spec := range []grafanastandin.SeedSpec{
		{FoldersPerOrg: 3, FolderDepth: 2, Version: grafanastandin.V9_5},
		{FoldersPerOrg: 3, FolderDepth: 2, Version: grafanastandin.V10_4},
		{FoldersPerOrg: 9, FolderDepth: grafanastandin.MaxFolderDepth + 1},
	} {
		if err := grafanastandin.Seed(t.TempDir(), spec); err == nil {
			t.Errorf("accepted %+v", spec)
		}
	}
}

// TestProxyFaults: §6: Grafana never sends 429; a proxy in front may (429
// with Retry-After, or nginx's 503). /api/health stays reachable.
func TestProxyFaults(t *testing.T) {
	e := newEnv(t, grafanastandin.SeedSpec{DashboardsPerOrg: 1}, stdOpts)
	e.s.Throttle(time.Hour, 7)
	r := e.call(call{path: "/api/search"})
	if r.status != 429 || r.header.Get("Retry-After") != "7" || string(r.body) != `{"message":"Too Many Requests"}` || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("throttled: %d %v %s", r.status, r.header, r.body)
	}
	if r := e.call(call{path: "/api/search", noAuth: true}); r.status != 429 {
		t.Fatalf("the proxy answers before auth: %d", r.status)
	}
	if r := e.call(call{path: "/api/health", noAuth: true}); r.status != 200 {
		t.Fatalf("health while throttled: %d", r.status)
	}
	e.s.Unavailable(time.Hour, 0)
	r = e.call(call{path: "/api/dashboards/uid/x"})
	if r.status != 503 || r.header.Get("Retry-After") != "" || !strings.Contains(string(r.body), "503 Service Temporarily Unavailable") || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") {
		t.Fatalf("unavailable: %d %v %s", r.status, r.header, r.body)
	}
	e.s.Throttle(0, 0)
	if r := e.call(call{path: "/api/search"}); r.status != 200 {
		t.Fatalf("after lifting: %d", r.status)
	}
	e.s.Throttle(50*time.Millisecond, 1)
	if r := e.call(call{path: "/api/search"}); r.status != 429 {
		t.Fatalf("short throttle: %d", r.status)
	}
	time.Sleep(80 * time.Millisecond)
	if r := e.call(call{path: "/api/search"}); r.status != 200 {
		t.Fatalf("throttle did not expire: %d", r.status)
	}
}

func TestAdminPasswordOnlyOnFirstOpen(t *testing.T) {
	dir := t.TempDir()
	s, err := grafanastandin.Open(dir, grafanastandin.Options{AdminPassword: "first"})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	e := openEnv(t, dir, grafanastandin.Options{AdminPassword: "second"})
	if st, b := e.do(call{path: "/api/search", user: "admin", pass: "second"}); st != 401 || !strings.Contains(string(b), "password-auth.failed") {
		t.Fatalf("new password: %d %s, want 401 password-auth.failed", st, b)
	}
	if st, b := e.do(call{path: "/api/search", user: "admin", pass: "first"}); st != 200 {
		t.Fatalf("original password: %d %s", st, b)
	}
	if st, _ := e.do(call{path: "/api/search", user: "admin@localhost", pass: "first"}); st != 200 {
		t.Fatalf("login by email: %d", st)
	}
}

func TestDashboardsAndSave(t *testing.T) {
	e := newEnv(t, grafanastandin.SeedSpec{Orgs: 1, FoldersPerOrg: 1, DashboardsPerOrg: 0, Seed: 3}, stdOpts)
	_, b := e.do(call{path: "/api/folders"})
	folders := decode[[]struct {
		ID         int64
		UID, Title string
	}](t, b)
	if len(folders) != 1 {
		t.Fatalf("folders: %s", b)
	}
	fuid := folders[0].UID

	type saveResp struct {
		ID      int64  `json:"id"`
		UID     string `json:"uid"`
		URL     string `json:"url"`
		Status  string `json:"status"`
		Version int64  `json:"version"`
		Slug    string `json:"slug"`
	}
	steps := []struct {
		name     string
		body     string
		status   int
		want     string // substring
		wantVers int64
	}{
		{"create", `{"dashboard":{"uid":"abc","title":"My Board","panels":[{"id":1}]},"folderUid":"` + fuid + `","overwrite":false}`, 200, `"status":"success"`, 1},
		{"stale version", `{"dashboard":{"uid":"abc","title":"My Board","version":0},"folderUid":"` + fuid + `"}`, 412, `"status":"version-mismatch"`, 0},
		{"update with version", `{"dashboard":{"uid":"abc","title":"My Board","version":1,"panels":[]},"folderUid":"` + fuid + `","message":"edit"}`, 200, `"version":2`, 2},
		{"same title other uid", `{"dashboard":{"uid":"xyz","title":"my board"},"folderUid":"` + fuid + `"}`, 412, `"status":"name-exists"`, 0},
		{"same title in General is fine", `{"dashboard":{"uid":"xyz","title":"My Board"}}`, 200, `"status":"success"`, 1},
		{"overwrite ignores version", `{"dashboard":{"uid":"abc","title":"My Board","version":0},"folderUid":"` + fuid + `","overwrite":true}`, 200, `"version":3`, 3},
		{"missing title", `{"dashboard":{"uid":"t"}}`, 400, `empty`, 0},
		{"unknown folder", `{"dashboard":{"title":"x"},"folderUid":"nope"}`, 400, `folder not found`, 0},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			code, b := e.do(call{method: "POST", path: "/api/dashboards/db", body: st.body})
			if code != st.status || !strings.Contains(string(b), st.want) {
				t.Fatalf("%d %s, want %d containing %s", code, b, st.status, st.want)
			}
			if code == 200 {
				r := decode[saveResp](t, b)
				if r.ID == 0 || r.UID == "" || r.Slug != "my-board" && r.Slug != "x" || !strings.HasPrefix(r.URL, "/d/"+r.UID+"/") || r.Version != st.wantVers {
					t.Errorf("save response %s", b)
				}
			}
		})
	}

	code, b := e.do(call{path: "/api/dashboards/uid/abc"})
	if code != 200 {
		t.Fatalf("get: %d %s", code, b)
	}
	var got struct {
		Dashboard map[string]any `json:"dashboard"`
		Meta      map[string]any `json:"meta"`
	}
	got = decode[struct {
		Dashboard map[string]any `json:"dashboard"`
		Meta      map[string]any `json:"meta"`
	}](t, b)
	if got.Dashboard["uid"] != "abc" || got.Dashboard["title"] != "My Board" || got.Dashboard["version"] != float64(3) {
		t.Errorf("dashboard model %v", got.Dashboard)
	}
	for k, want := range map[string]any{"type": "db", "slug": "my-board", "url": "/d/abc/my-board", "version": float64(3), "folderUid": fuid, "provisioned": false} {
		if got.Meta[k] != want {
			t.Errorf("meta[%s] = %v, want %v", k, got.Meta[k], want)
		}
	}
	for _, k := range []string{"created", "updated", "folderTitle"} {
		if _, ok := got.Meta[k]; !ok {
			t.Errorf("meta lacks %s", k)
		}
	}
	// Grafana encodes a struct: meta before dashboard, meta's fields in
	// DashboardMeta's order, isStarred left out when false (dtos/dashboard.go
	// DashboardFullWithMeta, DashboardMeta @ v12.4.0).
	if top := memberOrder(t, b); !slices.Equal(top, []string{"meta", "dashboard"}) {
		t.Errorf("answer members %v, want meta then dashboard", top)
	}
	wantMeta := []string{"type", "canSave", "canEdit", "canAdmin", "canStar", "canDelete", "slug", "url", "expires", "created", "updated",
		"updatedBy", "createdBy", "version", "hasAcl", "isFolder", "folderId", "folderUid", "folderTitle", "folderUrl", "provisioned",
		"provisionedExternalId", "annotationsPermissions"}
	if m := memberOrder(t, rawMember(t, b, "meta")); !slices.Equal(m, wantMeta) {
		t.Errorf("meta members %v,\nwant %v", m, wantMeta)
	}

	code, b = e.do(call{path: "/api/dashboards/uid/missing"})
	if code != 404 || string(b) != `{"message":"Dashboard not found"}` {
		t.Fatalf("missing: %d %s", code, b)
	}
	// Folders are not dashboards.
	if code, _ = e.do(call{path: "/api/dashboards/uid/" + fuid}); code != 404 {
		t.Fatalf("folder via dashboards api: %d", code)
	}
	// Every save leaves a version row, as in Grafana.
	db, err := sql.Open("sqlite", "file:"+filepath.Join(e.dir, "grafana.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM dashboard_version v JOIN dashboard d ON d.id = v.dashboard_id WHERE d.uid = 'abc'`).Scan(&n); err != nil || n != 3 {
		t.Fatalf("dashboard_version rows for abc: %d %v", n, err)
	}
}

func TestHealthFailing(t *testing.T) {
	tests := []struct {
		name   string
		break_ func(e *env)
	}{
		{"table dropped", func(e *env) {
			db, err := sql.Open("sqlite", filepath.Join(e.dir, "grafana.db"))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, err := db.Exec(`DROP TABLE dashboard`); err != nil {
				t.Fatal(err)
			}
		}},
		{"closed", func(e *env) { e.s.Close() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, grafanastandin.SeedSpec{DashboardsPerOrg: 1}, stdOpts)
			tt.break_(e)
			code, b := e.do(call{path: "/api/health", noAuth: true})
			if code != 503 || !strings.Contains(string(b), `"database": "failing"`) {
				t.Fatalf("%d %s", code, b)
			}
		})
	}
}

func TestSeedDeterministicAndIdempotent(t *testing.T) {
	spec := grafanastandin.SeedSpec{Orgs: 2, FoldersPerOrg: 2, DashboardsPerOrg: 20, Seed: 42}
	dump := func(dir string) string {
		db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "grafana.db")+"?mode=ro")
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		rows, err := db.Query(`SELECT org_id, uid, title, is_folder, COALESCE(folder_uid,''), data FROM dashboard ORDER BY org_id, uid`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var buf bytes.Buffer
		for rows.Next() {
			var org, isF int
			var uid, title, f string
			var data []byte
			if err := rows.Scan(&org, &uid, &title, &isF, &f, &data); err != nil {
				t.Fatal(err)
			}
			buf.WriteString(strings.Join([]string{itoa(org), uid, title, itoa(isF), f, string(data)}, "|") + "\n")
		}
		return buf.String()
	}
	a, b := t.TempDir(), t.TempDir()
	for _, d := range []string{a, b, b} { // b seeded twice
		if err := grafanastandin.Seed(d, spec); err != nil {
			t.Fatal(err)
		}
	}
	da, db := dump(a), dump(b)
	if da != db {
		t.Fatal("same spec gave different content (or reseeding changed it)")
	}
	if n := strings.Count(da, "\n"); n != 2*(2+20) {
		t.Fatalf("%d rows, want 44", n)
	}
	other := t.TempDir()
	spec.Seed = 43
	if err := grafanastandin.Seed(other, spec); err != nil {
		t.Fatal(err)
	}
	if dump(other) == da {
		t.Fatal("another seed gave the same content")
	}
}

func TestBlobData(t *testing.T) {
	e := newEnv(t, grafanastandin.SeedSpec{FoldersPerOrg: 1, DashboardsPerOrg: 4, Seed: 5, BlobData: true}, stdOpts)
	db, err := sql.Open("sqlite", "file:"+filepath.Join(e.dir, "grafana.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var blobs int
	if err := db.QueryRow(`SELECT COUNT(*) FROM dashboard WHERE is_folder = 0 AND typeof(data) = 'blob'`).Scan(&blobs); err != nil || blobs != 4 {
		t.Fatalf("blob rows %d %v", blobs, err)
	}
	_, b := e.do(call{path: "/api/search?type=dash-db"})
	for _, h := range decode[[]hit](t, b) {
		if code, body := e.do(call{path: "/api/dashboards/uid/" + h.UID}); code != 200 || !strings.Contains(string(body), `"panels"`) {
			t.Fatalf("blob dashboard %s: %d %.100s", h.UID, code, body)
		}
	}
}

// TestTokensLiveInTheDatabase: service-account tokens are api_key rows of
// grafana.db (hashed, not in clear), so a restored copy of the volume,
// opened with no token in Options, still accepts them, each for its org.
func TestTokensLiveInTheDatabase(t *testing.T) {
	e := newEnv(t, grafanastandin.SeedSpec{Orgs: 2, DashboardsPerOrg: 2, Seed: 1, Tokens: map[string]int64{"glsa_org2": 2}}, grafanastandin.Options{AdminPassword: "pw"})
	raw, err := os.ReadFile(filepath.Join(e.dir, grafanastandin.DBFile))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), "glsa_org2") {
		t.Fatal("the token is stored in clear")
	}
	e.s.Close()
	again := openEnv(t, e.dir, grafanastandin.Options{AdminPassword: "pw"})
	status, body := again.do(call{method: "GET", path: "/api/org", token: "glsa_org2"})
	if status != 200 || !strings.Contains(string(body), `"id":2`) {
		t.Fatalf("token after reopening: %d %s", status, body)
	}
	if status, body := again.do(call{method: "GET", path: "/api/org", token: "glsa_other"}); status != 401 {
		t.Fatalf("unknown token: %d %s", status, body)
	}
}

// TestSeedBeforeFirstStart: a volume seeded before Grafana ever started
// (no admin yet) keeps the admin's memberships for the admin Grafana then
// creates, also when the seed holds service-account tokens.
func TestSeedBeforeFirstStart(t *testing.T) {
	e := newEnv(t, grafanastandin.SeedSpec{Orgs: 3, DashboardsPerOrg: 1, Seed: 1, AdminNotMemberOf: []int64{3}, Tokens: map[string]int64{"glsa_3": 3}},
		grafanastandin.Options{AdminPassword: "pw"})
	status, body := e.do(call{method: "GET", path: "/api/user/orgs", user: "admin", pass: "pw"})
	if status != 200 || !strings.Contains(string(body), `"orgId":1`) || !strings.Contains(string(body), `"orgId":2`) || strings.Contains(string(body), `"orgId":3`) {
		t.Fatalf("admin memberships: %d %s, want orgs 1 and 2", status, body)
	}
}

// TestSignedInUserCache pins conformance §1 "Signed-in user cache": a
// member's role is served from a cache for its TTL after a read, so a
// membership removed in the database still serves the org until then; a
// non-member is looked up again on every request, so a membership added
// shows at once.
func TestSignedInUserCache(t *testing.T) {
	const ttl = 2 * time.Second
	e := newEnv(t, grafanastandin.SeedSpec{Orgs: 3, FoldersPerOrg: 1, DashboardsPerOrg: 3, Seed: 7, AdminNotMemberOf: []int64{3}},
		grafanastandin.Options{AdminPassword: "pw", SignedInUserTTL: ttl})
	db := rwDB(t, e.dir)
	var admin int64
	if err := db.QueryRow(`SELECT id FROM user WHERE login = 'admin'`).Scan(&admin); err != nil {
		t.Fatal(err)
	}
	hits := func(org string) int {
		t.Helper()
		st, b := e.do(call{path: "/api/search?type=dash-db", org: org})
		if st != 200 {
			t.Fatalf("search in org %s: %d %s", org, st, b)
		}
		return len(decode[[]hit](t, b))
	}

	read := time.Now()
	if n := hits("2"); n != 3 {
		t.Fatalf("member of org 2 sees %d dashboards, want 3", n)
	}
	if _, err := db.Exec(`DELETE FROM org_user WHERE org_id = 2 AND user_id = ?`, admin); err != nil {
		t.Fatal(err)
	}
	n := hits("2")
	if time.Since(read) < ttl && n != 3 {
		t.Errorf("membership removed %s after it was read: org 2 shows %d dashboards, want the cached 3", time.Since(read), n)
	}
	time.Sleep(time.Until(read.Add(ttl + 100*time.Millisecond))) // let the entry expire
	if n := hits("2"); n != 0 {
		t.Errorf("after the TTL the removed membership still shows %d dashboards", n)
	}

	if n := hits("3"); n != 0 {
		t.Fatalf("non-member of org 3 sees %d dashboards", n)
	}
	if _, err := db.Exec(`INSERT INTO org_user (org_id, user_id, role, created, updated) VALUES (3, ?, 'Admin', datetime('now'), datetime('now'))`, admin); err != nil {
		t.Fatal(err)
	}
	if n := hits("3"); n != 3 {
		t.Errorf("membership added right after a non-member request: org 3 shows %d dashboards, want 3 (a non-member is not cached)", n)
	}
}

// memberOrder lists the keys of the JSON object b in the order they come.
func memberOrder(t *testing.T, b []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("%s: not an object (%v)", b, err)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		keys = append(keys, tok.(string))
	}
	return keys
}

// rawMember is the bytes of member k of the JSON object b.
func rawMember(t *testing.T, b []byte, k string) []byte {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return m[k]
}
