package grafanastandin

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
)

// sessionCookie is Grafana's default login cookie name ([auth]
// login_cookie_name = grafana_session, conf/defaults.ini).
const sessionCookie = "grafana_session"

// login is POST /login, the form login the browser UI uses: JSON
// {"user","password"}; 200 {"message":"Logged in"} with the session cookie
// (pkg/api/login.go LoginPost, in every release read, see
// docs/grafana-conformance.md §1 "Session login"); a wrong password is the
// 401 of basic auth. A client that cannot send an Authorization header
// (behind the Kubernetes API server's pod proxy, which strips it) uses this.
//
// Grafana stores sessions in table user_auth_token of grafana.db, so a
// database restored from a snapshot knows only the sessions of its snapshot
// time. The stand-in keeps them in memory, per server: a session is unknown
// to every new stand-in, which is what a client sees after a restore (and
// stricter than a real Grafana after a restart on the same volume).
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if s.closed.Load() {
		msg(w, http.StatusServiceUnavailable, "database is closed")
		return
	}
	var cmd struct {
		User     string `json:"user"`
		Password string `json:"password"`
	}
	if err := json.NewDecoder(r.Body).Decode(&cmd); err != nil {
		msg(w, http.StatusBadRequest, "bad login data")
		return
	}
	p, err := s.checkBasic(r.Context(), cmd.User, cmd.Password)
	if errors.Is(err, errBadPassword) {
		s.badPassword(w)
		return
	}
	if err != nil {
		s.internal(w, err)
		return
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		s.internal(w, err)
		return
	}
	token := hex.EncodeToString(b[:])
	s.sessions.Store(token, p)
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: token, Path: "/", MaxAge: 30 * 24 * 3600, HttpOnly: true, SameSite: http.SameSiteLaxMode})
	writeJSON(w, http.StatusOK, map[string]string{"message": "Logged in"})
}

// session resolves a session cookie; false for none or an unknown one.
func (s *Server) session(r *http.Request) (principal, bool, bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return principal{}, false, false
	}
	v, ok := s.sessions.Load(c.Value)
	if !ok {
		return principal{}, true, false
	}
	return v.(principal), true, true
}
