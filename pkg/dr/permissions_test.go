package dr

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	snapfake "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned/fake"
	appsv1 "k8s.io/api/apps/v1"
	authv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/rebind-dev/rebind/pkg/app"
	"github.com/rebind-dev/rebind/pkg/discovery"
	"github.com/rebind-dev/rebind/pkg/kube"
	"github.com/rebind-dev/rebind/pkg/preflight"
)

func strs(perms []preflight.Permission) []string {
	var out []string
	for _, p := range perms {
		out = append(out, p.String())
	}
	return out
}

// TestBackupPermissions: what each way of running a backup asks for, and
// what it must never ask for.
func TestBackupPermissions(t *testing.T) {
	const (
		leaseGet      = "get leases.coordination.k8s.io rebind-grafana in namespace monitoring"
		baselineDel   = "delete configmaps rebind-dr-baseline-grafana in namespace monitoring"
		journalGet    = "get configmaps rebind-journal-grafana in namespace monitoring"
		backupCreate  = "create backups.velero.io in namespace velero"
		backupWatch   = "watch backups.velero.io in namespace velero"
		listSts       = "list statefulsets.apps in namespace monitoring"
		getStsNamed   = "get statefulsets.apps grafana in namespace monitoring"
		getDepNamed   = "get deployments.apps grafana in namespace monitoring"
		adminSecret   = "get secrets grafana in namespace monitoring"
		proxyCreate   = "create pods/proxy in namespace monitoring"
		listPods      = "list pods in namespace monitoring"
		otherVelero   = "create backups.velero.io in namespace backups"
		secretElsewhr = "get secrets creds in namespace vault"
	)
	always := []string{leaseGet, baselineDel, journalGet, backupCreate, backupWatch, "list backupstoragelocations.velero.io in namespace velero",
		"create configmaps in namespace monitoring", "get persistentvolumes cluster-wide", "list storageclasses.storage.k8s.io cluster-wide"}
	for _, tc := range []struct {
		name      string
		scope     BackupScope
		want, not []string
	}{
		{"by release, in the cluster", BackupScope{Namespace: "monitoring", Workload: "grafana", ByRelease: true, Grafana: GrafanaAccess{AdminSecret: true}},
			[]string{listSts, "list deployments.apps in namespace monitoring", adminSecret}, []string{getStsNamed, proxyCreate, listPods}},
		{"a named StatefulSet, a token", BackupScope{Namespace: "monitoring", Workload: "grafana"},
			[]string{getStsNamed}, []string{listSts, adminSecret, proxyCreate}},
		{"a StatefulSet through the pod proxy", BackupScope{Namespace: "monitoring", Workload: "grafana", ByRelease: true, Grafana: GrafanaAccess{PodProxy: true, AdminSecret: true}},
			[]string{listSts, getStsNamed, proxyCreate, "get pods/proxy in namespace monitoring"}, []string{listPods}},
		{"a Deployment through the pod proxy", BackupScope{Namespace: "monitoring", Workload: "grafana", Deployment: true, Grafana: GrafanaAccess{PodProxy: true}},
			[]string{getDepNamed, proxyCreate, listPods}, []string{getStsNamed, listSts}},
		{"another Velero namespace, a Secret elsewhere", BackupScope{Namespace: "monitoring", Workload: "grafana", ByRelease: true, VeleroNamespace: "backups", Grafana: GrafanaAccess{Secret: "vault/creds"}},
			[]string{otherVelero, secretElsewhr}, []string{backupCreate, adminSecret}},
		{"--grafana-secret NAME is in the release namespace", BackupScope{Namespace: "monitoring", Workload: "grafana", ByRelease: true, Grafana: GrafanaAccess{Secret: "grafana"}},
			[]string{adminSecret}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			perms := BackupPermissions(tc.scope)
			got := strs(perms)
			want := tc.want
			if tc.scope.VeleroNamespace == "" {
				want = append(slices.Clone(always), want...)
			}
			for _, w := range want {
				if !slices.Contains(got, w) {
					t.Errorf("missing %q", w)
				}
			}
			for _, n := range tc.not {
				if slices.Contains(got, n) {
					t.Errorf("asks for %q", n)
				}
			}
			for _, p := range discoveryPermissions(tc.scope) {
				if !slices.Contains(perms, p) {
					t.Errorf("discovery asks for %s, which BackupPermissions (and so the manifest) lacks", p)
				}
			}
			assertConfined(t, perms, tc.scope.Namespace, veleroNamespace(tc.scope.VeleroNamespace), "vault")
		})
	}
}

