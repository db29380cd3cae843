package inventory_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rebind-dev/rebind/e2e/grafanastandin"
	"github.com/rebind-dev/rebind/pkg/grafana"
	"github.com/rebind-dev/rebind/pkg/inventory"
)

func TestHashDashboard(t *testing.T) {
	base := `{"id":1,"uid":"u","title":"T","version":3,"panels":[{"id":1,"w":12}],"n":1.5,"s":"é<&>"}`
	tests := []struct {
		name  string
		other string
		same  bool
	}{
		{"key order", `{"s":"é<&>","n":1.5,"panels":[{"w":12,"id":1}],"title":"T","uid":"u","version":3,"id":1}`, true},
		{"id and version ignored", `{"id":99,"uid":"u","title":"T","version":17,"panels":[{"id":1,"w":12}],"n":1.5,"s":"é<&>"}`, true},
		{"number spelling", `{"uid":"u","title":"T","panels":[{"id":1.0,"w":1.2e1}],"n":15e-1,"s":"é<&>"}`, true},
		{"escaped unicode", `{"uid":"u","title":"T","panels":[{"id":1,"w":12}],"n":1.5,"s":"\u00e9\u003c\u0026\u003e"}`, true},
		{"uid and title from the row", `{"panels":[{"id":1,"w":12}],"n":1.5,"s":"é<&>"}`, true},
		{"nested id is content", `{"uid":"u","title":"T","panels":[{"id":2,"w":12}],"n":1.5,"s":"é<&>"}`, false},
		{"array order is content", `{"uid":"u","title":"T","panels":[{"id":1,"w":12},{"id":1,"w":12}],"n":1.5,"s":"é<&>"}`, false},
		{"value change", `{"uid":"u","title":"T","panels":[{"id":1,"w":12}],"n":1.25,"s":"é<&>"}`, false},
		{"null vs missing", `{"uid":"u","title":"T","panels":[{"id":1,"w":12}],"n":1.5,"s":"é<&>","x":null}`, false},
	}
	h0, err := inventory.HashDashboard([]byte(base), "u", "T")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := inventory.HashDashboard([]byte(tt.other), "u", "T")
			if err != nil {
				t.Fatal(err)
			}
			if (h == h0) != tt.same {
				t.Fatalf("same=%v, want %v", h == h0, tt.same)
			}
		})
	}
	if _, err := inventory.HashDashboard([]byte(`[1]`), "u", "T"); err == nil {
		t.Fatal("array accepted as dashboard")
	}
	// A different title from the row is a different dashboard.
	if h, _ := inventory.HashDashboard([]byte(base), "u", "Renamed"); h == h0 {
		t.Fatal("title not part of the hash")
	}
}

func dash(uid, folder string, version int64, sum string) inventory.Dashboard {
	return inventory.Dashboard{UID: uid, Title: "title " + uid, FolderUID: folder, Version: version, SHA256: sum}
}

func inv(orgs ...inventory.Org) *inventory.Inventory {
	return &inventory.Inventory{FormatVersion: 1, Orgs: orgs}
}

