package dr

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/rebind-dev/rebind/pkg/app"
	"github.com/rebind-dev/rebind/pkg/kube"
)

func testMeta() *Meta {
	return &Meta{Format: MetaFormat, Namespace: "monitoring", Release: "grafana", Kind: "StatefulSet", Workload: "grafana", Baseline: BaselineName("grafana"),
		Ordinals: []Ordinal{{Index: 0, Pod: "grafana-0", Claim: "storage-grafana-0", StorageClass: "standard", Driver: "d"}, {Index: 1, Pod: "grafana-1", Claim: "storage-grafana-1", StorageClass: "standard", Driver: "d"}},
		TakenAt:  time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)}
}

func TestBaselineRoundTrip(t *testing.T) {
	m := testMeta()
	caps := [][]byte{[]byte(`{"ordinal":0}`), []byte(`{"ordinal":1}`)}
	cm, err := BaselineConfigMap(m, caps)
	if err != nil {
		t.Fatal(err)
	}
	if cm.Labels[LabelBaseline] != "grafana" || cm.Name != "rebind-dr-baseline-grafana" || cm.Namespace != "monitoring" {
		t.Fatalf("metadata %+v", cm.ObjectMeta)
	}
	got, err := Baselines(cm, m)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range caps {
		if !bytes.Equal(got[i], c) {
			t.Errorf("ordinal %d: %s, want %s", i, got[i], c)
		}
	}
}

// A baseline that cannot be used is ErrNoBaseline: the restore is then
// reported unverified, never passing.
func TestBaselinesUnusable(t *testing.T) {
	m := testMeta()
	good, err := BaselineConfigMap(m, [][]byte{[]byte("a"), []byte("b")})
	if err != nil {
		t.Fatal(err)
	}
	other := testMeta()
	other.Workload = "other"
	foreign, err := BaselineConfigMap(other, [][]byte{[]byte("a"), []byte("b")})
	if err != nil {
		t.Fatal(err)
	}
	missingOrdinal := good.DeepCopy()
	delete(missingOrdinal.BinaryData, inventoryKey(1))
	corrupt := good.DeepCopy()
	corrupt.BinaryData[inventoryKey(0)] = []byte("not gzip")
	noMeta := good.DeepCopy()
	delete(noMeta.Data, keyMeta)
	for _, tc := range []struct {
		name string
		cm   *corev1.ConfigMap
		want string
	}{
		{"not restored", nil, "was not restored"},
		{"another workload", foreign, "describes StatefulSet other"},
		{"an ordinal missing", missingOrdinal, "no inventory of ordinal 1"},
		{"corrupt", corrupt, "ordinal 0"},
		{"no meta", noMeta, keyMeta},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Baselines(tc.cm, m)
			if !errors.Is(err, ErrNoBaseline) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want ErrNoBaseline mentioning %q", err, tc.want)
			}
		})
	}
}

func TestBaselineTooLarge(t *testing.T) {
	m := testMeta()
	big := make([]byte, 2<<20) // random: gzip cannot shrink it
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	_, err := BaselineConfigMap(m, [][]byte{big, []byte("b")})
	var tl *TooLargeError
	if !errors.As(err, &tl) || !strings.Contains(err.Error(), "rebind verify --baseline") {
		t.Fatalf("got %v", err)
	}
}

func TestMetaFromBackup(t *testing.T) {
	raw, err := testMeta().annotation()
	if err != nil {
		t.Fatal(err)
	}
	newer := strings.Replace(raw, `"format":1`, `"format":9`, 1)
	for _, tc := range []struct {
		name    string
		ann     map[string]string
		ok      bool
		wantErr string
	}{
		{"rebind's", map[string]string{AnnBackup: raw}, true, ""},
		{"a plain Velero backup", nil, false, ""},
		{"garbled", map[string]string{AnnBackup: "{"}, true, "annotation " + AnnBackup},
		{"newer format", map[string]string{AnnBackup: newer}, true, "newer rebind"},
		{"no workload", map[string]string{AnnBackup: `{"format":1}`}, true, "names no workload"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &velerov1.Backup{ObjectMeta: metav1.ObjectMeta{Name: "b", Namespace: "velero", Annotations: tc.ann}}
			m, ok, err := MetaFromBackup(b)
			if ok != tc.ok {
				t.Fatalf("ok %v", ok)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ok && (m.Workload != "grafana" || m.SourceClass() != "standard" || m.Driver() != "d" || len(m.Ordinals) != 2) {
				t.Errorf("meta %+v", m)
			}
		})
	}
}