// TestRestorePermissions: the same for the restore, with and without the
// storage-class mapping.
func TestRestorePermissions(t *testing.T) {
	mapping := []string{"update configmaps in namespace velero", "create configmaps in namespace velero", "list configmaps in namespace velero",
		"delete configmaps change-storage-class-config in namespace velero"}
	always := []string{"get backups.velero.io in namespace velero", "create restores.velero.io in namespace velero", "delete restores.velero.io in namespace velero",
		"watch restores.velero.io in namespace velero", "list statefulsets.apps in namespace dr", "list deployments.apps in namespace dr",
		"get configmaps rebind-dr-baseline-grafana in namespace dr", "get storageclasses.storage.k8s.io cluster-wide"}
	for _, tc := range []struct {
		name      string
		scope     RestoreScope
		want, not []string
	}{
		{"same class, in the cluster", RestoreScope{Into: "dr", Workload: "grafana", Grafana: GrafanaAccess{AdminSecret: true}},
			[]string{"watch statefulsets.apps grafana in namespace dr", "get secrets grafana in namespace dr"}, append(slices.Clone(mapping), "get pods/proxy in namespace dr")},
		{"another class, a Deployment through the pod proxy", RestoreScope{Into: "dr", Workload: "grafana", Deployment: true, MapClass: true, Grafana: GrafanaAccess{PodProxy: true}},
			append([]string{"watch deployments.apps grafana in namespace dr", "get pods/proxy in namespace dr", "list pods in namespace dr"}, mapping...),
			[]string{"watch statefulsets.apps grafana in namespace dr", "get secrets grafana in namespace dr"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			perms := RestorePermissions(tc.scope)
			got := strs(perms)
			for _, w := range append(slices.Clone(always), tc.want...) {
				if !slices.Contains(got, w) {
					t.Errorf("missing %q", w)
				}
			}
			for _, n := range tc.not {
				if slices.Contains(got, n) {
					t.Errorf("asks for %q", n)
				}
			}
			for _, p := range veleroReadPermissions("velero") {
				if !slices.Contains(perms, p) {
					t.Errorf("the first round asks for %s, which RestorePermissions lacks", p)
				}
			}
			// rebind writes nothing where it restores: Velero does.
			for _, p := range perms {
				if p.Namespace == "dr" && !slices.Contains([]string{"get", "list", "watch"}, p.Verb) && p.Subresource != "proxy" {
					t.Errorf("asks to write in the restored namespace: %s", p)
				}
			}
			assertConfined(t, perms, tc.scope.Into, "velero")
		})
	}
}

// TestDrillTargetPermissions: a drill into the DR cluster asks for all a
// restore into its scratch namespace asks for, plus making and removing
// that namespace; it writes cluster-wide only namespaces and snapshot
// contents (what admission-dr-drill.yaml confines), and nothing else
// outside the scratch and Velero namespaces.
func TestDrillTargetPermissions(t *testing.T) {
	scope := DrillTargetScope{VeleroNamespace: "velero", Scratch: "rebind-drill-dr-grafana-abc123", Workload: "grafana", MapClass: true,
		Grafana: GrafanaAccess{PodProxy: true, AdminSecret: true}}
	perms := DrillTargetPermissions(scope)
	restore := RestorePermissions(RestoreScope{VeleroNamespace: "velero", Into: scope.Scratch, Workload: "grafana", MapClass: true, Grafana: scope.Grafana})
	for _, p := range restore {
		if !slices.Contains(perms, p) {
			t.Errorf("the restore half asks for %s, which DrillTargetPermissions lacks", p)
		}
	}
	got := strs(perms)
	for _, w := range []string{"create namespaces cluster-wide", "delete namespaces cluster-wide", "watch namespaces cluster-wide",
		"list persistentvolumeclaims in namespace " + scope.Scratch, "watch persistentvolumes cluster-wide",
		"list volumesnapshotcontents.snapshot.storage.k8s.io cluster-wide", "delete volumesnapshotcontents.snapshot.storage.k8s.io cluster-wide",
		"watch backups.velero.io in namespace velero", "get pods/proxy in namespace " + scope.Scratch} {
		if !slices.Contains(got, w) {
			t.Errorf("missing %q", w)
		}
	}
	seen := map[string]bool{}
	for _, p := range perms {
		if seen[p.String()] {
			t.Errorf("asked twice: %s", p)
		}
		seen[p.String()] = true
		switch {
		case p.Namespace == "" && !slices.Contains([]string{"get", "list", "watch"}, p.Verb) && p.Resource != "namespaces" && p.Resource != "volumesnapshotcontents":
			t.Errorf("writes cluster-wide: %s", p)
		case p.Namespace != "" && p.Namespace != scope.Scratch && p.Namespace != "velero":
			t.Errorf("outside the scratch and Velero namespaces: %s", p)
		case p.Namespace == scope.Scratch && !slices.Contains([]string{"get", "list", "watch"}, p.Verb) && p.Subresource != "proxy":
			t.Errorf("writes in the scratch namespace (Velero restores, deleting the namespace removes): %s", p)
		}
	}
}

