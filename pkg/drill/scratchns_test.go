package drill

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapfake "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned/fake"
	"go.uber.org/zap"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/rebind-dev/rebind/pkg/discovery"
	"github.com/rebind-dev/rebind/pkg/kube"
	"github.com/rebind-dev/rebind/pkg/preflight"
)

const testScratch = "rebind-drill-scratch"

func testTarget() *discovery.Target {
	env := func(secret string) corev1.EnvVar {
		return corev1.EnvVar{Name: "X", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: secret}, Key: "k"}}}
	}
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "grafana", Namespace: "monitoring"},
		Spec: appsv1.StatefulSetSpec{Replicas: ptr.To(int32(1)), ServiceName: "grafana-headless",
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "grafana", Env: []corev1.EnvVar{env("grafana"), env("smtp")}}}}}}}
	return &discovery.Target{Namespace: "monitoring", StatefulSet: sts, ClaimTemplate: "storage", AdminSecret: "grafana",
		Ordinals: []discovery.Ordinal{{Index: 0, Pod: "grafana-0", Claim: "storage-grafana-0"}}}
}

func meta(name string, labels map[string]string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: testScratch, Labels: labels, UID: types.UID("uid-" + name)}
}

func runOf(run string) map[string]string { return runLabels(run) }

// TestCheckScratchContents: objects no drill made are refused by name;
// another drill's objects are refused only where they carry a name this
// drill needs; the namespace's own root CA ConfigMap is no stranger.
func TestCheckScratchContents(t *testing.T) {
	k := fake.NewSimpleClientset(
		&corev1.ConfigMap{ObjectMeta: meta(rootCAConfigMap, nil)},
		&corev1.ConfigMap{ObjectMeta: meta("someones-config", nil)},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "smtp", Namespace: testScratch, Labels: runOf("dead01"), Annotations: map[string]string{AnnDrillOf: "other/grafana"}}},
		&corev1.PersistentVolumeClaim{ObjectMeta: meta("storage-mon-grafana-0", runOf("busy02"))},
		&corev1.Service{ObjectMeta: meta("mine", runOf("me"))},
	)
	d := &Drill{Clients: &kube.Clients{Kube: k, Snap: snapfake.NewSimpleClientset()}}
	var r preflight.Report
	notes, err := d.checkScratchContents(context.Background(), Options{}, testTarget(), testScratch, "me", &r)
	if err != nil {
		t.Fatal(err)
	}
	var objects []string
	for _, p := range r.Problems {
		objects = append(objects, p.Object+": "+p.Message+" | "+p.Fix)
	}
	text := strings.Join(objects, "\n")
	if len(r.Problems) != 2 {
		t.Fatalf("problems:\n%s", text)
	}
	for _, want := range []string{
		"ConfigMap rebind-drill-scratch/someones-config: was not created by a drill",
		"drill run dead01 (of other/grafana): left objects with the names this drill's copy needs in rebind-drill-scratch: Secret rebind-drill-scratch/smtp",
		"-l rebind.dev/drill-run=dead01",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("lacks %q:\n%s", want, text)
		}
	}
	if len(notes) != 1 || !strings.Contains(notes[0], "drill run busy02") {
		t.Errorf("notes %q", notes)
	}

	// Offline, the copy's Secrets are not needed: the other run's Secret
	// is not in the way.
	r = preflight.Report{}
	if _, err := d.checkScratchContents(context.Background(), Options{Offline: true}, testTarget(), testScratch, "me", &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Problems) != 1 {
		t.Errorf("offline problems %+v", r.Problems)
	}
}

