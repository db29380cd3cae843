package grafanastandin_test

// Tests of the Grafana 12/13 behaviour: /apis (conformance §8), unified
// storage and the stale legacy table (§7), schema v2 dashboards (§4, §8),
// alert rules, library panels and data sources (§9).

import (
	"bytes"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rebind-dev/rebind/e2e/grafanastandin"
)

// k8sObj is the part of a served object the tests read.
type k8sObj struct {
	Kind       string `json:"kind"`
	APIVersion string `json:"apiVersion"`
	Metadata   struct {
		Name              string            `json:"name"`
		Namespace         string            `json:"namespace"`
		UID               string            `json:"uid"`
		ResourceVersion   string            `json:"resourceVersion"`
		Generation        int64             `json:"generation"`
		CreationTimestamp string            `json:"creationTimestamp"`
		Labels            map[string]string `json:"labels"`
		Annotations       map[string]string `json:"annotations"`
	} `json:"metadata"`
	Spec   map[string]any `json:"spec"`
	Status struct {
		Conversion *struct {
			StoredVersion string `json:"storedVersion"`
			Failed        bool   `json:"failed"`
			Error         string `json:"error"`
		} `json:"conversion"`
	} `json:"status"`
}

type k8sList struct {
	Kind       string `json:"kind"`
	APIVersion string `json:"apiVersion"`
	Metadata   struct {
		Continue        *string `json:"continue"`
		ResourceVersion string  `json:"resourceVersion"`
	} `json:"metadata"`
	Items []k8sObj `json:"items"`
}

func dashPath(version, ns string) string {
	return "/apis/dashboard.grafana.app/" + version + "/namespaces/" + ns + "/dashboards"
}

func folderPath(version, ns string) string {
	return "/apis/folder.grafana.app/" + version + "/namespaces/" + ns + "/folders"
}

// listAll pages through an /apis list, checking the paging contract: a
// continue token on every page but the last, which has none.
func (e *env) listAll(path string, limit int, c call) (pages []k8sList, names []string) {
	e.t.Helper()
	cont := ""
	for i := 0; ; i++ {
		if i > 1000 {
			e.t.Fatal("paging does not end")
		}
		q := url.Values{}
		if limit > 0 {
			q.Set("limit", fmt.Sprint(limit))
		}
		if cont != "" {
			q.Set("continue", cont)
		}
		c.path = path + "?" + q.Encode()
		st, b := e.do(c)
		if st != 200 {
			e.t.Fatalf("GET %s: %d %.400s", c.path, st, b)
		}
		l := decode[k8sList](e.t, b)
		pages = append(pages, l)
		for _, it := range l.Items {
			names = append(names, it.Metadata.Name)
		}
		if l.Metadata.Continue == nil {
			return pages, names
		}
		if *l.Metadata.Continue == "" {
			e.t.Fatalf("empty continue token given out: %.400s", b)
		}
		cont = *l.Metadata.Continue
	}
}

