package inventory

import (
	"fmt"
	"slices"
	"strings"
)

// Change is a dashboard whose content differs.
type Change struct {
	UID             string `json:"uid"`
	Title           string `json:"title"`
	CurrentTitle    string `json:"currentTitle,omitempty"`
	BaselineSHA256  string `json:"baselineSha256"`
	CurrentSHA256   string `json:"currentSha256"`
	BaselineVersion int64  `json:"baselineVersion"`
	CurrentVersion  int64  `json:"currentVersion"`
	schemaV2        bool
}

// Move is a dashboard (or folder) now in another folder.
type Move struct {
	UID   string `json:"uid"`
	Title string `json:"title"`
	From  string `json:"from"` // folder uid, "" for General
	To    string `json:"to"`
}

// OrgResult is the comparison of one org.
type OrgResult struct {
	OrgID int64  `json:"orgId"`
	Name  string `json:"name,omitempty"`
	// OrgMissing: the org exists in the baseline but not now (or the user
	// cannot see it any more).
	OrgMissing     bool        `json:"orgMissing,omitempty"`
	Missing        []Dashboard `json:"missing,omitempty"`
	Extra          []Dashboard `json:"extra,omitempty"`
	Changed        []Change    `json:"changed,omitempty"`
	Moved          []Move      `json:"moved,omitempty"`
	MissingFolders []Folder    `json:"missingFolders,omitempty"`
	ExtraFolders   []Folder    `json:"extraFolders,omitempty"`
	RenamedFolders []Change    `json:"renamedFolders,omitempty"`
	MovedFolders   []Move      `json:"movedFolders,omitempty"`
	Identical      int         `json:"identical"`
	// VersionOnly counts identical dashboards whose version number moved,
	// which Grafana upgrades do on their own.
	VersionOnly int `json:"versionOnly,omitempty"`
	// Unverifiable are schema v2 dashboards read through /apis on one side
	// and through the legacy API (which serves them converted, losing what
	// the classic schema cannot hold) on the other: no hash can tell.
	Unverifiable []Dashboard `json:"unverifiable,omitempty"`

	MissingAlertRules    []Item `json:"missingAlertRules,omitempty"`
	ChangedAlertRules    []Item `json:"changedAlertRules,omitempty"`
	MissingLibraryPanels []Item `json:"missingLibraryPanels,omitempty"`
	ChangedLibraryPanels []Item `json:"changedLibraryPanels,omitempty"`
	// ItemsNotChecked: the baseline holds no alert rules and library
	// panels (an inventory from before format 2).
	ItemsNotChecked bool `json:"itemsNotChecked,omitempty"`

	identicalV2     int
	identicalV2UIDs []string
}

func (o OrgResult) ok() bool {
	return !o.OrgMissing && len(o.Missing) == 0 && len(o.Changed) == 0 && len(o.Moved) == 0 &&
		len(o.MissingFolders) == 0 && len(o.RenamedFolders) == 0 && len(o.MovedFolders) == 0 && len(o.Unverifiable) == 0 &&
		len(o.MissingAlertRules) == 0 && len(o.ChangedAlertRules) == 0 && len(o.MissingLibraryPanels) == 0 && len(o.ChangedLibraryPanels) == 0
}

// Result is the outcome of Compare.
type Result struct {
	Baseline Counts      `json:"baseline"`
	Current  Counts      `json:"current"`
	Orgs     []OrgResult `json:"orgs"`
	// Checked counts the baseline dashboards compared.
	Checked int `json:"checked"`
	// NotChecked are baseline orgs left out on purpose: the current
	// inventory was limited to other orgs (--grafana-org-id).
	NotChecked []int64 `json:"notChecked,omitempty"`
}

// OK is true when every baseline dashboard and folder is present, unchanged
// and in place. Extra items alone do not make it false.
func (r Result) OK() bool {
	for _, o := range r.Orgs {
		if !o.ok() {
			return false
		}
	}
	return true
}

// Totals sums the per-org findings.
func (r Result) Totals() (missing, extra, changed, moved, identical int) {
	for _, o := range r.Orgs {
		missing += len(o.Missing)
		extra += len(o.Extra)
		changed += len(o.Changed)
		moved += len(o.Moved)
		identical += o.Identical
	}
	return
}