// TestCleanupScratchObjects: in the fixed scratch namespace the cleanup
// deletes exactly this run's objects; other drills' objects and strangers
// stay, the namespace stays, and a claim of this run bound to a volume the
// drill did not restore is deleted only after that volume got Retain.
func TestCleanupScratchObjects(t *testing.T) {
	early := metav1.NewTime(time.Now().Add(-time.Hour))
	ours := runOf("me")
	strangerPV := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "team-b-volume", CreationTimestamp: early},
		Spec: corev1.PersistentVolumeSpec{PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimDelete,
			ClaimRef: &corev1.ObjectReference{Namespace: testScratch, Name: "storage-grafana-1", UID: "uid-storage-grafana-1"}}}
	otherPV := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "other-restored"},
		Spec: corev1.PersistentVolumeSpec{PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimDelete,
			ClaimRef: &corev1.ObjectReference{Namespace: testScratch, Name: "storage-mon-grafana-0", UID: "uid-storage-mon-grafana-0"}}}
	claim := func(name, volume string, labels map[string]string) *corev1.PersistentVolumeClaim {
		m := meta(name, labels)
		m.CreationTimestamp = metav1.Now()
		return &corev1.PersistentVolumeClaim{ObjectMeta: m, Spec: corev1.PersistentVolumeClaimSpec{VolumeName: volume}}
	}
	k := fake.NewSimpleClientset(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testScratch, Labels: map[string]string{LabelScratch: "true"}}},
		&appsv1.StatefulSet{ObjectMeta: meta("grafana", ours)},
		&corev1.Service{ObjectMeta: meta("grafana-headless", ours)},
		&corev1.Secret{ObjectMeta: meta("grafana", ours)},
		claim("storage-grafana-0", "", ours),
		claim("storage-grafana-1", strangerPV.Name, ours),
		strangerPV,
		// Another drill's, and no drill's.
		claim("storage-mon-grafana-0", otherPV.Name, runOf("other")),
		otherPV,
		&corev1.Secret{ObjectMeta: meta("mon-grafana", runOf("other"))},
		&corev1.ConfigMap{ObjectMeta: meta("someones-config", nil)},
	)
	s := snapfake.NewSimpleClientset(&snapv1.VolumeSnapshot{ObjectMeta: meta("storage-grafana-0", ours)},
		&snapv1.VolumeSnapshot{ObjectMeta: meta("storage-mon-grafana-0", runOf("other"))})
	d := &Drill{Clients: &kube.Clients{Kube: k, Snap: s}}
	res := &Result{}
	cl := &created{namespace: testScratch, runID: "me"}
	left := func(what string, err error) { res.Leftovers = append(res.Leftovers, what+": "+err.Error()) }
	o := Options{}.withDefaults()
	o.Timeouts.Cleanup = 5 * time.Second
	if !d.cleanupScratchObjects(context.Background(), o, cl, res, left, zap.NewNop()) {
		t.Fatalf("not clean: %v", res.Leftovers)
	}
	ctx := context.Background()
	gone := func(err error) bool { return apierrors.IsNotFound(err) }
	for what, err := range map[string]error{
		"StatefulSet": getErr(k.AppsV1().StatefulSets(testScratch).Get(ctx, "grafana", metav1.GetOptions{})),
		"Service":     getErr(k.CoreV1().Services(testScratch).Get(ctx, "grafana-headless", metav1.GetOptions{})),
		"Secret":      getErr(k.CoreV1().Secrets(testScratch).Get(ctx, "grafana", metav1.GetOptions{})),
		"claim 0":     getErr(k.CoreV1().PersistentVolumeClaims(testScratch).Get(ctx, "storage-grafana-0", metav1.GetOptions{})),
		"claim 1":     getErr(k.CoreV1().PersistentVolumeClaims(testScratch).Get(ctx, "storage-grafana-1", metav1.GetOptions{})),
		"snapshot":    getErr(s.SnapshotV1().VolumeSnapshots(testScratch).Get(ctx, "storage-grafana-0", metav1.GetOptions{})),
	} {
		if !gone(err) {
			t.Errorf("this run's %s not deleted: %v", what, err)
		}
	}
	for what, err := range map[string]error{
		"namespace":            getErr(k.CoreV1().Namespaces().Get(ctx, testScratch, metav1.GetOptions{})),
		"other drill's claim":  getErr(k.CoreV1().PersistentVolumeClaims(testScratch).Get(ctx, "storage-mon-grafana-0", metav1.GetOptions{})),
		"other drill's Secret": getErr(k.CoreV1().Secrets(testScratch).Get(ctx, "mon-grafana", metav1.GetOptions{})),
		"other drill's volume": getErr(k.CoreV1().PersistentVolumes().Get(ctx, otherPV.Name, metav1.GetOptions{})),
		"other snapshot":       getErr(s.SnapshotV1().VolumeSnapshots(testScratch).Get(ctx, "storage-mon-grafana-0", metav1.GetOptions{})),
		"stranger":             getErr(k.CoreV1().ConfigMaps(testScratch).Get(ctx, "someones-config", metav1.GetOptions{})),
	} {
		if err != nil {
			t.Errorf("%s touched: %v", what, err)
		}
	}
	pv, err := k.CoreV1().PersistentVolumes().Get(ctx, strangerPV.Name, metav1.GetOptions{})
	if err != nil || pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimRetain {
		t.Fatalf("the volume bound by mistake must be kept with Retain: %v %+v", err, pv)
	}
	if !slices.ContainsFunc(res.Leftovers, func(l string) bool { return strings.Contains(l, "PersistentVolume team-b-volume") }) {
		t.Errorf("the held volume is not reported: %v", res.Leftovers)
	}
	if len(res.Cleaned) != 6 {
		t.Errorf("cleaned %v", res.Cleaned)
	}
}

