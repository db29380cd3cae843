package inventory

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// volatileKeys are top-level fields Grafana rewrites from its own columns
// when it loads or saves a dashboard; they say nothing about content, and an
// upgrade or restore may change them.
var volatileKeys = map[string]bool{"id": true, "version": true}

// HashDashboard returns the hex sha256 of the dashboard model in canonical
// form: keys sorted, numbers in one spelling, volatile fields dropped, and
// uid/title taken from the row (Grafana serves the row's values, while the
// stored JSON of old dashboards may lack them).
func HashDashboard(model []byte, uid, title string) (string, error) {
	sum, _, err := hashTop(model, &topOverride{uid: uid, title: title}, true)
	return sum, err
}

// HashDashboardSpec hashes a dashboard spec as served by /apis like
// HashDashboard with the object's name as uid and the spec's own title,
// and returns that title, in one pass over the spec.
func HashDashboardSpec(spec []byte, uid string) (sum, title string, err error) {
	top := &topOverride{uid: uid, keepTitle: true}
	sum, _, err = hashTop(spec, top, true)
	return sum, top.title, err
}

// hashDashboardPrefix is HashDashboard for the model that starts in (an
// answer from there on), returning where the model ends too.
func hashDashboardPrefix(in []byte, uid, title string) (sum string, n int, err error) {
	return hashTop(in, &topOverride{uid: uid, title: title}, false)
}

// hashDashboardSpecPrefix is HashDashboardSpec for the spec that starts
// in (a list page from there on), returning where the spec ends too.
func hashDashboardSpecPrefix(in []byte, uid string) (sum, title string, n int, err error) {
	top := &topOverride{uid: uid, keepTitle: true}
	sum, n, err = hashTop(in, top, false)
	return sum, top.title, n, err
}

// hashTop hashes the canonical form of the object in starts with, top's
// overrides applied; whole: nothing but whitespace may follow it. n is
// where the object ends.
func hashTop(in []byte, top *topOverride, whole bool) (sum string, n int, err error) {
	bp := hashBufPool.Get().(*[]byte)
	defer hashBufPool.Put(bp)
	var out []byte
	if whole {
		out, err = canonicalWith((*bp)[:0], in, top)
		n = len(in)
	} else {
		out, n, err = canonicalPrefix((*bp)[:0], in, top)
	}
	*bp = out
	if err != nil {
		return "", 0, fmt.Errorf("dashboard JSON: %w", err)
	}
	h := sha256.Sum256(out)
	return hex.EncodeToString(h[:]), n, nil
}

var hashBufPool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// hashDashboardSlow is the reference implementation through encoding/json,
// kept to cross-check the fast parser in tests.
func hashDashboardSlow(model []byte, uid, title string) (string, error) {
	dec := json.NewDecoder(bytes.NewReader(model))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return "", fmt.Errorf("dashboard JSON: %w", err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return "", fmt.Errorf("dashboard JSON is %T, not an object", v)
	}
	for k := range volatileKeys {
		delete(m, k)
	}
	m["uid"] = uid
	m["title"] = title
	h := sha256.New()
	w := bufio.NewWriterSize(h, 4096)
	if err := writeCanonical(w, m); err != nil {
		return "", err
	}
	if err := w.Flush(); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// CanonicalJSON renders v (as produced by a UseNumber decoder) canonically;
// exported so that tests and tools can show what was hashed.
func CanonicalJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	bw := bufio.NewWriter(&b)
	if err := writeCanonical(bw, v); err != nil {
		return nil, err
	}
	bw.Flush()
	return b.Bytes(), nil
}

func writeCanonical(w *bufio.Writer, v any) error {
	switch x := v.(type) {
	case nil:
		w.WriteString("null")
	case bool:
		if x {
			w.WriteString("true")
		} else {
			w.WriteString("false")
		}
	case string:
		writeString(w, x)
	case json.Number:
		s, err := canonicalNumber(string(x))
		if err != nil {
			return err
		}
		w.WriteString(s)
	case float64:
		s, err := canonicalNumber(strconv.FormatFloat(x, 'g', -1, 64))
		if err != nil {
			return err
		}
		w.WriteString(s)
	case []any:
		w.WriteByte('[')
		for i, e := range x {
			if i > 0 {
				w.WriteByte(',')
			}
			if err := writeCanonical(w, e); err != nil {
				return err
			}
		}
		w.WriteByte(']')
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		w.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				w.WriteByte(',')
			}
			writeString(w, k)
			w.WriteByte(':')
			if err := writeCanonical(w, x[k]); err != nil {
				return err
			}
		}
		w.WriteByte('}')
	default:
		return fmt.Errorf("canonical JSON: unexpected %T", v)
	}
	return nil
}

// canonicalNumber spells equal numbers alike: 1, 1.0 and 1e0 all become "1",
// because Grafana's backend and frontend re-serialise numbers differently.
// Integers written without fraction or exponent keep full precision.
func canonicalNumber(s string) (string, error) {
	if !strings.ContainsAny(s, ".eE") {
		var n big.Int
		if _, ok := n.SetString(s, 10); !ok {
			return "", fmt.Errorf("canonical JSON: bad number %q", s)
		}
		return n.String(), nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return "", fmt.Errorf("canonical JSON: bad number %q", s)
	}
	if f == math.Trunc(f) && math.Abs(f) < 1<<53 {
		return strconv.FormatInt(int64(f), 10), nil
	}
	return strconv.FormatFloat(f, 'g', -1, 64), nil
}

const hexDigits = "0123456789abcdef"

// writeString escapes only what JSON requires, so that the encoding does not
// depend on any library's HTML-escaping defaults.
func writeString(w *bufio.Writer, s string) {
	w.WriteByte('"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"':
				w.WriteString(`\"`)
			case c == '\\':
				w.WriteString(`\\`)
			case c < 0x20:
				w.WriteString(`\u00`)
				w.WriteByte(hexDigits[c>>4])
				w.WriteByte(hexDigits[c&0xf])
			default:
				w.WriteByte(c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			// The same replacement encoding/json makes when decoding.
			w.WriteRune(utf8.RuneError)
		} else {
			w.WriteString(s[i : i+size])
		}
		i += size
	}
	w.WriteByte('"')
}
