package inventory

import (
	"encoding/binary"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
)

// The fast parser must hash exactly like the encoding/json reference.
func TestFastHashMatchesReference(t *testing.T) {
	inputs := []string{
		`{}`,
		`{"id":1,"version":2,"uid":"x","title":"y"}`,
		`{"a":[1,2.0,3e2,-0,-1.5e-7,12345678901234567890,1E300],"b":{"z":null,"y":true,"x":false},"c":""}`,
		`{"s":"\u00e9\u0026\"\\\/\b\f\n\r\t\u0001 é ✓ \ud83d\ude00 \ud800 tail"}`,
		`{"dup":1,"dup":2,"nested":{"dup":"a","dup":"b"}}`,
		` { "ws" : [ { } , [ ] , { "k" : [ [ { "deep" : 1 } ] ] } ] } `,
		`{"panels":[{"id":1,"gridPos":{"h":8,"w":12},"targets":[{"expr":"sum(rate(x[5m]))","refId":"A"}]}],"title":"T"}`,
		"{\"bad utf8\":\"\xff\xfe\"}",
		`{"ints":[0,-0,1,-1,10,-10,123456789012345,-123456789012345,1234567890123456,9007199254740993,-9007199254740993]}`,
	}
	for _, in := range inputs {
		fast, err1 := HashDashboard([]byte(in), "U", "T")
		slow, err2 := hashDashboardSlow([]byte(in), "U", "T")
		if err1 != nil || err2 != nil || fast != slow {
			c, _ := canonicalTop(nil, []byte(in), "U", "T")
			t.Errorf("%s: fast %s %v, slow %s %v\ncanonical: %s", in, fast, err1, slow, err2, c)
		}
	}
	for _, bad := range []string{``, `[]`, `{"a":}`, `{"a":1`, `{"a":"x}`, `{"a":tru}`, `{"a":1} x`, "{\"a\":\"\x01\"}", `{"a":"\q"}`, `{a:1}`, `{"a":1E400}`, `{"a":00}`, `{"a":-01}`, `{"a":1.}`, `{"a":.5}`, `{"a":1e}`, `{"a":1e+}`, `{"a":--1}`, `{"a":1-2}`, `{"a":-}`, `{"a":0x1}`} {
		if _, err := HashDashboard([]byte(bad), "U", "T"); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, err := HashDashboard([]byte(strings.Repeat(`{"a":`, 50)+"1"+strings.Repeat("}", 50)), "U", "T"); err != nil {
		t.Error(err)
	}
	// Nesting as deep as encoding/json allows is hashed; deeper is refused,
	// not a stack exhausted.
	if _, err := HashDashboard([]byte(`{"a":`+strings.Repeat("[", 9998)+strings.Repeat("]", 9998)+"}"), "U", "T"); err != nil {
		t.Error(err)
	}
	for _, deep := range []string{`{"a":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + "}", `{"a":` + strings.Repeat("[", 5_000_000)} {
		if _, err := HashDashboard([]byte(deep), "U", "T"); err == nil || !strings.Contains(err.Error(), "too deep") {
			t.Errorf("%d bytes of nesting: %v", len(deep), err)
		}
	}
}

// HashDashboardSpec (one pass, the spec's own title) must agree with
// decoding the title first and hashing with it, as the legacy path does.
func TestHashDashboardSpecMatchesTwoPasses(t *testing.T) {
	inputs := []string{
		`{}`,
		`{"title":"plain"}`,
		`{"title":null,"x":1}`,
		`{"title":"first","title":"last wins"}`,
		`{"id":3,"uid":"stale","version":9,"title":"T","panels":[{"title":"not the top one"}]}`,
		`{"title":"esc \u00e9\"\\ \ud83d\ude00 \ud800"}`,
		"{\"title\":\"bad \xff utf8\"}",
		`{"nested":{"title":"deep"}}`,
	}
	for _, in := range inputs {
		var head struct {
			Title string `json:"title"`
		}
		if err := json.Unmarshal([]byte(in), &head); err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		want, err := HashDashboard([]byte(in), "U", head.Title)
		if err != nil {
			t.Fatal(err)
		}
		got, title, err := HashDashboardSpec([]byte(in), "U")
		if err != nil || got != want || title != head.Title {
			t.Errorf("%s: got %s %q %v, want %s %q", in, got, title, err, want, head.Title)
		}
	}
	for _, bad := range []string{`{"title":1}`, `{"title":["x"]}`, `{"title":"x"`, `[]`} {
		if _, _, err := HashDashboardSpec([]byte(bad), "U"); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

// needsLook must flag a word exactly when one of its bytes would stop the
// byte-by-byte scan: every byte value at every position, and random words
// (where borrows between bytes could mislead a weaker formula).
func TestNeedsLook(t *testing.T) {
	naive := func(w [8]byte) bool {
		for _, c := range w {
			if c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
				return true
			}
		}
		return false
	}
	check := func(w [8]byte) {
		if got, want := needsLook(binary.LittleEndian.Uint64(w[:])), naive(w); got != want {
			t.Fatalf("% x: needsLook %v, want %v", w, got, want)
		}
	}
	for pos := range 8 {
		for c := range 256 {
			w := [8]byte{'a', 'a', 'a', 'a', 'a', 'a', 'a', 'a'}
			w[pos] = byte(c)
			check(w)
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 1_000_000 {
		var w [8]byte
		for i := range w {
			// Mostly near the boundaries: controls, quote, backslash, 0x7f/0x80.
			switch r.IntN(4) {
			case 0:
				w[i] = byte(r.IntN(256))
			case 1:
				w[i] = byte(0x1e + r.IntN(6))
			case 2:
				w[i] = "\"\\!#[]\x7f\x80"[r.IntN(8)]
			default:
				w[i] = byte(0x20 + r.IntN(0x60))
			}
		}
		check(w)
	}
}

// FuzzFastHashMatchesReference: wherever the reference decoder accepts a
// JSON document, the fast parser must hash it the same; where it refuses
// one, so must the fast parser, which also refuses anything not JSON. Seeds include unsorted and duplicate keys,
// which take the rearranging path.
func FuzzFastHashMatchesReference(f *testing.F) {
	for _, seed := range []string{
		`{}`, `{"b":1,"a":2}`, `{"a":{"z":1,"y":[{"d":1,"c":2}]},"a":3}`,
		`{"panels":[{"id":1,"gridPos":{"w":12,"h":8}}],"uid":"u","title":"t","id":4,"version":2}`,
		`{"s":"\u00e9\"\\ \ud83d\ude00 plain ascii text longer than eight"}`,
		`{"x":[1.5,2e3,-0,1E2],"y":null,"z":true}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		fast, errFast := HashDashboard(in, "U", "T")
		if !json.Valid(in) {
			// The reference's Decoder stops after the first value, so it
			// takes "{}0"; a model with trailing bytes is refused here.
			if errFast == nil {
				t.Fatalf("%q is not JSON, and was hashed", in)
			}
			return
		}
		slow, errSlow := hashDashboardSlow(in, "U", "T")
		if (errFast == nil) != (errSlow == nil) {
			t.Fatalf("%q: fast error %v, reference error %v", in, errFast, errSlow)
		}
		if errFast == nil && fast != slow {
			t.Fatalf("%q: fast %s, reference %s", in, fast, slow)
		}
	})
}
