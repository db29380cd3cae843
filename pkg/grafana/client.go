// Package grafana is a small client for the parts of the Grafana HTTP API that
// rebind needs to prove a migration lost nothing: health, orgs, search,
// dashboards and folders.
package grafana

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Credentials authenticate the client. Token wins over User/Password when both
// are set, matching what Grafana does with an Authorization header.
type Credentials struct {
	User     string
	Password string
	Token    string
	// Source names where the credentials came from (e.g. "Secret monitoring/grafana")
	// so that error messages can point a person at the thing to fix.
	Source string
}

// String never reveals the password or token: Credentials end up in %v of
// structs more often than anyone intends.
func (c Credentials) String() string {
	switch {
	case c.Token != "":
		return "bearer token (redacted)"
	case c.User != "" || c.Password != "":
		return fmt.Sprintf("basic user=%q password=(redacted)", c.User)
	default:
		return "no credentials"
	}
}

// GoString covers %#v, which would otherwise print the fields.
func (c Credentials) GoString() string { return "grafana.Credentials{" + c.String() + "}" }

func (c Credentials) empty() bool { return c.Token == "" && c.User == "" && c.Password == "" }

// Options configure a Client. Only URL is required.
type Options struct {
	URL         string
	Credentials Credentials
	// OrgTokens are further service-account tokens, each for the org it
	// belongs to: they read the orgs the main credentials cannot.
	OrgTokens []string
	// ListCredentials, when set, are a Grafana server admin's basic-auth
	// credentials used only to list every org (/api/orgs), so that rebind
	// knows which orgs exist when the main credentials are a token.
	ListCredentials *Credentials
	// OrgID, when > 0, is sent as X-Grafana-Org-Id on every request.
	OrgID              int64
	CAFile             string
	InsecureSkipVerify bool
	// Timeout bounds each attempt (default 30s).
	Timeout time.Duration
	// MaxAttempts for idempotent requests failing with 5xx or connection errors (default 4).
	MaxAttempts int
	// RetryBaseDelay is the first backoff, doubled on each retry up to RetryMaxDelay
	// (defaults 250ms and 5s).
	RetryBaseDelay time.Duration
	RetryMaxDelay  time.Duration
	// MaxThrottleWait bounds the total time one request waits out 429 Too
	// Many Requests (or 503 with Retry-After) answers, which come from a
	// proxy or rate limit in front of Grafana (default 2m).
	MaxThrottleWait time.Duration
	// MaxConnsPerHost caps parallel connections (default 32).
	MaxConnsPerHost int
	Logger          *zap.Logger
	// Transport replaces the default transport (tests, proxies). TLS options are
	// ignored when it is set.
	Transport http.RoundTripper
	// SessionLogin sends no Authorization header: the client logs in (POST
	// /login) and sends Grafana's session cookie, logging in again once
	// when Grafana refuses the session. For a path that removes the header,
	// the Kubernetes API server's pod proxy. Tokens cannot work this way
	// (ErrTokenNeedsHeader).
	SessionLogin bool
}

// Client talks to one Grafana. It is safe for concurrent use.
type Client struct {
	base        *url.URL
	display     string // base URL without user info, safe for messages
	creds       Credentials
	orgTokens   []string
	lister      *Credentials
	orgID       int64
	hc          *http.Client
	maxAttempts int
	baseDelay   time.Duration
	maxDelay    time.Duration
	maxThrottle time.Duration
	log         *zap.Logger
	sessions    *sessions // nil unless Options.SessionLogin
}

