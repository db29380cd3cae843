package grafana

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// The page scanner must read what encoding/json reads from the same page
// (specs compared as JSON values: the scanner keeps them as they came), and
// refuse what encoding/json refuses.
func TestObjectPageMatchesEncodingJSON(t *testing.T) {
	pages := []string{
		`{"kind":"DashboardList","metadata":{"continue":"abc","resourceVersion":"7"},"items":[]}`,
		`{"items":[{"apiVersion":"dashboard.grafana.app/v1beta1","kind":"Dashboard","metadata":{"name":"a","generation":3,"annotations":{"grafana.app/folder":"f"},"labels":{"x":"y"}},"spec":{"title":"A","panels":[{"id":1}]},"status":{}}],"metadata":{}}`,
		" {\n \"metadata\" : { } ,\n \"items\" : [ { \"metadata\" : { \"name\" : \"sp\" } , \"spec\" : { \"title\" : \"spaced \\\"out\\\"\" , \"n\" : [ 1 , -2.5e3 , true , false , null ] } } ] } \n",
		`{"items":[{"metadata":{"name":"conv"},"apiVersion":"dashboard.grafana.app/v1beta1","spec":{"elements":{}},"status":{"conversion":{"storedVersion":"v2beta1","failed":false}}}]}`,
		`{"items":[{"metadata":{"name":"nullspec"},"spec":null},{"metadata":{"name":"dup"},"spec":{"a":1},"spec":{"b":2}}]}`,
		`{"items":[{"metadata":{"name":"backslashes"},"spec":{"p":"c:\\","q":"\"x\\\"","r":"\\\\"}}]}`,
		`{"items":[{"\u006detadata":{"name":"escaped key"},"spec":{"title":"\u00e9\ud83d\ude00"}}],"unknown":{"deep":[[[{"x":"]}"}]]]}}`,
		`{"items":[{"metadata":{"name":"m","namespace":"org-2","generation":-0,"uid":"u","managedFields":[{"manager":"x","fieldsV1":{"f:spec":{}}}],"annotations":{"a":"caf\u00e9","b":null,"c":"plain"},"labels":null},"kind":null,"spec":{}}]}`,
		"{\"items\":[{\"metadata\":{\"name\":\"bad \xff utf8 \u00e9 Ã©\",\"annotations\":{\"k\":\"\\ttab\"}},\"apiVersion\":\"v\\/1\"}]}",
		`{"items":[{"metadata":null,"spec":{}},{"metadata":{"name":null,"generation":null,"annotations":{}}}]}`,
	}
	for _, page := range pages {
		var want struct {
			Metadata struct {
				Continue string `json:"continue"`
			} `json:"metadata"`
			Items []*Object `json:"items"`
		}
		if err := json.Unmarshal([]byte(page), &want); err != nil {
			t.Fatalf("%s: %v", page, err)
		}
		var got objectPage
		if err := got.decodeBody([]byte(page)); err != nil {
			t.Errorf("%s: %v", page, err)
			continue
		}
		if got.Continue != want.Metadata.Continue || len(got.Items) != len(want.Items) {
			t.Errorf("%s: continue %q, %d items; want %q, %d", page, got.Continue, len(got.Items), want.Metadata.Continue, len(want.Items))
			continue
		}
		for i := range got.Items {
			g, w := *got.Items[i], *want.Items[i]
			if !sameJSON(t, g.Spec, w.Spec) {
				t.Errorf("%s: item %d spec %s, want %s", page, i, g.Spec, w.Spec)
			}
			g.Spec, w.Spec = nil, nil
			if !reflect.DeepEqual(g, w) {
				t.Errorf("%s: item %d %+v, want %+v", page, i, g, w)
			}
		}
	}

	for _, bad := range []string{
		``, `[]`, `{"items":[}`, `{"items":[{"spec":{"a":tru}}]}`, `{"items":[{"spec":{"a":1}]}`,
		`{"items":[{"spec":{"a":"x}}]}`, `{"items":[]} x`, `{"metadata":{"continue":1}}`,
		`{"items":[{"metadata":{"name":5}}]}`, `{"items":[{"metadata":{"generation":"3"}}]}`, `{"items":[{"metadata":{"generation":1.5}}]}`,
		`{"items":[{"metadata":{"annotations":{"a":1}}}]}`, `{"items":[{"metadata":{"labels":[]}}]}`, "{\"items\":[{\"metadata\":{\"name\":\"ctl\x01\"}}]}", `{"items":[{"spec":{"a" 1}}]}`, `{"items":[1,]}`,
		`{"items":[{"spec":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `}]}`,
		`{"items":[{"spec":{"a":[1}]}]}`, `{"items":[{"spec":{"a":1]}}]}`, `{"items":[{"spec":{"a":[}}]}`,
		`{"items":[{"spec":{"a":1}}}]}`, `{"items":[{"spec":{"a":"]"}`,
	} {
		var got objectPage
		if err := got.decodeBody([]byte(bad)); err == nil && !someSpecInvalid(got.Items) {
			t.Errorf("%.60q accepted", bad)
		}
	}
}

// someSpecInvalid says whether a spec the page decoder delimited without
// checking fails the validation every consumer of specs does.
func someSpecInvalid(items []*Object) bool {
	for _, o := range items {
		if o.Spec != nil && !json.Valid(o.Spec) {
			return true
		}
	}
	return false
}

// A dashboard answer of /api/dashboards/uid must read as with
// encoding/json: the model as it came, meta decoded.
func TestDashboardAnswerMatchesEncodingJSON(t *testing.T) {
	answers := []string{
		`{"meta":{"type":"db","slug":"a","version":7,"folderUid":"f","folderTitle":"F","provisioned":true,"created":"2026-01-02T03:04:05Z","updated":"2026-01-02T03:04:06Z","canEdit":true},"dashboard":{"uid":"a","title":"A","panels":[{"id":1,"title":"]}\""}]}}`,
		` { "dashboard" : { "title" : "\u00e9" } , "meta" : { } } `,
		`{"dashboard":null,"meta":{"folderUid":null}}`,
		`{"dashboard":{"a":1},"dashboard":{"b":2},"extra":[1,{"x":[]}]}`,
		`{"dashboard":{},"meta":{"type":null,"created":null,"provisioned":null,"folderId":null,"url":"/d/x?a=1\u0026b","slug":"caf\u00e9","folderTitle":"\"q\"","provisioned":false}}`,
		`{"meta":null,"dashboard":{}}`,
	}
	for _, a := range answers {
		var want Dashboard
		if err := json.Unmarshal([]byte(a), &want); err != nil {
			t.Fatalf("%s: %v", a, err)
		}
		var got Dashboard
		if err := got.decodeBody([]byte(a)); err != nil {
			t.Errorf("%s: %v", a, err)
			continue
		}
		if !sameJSON(t, got.Dashboard, want.Dashboard) || got.Meta != want.Meta {
			t.Errorf("%s: got %s %+v, want %s %+v", a, got.Dashboard, got.Meta, want.Dashboard, want.Meta)
		}
	}
	for _, bad := range []string{``, `[]`, `{"dashboard":{"a":}`, `{"meta":{"version":"7"}}`, `{"dashboard":{}} x`, `{"meta":{"created":"yesterday"}}`,
		`{"meta":{"provisioned":"true"}}`, `{"meta":{"provisioned":1}}`, `{"meta":{"folderId":1.5}}`, `{"meta":{"slug":7}}`, `{"meta":[]}`} {
		var d Dashboard
		if err := d.decodeBody([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func sameJSON(t *testing.T, a, b []byte) bool {
	t.Helper()
	if a == nil || b == nil {
		return a == nil && b == nil // an object without a spec
	}
	var x, y bytes.Buffer
	if err := json.Compact(&x, a); err != nil {
		t.Fatal(err)
	}
	if err := json.Compact(&y, b); err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(x.Bytes(), y.Bytes())
}
