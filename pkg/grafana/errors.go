package grafana

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// ErrNotFound is matched (errors.Is) by every 404 answer, so callers can tell
// "this dashboard is gone" from "Grafana is unwell".
var ErrNotFound = errors.New("not found")

// AuthKind says which of the ways authentication can fail applied, because the
// fix differs for each.
type AuthKind int

const (
	// AuthMissing: the request carried no credentials at all.
	AuthMissing AuthKind = iota + 1
	// AuthPasswordRejected: basic auth with a user/password Grafana refused.
	AuthPasswordRejected
	// AuthTokenRejected: the bearer token was refused (revoked, expired, typo).
	AuthTokenRejected
	// AuthForbidden: credentials were accepted but lack the permission or org access.
	AuthForbidden
)

// AuthError is returned for 401 and 403 answers. Its message tells a person
// what to do; it never contains the credentials themselves.
type AuthError struct {
	URL       string // base URL, without user info
	Status    int
	MessageID string
	Message   string // Grafana's own message
	Kind      AuthKind
	User      string // login used, if basic auth (a login is not a secret)
	Source    string // where the credentials came from, e.g. "Secret monitoring/grafana"
	OrgID     int64
}

func (e *AuthError) Error() string {
	var b strings.Builder
	switch e.Kind {
	case AuthPasswordRejected:
		fmt.Fprintf(&b, "grafana %s rejected the password for user %q (401 %s)", e.URL, e.User, nonEmpty(e.MessageID, "password-auth.failed"))
		if e.Source != "" {
			fmt.Fprintf(&b, ": the admin password in %s no longer matches the database Grafana is serving.", e.Source)
		} else {
			b.WriteString(": the password does not match the database Grafana is serving.")
		}
		b.WriteString(" Grafana applies the admin password only on its first start, so a restored or migrated grafana.db keeps the password it was created with." +
			" Fix: use the old password (or restore the old Secret), or reset it inside the pod with `grafana cli admin reset-admin-password <new-password>` and update the Secret to match")
	case AuthTokenRejected:
		fmt.Fprintf(&b, "grafana %s rejected the bearer token (401 %s): the service account token is unknown, revoked or expired; create a new token or use --grafana-user/--grafana-password",
			e.URL, nonEmpty(e.Message, "Unauthorized"))
	case AuthMissing:
		fmt.Fprintf(&b, "grafana %s answered 401 Unauthorized and no credentials were given: pass --grafana-token, --grafana-user/--grafana-password or --grafana-secret", e.URL)
	case AuthForbidden:
		fmt.Fprintf(&b, "grafana %s refused access (%d %s)", e.URL, e.Status, nonEmpty(e.Message, "Forbidden"))
		if e.OrgID > 0 {
			fmt.Fprintf(&b, " in org %d", e.OrgID)
		}
		b.WriteString(": the credentials are valid but lack permission; use a Grafana admin or a service account with Admin role")
	default:
		fmt.Fprintf(&b, "grafana %s: authentication failed (%d %s)", e.URL, e.Status, e.Message)
	}
	return b.String()
}

// APIError is any other non-2xx answer.
type APIError struct {
	Method    string
	URL       string // request URL without user info
	Status    int
	Message   string
	MessageID string
	// GrafanaStatus is the "status" field of 412 answers: version-mismatch,
	// name-exists, plugin-dashboard.
	GrafanaStatus string
	database      string // the "database" field of /api/health answers
}

func (e *APIError) Error() string {
	msg := e.Message
	if e.GrafanaStatus != "" {
		msg = e.GrafanaStatus + ": " + msg
	}
	return fmt.Sprintf("grafana %s %s: %d %s", e.Method, e.URL, e.Status, strings.TrimSpace(msg))
}

// Is lets errors.Is(err, ErrNotFound) work for 404s.
func (e *APIError) Is(target error) bool {
	return target == ErrNotFound && e.Status == 404
}

// UnreachableError means no HTTP answer arrived (after all retries), or only 5xx ones.
type UnreachableError struct {
	URL      string
	Attempts int
	Status   int // last 5xx status, 0 when the connection itself failed
	Err      error
}

func (e *UnreachableError) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("grafana at %s kept failing (HTTP %d after %d attempts): %v; check the Grafana pod logs and its database", e.URL, e.Status, e.Attempts, e.Err)
	}
	return fmt.Sprintf("grafana at %s is unreachable after %d attempts: %v; check the URL, that the Service/port-forward is up and that Grafana is Ready", e.URL, e.Attempts, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// ThrottledError means the server (usually a proxy or an ingress rate limit
// in front of Grafana) kept answering 429, or 503 with Retry-After, for
// longer than the client waits.
type ThrottledError struct {
	URL    string
	Status int
	Waited time.Duration
}

func (e *ThrottledError) Error() string {
	return fmt.Sprintf("grafana at %s kept answering %d %s after %s of waiting as asked (Retry-After): a rate limit in front of Grafana (Ingress, proxy) is throttling rebind; raise its limit for rebind's client, or run again later",
		e.URL, e.Status, http.StatusText(e.Status), e.Waited.Round(time.Second))
}

func nonEmpty(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
