package grafanastandin

// Unified storage (conformance §7 "Unified storage", "When legacy dashboard
// is stale") and the Kubernetes-style objects it holds (conformance §8
// "Object shape").
//
// With the migration marker in unifiedstorage_migration_log, dashboards and
// folders live in `resource` (value = the full object JSON) and the legacy
// `dashboard`/`folder` tables are no longer read or written: they go stale.
// The stand-in then serves /api from a projection of `resource` into the
// legacy layout, kept in a scratch database outside the data directory (the
// way Grafana serves /api from its unified search index), so that every /api
// handler runs the same queries in both modes. The projection is built when
// the server opens and kept up to date by the server's own writes; changes
// made to grafana.db by another process while it is open are not seen.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

const (
	dashboardGroup    = "dashboard.grafana.app"
	folderGroup       = "folder.grafana.app"
	dashboardResource = "dashboards"
	folderResource    = "folders"

	// migrationMarker is the unifiedstorage_migration_log row after which
	// dashboards and folders are unified-only (conformance §7 "When legacy
	// dashboard is stale"); migrationMarkerSQL is the row's sql column as
	// the issue threads show it (grafana/grafana#123616).
	migrationMarker    = "folders and dashboards migration"
	migrationMarkerSQL = "unified storage data migration: folders-dashboards"

	// Annotations and labels of conformance §8 "Object shape"
	// (pkg/apimachinery/utils/meta.go @ v12.4.0).
	annoFolder           = "grafana.app/folder"
	annoCreatedBy        = "grafana.app/createdBy"
	annoUpdatedBy        = "grafana.app/updatedBy"
	annoUpdatedTimestamp = "grafana.app/updatedTimestamp"
	labelInternalID      = "grafana.app/deprecatedInternalID"

	// resource.action / resource_history.action (conformance §7).
	actionCreated = 1
	actionUpdated = 2
	actionDeleted = 3
)

// namespaceOf maps an org to its namespace: "default" for org 1, "org-<id>"
// otherwise (conformance §8 "Path, namespaces").
func namespaceOf(org int64) string {
	if org == 1 {
		return "default"
	}
	return "org-" + strconv.FormatInt(org, 10)
}

// parseNamespace is the inverse of namespaceOf. stack is set for a Cloud
// namespace "stacks-<id>", which an on-premise Grafana rejects (conformance
// §8: authn.invalid-namespace); ok is false for anything else.
func parseNamespace(ns string) (org int64, stack, ok bool) {
	switch {
	case ns == "default":
		return 1, false, true
	case strings.HasPrefix(ns, "org-"):
		id, err := strconv.ParseInt(strings.TrimPrefix(ns, "org-"), 10, 64)
		return id, false, err == nil && id > 0
	case strings.HasPrefix(ns, "stacks-"):
		_, err := strconv.ParseInt(strings.TrimPrefix(ns, "stacks-"), 10, 64)
		return 0, err == nil, false
	}
	return 0, false, false
}

// objMeta is the metadata of a stored or served object.
type objMeta struct {
	Name              string            `json:"name"`
	Namespace         string            `json:"namespace"`
	UID               string            `json:"uid"`
	ResourceVersion   string            `json:"resourceVersion,omitempty"`
	Generation        int64             `json:"generation"`
	CreationTimestamp string            `json:"creationTimestamp"`
	Labels            map[string]string `json:"labels,omitempty"`
	Annotations       map[string]string `json:"annotations,omitempty"`
}

// object is a dashboard or folder as `resource.value` holds it and /apis
// serves it (status only when served).
type object struct {
	Kind       string          `json:"kind"`
	APIVersion string          `json:"apiVersion"`
	Metadata   objMeta         `json:"metadata"`
	Spec       json.RawMessage `json:"spec"`
	Status     json.RawMessage `json:"status,omitempty"`
}

// record is one dashboard or folder independent of where it is stored.
type record struct {
	org               int64
	id                int64 // legacy id (label deprecatedInternalID)
	uid, title        string
	folderUID         string // parent folder
	version           int64  // legacy version = metadata.generation
	isFolder          bool
	created, updated  time.Time
	createdBy         string // "user:<uid>", "" when unknown
	updatedBy         string
	storedVersion     string          // dashboards: API version the spec is stored at
	spec              json.RawMessage // dashboards: classic model without id/uid/version, or a v2 spec
	folderDescription string
	// specFields is spec decoded one level, when recordFromObject had to.
	specFields map[string]json.RawMessage
}

func (r record) group() (string, string) {
	if r.isFolder {
		return folderGroup, folderResource
	}
	return dashboardGroup, dashboardResource
}

