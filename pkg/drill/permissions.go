package drill

import "github.com/rebind-dev/rebind/pkg/preflight"

// Permissions lists every API verb a drill of a target in namespace ns
// needs, with scratch the scratch namespace it would create.
// manifests/rbac-drill.yaml grants exactly these.
//
// In production the drill only reads, plus creates and deletes its own
// VolumeSnapshot and posts an Event: it never updates or deletes a
// production StatefulSet, claim or PV. In the scratch namespace it only
// creates: deleting the namespace removes everything in it, so no delete
// verb there is needed.
func Permissions(ns, scratch string) []preflight.Permission {
	p := func(verb, group, res, ns string) preflight.Permission {
		return preflight.Permission{Verb: verb, Group: group, Resource: res, Namespace: ns}
	}
	const snap = "snapshot.storage.k8s.io"
	return []preflight.Permission{
		// Production: discovery, the objects copied into the scratch
		// namespace, its own snapshot and the Event.
		p("get", "apps", "statefulsets", ns), p("list", "apps", "statefulsets", ns),
		p("list", "apps", "deployments", ns),
		p("get", "", "persistentvolumeclaims", ns),
		p("get", "", "secrets", ns), p("get", "", "configmaps", ns), p("get", "", "services", ns),
		p("get", snap, "volumesnapshots", ns), p("list", snap, "volumesnapshots", ns), p("watch", snap, "volumesnapshots", ns),
		p("create", snap, "volumesnapshots", ns), p("delete", snap, "volumesnapshots", ns),
		p("create", "", "events", ns),

		// Cluster-scoped.
		p("get", "", "persistentvolumes", ""), p("list", "", "persistentvolumes", ""), p("watch", "", "persistentvolumes", ""),
		p("get", "storage.k8s.io", "storageclasses", ""), p("list", "storage.k8s.io", "storageclasses", ""),
		p("list", snap, "volumesnapshotclasses", ""),
		p("get", snap, "volumesnapshotcontents", ""), p("list", snap, "volumesnapshotcontents", ""), p("watch", snap, "volumesnapshotcontents", ""),
		p("create", snap, "volumesnapshotcontents", ""), p("delete", snap, "volumesnapshotcontents", ""),
		p("get", "", "namespaces", ""), p("list", "", "namespaces", ""), p("watch", "", "namespaces", ""),
		p("create", "", "namespaces", ""), p("delete", "", "namespaces", ""),

		// Scratch namespace: the restored copy.
		p("create", "", "secrets", scratch), p("create", "", "configmaps", scratch), p("create", "", "services", scratch),
		p("create", snap, "volumesnapshots", scratch), p("list", snap, "volumesnapshots", scratch), p("watch", snap, "volumesnapshots", scratch),
		p("create", "", "persistentvolumeclaims", scratch), p("list", "", "persistentvolumeclaims", scratch), p("watch", "", "persistentvolumeclaims", scratch),
		p("list", "", "events", scratch),
		p("create", "apps", "statefulsets", scratch), p("list", "apps", "statefulsets", scratch), p("watch", "apps", "statefulsets", scratch),
	}
}
