package grafana

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
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

// str must end a string where a decoder does: at the first quote not
// escaped, whatever the backslashes before it and wherever it falls in an
// eight-byte word. The reference counts the backslashes before each quote.
func TestStrEndsWhereJSONDoes(t *testing.T) {
	reference := func(b []byte) int {
		for i := 1; i < len(b); i++ {
			if b[i] != '"' {
				continue
			}
			n := 0
			for j := i - 1; j > 0 && b[j] == '\\'; j-- {
				n++
			}
			if n%2 == 0 {
				return i + 1
			}
		}
		return -1
	}
	r := rand.New(rand.NewPCG(7, 8))
	parts := []string{`a`, `bcdefghij`, `\"`, `\\`, `\\\"`, `\n`, `\u00e9`, `é`, "\x01", `/`, `"`, `\`}
	for range 300_000 {
		var b strings.Builder
		b.WriteByte('"')
		for range r.IntN(12) {
			b.WriteString(parts[r.IntN(len(parts))])
		}
		in := []byte(b.String())
		want := reference(in)
		s := &jsonScanner{b: in}
		start, end, err := s.str()
		if want < 0 {
			if err == nil {
				t.Fatalf("%q: unterminated, and str took %d..%d", in, start, end)
			}
			continue
		}
		if err != nil || start != 0 || end != want {
			t.Fatalf("%q: str gives %d..%d %v, want the end at %d", in, start, end, err, want)
		}
	}
}