// New validates the options and builds a Client. It does not contact Grafana.
func New(opts Options) (*Client, error) {
	if strings.TrimSpace(opts.URL) == "" {
		return nil, errors.New("grafana: URL is required")
	}
	u, err := url.Parse(strings.TrimSpace(opts.URL))
	if err != nil {
		// url.Parse errors echo the input, which may hold a password.
		return nil, errors.New("grafana: URL is not a valid URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("grafana: URL scheme must be http or https, got %q", u.Scheme)
	}
	if u.Host == "" {
		return nil, errors.New("grafana: URL has no host")
	}
	creds := opts.Credentials
	if u.User != nil {
		// Accept http://user:pass@host for convenience, but keep it out of
		// every message and log line from here on.
		if creds.empty() {
			creds.User = u.User.Username()
			creds.Password, _ = u.User.Password()
			creds.Source = "the URL"
		}
		u.User = nil
	}
	u.RawQuery, u.Fragment = "", ""
	u.Path = strings.TrimRight(u.Path, "/")

	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	c := &Client{
		base:        u,
		display:     u.String(),
		creds:       creds,
		orgTokens:   opts.OrgTokens,
		lister:      opts.ListCredentials,
		orgID:       opts.OrgID,
		maxAttempts: opts.MaxAttempts,
		baseDelay:   opts.RetryBaseDelay,
		maxDelay:    opts.RetryMaxDelay,
		log:         log.With(zap.String("grafana", u.String())),
	}
	if c.maxAttempts <= 0 {
		c.maxAttempts = 4
	}
	if c.baseDelay <= 0 {
		c.baseDelay = 250 * time.Millisecond
	}
	if c.maxDelay <= 0 {
		c.maxDelay = 5 * time.Second
	}
	if opts.SessionLogin {
		if creds.Token != "" || len(opts.OrgTokens) > 0 {
			return nil, ErrTokenNeedsHeader
		}
		c.sessions = &sessions{cookies: map[string][]*http.Cookie{}}
	}
	c.maxThrottle = opts.MaxThrottleWait
	if c.maxThrottle <= 0 {
		c.maxThrottle = 2 * time.Minute
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	rt := opts.Transport
	if rt == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		conns := opts.MaxConnsPerHost
		if conns <= 0 {
			conns = 32
		}
		// The default of 2 idle connections per host makes a worker pool
		// open and close a socket per request, which on loopback soon runs
		// out of ephemeral ports.
		tr.MaxIdleConnsPerHost = conns
		tr.MaxConnsPerHost = conns
		// A dashboard answer is a few KiB: with the default 4 KiB buffer
		// each took several reads from the socket.
		tr.ReadBufferSize = 64 << 10
		if u.Scheme == "https" {
			tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
			if opts.CAFile != "" {
				pem, err := os.ReadFile(opts.CAFile)
				if err != nil {
					return nil, fmt.Errorf("grafana: reading CA file: %w", err)
				}
				pool, err := x509.SystemCertPool()
				if err != nil || pool == nil {
					pool = x509.NewCertPool()
				}
				if !pool.AppendCertsFromPEM(pem) {
					return nil, fmt.Errorf("grafana: CA file %s holds no PEM certificate", opts.CAFile)
				}
				tlsCfg.RootCAs = pool
			}
			if opts.InsecureSkipVerify {
				c.log.Warn("TLS certificate verification is disabled for Grafana; anyone on the path can read the credentials")
				tlsCfg.InsecureSkipVerify = true
			}
			tr.TLSClientConfig = tlsCfg
		}
		rt = tr
	} else if opts.InsecureSkipVerify {
		c.log.Warn("insecure-skip-verify requested but a custom transport is in use; the flag has no effect")
	}
	c.hc = &http.Client{Transport: rt, Timeout: timeout}
	return c, nil
}

// URL is the base URL without user info.
func (c *Client) URL() string { return c.display }

// OrgID is the org sent in X-Grafana-Org-Id (0: the user's current org).
func (c *Client) OrgID() int64 { return c.orgID }

// WithOrg returns a client for another org sharing this client's connections.
func (c *Client) WithOrg(orgID int64) *Client {
	cp := *c
	cp.orgID = orgID
	cp.log = c.log.With(zap.Int64("org", orgID))
	return &cp
}

// withCredentials returns a client for other credentials sharing this
// client's connections and settings.
func (c *Client) withCredentials(creds Credentials) *Client {
	cp := *c
	cp.creds, cp.orgTokens, cp.lister = creds, nil, nil
	return &cp
}

// request describes one API call; retries are decided from it.
type request struct {
	method string
	path   string
	query  url.Values
	body   []byte
	// retry5xx: only for idempotent calls; a retried POST could save twice.
	retry5xx bool
	// anonymous: Grafana answers without credentials (/api/health), so a
	// session-login client does not log in for it.
	anonymous bool
}

// errorBody is the shape of Grafana's error answers.
type errorBody struct {
	Message   string `json:"message"`
	MessageID string `json:"messageId"`
	Status    string `json:"status"`
	Database  string `json:"database"`
}

// do runs a request with retries and decodes a 2xx JSON answer into out.
//
// Two kinds of answer are retried. Connection errors and 5xx (idempotent
// requests only) count against MaxAttempts with exponential backoff.
// Throttling, a 429 or a 503 carrying Retry-After, says the request was not
// processed: it is waited out as the server asks, for any method, bounded
// by MaxThrottleWait in total rather than by attempts (Grafana itself never
// answers 429 on the endpoints rebind uses; proxies and ingress rate limits
// do: docs/grafana-conformance.md §6).
func (c *Client) do(ctx context.Context, r request, out any) error {
	u := *c.base
	u.Path = c.base.Path + r.path
	if len(r.query) > 0 {
		u.RawQuery = r.query.Encode()
	}
	target := u.String()
	var (
		lastErr    error
		lastStatus int
		failures   int
		throttled  time.Duration
		throttles  int
		delay      time.Duration
		relogged   bool
	)
	for attempt := 1; ; attempt++ {
		if attempt > 1 {
			if err := c.wait(ctx, delay); err != nil {
				return err
			}
		}
		resp, session, err := c.send(ctx, r, target)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var ae *AuthError
			if errors.As(err, &ae) || errors.Is(err, ErrTokenNeedsHeader) {
				return err // the login was refused: waiting cannot fix it
			}
			lastErr, lastStatus = connErr(err), 0
			var certErr *tls.CertificateVerificationError
			if errors.As(err, &certErr) {
				// Retrying cannot fix a certificate the client does not trust.
				return fmt.Errorf("grafana at %s: TLS certificate not trusted (%v): pass --grafana-ca-file, or --grafana-insecure-skip-verify for a test setup", c.display, certErr.Err)
			}
			if failures++; failures >= c.maxAttempts {
				return &UnreachableError{URL: c.display, Attempts: failures, Status: lastStatus, Err: lastErr}
			}
			delay = c.backoff(failures)
			c.log.Warn("grafana request failed, will retry", zap.String("method", r.method), zap.String("path", r.path),
				zap.Int("attempt", attempt), zap.Error(lastErr))
			continue
		}
		if resp.StatusCode == http.StatusUnauthorized && session != nil && !relogged {
			// A session Grafana does not know (a restored database holds
			// only the sessions of its snapshot time) or one that expired.
			readErrorBody(resp)
			c.dropSession(c.creds, session)
			relogged, delay = true, 0
			continue
		}
		if ra, ok := throttle(resp, r); ok {
			readErrorBody(resp)
			if throttles++; ra <= 0 {
				ra = c.backoff(throttles)
			}
			if throttled+ra > c.maxThrottle {
				return &ThrottledError{URL: c.display, Status: resp.StatusCode, Waited: throttled}
			}
			throttled += ra
			delay = ra
			c.log.Warn("grafana is throttling requests, waiting as asked", zap.String("method", r.method), zap.String("path", r.path),
				zap.Int("status", resp.StatusCode), zap.Duration("retry-after", ra), zap.Duration("waited", throttled))
			continue
		}
		if resp.StatusCode >= 500 && r.retry5xx {
			eb := readErrorBody(resp)
			lastStatus = resp.StatusCode
			lastErr = fmt.Errorf("%s %s: %d %s", r.method, r.path, resp.StatusCode, nonEmpty(eb.Message, http.StatusText(resp.StatusCode)))
			if failures++; failures >= c.maxAttempts {
				return &UnreachableError{URL: c.display, Attempts: failures, Status: lastStatus, Err: lastErr}
			}
			delay = c.backoff(failures)
			c.log.Warn("grafana answered a server error, will retry", zap.String("method", r.method), zap.String("path", r.path),
				zap.Int("status", resp.StatusCode), zap.Int("attempt", attempt))
			continue
		}
		return c.finish(r, target, resp, out)
	}
}