// searchUIDs lists every dashboard uid /api/search gives.
func (e *env) searchUIDs(org string) []string {
	e.t.Helper()
	st, b := e.do(call{path: "/api/search?type=dash-db&limit=5000", org: org})
	if st != 200 {
		e.t.Fatalf("search: %d %.400s", st, b)
	}
	var uids []string
	for _, h := range decode[[]hit](e.t, b) {
		uids = append(uids, h.UID)
	}
	slices.Sort(uids)
	return uids
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// TestAPIsDiscovery: §8 "GET /apis discovery", "Dashboard versions",
// "Folder versions": none before 12; 12.4 dashboards v1beta1 (preferred),
// v0alpha1, v2beta1, v2alpha1 and folders v1beta1; 13.0 v1 (preferred),
// v2 and folders v1.
func TestAPIsDiscovery(t *testing.T) {
	type want struct {
		dash, folder []string // nil: no /apis
	}
	wants := map[grafanastandin.Version]want{
		grafanastandin.V9_5:  {},
		grafanastandin.V10_4: {},
		grafanastandin.V11_6: {},
		grafanastandin.V12_4: {[]string{"v1beta1", "v0alpha1", "v2beta1", "v2alpha1"}, []string{"v1beta1"}},
		grafanastandin.V13_0: {[]string{"v1", "v2"}, []string{"v1"}},
	}
	for _, v := range grafanastandin.AllVersions {
		t.Run(string(v), func(t *testing.T) {
			w := perVersion(v, wants)
			e := newEnv(t, grafanastandin.SeedSpec{DashboardsPerOrg: 2, Seed: 1, Version: v}, optsFor(v))
			if w.dash == nil {
				for _, p := range []string{"/apis", "/apis/dashboard.grafana.app/v1beta1", dashPath("v1beta1", "default"), dashPath("v0alpha1", "default")} {
					if st, b := e.do(call{path: p}); st != 404 || string(b) != `{"message":"Not found"}` {
						t.Fatalf("%s: %d %s, want 404", p, st, b)
					}
				}
				return
			}
			if st, b := e.do(call{path: "/apis", noAuth: true}); st != 401 || !strings.Contains(string(b), "auth.unauthorized") {
				t.Fatalf("no credentials: %d %.400s", st, b)
			}
			gv := func(g string, vs []string) string {
				var parts []string
				for _, x := range vs {
					parts = append(parts, fmt.Sprintf(`{"groupVersion":"%s/%s","version":"%s"}`, g, x, x))
				}
				return fmt.Sprintf(`{"name":"%s","versions":[%s],"preferredVersion":{"groupVersion":"%s/%s","version":"%s"}}`, g, strings.Join(parts, ","), g, vs[0], vs[0])
			}
			dash, folder := gv("dashboard.grafana.app", w.dash), gv("folder.grafana.app", w.folder)
			for _, c := range []call{{path: "/apis"}, {path: "/apis", token: "glsa_token"}} {
				st, b := e.do(c)
				if st != 200 {
					t.Fatalf("%d %.400s", st, b)
				}
				jsonEq(t, b, `{"kind":"APIGroupList","apiVersion":"v1","groups":[`+dash+`,`+folder+`]}`)
			}
			st, b := e.do(call{path: "/apis/dashboard.grafana.app"})
			if st != 200 {
				t.Fatalf("%d %.400s", st, b)
			}
			jsonEq(t, b, `{"kind":"APIGroup","apiVersion":"v1",`+strings.TrimPrefix(dash, "{"))
			for _, x := range w.dash {
				st, b := e.do(call{path: "/apis/dashboard.grafana.app/" + x})
				if st != 200 {
					t.Fatalf("%d %.400s", st, b)
				}
				rl := decode[struct {
					Kind, GroupVersion string
					Resources          []struct {
						Name, Kind string
						Namespaced bool
						Verbs      []string
					}
				}](t, b)
				if rl.Kind != "APIResourceList" || rl.GroupVersion != "dashboard.grafana.app/"+x || len(rl.Resources) != 1 ||
					rl.Resources[0].Name != "dashboards" || rl.Resources[0].Kind != "Dashboard" || !rl.Resources[0].Namespaced || !slices.Contains(rl.Resources[0].Verbs, "list") {
					t.Fatalf("resource list %.400s", b)
				}
				if st, b := e.do(call{path: dashPath(x, "default")}); st != 200 || len(decode[k8sList](t, b).Items) != 2 {
					t.Fatalf("list through %s: %d %.400s", x, st, b)
				}
			}
			notFound := `{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"the server could not find the requested resource","reason":"NotFound","details":{},"code":404}`
			unserved := "v1"
			if v == grafanastandin.V13_0 {
				unserved = "v1beta1"
			}
			for _, p := range []string{"/apis/nope.grafana.app", "/apis/dashboard.grafana.app/" + unserved, dashPath(unserved, "default"),
				"/apis/dashboard.grafana.app/" + w.dash[0] + "/namespaces/default/folders"} {
				st, b := e.do(call{path: p})
				if st != 404 {
					t.Fatalf("%s: %d %.400s", p, st, b)
				}
				jsonEq(t, b, notFound)
			}
		})
	}
}

// apisModes are the Grafana 12+ storage set-ups: 12.4 in legacy mode, 12.4
// with unified storage seeded, and 13.0 (which migrates when it opens).
var apisModes = []struct {
	name    string
	v       grafanastandin.Version
	unified bool // SeedSpec.UnifiedStorage
	dashV   string
	folderV string
}{
	{"12.4-legacy", grafanastandin.V12_4, false, "v1beta1", "v1beta1"},
	{"12.4-unified", grafanastandin.V12_4, true, "v1beta1", "v1beta1"},
	{"13.0", grafanastandin.V13_0, false, "v1", "v1"},
}

// TestAPIsListPaging: §8 "List paging": limit and continue, the last page
// without a token, no duplicates, exactly the dashboards /api/search sees;
// the token formats of 12.4's legacy and unified storage.
func TestAPIsListPaging(t *testing.T) {
	for _, m := range apisModes {
		t.Run(m.name, func(t *testing.T) {
			e := newEnv(t, grafanastandin.SeedSpec{Orgs: 2, FoldersPerOrg: 105, DashboardsPerOrg: 250, Seed: 21, Version: m.v, UnifiedStorage: m.unified}, optsFor(m.v))
			if got := e.s.UnifiedStorage(); got != (m.unified || m.v == grafanastandin.V13_0) {
				t.Fatalf("UnifiedStorage() = %v", got)
			}
			for _, org := range []struct{ ns, header string }{{"default", ""}, {"org-2", "2"}} {
				pages, names := e.listAll(dashPath(m.dashV, org.ns), 100, call{})
				if len(pages) != 3 || len(pages[0].Items) != 100 || len(pages[1].Items) != 100 || len(pages[2].Items) != 50 {
					t.Fatalf("%s: %d pages", org.ns, len(pages))
				}
				if got, want := sorted(names), e.searchUIDs(org.header); !slices.Equal(got, want) {
					t.Fatalf("%s: /apis lists %d dashboards, search %d (or different ones)", org.ns, len(got), len(want))
				}
				if len(slices.Compact(sorted(names))) != 250 {
					t.Fatalf("%s: duplicates", org.ns)
				}
				for _, p := range pages {
					if p.Kind != "DashboardList" || p.APIVersion != "dashboard.grafana.app/"+m.dashV || p.Metadata.ResourceVersion == "" {
						t.Fatalf("list head %+v", p)
					}
					for _, it := range p.Items {
						if it.Metadata.Namespace != org.ns || it.Kind != "Dashboard" {
							t.Fatalf("item %+v", it.Metadata)
						}
					}
				}
				tok := *pages[0].Metadata.Continue
				if m.name == "12.4-legacy" {
					// legacy/token.go @ v12.4.0, newest id first.
					if !strings.HasPrefix(tok, "org:") || !strings.Contains(tok, "/start:") || !strings.HasSuffix(tok, "/folder:") {
						t.Fatalf("legacy token %q", tok)
					}
					var ids []int
					for _, p := range pages {
						for _, it := range p.Items {
							var id int
							fmt.Sscan(it.Metadata.Labels["grafana.app/deprecatedInternalID"], &id)
							ids = append(ids, -id)
						}
					}
					if !slices.IsSorted(ids) || ids[0] == 0 {
						t.Fatalf("legacy order is not newest id first: %v", ids)
					}
				} else {
					raw, err := base64.StdEncoding.DecodeString(tok)
					if err != nil || !strings.HasPrefix(string(raw), `{"o":100,"v":`) {
						t.Fatalf("unified token %q (%s)", tok, raw)
					}
					if !slices.IsSorted(names) {
						t.Fatal("unified order is not by name")
					}
				}
				// Folders: §8 list, legacy storage pages by 100 by default.
				_, fnames := e.listAll(folderPath(m.folderV, org.ns), 0, call{})
				if len(slices.Compact(sorted(fnames))) != 105 {
					t.Fatalf("%s: %d folders", org.ns, len(fnames))
				}
			}
			// limit defaults: 500 items per page for dashboards (more than 250 here).
			if pages, _ := e.listAll(dashPath(m.dashV, "default"), 0, call{}); len(pages) != 1 || len(pages[0].Items) != 250 {
				t.Fatalf("default limit: %d pages", len(pages))
			}
			fpages, _ := e.listAll(folderPath(m.folderV, "default"), 0, call{})
			if m.name == "12.4-legacy" {
				// registry/apis/folders/continue.go: 100 a page, and a full
				// page always hands out a token.
				if len(fpages) != 2 || len(fpages[0].Items) != 100 || len(fpages[1].Items) != 5 {
					t.Fatalf("legacy folder pages %d", len(fpages))
				}
				if st, b := e.do(call{path: folderPath(m.folderV, "default") + "?limit=7&continue=" + url.QueryEscape(*fpages[0].Metadata.Continue)}); st != 500 ||
					!strings.Contains(string(b), "limit does not match continue token") {
					t.Fatalf("limit change: %d %.400s", st, b)
				}
			} else if len(fpages) != 1 {
				t.Fatalf("unified folder pages %d", len(fpages))
			}
			if st, b := e.do(call{path: dashPath(m.dashV, "default") + "?continue=bogus"}); st != 500 {
				t.Fatalf("bad token: %d %.400s", st, b)
			}
		})
	}
}

// TestAPIsPageByteBudget: §8 "List paging": a page may hold fewer than
// `limit` items (max_page_size_bytes), and paging still covers everything.
func TestAPIsPageByteBudget(t *testing.T) {
	for _, m := range apisModes {
		t.Run(m.name, func(t *testing.T) {
			opts := optsFor(m.v)
			opts.APIsMaxPageSizeBytes = 40000
			e := newEnv(t, grafanastandin.SeedSpec{DashboardsPerOrg: 60, Seed: 5, Version: m.v, UnifiedStorage: m.unified}, opts)
			pages, names := e.listAll(dashPath(m.dashV, "default"), 50, call{})
			if len(pages) < 3 || len(pages[0].Items) >= 50 {
				t.Fatalf("%d pages, first of %d items", len(pages), len(pages[0].Items))
			}
			if len(slices.Compact(sorted(names))) != 60 {
				t.Fatalf("%d dashboards", len(names))
			}
		})
	}
}

// TestAPIsObjectShape: §8 "Object shape", and status.conversion when an
// object is served in another version than the stored one.
func TestAPIsObjectShape(t *testing.T) {
	for _, m := range apisModes {
		t.Run(m.name, func(t *testing.T) {
			spec := grafanastandin.SeedSpec{Orgs: 2, FoldersPerOrg: 4, FolderDepth: 2, DashboardsPerOrg: 10, Seed: 8, Version: m.v, UnifiedStorage: m.unified}
			e := newEnv(t, spec, optsFor(m.v))
			_, b := e.do(call{path: "/api/search?type=dash-db", org: "2"})
			for _, h := range decode[[]hit](t, b) {
				st, b := e.do(call{path: "/api/dashboards/uid/" + h.UID, org: "2"})
				if st != 200 {
					t.Fatalf("%d %.400s", st, b)
				}
				legacy := decode[struct {
					Dashboard map[string]any
					Meta      map[string]any
				}](t, b)
				st, b = e.do(call{path: dashPath(m.dashV, "org-2") + "/" + h.UID})
				if st != 200 {
					t.Fatalf("%d %.400s", st, b)
				}
				o := decode[k8sObj](t, b)
				md := o.Metadata
				if o.Kind != "Dashboard" || o.APIVersion != "dashboard.grafana.app/"+m.dashV || md.Name != h.UID || md.Namespace != "org-2" ||
					md.UID == "" || md.UID == h.UID || md.ResourceVersion == "" || md.CreationTimestamp == "" ||
					float64(md.Generation) != legacy.Dashboard["version"] || md.Labels["grafana.app/deprecatedInternalID"] != fmt.Sprint(legacy.Dashboard["id"]) ||
					md.Annotations["grafana.app/folder"] != h.FolderUID || md.Annotations["grafana.app/updatedTimestamp"] == "" ||
					!strings.HasPrefix(md.Annotations["grafana.app/createdBy"], "user:") {
					t.Fatalf("object %.400s", b)
				}
				if o.Spec["title"] != h.Title || o.Spec["panels"] == nil || o.Spec["id"] != nil || o.Spec["uid"] != nil || o.Spec["version"] != nil {
					t.Fatalf("spec %v", o.Spec)
				}
				// Stored v0alpha1, served v1beta1/v1: a conversion status.
				if c := o.Status.Conversion; c == nil || c.StoredVersion != "v0alpha1" || c.Failed {
					t.Fatalf("status %.400s", b)
				}
				if m.v == grafanastandin.V12_4 {
					st, b = e.do(call{path: dashPath("v0alpha1", "org-2") + "/" + h.UID})
					if o := decode[k8sObj](t, b); st != 200 || o.Status.Conversion != nil || o.APIVersion != "dashboard.grafana.app/v0alpha1" {
						t.Fatalf("stored version: %d %.400s", st, b)
					}
				}
				// Served as v2: elements and layout.
				v2 := map[grafanastandin.Version]string{grafanastandin.V12_4: "v2beta1", grafanastandin.V13_0: "v2"}[m.v]
				st, b = e.do(call{path: dashPath(v2, "org-2") + "/" + h.UID})
				if o := decode[k8sObj](t, b); st != 200 || o.Spec["elements"] == nil || o.Spec["layout"] == nil || o.Spec["panels"] != nil ||
					o.Status.Conversion == nil || o.Status.Conversion.StoredVersion != "v0alpha1" {
					t.Fatalf("as v2: %d %.300s", st, b)
				}
			}
			// Folders: name = uid, grafana.app/folder = parent, spec.title.
			_, b = e.do(call{path: "/api/search?type=dash-folder", org: "2"})
			hits := decode[[]hit](t, b)
			if len(hits) != 4 {
				t.Fatalf("folders %.400s", b)
			}
			for _, h := range hits {
				st, b := e.do(call{path: folderPath(m.folderV, "org-2") + "/" + h.UID})
				o := decode[k8sObj](t, b)
				if st != 200 || o.Kind != "Folder" || o.APIVersion != "folder.grafana.app/"+m.folderV || o.Metadata.Name != h.UID ||
					o.Spec["title"] != h.Title || o.Metadata.Annotations["grafana.app/folder"] != h.FolderUID {
					t.Fatalf("folder %d %s (hit %+v)", st, b, h)
				}
			}
			// Missing object: a Kubernetes NotFound Status.
			st, b := e.do(call{path: dashPath(m.dashV, "default") + "/nope"})
			if st != 404 {
				t.Fatalf("%d %.400s", st, b)
			}
			jsonEq(t, b, `{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"dashboards.dashboard.grafana.app \"nope\" not found","reason":"NotFound","details":{"name":"nope","group":"dashboard.grafana.app","kind":"dashboards"},"code":404}`)
			st, b = e.do(call{path: folderPath(m.folderV, "default") + "/nope"})
			if st != 404 || !strings.Contains(string(b), `folders.folder.grafana.app \"nope\" not found`) {
				t.Fatalf("%d %.400s", st, b)
			}
		})
	}
}

// TestAPIsNamespaces: §8 "Path, namespaces" and §1 "Header parsing": the
// namespace picks the org (the header is ignored), default = org 1,
// org-<id> otherwise; a token of another org gets 401; the server admin in
// an org it is not a member of gets the storage's 500 (code-derived); a
// Cloud namespace is refused.
func TestAPIsNamespaces(t *testing.T) {
	for _, m := range apisModes {
		t.Run(m.name, func(t *testing.T) {
			spec := grafanastandin.SeedSpec{Orgs: 3, FoldersPerOrg: 1, DashboardsPerOrg: 4, Seed: 2, Version: m.v, UnifiedStorage: m.unified, AdminNotMemberOf: []int64{3}}
			opts := optsFor(m.v)
			opts.OrgTokens = map[string]int64{"tok3": 3}
			e := newEnv(t, spec, opts)
			org1, org3 := e.searchUIDs(""), []string{}
			_, b := e.do(call{path: "/api/search?type=dash-db", token: "tok3"})
			for _, h := range decode[[]hit](t, b) {
				org3 = append(org3, h.UID)
			}
			slices.Sort(org3)
			if len(org3) != 4 {
				t.Fatalf("org 3 through its token: %.400s", b)
			}
			list := func(c call) (int, []string, []byte) {
				st, b := e.do(c)
				if st != 200 {
					return st, nil, b
				}
				var names []string
				for _, it := range decode[k8sList](t, b).Items {
					names = append(names, it.Metadata.Name)
				}
				return st, sorted(names), b
			}
			mismatch := `{"extra":null,"message":"API key does not belong to the requested organization","messageId":"api-key.organization-mismatch","statusCode":401,"traceID":""}`
			cases := []struct {
				name   string
				c      call
				status int
				names  []string
				body   string
			}{
				{"default is org 1", call{path: dashPath(m.dashV, "default")}, 200, org1, ""},
				{"header ignored", call{path: dashPath(m.dashV, "default"), org: "2"}, 200, org1, ""},
				{"token of org 1", call{path: dashPath(m.dashV, "default"), token: "glsa_token"}, 200, org1, ""},
				{"token of org 3", call{path: dashPath(m.dashV, "org-3"), token: "tok3"}, 200, org3, ""},
				{"token of org 1 in org 3", call{path: dashPath(m.dashV, "org-3"), token: "glsa_token"}, 401, nil, mismatch},
				{"token of org 3 in default", call{path: dashPath(m.dashV, "default"), token: "tok3"}, 401, nil, mismatch},
				{"admin not a member of org 3", call{path: dashPath(m.dashV, "org-3")}, 500, nil,
					`{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"namespace mismatch: got org--1 but expected org-3","code":500}`},
				{"admin, org that does not exist", call{path: dashPath(m.dashV, "org-9")}, 500, nil,
					`{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"namespace mismatch: got org--1 but expected org-9","code":500}`},
				{"admin get in org 3", call{path: dashPath(m.dashV, "org-3") + "/" + org3[0]}, 500, nil,
					`{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"namespace mismatch: got org--1 but expected org-3","code":500}`},
				{"cloud namespace", call{path: dashPath(m.dashV, "stacks-12")}, 403, nil,
					`{"extra":null,"message":"invalid namespace","messageId":"authn.invalid-namespace","statusCode":403,"traceID":""}`},
			}
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					st, names, b := list(c.c)
					if st != c.status {
						t.Fatalf("status %d, want %d: %.400s", st, c.status, b)
					}
					if c.body != "" {
						jsonEq(t, b, c.body)
					}
					if c.names != nil && !slices.Equal(names, c.names) {
						t.Fatalf("names %v, want %v", names, c.names)
					}
				})
			}
		})
	}
}