func TestCompare(t *testing.T) {
	folders := []inventory.Folder{{UID: "f1", Title: "F1"}, {UID: "f2", Title: "F2"}}
	baseline := inv(inventory.Org{ID: 1, Name: "Main Org.", Folders: folders, Dashboards: []inventory.Dashboard{
		dash("a", "", 1, "h-a"), dash("b", "f1", 2, "h-b"), dash("c", "f2", 5, "h-c"),
	}})
	tests := []struct {
		name    string
		current *inventory.Inventory
		ok      bool
		check   func(t *testing.T, o inventory.OrgResult)
	}{
		{"identical", baseline, true, func(t *testing.T, o inventory.OrgResult) {
			if o.Identical != 3 || o.VersionOnly != 0 {
				t.Errorf("%+v", o)
			}
		}},
		{"version bump only", inv(inventory.Org{ID: 1, Folders: folders, Dashboards: []inventory.Dashboard{
			dash("a", "", 2, "h-a"), dash("b", "f1", 3, "h-b"), dash("c", "f2", 5, "h-c")}}), true,
			func(t *testing.T, o inventory.OrgResult) {
				if o.Identical != 3 || o.VersionOnly != 2 {
					t.Errorf("%+v", o)
				}
			}},
		{"missing", inv(inventory.Org{ID: 1, Folders: folders, Dashboards: []inventory.Dashboard{
			dash("a", "", 1, "h-a"), dash("c", "f2", 5, "h-c")}}), false,
			func(t *testing.T, o inventory.OrgResult) {
				if len(o.Missing) != 1 || o.Missing[0].UID != "b" || o.Identical != 2 {
					t.Errorf("%+v", o)
				}
			}},
		{"extra only", inv(inventory.Org{ID: 1, Folders: append(folders, inventory.Folder{UID: "f3", Title: "new"}), Dashboards: []inventory.Dashboard{
			dash("a", "", 1, "h-a"), dash("b", "f1", 2, "h-b"), dash("c", "f2", 5, "h-c"), dash("d", "", 1, "h-d")}}), true,
			func(t *testing.T, o inventory.OrgResult) {
				if len(o.Extra) != 1 || o.Extra[0].UID != "d" || len(o.ExtraFolders) != 1 {
					t.Errorf("%+v", o)
				}
			}},
		{"changed", inv(inventory.Org{ID: 1, Folders: folders, Dashboards: []inventory.Dashboard{
			dash("a", "", 1, "h-a"), dash("b", "f1", 2, "h-b2"), dash("c", "f2", 5, "h-c")}}), false,
			func(t *testing.T, o inventory.OrgResult) {
				if len(o.Changed) != 1 || o.Changed[0].UID != "b" || o.Changed[0].CurrentSHA256 != "h-b2" {
					t.Errorf("%+v", o)
				}
			}},
		{"moved", inv(inventory.Org{ID: 1, Folders: folders, Dashboards: []inventory.Dashboard{
			dash("a", "f1", 1, "h-a"), dash("b", "f1", 2, "h-b"), dash("c", "f2", 5, "h-c")}}), false,
			func(t *testing.T, o inventory.OrgResult) {
				if len(o.Moved) != 1 || o.Moved[0] != (inventory.Move{UID: "a", Title: "title a", From: "", To: "f1"}) {
					t.Errorf("%+v", o)
				}
			}},
		{"folder lost", inv(inventory.Org{ID: 1, Folders: folders[:1], Dashboards: []inventory.Dashboard{
			dash("a", "", 1, "h-a"), dash("b", "f1", 2, "h-b"), dash("c", "f2", 5, "h-c")}}), false,
			func(t *testing.T, o inventory.OrgResult) {
				if len(o.MissingFolders) != 1 || o.MissingFolders[0].UID != "f2" {
					t.Errorf("%+v", o)
				}
			}},
		{"org gone", inv(), false, func(t *testing.T, o inventory.OrgResult) {
			if !o.OrgMissing || len(o.Missing) != 3 {
				t.Errorf("%+v", o)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := inventory.Compare(baseline, tt.current)
			if r.OK() != tt.ok {
				t.Fatalf("OK()=%v want %v\n%s", r.OK(), tt.ok, r.Summary())
			}
			if len(r.Orgs) == 0 || r.Orgs[0].OrgID != 1 {
				t.Fatalf("orgs %+v", r.Orgs)
			}
			tt.check(t, r.Orgs[0])
			s := r.Summary()
			wantLast := "RESULT: FAILED"
			if tt.ok {
				wantLast = "RESULT: OK"
			}
			if !strings.Contains(s, wantLast) {
				t.Fatalf("summary lacks %q:\n%s", wantLast, s)
			}
		})
	}
}

func TestSaveLoad(t *testing.T) {
	in := inv(inventory.Org{ID: 2, Dashboards: []inventory.Dashboard{dash("z", "", 1, "h"), dash("a", "f", 1, "h2")},
		Folders: []inventory.Folder{{UID: "f", Title: "F", ParentUID: "p"}}}, inventory.Org{ID: 1})
	in.Source, in.TakenAt = "http://grafana", time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	path := filepath.Join(t.TempDir(), "inv.json")
	if err := in.SaveFile(path); err != nil {
		t.Fatal(err)
	}
	out, err := inventory.LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip differs:\n%+v\n%+v", in, out)
	}
	raw, _ := os.ReadFile(path)
	if !bytes.Contains(raw, []byte(`"formatVersion": 1`)) || !bytes.Contains(raw, []byte(`"counts"`)) {
		t.Fatalf("file %s", raw)
	}
	tests := []struct {
		name, body, want string
	}{
		{"future version", `{"formatVersion":3,"orgs":[]}`, "formatVersion 3"},
		{"no version", `{"orgs":[]}`, "no formatVersion"},
		{"not json", `hello`, "invalid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := inventory.Load(strings.NewReader(tt.body))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want %q", err, tt.want)
			}
			if tt.name != "not json" && !errors.Is(err, inventory.ErrUnknownFormat) {
				t.Fatalf("err %v is not ErrUnknownFormat", err)
			}
		})
	}
}

