package grafana

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
)

// ErrTokenNeedsHeader: a service-account token travels only in the
// Authorization header, which the path to Grafana removes.
var ErrTokenNeedsHeader = errors.New("a Grafana service-account token is sent in the Authorization header, which the path to Grafana removes (the Kubernetes API server's pod proxy keeps it for itself): use a user and password (the chart's admin Secret), or reach Grafana at a URL (--grafana-url)")

// sessions holds Grafana login sessions, one per set of credentials, for a
// client that cannot send an Authorization header (Options.SessionLogin).
// It is shared by every copy of a client (WithOrg, withCredentials).
type sessions struct {
	mu      sync.Mutex
	cookies map[string][]*http.Cookie
}

func sessionKey(cr Credentials) string { return cr.User + "\x00" + cr.Password }

// cookies returns the session of cr, logging in when there is none.
func (c *Client) sessionCookies(ctx context.Context, cr Credentials) ([]*http.Cookie, error) {
	s := c.sessions
	s.mu.Lock()
	defer s.mu.Unlock()
	if ck, ok := s.cookies[sessionKey(cr)]; ok {
		return ck, nil
	}
	ck, err := c.login(ctx, cr)
	if err != nil {
		return nil, err
	}
	s.cookies[sessionKey(cr)] = ck
	return ck, nil
}

// dropSession forgets cr's session unless another request already replaced
// it: Grafana refused it (expired, or unknown to a database restored from
// a snapshot older than the login).
func (c *Client) dropSession(cr Credentials, used []*http.Cookie) {
	s := c.sessions
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, ok := s.cookies[sessionKey(cr)]; ok && len(cur) > 0 && len(used) > 0 && cur[0] == used[0] {
		delete(s.cookies, sessionKey(cr))
	}
}

// login is Grafana's form login, POST /login with {"user","password"} (what
// the browser UI does; docs/grafana-conformance.md §1 "Session login"). The
// answer's cookies are the session: every one is sent back, whatever
// [auth] login_cookie_name is.
func (c *Client) login(ctx context.Context, cr Credentials) ([]*http.Cookie, error) {
	body, err := json.Marshal(map[string]string{"user": cr.User, "password": cr.Password})
	if err != nil {
		return nil, err
	}
	target := c.base.String() + "/login"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		// The same typed error as a refused basic-auth request.
		return nil, c.withCredentials(cr).finish(request{method: http.MethodPost, path: "/login"}, target, resp, nil)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		eb := readErrorBody(resp)
		return nil, fmt.Errorf("login: %d %s", resp.StatusCode, nonEmpty(eb.Message, http.StatusText(resp.StatusCode)))
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	ck := resp.Cookies()
	if len(ck) == 0 {
		return nil, fmt.Errorf("grafana at %s: the login answered 200 without a session cookie", c.display)
	}
	return ck, nil
}