// TestAPIsForbiddenForNonAdmin: §8 via the namespace authorizer: a user who
// is neither a member of the org nor a server admin gets 403 "invalid org".
// The stand-in's only password user is the admin, so the test demotes it.
func TestAPIsForbiddenForNonAdmin(t *testing.T) {
	dir := t.TempDir()
	if err := grafanastandin.Seed(dir, grafanastandin.SeedSpec{Orgs: 2, DashboardsPerOrg: 1, Seed: 1, Version: grafanastandin.V12_4, AdminNotMemberOf: []int64{2}}); err != nil {
		t.Fatal(err)
	}
	s, err := grafanastandin.Open(dir, optsFor(grafanastandin.V12_4))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := rwDB(t, dir).Exec(`UPDATE user SET is_admin = 0 WHERE login = 'admin'`); err != nil {
		t.Fatal(err)
	}
	e := openEnv(t, dir, optsFor(grafanastandin.V12_4))
	st, b := e.do(call{path: dashPath("v1beta1", "org-2")})
	if st != 403 {
		t.Fatalf("%d %.400s", st, b)
	}
	jsonEq(t, b, `{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"dashboards.dashboard.grafana.app is forbidden: User \"admin\" cannot list resource \"dashboards\" in API group \"dashboard.grafana.app\" in the namespace \"org-2\": invalid org","reason":"Forbidden","details":{"group":"dashboard.grafana.app","kind":"dashboards"},"code":403}`)
}

