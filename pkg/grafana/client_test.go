package grafana_test

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/rebind-dev/rebind/e2e/grafanastandin"
	"github.com/rebind-dev/rebind/pkg/grafana"
)

const secretPassword = "s3cret-Pa55word-never-shown"

func fastOpts(url string) grafana.Options {
	return grafana.Options{URL: url, MaxAttempts: 4, RetryBaseDelay: time.Millisecond, RetryMaxDelay: 5 * time.Millisecond, Timeout: 2 * time.Second}
}

// flaky fails the first n requests with status, then answers 200 [].
func flaky(n int, status int, calls *atomic.Int32) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if int(calls.Add(1)) <= n {
			w.WriteHeader(status)
			fmt.Fprint(w, `{"message":"boom"}`)
			return
		}
		fmt.Fprint(w, `[]`)
	}
}

func TestRetries(t *testing.T) {
	tests := []struct {
		name      string
		fail      int
		status    int
		wantCalls int32
		wantErr   func(error) bool
	}{
		{"503 twice then ok", 2, 503, 3, nil},
		{"500 three times then ok", 3, 500, 4, nil},
		{"503 always", 100, 503, 4, func(err error) bool {
			var u *grafana.UnreachableError
			return errors.As(err, &u) && u.Status == 503 && u.Attempts == 4
		}},
		{"400 never retried", 100, 400, 1, func(err error) bool {
			var a *grafana.APIError
			return errors.As(err, &a) && a.Status == 400
		}},
		{"404 never retried", 100, 404, 1, func(err error) bool { return errors.Is(err, grafana.ErrNotFound) }},
		{"422 never retried", 100, 422, 1, func(err error) bool {
			var a *grafana.APIError
			return errors.As(err, &a) && a.Status == 422 && strings.Contains(a.Error(), "boom")
		}},
		{"401 never retried", 100, 401, 1, func(err error) bool {
			var a *grafana.AuthError
			return errors.As(err, &a) && a.Kind == grafana.AuthMissing
		}},
		{"403 never retried", 100, 403, 1, func(err error) bool {
			var a *grafana.AuthError
			return errors.As(err, &a) && a.Kind == grafana.AuthForbidden
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int32
			srv := httptest.NewServer(flaky(tt.fail, tt.status, &calls))
			defer srv.Close()
			c, err := grafana.New(fastOpts(srv.URL))
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Folders(context.Background())
			if got := calls.Load(); got != tt.wantCalls {
				t.Errorf("%d calls, want %d", got, tt.wantCalls)
			}
			if tt.wantErr == nil && err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if tt.wantErr != nil && !tt.wantErr(err) {
				t.Fatalf("unexpected error %T %v", err, err)
			}
		})
	}
}

func TestPostNotRetriedOn5xx(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(flaky(100, 503, &calls))
	defer srv.Close()
	c, _ := grafana.New(fastOpts(srv.URL))
	_, err := c.SaveDashboard(context.Background(), grafana.SaveRequest{Dashboard: []byte(`{"title":"x"}`)})
	if err == nil || calls.Load() != 1 {
		t.Fatalf("err %v after %d calls, want an error after 1", err, calls.Load())
	}
}

func TestUnreachableNamesURL(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	c, _ := grafana.New(fastOpts("http://admin:" + secretPassword + "@" + addr + "/grafana/"))
	_, err = c.Health(context.Background())
	var u *grafana.UnreachableError
	if !errors.As(err, &u) || u.Attempts != 4 {
		t.Fatalf("got %T %v", err, err)
	}
	if !strings.Contains(err.Error(), "http://"+addr+"/grafana") || strings.Contains(err.Error(), secretPassword) {
		t.Fatalf("error should name the URL without the password: %v", err)
	}
}