// maxRetryAfter caps one Retry-After: a proxy asking for an hour is not
// waited out inside one request.
const maxRetryAfter = time.Minute

// throttle says whether an answer asks the client to come back later, and
// when: a 429 (the request was not processed, so any method may repeat it),
// or a 503 with Retry-After on an idempotent request. A 503 without it is an
// ordinary server error.
func throttle(resp *http.Response, r request) (time.Duration, bool) {
	ra, has := retryAfter(resp.Header.Get("Retry-After"), time.Now())
	switch {
	case resp.StatusCode == http.StatusTooManyRequests:
		return ra, true
	case resp.StatusCode == http.StatusServiceUnavailable && has && r.retry5xx:
		return ra, true
	}
	return 0, false
}

// retryAfter parses Retry-After: delay-seconds or an HTTP-date (RFC 9110
// §10.2.3), capped at maxRetryAfter.
func retryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	var d time.Duration
	if secs, err := strconv.Atoi(v); err == nil {
		if secs < 0 {
			return 0, false
		}
		d = time.Duration(secs) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = max(t.Sub(now), 0)
	} else {
		return 0, false
	}
	return min(d, maxRetryAfter), true
}

// send makes one attempt; session is the login session it used, if any.
func (c *Client) send(ctx context.Context, r request, target string) (_ *http.Response, session []*http.Cookie, _ error) {
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, target, body)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Accept", "application/json")
	if r.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	switch {
	case c.sessions != nil:
		if r.anonymous || c.creds.empty() {
			break
		}
		if c.creds.Token != "" {
			return nil, nil, ErrTokenNeedsHeader
		}
		if session, err = c.sessionCookies(ctx, c.creds); err != nil {
			return nil, nil, err
		}
		for _, ck := range session {
			req.AddCookie(ck)
		}
	case c.creds.Token != "":
		req.Header.Set("Authorization", "Bearer "+c.creds.Token)
	case c.creds.User != "" || c.creds.Password != "":
		req.SetBasicAuth(c.creds.User, c.creds.Password)
	}
	if c.orgID > 0 {
		req.Header.Set("X-Grafana-Org-Id", strconv.FormatInt(c.orgID, 10))
	}
	start := time.Now()
	resp, err := c.hc.Do(req)
	if err == nil && c.log.Core().Enabled(zap.DebugLevel) {
		c.log.Debug("grafana request", zap.String("method", r.method), zap.String("path", r.path),
			zap.Int("status", resp.StatusCode), zap.Duration("took", time.Since(start)))
	}
	return resp, session, err
}

