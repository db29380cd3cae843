package dr

import (
	"context"
	"slices"
	"strings"

	"k8s.io/client-go/kubernetes"

	"github.com/rebind-dev/rebind/pkg/journal"
	"github.com/rebind-dev/rebind/pkg/preflight"
	"github.com/rebind-dev/rebind/pkg/velero"
)

// The manifests that grant BackupPermissions and RestorePermissions (the
// pod proxy's part in an add-on, for runs outside the cluster); a refusal
// names them.
const (
	BackupManifest   = "manifests/rbac-dr-backup.yaml"
	RestoreManifest  = "manifests/rbac-dr-restore.yaml"
	PodProxyManifest = "manifests/rbac-dr-pod-proxy.yaml"
	// DrillTargetManifest grants DrillTargetPermissions in the DR cluster
	// (with manifests/admission-dr-drill.yaml to confine it); production's
	// side of a drill is a backup (BackupManifest).
	DrillTargetManifest = "manifests/rbac-dr-drill.yaml"
)

const veleroGroup = "velero.io"

// GrafanaAccess says how a command reaches Grafana, which decides the
// rights it needs for it.
type GrafanaAccess struct {
	// PodProxy: through the API server's pod proxy (rebind outside the
	// cluster, no URL given for some pod).
	PodProxy bool
	// AdminSecret: the credentials are the chart's admin Secret, named
	// like the workload (no credential flag was given).
	AdminSecret bool
	// Secret is --grafana-secret: NAME in the release namespace, or
	// NAMESPACE/NAME.
	Secret string
}

// BackupScope is what one `rebind backup` touches, for BackupPermissions.
type BackupScope struct {
	// Namespace and Workload name the release's Grafana.
	Namespace, Workload string
	Deployment          bool
	// ByRelease: the workload is found by its Helm release label (a list
	// of both kinds) rather than by its name (a get).
	ByRelease       bool
	VeleroNamespace string
	Grafana         GrafanaAccess
}

// BackupPermissions lists every API verb `rebind backup` of s needs;
// manifests/rbac-dr-backup.yaml grants exactly these for the release
// `grafana` in `monitoring`, found by --release and reached in the cluster.
//
// In the release namespace it only reads, except the Lease it holds (the
// one migrate and drill take, by name) and its own baseline ConfigMap;
// in Velero's namespace it creates and follows one Backup. It writes
// nothing cluster-wide.
func BackupPermissions(s BackupScope) []preflight.Permission {
	ns := s.Namespace
	out := discoveryPermissions(s)
	out = append(out,
		// The volumes, to tell CSI ones (which Velero snapshots) apart.
		perm("get", "", "persistentvolumeclaims", ns),
		perm("get", "", "persistentvolumes", ""),
		perm("list", "storage.k8s.io", "storageclasses", ""),
		// A migration or rollback of the workload, left unfinished, would
		// be backed up half-moved: its journal is read, by name.
		named(perm("get", "", "configmaps", ns), journal.Name(s.Workload)),
	)
	out = append(out, leasePermissions(ns, journal.LeaseName(s.Workload))...)
	// The baseline: read to tell rebind's from someone else's, created
	// (create carries no name), replaced when an earlier run left it, and
	// removed once the Backup holds it.
	out = append(out, perm("create", "", "configmaps", ns))
	for _, v := range []string{"get", "update", "delete"} {
		out = append(out, named(perm(v, "", "configmaps", ns), BaselineName(s.Workload)))
	}
	vns := veleroNamespace(s.VeleroNamespace)
	out = append(out, veleroReadPermissions(vns)...)
	// The Backup's name is chosen at run time (a timestamp by default): no
	// resourceNames. Its wait lists and watches it by name.
	out = append(out,
		perm("create", veleroGroup, "backups", vns),
		perm("list", veleroGroup, "backups", vns), perm("watch", veleroGroup, "backups", vns),
	)
	return append(out, grafanaPermissions(ns, s.Workload, s.Deployment, s.Grafana)...)
}

// discoveryPermissions are what finding the workload takes, asked before
// it is found so that a missing one is named rather than shown as the
// API server's refusal.
func discoveryPermissions(s BackupScope) []preflight.Permission {
	if s.ByRelease {
		return []preflight.Permission{perm("list", "apps", "statefulsets", s.Namespace), perm("list", "apps", "deployments", s.Namespace)}
	}
	return []preflight.Permission{named(perm("get", "apps", workloadResource(s.Deployment), s.Namespace), s.Workload)}
}

// leasePermissions: create cannot be limited to a name; the rest can. A
// held Lease is watched to see whether its holder still renews it.
func leasePermissions(ns, lease string) []preflight.Permission {
	out := []preflight.Permission{perm("create", "coordination.k8s.io", "leases", ns)}
	for _, v := range []string{"get", "update", "watch"} {
		out = append(out, named(perm(v, "coordination.k8s.io", "leases", ns), lease))
	}
	return out
}

