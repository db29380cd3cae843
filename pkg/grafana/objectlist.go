package grafana

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"time"
	"unicode/utf8"
)

// bodyDecoder is an answer that decodes its own body. finish hands it the
// bytes instead of running encoding/json, which would validate a page of
// dashboards in full and then scan and copy every spec a second time.
type bodyDecoder interface {
	decodeBody(body []byte) error
}

// objectPage is one page of an /apis list. Its objects' specs are slices
// of the page's own copy of the body, delimited but not validated here:
// every consumer parses them (folders through encoding/json, dashboards
// through the inventory's canonical parser), and an invalid spec fails
// there.
type objectPage struct {
	Continue string
	Items    []*Object
	// readSpec, when set, reads each spec where it stands (see SpecReader).
	readSpec SpecReader
}

// SpecReader reads an object's spec while its list page is decoded, so
// that the spec is walked once, not delimited first and read later. It is
// handed the object as decoded so far (Grafana serves metadata before
// spec) and the page from the spec's first byte on; it must read exactly
// one JSON value there and return its length, keeping what it learnt in
// o.Read. Returning 0 leaves the spec to be delimited as usual.
type SpecReader func(o *Object, rest []byte) (n int, err error)

func (p *objectPage) decodeBody(body []byte) error {
	s := &jsonScanner{b: append([]byte(nil), body...)}
	err := s.object(func(key []byte) error {
		switch string(key) {
		case "metadata":
			v, err := s.span()
			if err != nil {
				return err
			}
			var meta struct {
				Continue string `json:"continue"`
			}
			if err := json.Unmarshal(v, &meta); err != nil {
				return fmt.Errorf("list metadata: %w", err)
			}
			p.Continue = meta.Continue
			return nil
		case "items":
			// Each item is decoded where it stands: cutting its span out
			// first would walk every spec's grammar once more.
			return s.array(func() error {
				o := &Object{}
				if err := s.objectInto(o, p.readSpec); err != nil {
					return fmt.Errorf("item %d: %w", len(p.Items), err)
				}
				p.Items = append(p.Items, o)
				return nil
			})
		}
		return s.value()
	})
	if err == nil {
		err = s.end()
	}
	return err
}

// decodeBody keeps the dashboard model as it came (its one consumer, the
// inventory's hash, parses it in full) and decodes only meta: running
// encoding/json over the model cost more than hashing it.
func (d *Dashboard) decodeBody(body []byte) error {
	return d.decodeIn(append([]byte(nil), body...), nil)
}

// decodeIn decodes body where it stands: d.Dashboard is a slice of body.
// With readModel, the model is read where it is found (see ReadDashboard)
// rather than delimited.
func (d *Dashboard) decodeIn(body []byte, readModel func(rest []byte) (int, error)) error {
	s := &jsonScanner{b: body}
	err := s.object(func(key []byte) error {
		switch string(key) {
		case "dashboard":
			s.ws()
			start := s.i
			if readModel != nil {
				n, err := readModel(s.b[start:])
				if err != nil {
					return err
				}
				s.i += n
			} else if err := s.skipUnchecked(); err != nil {
				// Delimited only: the hash parses the model in full.
				return err
			}
			d.Dashboard = json.RawMessage(s.b[start:s.i])
			return nil
		case "meta":
			if err := s.dashboardMeta(&d.Meta); err != nil {
				return fmt.Errorf("meta: %w", err)
			}
			return nil
		}
		return s.value()
	})
	if err == nil {
		err = s.end()
	}
	return err
}

// dashboardMeta reads the fields of DashboardMeta and skips the rest.
func (s *jsonScanner) dashboardMeta(m *DashboardMeta) error {
	if s.null() {
		return nil
	}
	return s.object(func(key []byte) error {
		var err error
		switch string(key) {
		case "type":
			err = s.stringInto(&m.Type)
		case "slug":
			err = s.stringInto(&m.Slug)
		case "url":
			err = s.stringInto(&m.URL)
		case "created":
			err = s.timeInto(&m.Created)
		case "updated":
			err = s.timeInto(&m.Updated)
		case "version":
			err = s.int64Into(&m.Version)
		case "folderId":
			err = s.int64Into(&m.FolderID)
		case "folderUid":
			err = s.stringInto(&m.FolderUID)
		case "folderTitle":
			err = s.stringInto(&m.FolderTitle)
		case "provisioned":
			err = s.boolInto(&m.Provisioned)
		default:
			err = s.value()
		}
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		return nil
	})
}

func (s *jsonScanner) timeInto(dst *time.Time) error {
	v, err := s.span()
	if err != nil {
		return err
	}
	return dst.UnmarshalJSON(v) // null leaves it as it is
}

func (s *jsonScanner) boolInto(dst *bool) error {
	v, err := s.span()
	switch {
	case err != nil:
		return err
	case string(v) == "true":
		*dst = true
	case string(v) == "false":
		*dst = false
	case string(v) != "null":
		return fmt.Errorf("%s is not a boolean", v)
	}
	return nil
}

