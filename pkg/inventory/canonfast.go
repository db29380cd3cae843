package inventory

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf16"
	"unicode/utf8"
)

// canonParser renders JSON canonically straight from bytes. Decoding into
// map[string]any first cost most of an inventory's CPU and garbage; this
// writes into the output as it reads and allocates little else.
type canonParser struct {
	in   []byte
	pos  int
	keys [][]member // per depth: the members of the object being read
	str  []byte
	// reorder holds an unsorted object's members while they are written
	// back in key order.
	reorder []byte
	// checkFrom is where canonicalSpan last found a difference: a value
	// starting before it is not checked again.
	checkFrom int
	// escapedKeys holds the decoded form of keys spelled with escapes (and
	// the replaced uid/title); all other keys are read from in where they
	// stand, so a member costs no allocation.
	escapedKeys []byte
}

// member is one object member: its key (in in, or in escapedKeys when
// escaped) and where it was written in the output: member is where its
// canonical key starts, start and end delimit its canonical value.
type member struct {
	keyStart, keyEnd   int32
	escaped            bool
	plainKey           bool // prints as it stands: ASCII, nothing to escape
	member, start, end int
}

func (p *canonParser) key(m member) []byte {
	if m.escaped {
		return p.escapedKeys[m.keyStart:m.keyEnd]
	}
	return p.in[m.keyStart:m.keyEnd]
}

var parserPool = sync.Pool{New: func() any { return &canonParser{} }}

var errSyntax = errors.New("invalid JSON")

// canonicalTop appends the canonical form of the top-level object in, with
// volatile keys dropped and uid/title replaced.
func canonicalTop(dst, in []byte, uid, title string) ([]byte, error) {
	return canonicalWith(dst, in, &topOverride{uid: uid, title: title})
}

func canonicalWith(dst, in []byte, top *topOverride) ([]byte, error) {
	dst, n, err := canonicalPrefix(dst, in, top)
	if err != nil {
		return dst, err
	}
	for _, c := range in[n:] {
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			return dst, fmt.Errorf("%w: trailing data at offset %d", errSyntax, n)
		}
	}
	return dst, nil
}

// canonicalPrefix is canonicalWith for the object in starts with (after
// whitespace), whatever follows it: n is where the object ends.
func canonicalPrefix(dst, in []byte, top *topOverride) (_ []byte, n int, err error) {
	p := parserPool.Get().(*canonParser)
	defer func() {
		p.in = nil
		parserPool.Put(p)
	}()
	p.in, p.pos, p.checkFrom, p.escapedKeys = in, 0, 0, p.escapedKeys[:0]
	p.skipWS()
	if p.pos >= len(p.in) || p.in[p.pos] != '{' {
		return dst, 0, errors.New("dashboard JSON is not an object")
	}
	dst, err = p.object(dst, 0, top)
	return dst, p.pos, err
}

// topOverride replaces the top-level uid and title; with keepTitle the
// document's own title (a string or null) is kept and reported in title.
type topOverride struct {
	uid, title string
	keepTitle  bool
}