func TestOccupants(t *testing.T) {
	sts := func(name string, labels map[string]string) appsv1.StatefulSet {
		return appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	}
	grafana := map[string]string{"app.kubernetes.io/name": "grafana"}
	ours := map[string]string{"app.kubernetes.io/name": "grafana", LabelVeleroRestore: "r1"}
	for _, tc := range []struct {
		name string
		sts  []appsv1.StatefulSet
		deps []appsv1.Deployment
		want []Occupant
	}{
		{"empty", nil, nil, nil},
		{"another app", []appsv1.StatefulSet{sts("loki", map[string]string{"app.kubernetes.io/name": "loki"})}, nil, nil},
		{"a Grafana by label", []appsv1.StatefulSet{sts("team", grafana)}, nil, []Occupant{{"StatefulSet", "team"}}},
		{"the backed-up name, unlabelled", []appsv1.StatefulSet{sts("grafana", nil)}, nil, []Occupant{{"StatefulSet", "grafana"}}},
		{"this restore's own (a re-run)", []appsv1.StatefulSet{sts("grafana", ours)}, nil, nil},
		{"a Deployment's pods", nil, []appsv1.Deployment{{ObjectMeta: metav1.ObjectMeta{Name: "kps-grafana"},
			Spec: appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: grafana}}}}}, []Occupant{{"Deployment", "kps-grafana"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := occupants(tc.sts, tc.deps, "grafana", "r1")
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
}

func TestRestoreNameStableAndDistinct(t *testing.T) {
	a, b := RestoreName("dr-1", "monitoring"), RestoreName("dr-1", "monitoring")
	if a != b {
		t.Fatalf("not stable: %s %s", a, b)
	}
	long := strings.Repeat("x", 80)
	for _, n := range []string{a, RestoreName("dr-1", "other"), RestoreName(long, long)} {
		if len(n) > 63 || strings.HasSuffix(n, "-") {
			t.Errorf("%q is not a label value", n)
		}
	}
	if RestoreName(long, long+"a") == RestoreName(long, long+"b") {
		t.Error("truncation made two restores one")
	}
}

// fakeChecker answers Ready and Verify from tables.
type fakeChecker struct {
	readyErr map[string]error
	verdict  map[string]app.Verdict
	got      map[string]string // pod -> the capture it was asked to verify against
}

func (f *fakeChecker) Kind() string { return "fake" }
func (f *fakeChecker) Ready(_ context.Context, pod string) error {
	return f.readyErr[pod]
}
func (f *fakeChecker) Capture(context.Context, string) ([]byte, error) {
	return nil, errors.New("unused")
}
func (f *fakeChecker) Verify(_ context.Context, pod string, capture []byte) (app.Verdict, error) {
	if f.got == nil {
		f.got = map[string]string{}
	}
	f.got[pod] = string(capture)
	return f.verdict[pod], nil
}

// TestVerifyRestored: only a comparison that ran and found every
// dashboard counts; no baseline or an unreadable Grafana is unverified.
func TestVerifyRestored(t *testing.T) {
	m := testMeta()
	cm, err := BaselineConfigMap(m, [][]byte{[]byte("base-0"), []byte("base-1")})
	if err != nil {
		t.Fatal(err)
	}
	cm.Namespace = "restored"
	ok := app.Verdict{OK: true, Checked: 5}
	lost := app.Verdict{OK: false, Checked: 5, Lost: 2, Summary: "2 missing"}
	for _, tc := range []struct {
		name     string
		objects  []runtime.Object
		checker  *fakeChecker
		want     string // "", "unverified" or "failed"
		verdicts int
	}{
		{"verified", []runtime.Object{cm}, &fakeChecker{verdict: map[string]app.Verdict{"grafana-0": ok, "grafana-1": ok}}, "", 2},
		{"a dashboard lost", []runtime.Object{cm}, &fakeChecker{verdict: map[string]app.Verdict{"grafana-0": ok, "grafana-1": lost}}, "failed", 2},
		{"no baseline restored", nil, &fakeChecker{verdict: map[string]app.Verdict{"grafana-0": ok, "grafana-1": ok}}, "unverified", 0},
		{"an org unreadable", []runtime.Object{cm}, &fakeChecker{readyErr: map[string]error{"grafana-1": errors.New("org 3 cannot be read")},
			verdict: map[string]app.Verdict{"grafana-0": ok}}, "unverified", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := &Env{Clients: &kube.Clients{Kube: fake.NewSimpleClientset(tc.objects...)}}
			p := &restorePlan{meta: m, into: "restored"}
			verdicts, err := e.verifyRestored(context.Background(), p, RestoreOptions{Verify: time.Second,
				CheckerFor: func(ns string) (app.Checker, error) {
					if ns != "restored" {
						t.Errorf("checker for %s", ns)
					}
					return tc.checker, nil
				}})
			var (
				failed     *VerificationFailedError
				unverified *UnverifiedError
			)
			switch tc.want {
			case "":
				if err != nil {
					t.Fatal(err)
				}
				if tc.checker.got["grafana-0"] != "base-0" || tc.checker.got["grafana-1"] != "base-1" {
					t.Errorf("ordinals compared with the wrong baselines: %v", tc.checker.got)
				}
			case "failed":
				if !errors.As(err, &failed) || !strings.Contains(err.Error(), "grafana-1: 2 missing") {
					t.Fatalf("got %v", err)
				}
			case "unverified":
				if !errors.As(err, &unverified) {
					t.Fatalf("got %v", err)
				}
			}
			if len(verdicts) != tc.verdicts {
				t.Errorf("%d verdicts, want %d", len(verdicts), tc.verdicts)
			}
		})
	}
}