func sha(b []byte) string { s := sha256.Sum256(b); return fmt.Sprintf("%x", s[:8]) }

// TestV2Dashboards: §4 "Schema v2 dashboards on the legacy endpoint", §8:
// a v2 dashboard is served as stored through v2beta1/v2, converted with
// status.conversion through the classic versions, and converted lossily on
// /api/dashboards/uid with meta.apiVersion v0alpha1 (the serving version):
// a change to a v2-only field is invisible there.
func TestV2Dashboards(t *testing.T) {
	for _, m := range []struct {
		v              grafanastandin.Version
		stored, served string
	}{{grafanastandin.V12_4, "v2beta1", "v1beta1"}, {grafanastandin.V13_0, "v2", "v1"}} {
		t.Run(string(m.v), func(t *testing.T) {
			spec := grafanastandin.SeedSpec{Orgs: 2, FoldersPerOrg: 2, DashboardsPerOrg: 3, V2DashboardsPerOrg: 4, Seed: 13, Version: m.v, UnifiedStorage: true}
			e := newEnv(t, spec, optsFor(m.v))
			_, names := e.listAll(dashPath(m.stored, "org-2"), 0, call{})
			var v2 []string
			for _, n := range names {
				if strings.HasPrefix(n, "v2") {
					v2 = append(v2, n)
				}
			}
			if len(names) != 7 || len(v2) != 4 {
				t.Fatalf("org 2 lists %v", names)
			}
			if got := e.searchUIDs("2"); !slices.Equal(got, sorted(names)) {
				t.Fatalf("search %v, apis %v", got, names)
			}
			uid := v2[0]
			st, b := e.do(call{path: dashPath(m.stored, "org-2") + "/" + uid})
			stored := decode[k8sObj](t, b)
			if st != 200 || stored.Status.Conversion != nil || stored.Spec["elements"] == nil || stored.Spec["panels"] != nil ||
				stored.APIVersion != "dashboard.grafana.app/"+m.stored {
				t.Fatalf("as stored: %d %.400s", st, b)
			}
			st, b = e.do(call{path: dashPath(m.served, "org-2") + "/" + uid})
			conv := decode[k8sObj](t, b)
			if st != 200 || conv.Spec["panels"] == nil || conv.Spec["elements"] != nil || conv.Status.Conversion == nil ||
				conv.Status.Conversion.StoredVersion != m.stored || conv.Status.Conversion.Failed {
				t.Fatalf("converted: %d %.400s", st, b)
			}
			legacyGet := func() ([]byte, map[string]any, map[string]any) {
				st, b := e.do(call{path: "/api/dashboards/uid/" + uid, org: "2"})
				if st != 200 {
					t.Fatalf("legacy: %d %.400s", st, b)
				}
				r := decode[struct {
					Dashboard map[string]any
					Meta      map[string]any
				}](t, b)
				return b, r.Dashboard, r.Meta
			}
			before, dash, meta := legacyGet()
			if meta["apiVersion"] != "v0alpha1" || dash["elements"] != nil || dash["layout"] != nil || dash["uid"] != uid || dash["title"] != stored.Spec["title"] {
				t.Fatalf("legacy answer %.500s", before)
			}
			// Rows become row panels followed by their panels.
			panels := dash["panels"].([]any)
			if len(panels) < 3 || panels[0].(map[string]any)["type"] != "row" || strings.Contains(string(before), "conditionalRendering") {
				t.Fatalf("legacy panels %.500s", before)
			}
			// Change a v2-only field in the stored object: the legacy answer
			// cannot tell; /apis in the stored version can.
			e.s.Close()
			db := rwDB(t, e.dir)
			var value string
			if err := db.QueryRow(`SELECT value FROM resource WHERE name = ?`, uid).Scan(&value); err != nil {
				t.Fatal(err)
			}
			changed := strings.Replace(value, `"operator":"equals"`, `"operator":"notEquals"`, 1)
			if changed == value {
				t.Fatal("no conditionalRendering in the stored object")
			}
			if _, err := db.Exec(`UPDATE resource SET value = ? WHERE name = ?`, changed, uid); err != nil {
				t.Fatal(err)
			}
			e = openEnv(t, e.dir, optsFor(m.v))
			after, _, _ := legacyGet()
			if sha(after) != sha(before) {
				t.Fatalf("the legacy answer changed:\n%s\n%s", before, after)
			}
			_, b2 := e.do(call{path: dashPath(m.stored, "org-2") + "/" + uid})
			if !strings.Contains(string(b2), `"notEquals"`) {
				t.Fatalf("/apis does not show the change: %.300s", b2)
			}
		})
	}
}

