// Package inventory records which dashboards and folders a Grafana holds, by
// content hash, so that a migration can prove afterwards that nothing was lost.
// An inventory is taken online through the HTTP API or offline from grafana.db.
package inventory

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// FormatVersion is the version of the JSON file format written by Save.
// Version 2 added alert rules, library panels, the API read and the
// dashboards' schema; version 1 files still load (they hold no alert
// rules or library panels, and comparisons say so).
const FormatVersion = 2

// Inventory is a snapshot of dashboards and folders per org.
type Inventory struct {
	FormatVersion int       `json:"formatVersion"`
	Source        string    `json:"source"`
	TakenAt       time.Time `json:"takenAt"`
	// LimitedTo: only these orgs were read, on purpose (--grafana-org-id);
	// empty means every org of the Grafana.
	LimitedTo []int64 `json:"limitedTo,omitempty"`
	// API says how dashboards were read: "apis/<version>" through Grafana
	// 12+'s /apis (their stored schema), "" through the legacy /api or
	// from grafana.db's legacy tables, "resource" from unified storage.
	API string `json:"api,omitempty"`
	// Notes are what the reader found worth saying (a stale legacy table).
	Notes []string `json:"notes,omitempty"`
	Orgs  []Org    `json:"orgs"`
}

// Org holds one organisation's folders and dashboards, sorted by uid.
type Org struct {
	ID         int64       `json:"id"`
	Name       string      `json:"name,omitempty"`
	Folders    []Folder    `json:"folders"`
	Dashboards []Dashboard `json:"dashboards"`
	// AlertRules and LibraryPanels are nil in a version 1 file (not read).
	AlertRules    []Item `json:"alertRules"`
	LibraryPanels []Item `json:"libraryPanels"`
	Counts        Counts `json:"counts"`
}

// Item is an alert rule or a library panel: identity, place and content hash.
type Item struct {
	UID       string `json:"uid"`
	Title     string `json:"title"`
	FolderUID string `json:"folderUid,omitempty"`
	SHA256    string `json:"sha256"`
}

// Folder is a dashboard folder; ParentUID is set for nested folders.
type Folder struct {
	UID       string `json:"uid"`
	Title     string `json:"title"`
	ParentUID string `json:"parentUid,omitempty"`
}

// Dashboard identifies a dashboard and its content. FolderUID is empty for
// the General folder. Version is informative only: upgrades bump it.
type Dashboard struct {
	UID       string `json:"uid"`
	Title     string `json:"title"`
	FolderUID string `json:"folderUid,omitempty"`
	Version   int64  `json:"version"`
	SHA256    string `json:"sha256"`
	// Schema is "v2" for a dashboard stored in Grafana 12's v2 schema.
	Schema string `json:"schema,omitempty"`
}

// Counts summarise an org.
type Counts struct {
	Folders       int `json:"folders"`
	Dashboards    int `json:"dashboards"`
	AlertRules    int `json:"alertRules"`
	LibraryPanels int `json:"libraryPanels"`
}

// Totals sums the counts of all orgs.
func (inv *Inventory) Totals() Counts {
	var c Counts
	for _, o := range inv.Orgs {
		c.Folders += len(o.Folders)
		c.Dashboards += len(o.Dashboards)
		c.AlertRules += len(o.AlertRules)
		c.LibraryPanels += len(o.LibraryPanels)
	}
	return c
}

// Org returns the org with the given id, or nil.
func (inv *Inventory) Org(id int64) *Org {
	for i := range inv.Orgs {
		if inv.Orgs[i].ID == id {
			return &inv.Orgs[i]
		}
	}
	return nil
}

// normalize sorts everything and fills the counts so that two inventories of
// the same data serialise identically however they were gathered.
func (inv *Inventory) normalize() {
	slices.SortFunc(inv.Orgs, func(a, b Org) int { return cmpInt(a.ID, b.ID) })
	for i := range inv.Orgs {
		o := &inv.Orgs[i]
		if o.Folders == nil {
			o.Folders = []Folder{}
		}
		if o.Dashboards == nil {
			o.Dashboards = []Dashboard{}
		}
		slices.SortFunc(o.Folders, func(a, b Folder) int { return strings.Compare(a.UID, b.UID) })
		slices.SortFunc(o.Dashboards, func(a, b Dashboard) int { return strings.Compare(a.UID, b.UID) })
		byUID := func(a, b Item) int { return strings.Compare(a.UID, b.UID) }
		slices.SortFunc(o.AlertRules, byUID)
		slices.SortFunc(o.LibraryPanels, byUID)
		o.Counts = Counts{Folders: len(o.Folders), Dashboards: len(o.Dashboards), AlertRules: len(o.AlertRules), LibraryPanels: len(o.LibraryPanels)}
	}
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Save writes the inventory as indented JSON.
func (inv *Inventory) Save(w io.Writer) error {
	inv.normalize()
	if inv.FormatVersion == 0 {
		inv.FormatVersion = FormatVersion
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(inv)
}

// SaveFile writes the inventory atomically (temp file and rename), so an
// interrupted run never leaves a truncated baseline behind.
func (inv *Inventory) SaveFile(path string) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".inventory-*.json")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := inv.Save(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// ErrUnknownFormat is wrapped by Load when the file's formatVersion is not one
// this build understands.
var ErrUnknownFormat = errors.New("unknown inventory format")

// Load reads an inventory written by Save and checks its format version.
func Load(r io.Reader) (*Inventory, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	var head struct {
		FormatVersion *int `json:"formatVersion"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return nil, fmt.Errorf("not an inventory file (invalid JSON): %w", err)
	}
	switch {
	case head.FormatVersion == nil:
		return nil, fmt.Errorf("%w: no formatVersion field; this is not a file written by `rebind inventory`", ErrUnknownFormat)
	case *head.FormatVersion != FormatVersion && *head.FormatVersion != 1:
		return nil, fmt.Errorf("%w: formatVersion %d, this rebind reads version %d; use the rebind release that wrote it, or take a new inventory",
			ErrUnknownFormat, *head.FormatVersion, FormatVersion)
	}
	var inv Inventory
	if err := json.Unmarshal(b, &inv); err != nil {
		return nil, fmt.Errorf("inventory file: %w", err)
	}
	inv.normalize()
	return &inv, nil
}

// HasItems says whether alert rules and library panels were read: an
// inventory from before format 2 (or a Grafana that could not show them)
// leaves them nil, and then nothing can be said about them.
func (o *Org) HasItems() bool {
	return o.AlertRules != nil && o.LibraryPanels != nil
}

// LoadFile reads an inventory file.
func LoadFile(path string) (*Inventory, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	inv, err := Load(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return inv, nil
}