// veleroReadPermissions find Velero's server (its locations) and read a
// Backup; both commands start with them.
func veleroReadPermissions(vns string) []preflight.Permission {
	return []preflight.Permission{
		perm("list", veleroGroup, "backupstoragelocations", vns),
		perm("get", veleroGroup, "backups", vns),
	}
}

// RestoreScope is what one `rebind restore --from-backup` touches, for
// RestorePermissions.
type RestoreScope struct {
	VeleroNamespace string
	// Into is the namespace the release is restored into; Workload and
	// Deployment what the backup holds.
	Into, Workload string
	Deployment     bool
	// MapClass: the claims are restored into another class than the one
	// they were backed up in, through Velero's storage-class mapping
	// ConfigMap in its namespace.
	MapClass bool
	Grafana  GrafanaAccess
}

// RestorePermissions lists every API verb `rebind restore --from-backup`
// needs; manifests/rbac-dr-restore.yaml grants exactly these for a backup
// of the release `grafana` restored into `monitoring` in another class,
// reached in the cluster.
//
// rebind itself creates nothing in the namespace restored into: Velero's
// server restores the release. rebind reads what Velero restored, and in
// Velero's namespace creates and follows one Restore and, for another
// class, edits the mapping ConfigMap while it runs.
func RestorePermissions(s RestoreScope) []preflight.Permission {
	vns, ns := veleroNamespace(s.VeleroNamespace), s.Into
	out := veleroReadPermissions(vns)
	// The Restore's name derives from the backup's and the namespace's
	// (RestoreName): known only at run time. Its wait follows every
	// Restore of the namespace (Velero runs them one at a time, so the
	// queue ahead is reported); one no server picked up is deleted so that
	// it cannot run later behind rebind's back.
	for _, v := range []string{"get", "create", "list", "watch", "delete"} {
		out = append(out, perm(v, veleroGroup, "restores", vns))
	}
	out = append(out,
		// A namespace that already holds a Grafana is refused: both kinds
		// are listed there. The restored workload's readiness is watched
		// by name.
		perm("list", "apps", "statefulsets", ns), perm("list", "apps", "deployments", ns),
		named(perm("watch", "apps", workloadResource(s.Deployment), ns), s.Workload),
		// The class the claims are restored into (its driver must be the
		// snapshots').
		perm("get", "storage.k8s.io", "storageclasses", ""),
		// The report's restored claims and volumes.
		perm("get", "", "persistentvolumeclaims", ns), perm("get", "", "persistentvolumes", ""),
		// The baseline the backup carried, restored with the release.
		named(perm("get", "", "configmaps", ns), BaselineName(s.Workload)),
	)
	if s.MapClass {
		// The mapping ConfigMap is found by its labels (any name) and put
		// back as it was; only the one rebind created (by its fixed name)
		// is deleted.
		out = append(out,
			perm("list", "", "configmaps", vns), perm("get", "", "configmaps", vns),
			perm("create", "", "configmaps", vns), perm("update", "", "configmaps", vns),
			named(perm("delete", "", "configmaps", vns), velero.MappingConfigMap))
	}
	return append(out, grafanaPermissions(ns, s.Workload, s.Deployment, s.Grafana)...)
}

// DrillTargetScope is what `rebind drill --to-context` does in the DR
// cluster, for DrillTargetPermissions.
type DrillTargetScope struct {
	VeleroNamespace string
	// Scratch is the namespace the drill creates, restores into and
	// deletes; it is named at run time.
	Scratch string
	// Workload and Deployment are what the backup holds; MapClass and
	// Grafana as for RestoreScope.
	Workload   string
	Deployment bool
	MapClass   bool
	Grafana    GrafanaAccess
}

// DrillTargetPermissions lists every API verb `rebind drill --to-context`
// needs in the DR cluster: the restore's (RestorePermissions, into the
// scratch namespace), the wait for the Backup to be synced, and what
// making and removing the scratch namespace takes: the namespace created
// (labelled), followed and deleted by uid, its claims listed to wait for
// their volumes to go, and the VolumeSnapshotContents Velero restored for
// it deleted. manifests/rbac-dr-drill.yaml grants them; since the
// namespace is named at run time, only a ClusterRole can, and
// manifests/admission-dr-drill.yaml confines what it lets the drill write.
func DrillTargetPermissions(s DrillTargetScope) []preflight.Permission {
	vns, ns := veleroNamespace(s.VeleroNamespace), s.Scratch
	const snap = "snapshot.storage.k8s.io"
	out := RestorePermissions(RestoreScope{VeleroNamespace: vns, Into: ns, Workload: s.Workload, Deployment: s.Deployment,
		MapClass: s.MapClass, Grafana: s.Grafana})
	out = append(out,
		// The Backup taken in production, until this cluster's Velero
		// has synced it (by name, chosen at run time).
		perm("list", veleroGroup, "backups", vns), perm("watch", veleroGroup, "backups", vns),
		// The scratch namespace: must not exist, is created, then deleted
		// (by uid) and waited for.
		perm("get", "", "namespaces", ""), perm("create", "", "namespaces", ""), perm("delete", "", "namespaces", ""),
		perm("list", "", "namespaces", ""), perm("watch", "", "namespaces", ""),
		// Its claims name the restored volumes, waited for as they go with
		// them; the snapshot contents restored for it are deleted (only
		// Retain ones: the snapshot data stays the Backup's).
		perm("list", "", "persistentvolumeclaims", ns),
		perm("list", "", "persistentvolumes", ""), perm("watch", "", "persistentvolumes", ""),
		perm("list", snap, "volumesnapshotcontents", ""), perm("delete", snap, "volumesnapshotcontents", ""),
	)
	return uniquePermissions(out)
}