func TestTimeoutRetried(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			time.Sleep(300 * time.Millisecond)
		}
		fmt.Fprint(w, `[]`)
	}))
	defer srv.Close()
	o := fastOpts(srv.URL)
	o.Timeout = 100 * time.Millisecond
	c, _ := grafana.New(o)
	if _, err := c.Folders(context.Background()); err != nil || calls.Load() != 2 {
		t.Fatalf("err %v calls %d", err, calls.Load())
	}
}

type standin struct {
	dir string
	s   *grafanastandin.Server
	srv *httptest.Server
}

func newStandin(t *testing.T, spec grafanastandin.SeedSpec, opts grafanastandin.Options) *standin {
	t.Helper()
	dir := t.TempDir()
	if err := grafanastandin.Seed(dir, spec); err != nil {
		t.Fatal(err)
	}
	s, err := grafanastandin.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(func() { srv.Close(); s.Close() })
	return &standin{dir: dir, s: s, srv: srv}
}

func TestAuthErrors(t *testing.T) {
	st := newStandin(t, grafanastandin.SeedSpec{Orgs: 2, DashboardsPerOrg: 2, Seed: 1},
		grafanastandin.Options{AdminPassword: secretPassword, Tokens: []string{"glsa_good"}})
	kube := fake.NewClientset(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "monitoring", Name: "grafana"},
		Data:       map[string][]byte{"admin-user": []byte("admin"), "admin-password": []byte("a-new-random-password")},
	})
	fromSecret, err := grafana.CredentialsFromSecret(context.Background(), kube, "monitoring", "grafana")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		creds    grafana.Credentials
		wantKind grafana.AuthKind // 0: success
		wantMsg  []string
	}{
		{"good password", grafana.Credentials{User: "admin", Password: secretPassword}, 0, nil},
		{"good token", grafana.Credentials{Token: "glsa_good"}, 0, nil},
		{"no credentials", grafana.Credentials{}, grafana.AuthMissing, []string{"401 Unauthorized", "--grafana-token"}},
		{"bad token", grafana.Credentials{Token: "glsa_bad"}, grafana.AuthTokenRejected, []string{"bearer token"}},
		{"password from a new Secret", fromSecret, grafana.AuthPasswordRejected,
			[]string{"password-auth.failed", "Secret monitoring/grafana", "first start", "grafana cli admin reset-admin-password"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := fastOpts(st.srv.URL)
			o.Credentials = tt.creds
			c, err := grafana.New(o)
			if err != nil {
				t.Fatal(err)
			}
			org, err := c.CurrentOrg(context.Background())
			if tt.wantKind == 0 {
				if err != nil || org.ID != 1 {
					t.Fatalf("current org %v err %v", org, err)
				}
				return
			}
			var ae *grafana.AuthError
			if !errors.As(err, &ae) || ae.Kind != tt.wantKind {
				t.Fatalf("got %T %v, want AuthError kind %d", err, err, tt.wantKind)
			}
			for _, m := range tt.wantMsg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error lacks %q: %v", m, err)
				}
			}
			for _, secret := range []string{secretPassword, "a-new-random-password", "glsa_bad"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error leaks a credential: %v", err)
				}
			}
		})
	}
}

