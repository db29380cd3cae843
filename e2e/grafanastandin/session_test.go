package grafanastandin_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/rebind-dev/rebind/e2e/grafanastandin"
)

// TestSessionLogin: conformance §1 "Session login": POST /login gives a
// session cookie that authenticates /api without an Authorization header,
// only on the server that issued it.
func TestSessionLogin(t *testing.T) {
	login := func(e *env, user, pass string) (int, *http.Cookie) {
		t.Helper()
		body := `{"user":"` + user + `","password":"` + pass + `"}`
		r, err := http.Post(e.srv.URL+"/login", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		for _, c := range r.Cookies() {
			if c.Name == "grafana_session" {
				return r.StatusCode, c
			}
		}
		return r.StatusCode, nil
	}
	withCookie := func(e *env, c *http.Cookie) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/api/search", nil)
		if c != nil {
			req.AddCookie(c)
		}
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		return r.StatusCode
	}
	for _, v := range grafanastandin.Versions {
		t.Run(string(v), func(t *testing.T) {
			e := newEnv(t, grafanastandin.SeedSpec{DashboardsPerOrg: 1, Seed: 1, Version: v}, optsFor(v))
			other := openEnv(t, t.TempDir(), optsFor(v))
			st, bad := login(e, "admin", "wrong")
			if st != http.StatusUnauthorized || bad != nil {
				t.Fatalf("wrong password: status %d, cookie %v", st, bad)
			}
			st, c := login(e, "admin", "pw")
			if st != http.StatusOK || c == nil || !c.HttpOnly || c.Path != "/" {
				t.Fatalf("login: status %d, cookie %+v", st, c)
			}
			cases := []struct {
				name   string
				e      *env
				cookie *http.Cookie
				want   int
			}{
				{"session cookie", e, c, http.StatusOK},
				{"no cookie", e, nil, http.StatusUnauthorized},
				{"unknown session", e, &http.Cookie{Name: "grafana_session", Value: "0123"}, http.StatusUnauthorized},
				{"session of another server", other, c, http.StatusUnauthorized},
			}
			for _, tc := range cases {
				if got := withCookie(tc.e, tc.cookie); got != tc.want {
					t.Errorf("%s: status %d, want %d", tc.name, got, tc.want)
				}
			}
		})
	}
}
