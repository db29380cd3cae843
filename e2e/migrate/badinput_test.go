package migrate_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/pkg/grafana"
	"github.com/rebind-dev/rebind/pkg/kube"
	"github.com/rebind-dev/rebind/pkg/migrate"
	"github.com/rebind-dev/rebind/pkg/preflight"
	"github.com/rebind-dev/rebind/pkg/verify"
)

// TestBadInputChangesNothing runs every refused migration against a live
// release and proves the cluster is exactly as before, and that the error
// names the object and the fix.
func TestBadInputChangesNothing(t *testing.T) {
	e2eutil.NeedSandbox(t)
	for _, tc := range []struct {
		name    string
		release fixtures.Release
		prepare func(t *testing.T, e *grafanaEnv, o *migrate.Options, m *migrate.Migrate)
		want    []string // substrings of the error
	}{
		{
			name:    "unknown release",
			release: fixtures.Release{Name: "grafana", Replicas: 1},
			prepare: func(_ *testing.T, _ *grafanaEnv, o *migrate.Options, _ *migrate.Migrate) { o.Target.Release = "nope" },
			want:    []string{`no Grafana StatefulSet or Deployment of Helm release "nope"`, "helm list"},
		},
		{
			name:    "missing storage class",
			release: fixtures.Release{Name: "grafana", Replicas: 1},
			prepare: func(_ *testing.T, _ *grafanaEnv, o *migrate.Options, _ *migrate.Migrate) {
				o.Strategy, o.ToClass = migrate.Restore, "gold"
			},
			want: []string{"StorageClass gold", "not found", "kubectl get storageclass"},
		},
		{
			name:    "too-small capacity",
			release: fixtures.Release{Name: "grafana", Replicas: 1, Size: "2Gi"},
			prepare: func(_ *testing.T, _ *grafanaEnv, o *migrate.Options, _ *migrate.Migrate) {
				o.Strategy, o.Size = migrate.Restore, "1Gi"
			},
			want: []string{"--size", "smaller than", "capacity 2Gi", "pass --size 2Gi"},
		},
		{
			name:    "reuse into another class",
			release: fixtures.Release{Name: "grafana", Replicas: 1},
			prepare: func(_ *testing.T, _ *grafanaEnv, o *migrate.Options, _ *migrate.Migrate) { o.ToClass = "premium" },
			want:    []string{"reuse keeps the volume", "--strategy restore"},
		},
		{
			name:    "PV bound to another claim",
			release: fixtures.Release{Name: "grafana", Replicas: 1},
			prepare: func(t *testing.T, e *grafanaEnv, _ *migrate.Options, _ *migrate.Migrate) {
				// Another live claim holds the PV per its claimRef.
				other := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "intruder", Namespace: e.Rel.Namespace},
					Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, StorageClassName: ptr.To("no-such-class"),
						Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: e.BoundPV(0).Spec.Capacity[corev1.ResourceStorage]}}}}
				c, err := sb.Kube.CoreV1().PersistentVolumeClaims(e.Rel.Namespace).Create(e.Ctx, other, metav1.CreateOptions{})
				if err != nil {
					t.Fatal(err)
				}
				patch := `{"spec":{"claimRef":{"name":"intruder","uid":"` + string(c.UID) + `"}}}`
				pvName := e.BoundPV(0).Name
				if _, err := sb.Kube.CoreV1().PersistentVolumes().Patch(e.Ctx, pvName, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
					t.Fatal(err)
				}
				// Let the binder react (it marks the Grafana claim Lost) so that
				// the before/after comparison sees only rebind's doing.
				if _, err := kube.Until(e.Ctx, time.Minute, "claim to be Lost", kube.ClaimLW(sb.Kube, e.Rel.Namespace, e.Rel.Claim(0)),
					func(c *corev1.PersistentVolumeClaim, exists bool) (bool, error) {
						return exists && c.Status.Phase == corev1.ClaimLost, nil
					}, nil); err != nil {
					t.Fatal(err)
				}
			},
			want: []string{"is claimed by", "intruder", "kubectl describe pv"},
		},
		{
			name:    "driver without snapshot class",
			release: fixtures.Release{Name: "grafana", Replicas: 1, StorageClass: "other-driver"},
			prepare: func(_ *testing.T, _ *grafanaEnv, o *migrate.Options, _ *migrate.Migrate) {
				o.Strategy = migrate.Restore
			},
			want: []string{"no VolumeSnapshotClass for driver copy.csi.rebind.test", "--snapshot-class"},
		},
		{
			name:    "snapshot cannot cross drivers",
			release: fixtures.Release{Name: "grafana", Replicas: 1},
			prepare: func(_ *testing.T, _ *grafanaEnv, o *migrate.Options, _ *migrate.Migrate) {
				o.Strategy, o.ToClass = migrate.Restore, "other-driver"
			},
			want: []string{"cannot be restored by another driver", "velero-restore"},
		},
		{
			name:    "Grafana unreachable",
			release: fixtures.Release{Name: "grafana", Replicas: 1},
			prepare: func(_ *testing.T, e *grafanaEnv, _ *migrate.Options, m *migrate.Migrate) {
				m.Checker = &verify.Grafana{ClientFor: func(string) (*grafana.Client, error) {
					return grafana.New(grafana.Options{URL: "http://127.0.0.1:1", MaxAttempts: 1})
				}}
			},
			want: []string{"grafana of pod grafana-0", "not reachable", "--baseline FILE"},
		},
		{
			name:    "wrong Grafana password",
			release: fixtures.Release{Name: "grafana", Replicas: 1},
			prepare: func(_ *testing.T, e *grafanaEnv, _ *migrate.Options, m *migrate.Migrate) {
				m.Checker = &verify.Grafana{ClientFor: func(pod string) (*grafana.Client, error) {
					return grafana.New(grafana.Options{URL: sb.PodURL(e.Rel.Namespace, pod), Credentials: grafana.Credentials{User: "admin", Password: "wrong"}, MaxAttempts: 1})
				}}
			},
			want: []string{"rejected the password", "reset-admin-password"},
		},
		{
			name:    "empty Grafana as baseline",
			release: fixtures.Release{Name: "grafana", Replicas: 1},
			prepare: func(t *testing.T, e *grafanaEnv, _ *migrate.Options, _ *migrate.Migrate) {
				dir, _, err := fixtures.ClaimVolumeDir(e.Ctx, sb.Kube, sb.StorageRoot(), e.Rel.Namespace, e.Rel.Claim(0), time.Minute)
				if err != nil {
					t.Fatal(err)
				}
				if err := e2eutil.DeleteAllDashboards(filepath.Join(dir, "grafana.db")); err != nil {
					t.Fatal(err)
				}
			},
			want: []string{"holds no dashboard", "--allow-empty-baseline"},
		},
		{
			name:    "RBAC missing: no update on persistentvolumes",
			release: fixtures.Release{Name: "grafana", Replicas: 1},
			prepare: func(t *testing.T, e *grafanaEnv, _ *migrate.Options, m *migrate.Migrate) {
				m.Clients = limitedClients(t, e, "update", "persistentvolumes")
			},
			want: []string{"RBAC", "not allowed to update persistentvolumes cluster-wide", "manifests/rbac-migrate.yaml"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := deployGrafana(t, tc.release, 4)
			o := e.options(migrate.Reuse)
			m := e.Migrator()
			if tc.prepare != nil {
				tc.prepare(t, e, &o, m)
			}
			before := e.ClusterState()
			_, err := m.Run(e.Ctx, o, migrate.Apply)
			if err == nil {
				t.Fatal("migration was not refused")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			var pf *preflight.Error
			if tc.name != "unknown release" && !errors.As(err, &pf) {
				t.Errorf("want a preflight error, got %T", err)
			}
			if after := e.ClusterState(); after != before {
				t.Errorf("cluster changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
}

// limitedClients returns clients acting as a ServiceAccount with the
// migrate role minus one verb on one resource.
func limitedClients(t *testing.T, e *grafanaEnv, dropVerb, dropResource string) *kube.Clients {
	t.Helper()
	ctx := context.Background()
	ns := e.Rel.Namespace
	var nsRules, clusterRules []rbacv1.PolicyRule
	for _, p := range migrate.Permissions(ns, migrate.Restore) {
		if p.Verb == dropVerb && p.Resource == dropResource {
			continue
		}
		res := p.Resource
		if p.Subresource != "" {
			res += "/" + p.Subresource
		}
		r := rbacv1.PolicyRule{APIGroups: []string{p.Group}, Resources: []string{res}, Verbs: []string{p.Verb}}
		if p.Namespace == "" {
			clusterRules = append(clusterRules, r)
		} else {
			nsRules = append(nsRules, r)
		}
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "rebind", Namespace: ns}}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err := sb.Kube.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{})
	must(err)
	_, err = sb.Kube.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "rebind-limited"}, Rules: nsRules}, metav1.CreateOptions{})
	must(err)
	_, err = sb.Kube.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "rebind-limited"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "rebind-limited"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "rebind", Namespace: ns}}}, metav1.CreateOptions{})
	must(err)
	crName := "rebind-limited-" + ns
	_, err = sb.Kube.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: crName}, Rules: clusterRules}, metav1.CreateOptions{})
	must(err)
	_, err = sb.Kube.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: crName},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: crName},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "rebind", Namespace: ns}}}, metav1.CreateOptions{})
	must(err)
	t.Cleanup(func() {
		_ = sb.Kube.RbacV1().ClusterRoleBindings().Delete(context.Background(), crName, metav1.DeleteOptions{})
		_ = sb.Kube.RbacV1().ClusterRoles().Delete(context.Background(), crName, metav1.DeleteOptions{})
	})
	path, err := sb.ServiceAccountKubeconfig(ctx, ns, "rebind")
	must(err)
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	must(err)
	c, err := kube.New(cfg)
	must(err)
	return c
}
