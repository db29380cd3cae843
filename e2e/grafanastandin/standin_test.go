package grafanastandin_test

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

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
	if spec.DashboardsPerOrg > 0 || spec.Orgs > 0 {
		if err := grafanastandin.Seed(dir, spec); err != nil {
			t.Fatal(err)
		}
	}
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

func (e *env) do(c call) (int, []byte) {
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
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func decode[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
	return v
}

var stdOpts = grafanastandin.Options{AdminUser: "admin", AdminPassword: "pw", Tokens: []string{"glsa_token"}}

func TestAuthAndOrgs(t *testing.T) {
	e := newEnv(t, grafanastandin.SeedSpec{Orgs: 2, FoldersPerOrg: 1, DashboardsPerOrg: 3, Seed: 1}, stdOpts)
	tests := []struct {
		name       string
		c          call
		wantStatus int
		wantBody   []string // substrings
	}{
		{"no auth", call{path: "/api/search", noAuth: true}, 401, []string{`{"message":"Unauthorized"}`}},
		{"bad password", call{path: "/api/search", user: "admin", pass: "nope"}, 401, []string{`"messageId":"password-auth.failed"`}},
		{"unknown user", call{path: "/api/search", user: "bob", pass: "pw"}, 401, []string{`"messageId":"password-auth.failed"`}},
		{"basic ok", call{path: "/api/search"}, 200, []string{`"type":"dash-db"`}},
		{"login by email", call{path: "/api/search", user: "admin@localhost", pass: "pw"}, 200, nil},
		{"bearer ok", call{path: "/api/search", token: "glsa_token"}, 200, []string{`"type":"dash-db"`}},
		{"bearer bad", call{path: "/api/search", token: "glsa_other"}, 401, []string{`"message":"Invalid API key"`}},
		{"health needs no auth", call{path: "/api/health", noAuth: true}, 200, []string{`"database":"ok"`, `"version":"11.4.1"`}},
		{"org header", call{path: "/api/org", org: "2"}, 200, []string{`"id":2`, `"name":"Org 2"`}},
		{"unknown org", call{path: "/api/search", org: "9"}, 403, nil},
		{"bad org header", call{path: "/api/search", org: "x"}, 400, nil},
		{"user orgs", call{path: "/api/user/orgs"}, 200, []string{`{"orgId":1,"name":"Main Org.","role":"Admin"}`, `"orgId":2`}},
		{"user orgs with token", call{path: "/api/user/orgs", token: "glsa_token"}, 404, nil},
		{"all orgs", call{path: "/api/orgs"}, 200, []string{`{"id":1,"name":"Main Org."}`, `{"id":2,"name":"Org 2"}`}},
		{"all orgs with token", call{path: "/api/orgs", token: "glsa_token"}, 403, nil},
		{"token other org", call{path: "/api/search", token: "glsa_token", org: "2"}, 403, nil},
		{"unknown api path", call{path: "/api/nope"}, 404, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, b := e.do(tt.c)
			if st != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", st, tt.wantStatus, b)
			}
			for _, w := range tt.wantBody {
				if !strings.Contains(string(b), w) {
					t.Errorf("body %s lacks %s", b, w)
				}
			}
		})
	}
}