func (p *canonParser) skipWS() {
	for p.pos < len(p.in) {
		switch p.in[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

func (p *canonParser) fail(what string) error {
	return fmt.Errorf("%w: %s at offset %d", errSyntax, what, p.pos)
}

// maxDepth bounds nesting as encoding/json does: a hostile answer must
// not exhaust the stack (the list decoder leaves specs to this parser).
const maxDepth = 10000

func (p *canonParser) value(dst []byte, depth int) ([]byte, error) {
	if depth > maxDepth {
		return dst, p.fail("nested too deep")
	}
	p.skipWS()
	if p.pos >= len(p.in) {
		return dst, p.fail("unexpected end")
	}
	switch c := p.in[p.pos]; {
	case c == '{' || c == '[':
		// Grafana serves compact JSON with sorted keys, so most objects
		// and arrays are already canonical: checked in one quick pass and
		// copied whole, they skip the member bookkeeping below. A failed
		// check is not repeated for values starting before where it
		// failed, so no byte is checked twice.
		if p.pos >= p.checkFrom {
			end, ok := p.canonicalSpan(p.pos, depth)
			if ok {
				dst = append(dst, p.in[p.pos:end]...)
				p.pos = end
				return dst, nil
			}
			p.checkFrom = end
		}
		if c == '{' {
			return p.object(dst, depth, nil)
		}
		return p.array(dst, depth)
	case c == '"':
		s, plain, err := p.stringValue()
		if err != nil {
			return dst, err
		}
		if plain {
			dst = append(dst, '"')
			dst = append(dst, s...)
			return append(dst, '"'), nil
		}
		return appendCanonString(dst, s), nil
	case c == 't':
		return p.literal(dst, "true")
	case c == 'f':
		return p.literal(dst, "false")
	case c == 'n':
		return p.literal(dst, "null")
	case c == '-' || c >= '0' && c <= '9':
		start := p.pos
		p.pos++
		for p.pos < len(p.in) {
			c := p.in[p.pos]
			if c >= '0' && c <= '9' || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-' {
				p.pos++
				continue
			}
			break
		}
		lit := p.in[start:p.pos]
		if plainInteger(lit) {
			return append(dst, lit...), nil // already canonical
		}
		if !validNumber(lit) {
			// strconv would take "00" or "1." that no JSON parser takes.
			return dst, p.fail(fmt.Sprintf("bad number %q", lit))
		}
		if bytes.ContainsAny(lit, ".eE") {
			// Parsed as encoding/json's UseNumber decoder then
			// canonicalNumber would, without the intermediate strings.
			f, err := strconv.ParseFloat(string(lit), 64)
			if err != nil {
				return dst, fmt.Errorf("canonical JSON: bad number %q", lit)
			}
			if f == math.Trunc(f) && math.Abs(f) < 1<<53 {
				return strconv.AppendInt(dst, int64(f), 10), nil
			}
			return strconv.AppendFloat(dst, f, 'g', -1, 64), nil
		}
		n, err := canonicalNumber(string(lit))
		if err != nil {
			return dst, err
		}
		return append(dst, n...), nil
	default:
		return dst, p.fail(fmt.Sprintf("unexpected %q", c))
	}
}

// plainInteger says whether a number literal is an integer that
// canonicalNumber would spell as it is: digits, an optional minus, no
// leading zero, no "-0", short enough for any decoder to hold exactly.
// Most numbers in a dashboard (ids, grid positions, sizes) are.
func plainInteger(lit []byte) bool {
	d := lit
	if len(d) > 0 && d[0] == '-' {
		d = d[1:]
	}
	if len(d) == 0 || len(d) > 15 || d[0] == '0' && (len(d) > 1 || len(lit) > 1) {
		return false
	}
	for _, c := range d {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// validNumber checks JSON's number grammar:
// -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?
func validNumber(lit []byte) bool {
	i := 0
	digits := func() int {
		n := 0
		for i < len(lit) && lit[i] >= '0' && lit[i] <= '9' {
			i++
			n++
		}
		return n
	}
	if i < len(lit) && lit[i] == '-' {
		i++
	}
	switch {
	case i < len(lit) && lit[i] == '0':
		i++
	case digits() == 0:
		return false
	}
	if i < len(lit) && lit[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(lit) && (lit[i] == 'e' || lit[i] == 'E') {
		i++
		if i < len(lit) && (lit[i] == '+' || lit[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(lit)
}

func (p *canonParser) literal(dst []byte, lit string) ([]byte, error) {
	if !strings.HasPrefix(string(p.in[p.pos:min(len(p.in), p.pos+len(lit))]), lit) {
		return dst, p.fail("bad literal")
	}
	p.pos += len(lit)
	return append(dst, lit...), nil
}

func (p *canonParser) array(dst []byte, depth int) ([]byte, error) {
	p.pos++ // [
	dst = append(dst, '[')
	p.skipWS()
	if p.pos < len(p.in) && p.in[p.pos] == ']' {
		p.pos++
		return append(dst, ']'), nil
	}
	for first := true; ; first = false {
		if !first {
			dst = append(dst, ',')
		}
		var err error
		if dst, err = p.value(dst, depth+1); err != nil {
			return dst, err
		}
		p.skipWS()
		if p.pos >= len(p.in) {
			return dst, p.fail("unterminated array")
		}
		switch p.in[p.pos] {
		case ',':
			p.pos++
		case ']':
			p.pos++
			return append(dst, ']'), nil
		default:
			return dst, p.fail("expected , or ]")
		}
	}
}

func (p *canonParser) object(dst []byte, depth int, top *topOverride) ([]byte, error) {
	p.pos++ // {
	for len(p.keys) <= depth {
		p.keys = append(p.keys, nil)
	}
	keys := p.keys[depth][:0]
	// Members are written where they stand, in the order they come: Grafana
	// (Go's encoding/json on a map) serves keys sorted, so an object is
	// usually already canonical and its bytes are copied once, not once per
	// nesting level. Only an unsorted object is rearranged at its end.
	open := len(dst)
	dst = append(dst, '{')
	sorted := true
	p.skipWS()
	if p.pos < len(p.in) && p.in[p.pos] == '}' {
		p.pos++
	} else {
		for {
			p.skipWS()
			if p.pos >= len(p.in) || p.in[p.pos] != '"' {
				return dst, p.fail("expected object key")
			}
			keyStart := p.pos + 1
			k, plain, err := p.stringValue()
			if err != nil {
				return dst, err
			}
			m := member{keyStart: int32(keyStart), keyEnd: int32(keyStart + len(k)), plainKey: plain}
			switch {
			case !plain && !utf8.Valid(k):
				// Keys compare as encoding/json decodes them: each invalid
				// byte a U+FFFD, so "a\x9d" and "a\xa9" are one key.
				m.escaped = true
				m.keyStart = int32(len(p.escapedKeys))
				p.escapedKeys = appendValidUTF8(p.escapedKeys, k)
				m.keyEnd = int32(len(p.escapedKeys))
			case p.pos-1-keyStart != len(k): // unescaped into p.str: keep a copy
				m.escaped = true
				m.keyStart = int32(len(p.escapedKeys))
				p.escapedKeys = append(p.escapedKeys, k...)
				m.keyEnd = int32(len(p.escapedKeys))
			}
			if n := len(keys); n > 0 {
				if sorted && bytes.Compare(p.key(keys[n-1]), p.key(m)) >= 0 {
					sorted = false // out of order, or a duplicate to drop
				}
				dst = append(dst, ',')
			}
			p.skipWS()
			if p.pos >= len(p.in) || p.in[p.pos] != ':' {
				return dst, p.fail("expected :")
			}
			p.pos++
			m.member = len(dst)
			dst = p.appendKey(dst, m)
			m.start = len(dst)
			if dst, err = p.value(dst, depth+1); err != nil {
				return dst, err
			}
			m.end = len(dst)
			keys = append(keys, m)
			p.skipWS()
			if p.pos >= len(p.in) {
				return dst, p.fail("unterminated object")
			}
			if p.in[p.pos] == ',' {
				p.pos++
				continue
			}
			if p.in[p.pos] == '}' {
				p.pos++
				break
			}
			return dst, p.fail("expected , or }")
		}
	}
	if sorted && top == nil {
		p.keys[depth] = keys
		return append(dst, '}'), nil
	}
	if top != nil {
		if top.keepTitle {
			title, err := p.lastString(keys, dst, "title")
			if err != nil {
				return dst, err
			}
			top.title = title
		}
		keys = slices.DeleteFunc(keys, func(m member) bool {
			k := string(p.key(m)) // no allocation: compared and looked up only
			return volatileKeys[k] || k == "uid" || k == "title"
		})
		// The replacements are written after the members, then sorted in.
		for _, kv := range [2][2]string{{"uid", top.uid}, {"title", top.title}} {
			m := member{keyStart: int32(len(p.escapedKeys)), escaped: true, plainKey: true}
			p.escapedKeys = append(p.escapedKeys, kv[0]...)
			m.keyEnd = int32(len(p.escapedKeys))
			m.member = len(dst)
			dst = p.appendKey(dst, m)
			m.start = len(dst)
			dst = appendCanonString(dst, []byte(kv[1]))
			m.end = len(dst)
			keys = append(keys, m)
		}
	}
	// Stable, so that of duplicate keys the last one wins, as with encoding/json.
	slices.SortStableFunc(keys, func(a, b member) int { return bytes.Compare(p.key(a), p.key(b)) })
	body := open + 1
	p.reorder = append(p.reorder[:0], dst[body:]...)
	dst = dst[:body]
	n := 0
	for i, m := range keys {
		if i+1 < len(keys) && bytes.Equal(p.key(keys[i+1]), p.key(m)) {
			continue
		}
		if n > 0 {
			dst = append(dst, ',')
		}
		n++
		dst = append(dst, p.reorder[m.member-body:m.end-body]...)
	}
	p.keys[depth] = keys
	return append(dst, '}'), nil
}

// appendKey writes a member's key in canonical form and its colon.
func (p *canonParser) appendKey(dst []byte, m member) []byte {
	if m.plainKey {
		dst = append(dst, '"')
		dst = append(dst, p.key(m)...)
		dst = append(dst, '"', ':')
		return dst
	}
	return append(appendCanonString(dst, p.key(m)), ':')
}

// lastString decodes the last member named key (the one encoding/json
// would keep) as a string: "" when absent or null, an error for any other
// type.
func (p *canonParser) lastString(keys []member, buf []byte, key string) (string, error) {
	for i := len(keys) - 1; i >= 0; i-- {
		if string(p.key(keys[i])) != key {
			continue
		}
		v := buf[keys[i].start:keys[i].end]
		// A canonical string without escapes is its own bytes in quotes.
		if len(v) >= 2 && v[0] == '"' && bytes.IndexByte(v, '\\') < 0 {
			return string(v[1 : len(v)-1]), nil
		}
		var s *string
		if err := json.Unmarshal(v, &s); err != nil {
			return "", fmt.Errorf("%s: %w", key, err)
		}
		if s == nil {
			return "", nil
		}
		return *s, nil
	}
	return "", nil
}

// stringValue returns the unescaped bytes of the string at pos; the slice is
// valid until the next call. plain says the string was written without
// escapes in printable ASCII, so its canonical form is itself in quotes.
func (p *canonParser) stringValue() (s []byte, plain bool, err error) {
	p.pos++ // opening quote
	start := p.pos
	// Eight bytes at a time up to the first one that needs a look: most of
	// a dashboard's strings are plain ASCII.
	for p.pos+8 <= len(p.in) && !needsLook(binary.LittleEndian.Uint64(p.in[p.pos:])) {
		p.pos += 8
	}
	var high byte
	for p.pos < len(p.in) {
		c := p.in[p.pos]
		if c == '"' {
			s := p.in[start:p.pos]
			p.pos++
			return s, high < utf8.RuneSelf, nil
		}
		if c == '\\' {
			break
		}
		if c < 0x20 {
			return nil, false, p.fail("control character in string")
		}
		high |= c
		p.pos++
	}
	out := append(p.str[:0], p.in[start:p.pos]...)
	for p.pos < len(p.in) {
		c := p.in[p.pos]
		switch {
		case c == '"':
			p.pos++
			p.str = out
			return out, false, nil
		case c < 0x20:
			return nil, false, p.fail("control character in string")
		case c != '\\':
			out = append(out, c)
			p.pos++
			continue
		}
		if p.pos+1 >= len(p.in) {
			break
		}
		e := p.in[p.pos+1]
		p.pos += 2
		switch e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := p.hex4()
			if !ok {
				return nil, false, p.fail("bad \\u escape")
			}
			if utf16.IsSurrogate(r) {
				r2 := utf8.RuneError
				if p.pos+1 < len(p.in) && p.in[p.pos] == '\\' && p.in[p.pos+1] == 'u' {
					save := p.pos
					p.pos += 2
					if lo, ok := p.hex4(); ok {
						if d := utf16.DecodeRune(r, lo); d != utf8.RuneError {
							r2 = d
						} else {
							p.pos = save
						}
					} else {
						p.pos = save
					}
				}
				r = r2
			}
			out = utf8.AppendRune(out, r)
		default:
			return nil, false, p.fail("bad escape")
		}
	}
	return nil, false, p.fail("unterminated string")
}

const (
	eachByte = 0x0101010101010101
	highBits = 0x8080808080808080
)

// needsLook says whether any of the eight bytes in x ends a string or
// needs decoding: a quote, a backslash, a control character or a byte of
// a multi-byte UTF-8 sequence (bit tricks that test each byte at once:
// a byte below n borrows into its high bit when n is subtracted).
func needsLook(x uint64) bool { return lookMask(x) != 0 }

// lookMask has the high bit set of each byte of x that needs a look. A
// borrow can mark bytes after the first marked one too, never before it,
// so the lowest mark is exact: firstLook finds it.
func lookMask(x uint64) uint64 {
	return below(x, 0x20) | below(x^(eachByte*'"'), 1) | below(x^(eachByte*'\\'), 1) | x&highBits
}

// below marks the bytes of v that are less than n (for n <= 0x80).
func below(v, n uint64) uint64 { return (v - eachByte*n) &^ v & highBits }

// firstLook is the index of the first byte of x (read little-endian) that
// needs a look, 8 when none does.
func firstLook(x uint64) int { return bits.TrailingZeros64(lookMask(x)) >> 3 }

// skipPlain returns the index of the first byte at or after i that needs
// a look: eight bytes at a time, then straight to that byte.
func skipPlain(in []byte, i int) int {
	for i+8 <= len(in) {
		if n := firstLook(binary.LittleEndian.Uint64(in[i:])); n < 8 {
			return i + n
		}
		i += 8
	}
	for i < len(in) {
		if c := in[i]; c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			return i
		}
		i++
	}
	return i
}

func (p *canonParser) hex4() (rune, bool) {
	if p.pos+4 > len(p.in) {
		return 0, false
	}
	var r rune
	for _, c := range p.in[p.pos : p.pos+4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	p.pos += 4
	return r, true
}

// appendValidUTF8 appends s with each byte that is not part of a valid
// UTF-8 sequence replaced by U+FFFD, as encoding/json decodes a string.
func appendValidUTF8(dst, s []byte) []byte {
	for i := 0; i < len(s); {
		var n int
		dst, n = appendChar(dst, s[i:])
		i += n
	}
	return dst
}

// appendChar appends the character s starts with (U+FFFD for a byte that
// starts no valid sequence) and says how many bytes of s it took.
func appendChar(dst, s []byte) ([]byte, int) {
	r, size := utf8.DecodeRune(s)
	if r == utf8.RuneError && size == 1 {
		return utf8.AppendRune(dst, utf8.RuneError), 1
	}
	return append(dst, s[:size]...), size
}

// appendCanonString is writeString for byte slices.
func appendCanonString(dst, s []byte) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"':
				dst = append(dst, '\\', '"')
			case c == '\\':
				dst = append(dst, '\\', '\\')
			case c < 0x20:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		var n int
		dst, n = appendChar(dst, s[i:])
		i += n
	}
	return append(dst, '"')
}

// canonicalSpan checks whether the value at i is written exactly as the
// canonical writer would write it: no whitespace, object keys strictly
// increasing (so no duplicates) and free of escapes, strings needing no
// change, numbers already in canonical spelling. It returns the value's end
// when it is, and otherwise where the first difference (or syntax error)
// stands; the caller then parses the value in full, which reports errors.
func (p *canonParser) canonicalSpan(i, depth int) (int, bool) {
	in := p.in
	if depth > maxDepth || i >= len(in) {
		return i, false
	}
	switch c := in[i]; {
	case c == '{':
		i++
		if i < len(in) && in[i] == '}' {
			return i + 1, true
		}
		prevStart, prevEnd := 0, 0
		for first := true; ; first = false {
			if i >= len(in) || in[i] != '"' {
				return i, false
			}
			keyStart := i + 1
			end, escaped, ok := canonicalString(in, i)
			if !ok || escaped {
				return end, false
			}
			keyEnd := end - 1
			if !first && bytes.Compare(in[prevStart:prevEnd], in[keyStart:keyEnd]) >= 0 {
				return keyStart, false
			}
			prevStart, prevEnd = keyStart, keyEnd
			if end >= len(in) || in[end] != ':' {
				return end, false
			}
			if i, ok = p.canonicalSpan(end+1, depth+1); !ok {
				return i, false
			}
			var closed bool
			if i, closed, ok = separator(in, i, '}'); !ok || closed {
				return i, ok
			}
		}
	case c == '[':
		i++
		if i < len(in) && in[i] == ']' {
			return i + 1, true
		}
		for {
			var ok, closed bool
			if i, ok = p.canonicalSpan(i, depth+1); !ok {
				return i, false
			}
			if i, closed, ok = separator(in, i, ']'); !ok || closed {
				return i, ok
			}
		}
	case c == '"':
		end, _, ok := canonicalString(in, i)
		return end, ok
	case c == 't':
		return literalSpan(in, i, "true")
	case c == 'f':
		return literalSpan(in, i, "false")
	case c == 'n':
		return literalSpan(in, i, "null")
	case c == '-' || c >= '0' && c <= '9':
		end := i + 1
		for end < len(in) {
			if c := in[end]; c >= '0' && c <= '9' || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-' {
				end++
				continue
			}
			break
		}
		lit := in[i:end]
		return end, plainInteger(lit) || canonicalDecimal(lit)
	}
	return i, false
}

// separator reads what follows a member or an element at i: a comma,
// with more to come, or closer, which ends the object or array (closed).
func separator(in []byte, i int, closer byte) (next int, closed, ok bool) {
	if i < len(in) {
		switch in[i] {
		case ',':
			return i + 1, false, true
		case closer:
			return i + 1, true, true
		}
	}
	return i, false, false
}

func literalSpan(in []byte, i int, lit string) (int, bool) {
	if len(in)-i >= len(lit) && string(in[i:i+len(lit)]) == lit {
		return i + len(lit), true
	}
	return i, false
}

// canonicalString checks the string whose opening quote is at i: ok when
// appendCanonString would write it back byte for byte (valid UTF-8, no
// control character, no escape but \" and \\). It returns the index after
// the closing quote, and whether an escape was seen (keys then compare
// differently from their bytes).
func canonicalString(in []byte, i int) (end int, escaped, ok bool) {
	i++
	for {
		if i = skipPlain(in, i); i >= len(in) {
			return i, escaped, false
		}
		switch c := in[i]; {
		case c == '"':
			return i + 1, escaped, true
		case c == '\\':
			if i+1 >= len(in) || in[i+1] != '"' && in[i+1] != '\\' {
				return i, escaped, false
			}
			escaped = true
			i += 2
		case c < 0x20:
			return i, escaped, false
		default:
			r, size := utf8.DecodeRune(in[i:])
			if r == utf8.RuneError && size == 1 {
				return i, escaped, false
			}
			i += size
		}
	}
}

// canonicalDecimal says whether a number literal with a fraction is spelled
// as the canonical writer spells its float64 (strconv 'g', shortest): no
// exponent, no needless zero at either end, a decimal exponent in [-4, 6),
// and at most 15 significant digits, so that the shortest spelling of the
// float it parses to is these very digits and it is not an integer.
func canonicalDecimal(lit []byte) bool {
	if len(lit) > 0 && lit[0] == '-' {
		lit = lit[1:]
	}
	dot := bytes.IndexByte(lit, '.')
	if dot <= 0 || dot == len(lit)-1 || lit[len(lit)-1] == '0' {
		return false
	}
	intPart, frac := lit[:dot], lit[dot+1:]
	for _, c := range frac {
		if c < '0' || c > '9' {
			return false // an exponent, or not a number
		}
	}
	for _, c := range intPart {
		if c < '0' || c > '9' {
			return false
		}
	}
	var significant int
	switch {
	case intPart[0] != '0':
		if len(intPart) > 6 { // 'g' switches to an exponent at 1e6
			return false
		}
		significant = len(intPart) + len(frac)
	case len(intPart) > 1:
		return false // a leading zero
	default:
		zeros := len(frac) - len(bytes.TrimLeft(frac, "0"))
		if zeros > 3 { // below 1e-4, 'g' writes an exponent
			return false
		}
		significant = len(frac) - zeros
	}
	return significant <= 15
}