// TestUnifiedStorageStaleLegacy: §7 "Unified storage", "When legacy
// dashboard is stale": with the marker, /api and /apis serve `resource`;
// the legacy table lags (edited, created and deleted after the migration),
// so a reader of the legacy table alone gets it wrong. Saving writes
// resource and its history, not the legacy table. A restored copy of the
// volume serves the same.
func TestUnifiedStorageStaleLegacy(t *testing.T) {
	for _, v := range []grafanastandin.Version{grafanastandin.V12_4, grafanastandin.V13_0} {
		t.Run(string(v), func(t *testing.T) {
			const n = 40
			spec := grafanastandin.SeedSpec{Orgs: 2, FoldersPerOrg: 3, FolderDepth: 2, DashboardsPerOrg: n, V2DashboardsPerOrg: 2, Seed: 17, Version: v,
				UnifiedStorage: true, StaleLegacy: true}
			e := newEnv(t, spec, optsFor(v))
			if !e.s.UnifiedStorage() {
				t.Fatal("not in unified mode")
			}
			db := roDB(t, e.dir)
			var marker string
			if err := db.QueryRow(`SELECT sql FROM unifiedstorage_migration_log WHERE migration_id = 'folders and dashboards migration' AND success = 1`).Scan(&marker); err != nil {
				t.Fatalf("marker: %v", err)
			}
			edited, created := 0, 0
			for i := 0; i < n; i++ {
				ed, cr := grafanastandin.StaleLegacyPlan(i)
				switch {
				case cr:
					created++
				case ed:
					edited++
				}
			}
			for _, org := range []struct{ header, ns string }{{"", "default"}, {"2", "org-2"}} {
				orgID := map[string]int{"": 1, "2": 2}[org.header]
				served := e.searchUIDs(org.header)
				var legacy []string
				rows, err := db.Query(`SELECT uid FROM dashboard WHERE org_id = ? AND is_folder = 0 AND deleted IS NULL ORDER BY uid`, orgID)
				if err != nil {
					t.Fatal(err)
				}
				for rows.Next() {
					var u string
					rows.Scan(&u)
					legacy = append(legacy, u)
				}
				rows.Close()
				var unified int
				db.QueryRow(`SELECT COUNT(*) FROM resource WHERE namespace = ? AND "group" = 'dashboard.grafana.app' AND resource = 'dashboards'`, org.ns).Scan(&unified)
				// served = n classic + 2 v2; legacy = n - created + 1 retired.
				if len(served) != n+2 || unified != n+2 || len(legacy) != n-created+1 {
					t.Fatalf("org %s: served %d, resource %d, legacy %d", org.ns, len(served), unified, len(legacy))
				}
				var onlyLegacy, onlyServed int
				for _, u := range legacy {
					if !slices.Contains(served, u) {
						onlyLegacy++
					}
				}
				for _, u := range served {
					if !slices.Contains(legacy, u) {
						onlyServed++
					}
				}
				if onlyLegacy != 1 || onlyServed != created+2 {
					t.Fatalf("org %s: %d only in legacy, %d only served", org.ns, onlyLegacy, onlyServed)
				}
				var behind int
				db.QueryRow(`SELECT COUNT(*) FROM dashboard d JOIN resource r ON r.name = d.uid AND r.namespace = ?
					WHERE d.org_id = ? AND d.version < CAST(json_extract(r.value, '$.metadata.generation') AS INTEGER)`, org.ns, orgID).Scan(&behind)
				if behind != edited {
					t.Fatalf("org %s: %d legacy rows behind, want %d", org.ns, behind, edited)
				}
				var deletes int
				db.QueryRow(`SELECT COUNT(*) FROM resource_history WHERE namespace = ? AND action = 3`, org.ns).Scan(&deletes)
				if deletes != 1 {
					t.Fatalf("org %s: %d deletes in history", org.ns, deletes)
				}
			}
			// Edited dashboards are served at version 2 with the new content.
			ed := editedUID(t, db)
			st, b := e.do(call{path: "/api/dashboards/uid/" + ed})
			if st != 200 || !strings.Contains(string(b), `"version":2`) || !strings.Contains(string(b), "edited after the migration") {
				t.Fatalf("edited: %d %.300s", st, b)
			}
			var legacyData string
			db.QueryRow(`SELECT data FROM dashboard WHERE uid = ?`, ed).Scan(&legacyData)
			if strings.Contains(legacyData, "edited after the migration") {
				t.Fatal("the legacy row is not stale")
			}
			// The retired dashboard is gone from the API, not from the legacy table.
			var retired string
			db.QueryRow(`SELECT uid FROM dashboard WHERE org_id = 1 AND title LIKE 'Retired %'`).Scan(&retired)
			if st, _ := e.do(call{path: "/api/dashboards/uid/" + retired}); retired == "" || st != 404 {
				t.Fatalf("retired %q: %d", retired, st)
			}

			// Saving through /api writes resource (+history), not the legacy table.
			var legacyBefore string
			db.QueryRow(`SELECT group_concat(uid || ':' || version || ':' || length(data), ',') FROM (SELECT * FROM dashboard ORDER BY id)`).Scan(&legacyBefore)
			var histBefore int
			db.QueryRow(`SELECT COUNT(*) FROM resource_history`).Scan(&histBefore)
			st, b = e.do(call{method: "POST", path: "/api/dashboards/db", body: `{"dashboard":{"uid":"` + ed + `","title":"Edited once more","version":2,"panels":[]},"overwrite":false}`})
			if st != 200 || !strings.Contains(string(b), `"version":3`) {
				t.Fatalf("save: %d %.400s", st, b)
			}
			st, b = e.do(call{method: "POST", path: "/api/dashboards/db", body: `{"dashboard":{"uid":"brandnew","title":"Brand new","panels":[]}}`})
			if st != 200 {
				t.Fatalf("create: %d %.400s", st, b)
			}
			st, b = e.do(call{method: "POST", path: "/api/folders", body: `{"uid":"newfolder","title":"New folder"}`})
			if st != 200 {
				t.Fatalf("folder: %d %.400s", st, b)
			}
			var legacyAfter string
			db.QueryRow(`SELECT group_concat(uid || ':' || version || ':' || length(data), ',') FROM (SELECT * FROM dashboard ORDER BY id)`).Scan(&legacyAfter)
			if legacyAfter != legacyBefore {
				t.Fatal("saving changed the legacy table")
			}
			var histAfter, gen int
			var value string
			db.QueryRow(`SELECT COUNT(*) FROM resource_history`).Scan(&histAfter)
			db.QueryRow(`SELECT value FROM resource WHERE name = ?`, ed).Scan(&value)
			db.QueryRow(`SELECT CAST(json_extract(value, '$.metadata.generation') AS INTEGER) FROM resource WHERE name = ?`, ed).Scan(&gen)
			if histAfter != histBefore+3 || gen != 3 || !strings.Contains(value, "Edited once more") {
				t.Fatalf("history %d -> %d, generation %d", histBefore, histAfter, gen)
			}
			for _, name := range []string{"brandnew", "newfolder"} {
				var n int
				db.QueryRow(`SELECT COUNT(*) FROM resource WHERE name = ? AND namespace = 'default'`, name).Scan(&n)
				if n != 1 {
					t.Fatalf("%s not in resource", name)
				}
			}
			st, b = e.do(call{path: dashPath(map[grafanastandin.Version]string{grafanastandin.V12_4: "v1beta1", grafanastandin.V13_0: "v1"}[v], "default") + "/brandnew"})
			if st != 200 || !strings.Contains(string(b), `"grafana.app/createdBy":"user:`) {
				t.Fatalf("new dashboard on /apis: %d %.400s", st, b)
			}

			// A restored copy of the volume serves the same (the scratch
			// projection is rebuilt from `resource`).
			search := func(e *env) []byte {
				_, b := e.do(call{path: "/api/search?limit=5000"})
				return b
			}
			apis := func(e *env) []byte {
				_, b := e.do(call{path: dashPath(map[grafanastandin.Version]string{grafanastandin.V12_4: "v1beta1", grafanastandin.V13_0: "v1"}[v], "default") + "?limit=1000"})
				return b
			}
			wantSearch, wantAPIs := search(e), apis(e)
			e.s.Close()
			restored := t.TempDir()
			copyFile(t, filepath.Join(e.dir, "grafana.db"), filepath.Join(restored, "grafana.db"))
			r := openEnv(t, restored, optsFor(v))
			if !bytes.Equal(search(r), wantSearch) || !bytes.Equal(apis(r), wantAPIs) {
				t.Fatal("the restored volume serves something else")
			}
		})
	}
}