// objectInto decodes the object at the cursor into o and moves past it,
// reading its small fields and keeping its spec as it came. Keys match
// case-sensitively, as Kubernetes' own decoder (sigs.k8s.io/json) matches
// them, not case-folded as encoding/json does.
func (s *jsonScanner) objectInto(o *Object, readSpec SpecReader) error {
	return s.object(func(key []byte) error {
		var err error
		switch string(key) {
		case "apiVersion":
			err = s.stringInto(&o.APIVersion)
		case "kind":
			err = s.stringInto(&o.Kind)
		case "metadata":
			err = s.objectMeta(&o.Metadata)
		case "spec":
			s.ws()
			start := s.i
			if readSpec != nil {
				o.Read = nil // of an earlier spec member, if any
				var n int
				if n, err = readSpec(o, s.b[start:]); err != nil || n > 0 {
					s.i += n
					o.Spec = json.RawMessage(s.b[start:s.i])
					break
				}
			}
			if err = s.skipUnchecked(); err == nil {
				o.Spec = json.RawMessage(s.b[start:s.i])
			}
		case "status":
			var v []byte
			if v, err = s.span(); err == nil {
				err = json.Unmarshal(v, &o.Status)
			}
		default:
			err = s.value()
		}
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		return nil
	})
}

// objectMeta reads the metadata fields rebind uses and skips the rest
// (managedFields can be most of an object's metadata).
func (s *jsonScanner) objectMeta(m *ObjectMeta) error {
	if s.null() {
		return nil
	}
	return s.object(func(key []byte) error {
		var err error
		switch string(key) {
		case "name":
			err = s.stringInto(&m.Name)
		case "namespace":
			err = s.stringInto(&m.Namespace)
		case "generation":
			err = s.int64Into(&m.Generation)
		case "annotations":
			err = s.stringMap(&m.Annotations)
		case "labels":
			err = s.stringMap(&m.Labels)
		default:
			err = s.value()
		}
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		return nil
	})
}

// null consumes a null literal if one stands at the cursor.
func (s *jsonScanner) null() bool {
	s.ws()
	if len(s.b)-s.i >= 4 && string(s.b[s.i:s.i+4]) == "null" {
		s.i += 4
		return true
	}
	return false
}

// stringInto decodes a string as encoding/json would into a string field:
// null leaves it as it is, anything but a string is an error.
func (s *jsonScanner) stringInto(dst *string) error {
	if s.null() {
		return nil
	}
	start, end, err := s.str()
	if err != nil {
		return err
	}
	raw := s.b[start+1 : end-1]
	if plainString(raw) {
		*dst = string(raw)
		return nil
	}
	// Escapes, control characters and invalid UTF-8 take encoding/json's
	// rules, replacement characters included.
	return json.Unmarshal(s.b[start:end], dst)
}

// plainString says whether a string's raw bytes decode to themselves: no
// escapes, no control characters, valid UTF-8.
func plainString(raw []byte) bool {
	for _, c := range raw {
		if c < 0x20 || c == '\\' {
			return false
		}
	}
	return utf8.Valid(raw)
}

func (s *jsonScanner) int64Into(dst *int64) error {
	if s.null() {
		return nil
	}
	v, err := s.span()
	if err != nil {
		return err
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil {
		return fmt.Errorf("%s is not an integer", v)
	}
	*dst = n
	return nil
}

// stringMap decodes an object of strings; null makes the map nil, as
// encoding/json does, and a null value is the empty string.
func (s *jsonScanner) stringMap(dst *map[string]string) error {
	if s.null() {
		*dst = nil
		return nil
	}
	m := *dst
	if m == nil {
		m = map[string]string{}
	}
	err := s.object(func(key []byte) error {
		var v string
		if err := s.stringInto(&v); err != nil {
			return err
		}
		m[string(key)] = v
		return nil
	})
	*dst = m
	return err
}

// jsonScanner walks JSON structure without building values: objects and
// arrays by grammar, strings to their closing quote, numbers and literals
// by their characters (not their spelling). It finds where values start and end; whoever needs
// a value decodes (and so fully validates) that slice.
type jsonScanner struct {
	b     []byte
	i     int
	depth int
}

var errJSONSyntax = errors.New("invalid JSON")

func (s *jsonScanner) fail(what string) error {
	return fmt.Errorf("%w: %s at offset %d", errJSONSyntax, what, s.i)
}

func (s *jsonScanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// end accepts only whitespace after the value.
func (s *jsonScanner) end() error {
	s.ws()
	if s.i != len(s.b) {
		return s.fail("trailing data")
	}
	return nil
}

// maxDepth bounds nesting, as encoding/json does (10000), so that a
// hostile answer cannot exhaust the stack.
const maxDepth = 10000

// object calls fn with each member's key (decoded when it holds an
// escape); fn must consume the member's value from s, nil skips them.
func (s *jsonScanner) object(fn func(key []byte) error) error {
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '{' {
		return s.fail("expected an object")
	}
	if s.depth++; s.depth > maxDepth {
		return s.fail("nested too deep")
	}
	defer func() { s.depth-- }()
	s.i++
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		return nil
	}
	for {
		s.ws()
		ks, ke, err := s.str()
		if err != nil {
			return err
		}
		key := s.b[ks+1 : ke-1]
		for _, c := range key {
			if c == '\\' {
				var k string
				if err := json.Unmarshal(s.b[ks:ke], &k); err != nil {
					return s.fail("bad key")
				}
				key = []byte(k)
				break
			}
		}
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return s.fail("expected :")
		}
		s.i++
		s.ws()
		if fn == nil {
			err = s.value()
		} else {
			err = fn(key)
		}
		if err != nil {
			return err
		}
		s.ws()
		if s.i >= len(s.b) {
			return s.fail("unterminated object")
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case '}':
			s.i++
			return nil
		default:
			return s.fail("expected , or }")
		}
	}
}

