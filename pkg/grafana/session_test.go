package grafana_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/rebind-dev/rebind/e2e/grafanastandin"
	"github.com/rebind-dev/rebind/pkg/grafana"
)

// stripper plays the Kubernetes API server's pod proxy for Grafana: it
// removes the Authorization header (the API server authenticated its own
// user with it) and passes everything else, cookies included. Its backend
// can be replaced, as a new pod replaces the old one.
type stripper struct {
	mu       sync.Mutex
	backend  http.Handler
	sawAuth  atomic.Int32
	logins   atomic.Int32
	requests atomic.Int32
}

func (s *stripper) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "" {
		s.sawAuth.Add(1)
	}
	r.Header.Del("Authorization")
	if r.URL.Path == "/login" {
		s.logins.Add(1)
	}
	s.requests.Add(1)
	s.mu.Lock()
	h := s.backend
	s.mu.Unlock()
	h.ServeHTTP(w, r)
}

func TestSessionLogin(t *testing.T) {
	st := newStandin(t, grafanastandin.SeedSpec{Orgs: 2, DashboardsPerOrg: 3, Seed: 1},
		grafanastandin.Options{AdminPassword: secretPassword, Tokens: []string{"glsa_good"}})
	tests := []struct {
		name     string
		creds    grafana.Credentials
		tokens   []string
		newErr   error
		wantKind grafana.AuthKind // 0: success
		logins   int32
	}{
		{"password", grafana.Credentials{User: "admin", Password: secretPassword}, nil, nil, 0, 1},
		{"wrong password", grafana.Credentials{User: "admin", Password: "wrong"}, nil, nil, grafana.AuthPasswordRejected, 1},
		{"token", grafana.Credentials{Token: "glsa_good"}, nil, grafana.ErrTokenNeedsHeader, 0, 0},
		{"org token", grafana.Credentials{User: "admin", Password: secretPassword}, []string{"glsa_good"}, grafana.ErrTokenNeedsHeader, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			px := &stripper{backend: st.s.Handler()}
			srv := httptest.NewServer(px)
			defer srv.Close()
			o := fastOpts(srv.URL)
			o.Credentials, o.OrgTokens, o.SessionLogin = tt.creds, tt.tokens, true
			c, err := grafana.New(o)
			if tt.newErr != nil {
				if !errors.Is(err, tt.newErr) {
					t.Fatalf("New: %v, want %v", err, tt.newErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Health(context.Background()); err != nil {
				t.Fatal(err)
			}
			acc, err := c.ResolveAccess(context.Background(), nil)
			if tt.wantKind != 0 {
				var ae *grafana.AuthError
				if !errors.As(err, &ae) || ae.Kind != tt.wantKind {
					t.Fatalf("got %T %v, want AuthError kind %d", err, err, tt.wantKind)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range acc.Orgs {
					hits, err := r.Client.SearchDashboards(context.Background())
					if err != nil || len(hits) != 3 {
						t.Fatalf("org %d: %d hits, %v", r.Org.ID, len(hits), err)
					}
				}
			}
			if n := px.sawAuth.Load(); n != 0 {
				t.Errorf("%d requests carried an Authorization header", n)
			}
			if n := px.logins.Load(); n != tt.logins {
				t.Errorf("%d logins, want %d (health needs none, the session is reused)", n, tt.logins)
			}
		})
	}
}

// TestSessionLoginAfterRestore: a new Grafana on a restored database does
// not know the session; the client logs in again, once.
func TestSessionLoginAfterRestore(t *testing.T) {
	st := newStandin(t, grafanastandin.SeedSpec{DashboardsPerOrg: 2, Seed: 1}, grafanastandin.Options{AdminPassword: secretPassword})
	px := &stripper{backend: st.s.Handler()}
	srv := httptest.NewServer(px)
	defer srv.Close()
	o := fastOpts(srv.URL)
	o.Credentials, o.SessionLogin = grafana.Credentials{User: "admin", Password: secretPassword}, true
	c, err := grafana.New(o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CurrentOrg(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := st.s.Close(); err != nil {
		t.Fatal(err)
	}
	next, err := grafanastandin.Open(st.dir, grafanastandin.Options{AdminPassword: secretPassword})
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	px.mu.Lock()
	px.backend = next.Handler()
	px.mu.Unlock()
	hits, err := c.SearchDashboards(context.Background())
	if err != nil || len(hits) != 2 {
		t.Fatalf("after the swap: %d hits, %v", len(hits), err)
	}
	if n := px.logins.Load(); n != 2 {
		t.Fatalf("%d logins, want 2 (one again after the swap)", n)
	}
}