// uniquePermissions keeps the first of each permission, in order.
func uniquePermissions(in []preflight.Permission) []preflight.Permission {
	var out []preflight.Permission
	for _, p := range in {
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// grafanaPermissions are what reaching the workload's Grafana in ns takes:
// its credentials' Secret by name, and PodProxyPermissions when it goes
// through the pod proxy.
func grafanaPermissions(ns, workload string, deployment bool, a GrafanaAccess) []preflight.Permission {
	var out []preflight.Permission
	if a.AdminSecret {
		out = append(out, named(perm("get", "", "secrets", ns), workload))
	}
	if a.Secret != "" {
		sns, name, ok := strings.Cut(a.Secret, "/")
		if !ok {
			sns, name = ns, a.Secret
		}
		out = append(out, named(perm("get", "", "secrets", sns), name))
	}
	if a.PodProxy {
		out = append(out, PodProxyPermissions(ns, workload, deployment)...)
	}
	return out
}

// PodProxyPermissions are what reaching Grafana through the API server's
// pod proxy takes, on top of BackupPermissions or RestorePermissions: get
// (API reads) and create (the POST /login that opens a session; the proxy
// keeps the Authorization header for itself) on pods/proxy, the workload
// read by name for Grafana's container port and, for a Deployment, its
// pods listed to find the current one. manifests/rbac-dr-pod-proxy.yaml
// grants them for runs outside the cluster; the CronJob needs none.
func PodProxyPermissions(ns, workload string, deployment bool) []preflight.Permission {
	out := []preflight.Permission{
		{Verb: "get", Resource: "pods", Subresource: "proxy", Namespace: ns},
		{Verb: "create", Resource: "pods", Subresource: "proxy", Namespace: ns},
		named(perm("get", "apps", workloadResource(deployment), ns), workload),
	}
	if deployment {
		out = append(out, perm("list", "", "pods", ns))
	}
	return out
}

// grants names, for a command's refusals, the file that grants its rights
// and the add-on that grants the pod proxy's part ("" when the file itself
// grants it).
type grants struct{ command, manifest, podProxy string }

var (
	backupGrants  = grants{"rebind backup", BackupManifest, PodProxyManifest}
	restoreGrants = grants{"rebind restore", RestoreManifest, PodProxyManifest}
	// A drill's scratch namespace is named at run time: no URL could be
	// given for its pods, and the drill's own file grants their proxy.
	drillTargetGrants = grants{"rebind drill --to-context in the DR cluster", DrillTargetManifest, ""}
)

// checkAccess adds a problem to r for every permission missing, its fix
// naming the command's manifest (and, for the pod proxy, the ways around
// it). An error means the API server could not be asked.
func checkAccess(ctx context.Context, k kubernetes.Interface, perms []preflight.Permission, g grants, r *preflight.Report) error {
	var missing preflight.Report
	if err := preflight.CheckAccess(ctx, k, perms, &missing); err != nil {
		return err
	}
	for _, p := range missing.Problems {
		p.Fix = "nothing was written; grant it to the user or ServiceAccount running " + g.command + " (see " + g.manifest + ")"
		if g.podProxy != "" && strings.Contains(p.Message, "pods/proxy") {
			p.Fix = "nothing was written; Grafana is reached through the API server's pod proxy (rebind runs outside the cluster and no URL is given): grant get and create on pods/proxy (add " + g.podProxy + "), or run rebind in the cluster (--grafana-access cluster-dns), or give --grafana-pod-url"
		}
		r.Problems = append(r.Problems, p)
	}
	return nil
}

func veleroNamespace(ns string) string {
	if ns == "" {
		return velero.DefaultNamespace
	}
	return ns
}

func workloadResource(deployment bool) string {
	if deployment {
		return "deployments"
	}
	return "statefulsets"
}

func perm(verb, group, res, ns string) preflight.Permission {
	return preflight.Permission{Verb: verb, Group: group, Resource: res, Namespace: ns}
}

func named(p preflight.Permission, name string) preflight.Permission {
	p.Name = name
	return p
}