// ItemCounts sums the findings beyond dashboards.
type ItemCounts struct {
	MissingAlertRules, ChangedAlertRules, MissingLibraryPanels, ChangedLibraryPanels int
	Unverifiable                                                                     int
	// NotChecked counts orgs whose baseline had no alert rules and library
	// panels recorded.
	NotChecked int
}

// Lost is every alert rule and library panel missing or changed.
func (c ItemCounts) Lost() int {
	return c.MissingAlertRules + c.ChangedAlertRules + c.MissingLibraryPanels + c.ChangedLibraryPanels
}

// ItemTotals sums ItemCounts over the orgs.
func (r Result) ItemTotals() ItemCounts {
	var c ItemCounts
	for _, o := range r.Orgs {
		c.MissingAlertRules += len(o.MissingAlertRules)
		c.ChangedAlertRules += len(o.ChangedAlertRules)
		c.MissingLibraryPanels += len(o.MissingLibraryPanels)
		c.ChangedLibraryPanels += len(o.ChangedLibraryPanels)
		c.Unverifiable += len(o.Unverifiable)
		if o.ItemsNotChecked {
			c.NotChecked++
		}
	}
	return c
}

// Compare checks current against baseline, org by org, keyed by uid.
func Compare(baseline, current *Inventory) Result {
	r := Result{Baseline: baseline.Totals(), Current: current.Totals()}
	seen := map[int64]bool{}
	for _, bo := range baseline.Orgs {
		seen[bo.ID] = true
		if len(current.LimitedTo) > 0 && !slices.Contains(current.LimitedTo, bo.ID) {
			r.NotChecked = append(r.NotChecked, bo.ID)
			continue
		}
		r.Checked += len(bo.Dashboards)
		co := current.Org(bo.ID)
		or := OrgResult{OrgID: bo.ID, Name: bo.Name}
		if co == nil {
			or.OrgMissing = len(bo.Dashboards) > 0 || len(bo.Folders) > 0 || len(bo.AlertRules) > 0 || len(bo.LibraryPanels) > 0
			co = &Org{ID: bo.ID, AlertRules: []Item{}, LibraryPanels: []Item{}}
		}
		compareOrg(&or, &bo, co)
		compareItems(&or, &bo, co)
		if mixedAPIs(baseline, current) {
			or.setUnverifiable()
		}
		r.Orgs = append(r.Orgs, or)
	}
	for _, co := range current.Orgs {
		if seen[co.ID] {
			continue
		}
		or := OrgResult{OrgID: co.ID, Name: co.Name}
		compareOrg(&or, &Org{ID: co.ID}, &co)
		r.Orgs = append(r.Orgs, or)
	}
	return r
}

// mixedAPIs: one inventory read dashboards in their stored schema (/apis
// or unified storage), the other through the legacy path.
func mixedAPIs(a, b *Inventory) bool { return (a.API == "") != (b.API == "") }

// setUnverifiable moves the v2 dashboards the comparison cannot judge out
// of the verdicts: they are neither identical nor changed, but unverified.
func (r *OrgResult) setUnverifiable() {
	var keep []Change
	for _, c := range r.Changed {
		if c.schemaV2 {
			r.Unverifiable = append(r.Unverifiable, Dashboard{UID: c.UID, Title: c.Title, Schema: "v2"})
			continue
		}
		keep = append(keep, c)
	}
	r.Changed = keep
	r.Identical -= r.identicalV2
	for _, uid := range r.identicalV2UIDs {
		r.Unverifiable = append(r.Unverifiable, Dashboard{UID: uid, Schema: "v2"})
	}
}

// compareItems compares alert rules and library panels by uid and hash.
func compareItems(r *OrgResult, base, cur *Org) {
	if !base.HasItems() {
		r.ItemsNotChecked = true
		return
	}
	diff := func(b, c []Item) (missing, changed []Item) {
		now := make(map[string]Item, len(c))
		for _, it := range c {
			now[it.UID] = it
		}
		for _, it := range b {
			got, ok := now[it.UID]
			switch {
			case !ok:
				missing = append(missing, it)
			case got.SHA256 != it.SHA256 || got.FolderUID != it.FolderUID:
				changed = append(changed, it)
			}
		}
		return missing, changed
	}
	r.MissingAlertRules, r.ChangedAlertRules = diff(base.AlertRules, cur.AlertRules)
	r.MissingLibraryPanels, r.ChangedLibraryPanels = diff(base.LibraryPanels, cur.LibraryPanels)
}