func TestAdminPasswordOnlyOnFirstOpen(t *testing.T) {
	dir := t.TempDir()
	s, err := grafanastandin.Open(dir, grafanastandin.Options{AdminPassword: "first"})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	e := &env{t: t, dir: dir}
	e.s, err = grafanastandin.Open(dir, grafanastandin.Options{AdminPassword: "second"})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(e.s.Handler())
	defer func() { e.srv.Close(); e.s.Close() }()
	if st, b := e.do(call{path: "/api/search", user: "admin", pass: "second"}); st != 401 || !strings.Contains(string(b), "password-auth.failed") {
		t.Fatalf("new password: %d %s, want 401 password-auth.failed", st, b)
	}
	if st, b := e.do(call{path: "/api/search", user: "admin", pass: "first"}); st != 200 {
		t.Fatalf("original password: %d %s", st, b)
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

func TestSearch(t *testing.T) {
	// 3 folders + 1203 dashboards: more than one default page.
	e := newEnv(t, grafanastandin.SeedSpec{Orgs: 1, FoldersPerOrg: 3, DashboardsPerOrg: 1203, Seed: 7}, stdOpts)
	tests := []struct {
		name   string
		query  string
		status int
		count  int
		check  func(t *testing.T, raw []byte, hits []hit)
	}{
		{"default limit 1000", "?type=dash-db", 200, 1000, nil},
		{"page 2 of default", "?type=dash-db&page=2", 200, 203, nil},
		{"max limit", "?type=dash-db&limit=5000", 200, 1203, nil},
		{"over max", "?type=dash-db&limit=5001", 422, -1, nil},
		{"folders only", "?type=dash-folder", 200, 3, func(t *testing.T, _ []byte, hits []hit) {
			for _, h := range hits {
				if h.Type != "dash-folder" || !strings.HasPrefix(h.URL, "/dashboards/f/") {
					t.Errorf("folder hit %+v", h)
				}
			}
		}},
		{"everything", "?limit=5000", 200, 1206, nil},
		{"small pages do not overlap", "?type=dash-db&limit=600&page=3", 200, 3, nil},
		{"beyond last page", "?type=dash-db&page=9", 200, 0, func(t *testing.T, raw []byte, _ []hit) {
			if string(raw) != "[]" {
				t.Errorf("empty page is %s, want []", raw)
			}
		}},
		{"folder fields only in folders", "?type=dash-db&limit=8", 200, 8, func(t *testing.T, raw []byte, hits []hit) {
			var objs []map[string]any
			_ = json.Unmarshal(raw, &objs)
			inFolder, general := 0, 0
			for _, o := range objs {
				for _, k := range []string{"id", "uid", "title", "uri", "url", "slug", "type", "tags", "isStarred", "sortMeta"} {
					if _, ok := o[k]; !ok {
						t.Errorf("hit lacks %s: %v", k, o)
					}
				}
				_, has := o["folderUid"]
				_, hasID := o["folderId"]
				_, hasTitle := o["folderTitle"]
				_, hasURL := o["folderUrl"]
				if has != hasID || has != hasTitle || has != hasURL {
					t.Errorf("folder fields partly present: %v", o)
				}
				if has {
					inFolder++
				} else {
					general++
				}
			}
			if inFolder == 0 || general == 0 {
				t.Errorf("want dashboards in folders and in General, got %d/%d", inFolder, general)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, b := e.do(call{path: "/api/search" + tt.query})
			if st != tt.status {
				t.Fatalf("status %d want %d: %.200s", st, tt.status, b)
			}
			if tt.count < 0 {
				return
			}
			hits := decode[[]hit](t, b)
			if len(hits) != tt.count {
				t.Fatalf("%d hits, want %d", len(hits), tt.count)
			}
			if tt.check != nil {
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
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

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

func TestFoldersPaging(t *testing.T) {
	e := newEnv(t, grafanastandin.SeedSpec{Orgs: 1, FoldersPerOrg: 5, Seed: 2}, stdOpts)
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
	code, b := e.do(call{method: "POST", path: "/api/folders", body: `{"uid":"child","title":"Child","parentUid":"` + firstKey(seen) + `"}`})
	if code != 200 || !strings.Contains(string(b), `"parentUid"`) {
		t.Fatalf("nested folder: %d %s", code, b)
	}
	_, b = e.do(call{path: "/api/folders?parentUid=" + firstKey(seen)})
	if !strings.Contains(string(b), `"uid":"child"`) {
		t.Fatalf("children: %s", b)
	}
}

func firstKey(m map[string]bool) string {
	best := ""
	for k := range m {
		if best == "" || k < best {
			best = k
		}
	}
	return best
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
			if code != 503 || !strings.Contains(string(b), `"database":"failing"`) {
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