// clusterUID stands in for metadata.uid, which Grafana derives from the
// object's identity (gapiutil.CalculateClusterWideUID @ v12.4.0); the
// derivation here is the stand-in's own.
func clusterUID(group, resource, ns, name string) string {
	sum := sha256.Sum256([]byte(group + "/" + resource + "/" + ns + "/" + name))
	b := make([]byte, 44)
	for i := range b {
		b[i] = alnum[int(sum[i%len(sum)]+byte(i/len(sum))*7)%len(alnum)]
	}
	return string(b)
}

func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// storedObject is the object JSON kept in resource.value: no resourceVersion
// (the column holds it) and no status (conformance §7 "Unified storage").
// folderVersion is the folder API version objects are written at.
func (r record) storedObject(folderVersion string) ([]byte, error) {
	o := r.newObject(folderVersion)
	return o.appendJSON(nil)
}

// newObject is r as the object unified storage keeps.
func (r record) newObject(folderVersion string) object {
	group, res := r.group()
	ns := namespaceOf(r.org)
	o := object{Metadata: objMeta{
		Name: r.uid, Namespace: ns, UID: clusterUID(group, res, ns, r.uid),
		Generation: r.version, CreationTimestamp: rfc3339(r.created),
		Annotations: map[string]string{annoUpdatedTimestamp: rfc3339(r.updated)},
	}}
	if r.id > 0 {
		o.Metadata.Labels = map[string]string{labelInternalID: strconv.FormatInt(r.id, 10)}
	}
	if r.createdBy != "" {
		o.Metadata.Annotations[annoCreatedBy] = r.createdBy
	}
	if r.updatedBy != "" {
		o.Metadata.Annotations[annoUpdatedBy] = r.updatedBy
	}
	if r.folderUID != "" {
		o.Metadata.Annotations[annoFolder] = r.folderUID
	}
	o.Spec = r.spec
	if len(o.Spec) == 0 {
		o.Spec = json.RawMessage(`{}`)
	}
	if r.isFolder {
		o.Kind, o.APIVersion = "Folder", folderGroup+"/"+folderVersion
		o.Spec = mustJSON(map[string]string{"title": r.title, "description": r.folderDescription})
	} else {
		o.Kind, o.APIVersion = "Dashboard", dashboardGroup+"/"+r.storedVersion
	}
	return o
}

// appendJSON encodes o as json.Marshal would, splicing in spec and status:
// they are valid JSON already (the stand-in made or checked them), and
// json.Marshal would validate and compact every byte of them again.
func (o *object) appendJSON(dst []byte) ([]byte, error) {
	head := *o
	head.Spec, head.Status = json.RawMessage(`0`), nil
	b, err := json.Marshal(&head)
	if err != nil {
		return dst, err
	}
	b, ok := bytes.CutSuffix(b, []byte(`"spec":0}`))
	if !ok {
		return dst, fmt.Errorf("encoding %s: unexpected layout", o.Metadata.Name)
	}
	dst = append(append(append(dst, b...), `"spec":`...), o.Spec...)
	if len(o.Status) > 0 {
		dst = append(append(dst, `,"status":`...), o.Status...)
	}
	return append(dst, '}'), nil
}

// recordFromObject reads a stored object back (the inverse of storedObject).
func recordFromObject(org int64, isFolder bool, value []byte) (record, error) {
	var o struct {
		APIVersion string                     `json:"apiVersion"`
		Metadata   objMeta                    `json:"metadata"`
		Spec       map[string]json.RawMessage `json:"spec"`
	}
	if err := json.Unmarshal(value, &o); err != nil {
		return record{}, err
	}
	r := record{org: org, uid: o.Metadata.Name, version: o.Metadata.Generation, isFolder: isFolder}
	r.id, _ = strconv.ParseInt(o.Metadata.Labels[labelInternalID], 10, 64)
	r.created, _ = time.Parse(time.RFC3339, o.Metadata.CreationTimestamp)
	r.updated, _ = time.Parse(time.RFC3339, o.Metadata.Annotations[annoUpdatedTimestamp])
	if r.updated.IsZero() {
		r.updated = r.created
	}
	r.createdBy, r.updatedBy = o.Metadata.Annotations[annoCreatedBy], o.Metadata.Annotations[annoUpdatedBy]
	r.folderUID = o.Metadata.Annotations[annoFolder]
	_ = json.Unmarshal(o.Spec["title"], &r.title)
	if isFolder {
		_ = json.Unmarshal(o.Spec["description"], &r.folderDescription)
	} else {
		r.storedVersion = strings.TrimPrefix(o.APIVersion, dashboardGroup+"/")
		r.specFields = o.Spec
		r.spec = encodeRaw(o.Spec)
	}
	return r, nil
}