func compareOrg(r *OrgResult, base, cur *Org) {
	curDash := make(map[string]*Dashboard, len(cur.Dashboards))
	for i := range cur.Dashboards {
		curDash[cur.Dashboards[i].UID] = &cur.Dashboards[i]
	}
	for _, b := range base.Dashboards {
		c, ok := curDash[b.UID]
		if !ok {
			r.Missing = append(r.Missing, b)
			continue
		}
		delete(curDash, b.UID)
		same := true
		v2 := b.Schema == "v2" || c.Schema == "v2"
		if c.SHA256 != b.SHA256 {
			same = false
			ch := Change{UID: b.UID, Title: b.Title, BaselineSHA256: b.SHA256, CurrentSHA256: c.SHA256,
				BaselineVersion: b.Version, CurrentVersion: c.Version, schemaV2: v2}
			if c.Title != b.Title {
				ch.CurrentTitle = c.Title
			}
			r.Changed = append(r.Changed, ch)
		}
		if c.FolderUID != b.FolderUID {
			same = false
			r.Moved = append(r.Moved, Move{UID: b.UID, Title: b.Title, From: b.FolderUID, To: c.FolderUID})
		}
		if same {
			r.Identical++
			if v2 {
				r.identicalV2++
				r.identicalV2UIDs = append(r.identicalV2UIDs, b.UID)
			}
			if c.Version != b.Version {
				r.VersionOnly++
			}
		}
	}
	for _, c := range cur.Dashboards {
		if _, ok := curDash[c.UID]; ok {
			r.Extra = append(r.Extra, c)
		}
	}

	curFolders := make(map[string]Folder, len(cur.Folders))
	for _, f := range cur.Folders {
		curFolders[f.UID] = f
	}
	for _, b := range base.Folders {
		c, ok := curFolders[b.UID]
		if !ok {
			r.MissingFolders = append(r.MissingFolders, b)
			continue
		}
		delete(curFolders, b.UID)
		if c.Title != b.Title {
			r.RenamedFolders = append(r.RenamedFolders, Change{UID: b.UID, Title: b.Title, CurrentTitle: c.Title})
		}
		if c.ParentUID != b.ParentUID {
			r.MovedFolders = append(r.MovedFolders, Move{UID: b.UID, Title: b.Title, From: b.ParentUID, To: c.ParentUID})
		}
	}
	for _, c := range cur.Folders {
		if _, ok := curFolders[c.UID]; ok {
			r.ExtraFolders = append(r.ExtraFolders, c)
		}
	}
}

// summaryListMax keeps the summary readable when thousands differ; the JSON
// result still has every entry.
const summaryListMax = 20

