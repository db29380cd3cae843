package drill

import (
	"slices"

	"github.com/rebind-dev/rebind/pkg/discovery"
	"github.com/rebind-dev/rebind/pkg/journal"
	"github.com/rebind-dev/rebind/pkg/preflight"
)

// Scope is what one drill touches, for Permissions.
type Scope struct {
	// Namespace and StatefulSet name the production target.
	Namespace, StatefulSet string
	// Secrets are the production Secrets the drill reads: the chart's admin
	// Secret and whatever else the pod template uses (copied into the
	// scratch namespace for the throwaway copy).
	Secrets []string
	// Scratch is the scratch namespace.
	Scratch string
	// CreateScratch is the opt-in mode that creates and deletes Scratch.
	CreateScratch bool
	// PodProxy: Grafana is reached through the API server's pod proxy
	// (Options.PodProxy), in production and, online, in Scratch.
	PodProxy PodProxyUse
	// Deployment: the target is a Deployment, whose current pod the pod
	// proxy looks up.
	Deployment bool
}

// PodProxyUse says where a drill reaches Grafana through the API server's
// pod proxy (rebind outside the cluster, no URL given for those pods).
type PodProxyUse struct {
	// Production pods, for the baseline inventory.
	Production bool
	// Scratch: the restored copy's pods (online drills).
	Scratch bool
	// URLGiven says a URL was given for a pod (home: ns is its release's
	// namespace), which then is not reached through the proxy; nil: none
	// was. Where every pod of a side has one, the side needs no rights.
	URLGiven func(ns, pod string, home bool) bool
}

// forTarget narrows u to the sides where some pod of t (in production, or
// its copy in scratch) has no URL and so goes through the proxy.
func (u PodProxyUse) forTarget(t *discovery.Target, scratch string) PodProxyUse {
	if u.URLGiven == nil || len(t.Ordinals) == 0 {
		return u
	}
	production, copies := true, true
	for _, ord := range t.Ordinals {
		production = production && u.URLGiven(t.Namespace, ord.Pod, true)
		copies = copies && u.URLGiven(scratch, scratchPod(t, ord.Index, ord.Pod), false)
	}
	u.Production = u.Production && !production
	u.Scratch = u.Scratch && !copies
	return u
}

// Permissions lists every API verb a drill of s needs.
// manifests/rbac-drill.yaml grants exactly these for the default mode (a
// fixed scratch namespace); with CreateScratch,
// manifests/rbac-drill-create-namespace.yaml adds CreateScratchPermissions.
//
// In production the drill only reads (Secrets only by name), plus creates
// and deletes its own VolumeSnapshot and posts an Event: it never updates or
// deletes a production StatefulSet, claim or PV. Cluster-wide it reads
// volumes and classes and creates and deletes the pre-provisioned
// VolumeSnapshotContents; it cannot list contents, so it cannot discover
// the snapshot handles of namespaces it does not read. In the fixed scratch
// namespace it creates, lists and deletes its own objects.
func Permissions(s Scope) []preflight.Permission {
	const snap = "snapshot.storage.k8s.io"
	ns := s.Namespace
	out := []preflight.Permission{
		// Production: discovery, the objects copied into the scratch
		// namespace, its own snapshot and the Event.
		perm("get", "apps", "statefulsets", ns), perm("list", "apps", "statefulsets", ns),
		perm("list", "apps", "deployments", ns),
		perm("get", "", "persistentvolumeclaims", ns),
		perm("get", "", "configmaps", ns), perm("get", "", "services", ns),
		perm("get", snap, "volumesnapshots", ns), perm("list", snap, "volumesnapshots", ns), perm("watch", snap, "volumesnapshots", ns),
		perm("create", snap, "volumesnapshots", ns), perm("delete", snap, "volumesnapshots", ns),
		perm("create", "", "events", ns),

		// Cluster-scoped.
		perm("get", "", "persistentvolumes", ""), perm("list", "", "persistentvolumes", ""), perm("watch", "", "persistentvolumes", ""),
		perm("get", "storage.k8s.io", "storageclasses", ""), perm("list", "storage.k8s.io", "storageclasses", ""),
		perm("list", snap, "volumesnapshotclasses", ""),
		perm("get", snap, "volumesnapshotcontents", ""), perm("create", snap, "volumesnapshotcontents", ""), perm("delete", snap, "volumesnapshotcontents", ""),
	}
	for _, name := range secretNames(s) {
		out = append(out, named(perm("get", "", "secrets", ns), name))
	}
	// The production Lease migrate and rollback take too, so that neither
	// runs during a drill nor a drill during them (create cannot be
	// limited to a name; the rest can). Watch: a held Lease is watched to
	// see whether its holder still renews it.
	out = append(out, perm("create", "coordination.k8s.io", "leases", ns))
	for _, v := range []string{"get", "update", "watch"} {
		out = append(out, named(perm(v, "coordination.k8s.io", "leases", ns), journal.LeaseName(s.StatefulSet)))
	}
	out = append(out, PodProxyPermissions(s)...)
	if s.CreateScratch {
		return append(out, CreateScratchPermissions(s.Scratch)...)
	}
	return append(out, scratchPermissions(s.Scratch, s.StatefulSet)...)
}