// classicSpec strips what Grafana drops from a legacy model when it turns
// it into an object: id, version and uid live in the metadata
// (legacy/sql_dashboards.go @ v12.4.0). The rest is served re-encoded:
// top-level keys sorted, compact.
func classicSpec(data []byte) (json.RawMessage, error) {
	if out, ok := classicSpecFast(data); ok {
		return out, nil
	}
	return classicSpecDecoding(data)
}

// classicSpecDecoding is classicSpec by decoding the top level and encoding
// it again: for models classicSpecFast leaves aside, and the reference its
// tests compare with.
func classicSpecDecoding(data []byte) (json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	delete(m, "id")
	delete(m, "version")
	delete(m, "uid")
	// The values above are the stored bytes verbatim.
	var out bytes.Buffer
	out.Grow(len(data))
	err := json.Compact(&out, encodeRaw(m))
	return out.Bytes(), err
}

// classicSpecFast does what classicSpec does in one scan of the stored
// model, for the common case: a compact object whose top-level keys need
// no re-encoding. ok is false for anything else (classicSpec then decodes).
// Listing thousands of dashboards is otherwise dominated by decoding them.
func classicSpecFast(data []byte) (json.RawMessage, bool) {
	members, ok := compactTopMembers(data)
	if !ok {
		return nil, false
	}
	members = slices.DeleteFunc(members, func(m topMember) bool { return m.key == "id" || m.key == "version" || m.key == "uid" })
	return writeTopMembers(members), true
}

// topMember is a top-level member of a stored model: its key and its
// value's bytes as they stand.
type topMember struct {
	key   string
	value []byte
}

// compactTopMembers splits a compact JSON object into its members, false
// for anything the fast paths must leave to encoding/json: whitespace,
// keys json.Marshal would spell differently, malformed tokens or nesting.
func compactTopMembers(data []byte) ([]topMember, bool) {
	if len(data) < 2 || data[0] != '{' {
		return nil, false
	}
	if string(data) == "{}" {
		return nil, true
	}
	var members []topMember
	for i := 1; ; {
		if i >= len(data) || data[i] != '"' {
			return nil, false
		}
		ks := i + 1
		ke := ks
		for ke < len(data) && data[ke] != '"' {
			if c := data[ke]; c == '\\' || c < 0x20 || c >= 0x80 || c == '<' || c == '>' || c == '&' {
				return nil, false // json.Marshal would spell the key differently
			}
			ke++
		}
		if ke+1 >= len(data) || data[ke+1] != ':' {
			return nil, false
		}
		vs := ke + 2
		ve, ok := skipCompactValue(data, vs)
		if !ok || ve >= len(data) {
			return nil, false
		}
		members = append(members, topMember{key: string(data[ks:ke]), value: data[vs:ve]})
		switch data[ve] {
		case ',':
			i = ve + 1
			continue
		case '}':
			if ve != len(data)-1 {
				return nil, false
			}
			return members, true
		default:
			return nil, false
		}
	}
}

// writeTopMembers writes members as encodeRaw writes a decoded map: keys
// sorted, of duplicates the last one (as decoding to a map keeps it).
func writeTopMembers(members []topMember) []byte {
	slices.SortStableFunc(members, func(a, b topMember) int { return strings.Compare(a.key, b.key) })
	n := 2
	for _, m := range members {
		n += len(m.key) + len(m.value) + 4
	}
	out := make([]byte, 0, n)
	out = append(out, '{')
	first := true
	for j, m := range members {
		if j+1 < len(members) && members[j+1].key == m.key {
			continue
		}
		if !first {
			out = append(out, ',')
		}
		first = false
		out = append(append(append(append(out, '"'), m.key...), '"', ':'), m.value...)
	}
	return append(out, '}')
}

// skipCompactValue returns the end of the JSON value starting at i, false
// for whitespace (not compact) or a token or nesting that is malformed.
func skipCompactValue(data []byte, i int) (int, bool) {
	start, depth := i, 0
	var open [64]byte // the brackets open at each depth
	for i < len(data) {
		switch c := data[i]; {
		case c == '"':
			i++
			for i < len(data) && data[i] != '"' {
				if data[i] == '\\' {
					i++
				} else if data[i] < 0x20 {
					return 0, false
				}
				i++
			}
			if i >= len(data) {
				return 0, false
			}
			i++
		case c == '{' || c == '[':
			if depth == len(open) {
				return 0, false
			}
			open[depth] = c
			depth++
			i++
			continue
		case c == '}' || c == ']':
			if depth == 0 {
				return i, c == '}' && i > start // the enclosing object's end
			}
			depth--
			if open[depth] != c-2 { // '{'+2 == '}', '['+2 == ']'
				return 0, false
			}
			i++
		case c == ',' || c == ':':
			if depth == 0 {
				return i, c == ',' && i > start
			}
			i++
			continue
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			return 0, false
		case c == 't' || c == 'f' || c == 'n':
			lit := "true"
			if c == 'f' {
				lit = "false"
			} else if c == 'n' {
				lit = "null"
			}
			if !bytes.HasPrefix(data[i:], []byte(lit)) {
				return 0, false
			}
			i += len(lit)
		case c == '-' || c >= '0' && c <= '9':
			i++
			for i < len(data) && (data[i] >= '0' && data[i] <= '9' || data[i] == '.' || data[i] == 'e' || data[i] == 'E' || data[i] == '+' || data[i] == '-') {
				i++
			}
		default:
			return 0, false
		}
		if depth == 0 {
			return i, true
		}
	}
	return 0, false
}

