package inventory

import (
	"encoding/binary"
	"encoding/json"
	"math/rand/v2"
	"slices"
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
	// naive is the index of the first byte needing a look, 8 for none.
	naive := func(w [8]byte) int {
		for i, c := range w {
			if c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
				return i
			}
		}
		return 8
	}
	check := func(w [8]byte) {
		x := binary.LittleEndian.Uint64(w[:])
		want := naive(w)
		if got := needsLook(x); got != (want < 8) {
			t.Fatalf("% x: needsLook %v, want %v", w, got, want < 8)
		}
		if got := firstLook(x); got != want {
			t.Fatalf("% x: firstLook %d, want %d", w, got, want)
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

// canonicalDecimal may say no to a canonical spelling (it is a shortcut),
// but never yes to one the canonical writer would change.
func TestCanonicalDecimal(t *testing.T) {
	for _, tc := range []struct {
		lit  string
		want bool
	}{
		{"0.5", true}, {"-0.5", true}, {"44.5", true}, {"4.625", true}, {"0.001", true}, {"0.0001", true}, {"123456.7", true},
		{"0.00001", false},   // 1e-05
		{"1234567.5", false}, // 1.2345675e+06
		{"1.0", false}, {"1.50", false}, {"01.5", false}, {"00.5", false}, {".5", false}, {"5.", false}, {"1e3", false}, {"1.5e3", false},
		{"1.5E3", false}, {"0.1234567890123456", false}, {"1.00000000000000001", false}, {"-", false}, {"1.-5", false},
	} {
		if got := canonicalDecimal([]byte(tc.lit)); got != tc.want {
			t.Errorf("canonicalDecimal(%s) = %v, want %v", tc.lit, got, tc.want)
		}
	}
	r := rand.New(rand.NewPCG(3, 4))
	digits := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte('0' + r.IntN(10))
		}
		return string(b)
	}
	yes := 0
	for range 500_000 {
		lit := digits(r.IntN(9)) + "." + digits(1+r.IntN(18))
		if r.IntN(2) == 0 {
			lit = "-" + lit
		}
		if !canonicalDecimal([]byte(lit)) {
			continue
		}
		yes++
		if c, err := canonicalNumber(lit); err != nil || c != lit {
			t.Fatalf("canonicalDecimal(%s) = true, but the canonical spelling is %s (%v)", lit, c, err)
		}
	}
	if yes < 10_000 {
		t.Errorf("only %d of 500,000 random decimals taken as canonical: the shortcut does not work", yes)
	}
}

// A value canonicalSpan takes as canonical must be what the full writer
// writes for it, byte for byte: random documents, half of them written
// canonically, the others with one of the differences the check must see.
func TestCanonicalSpanIsCanonical(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	var gen func(depth int, canon bool) string
	str := func(canon bool) string {
		parts := []string{"a", "b", "Zz", "é", "\\\"", "\\\\", "✓", " ", "x>y"}
		if !canon {
			parts = append(parts, "\\u0026", "\\n", "\\/", "\\u00e9", "\xff", "\t")
		}
		var b strings.Builder
		for range r.IntN(12) {
			b.WriteString(parts[r.IntN(len(parts))])
		}
		return `"` + b.String() + `"`
	}
	num := func(canon bool) string {
		nums := []string{"0", "-1", "42", "4.625", "0.001", "-0.5", "123456.7"}
		if !canon {
			nums = append(nums, "-0", "1.0", "1e3", "0.00001", "1234567.5", "12345678901234567890", "1.50")
		}
		return nums[r.IntN(len(nums))]
	}
	gen = func(depth int, canon bool) string {
		kind := r.IntN(6)
		if depth > 4 {
			kind = 2 + r.IntN(4)
		}
		ws := ""
		if !canon && r.IntN(8) == 0 {
			ws = " "
		}
		switch kind {
		case 0:
			keys := map[string]bool{}
			for range r.IntN(5) {
				keys[strings.Trim(str(true), `"`)] = true
			}
			var ks []string
			for k := range keys {
				if !strings.Contains(k, `\`) {
					ks = append(ks, k)
				}
			}
			slices.Sort(ks)
			if !canon && len(ks) > 1 && r.IntN(3) == 0 {
				ks[0], ks[1] = ks[1], ks[0]
			}
			if !canon && len(ks) > 0 && r.IntN(4) == 0 {
				ks = append(ks, ks[len(ks)-1]) // a duplicate
			}
			var b strings.Builder
			b.WriteString("{" + ws)
			for i, k := range ks {
				if i > 0 {
					b.WriteString(",")
				}
				b.WriteString(`"` + k + `":` + ws + gen(depth+1, canon))
			}
			return b.String() + "}"
		case 1:
			var items []string
			for range r.IntN(4) {
				items = append(items, gen(depth+1, canon))
			}
			return "[" + ws + strings.Join(items, ",") + "]"
		case 2:
			return str(canon)
		case 3:
			return num(canon)
		case 4:
			return []string{"true", "false", "null"}[r.IntN(3)]
		default:
			return "[]"
		}
	}
	took := 0
	for i := range 200_000 {
		in := []byte(gen(0, i%2 == 0))
		if i%4 == 1 && len(in) > 1 {
			// A damaged document: the check must not take what is not JSON.
			at := r.IntN(len(in))
			const junk = "{}[]\":,0a\\"
			in = append(in[:at:at], append([]byte{junk[r.IntN(len(junk))]}, in[at+r.IntN(2):]...)...)
		} else if !json.Valid(in) {
			continue
		}
		p := &canonParser{in: in}
		end, ok := p.canonicalSpan(0, 0)
		if !ok {
			continue
		}
		took++
		if !json.Valid(in[:end]) {
			t.Fatalf("%q: %q taken as canonical, and it is not JSON", in, in[:end])
		}
		full := &canonParser{in: in[:end], checkFrom: end + 1} // the full writer only
		want, err := full.value(nil, 0)
		if err != nil || string(want) != string(in[:end]) {
			t.Fatalf("%q taken as canonical, the writer gives %q (%v)", in[:end], want, err)
		}
	}
	if took < 50_000 {
		t.Errorf("only %d documents taken as canonical", took)
	}
}