type live struct {
	dir string
	s   *grafanastandin.Server
	srv *httptest.Server
	c   *grafana.Client
}

func startStandin(t testing.TB, dir string) *live {
	t.Helper()
	s, err := grafanastandin.Open(dir, grafanastandin.Options{AdminPassword: "pw"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	c, err := grafana.New(grafana.Options{URL: srv.URL, Credentials: grafana.Credentials{User: "admin", Password: "pw"}})
	if err != nil {
		t.Fatal(err)
	}
	l := &live{dir: dir, s: s, srv: srv, c: c}
	t.Cleanup(l.stop)
	return l
}

func (l *live) stop() { l.srv.Close(); l.s.Close() }

func fileDigest(t *testing.T, path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return string(sum[:])
}

func stripMeta(i *inventory.Inventory) *inventory.Inventory {
	cp := *i
	// Where and how it was read legitimately differ.
	cp.Source, cp.TakenAt, cp.API, cp.Notes = "", time.Time{}, "", nil
	return &cp
}

func TestOnlineEqualsOffline(t *testing.T) {
	tests := []struct {
		name string
		spec grafanastandin.SeedSpec
	}{
		{"text data, 3 orgs", grafanastandin.SeedSpec{Orgs: 3, FoldersPerOrg: 4, DashboardsPerOrg: 60, Seed: 1}},
		{"blob data", grafanastandin.SeedSpec{Orgs: 1, FoldersPerOrg: 2, DashboardsPerOrg: 40, Seed: 2, BlobData: true}},
		{"no folders", grafanastandin.SeedSpec{Orgs: 1, DashboardsPerOrg: 10, Seed: 3}},
	}
	ctx := context.Background()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := grafanastandin.Seed(dir, tt.spec); err != nil {
				t.Fatal(err)
			}
			l := startStandin(t, dir)
			// Nested folder, soft-deleted dashboard, a dashboard saved through the API.
			if _, err := l.c.SaveDashboard(ctx, grafana.SaveRequest{Dashboard: json.RawMessage(`{"title":"Saved via API","panels":[{"id":1,"type":"text"}]}`)}); err != nil {
				t.Fatal(err)
			}
			online, err := inventory.FromGrafana(ctx, l.c, inventory.Options{Workers: 4})
			if err != nil {
				t.Fatal(err)
			}
			dbPath := filepath.Join(dir, "grafana.db")
			before := fileDigest(t, dbPath)
			st, _ := os.Stat(dbPath)
			offline, err := inventory.FromSQLite(dbPath)
			if err != nil {
				t.Fatal(err)
			}
			st2, _ := os.Stat(dbPath)
			if fileDigest(t, dbPath) != before || !st.ModTime().Equal(st2.ModTime()) {
				t.Fatal("FromSQLite modified grafana.db")
			}
			if got, want := online.Totals().Dashboards, tt.spec.Orgs*tt.spec.DashboardsPerOrg+1; got != want {
				t.Fatalf("online has %d dashboards, want %d", got, want)
			}
			if !reflect.DeepEqual(stripMeta(online), stripMeta(offline)) {
				r := inventory.Compare(online, offline)
				t.Fatalf("online and offline differ:\n%s", r.Summary())
			}
			if r := inventory.Compare(online, offline); !r.OK() || len(r.Orgs[0].Extra) != 0 {
				t.Fatalf("compare:\n%s", r.Summary())
			}
			if !strings.HasPrefix(offline.Source, "sqlite:") || online.Source != l.srv.URL {
				t.Fatalf("sources %q %q", online.Source, offline.Source)
			}
		})
	}
}

