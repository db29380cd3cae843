package inventory

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rebind-dev/rebind/pkg/grafana"
)

// Hashing a spec while its page is decoded must give what hashing the
// delimited spec afterwards gives, whatever the order and repetition of an
// item's members, and fail as that would.
func TestSpecReadWhileDecodedMatchesAfterwards(t *testing.T) {
	const spec = `{"title":"T","uid":"stale","panels":[{"id":1,"fieldConfig":{"defaults":{"x":0.5}},"title":"a \u0026 b"}],"version":3}`
	for _, tc := range []struct {
		name, item string
		wantErr    string
	}{
		{"metadata first, as Grafana serves it", `{"kind":"Dashboard","metadata":{"name":"a","generation":2},"spec":` + spec + `,"status":{}}`, ""},
		{"spaced", `{ "metadata" : { "name" : "a" } , "spec" :  ` + spec + `  , "status" : { } }`, ""},
		{"metadata after the spec", `{"spec":` + spec + `,"metadata":{"name":"a"}}`, ""},
		{"a later metadata renames it", `{"metadata":{"name":"a"},"spec":` + spec + `,"metadata":{"name":"b"}}`, ""},
		{"a later spec replaces it", `{"metadata":{"name":"a"},"spec":{"title":"first"},"spec":` + spec + `}`, ""},
		{"a spec that is not an object", `{"metadata":{"name":"a"},"spec":[1]}`, "not an object"},
		{"a broken spec", `{"metadata":{"name":"a"},"spec":{"title":"x",}}`, "invalid JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			page := `{"kind":"DashboardList","metadata":{},"items":[` + tc.item + `]}`
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, page) }))
			defer srv.Close()
			c, err := grafana.New(grafana.Options{URL: srv.URL, MaxAttempts: 1})
			if err != nil {
				t.Fatal(err)
			}
			var got, want []Dashboard
			list := func(read grafana.SpecReader, into *[]Dashboard) error {
				return c.ListObjectsReading(context.Background(), grafana.DashboardGroup, "v1beta1", "default", grafana.DashboardResource, 10, read,
					func(o *grafana.Object) error {
						d, err := dashboardFromObject(o)
						*into = append(*into, d)
						return err
					})
			}
			errRead, errAfter := list(readDashboardSpec, &got), list(nil, &want)
			if tc.wantErr != "" {
				if errRead == nil || !strings.Contains(errRead.Error(), tc.wantErr) || errAfter == nil {
					t.Fatalf("read while decoded: %v; read afterwards: %v; want %q from both", errRead, errAfter, tc.wantErr)
				}
				return
			}
			if errRead != nil || errAfter != nil || len(got) != 1 || len(want) != 1 || got[0] != want[0] || got[0].SHA256 == "" {
				t.Fatalf("read while decoded %+v %v, afterwards %+v %v", got, errRead, want, errAfter)
			}
		})
	}
}

// The per-uid path hashes the model where the answer's decoder finds it:
// the same sum as hashing the model alone, and an answer without a model
// is an error, not a dashboard with no sum.
func TestDashboardEntryReadsModelInPlace(t *testing.T) {
	const model = `{"uid":"old","title":"T","panels":[{"id":1,"x":0.25}],"version":9}`
	answers := map[string]string{
		"/api/dashboards/uid/a":    `{"meta":{"version":4,"folderUid":"f"},"dashboard":` + model + `}`,
		"/api/dashboards/uid/b":    `{"dashboard":` + model + `,"meta":{"version":4}}`,
		"/api/dashboards/uid/none": `{"meta":{"version":4}}`,
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, answers[r.URL.Path]) }))
	defer srv.Close()
	c, err := grafana.New(grafana.Options{URL: srv.URL, MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, uid := range []string{"a", "b"} {
		want, err := HashDashboard([]byte(model), uid, "Title")
		if err != nil {
			t.Fatal(err)
		}
		d, err := dashboardEntry(context.Background(), c, grafana.SearchHit{UID: uid, Title: "Title", FolderUID: "g"})
		if err != nil || d.SHA256 != want || d.Version != 4 {
			t.Errorf("%s: %+v %v, want sum %s", uid, d, err, want)
		}
	}
	if d, err := dashboardEntry(context.Background(), c, grafana.SearchHit{UID: "none"}); err == nil || !strings.Contains(err.Error(), "no dashboard model") {
		t.Errorf("an answer without a model gave %+v, %v", d, err)
	}
}