// TestCleanupKeepsClaimOfUnprotectedStranger: when the volume bound by
// mistake cannot get Retain, its claim is kept (deleting it would delete
// the volume) and the restored copy counts as not gone, so the contents
// and production snapshots stay too.
func TestCleanupKeepsClaimOfUnprotectedStranger(t *testing.T) {
	strangerPV := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "team-b-volume", CreationTimestamp: metav1.NewTime(time.Now().Add(-time.Hour))},
		Spec: corev1.PersistentVolumeSpec{PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimDelete,
			ClaimRef: &corev1.ObjectReference{Namespace: testScratch, Name: "storage-grafana-0", UID: "uid-storage-grafana-0"}}}
	m := meta("storage-grafana-0", runOf("me"))
	m.CreationTimestamp = metav1.Now()
	k := fake.NewSimpleClientset(&corev1.PersistentVolumeClaim{ObjectMeta: m, Spec: corev1.PersistentVolumeClaimSpec{VolumeName: strangerPV.Name}}, strangerPV)
	k.PrependReactor("update", "persistentvolumes", func(clienttesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(corev1.Resource("persistentvolumes"), strangerPV.Name, errors.New("no PV update for the drill"))
	})
	d := &Drill{Clients: &kube.Clients{Kube: k, Snap: snapfake.NewSimpleClientset()}}
	res := &Result{}
	left := func(what string, err error) { res.Leftovers = append(res.Leftovers, what+": "+err.Error()) }
	o := Options{}.withDefaults()
	o.Timeouts.Cleanup = 2 * time.Second
	if d.cleanupScratchObjects(context.Background(), o, &created{namespace: testScratch, runID: "me"}, res, left, zap.NewNop()) {
		t.Fatal("reported clean although the claim had to stay")
	}
	if _, err := k.CoreV1().PersistentVolumeClaims(testScratch).Get(context.Background(), m.Name, metav1.GetOptions{}); err != nil {
		t.Fatalf("claim deleted, and with it the stranger's volume: %v", err)
	}
	if !slices.ContainsFunc(res.Leftovers, func(l string) bool { return strings.Contains(l, "its claim is kept") }) {
		t.Errorf("leftovers %v", res.Leftovers)
	}
}

func TestPermissionsModes(t *testing.T) {
	fixed := Permissions(Scope{Namespace: "monitoring", StatefulSet: "grafana", Secrets: []string{"smtp", "grafana"}, Scratch: testScratch})
	var secrets []string
	for _, p := range fixed {
		switch {
		case p.Resource == "namespaces" && (p.Verb != "get" || p.Name != testScratch):
			t.Errorf("default mode: %s", p)
		case p.Resource == "volumesnapshotcontents" && (p.Verb == "list" || p.Verb == "watch"):
			t.Errorf("default mode lists contents: %s", p)
		case p.Namespace != "" && p.Namespace != "monitoring" && p.Namespace != testScratch:
			t.Errorf("outside production and scratch: %s", p)
		case p.Resource == "secrets" && p.Namespace == "monitoring":
			if p.Name == "" {
				t.Errorf("production Secrets not by name: %s", p)
			}
			secrets = append(secrets, p.Name)
		case p.Resource == "leases" && p.Verb != "create" && !(p.Namespace == testScratch && p.Name == "rebind-drill-grafana") && !(p.Namespace == "monitoring" && p.Name == "rebind-grafana"):
			t.Errorf("lease not by name: %s", p)
		}
	}
	if !slices.Equal(secrets, []string{"grafana", "smtp"}) {
		t.Errorf("production Secrets %v", secrets)
	}
	created := Permissions(Scope{Namespace: "monitoring", StatefulSet: "grafana", Scratch: "rebind-drill-grafana-abc123", CreateScratch: true})
	if !slices.ContainsFunc(created, func(p preflight.Permission) bool { return p.Resource == "namespaces" && p.Verb == "delete" }) {
		t.Error("the opt-in mode does not ask for namespace delete")
	}
	if slices.ContainsFunc(created, func(p preflight.Permission) bool { return p.Resource == "leases" && p.Namespace != "monitoring" }) {
		t.Error("the opt-in mode asks for a Lease in the scratch namespace")
	}
	// Both modes hold the production Lease that migrate takes.
	for _, perms := range [][]preflight.Permission{fixed, created} {
		for _, v := range []string{"get", "update", "watch"} {
			if !slices.Contains(perms, preflight.Permission{Verb: v, Group: "coordination.k8s.io", Resource: "leases", Namespace: "monitoring", Name: "rebind-grafana"}) {
				t.Errorf("no %s of the production Lease", v)
			}
		}
	}
}