// isV2 tells a schema v2 API version from a classic one.
func isV2(apiVersion string) bool { return strings.HasPrefix(apiVersion, "v2") }

// legacyModel is the JSON the legacy API and the /api projection use for
// r, with id, uid and version put back: the stored model of a classic
// dashboard, the lossy conversion of a v2 one (conformance §4 "Schema v2
// dashboards on the legacy endpoint"). When that conversion fails, Grafana
// falls back to the stored version: the v2 spec is returned, with
// apiVersion the stored version (reported as meta.apiVersion); apiVersion
// is "" otherwise.
func (r record) legacyModel() (model []byte, apiVersion string, err error) {
	set := map[string]any{"id": r.id, "uid": r.uid, "version": r.version}
	if !isV2(r.storedVersion) {
		if r.specFields != nil {
			m := make(map[string]json.RawMessage, len(r.specFields)+3)
			for k, v := range r.specFields {
				m[k] = v
			}
			for k, v := range set {
				m[k] = mustJSON(v)
			}
			return encodeRaw(m), "", nil
		}
		model, err = rewriteModel(r.spec, set)
		return model, "", err
	}
	classic, err := v2ToClassic(r.spec)
	if err != nil {
		model, err = rewriteModel(r.spec, set)
		return model, r.storedVersion, err
	}
	model, err = rewriteModel(classic, set)
	return model, "", err
}

// rvClock hands out resource versions: microsecond timestamps, increasing
// across the database (storage/unified/sql/rvmanager @ v12.4.0 writes
// microseconds; conformance §7).
type rvClock struct{ last int64 }

func newRVClock(ctx context.Context, q execer) (*rvClock, error) {
	var last sql.NullInt64
	if err := q.QueryRowContext(ctx, `SELECT MAX(resource_version) FROM resource_version`).Scan(&last); err != nil {
		return nil, err
	}
	return &rvClock{last: last.Int64}, nil
}

func (c *rvClock) next(at time.Time) int64 {
	rv := max(at.UnixMicro(), c.last+1)
	c.last = rv
	return rv
}

// snowflakeOfRV is the key_path form of a resource version
// (db/migrations/resource_mig.go snowflakeFromRv @ v12.4.0: bwmarrin
// snowflake epoch 1288834974657 ms, 10 node bits, 12 step bits).
func snowflakeOfRV(rv int64) int64 {
	return (((rv / 1000) - 1288834974657) << 22) + (rv % 1000)
}

// guidFor makes a deterministic UUID-shaped guid (resource.guid is a UUID
// in Grafana; deterministic here so that seeded files are reproducible).
func guidFor(parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	h := hex.EncodeToString(sum[:16])
	return h[0:8] + "-" + h[8:12] + "-4" + h[13:16] + "-a" + h[17:20] + "-" + h[20:32]
}

// resourceWriter writes objects into unified storage within one
// transaction, with prepared statements and the current resource versions
// kept in memory (seeding 10,000 dashboards must take seconds).
type resourceWriter struct {
	tx                                      *sql.Tx
	clock                                   *rvClock
	folderVersion                           string
	insHist, insRes, updRes, delRes, getRes *sql.Stmt
	current                                 map[string]int64 // key -> rv; 0 = known absent
	maxRV                                   map[[2]string]int64
}

func newResourceWriter(ctx context.Context, tx *sql.Tx, folderVersion string) (*resourceWriter, error) {
	clock, err := newRVClock(ctx, tx)
	if err != nil {
		return nil, err
	}
	w := &resourceWriter{tx: tx, clock: clock, folderVersion: folderVersion, current: map[string]int64{}, maxRV: map[[2]string]int64{}}
	for _, p := range []struct {
		st **sql.Stmt
		q  string
	}{
		{&w.insHist, `INSERT INTO resource_history (guid, resource_version, "group", resource, namespace, name, value, action, label_set, previous_resource_version, folder, generation, key_path)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?, ?)`},
		{&w.insRes, `INSERT INTO resource (guid, resource_version, "group", resource, namespace, name, value, action, label_set, previous_resource_version, folder)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, 0, ?)`},
		{&w.updRes, `UPDATE resource SET resource_version = ?, value = ?, action = ?, previous_resource_version = ?, folder = ?
			WHERE namespace = ? AND "group" = ? AND resource = ? AND name = ?`},
		{&w.delRes, `DELETE FROM resource WHERE namespace = ? AND "group" = ? AND resource = ? AND name = ?`},
		{&w.getRes, `SELECT resource_version FROM resource WHERE namespace = ? AND "group" = ? AND resource = ? AND name = ?`},
	} {
		if *p.st, err = tx.PrepareContext(ctx, p.q); err != nil {
			w.close()
			return nil, err
		}
	}
	return w, nil
}

