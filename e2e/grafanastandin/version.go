package grafanastandin

import (
	"fmt"
	"strconv"
	"strings"
)

// Version selects which Grafana release the stand-in imitates: the API
// behaviour (Options.Version) and the grafana.db layout (SeedSpec.Version).
// Only the modelled values below are meaningful; ParseVersion maps any
// Grafana release number onto one of them.
type Version string

// The modelled Grafana versions. References "conformance §N" point at
// docs/grafana-conformance.md, the researched description of real Grafana.
const (
	// V9_5: legacy context handler, legacy error bodies, no folder_uid column,
	// nested folders off. Source read (conformance: "@ v9.5.2").
	V9_5 Version = "9.5"
	// V10_4: authn broker, errutil error bodies, folder_uid column, nested
	// folders still off by default. No 10.4 tree was read: its behaviour is
	// the one the conformance doc infers for "≥10.3 / 10.x".
	V10_4 Version = "10.4"
	// V11_6: nested folders on by default, dashboard.deleted. No 11.x tree
	// was read: behaviour as inferred by the conformance doc.
	V11_6 Version = "11.6"
	// V12_4: source read (conformance: "@ v12.4.0"). Legacy storage mode
	// unless the database holds the unified-storage migration marker
	// (SeedSpec.UnifiedStorage; conformance §7 "When legacy dashboard is
	// stale"); /apis dashboards v1beta1, v0alpha1, v2beta1, v2alpha1 and
	// folders v1beta1 (conformance §8).
	V12_4 Version = "12.4"
	// V13_0: no 13.x tree was read; modelled from the 13.x docs and issue
	// threads the conformance doc cites (§7, §8): /apis dashboards v1 and v2,
	// folders v1; legacy /api deprecated but operative; the folders and
	// dashboards migration to unified storage runs when 13.0 opens a
	// database without its marker. Everything else follows 12.4.
	V13_0 Version = "13.0"

	// DefaultVersion is used when a Version is empty. The e2e fixtures run
	// grafana/grafana:11.4.1, which maps to 11.6.
	DefaultVersion = V11_6
)

// Versions lists the modelled versions in which the legacy `dashboard`
// table is authoritative by default, oldest first: 9.5 to 12.4. It is what
// per-version suites iterate; V13_0 is not in it because 13.0 migrates
// dashboards and folders to unified storage when it opens a database
// (conformance §7), so a suite that reads grafana.db offline from the legacy
// tables, or maps each version to a container image, must opt in to it
// through AllVersions.
var Versions = []Version{V9_5, V10_4, V11_6, V12_4}

// AllVersions lists every modelled version, oldest first: Versions plus V13_0.
var AllVersions = []Version{V9_5, V10_4, V11_6, V12_4, V13_0}

// ParseVersion maps a Grafana release ("11.4.1", "v10.2.3", "12.4") or a
// container image tag ("11.4.1-ubuntu", "latest") to the modelled version
// of the same major: 9.x (and older) -> 9.5, 10.x -> 10.4, 11.x -> 11.6,
// 12.x -> 12.4, 13.x and later -> 13.0. "" gives DefaultVersion; "latest"
// and "main" give the newest modelled version (13.0).
func ParseVersion(s string) (Version, error) {
	s = strings.TrimSpace(s)
	switch strings.ToLower(s) {
	case "":
		return DefaultVersion, nil
	case "latest", "main":
		return AllVersions[len(AllVersions)-1], nil
	}
	t := strings.TrimPrefix(strings.TrimPrefix(s, "v"), "V")
	end := strings.IndexFunc(t, func(r rune) bool { return r < '0' || r > '9' })
	if end == 0 {
		return "", fmt.Errorf("grafanastandin: %q is not a Grafana version", s)
	}
	if end < 0 {
		end = len(t)
	}
	major, err := strconv.Atoi(t[:end])
	if err != nil {
		return "", fmt.Errorf("grafanastandin: %q is not a Grafana version: %w", s, err)
	}
	switch {
	case major <= 9:
		return V9_5, nil
	case major == 10:
		return V10_4, nil
	case major == 11:
		return V11_6, nil
	case major == 12:
		return V12_4, nil
	default:
		return V13_0, nil
	}
}