// PodProxyPermissions are what reaching Grafana through the API server's
// pod proxy takes, only where s.PodProxy uses it: get on pods/proxy for the
// API reads, create for the POST /login that opens a Grafana session (the
// proxy keeps the Authorization header for the API server); for a
// Deployment, list pods to find its current one (a StatefulSet pod is
// addressed by name). The CronJob runs in the cluster and needs none of
// this; manifests/rbac-drill-pod-proxy.yaml grants it for drills run from
// outside.
func PodProxyPermissions(s Scope) []preflight.Permission {
	var out []preflight.Permission
	proxy := func(ns string) {
		out = append(out,
			preflight.Permission{Verb: "get", Resource: "pods", Subresource: "proxy", Namespace: ns},
			preflight.Permission{Verb: "create", Resource: "pods", Subresource: "proxy", Namespace: ns})
	}
	if s.PodProxy.Production {
		proxy(s.Namespace)
		if s.Deployment {
			out = append(out, perm("list", "", "pods", s.Namespace))
		}
	}
	if s.PodProxy.Scratch {
		// The copy is a StatefulSet: its pods are addressed by name.
		proxy(s.Scratch)
	}
	return out
}

// scratchPermissions are the verbs in the fixed scratch namespace. A Role
// there grants them (manifests/rbac-drill.yaml): nothing of this reaches
// another namespace.
func scratchPermissions(scratch, sts string) []preflight.Permission {
	const snap = "snapshot.storage.k8s.io"
	var out []preflight.Permission
	add := func(group, res string, verbs ...string) {
		for _, v := range verbs {
			out = append(out, perm(v, group, res, scratch))
		}
	}
	// The namespace object itself, by name, to check that it is prepared
	// for drills.
	out = append(out, named(perm("get", "", "namespaces", ""), scratch))
	// The Lease that keeps two drills of one StatefulSet name apart (create
	// cannot be limited to a name; the rest can).
	out = append(out, perm("create", "coordination.k8s.io", "leases", scratch))
	for _, v := range []string{"get", "update", "watch", "delete"} {
		out = append(out, named(perm(v, "coordination.k8s.io", "leases", scratch), ScratchLeaseName(sts)))
	}
	add("", "secrets", "create", "list", "watch", "delete")
	add("", "configmaps", "create", "list", "watch", "delete")
	add("", "services", "create", "list", "watch", "delete")
	add("", "persistentvolumeclaims", "create", "get", "list", "watch", "delete")
	add(snap, "volumesnapshots", "create", "list", "watch", "delete")
	add("apps", "statefulsets", "create", "list", "watch", "delete")
	add("", "pods", "list", "watch")
	add("", "events", "list")
	return out
}

// CreateScratchPermissions are what --create-scratch-namespace needs on top
// of the production and cluster-scoped verbs: the namespace, and the
// restored copy's objects in a namespace named at run time, which only a
// ClusterRole can grant (manifests/rbac-drill-create-namespace.yaml;
// manifests/admission-drill.yaml confines them to namespaces the drill
// created). Deleting the namespace removes the objects, so no delete verb
// on them is needed.
func CreateScratchPermissions(scratch string) []preflight.Permission {
	const snap = "snapshot.storage.k8s.io"
	return []preflight.Permission{
		perm("get", "", "namespaces", ""), perm("list", "", "namespaces", ""), perm("watch", "", "namespaces", ""),
		perm("create", "", "namespaces", ""), perm("delete", "", "namespaces", ""),
		perm("create", "", "secrets", scratch), perm("create", "", "configmaps", scratch), perm("create", "", "services", scratch),
		perm("create", snap, "volumesnapshots", scratch), perm("list", snap, "volumesnapshots", scratch), perm("watch", snap, "volumesnapshots", scratch),
		perm("create", "", "persistentvolumeclaims", scratch), perm("list", "", "persistentvolumeclaims", scratch), perm("watch", "", "persistentvolumeclaims", scratch),
		perm("list", "", "events", scratch),
		perm("create", "apps", "statefulsets", scratch), perm("list", "apps", "statefulsets", scratch), perm("watch", "apps", "statefulsets", scratch),
	}
}

func perm(verb, group, res, ns string) preflight.Permission {
	return preflight.Permission{Verb: verb, Group: group, Resource: res, Namespace: ns}
}

func named(p preflight.Permission, name string) preflight.Permission {
	p.Name = name
	return p
}

// secretNames is the admin Secret (named like the StatefulSet in the
// chart) and every Secret the pod template references, sorted, once each.
func secretNames(s Scope) []string {
	names := slices.Clone(s.Secrets)
	if s.StatefulSet != "" {
		names = append(names, s.StatefulSet)
	}
	slices.Sort(names)
	return slices.Compact(names)
}