func (w *resourceWriter) close() {
	for _, st := range []*sql.Stmt{w.insHist, w.insRes, w.updRes, w.delRes, w.getRes} {
		if st != nil {
			st.Close()
		}
	}
}

func resKey(group, res, ns, name string) string {
	return ns + "\x00" + group + "\x00" + res + "\x00" + name
}

// rvOf is the current resource version of an object, 0 when it has no
// `resource` row.
func (w *resourceWriter) rvOf(ctx context.Context, group, res, ns, name string) (int64, error) {
	k := resKey(group, res, ns, name)
	if rv, ok := w.current[k]; ok {
		return rv, nil
	}
	var rv sql.NullInt64
	err := w.getRes.QueryRowContext(ctx, ns, group, res, name).Scan(&rv)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, err
	}
	w.current[k] = rv.Int64
	return rv.Int64, nil
}

// exists reports whether r has a `resource` row.
func (w *resourceWriter) exists(ctx context.Context, r record) (bool, error) {
	group, res := r.group()
	rv, err := w.rvOf(ctx, group, res, namespaceOf(r.org), r.uid)
	return rv > 0, err
}

// put writes one event of an object into resource_history and the
// resulting state into resource (a delete removes the row: conformance §7,
// sql/data/resource_delete.sql @ v12.4.0). value is nil for a delete. It
// returns the new resource version.
func (w *resourceWriter) put(ctx context.Context, at time.Time, group, res, ns, name, folder string, generation int64, value []byte, action int) (int64, error) {
	prev, err := w.rvOf(ctx, group, res, ns, name)
	if err != nil {
		return 0, err
	}
	rv := w.clock.next(at)
	verb := map[int]string{actionCreated: "created", actionUpdated: "updated", actionDeleted: "deleted"}[action]
	keyPath := fmt.Sprintf("unified/data/%s/%s/%s/%s/%d~%s~%s", group, res, ns, name, snowflakeOfRV(rv), verb, folder)
	var val any
	if value != nil {
		val = string(value)
	}
	if _, err := w.insHist.ExecContext(ctx, guidFor("history", group, res, ns, name, strconv.FormatInt(rv, 10)), rv, group, res, ns, name, val, action, prev, folder, generation, keyPath); err != nil {
		return 0, err
	}
	switch {
	case action == actionDeleted:
		_, err = w.delRes.ExecContext(ctx, ns, group, res, name)
		rv = 0
	case prev > 0:
		_, err = w.updRes.ExecContext(ctx, rv, val, action, prev, folder, ns, group, res, name)
	default:
		_, err = w.insRes.ExecContext(ctx, guidFor("resource", group, res, ns, name), rv, group, res, ns, name, val, action, folder)
	}
	if err != nil {
		return 0, err
	}
	w.current[resKey(group, res, ns, name)] = rv
	gr := [2]string{group, res}
	w.maxRV[gr] = max(w.maxRV[gr], w.clock.last)
	return w.clock.last, nil
}

// putRecord writes r as a create, or an update when it already exists, at
// time at.
func (w *resourceWriter) putRecord(ctx context.Context, r record, at time.Time) (int64, error) {
	value, err := r.storedObject(w.folderVersion)
	if err != nil {
		return 0, err
	}
	group, res := r.group()
	ns := namespaceOf(r.org)
	action := actionCreated
	if ok, err := w.exists(ctx, r); err != nil {
		return 0, err
	} else if ok {
		action = actionUpdated
	}
	return w.put(ctx, at, group, res, ns, r.uid, r.folderUID, r.version, value, action)
}

// flush records the latest resource version of every group/resource
// written (the resource_version table).
func (w *resourceWriter) flush(ctx context.Context) error {
	for gr, rv := range w.maxRV {
		if _, err := w.tx.ExecContext(ctx, `INSERT INTO resource_version ("group", resource, resource_version) VALUES (?, ?, ?)
			ON CONFLICT ("group", resource) DO UPDATE SET resource_version = MAX(resource_version, excluded.resource_version)`, gr[0], gr[1], rv); err != nil {
			return err
		}
	}
	return nil
}