// finish turns a final answer into a decoded value or a typed error.
func (c *Client) finish(r request, target string, resp *http.Response, out any) error {
	defer func() {
		// Draining lets the connection be reused by the next request.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		resp.Body.Close()
	}()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		if out == nil {
			return nil
		}
		// A pooled buffer and Unmarshal beat json.Decoder, whose buffer
		// regrows for every dashboard.
		buf := bodyPool.Get().(*bytes.Buffer)
		buf.Reset()
		defer bodyPool.Put(buf)
		if _, err := buf.ReadFrom(resp.Body); err != nil {
			return fmt.Errorf("grafana %s %s: reading answer: %w", r.method, target, connErr(err))
		}
		var err error
		if d, ok := out.(bodyDecoder); ok {
			err = d.decodeBody(buf.Bytes())
		} else {
			err = json.Unmarshal(buf.Bytes(), out)
		}
		if err != nil {
			return fmt.Errorf("grafana %s %s: decoding answer: %w", r.method, target, err)
		}
		return nil
	}
	eb := readErrorBody(resp)
	switch resp.StatusCode {
	case http.StatusUnauthorized, http.StatusForbidden:
		ae := &AuthError{URL: c.display, Status: resp.StatusCode, MessageID: eb.MessageID, Message: eb.Message,
			User: c.creds.User, Source: c.creds.Source, OrgID: c.orgID}
		switch {
		case resp.StatusCode == http.StatusForbidden:
			ae.Kind = AuthForbidden
		case c.creds.empty():
			ae.Kind = AuthMissing
		case c.creds.Token != "":
			ae.Kind = AuthTokenRejected
		default:
			ae.Kind = AuthPasswordRejected
		}
		return ae
	}
	return &APIError{Method: r.method, URL: target, Status: resp.StatusCode, Message: nonEmpty(eb.Message, http.StatusText(resp.StatusCode)),
		MessageID: eb.MessageID, GrafanaStatus: eb.Status, database: eb.Database}
}

var bodyPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func readErrorBody(resp *http.Response) errorBody {
	var eb errorBody
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	if json.Unmarshal(b, &eb) != nil || eb.Message == "" && eb.Status == "" && eb.Database == "" {
		// Proxies answer with HTML or plain text; keep a short excerpt.
		s := strings.TrimSpace(string(b))
		if len(s) > 200 {
			s = s[:200] + "..."
		}
		if eb.Message == "" {
			eb.Message = s
		}
	}
	return eb
}

// connErr strips *url.Error, whose text repeats the whole request URL.
func connErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("timed out: %w", err)
	}
	return err
}

// backoff is the delay before the n-th retry: exponential from the base
// delay up to the maximum, with jitter so that many rebind processes do not
// hammer a recovering Grafana in step.
func (c *Client) backoff(n int) time.Duration {
	d := c.baseDelay << (n - 1)
	if d > c.maxDelay || d <= 0 {
		d = c.maxDelay
	}
	return d/2 + rand.N(d/2+1)
}

func (c *Client) wait(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func (c *Client) get(ctx context.Context, path string, q url.Values, out any) error {
	return c.do(ctx, request{method: http.MethodGet, path: path, query: q, retry5xx: true}, out)
}