func TestOfflineSchemaVariants(t *testing.T) {
	dir := t.TempDir()
	if err := grafanastandin.Seed(dir, grafanastandin.SeedSpec{Orgs: 2, FoldersPerOrg: 3, DashboardsPerOrg: 30, Seed: 4}); err != nil {
		t.Fatal(err)
	}
	dbPath := filepath.Join(dir, "grafana.db")
	baseline, err := inventory.FromSQLite(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	mutate := func(t *testing.T, stmts ...string) string {
		t.Helper()
		cp := filepath.Join(t.TempDir(), "grafana.db")
		b, _ := os.ReadFile(dbPath)
		if err := os.WriteFile(cp, b, 0o600); err != nil {
			t.Fatal(err)
		}
		db, err := sql.Open("sqlite", cp)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		for _, s := range stmts {
			if _, err := db.Exec(s); err != nil {
				t.Fatalf("%s: %v", s, err)
			}
		}
		return cp
	}
	tests := []struct {
		name    string
		stmts   []string
		ok      bool
		missing int
	}{
		{"pre-10 rows: folder_id only", []string{`UPDATE dashboard SET folder_uid = NULL`}, true, 0},
		{"pre-10 schema: no folder_uid, no deleted", []string{`DROP INDEX IDX_dashboard_org_id_folder_uid`, `ALTER TABLE dashboard DROP COLUMN folder_uid`, `ALTER TABLE dashboard DROP COLUMN deleted`}, true, 0},
		{"grafana 11 soft delete", []string{`UPDATE dashboard SET deleted = '2025-01-01 00:00:00' WHERE id IN (SELECT id FROM dashboard WHERE is_folder = 0 LIMIT 2)`}, false, 2},
		{"data switched to blob", []string{`UPDATE dashboard SET data = CAST(data AS BLOB)`}, true, 0},
		{"row deleted", []string{`DELETE FROM dashboard WHERE id = (SELECT MAX(id) FROM dashboard WHERE is_folder = 0)`}, false, 1},
		{"content edited", []string{`UPDATE dashboard SET data = json_set(data, '$.refresh', '1m') WHERE id = (SELECT MIN(id) FROM dashboard WHERE is_folder = 0)`}, false, 0},
		{"version bumped by upgrade", []string{`UPDATE dashboard SET version = version + 1, data = json_set(data, '$.version', version + 1)`}, true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cur, err := inventory.FromSQLite(mutate(t, tt.stmts...))
			if err != nil {
				t.Fatal(err)
			}
			r := inventory.Compare(baseline, cur)
			missing, _, _, _, _ := r.Totals()
			if r.OK() != tt.ok || missing != tt.missing {
				t.Fatalf("OK=%v missing=%d, want %v %d\n%s", r.OK(), missing, tt.ok, tt.missing, r.Summary())
			}
		})
	}

	if _, err := inventory.FromSQLite(filepath.Join(dir, "nope.db")); err == nil {
		t.Fatal("missing file accepted")
	}
	if _, err := os.Stat(filepath.Join(dir, "nope.db")); err == nil {
		t.Fatal("FromSQLite created a file")
	}
	notGrafana := filepath.Join(t.TempDir(), "other.db")
	db, _ := sql.Open("sqlite", notGrafana)
	db.Exec(`CREATE TABLE t (x)`)
	db.Close()
	if _, err := inventory.FromSQLite(notGrafana); err == nil || !strings.Contains(err.Error(), "not a Grafana database") {
		t.Fatalf("non-grafana db: %v", err)
	}
}