// array calls fn for each element; fn must consume it from s, nil skips
// them.
func (s *jsonScanner) array(fn func() error) error {
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '[' {
		return s.fail("expected an array")
	}
	if s.depth++; s.depth > maxDepth {
		return s.fail("nested too deep")
	}
	defer func() { s.depth-- }()
	s.i++
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == ']' {
		s.i++
		return nil
	}
	for {
		s.ws()
		var err error
		if fn == nil {
			err = s.value()
		} else {
			err = fn()
		}
		if err != nil {
			return err
		}
		s.ws()
		if s.i >= len(s.b) {
			return s.fail("unterminated array")
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case ']':
			s.i++
			return nil
		default:
			return s.fail("expected , or ]")
		}
	}
}

// skipUnchecked skips a value by its brackets and strings alone, without
// checking the grammar inside: for specs, which every consumer parses in
// full anyway (walking them here as well cost a third of a list's time).
// A malformed spec still ends up malformed in its slice, and fails there.
func (s *jsonScanner) skipUnchecked() error {
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '{' && s.b[s.i] != '[' {
		return s.value()
	}
	depth := 0
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case '"':
			if _, _, err := s.str(); err != nil {
				return err
			}
			continue
		case '{', '[':
			depth++
		case '}', ']':
			if depth--; depth == 0 {
				s.i++
				return nil
			}
		}
		s.i++
	}
	return s.fail("unterminated value")
}

// span skips one value and returns it.
func (s *jsonScanner) span() ([]byte, error) {
	s.ws()
	start := s.i
	if err := s.value(); err != nil {
		return nil, err
	}
	return s.b[start:s.i], nil
}

// value skips one value starting at s.i (no leading whitespace).
func (s *jsonScanner) value() error {
	if s.i >= len(s.b) {
		return s.fail("unexpected end")
	}
	switch c := s.b[s.i]; {
	case c == '{':
		return s.object(nil)
	case c == '[':
		return s.array(nil)
	case c == '"':
		_, _, err := s.str()
		return err
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	case c == '-' || c >= '0' && c <= '9':
		s.i++
		for s.i < len(s.b) {
			c := s.b[s.i]
			if c >= '0' && c <= '9' || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-' {
				s.i++
				continue
			}
			break
		}
		return nil
	}
	return s.fail("unexpected character")
}

func (s *jsonScanner) literal(lit string) error {
	if len(s.b)-s.i < len(lit) || string(s.b[s.i:s.i+len(lit)]) != lit {
		return s.fail("bad literal")
	}
	s.i += len(lit)
	return nil
}

// str skips a string, returning its span with the quotes. Control
// characters are left to whoever decodes the value.
func (s *jsonScanner) str() (start, end int, err error) {
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return 0, 0, s.fail("expected a string")
	}
	start = s.i
	i := s.i + 1
	for {
		if i = quoteOrBackslash(s.b, i); i >= len(s.b) {
			s.i = len(s.b)
			return 0, 0, s.fail("unterminated string")
		}
		if s.b[i] == '"' {
			s.i = i + 1
			return start, s.i, nil
		}
		i += 2 // a backslash: the byte after it is escaped, whatever it is
	}
}

// quoteOrBackslash returns the index of the first '"' or '\\' in b at or
// after i, len(b) when there is none: eight bytes at a time, as most
// strings of a dashboard are short and plain (bytes.IndexByte costs a
// call per string and then needs the backslashes before a quote counted).
func quoteOrBackslash(b []byte, i int) int {
	const each, high = 0x0101010101010101, 0x8080808080808080
	for ; i+8 <= len(b); i += 8 {
		x := binary.LittleEndian.Uint64(b[i:])
		q, bs := x^(each*'"'), x^(each*'\\')
		// A byte is zero in q or bs where it is a quote or a backslash;
		// the lowest zero byte is found exactly (borrows only run upward).
		if m := ((q-each)&^q | (bs-each)&^bs) & high; m != 0 {
			return i + bits.TrailingZeros64(m)>>3
		}
	}
	for ; i < len(b); i++ {
		if b[i] == '"' || b[i] == '\\' {
			return i
		}
	}
	return len(b)
}
