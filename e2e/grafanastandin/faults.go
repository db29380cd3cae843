package grafanastandin

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ProxyFaults imitates a reverse proxy or ingress in front of Grafana that
// rate-limits: Grafana itself never answers 429 on the endpoints rebind uses
// (conformance §6 "Grafana /api endpoints rebind uses"), but nginx answers
// 503 by default and ingress-nginx often 429 (conformance §6 "nginx /
// ingress-nginx limits"). The zero value injects nothing. Safe for
// concurrent use.
type ProxyFaults struct {
	mu         sync.Mutex
	status     int
	until      time.Time
	retryAfter int
}

// Throttle makes every /api and /apis request except /api/health answer 429 Too Many
// Requests with body {"message":"Too Many Requests"} for the next d, with
// header Retry-After: retryAfter when retryAfter > 0 (nginx sends none by
// default). d <= 0 ends any fault now.
func (f *ProxyFaults) Throttle(d time.Duration, retryAfter int) {
	f.set(http.StatusTooManyRequests, d, retryAfter)
}

// Unavailable makes every /api request except /api/health answer 503 with
// nginx's default HTML error page for the next d, as nginx's limit_req does
// by default (limit_req_status 503; conformance §6), with Retry-After when
// retryAfter > 0. d <= 0 ends any fault now.
func (f *ProxyFaults) Unavailable(d time.Duration, retryAfter int) {
	f.set(http.StatusServiceUnavailable, d, retryAfter)
}

func (f *ProxyFaults) set(status int, d time.Duration, retryAfter int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if d <= 0 {
		f.status, f.until = 0, time.Time{}
		return
	}
	f.status, f.until, f.retryAfter = status, time.Now().Add(d), retryAfter
}

func (f *ProxyFaults) active() (status, retryAfter int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.status == 0 || !time.Now().Before(f.until) {
		return 0, 0
	}
	return f.status, f.retryAfter
}

const nginx503 = "<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n<body>\r\n<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"

// Wrap puts the faults in front of h.
func (f *ProxyFaults) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if (strings.HasPrefix(r.URL.Path, "/api/") || isAPIsPath(r.URL.Path)) && r.URL.Path != "/api/health" {
			if status, ra := f.active(); status != 0 {
				if ra > 0 {
					w.Header().Set("Retry-After", strconv.Itoa(ra))
				}
				if status == http.StatusTooManyRequests {
					writeRaw(w, status, []byte(`{"message":"Too Many Requests"}`))
					return
				}
				w.Header().Set("Content-Type", "text/html")
				w.Header().Set("Content-Length", strconv.Itoa(len(nginx503)))
				w.WriteHeader(status)
				_, _ = w.Write([]byte(nginx503))
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}