func TestNestedFoldersAndDeletedOnline(t *testing.T) {
	dir := t.TempDir()
	if err := grafanastandin.Seed(dir, grafanastandin.SeedSpec{FoldersPerOrg: 1, DashboardsPerOrg: 4, Seed: 8}); err != nil {
		t.Fatal(err)
	}
	l := startStandin(t, dir)
	ctx := context.Background()
	fs, err := l.c.Folders(ctx)
	if err != nil || len(fs) != 1 {
		t.Fatal(fs, err)
	}
	// No client method creates folders; go through the raw API once.
	req := httptest.NewRequest("POST", "/api/folders", strings.NewReader(`{"uid":"child","title":"Child","parentUid":"`+fs[0].UID+`"}`))
	req.SetBasicAuth("admin", "pw")
	rec := httptest.NewRecorder()
	l.s.Handler().ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	if _, err := l.c.SaveDashboard(ctx, grafana.SaveRequest{Dashboard: []byte(`{"uid":"deep","title":"Deep"}`), FolderUID: "child"}); err != nil {
		t.Fatal(err)
	}
	db, _ := sql.Open("sqlite", filepath.Join(dir, "grafana.db"))
	if _, err := db.Exec(`UPDATE dashboard SET deleted = '2025-01-01 00:00:00' WHERE id = (SELECT MIN(id) FROM dashboard WHERE is_folder = 0)`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	online, err := inventory.FromGrafana(ctx, l.c, inventory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	offline, err := inventory.FromSQLite(filepath.Join(dir, "grafana.db"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(stripMeta(online), stripMeta(offline)) {
		t.Fatalf("differ:\n%s", inventory.Compare(online, offline).Summary())
	}
	o := online.Org(1)
	if o.Counts.Dashboards != 4 || o.Counts.Folders != 2 {
		t.Fatalf("counts %+v", o.Counts)
	}
	var child inventory.Folder
	for _, f := range o.Folders {
		if f.UID == "child" {
			child = f
		}
	}
	if child.ParentUID != fs[0].UID {
		t.Fatalf("nested folder %+v", child)
	}
}

func TestVersionBumpThroughAPI(t *testing.T) {
	dir := t.TempDir()
	if err := grafanastandin.Seed(dir, grafanastandin.SeedSpec{FoldersPerOrg: 1, DashboardsPerOrg: 5, Seed: 6}); err != nil {
		t.Fatal(err)
	}
	l := startStandin(t, dir)
	ctx := context.Background()
	baseline, err := inventory.FromGrafana(ctx, l.c, inventory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Re-save every dashboard unchanged, as an upgrade migration would.
	for _, d := range baseline.Orgs[0].Dashboards {
		got, err := l.c.Dashboard(ctx, d.UID)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.c.SaveDashboard(ctx, grafana.SaveRequest{Dashboard: got.Dashboard, FolderUID: got.Meta.FolderUID, Overwrite: true}); err != nil {
			t.Fatal(err)
		}
	}
	after, err := inventory.FromGrafana(ctx, l.c, inventory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := inventory.Compare(baseline, after)
	if !r.OK() || r.Orgs[0].VersionOnly != 5 {
		t.Fatalf("%s", r.Summary())
	}
	// Then change one for real.
	got, _ := l.c.Dashboard(ctx, baseline.Orgs[0].Dashboards[0].UID)
	var m map[string]any
	_ = json.Unmarshal(got.Dashboard, &m)
	m["refresh"] = "1m"
	b, _ := json.Marshal(m)
	if _, err := l.c.SaveDashboard(ctx, grafana.SaveRequest{Dashboard: b, FolderUID: got.Meta.FolderUID, Overwrite: true}); err != nil {
		t.Fatal(err)
	}
	after, _ = inventory.FromGrafana(ctx, l.c, inventory.Options{})
	if r := inventory.Compare(baseline, after); r.OK() || len(r.Orgs[0].Changed) != 1 {
		t.Fatalf("%s", r.Summary())
	}
}

func TestOnlineErrors(t *testing.T) {
	dir := t.TempDir()
	if err := grafanastandin.Seed(dir, grafanastandin.SeedSpec{DashboardsPerOrg: 3, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	l := startStandin(t, dir)
	bad, _ := grafana.New(grafana.Options{URL: l.srv.URL, Credentials: grafana.Credentials{User: "admin", Password: "wrong", Source: "Secret mon/grafana"}})
	_, err := inventory.FromGrafana(context.Background(), bad, inventory.Options{})
	var ae *grafana.AuthError
	if !errors.As(err, &ae) || !strings.Contains(err.Error(), "Secret mon/grafana") {
		t.Fatalf("want AuthError, got %v", err)
	}
	// One org only, chosen on the client.
	inv, err := inventory.FromGrafana(context.Background(), l.c.WithOrg(1), inventory.Options{})
	if err != nil || len(inv.Orgs) != 1 || inv.Orgs[0].Name != "Main Org." {
		t.Fatalf("%+v %v", inv, err)
	}
}

// TestOnlineEqualsOfflinePerVersion: for every modelled Grafana version the
// same volume read through the API (the admin, plus a token for the org the
// admin is not a member of) and from grafana.db gives identical
// inventories: orgs, folders with their parents (nested where the version
// nests), dashboards. docs/grafana-conformance.md §§1-3, 7.
func TestOnlineEqualsOfflinePerVersion(t *testing.T) {
	ctx := context.Background()
	for _, v := range grafanastandin.Versions {
		t.Run(string(v), func(t *testing.T) {
			spec := grafanastandin.SeedSpec{Version: v, Orgs: 3, FoldersPerOrg: 4, DashboardsPerOrg: 25, Seed: 11, AdminNotMemberOf: []int64{3}}
			nested := slices.Index(grafanastandin.Versions, v) >= slices.Index(grafanastandin.Versions, grafanastandin.V11_6)
			if nested {
				spec.FolderDepth, spec.DeletedPerOrg = 3, 2
			}
			dir := t.TempDir()
			if err := grafanastandin.Seed(dir, spec); err != nil {
				t.Fatal(err)
			}
			s, err := grafanastandin.Open(dir, grafanastandin.Options{Version: v, AdminPassword: "pw", OrgTokens: map[string]int64{"tok3": 3}})
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(s.Handler())
			t.Cleanup(func() { srv.Close(); s.Close() })
			c, err := grafana.New(grafana.Options{URL: srv.URL, Credentials: grafana.Credentials{User: "admin", Password: "pw"}, OrgTokens: []string{"tok3"}})
			if err != nil {
				t.Fatal(err)
			}
			online, err := inventory.FromGrafana(ctx, c, inventory.Options{Workers: 4})
			if err != nil {
				t.Fatal(err)
			}
			offline, err := inventory.FromSQLite(filepath.Join(dir, "grafana.db"))
			if err != nil {
				t.Fatal(err)
			}
			// Soft-deleted dashboards are in the trash, not on view.
			if want := 3 * (25 - spec.DeletedPerOrg); len(online.Orgs) != 3 || online.Totals().Dashboards != want {
				t.Fatalf("online: %d orgs, %d dashboards; want 3 and %d", len(online.Orgs), online.Totals().Dashboards, want)
			}
			depth := 0
			for _, o := range online.Orgs {
				parent := map[string]string{}
				for _, f := range o.Folders {
					parent[f.UID] = f.ParentUID
				}
				for uid := range parent {
					d := 0
					for p := uid; p != ""; p = parent[p] {
						d++
					}
					depth = max(depth, d)
				}
			}
			if nested && depth < 3 {
				t.Fatalf("nested folders only %d deep online: parents lost", depth)
			}
			if !reflect.DeepEqual(stripMeta(online), stripMeta(offline)) {
				t.Fatalf("online and offline differ:\n%s", inventory.Compare(online, offline).Summary())
			}
		})
	}
}

// TestOnlineEqualsOfflineGrafana12And13: Grafana 12.4 and 13.0 through
// /apis and from grafana.db give identical inventories, alert rules and
// library panels included: 12.4 in legacy mode, and with unified storage
// holding v2 dashboards while the legacy table is stale (the offline read
// must take resource and say the legacy copy is stale); 13.0 migrates to
// unified storage on its own.
func TestOnlineEqualsOfflineGrafana12And13(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		v         grafanastandin.Version
		unified   bool
		wantAPI   string
		wantStale bool
	}{
		{"12.4 legacy mode", grafanastandin.V12_4, false, "apis/v1beta1", false},
		{"12.4 unified, stale legacy, v2 dashboards", grafanastandin.V12_4, true, "apis/v1beta1", true},
		{"13.0", grafanastandin.V13_0, false, "apis/v1", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := grafanastandin.SeedSpec{Version: tc.v, Orgs: 2, FoldersPerOrg: 4, FolderDepth: 2, DashboardsPerOrg: 15, Seed: 21,
				AlertRulesPerOrg: 7, LibraryPanelsPerOrg: 4}
			if tc.unified {
				spec.UnifiedStorage, spec.StaleLegacy, spec.V2DashboardsPerOrg = true, true, 3
			}
			dir := t.TempDir()
			if err := grafanastandin.Seed(dir, spec); err != nil {
				t.Fatal(err)
			}
			s, err := grafanastandin.Open(dir, grafanastandin.Options{Version: tc.v, AdminPassword: "pw"})
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(s.Handler())
			t.Cleanup(func() { srv.Close(); s.Close() })
			c, err := grafana.New(grafana.Options{URL: srv.URL, Credentials: grafana.Credentials{User: "admin", Password: "pw"}})
			if err != nil {
				t.Fatal(err)
			}
			online, err := inventory.FromGrafana(ctx, c, inventory.Options{PageSize: 7})
			if err != nil {
				t.Fatal(err)
			}
			offline, err := inventory.FromSQLite(filepath.Join(dir, "grafana.db"))
			if err != nil {
				t.Fatal(err)
			}
			if online.API != tc.wantAPI {
				t.Errorf("online read through %q, want %q", online.API, tc.wantAPI)
			}
			tot := online.Totals()
			if tot.AlertRules != 14 || tot.LibraryPanels != 8 || tot.Dashboards < 30 {
				t.Fatalf("online totals %+v", tot)
			}
			v2 := 0
			for _, o := range online.Orgs {
				for _, d := range o.Dashboards {
					if d.Schema == "v2" {
						v2++
					}
				}
			}
			if tc.unified && v2 != 6 {
				t.Errorf("%d v2 dashboards read, want 6", v2)
			}
			stale := strings.Contains(strings.Join(offline.Notes, " "), "stale")
			if stale != tc.wantStale {
				t.Errorf("offline notes %q: stale legacy reported %v, want %v", offline.Notes, stale, tc.wantStale)
			}
			if !reflect.DeepEqual(stripMeta(online), stripMeta(offline)) {
				t.Fatalf("online and offline differ:\n%s", inventory.Compare(online, offline).Summary())
			}
			if tc.unified {
				// The legacy copy, read on purpose, is the stale one.
				legacy, err := inventory.FromSQLiteStorage(ctx, filepath.Join(dir, "grafana.db"), inventory.StorageLegacy)
				if err != nil {
					t.Fatal(err)
				}
				if r := inventory.Compare(online, legacy); r.OK() {
					t.Fatal("the stale legacy table compares equal to what Grafana serves: the test seeds no staleness")
				}
			}
		})
	}
}

// TestCompareBeyondDashboards: a lost or changed alert rule or library
// panel fails like a lost dashboard; a baseline from before format 2 says
// it checked none of them; schema v2 dashboards read through /apis on one
// side and the legacy API on the other are unverifiable, never identical.
func TestCompareBeyondDashboards(t *testing.T) {
	item := func(uid, sum string) inventory.Item { return inventory.Item{UID: uid, Title: uid, SHA256: sum} }
	dash := func(uid, sum, schema string) inventory.Dashboard {
		return inventory.Dashboard{UID: uid, Title: uid, SHA256: sum, Schema: schema}
	}
	inv := func(api string, rules, panels []inventory.Item, dashes ...inventory.Dashboard) *inventory.Inventory {
		return &inventory.Inventory{FormatVersion: inventory.FormatVersion, API: api,
			Orgs: []inventory.Org{{ID: 1, Dashboards: dashes, AlertRules: rules, LibraryPanels: panels}}}
	}
	rules := []inventory.Item{item("r1", "a"), item("r2", "b")}
	panels := []inventory.Item{item("p1", "c")}
	d1 := dash("d1", "x", "")
	for _, tc := range []struct {
		name       string
		base, cur  *inventory.Inventory
		ok         bool
		want       string
		notChecked bool
	}{
		{"all there", inv("", rules, panels, d1), inv("", rules, panels, d1), true, "RESULT: OK", false},
		{"an alert rule lost", inv("", rules, panels, d1), inv("", rules[:1], panels, d1), false, "missing alert rules: 1", false},
		{"an alert rule changed", inv("", rules, panels, d1), inv("", []inventory.Item{rules[0], item("r2", "B")}, panels, d1), false, "changed alert rules: 1", false},
		{"a library panel lost", inv("", rules, panels, d1), inv("", rules, []inventory.Item{}, d1), false, "missing library panels: 1", false},
		{"a format 1 baseline", inv("", nil, nil, d1), inv("", rules, panels, d1), true, "not in the baseline", true},
		{"v2 through /apis both times", inv("apis/v1beta1", rules, panels, dash("v", "x", "v2")), inv("apis/v1beta1", rules, panels, dash("v", "x", "v2")), true, "RESULT: OK", false},
		{"v2 through /apis, then the legacy API", inv("apis/v1beta1", rules, panels, dash("v", "x", "v2")), inv("", rules, panels, dash("v", "x", "")), false, "unverifiable", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := inventory.Compare(tc.base, tc.cur)
			if r.OK() != tc.ok || !strings.Contains(r.Summary(), tc.want) {
				t.Fatalf("OK %v (want %v), summary:\n%s", r.OK(), tc.ok, r.Summary())
			}
			if got := r.ItemTotals().NotChecked > 0; got != tc.notChecked {
				t.Errorf("items not checked %v, want %v", got, tc.notChecked)
			}
			if tc.name == "v2 through /apis, then the legacy API" && r.Orgs[0].Identical != 0 {
				t.Errorf("an unverifiable dashboard counted as identical")
			}
		})
	}
}

// TestOfflineAmbiguousStorage: with two different copies and no logged
// migration, the file cannot say which one Grafana serves: refused, unless
// the copy is chosen.
func TestOfflineAmbiguousStorage(t *testing.T) {
	dir := t.TempDir()
	if err := grafanastandin.Seed(dir, grafanastandin.SeedSpec{Version: grafanastandin.V12_4, Orgs: 1, DashboardsPerOrg: 12, Seed: 5,
		UnifiedStorage: true, StaleLegacy: true}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "grafana.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`DELETE FROM unifiedstorage_migration_log`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = inventory.FromSQLite(path)
	var amb *inventory.AmbiguousStorageError
	if !errors.As(err, &amb) || !strings.Contains(err.Error(), "--db-storage") {
		t.Fatalf("want AmbiguousStorageError naming --db-storage, got %v", err)
	}
	for _, st := range []inventory.Storage{inventory.StorageLegacy, inventory.StorageUnified} {
		if _, err := inventory.FromSQLiteStorage(context.Background(), path, st); err != nil {
			t.Errorf("storage %q chosen: %v", st, err)
		}
	}
}
