package grafanastandin

import (
	"bytes"
	"testing"
)

// The one-scan path must serve exactly what decoding and re-encoding
// serves, and leave to it whatever it cannot handle.
func TestClassicSpecFastMatchesDecoding(t *testing.T) {
	for _, tc := range modelCases {
		got, ok := classicSpecFast([]byte(tc.in))
		if ok != tc.fast {
			t.Errorf("%s: fast path took it: %v, want %v", tc.in, ok, tc.fast)
			continue
		}
		want, err := classicSpecDecoding([]byte(tc.in))
		if ok && (err != nil || !bytes.Equal(got, want)) {
			t.Errorf("%s: fast %s, decoding %s (%v)", tc.in, got, want, err)
		}
		served, err2 := classicSpec([]byte(tc.in))
		if !bytes.Equal(served, want) || (err == nil) != (err2 == nil) {
			t.Errorf("%s: classicSpec %s %v, want %s %v", tc.in, served, err2, want, err)
		}
	}
}

// modelCases are stored models, and whether the one-scan paths take them.
var modelCases = []struct {
	in   string
	fast bool
}{
	{`{}`, true},
	{`{"id":1,"uid":"u","version":3,"title":"T"}`, true},
	{`{"title":"T","panels":[{"id":1,"gridPos":{"h":8}},{"id":2}],"b":true,"a":null,"n":-1.5e3}`, true},
	{`{"z":1,"z":2,"a":"x"}`, true},
	{`{"s":"with \"escapes\" \\ and } ] , : inside"}`, true},
	{`{"nested":{"id":7,"uid":"kept below the top"}}`, true},
	{`{ "title": "spaced" }`, false},
	{`{"title":"T","panels":[ ]}`, false},
	{`{"t\u00e9":"key needs re-encoding"}`, false},
	{`{"a<b":"html-escaped by json.Marshal"}`, false},
	{`{"é":1}`, false},
	{`{"a":tru}`, false},
	{`{"a":[}`, false},
	{`{"a":{]}`, false},
	{`{"a":}`, false},
	{`{"a":1,}`, false},
	{`{"a":1} `, false},
	{`[1]`, false},
	{`{"a":"unterminated}`, false},
}

// Serving a dashboard sets id, uid and version in the stored model; the
// one-scan path must serve what decoding and re-encoding serves.
func TestRewriteModelMatchesDecoding(t *testing.T) {
	set := map[string]any{"id": int64(7), "uid": "u<&>", "version": int64(3), "title": "T \"q\""}
	for _, tc := range modelCases {
		want, err := rewriteModelSlow([]byte(tc.in), set)
		got, err2 := rewriteModel([]byte(tc.in), set)
		if !bytes.Equal(got, want) || (err == nil) != (err2 == nil) {
			t.Errorf("%s: %s %v, want %s %v", tc.in, got, err2, want, err)
		}
	}
}