func hasMarker(ctx context.Context, q execer) (bool, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM unifiedstorage_migration_log WHERE migration_id = ? AND success = 1`, migrationMarker).Scan(&n)
	return n > 0, err
}

func writeMarker(ctx context.Context, tx execer, at time.Time) error {
	if ok, err := hasMarker(ctx, tx); err != nil || ok {
		return err
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO unifiedstorage_migration_log (migration_id, sql, success, error, timestamp) VALUES (?, ?, 1, '', ?)`,
		migrationMarker, migrationMarkerSQL, at.UTC().Format(timeLayout))
	return err
}

// userUIDs maps user ids to "user:<uid>" (conformance §8 "Object shape":
// grafana.app/createdBy; legacy/sql_dashboards.go getUserID @ v12.4.0 leaves
// it empty when the user has no uid).
func userUIDs(ctx context.Context, q interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
	QueryRowContext(context.Context, string, ...any) *sql.Row
}) (map[int64]string, error) {
	out := map[int64]string{}
	if has, err := hasColumn(ctx, q, "user", "uid"); err != nil || !has {
		return out, err // 9.5: no user.uid
	}
	rows, err := q.QueryContext(ctx, `SELECT id, COALESCE(uid, '') FROM user`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		var uid string
		if err := rows.Scan(&id, &uid); err != nil {
			return nil, err
		}
		if uid != "" {
			out[id] = "user:" + uid
		}
	}
	return out, rows.Err()
}

func parseDBTime(s string) time.Time {
	for _, l := range []string{timeLayout, time.RFC3339Nano, "2006-01-02 15:04:05.999999999-07:00", "2006-01-02 15:04:05.999999999 -0700 MST"} {
		if t, err := time.Parse(l, s); err == nil {
			return t.UTC()
		}
	}
	return time.Time{}
}