func TestNames(t *testing.T) {
	if got := ScratchLeaseName("grafana"); got != "rebind-drill-grafana" {
		t.Errorf("lease %s", got)
	}
	if got := contentName("grafana", "abc123", 0); got != "rebind-drill-grafana-abc123-0" {
		t.Errorf("content %s", got)
	}
	if got := contentName(strings.Repeat("a", 300), "abc123", 12); len(got) > 253 || !strings.HasSuffix(got, "-12") {
		t.Errorf("long content name %d %s", len(got), got)
	}
}

func getErr[T any](_ T, err error) error { return err }

// TestPodProxyPermissions: pods/proxy is asked only where the pod proxy is
// used, and a pod list only for a Deployment's current pod.
func TestPodProxyPermissions(t *testing.T) {
	proxy := func(ns string) []string {
		return []string{"get pods/proxy in namespace " + ns, "create pods/proxy in namespace " + ns}
	}
	for _, tc := range []struct {
		name  string
		scope Scope
		want  []string
	}{
		{"not used", Scope{Namespace: "monitoring", Scratch: testScratch}, nil},
		{"production only", Scope{Namespace: "monitoring", Scratch: testScratch, PodProxy: PodProxyUse{Production: true}}, proxy("monitoring")},
		{"production and the copy", Scope{Namespace: "monitoring", Scratch: testScratch, PodProxy: PodProxyUse{Production: true, Scratch: true}},
			append(proxy("monitoring"), proxy(testScratch)...)},
		{"the copy only (production by URL)", Scope{Namespace: "monitoring", Scratch: testScratch, PodProxy: PodProxyUse{Scratch: true}}, proxy(testScratch)},
		{"Deployment", Scope{Namespace: "monitoring", Scratch: testScratch, Deployment: true, PodProxy: PodProxyUse{Production: true}},
			append(proxy("monitoring"), "list pods in namespace monitoring")},
		{"Deployment by URL", Scope{Namespace: "monitoring", Scratch: testScratch, Deployment: true}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, p := range PodProxyPermissions(tc.scope) {
				got = append(got, p.String())
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("%v, want %v", got, tc.want)
			}
			all := Permissions(tc.scope)
			for _, w := range PodProxyPermissions(tc.scope) {
				if !slices.Contains(all, w) {
					t.Errorf("Permissions lacks %s", w)
				}
			}
			if n := slices.IndexFunc(all, func(p preflight.Permission) bool { return p.Subresource == "proxy" }); n >= 0 && len(tc.want) == 0 {
				t.Errorf("Permissions asks for %s although the pod proxy is not used", all[n])
			}
		})
	}
}

// TestPodProxyForTarget: with --grafana-pod-url given for some pods, the
// rights are still asked on each side where one pod has no URL; a side
// whose every pod has one needs none.
func TestPodProxyForTarget(t *testing.T) {
	two := testTarget()
	two.Ordinals = append(two.Ordinals, discovery.Ordinal{Index: 1, Pod: "grafana-1", Claim: "storage-grafana-1"})
	given := func(keys ...string) func(ns, pod string, home bool) bool {
		return func(ns, pod string, home bool) bool {
			return slices.Contains(keys, ns+"/"+pod) || home && slices.Contains(keys, pod)
		}
	}
	both := PodProxyUse{Production: true, Scratch: true}
	for _, tc := range []struct {
		name             string
		target           *discovery.Target
		urls             func(ns, pod string, home bool) bool
		production, copy bool
	}{
		{"no URL given", two, nil, true, true},
		{"one of two production pods", two, given("grafana-0"), true, true},
		{"both production pods", two, given("grafana-0", "monitoring/grafana-1"), false, true},
		{"a bare name does not reach the copy", two, given("grafana-0", "grafana-1"), false, true},
		{"every pod on both sides", two, given("grafana-0", "grafana-1", testScratch+"/grafana-0", testScratch+"/grafana-1"), false, false},
		{"the copy only", testTarget(), given(testScratch + "/grafana-0"), true, false},
		{"another namespace's pod of the same name", testTarget(), given("other/grafana-0"), true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := both
			u.URLGiven = tc.urls
			got := u.forTarget(tc.target, testScratch)
			if got.Production != tc.production || got.Scratch != tc.copy {
				t.Errorf("production %v, copy %v; want %v, %v", got.Production, got.Scratch, tc.production, tc.copy)
			}
		})
	}
}