// assertConfined: nothing outside the given namespaces, no write of a
// cluster-scoped object, and every verb that carries a name on the
// objects rebind names in advance (Leases, the baseline, Secrets) limited
// to that name.
func assertConfined(t *testing.T, perms []preflight.Permission, namespaces ...string) {
	t.Helper()
	for _, p := range perms {
		switch {
		case p.Namespace == "" && p.Verb != "get" && p.Verb != "list":
			t.Errorf("writes cluster-wide: %s", p)
		case p.Namespace != "" && !slices.Contains(namespaces, p.Namespace):
			t.Errorf("outside %v: %s", namespaces, p)
		case p.Verb == "create" && p.Name != "":
			t.Errorf("create cannot be limited to a name (RBAC ignores it): %s", p)
		case p.Verb != "create" && p.Name == "" && (p.Resource == "leases" || p.Resource == "secrets" ||
			(p.Resource == "configmaps" && (p.Verb == "delete" || p.Namespace == namespaces[0]))):
			t.Errorf("not limited to rebind's own object: %s", p)
		}
	}
}

// denying answers every access review but those of deny.
func denying(k *fake.Clientset, deny ...string) {
	k.PrependReactor("create", "selfsubjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		r := a.(k8stesting.CreateAction).GetObject().(*authv1.SelfSubjectAccessReview)
		ra := r.Spec.ResourceAttributes
		p := preflight.Permission{Verb: ra.Verb, Group: ra.Group, Resource: ra.Resource, Subresource: ra.Subresource, Namespace: ra.Namespace, Name: ra.Name}
		r.Status.Allowed = !slices.Contains(deny, p.String())
		return true, r, nil
	})
}

// writes lists what the fake API server was asked to change, access
// reviews aside.
func writes(k *fake.Clientset) []string {
	var out []string
	for _, a := range k.Actions() {
		if v := a.GetVerb(); v != "get" && v != "list" && v != "watch" && a.GetResource().Resource != "selfsubjectaccessreviews" {
			out = append(out, v+" "+a.GetResource().Resource)
		}
	}
	return out
}

// TestBackupRefusesMissingRights: a missing verb refuses the backup before
// anything is written, naming the verb and the manifest that grants it;
// missing discovery rights refuse before the workload is read.
func TestBackupRefusesMissingRights(t *testing.T) {
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "grafana", Namespace: "monitoring"},
		Spec: appsv1.StatefulSetSpec{Replicas: ptr.To[int32](1), VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{ObjectMeta: metav1.ObjectMeta{Name: "storage"}}}}}
	for _, tc := range []struct {
		name     string
		target   discovery.Options
		grafana  GrafanaAccess
		deny     string
		fix      string
		discover bool // the workload was read before the refusal
	}{
		{"list statefulsets, before discovery", discovery.Options{Release: "grafana"}, GrafanaAccess{},
			"list statefulsets.apps in namespace monitoring", BackupManifest, false},
		{"the baseline's create", discovery.Options{StatefulSet: "grafana"}, GrafanaAccess{AdminSecret: true},
			"create configmaps in namespace monitoring", BackupManifest, true},
		{"the Lease by name", discovery.Options{StatefulSet: "grafana"}, GrafanaAccess{},
			"update leases.coordination.k8s.io rebind-grafana in namespace monitoring", BackupManifest, true},
		{"the Velero Backup", discovery.Options{StatefulSet: "grafana"}, GrafanaAccess{},
			"create backups.velero.io in namespace velero", BackupManifest, true},
		{"the pod proxy", discovery.Options{StatefulSet: "grafana"}, GrafanaAccess{PodProxy: true},
			"create pods/proxy in namespace monitoring", PodProxyManifest, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := fake.NewSimpleClientset(sts)
			denying(k, tc.deny)
			tc.target.Namespace = "monitoring"
			// No Dynamic client: reaching Velero would panic.
			e := &Env{Clients: &kube.Clients{Kube: k, Snap: snapfake.NewSimpleClientset()}, Checker: &fakeChecker{}}
			_, err := e.Backup(context.Background(), BackupOptions{Target: tc.target, Grafana: tc.grafana})
			var pf *preflight.Error
			if !errors.As(err, &pf) || len(pf.Problems) != 1 {
				t.Fatalf("want one preflight problem, got %v", err)
			}
			if p := pf.Problems[0]; p.Message != "not allowed to "+tc.deny || !strings.Contains(p.Fix, tc.fix) {
				t.Errorf("problem %+v, want %q fixed by %s", p, tc.deny, tc.fix)
			}
			if w := writes(k); len(w) > 0 {
				t.Errorf("refused after writing %v", w)
			}
			read := slices.ContainsFunc(k.Actions(), func(a k8stesting.Action) bool { return a.GetResource().Resource == "statefulsets" })
			if read != tc.discover {
				t.Errorf("workload read before the refusal: %v, want %v", read, tc.discover)
			}
		})
	}
}