// legacyRecords reads the live dashboards and folders of the legacy tables,
// as the folders and dashboards migration does (conformance §7; deleted rows
// are left out).
func legacyRecords(ctx context.Context, db *sql.DB, f features, org int64) ([]record, error) {
	users, err := userUIDs(ctx, db)
	if err != nil {
		return nil, err
	}
	apiVersion, live, parent := `''`, ``, `''`
	if f.v12Columns {
		apiVersion = `COALESCE(d.api_version, '')`
	}
	if f.deletedColumn {
		live = ` AND d.deleted IS NULL`
	}
	if f.folderUIDColumn {
		parent = `COALESCE(d.folder_uid, '')`
	}
	q := `SELECT d.org_id, d.id, d.uid, d.title, d.version, d.is_folder, d.data, d.created, d.updated, COALESCE(d.created_by, 0), COALESCE(d.updated_by, 0),
		` + parent + `, ` + apiVersion + `, COALESCE(fo.description, '')
		FROM dashboard d LEFT JOIN folder fo ON fo.org_id = d.org_id AND fo.uid = d.uid AND d.is_folder = 1
		WHERE (? = 0 OR d.org_id = ?)` + live + ` ORDER BY d.org_id, d.is_folder DESC, d.id`
	rows, err := db.QueryContext(ctx, q, org, org)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []record
	for rows.Next() {
		var (
			r                record
			data             []byte
			created, updated string
			cby, uby         int64
		)
		if err := rows.Scan(&r.org, &r.id, &r.uid, &r.title, &r.version, &r.isFolder, &data, &created, &updated, &cby, &uby, &r.folderUID, &r.storedVersion, &r.folderDescription); err != nil {
			return nil, err
		}
		r.created, r.updated = parseDBTime(created), parseDBTime(updated)
		r.createdBy, r.updatedBy = users[cby], users[uby]
		if !r.isFolder {
			if r.storedVersion == "" || r.storedVersion == "v1alpha1" {
				// legacy/sql_dashboards.go @ v12.4.0: no api_version = v0alpha1.
				r.storedVersion = f.classicStoredVersion
			}
			if r.spec, err = classicSpec(data); err != nil {
				return nil, fmt.Errorf("dashboard %s: %w", r.uid, err)
			}
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// migrateToUnified runs the folders and dashboards migration: every live
// legacy dashboard and folder becomes a `resource` row (and one history
// row), then the marker is written (conformance §7 "When legacy dashboard
// is stale"; only the latest version of each dashboard is carried over).
func migrateToUnified(ctx context.Context, db *sql.DB, f features, at time.Time) error {
	recs, err := legacyRecords(ctx, db, f, 0)
	if err != nil {
		return err
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	w, err := newResourceWriter(ctx, tx, f.folderVersions[0])
	if err != nil {
		return err
	}
	defer w.close()
	for _, r := range recs {
		if ok, err := w.exists(ctx, r); err != nil || ok {
			if err != nil {
				return err
			}
			continue // already there (an earlier, unmarked attempt)
		}
		if _, err := w.putRecord(ctx, r, at); err != nil {
			return fmt.Errorf("migrating %s: %w", r.uid, err)
		}
	}
	if err := w.flush(ctx); err != nil {
		return err
	}
	if err := writeMarker(ctx, tx, at); err != nil {
		return err
	}
	return tx.Commit()
}

// unifiedRecords reads every dashboard and folder of `resource`.
func unifiedRecords(ctx context.Context, db *sql.DB) ([]record, error) {
	rows, err := db.QueryContext(ctx, `SELECT namespace, resource, value FROM resource
		WHERE ("group" = ? AND resource = ?) OR ("group" = ? AND resource = ?) ORDER BY namespace, resource DESC, name`,
		folderGroup, folderResource, dashboardGroup, dashboardResource)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []record
	for rows.Next() {
		var ns, res string
		var value []byte
		if err := rows.Scan(&ns, &res, &value); err != nil {
			return nil, err
		}
		org, _, ok := parseNamespace(ns)
		if !ok {
			continue
		}
		r, err := recordFromObject(org, res == folderResource, value)
		if err != nil {
			return nil, fmt.Errorf("resource %s/%s: %w", ns, res, err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// projection is the scratch database /api reads in unified mode.
type projection struct {
	db  *sql.DB
	dir string
}

func (p *projection) close() {
	if p == nil {
		return
	}
	p.db.Close()
	os.RemoveAll(p.dir)
}

// openProjection lays the unified dashboards and folders out like the
// legacy tables of version f, in a scratch database.
func openProjection(ctx context.Context, main *sql.DB, f features) (*projection, error) {
	dir, err := os.MkdirTemp("", "grafana-standin-unified-")
	if err != nil {
		return nil, err
	}
	p := &projection{dir: dir}
	dsn := "file:" + (&url.URL{Path: filepath.Join(dir, "projection.db")}).EscapedPath() + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(OFF)&_txlock=immediate"
	if p.db, err = sql.Open("sqlite", dsn); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	p.db.SetMaxOpenConns(4)
	// As many kept idle as may be open: closing and reopening connections
	// (and re-preparing statements, and refilling the page cache) under
	// concurrent requests cost more than the queries.
	p.db.SetMaxIdleConns(4)
	if err := p.fill(ctx, main, f); err != nil {
		p.close()
		return nil, fmt.Errorf("grafanastandin: projecting unified storage: %w", err)
	}
	return p, nil
}

func (p *projection) fill(ctx context.Context, main *sql.DB, f features) error {
	if err := migrate(ctx, p.db, f); err != nil {
		return err
	}
	recs, err := unifiedRecords(ctx, main)
	if err != nil {
		return err
	}
	tx, err := p.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	// Users, for the created_by/updated_by logins the /api answers carry.
	rows, err := main.QueryContext(ctx, `SELECT id, version, login, email, org_id, is_admin, created, updated, COALESCE(is_service_account, 0), COALESCE(uid, '') FROM user`)
	if err != nil {
		return err
	}
	byUID := map[string]int64{}
	for rows.Next() {
		var (
			id, version, org  int64
			login, email, uid string
			admin, sa         bool
			created, updated  string
		)
		if err := rows.Scan(&id, &version, &login, &email, &org, &admin, &created, &updated, &sa, &uid); err != nil {
			rows.Close()
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO user (id, version, login, email, org_id, is_admin, created, updated, is_service_account, uid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			id, version, login, email, org, admin, created, updated, sa, nullIfEmpty(uid)); err != nil {
			rows.Close()
			return err
		}
		if uid != "" {
			byUID["user:"+uid] = id
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	// Ids: the label where there is one, fresh ones after the largest otherwise.
	var nextID int64
	for _, r := range recs {
		nextID = max(nextID, r.id)
	}
	folderIDs := map[string]int64{} // org/uid -> id
	for i := range recs {
		if recs[i].id == 0 {
			nextID++
			recs[i].id = nextID
		}
		if recs[i].isFolder {
			folderIDs[fmt.Sprint(recs[i].org, "/", recs[i].uid)] = recs[i].id
		}
	}
	cache := newStmtCache(tx)
	defer cache.close()
	for _, r := range recs {
		if err := projectRecord(ctx, cache, f, r, folderIDs[fmt.Sprint(r.org, "/", r.folderUID)], byUID, true); err != nil {
			return fmt.Errorf("%s: %w", r.uid, err)
		}
	}
	return tx.Commit()
}

// projectRecord writes r into the projection; fresh: it is not there yet.
func projectRecord(ctx context.Context, tx *stmtCache, f features, r record, folderID int64, byUID map[string]int64, fresh bool) error {
	var (
		data       []byte
		apiVersion string
		err        error
	)
	if r.isFolder {
		data = mustJSON(map[string]any{"id": r.id, "uid": r.uid, "title": r.title, "version": r.version, "schemaVersion": 17})
	} else if data, apiVersion, err = r.legacyModel(); err != nil {
		return err
	}
	if !fresh {
		if _, err := tx.exec(ctx, `DELETE FROM dashboard_tag WHERE dashboard_id = ?`, r.id); err != nil {
			return err
		}
		if _, err := tx.exec(ctx, `DELETE FROM dashboard WHERE id = ?`, r.id); err != nil {
			return err
		}
	}
	row := dashRow{id: r.id, version: r.version, slug: slugify(r.title), title: r.title, data: string(data), org: r.org,
		created: r.created.Format(timeLayout), updated: r.updated.Format(timeLayout), by: byUID[r.createdBy], updatedBy: byUID[r.updatedBy],
		folderID: folderID, folderUID: r.folderUID, uid: r.uid, isFolder: r.isFolder}
	// api_version in the projection: what /api reports as meta.apiVersion
	// when it is not the classic version (a failed v2 conversion).
	row.apiVersion = apiVersion
	if _, err := insertDashboard(ctx, tx, f, row); err != nil {
		return err
	}
	if r.isFolder {
		if !fresh {
			if _, err := tx.exec(ctx, `DELETE FROM folder WHERE org_id = ? AND uid = ?`, r.org, r.uid); err != nil {
				return err
			}
		}
		_, err := tx.exec(ctx, `INSERT INTO folder (uid, org_id, title, description, parent_uid, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			r.uid, r.org, r.title, r.folderDescription, nullIfEmpty(r.folderUID), row.created, row.updated)
		return err
	}
	var tags []string
	if r.specFields != nil {
		_ = json.Unmarshal(r.specFields["tags"], &tags)
	} else {
		var m struct {
			Tags []string `json:"tags"`
		}
		_ = json.Unmarshal(data, &m)
		tags = m.Tags
	}
	for _, t := range tags {
		if _, err := tx.exec(ctx, `INSERT INTO dashboard_tag (dashboard_id, term) VALUES (?, ?)`, r.id, t); err != nil {
			return err
		}
	}
	return nil
}

// mirror writes the projection row id (just saved through /api, inside
// ptx) to `resource` as the unified store would: in unified mode, saving
// through POST /api/dashboards/db or /api/folders writes resource and
// resource_history, never the legacy tables (conformance §7).
func (s *Server) mirror(ctx context.Context, ptx *sql.Tx, id int64) error {
	var (
		r                record
		data             []byte
		created, updated string
		cby, uby         int64
	)
	err := ptx.QueryRowContext(ctx, `SELECT d.org_id, d.uid, d.title, d.version, d.is_folder, d.data, d.created, d.updated, COALESCE(d.created_by, 0), COALESCE(d.updated_by, 0),
		COALESCE(d.folder_uid, ''), COALESCE(fo.description, '') FROM dashboard d LEFT JOIN folder fo ON fo.org_id = d.org_id AND fo.uid = d.uid AND d.is_folder = 1 WHERE d.id = ?`, id).
		Scan(&r.org, &r.uid, &r.title, &r.version, &r.isFolder, &data, &created, &updated, &cby, &uby, &r.folderUID, &r.folderDescription)
	if err != nil {
		return err
	}
	r.id = id
	r.created, r.updated = parseDBTime(created), parseDBTime(updated)
	users, err := userUIDs(ctx, s.db)
	if err != nil {
		return err
	}
	r.createdBy, r.updatedBy = users[cby], users[uby]
	if !r.isFolder {
		// The legacy API saves through the classic version (conformance §4):
		// a v2 dashboard saved this way becomes a classic one.
		r.storedVersion = s.f.classicStoredVersion
		if r.spec, err = classicSpec(data); err != nil {
			return err
		}
		if _, err := ptx.ExecContext(ctx, `UPDATE dashboard SET api_version = NULL WHERE id = ?`, id); err != nil {
			return err
		}
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	w, err := newResourceWriter(ctx, tx, s.f.folderVersions[0])
	if err != nil {
		return err
	}
	defer w.close()
	if _, err := w.putRecord(ctx, r, r.updated); err != nil {
		return err
	}
	if err := w.flush(ctx); err != nil {
		return err
	}
	return tx.Commit()
}

// continueToken encodes v as Grafana's unified list does: base64 of JSON
// (storage/unified/sql/continue.go @ v12.4.0).
func continueToken(v any) string {
	return base64.StdEncoding.EncodeToString(mustJSON(v))
}