// features are the per-version differences the stand-in models. Every field
// cites the conformance doc row it comes from.
type features struct {
	v Version
	// buildVersion is what /api/health reports unless Options.BuildVersion says otherwise.
	buildVersion string

	// legacyAuth: the pre-authn context handler of 9.5/10.0: error bodies
	// are {"message":...} without messageId, and a token ignores a foreign
	// X-Grafana-Org-Id (conformance §1, rows "401, no credentials",
	// "Bad password", "Bad / expired / revoked token", "SA token + X-Grafana-Org-Id").
	legacyAuth bool
	// userOrgsForToken is the status of /api/user/orgs under a token:
	// 200 [] (9.5), 403 (10.2 to early 11), 304 (12.4) (conformance §1).
	userOrgsForToken int
	// folderUIDColumn: dashboard.folder_uid exists and is written, for
	// dashboards and folder rows; search joins on it (conformance §2 "Dashboard
	// hit folderUid", §7 "dashboard.folder_uid", CL 10.2.3).
	folderUIDColumn bool
	// nestedFolders: nested folders on by default (11.0+): /api/folders lists
	// one level, the folder table is written (conformance §3).
	nestedFolders bool
	// deletedColumn: dashboard.deleted exists; soft-deleted rows are hidden
	// (conformance §7 "dashboard.deleted", 11.0 inferred).
	deletedColumn bool
	// userUIDColumn: user.uid (absent 9.5.2, present 12.4.0; 10.4/11.6 are
	// assumed to have it, conformance §7 "user").
	userUIDColumn bool
	// v12Columns: dashboard.api_version, dashboard_version.api_version,
	// user.is_provisioned (present 12.4.0, conformance §7).
	v12Columns bool
	// searchFolderUIDs: /api/search honours folderUIDs (absent 9.5.2/10.0.1,
	// present 12.4.0; 10.4/11.6 assumed present, conformance §2 "folderUIDs param").
	searchFolderUIDs bool
	// v12Hits: search hits carry orgId and isDeleted (conformance §2 "Hit fields").
	v12Hits bool
	// metaAPIVersion: /api/dashboards/uid meta.apiVersion (conformance §4
	// "Success"; dashboards are read through v0alpha1 in 12.4.0).
	metaAPIVersion bool
	// foldersDefaultLimit: /api/folders default page size (conformance §3
	// "12.4 specifics": 100000; 1000 before).
	foldersDefaultLimit int
	// dashboardUIDServesFolders: the 9.5 store looks a uid up without
	// filtering is_folder, so a folder uid answers 200 with meta.isFolder
	// (pkg/services/dashboards/database/database.go GetDashboard @ v9.5.2;
	// not in the conformance doc; later versions are modelled as 404).
	dashboardUIDServesFolders bool
	// libraryElementFolderUID: library_element.folder_uid, added by "add
	// library_element folder uid" (PR #83819, 11.0 inferred; conformance §7
	// "library_element"): 11.6 and later.
	libraryElementFolderUID bool
	// unifiedTables: the unified-storage tables resource, resource_history,
	// resource_version and unifiedstorage_migration_log exist (conformance
	// §7 "Unified storage", read 12.4.0). With the migration marker in
	// unifiedstorage_migration_log, dashboards and folders are served from
	// `resource` and the legacy tables go stale.
	unifiedTables bool
	// migrateOnStart: opening a database without the marker runs the
	// folders and dashboards migration (conformance §7 "same | 13.0": it runs
	// on upgrade to 13.0; issues #123616, #124030, #126013). 12.4 migrates at
	// start-up only below autoMigrationThreshold, which is not modelled.
	migrateOnStart bool
	// apis: /apis serves dashboard.grafana.app and folder.grafana.app
	// (conformance §8). Versions are in discovery (priority) order, the first
	// being the preferred one; 9.5-11.6 answer 404 there.
	apis              bool
	dashboardVersions []string
	folderVersions    []string
	// classicStoredVersion is the version a classic dashboard is stored at
	// (legacy rows without api_version, and saves through /api: the legacy
	// API reads and writes through v0alpha1, conformance §4); v2StoredVersion
	// the one of a schema v2 dashboard.
	classicStoredVersion, v2StoredVersion string
	// sortedHealthKeys: 9.5 builds /api/health from a map (keys sorted),
	// 12.4 from a struct (database, version, commit) (conformance §5,
	// http_server.go apiHealthHandler). When it changed is unknown: 10.4 is
	// modelled like 9.5, 11.6 like 12.4. Key order matters to no JSON reader.
	sortedHealthKeys bool
}

func featuresOf(v Version) features {
	f := features{v: v, foldersDefaultLimit: 1000}
	switch v {
	case V9_5:
		f.buildVersion = "9.5.2"
		f.legacyAuth = true
		f.userOrgsForToken = 200
		f.dashboardUIDServesFolders = true
		f.sortedHealthKeys = true
	case V10_4:
		f.buildVersion = "10.4.0"
		f.userOrgsForToken = 403
		f.folderUIDColumn = true
		f.userUIDColumn = true
		f.searchFolderUIDs = true
		f.sortedHealthKeys = true
	case V11_6:
		f.buildVersion = "11.6.0"
		// conformance §1 "/api/user/orgs, SA token": 403 "~10.2 – early 11.x";
		// 304 is confirmed only for 12.4.0 (and an 11.3–11.5-era main), the
		// first release with 304 is unconfirmed. Modelled as 403 here.
		f.userOrgsForToken = 403
		f.folderUIDColumn = true
		f.nestedFolders = true
		f.deletedColumn = true
		f.userUIDColumn = true
		f.searchFolderUIDs = true
	case V12_4, V13_0:
		f.buildVersion = "12.4.0"
		f.userOrgsForToken = 304
		f.folderUIDColumn = true
		f.nestedFolders = true
		f.deletedColumn = true
		f.userUIDColumn = true
		f.v12Columns = true
		f.searchFolderUIDs = true
		f.v12Hits = true
		f.metaAPIVersion = true
		f.foldersDefaultLimit = 100000
		f.unifiedTables = true
		f.apis = true
		f.classicStoredVersion = "v0alpha1"
		// conformance §8 "GET /apis discovery": v1beta1 preferred unless
		// dashboardNewLayouts (not modelled); register.go GetGroupVersions @ v12.4.0.
		f.dashboardVersions = []string{"v1beta1", "v0alpha1", "v2beta1", "v2alpha1"}
		f.folderVersions = []string{"v1beta1"}
		f.v2StoredVersion = "v2beta1"
		if v == V13_0 {
			f.buildVersion = "13.0.0"
			// conformance §8 "Dashboard versions" / "Folder versions", 13.x
			// docs: dashboards v1 and v2, folders v1. Whether the 12.x
			// alpha/beta versions are still served is unconfirmed: not
			// served here. v1 preferred is a choice (12.4 prefers the
			// classic v1beta1 over v2beta1 without dashboardNewLayouts).
			f.dashboardVersions = []string{"v1", "v2"}
			f.folderVersions = []string{"v1"}
			f.v2StoredVersion = "v2"
			f.migrateOnStart = true
		}
	}
	f.libraryElementFolderUID = f.nestedFolders
	return f
}