// Summary is a human-readable report, ending in a RESULT line.
func (r Result) Summary() string {
	var b strings.Builder
	missing, extra, changed, moved, identical := r.Totals()
	fmt.Fprintf(&b, "baseline: %d dashboards, %d folders; current: %d dashboards, %d folders\n",
		r.Baseline.Dashboards, r.Baseline.Folders, r.Current.Dashboards, r.Current.Folders)
	fmt.Fprintf(&b, "dashboards: %d identical, %d missing, %d changed, %d moved, %d extra\n", identical, missing, changed, moved, extra)
	if r.Baseline.AlertRules+r.Baseline.LibraryPanels > 0 {
		fmt.Fprintf(&b, "alert rules: %d in the baseline, %d now; library panels: %d in the baseline, %d now\n",
			r.Baseline.AlertRules, r.Current.AlertRules, r.Baseline.LibraryPanels, r.Current.LibraryPanels)
	}
	folderName := func(uid string) string {
		if uid == "" {
			return "General"
		}
		return uid
	}
	for _, o := range r.Orgs {
		if o.ok() && len(o.Extra) == 0 && len(o.ExtraFolders) == 0 && o.VersionOnly == 0 && !o.ItemsNotChecked {
			continue
		}
		fmt.Fprintf(&b, "org %d", o.OrgID)
		if o.Name != "" {
			fmt.Fprintf(&b, " (%s)", o.Name)
		}
		b.WriteString(":\n")
		if o.OrgMissing {
			b.WriteString("  the org is missing (or no longer visible to this user)\n")
		}
		list(&b, "unverifiable (schema v2 dashboards read through /apis on one side and converted by the legacy API on the other: take both inventories with this rebind)", len(o.Unverifiable), func(i int) string {
			return o.Unverifiable[i].UID
		})
		for _, l := range []struct {
			label string
			items []Item
		}{{"missing alert rules", o.MissingAlertRules}, {"changed alert rules", o.ChangedAlertRules},
			{"missing library panels", o.MissingLibraryPanels}, {"changed library panels", o.ChangedLibraryPanels}} {
			list(&b, l.label, len(l.items), func(i int) string { return fmt.Sprintf("%s %q", l.items[i].UID, l.items[i].Title) })
		}
		if o.ItemsNotChecked {
			b.WriteString("  alert rules and library panels: not in the baseline (an older inventory), not checked\n")
		}
		list(&b, "missing", len(o.Missing), func(i int) string {
			d := o.Missing[i]
			return fmt.Sprintf("%s %q in %s", d.UID, d.Title, folderName(d.FolderUID))
		})
		list(&b, "changed", len(o.Changed), func(i int) string {
			c := o.Changed[i]
			s := fmt.Sprintf("%s %q content differs (version %d -> %d)", c.UID, c.Title, c.BaselineVersion, c.CurrentVersion)
			if c.CurrentTitle != "" {
				s += fmt.Sprintf(", now titled %q", c.CurrentTitle)
			}
			return s
		})
		list(&b, "moved", len(o.Moved), func(i int) string {
			m := o.Moved[i]
			return fmt.Sprintf("%s %q from %s to %s", m.UID, m.Title, folderName(m.From), folderName(m.To))
		})
		list(&b, "missing folders", len(o.MissingFolders), func(i int) string {
			f := o.MissingFolders[i]
			return fmt.Sprintf("%s %q", f.UID, f.Title)
		})
		list(&b, "renamed folders", len(o.RenamedFolders), func(i int) string {
			f := o.RenamedFolders[i]
			return fmt.Sprintf("%s %q now %q", f.UID, f.Title, f.CurrentTitle)
		})
		list(&b, "moved folders", len(o.MovedFolders), func(i int) string {
			m := o.MovedFolders[i]
			return fmt.Sprintf("%s %q from %s to %s", m.UID, m.Title, folderName(m.From), folderName(m.To))
		})
		list(&b, "extra (not in baseline, not a failure)", len(o.Extra), func(i int) string {
			d := o.Extra[i]
			return fmt.Sprintf("%s %q", d.UID, d.Title)
		})
		list(&b, "extra folders (not a failure)", len(o.ExtraFolders), func(i int) string {
			f := o.ExtraFolders[i]
			return fmt.Sprintf("%s %q", f.UID, f.Title)
		})
		if o.VersionOnly > 0 {
			fmt.Fprintf(&b, "  %d dashboards have a new version number but identical content (normal after a Grafana upgrade)\n", o.VersionOnly)
		}
	}
	if len(r.NotChecked) > 0 {
		fmt.Fprintf(&b, "not checked, limited on purpose by --grafana-org-id: org(s) %v\n", r.NotChecked)
	}
	switch {
	case r.OK() && len(r.NotChecked) > 0:
		b.WriteString("RESULT: OK for the orgs checked; the orgs above were not checked\n")
	case r.OK():
		b.WriteString("RESULT: OK, every dashboard in the baseline is present and unchanged\n")
	default:
		b.WriteString("RESULT: FAILED, dashboards, folders, alert rules or library panels were lost or changed, or could not be verified\n")
	}
	return b.String()
}

func list(b *strings.Builder, label string, n int, item func(int) string) {
	if n == 0 {
		return
	}
	fmt.Fprintf(b, "  %s: %d\n", label, n)
	for i := 0; i < n && i < summaryListMax; i++ {
		fmt.Fprintf(b, "    - %s\n", item(i))
	}
	if n > summaryListMax {
		fmt.Fprintf(b, "    ... and %d more\n", n-summaryListMax)
	}
}