// TestResolveAccess pins, for every modelled Grafana version, which orgs
// rebind reads with which credentials, and that an org it cannot read
// stops it (docs/grafana-conformance.md §1). Org 3's admin membership is
// missing, as for an org created by another admin.
func TestResolveAccess(t *testing.T) {
	admin := grafana.Credentials{User: "admin", Password: "pw"}
	for _, v := range grafanastandin.Versions {
		st := newStandin(t, grafanastandin.SeedSpec{Version: v, Orgs: 3, DashboardsPerOrg: 1, Seed: 1, AdminNotMemberOf: []int64{3}},
			grafanastandin.Options{Version: v, AdminPassword: "pw", Tokens: []string{"tok1"}, OrgTokens: map[string]int64{"tok3": 3}})
		tests := []struct {
			name      string
			creds     grafana.Credentials
			tokens    []string
			lister    *grafana.Credentials
			want      []int64
			wantOrgs  []int64 // read
			wantErr   any     // pointer to the error type expected
			wantInErr []string
		}{
			{name: "admin, not a member of org 3", creds: admin, wantErr: new(*grafana.UnreadableOrgsError), wantInErr: []string{"3 (", "--grafana-token", "--grafana-org-id", `"admin"`}},
			{name: "admin plus a token of org 3", creds: admin, tokens: []string{"tok3"}, wantOrgs: []int64{1, 2, 3}},
			{name: "admin limited on purpose", creds: admin, want: []int64{1, 2}, wantOrgs: []int64{1, 2}},
			{name: "admin asks for org 3", creds: admin, want: []int64{3}, wantErr: new(*grafana.UnreadableOrgsError), wantInErr: []string{"was requested"}},
			{name: "token alone cannot tell which orgs exist", creds: grafana.Credentials{Token: "tok1"}, wantErr: new(*grafana.UnknownOrgsError), wantInErr: []string{"--grafana-org-id"}},
			{name: "token with admin listing names the orgs it cannot read", creds: grafana.Credentials{Token: "tok1"}, lister: &admin, wantErr: new(*grafana.UnreadableOrgsError), wantInErr: []string{"2 (", "3 ("}},
			{name: "one token per org", creds: grafana.Credentials{Token: "tok1"}, tokens: []string{"tok3"}, lister: &admin, want: []int64{1, 3}, wantOrgs: []int64{1, 3}},
			{name: "token limited to its org", creds: grafana.Credentials{Token: "tok1"}, want: []int64{1}, wantOrgs: []int64{1}},
		}
		for _, tt := range tests {
			t.Run(string(v)+"/"+tt.name, func(t *testing.T) {
				o := fastOpts(st.srv.URL)
				o.Credentials, o.OrgTokens, o.ListCredentials = tt.creds, tt.tokens, tt.lister
				c, _ := grafana.New(o)
				acc, err := c.ResolveAccess(context.Background(), tt.want)
				if tt.wantErr != nil {
					if err == nil || !errors.As(err, tt.wantErr) {
						t.Fatalf("want %T, got %v", tt.wantErr, err)
					}
					for _, m := range tt.wantInErr {
						if !strings.Contains(err.Error(), m) {
							t.Errorf("error lacks %q: %v", m, err)
						}
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				var got []int64
				for _, r := range acc.Orgs {
					got = append(got, r.Org.ID)
					hits, err := r.Client.SearchDashboards(context.Background())
					if err != nil || len(hits) != 1 {
						t.Errorf("org %d via %s: %d hits, %v", r.Org.ID, r.Via, len(hits), err)
					}
				}
				if fmt.Sprint(got) != fmt.Sprint(tt.wantOrgs) {
					t.Fatalf("orgs read %v, want %v", got, tt.wantOrgs)
				}
				if acc.Complete != (len(tt.want) == 0) {
					t.Errorf("complete %v with want %v", acc.Complete, tt.want)
				}
			})
		}
	}
}

// TestCheckOrgCatchesOrgMinusOne: Grafana does not refuse X-Grafana-Org-Id
// for an org the user is not a member of; it runs the request in org -1,
// where search answers an empty list. Only /api/org tells.
func TestCheckOrgCatchesOrgMinusOne(t *testing.T) {
	st := newStandin(t, grafanastandin.SeedSpec{Orgs: 2, DashboardsPerOrg: 3, Seed: 1, AdminNotMemberOf: []int64{2}},
		grafanastandin.Options{AdminPassword: "pw"})
	o := fastOpts(st.srv.URL)
	o.Credentials = grafana.Credentials{User: "admin", Password: "pw"}
	c, _ := grafana.New(o)
	hits, err := c.WithOrg(2).SearchDashboards(context.Background())
	if err != nil || len(hits) != 0 {
		t.Fatalf("a non-member's search of org 2: %d hits, %v (Grafana answers an empty list)", len(hits), err)
	}
	var wrong *grafana.WrongOrgError
	if err := c.WithOrg(2).CheckOrg(context.Background(), 2); !errors.As(err, &wrong) {
		t.Fatalf("CheckOrg(2) = %v, want WrongOrgError", err)
	}
	if err := c.WithOrg(1).CheckOrg(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
}

// TestOrgListsPaging: /api/orgs pages from 0, not 1 as search does.
func TestOrgListsPaging(t *testing.T) {
	var pages []string
	mux := http.NewServeMux()
	mux.HandleFunc("/api/orgs", func(w http.ResponseWriter, r *http.Request) {
		pages = append(pages, r.URL.Query().Get("page"))
		if r.URL.Query().Get("page") == "0" {
			fmt.Fprint(w, `[{"id":1,"name":"Main Org."},{"id":4,"name":"four"}]`)
			return
		}
		fmt.Fprint(w, `[]`)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	o := fastOpts(srv.URL)
	o.Credentials = grafana.Credentials{User: "admin", Password: "pw"}
	c, _ := grafana.New(o)
	orgs, err := c.AllOrgs(context.Background())
	if err != nil || len(orgs) != 2 || orgs[1].ID != 4 || orgs[1].Name != "four" || pages[0] != "0" {
		t.Fatalf("orgs %v err %v pages %v", orgs, err, pages)
	}
}

// TestThrottling: 429 (and 503 with Retry-After) are waited out as asked,
// for GET and POST, bounded in total; a 503 without it stays a server error.
func TestThrottling(t *testing.T) {
	for _, tc := range []struct {
		name       string
		status     int
		retryAfter string
		post       bool
		n          int
		budget     time.Duration
		wantErr    any
	}{
		{name: "429 with Retry-After: 1, three times", status: 429, retryAfter: "1", n: 3},
		{name: "429 without Retry-After", status: 429, n: 3},
		{name: "429 on a save (not processed, safe to repeat)", status: 429, retryAfter: "0", post: true, n: 2},
		{name: "503 with Retry-After", status: 503, retryAfter: "1", n: 2},
		{name: "429 beyond the budget", status: 429, retryAfter: "1", n: 100, budget: 1500 * time.Millisecond, wantErr: new(*grafana.ThrottledError)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if int(calls.Add(1)) <= tc.n {
					if tc.retryAfter != "" {
						w.Header().Set("Retry-After", tc.retryAfter)
					}
					w.WriteHeader(tc.status)
					return
				}
				if r.Method == http.MethodPost {
					fmt.Fprint(w, `{"status":"success","uid":"x"}`)
					return
				}
				fmt.Fprint(w, `{"id":1,"name":"Main Org."}`)
			}))
			defer srv.Close()
			o := fastOpts(srv.URL)
			o.MaxThrottleWait = tc.budget
			c, _ := grafana.New(o)
			start := time.Now()
			var err error
			if tc.post {
				_, err = c.SaveDashboard(context.Background(), grafana.SaveRequest{Dashboard: []byte(`{"title":"x"}`)})
			} else {
				_, err = c.CurrentOrg(context.Background())
			}
			if tc.wantErr != nil {
				if !errors.As(err, tc.wantErr) || !strings.Contains(err.Error(), "Retry-After") {
					t.Fatalf("want %T, got %v", tc.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ra := tc.retryAfter; ra == "1" && time.Since(start) < time.Duration(tc.n)*time.Second-100*time.Millisecond {
				t.Errorf("took %s: Retry-After 1 not honoured %d times", time.Since(start), tc.n)
			}
			if got := int(calls.Load()); got != tc.n+1 {
				t.Errorf("%d calls, want %d", got, tc.n+1)
			}
		})
	}
}

func TestRetryAfterParsing(t *testing.T) {
	now := time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"3", 3 * time.Second, true},
		{"0", 0, true},
		{"3600", time.Minute, true}, // capped
		{now.Add(5 * time.Second).Format(http.TimeFormat), 5 * time.Second, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
		{"", 0, false},
		{"-1", 0, false},
		{"soon", 0, false},
	} {
		got, ok := grafana.RetryAfter(tc.in, now)
		if got != tc.want || ok != tc.ok {
			t.Errorf("RetryAfter(%q) = %s, %v; want %s, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestOrgHeaderAndAPI(t *testing.T) {
	st := newStandin(t, grafanastandin.SeedSpec{Orgs: 2, FoldersPerOrg: 2, DashboardsPerOrg: 7, Seed: 9}, grafanastandin.Options{AdminPassword: "pw"})
	o := fastOpts(st.srv.URL)
	o.Credentials = grafana.Credentials{User: "admin", Password: "pw"}
	base, _ := grafana.New(o)
	ctx := context.Background()
	h, err := base.Health(ctx)
	if err != nil || h.Database != "ok" || h.Version == "" {
		t.Fatalf("health %+v %v", h, err)
	}
	uidsByOrg := map[int64][]string{}
	for _, org := range []int64{1, 2} {
		c := base.WithOrg(org)
		hits, err := c.SearchDashboards(ctx)
		if err != nil || len(hits) != 7 {
			t.Fatalf("org %d: %d hits, %v", org, len(hits), err)
		}
		for _, hit := range hits {
			uidsByOrg[org] = append(uidsByOrg[org], hit.UID)
			d, err := c.Dashboard(ctx, hit.UID)
			if err != nil {
				t.Fatal(err)
			}
			if d.Meta.FolderUID != hit.FolderUID || d.Meta.Version != 1 || len(d.Dashboard) == 0 {
				t.Fatalf("dashboard %s: meta %+v vs hit %+v", hit.UID, d.Meta, hit)
			}
		}
		fs, err := c.Folders(ctx)
		if err != nil || len(fs) != 2 {
			t.Fatalf("folders %v %v", fs, err)
		}
	}
	// The other org's uid is not found in org 1.
	_, err = base.WithOrg(1).Dashboard(ctx, uidsByOrg[2][0])
	if !errors.Is(err, grafana.ErrNotFound) {
		t.Fatalf("cross-org fetch: %v", err)
	}
	// 412s carry Grafana's status word.
	_, err = base.SaveDashboard(ctx, grafana.SaveRequest{Dashboard: []byte(`{"uid":"n1","title":"T"}`)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = base.SaveDashboard(ctx, grafana.SaveRequest{Dashboard: []byte(`{"uid":"n1","title":"T","version":7}`)})
	var ae *grafana.APIError
	if !errors.As(err, &ae) || ae.Status != 412 || ae.GrafanaStatus != "version-mismatch" {
		t.Fatalf("want 412 version-mismatch, got %v", err)
	}
	st.s.Close()
	_, err = base.Health(ctx)
	var ue *grafana.UnhealthyError
	if !errors.As(err, &ue) || ue.Database != "failing" {
		t.Fatalf("health after close: %T %v", err, err)
	}
}

func TestSearchPagingOver5000(t *testing.T) {
	if testing.Short() {
		t.Skip("seeds 5003 dashboards")
	}
	st := newStandin(t, grafanastandin.SeedSpec{FoldersPerOrg: 2, DashboardsPerOrg: 5003, Seed: 11}, grafanastandin.Options{AdminPassword: "pw"})
	var pages atomic.Int32
	inner := st.srv.Config.Handler
	st.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/search" {
			pages.Add(1)
			if r.URL.Query().Get("limit") != "5000" || r.URL.Query().Get("type") != "dash-db" {
				t.Errorf("search query %s", r.URL.RawQuery)
			}
		}
		inner.ServeHTTP(w, r)
	})
	o := fastOpts(st.srv.URL)
	o.Credentials = grafana.Credentials{User: "admin", Password: "pw"}
	c, _ := grafana.New(o)
	hits, err := c.SearchDashboards(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, h := range hits {
		seen[h.UID] = true
	}
	if len(hits) != 5003 || len(seen) != 5003 || pages.Load() != 2 {
		t.Fatalf("%d hits, %d unique, %d pages; want 5003, 5003, 2", len(hits), len(seen), pages.Load())
	}
}

func TestSearchRefusesServerIgnoringPages(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `[{"uid":"a","type":"dash-db"},{"uid":"b","type":"dash-db"}]`)
	}))
	defer srv.Close()
	c, _ := grafana.New(fastOpts(srv.URL))
	err := c.Search(context.Background(), grafana.SearchQuery{Type: grafana.TypeDashboard, PageSize: 2}, func(grafana.SearchHit) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "same page") {
		t.Fatalf("want a paging error, got %v", err)
	}
}

func TestCredentialsNeverLogged(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	st := newStandin(t, grafanastandin.SeedSpec{DashboardsPerOrg: 2, Seed: 1}, grafanastandin.Options{AdminPassword: secretPassword, Tokens: []string{"glsa_" + secretPassword}})
	var calls atomic.Int32
	flakySrv := httptest.NewServer(flaky(2, 503, &calls))
	defer flakySrv.Close()
	for _, o := range []grafana.Options{
		{URL: st.srv.URL, Credentials: grafana.Credentials{User: "admin", Password: secretPassword}},
		{URL: st.srv.URL, Credentials: grafana.Credentials{User: "admin", Password: secretPassword + "x"}},
		{URL: st.srv.URL, Credentials: grafana.Credentials{Token: "glsa_" + secretPassword}},
		{URL: strings.Replace(flakySrv.URL, "http://", "http://admin:"+secretPassword+"@", 1)},
	} {
		o.Logger = zap.New(core)
		o.RetryBaseDelay = time.Millisecond
		c, err := grafana.New(o)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Folders(context.Background())
		_, _ = c.SearchDashboards(context.Background())
		for _, s := range []string{fmt.Sprint(err), fmt.Sprintf("%v %+v %#v", o.Credentials, o.Credentials, o.Credentials)} {
			if strings.Contains(s, secretPassword) {
				t.Fatalf("credential leaked: %s", s)
			}
		}
	}
	if logs.Len() == 0 {
		t.Fatal("expected debug logs")
	}
	for _, e := range logs.All() {
		line := e.Message + fmt.Sprint(e.ContextMap())
		if strings.Contains(line, secretPassword) {
			t.Fatalf("log leaks credential: %s", line)
		}
	}
}

func TestTLS(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"database":"ok","version":"11.4.1"}`)
	}))
	defer srv.Close()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		ca       string
		insecure bool
		wantErr  string
		wantWarn bool
	}{
		{"untrusted", "", false, "not trusted", false},
		{"ca file", caFile, false, "", false},
		{"insecure", "", true, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			core, logs := observer.New(zapcore.WarnLevel)
			o := fastOpts(srv.URL)
			o.CAFile, o.InsecureSkipVerify, o.Logger = tt.ca, tt.insecure, zap.New(core)
			c, err := grafana.New(o)
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Health(context.Background())
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("err %v, want %q", err, tt.wantErr)
			}
			warned := logs.FilterMessageSnippet("verification is disabled").Len() > 0
			if warned != tt.wantWarn {
				t.Fatalf("warned=%v want %v", warned, tt.wantWarn)
			}
		})
	}
}

func TestCredentialsFromSecret(t *testing.T) {
	kube := fake.NewClientset(
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "mon", Name: "mon-grafana"},
			Data: map[string][]byte{"admin-user": []byte("root"), "admin-password": []byte("pw")}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "mon", Name: "nopw"},
			Data: map[string][]byte{"admin-user": []byte("root")}},
	)
	tests := []struct {
		name, ns, secret string
		wantUser         string
		wantErr          string
	}{
		{"chart secret", "mon", "mon-grafana", "root", ""},
		{"missing", "mon", "grafana", "", "not found"},
		{"no password key", "mon", "nopw", "", `no "admin-password" key`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cr, err := grafana.CredentialsFromSecret(context.Background(), kube, tt.ns, tt.secret)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || cr.User != tt.wantUser || cr.Password != "pw" || cr.Source != "Secret mon/mon-grafana" {
				t.Fatalf("%v %v", cr, err)
			}
		})
	}
}

func TestNewValidatesURL(t *testing.T) {
	for _, u := range []string{"", "ftp://x", "http://", "://admin:" + secretPassword + "@x"} {
		_, err := grafana.New(grafana.Options{URL: u})
		if err == nil {
			t.Errorf("%q accepted", u)
		} else if strings.Contains(err.Error(), secretPassword) {
			t.Errorf("error leaks password: %v", err)
		}
	}
}

// ReadDashboard hands readModel the same model Dashboard returns, wherever
// it stands in the answer, returns the same meta, passes readModel's error
// on, fails when readModel misreads the model's length or the answer holds
// no model, and reports a missing dashboard as ErrNotFound without reading.
func TestReadDashboard(t *testing.T) {
	answers := map[string]string{
		"/api/dashboards/uid/a":     `{"meta":{"type":"db","version":4,"folderUid":"f1"},"dashboard":{"uid":"a","title":"A","panels":[]}}`,
		"/api/dashboards/uid/b":     ` { "dashboard" : {"uid":"b","s":"}\"]"} , "meta" : {"version":2} } `,
		"/api/dashboards/uid/twice": `{"dashboard":{"n":1},"meta":{},"dashboard":{"n":2}}`,
		"/api/dashboards/uid/none":  `{"meta":{"version":1}}`,
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, ok := answers[r.URL.Path]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"message":"Dashboard not found"}`)
			return
		}
		fmt.Fprint(w, a)
	}))
	defer srv.Close()
	c, err := grafana.New(fastOpts(srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// A reader that knows JSON: it reads one value with encoding/json.
	readJSON := func(models *[]string) func([]byte) (int, error) {
		return func(rest []byte) (int, error) {
			dec := json.NewDecoder(bytes.NewReader(rest))
			var v json.RawMessage
			if err := dec.Decode(&v); err != nil {
				return 0, err
			}
			*models = append(*models, string(v))
			return int(dec.InputOffset()), nil
		}
	}
	for _, uid := range []string{"a", "b"} {
		want, err := c.Dashboard(ctx, uid)
		if err != nil {
			t.Fatal(err)
		}
		var models []string
		meta, err := c.ReadDashboard(ctx, uid, readJSON(&models))
		if err != nil || len(models) != 1 || models[0] != strings.TrimSpace(string(want.Dashboard)) || meta != want.Meta {
			t.Errorf("%s: read %q %+v %v; Dashboard gives %s %+v", uid, models, meta, err, want.Dashboard, want.Meta)
		}
	}
	var models []string
	if _, err := c.ReadDashboard(ctx, "twice", readJSON(&models)); err != nil || len(models) != 2 {
		t.Errorf("two models: read %q, %v", models, err)
	}
	models = nil
	if _, err := c.ReadDashboard(ctx, "none", readJSON(&models)); err == nil || !strings.Contains(err.Error(), "dashboard none holds no dashboard model") || len(models) != 0 {
		t.Errorf("no model: read %q, %v; want an error naming the dashboard", models, err)
	}

	mine := errors.New("the reader's own")
	if _, err := c.ReadDashboard(ctx, "a", func([]byte) (int, error) { return 0, mine }); !errors.Is(err, mine) {
		t.Errorf("reader error came back as %v", err)
	}
	if _, err := c.ReadDashboard(ctx, "a", func([]byte) (int, error) { return 5, nil }); err == nil {
		t.Error("a reader that stopped inside the model: the answer was taken")
	}
	read := false
	_, err = c.ReadDashboard(ctx, "gone", func([]byte) (int, error) { read = true; return 0, nil })
	if !errors.Is(err, grafana.ErrNotFound) || read {
		t.Errorf("missing dashboard: %v, read %v", err, read)
	}
}
