package grafana_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rebind-dev/rebind/pkg/grafana"
)

// pagedList serves pages of a Kubernetes list of objects named o<i>; page
// p (from 0) is asked for with continue=p. tokens[p] is the continue token
// page p hands out ("" ends the list); a page in fail answers 500.
func pagedList(perPage int, tokens []string, fail map[int]bool, served *atomic.Int32) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p := 0
		if c := r.URL.Query().Get("continue"); c != "" {
			p, _ = strconv.Atoi(c)
		}
		served.Add(1)
		if fail[p] {
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprint(w, `{"kind":"Status","message":"storage broke"}`)
			return
		}
		var items []string
		for i := range perPage {
			items = append(items, fmt.Sprintf(`{"apiVersion":"dashboard.grafana.app/v1beta1","kind":"Dashboard","metadata":{"name":"o%d"},"spec":{"title":"t"}}`, p*perPage+i))
		}
		meta := "{}"
		if p < len(tokens) && tokens[p] != "" {
			meta = fmt.Sprintf(`{"continue":%q}`, tokens[p])
		}
		fmt.Fprintf(w, `{"kind":"DashboardList","metadata":%s,"items":[%s]}`, meta, strings.Join(items, ","))
	}
}

func TestListObjectsPaging(t *testing.T) {
	errStop := errors.New("stop here")
	for _, tc := range []struct {
		name     string
		tokens   []string
		fail     map[int]bool
		stopAt   int // fn fails on this object (-1: never)
		want     int // objects seen by fn
		wantErr  string
		maxPages int32 // pages the server may have served
	}{
		{name: "every page in order", tokens: []string{"1", "2", ""}, stopAt: -1, want: 9, maxPages: 3},
		{name: "repeated continue token", tokens: []string{"1", "1"}, stopAt: -1, want: 3, wantErr: `repeated continue token "1"`, maxPages: 2},
		{name: "a page fails after one was handed over", tokens: []string{"1", "2", ""}, fail: map[int]bool{1: true}, stopAt: -1, want: 3, wantErr: "storage broke", maxPages: 2},
		// The reader stays at most one page ahead: stopping in the first
		// page leaves later pages unread.
		{name: "the caller stops early", tokens: []string{"1", "2", "3", "4", ""}, stopAt: 1, want: 1, wantErr: errStop.Error(), maxPages: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var served atomic.Int32
			srv := httptest.NewServer(pagedList(3, tc.tokens, tc.fail, &served))
			defer srv.Close()
			o := fastOpts(srv.URL)
			o.MaxAttempts = 1
			c, _ := grafana.New(o)
			var names []string
			err := c.ListObjects(context.Background(), "dashboard.grafana.app", "v1beta1", "default", "dashboards", 3, func(obj *grafana.Object) error {
				if len(names) == tc.stopAt {
					return errStop
				}
				names = append(names, obj.Metadata.Name)
				return nil
			})
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
			if len(names) != tc.want {
				t.Fatalf("fn saw %d objects (%v), want %d", len(names), names, tc.want)
			}
			for i, n := range names {
				if n != fmt.Sprintf("o%d", i) {
					t.Fatalf("object %d is %s: out of order", i, n)
				}
			}
			if got := served.Load(); got > tc.maxPages {
				t.Errorf("server served %d pages, at most %d expected", got, tc.maxPages)
			}
		})
	}
}