// TestRestoreRefusesBeforeVelero: without the right to find Velero's
// server, the restore is refused before it reads anything of Velero's.
func TestRestoreRefusesBeforeVelero(t *testing.T) {
	k := fake.NewSimpleClientset()
	denying(k, "get backups.velero.io in namespace velero")
	e := &Env{Clients: &kube.Clients{Kube: k}}
	_, err := e.Restore(context.Background(), RestoreOptions{FromBackup: "b", CheckerFor: func(string) (app.Checker, error) { return &fakeChecker{}, nil }})
	var pf *preflight.Error
	if !errors.As(err, &pf) || len(pf.Problems) != 1 || !strings.Contains(pf.Problems[0].Fix, RestoreManifest) {
		t.Fatalf("want one problem naming %s, got %v", RestoreManifest, err)
	}
}

// TestDrillRefusesMissingRightsInDRCluster: a drill whose account in the DR
// cluster lacks a right it needs to restore or to clean up is refused
// before anything happens in either cluster, naming the right and
// rbac-dr-drill.yaml.
func TestDrillRefusesMissingRightsInDRCluster(t *testing.T) {
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "grafana", Namespace: "monitoring"},
		Spec: appsv1.StatefulSetSpec{Replicas: ptr.To[int32](1), VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{ObjectMeta: metav1.ObjectMeta{Name: "storage"}}}}}
	const scratch = "rebind-drill-dr-grafana-test"
	for _, deny := range []string{
		"delete namespaces cluster-wide",
		"delete volumesnapshotcontents.snapshot.storage.k8s.io cluster-wide",
		"create restores.velero.io in namespace velero",
		"get pods/proxy in namespace " + scratch,
	} {
		t.Run(deny, func(t *testing.T) {
			prod, dr := fake.NewSimpleClientset(sts), fake.NewSimpleClientset()
			denying(dr, deny)
			// No Dynamic clients: reaching Velero in either cluster would panic.
			_, err := Drill(context.Background(),
				&Env{Clients: &kube.Clients{Kube: prod, Snap: snapfake.NewSimpleClientset()}, Checker: &fakeChecker{}},
				&Env{Clients: &kube.Clients{Kube: dr, Snap: snapfake.NewSimpleClientset()}},
				DrillOptions{Target: discovery.Options{Namespace: "monitoring", StatefulSet: "grafana"}, ScratchNamespace: scratch,
					CheckerFor:    func(string) (app.Checker, error) { return &fakeChecker{}, nil },
					TargetGrafana: GrafanaAccess{PodProxy: true, AdminSecret: true}})
			var pf *preflight.Error
			if !errors.As(err, &pf) || len(pf.Problems) != 1 {
				t.Fatalf("want one preflight problem, got %v", err)
			}
			if p := pf.Problems[0]; p.Message != "not allowed to "+deny || !strings.Contains(p.Fix, DrillTargetManifest) {
				t.Errorf("problem %+v, want %q fixed by %s", p, deny, DrillTargetManifest)
			}
			if w := append(writes(prod), writes(dr)...); len(w) > 0 {
				t.Errorf("refused after writing %v", w)
			}
		})
	}
}