// editedUID finds a dashboard of org 1 edited after the migration.
func editedUID(t *testing.T, db *sql.DB) string {
	t.Helper()
	var uid string
	if err := db.QueryRow(`SELECT d.uid FROM dashboard d JOIN resource r ON r.name = d.uid AND r.namespace = 'default'
		WHERE d.org_id = 1 AND d.version < CAST(json_extract(r.value, '$.metadata.generation') AS INTEGER) ORDER BY d.id LIMIT 1`).Scan(&uid); err != nil {
		t.Fatal(err)
	}
	return uid
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestV13MigratesOnOpen: §7 "same | 13.0": opening a legacy database with
// 13.0 runs the folders and dashboards migration (marker, one resource row
// per live dashboard and folder); the legacy tables are left as they were,
// and /api answers exactly as 12.4 did over the legacy tables (legacy API
// deprecated but operative, §8).
func TestV13MigratesOnOpen(t *testing.T) {
	spec := grafanastandin.SeedSpec{Orgs: 2, FoldersPerOrg: 6, FolderDepth: 3, DashboardsPerOrg: 30, DeletedPerOrg: 2, Seed: 23, Version: grafanastandin.V12_4}
	answers := func(e *env) map[string][]byte {
		out := map[string][]byte{}
		for _, org := range []string{"1", "2"} {
			for _, p := range []string{"/api/search?limit=5000", "/api/folders", "/api/search?type=dash-folder&folderUIDs=general"} {
				_, out[org+p] = e.do(call{path: p, org: org})
			}
			_, b := e.do(call{path: "/api/search?limit=5000", org: org})
			for _, h := range decode[[]hit](t, b) {
				if h.Type == "dash-db" {
					_, out[org+h.UID] = e.do(call{path: "/api/dashboards/uid/" + h.UID, org: org})
				} else {
					_, out[org+h.UID] = e.do(call{path: "/api/folders/" + h.UID, org: org})
				}
			}
		}
		return out
	}
	legacy := newEnv(t, spec, optsFor(grafanastandin.V12_4))
	if legacy.s.UnifiedStorage() {
		t.Fatal("12.4 migrated a database with more than the auto-migration threshold")
	}
	want := answers(legacy)

	spec.Version = grafanastandin.V13_0
	dir := t.TempDir()
	if err := grafanastandin.Seed(dir, spec); err != nil {
		t.Fatal(err)
	}
	db := roDB(t, dir)
	dump := func() string {
		var s string
		db.QueryRow(`SELECT group_concat(uid || ':' || version || ':' || length(data), ',') FROM (SELECT * FROM dashboard ORDER BY id)`).Scan(&s)
		return s
	}
	before := dump()
	var n int
	db.QueryRow(`SELECT COUNT(*) FROM unifiedstorage_migration_log`).Scan(&n)
	if n != 0 {
		t.Fatal("seeded with a marker")
	}
	e := openEnv(t, dir, optsFor(grafanastandin.V13_0))
	if !e.s.UnifiedStorage() {
		t.Fatal("13.0 did not migrate")
	}
	var dashboards, folders, live int
	db.QueryRow(`SELECT COUNT(*) FROM resource WHERE resource = 'dashboards'`).Scan(&dashboards)
	db.QueryRow(`SELECT COUNT(*) FROM resource WHERE resource = 'folders'`).Scan(&folders)
	db.QueryRow(`SELECT COUNT(*) FROM dashboard WHERE is_folder = 0 AND deleted IS NULL`).Scan(&live)
	if dashboards != live || dashboards != 2*28 || folders != 12 {
		t.Fatalf("resource: %d dashboards (%d live), %d folders", dashboards, live, folders)
	}
	if dump() != before {
		t.Fatal("the migration changed the legacy table")
	}
	got := answers(e)
	if len(got) != len(want) {
		t.Fatalf("%d answers, want %d", len(got), len(want))
	}
	for k, w := range want {
		if !bytes.Equal(got[k], w) {
			t.Fatalf("%s differs:\n13.0: %.400s\n12.4: %.400s", k, got[k], w)
		}
	}
	// Opening again does not migrate twice.
	e.s.Close()
	e = openEnv(t, dir, optsFor(grafanastandin.V13_0))
	var again int
	db.QueryRow(`SELECT COUNT(*) FROM resource_history`).Scan(&again)
	if again != dashboards+folders {
		t.Fatalf("%d history rows after reopening", again)
	}
}

// TestAlertRulesLibraryPanelsDataSources: §9 and §7 "alert_rule",
// "library_element": the provisioning list of the request org (no paging,
// orgID/folderUID capitalisation, `for` as a duration), library elements
// paged 1-based with perPage default 100, ordered by name, 404 body for a
// missing uid; data sources of the org.
func TestAlertRulesLibraryPanelsDataSources(t *testing.T) {
	for _, v := range grafanastandin.AllVersions {
		t.Run(string(v), func(t *testing.T) {
			spec := grafanastandin.SeedSpec{Orgs: 2, FoldersPerOrg: 3, DashboardsPerOrg: 2, Seed: 31, Version: v,
				AlertRulesPerOrg: 12, LibraryPanelsPerOrg: 7, DataSourcesPerOrg: 3, AdminNotMemberOf: []int64{2}}
			opts := optsFor(v)
			opts.OrgTokens = map[string]int64{"tok2": 2}
			e := newEnv(t, spec, opts)
			_, b := e.do(call{path: "/api/folders"})
			var folderUIDs []string
			for _, f := range decode[[]hit](t, b) {
				folderUIDs = append(folderUIDs, f.UID)
			}

			type rule struct {
				ID                               int64
				UID                              string
				OrgID                            int64 `json:"orgID"`
				FolderUID                        string
				RuleGroup, Title, Condition, For string
				NoDataState, ExecErrState        string
				Updated                          string
				Data                             []map[string]any
				Labels, Annotations              map[string]string
				IsPaused                         bool
			}
			for _, c := range []struct {
				name string
				c    call
				org  int64
			}{{"admin in org 1", call{}, 1}, {"token of org 2", call{token: "tok2"}, 2}} {
				c.c.path = "/api/v1/provisioning/alert-rules"
				st, b := e.do(c.c)
				if st != 200 {
					t.Fatalf("%s: %d %s", c.name, st, b)
				}
				rules := decode[[]rule](t, b)
				raw := decode[[]map[string]any](t, b)
				if len(rules) != 12 {
					t.Fatalf("%s: %d rules", c.name, len(rules))
				}
				uids := map[string]bool{}
				for i, r := range rules {
					uids[r.UID] = true
					if r.OrgID != c.org || r.ID == 0 || r.Title == "" || r.Condition != "C" || len(r.Data) != 2 || r.RuleGroup == "" ||
						!strings.HasSuffix(r.For, "m") || r.Labels["team"] == "" || r.Annotations["summary"] == "" || r.Updated == "" {
						t.Fatalf("%s: rule %+v", c.name, r)
					}
					if c.org == 1 && !slices.Contains(folderUIDs, r.FolderUID) {
						t.Fatalf("rule folder %q not a folder of org 1", r.FolderUID)
					}
					if i > 0 && (rules[i-1].FolderUID > r.FolderUID || rules[i-1].FolderUID == r.FolderUID && rules[i-1].RuleGroup > r.RuleGroup) {
						t.Fatalf("%s: not ordered by folder, group", c.name)
					}
					_, keep := raw[i]["keep_firing_for"]
					if keep != (v == grafanastandin.V12_4 || v == grafanastandin.V13_0) {
						t.Fatalf("%s: keep_firing_for present = %v", v, keep)
					}
				}
				if len(uids) != 12 {
					t.Fatalf("duplicate uids")
				}
			}
			// The admin in org 2 (not a member): RBAC.
			if st, b := e.do(call{path: "/api/v1/provisioning/alert-rules", org: "2"}); st != 403 {
				t.Fatalf("non-member: %d %s", st, b)
			}

			type element struct {
				ID, OrgID, FolderID, Kind, Version int64
				UID, FolderUID, Name, Type         string
				Model                              map[string]any
				Meta                               struct {
					FolderName, FolderUID string
					CreatedBy             struct{ Name string }
				}
			}
			type page struct {
				Result struct {
					TotalCount, Page, PerPage int
					Elements                  []element
				}
			}
			st, b := e.do(call{path: "/api/library-elements?kind=1"})
			if st != 200 {
				t.Fatalf("%d %s", st, b)
			}
			all := decode[page](t, b)
			if all.Result.TotalCount != 7 || all.Result.Page != 1 || all.Result.PerPage != 100 || len(all.Result.Elements) != 7 {
				t.Fatalf("library elements %+v", all.Result)
			}
			var names []string
			general := 0
			for _, el := range all.Result.Elements {
				names = append(names, el.Name)
				if el.OrgID != 1 || el.Kind != 1 || el.Model["type"] != el.Type || el.Meta.FolderUID != el.FolderUID || el.Meta.CreatedBy.Name != "admin" {
					t.Fatalf("element %+v", el)
				}
				if el.FolderUID == "" {
					general++
					if el.Meta.FolderName != "General" || el.FolderID != 0 {
						t.Fatalf("General element %+v", el)
					}
				} else if !slices.Contains(folderUIDs, el.FolderUID) || el.Meta.FolderName == "General" || el.FolderID == 0 {
					t.Fatalf("foldered element %+v", el)
				}
			}
			if !slices.IsSorted(names) || general != 2 {
				t.Fatalf("names %v, %d in General", names, general)
			}
			st, b = e.do(call{path: "/api/library-elements?kind=1&perPage=3&page=3"})
			p3 := decode[page](t, b)
			if st != 200 || p3.Result.TotalCount != 7 || p3.Result.Page != 3 || p3.Result.PerPage != 3 || len(p3.Result.Elements) != 1 || p3.Result.Elements[0].Name != names[6] {
				t.Fatalf("page 3: %d %+v", st, p3.Result)
			}
			if st, b := e.do(call{path: "/api/library-elements?kind=2"}); st != 200 || decode[page](t, b).Result.TotalCount != 0 {
				t.Fatalf("variables: %d %s", st, b)
			}
			st, b = e.do(call{path: "/api/library-elements/" + all.Result.Elements[0].UID})
			if one := decode[struct{ Result element }](t, b); st != 200 || one.Result.UID != all.Result.Elements[0].UID {
				t.Fatalf("get: %d %s", st, b)
			}
			st, b = e.do(call{path: "/api/library-elements/nope"})
			if st != 404 || string(b) != `{"message":"library element could not be found"}` {
				t.Fatalf("missing: %d %s", st, b)
			}
			if st, b := e.do(call{path: "/api/library-elements?kind=1", token: "tok2"}); st != 200 || decode[page](t, b).Result.Elements[0].OrgID != 2 {
				t.Fatalf("org 2: %d %s", st, b)
			}
			if st, b := e.do(call{path: "/api/library-elements?kind=1", org: "2"}); st != 403 {
				t.Fatalf("non-member: %d %s", st, b)
			}
			if st, b := e.do(call{path: "/api/datasources", org: "2"}); st != 403 {
				t.Fatalf("non-member datasources: %d %s", st, b)
			}

			st, b = e.do(call{path: "/api/datasources"})
			ds := decode[[]struct {
				UID, Name, Type string
				OrgID           int64
				IsDefault       bool
			}](t, b)
			if st != 200 || len(ds) != 3 || !slices.IsSortedFunc(ds, func(a, b struct {
				UID, Name, Type string
				OrgID           int64
				IsDefault       bool
			}) int {
				return strings.Compare(strings.ToLower(a.Name), strings.ToLower(b.Name))
			}) {
				t.Fatalf("datasources: %d %s", st, b)
			}
			defaults := 0
			for _, d := range ds {
				if d.IsDefault {
					defaults++
					if d.UID != "prom-main" {
						t.Fatalf("default %+v", d)
					}
				}
			}
			if defaults != 1 {
				t.Fatalf("%d defaults", defaults)
			}
		})
	}
}

// TestLayoutsOfNewTables: §7 rows "alert_rule", "library_element" (folder_uid
// from 11.x), "Unified storage" (12.x): the tables each version has.
func TestLayoutsOfNewTables(t *testing.T) {
	for _, v := range grafanastandin.AllVersions {
		t.Run(string(v), func(t *testing.T) {
			dir := t.TempDir()
			if err := grafanastandin.Seed(dir, grafanastandin.SeedSpec{FoldersPerOrg: 1, DashboardsPerOrg: 1, Version: v}); err != nil {
				t.Fatal(err)
			}
			db := roDB(t, dir)
			rule, lib := columns(t, db, "alert_rule"), columns(t, db, "library_element")
			for _, c := range []string{"id", "org_id", "uid", "title", "condition", "data", "updated", "version", "namespace_uid", "rule_group",
				"rule_group_idx", "no_data_state", "exec_err_state", "for", "annotations", "labels", "is_paused", "dashboard_uid", "panel_id", "interval_seconds"} {
				if !slices.Contains(rule, c) {
					t.Errorf("alert_rule lacks %s", c)
				}
			}
			v12 := v == grafanastandin.V12_4 || v == grafanastandin.V13_0
			if slices.Contains(rule, "keep_firing_for") != v12 || slices.Contains(rule, "guid") != v12 {
				t.Errorf("alert_rule 12.x columns: %v", rule)
			}
			nested := v12 || v == grafanastandin.V11_6
			if slices.Contains(lib, "folder_uid") != nested || !slices.Contains(lib, "folder_id") || !slices.Contains(lib, "model") {
				t.Errorf("library_element columns %v", lib)
			}
			res := columns(t, db, "resource")
			if v12 {
				if !slices.Equal(res, []string{"action", "folder", "group", "guid", "label_set", "name", "namespace", "previous_resource_version", "resource", "resource_version", "value"}) {
					t.Errorf("resource columns %v", res)
				}
				hist := columns(t, db, "resource_history")
				if !slices.Contains(hist, "generation") || !slices.Contains(hist, "key_path") {
					t.Errorf("resource_history columns %v", hist)
				}
				if c := columns(t, db, "unifiedstorage_migration_log"); !slices.Equal(c, []string{"error", "id", "migration_id", "sql", "success", "timestamp"}) {
					t.Errorf("unifiedstorage_migration_log columns %v", c)
				}
			} else if len(res) != 0 {
				t.Errorf("Grafana %s has a resource table", v)
			}
		})
	}
}

func TestSeedRejectsImpossibleUnified(t *testing.T) {
	for _, spec := range []grafanastandin.SeedSpec{
		{DashboardsPerOrg: 1, UnifiedStorage: true, Version: grafanastandin.V11_6},
		{DashboardsPerOrg: 1, StaleLegacy: true, Version: grafanastandin.V12_4},
		{DashboardsPerOrg: 1, V2DashboardsPerOrg: 1, Version: grafanastandin.V13_0},
		{DashboardsPerOrg: 1, AlertRulesPerOrg: 1},
	} {
		if err := grafanastandin.Seed(t.TempDir(), spec); err == nil {
			t.Errorf("accepted %+v", spec)
		}
	}
}

// TestUnifiedSeedDeterministicAndIdempotent: the same spec gives the same
// resource rows; seeding twice adds nothing.
func TestUnifiedSeedDeterministicAndIdempotent(t *testing.T) {
	spec := grafanastandin.SeedSpec{Orgs: 2, FoldersPerOrg: 2, DashboardsPerOrg: 15, V2DashboardsPerOrg: 2, Seed: 4, Version: grafanastandin.V12_4,
		UnifiedStorage: true, StaleLegacy: true, AlertRulesPerOrg: 3, LibraryPanelsPerOrg: 2, DataSourcesPerOrg: 2}
	dump := func(dir string) string {
		db := roDB(t, dir)
		var out []string
		for _, q := range []string{
			`SELECT group_concat(guid || resource_version || namespace || name || value || action, '|') FROM (SELECT * FROM resource ORDER BY guid)`,
			`SELECT group_concat(guid || resource_version || action || key_path, '|') FROM (SELECT * FROM resource_history ORDER BY guid)`,
			`SELECT group_concat(uid || title || data, '|') FROM (SELECT * FROM dashboard ORDER BY id)`,
			`SELECT group_concat(uid || title || data, '|') FROM (SELECT * FROM alert_rule ORDER BY id)`,
			`SELECT group_concat(uid || name || model, '|') FROM (SELECT * FROM library_element ORDER BY id)`,
			`SELECT COUNT(*) FROM unifiedstorage_migration_log`,
		} {
			var s string
			if err := db.QueryRow(q).Scan(&s); err != nil {
				t.Fatal(err)
			}
			out = append(out, s)
		}
		return strings.Join(out, "\n")
	}
	a, b := t.TempDir(), t.TempDir()
	for _, d := range []string{a, b, b} {
		if err := grafanastandin.Seed(d, spec); err != nil {
			t.Fatal(err)
		}
	}
	if dump(a) != dump(b) {
		t.Fatal("same spec gave different content (or reseeding changed it)")
	}
}

// TestProxyFaultsCoverAPIs: §6: the proxy in front throttles /apis too.
func TestProxyFaultsCoverAPIs(t *testing.T) {
	e := newEnv(t, grafanastandin.SeedSpec{DashboardsPerOrg: 1, Version: grafanastandin.V12_4}, optsFor(grafanastandin.V12_4))
	e.s.Throttle(time.Hour, 2)
	if r := e.call(call{path: "/apis"}); r.status != 429 || r.header.Get("Retry-After") != "2" {
		t.Fatalf("%d %v", r.status, r.header)
	}
}

// TestSeedTenThousandIsFast: rebind's benchmark seeds 10,000 dashboards
// over 3 orgs; that must take seconds, in legacy and unified layouts, and
// opening the unified volume (projection) too.
func TestSeedTenThousandIsFast(t *testing.T) {
	if testing.Short() {
		t.Skip("seeds 10,000 dashboards")
	}
	for _, spec := range []grafanastandin.SeedSpec{
		{Orgs: 3, FoldersPerOrg: 10, DashboardsPerOrg: 3334, Seed: 1, Version: grafanastandin.V11_6},
		{Orgs: 3, FoldersPerOrg: 10, DashboardsPerOrg: 3334, Seed: 1, Version: grafanastandin.V12_4, UnifiedStorage: true},
	} {
		t.Run(fmt.Sprintf("%s-unified=%v", spec.Version, spec.UnifiedStorage), func(t *testing.T) {
			dir := t.TempDir()
			start := time.Now()
			if err := grafanastandin.Seed(dir, spec); err != nil {
				t.Fatal(err)
			}
			seeded := time.Since(start)
			start = time.Now()
			e := openEnv(t, dir, optsFor(spec.Version))
			opened := time.Since(start)
			t.Logf("seed %v, open %v", seeded, opened)
			if seeded > 60*time.Second || opened > 60*time.Second { // generous: shared CI machines
				t.Fatalf("too slow: seed %v, open %v", seeded, opened)
			}
			if st, b := e.do(call{path: "/api/search?type=dash-db&limit=5000&page=1", org: "3"}); st != 200 || len(decode[[]hit](t, b)) != 3334 {
				t.Fatalf("%d", st)
			}
		})
	}
}

func BenchmarkSeedTenThousand(b *testing.B) {
	for _, unified := range []bool{false, true} {
		b.Run(fmt.Sprintf("unified=%v", unified), func(b *testing.B) {
			for b.Loop() {
				dir := b.TempDir()
				if err := grafanastandin.Seed(dir, grafanastandin.SeedSpec{Orgs: 3, FoldersPerOrg: 10, DashboardsPerOrg: 3334, Seed: 1,
					Version: grafanastandin.V12_4, UnifiedStorage: unified}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestV2ConversionFallback: §4 "Schema v2 dashboards on the legacy
// endpoint": a v2 dashboard whose conversion fails is served by
// /api/dashboards/uid in its stored version (v2 spec, meta.apiVersion
// v2beta1), and /apis in a classic version reports status.conversion.failed.
// Tabs convert to expanded rows.
func TestV2ConversionFallback(t *testing.T) {
	dir := t.TempDir()
	if err := grafanastandin.Seed(dir, grafanastandin.SeedSpec{DashboardsPerOrg: 1, V2DashboardsPerOrg: 2, Seed: 3, Version: grafanastandin.V12_4, UnifiedStorage: true}); err != nil {
		t.Fatal(err)
	}
	db := rwDB(t, dir)
	var names []string
	rows, err := db.Query(`SELECT name FROM resource WHERE name LIKE 'v2%' ORDER BY name`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var n string
		rows.Scan(&n)
		names = append(names, n)
	}
	rows.Close()
	broken, tabbed := names[0], names[1]
	for name, repl := range map[string]*strings.Replacer{
		broken: strings.NewReplacer(`"kind":"RowsLayout"`, `"kind":"FancyLayout"`),
		tabbed: strings.NewReplacer(`"kind":"RowsLayout"`, `"kind":"TabsLayout"`, `"rows":`, `"tabs":`, `"kind":"RowsLayoutRow"`, `"kind":"TabsLayoutTab"`),
	} {
		if _, err := db.Exec(`UPDATE resource SET value = ? WHERE name = ?`, repl.Replace(mustValue(t, db, name)), name); err != nil {
			t.Fatal(err)
		}
	}
	e := openEnv(t, dir, optsFor(grafanastandin.V12_4))
	st, b := e.do(call{path: "/api/dashboards/uid/" + broken})
	r := decode[struct {
		Dashboard map[string]any
		Meta      map[string]any
	}](t, b)
	if st != 200 || r.Meta["apiVersion"] != "v2beta1" || r.Dashboard["elements"] == nil || r.Dashboard["uid"] != broken {
		t.Fatalf("fallback: %d %.400s", st, b)
	}
	st, b = e.do(call{path: dashPath("v1beta1", "default") + "/" + broken})
	if o := decode[k8sObj](t, b); st != 200 || o.Status.Conversion == nil || !o.Status.Conversion.Failed || o.Status.Conversion.Error == "" ||
		o.Status.Conversion.StoredVersion != "v2beta1" {
		t.Fatalf("failed conversion: %d %.400s", st, b)
	}
	st, b = e.do(call{path: "/api/dashboards/uid/" + tabbed})
	r = decode[struct {
		Dashboard map[string]any
		Meta      map[string]any
	}](t, b)
	if st != 200 || r.Meta["apiVersion"] != "v0alpha1" || r.Dashboard["elements"] != nil {
		t.Fatalf("tabs: %d %.400s", st, b)
	}
	first := r.Dashboard["panels"].([]any)[0].(map[string]any)
	if first["type"] != "row" || first["collapsed"] != false || first["title"] != "Row 1" {
		t.Fatalf("tab as row: %v", first)
	}
}

func mustValue(t *testing.T, db *sql.DB, name string) string {
	t.Helper()
	var v string
	if err := db.QueryRow(`SELECT value FROM resource WHERE name = ?`, name).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestLegacyListResourceVersionFollowsWrites: the legacy list's
// resourceVersion is MAX(dashboard.updated) (§8 "List paging"), cached by
// the stand-in; a save through the API and a write by another process
// must both show in the next list.
func TestLegacyListResourceVersionFollowsWrites(t *testing.T) {
	e := newEnv(t, grafanastandin.SeedSpec{Version: grafanastandin.V12_4, FoldersPerOrg: 1, DashboardsPerOrg: 3, Seed: 5}, grafanastandin.Options{AdminPassword: "pw", Version: grafanastandin.V12_4})
	listRV := func() string {
		t.Helper()
		pages, _ := e.listAll(dashPath("v1beta1", "default"), 2, call{})
		for _, p := range pages[1:] {
			if p.Metadata.ResourceVersion != pages[0].Metadata.ResourceVersion {
				t.Fatalf("pages of one list at resourceVersions %s and %s, with no write between", pages[0].Metadata.ResourceVersion, p.Metadata.ResourceVersion)
			}
		}
		return pages[0].Metadata.ResourceVersion
	}
	seeded := listRV()

	if st, b := e.do(call{method: "POST", path: "/api/dashboards/db", body: `{"dashboard":{"uid":"rv-new","title":"New","panels":[]}}`}); st != 200 {
		t.Fatalf("save: %d %s", st, b)
	}
	saved := listRV()
	if saved == seeded {
		t.Fatalf("resourceVersion %s unchanged by a save", saved)
	}

	// Another process writes the database file directly.
	db, err := sql.Open("sqlite", filepath.Join(e.dir, grafanastandin.DBFile))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE dashboard SET updated = '2099-01-02 03:04:05' WHERE uid = 'rv-new'`); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprint(time.Date(2099, 1, 2, 3, 4, 5, 0, time.UTC).UnixMilli() * 1000)
	if got := listRV(); got != want {
		t.Fatalf("after another process's write: resourceVersion %s, want %s", got, want)
	}
}
