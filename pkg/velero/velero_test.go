package velero

import (
	"context"
	"errors"
	"strings"
	"testing"

	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
)

func TestBackupOutcome(t *testing.T) {
	for _, tc := range []struct {
		phase    velerov1.BackupPhase
		done     bool
		wantErr  string
		reason   string
		errCount int
	}{
		{phase: "", done: false},
		{phase: velerov1.BackupPhaseInProgress, done: false},
		{phase: velerov1.BackupPhaseWaitingForPluginOperations, done: false},
		{phase: velerov1.BackupPhaseCompleted, done: true},
		{phase: velerov1.BackupPhasePartiallyFailed, done: true, errCount: 2, wantErr: "ended PartiallyFailed (2 errors, 1 warnings)"},
		{phase: velerov1.BackupPhaseFailed, done: true, reason: "bucket gone", wantErr: "ended Failed: bucket gone"},
		{phase: velerov1.BackupPhaseFailedValidation, done: true, wantErr: "ended FailedValidation"},
	} {
		t.Run(string(tc.phase), func(t *testing.T) {
			b := &velerov1.Backup{ObjectMeta: metav1.ObjectMeta{Name: "b", Namespace: "velero"},
				Status: velerov1.BackupStatus{Phase: tc.phase, FailureReason: tc.reason, Errors: tc.errCount, Warnings: 1}}
			done, err := BackupOutcome(b)
			if done != tc.done {
				t.Errorf("done %v, want %v", done, tc.done)
			}
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("unexpected error %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("error %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestDetect(t *testing.T) {
	veleroAPI := &metav1.APIResourceList{GroupVersion: "velero.io/v1", APIResources: []metav1.APIResource{
		{Name: "backups", Namespaced: true, Kind: "Backup"}, {Name: "restores", Namespaced: true, Kind: "Restore"},
		{Name: "backupstoragelocations", Namespaced: true, Kind: "BackupStorageLocation"}}}
	bsl := func(name string, def bool, phase velerov1.BackupStorageLocationPhase) runtime.Object {
		u, err := toUnstructured(&velerov1.BackupStorageLocation{
			TypeMeta:   metav1.TypeMeta{APIVersion: "velero.io/v1", Kind: "BackupStorageLocation"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "velero"},
			Spec:       velerov1.BackupStorageLocationSpec{Provider: "aws", Default: def},
			Status:     velerov1.BackupStorageLocationStatus{Phase: phase}})
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	for _, tc := range []struct {
		name     string
		crds     bool
		bsls     []runtime.Object
		want     string
		wantErr  string
		notReady bool
	}{
		{name: "no CRDs", wantErr: "Velero is not installed: no velero.io CRDs", notReady: true},
		{name: "CRDs, no server", crds: true, wantErr: "no Velero server runs in namespace velero", notReady: true},
		{name: "location never validated", crds: true, bsls: []runtime.Object{bsl("default", true, "")}, wantErr: "never been validated", notReady: true},
		{name: "location unavailable", crds: true, bsls: []runtime.Object{bsl("default", true, velerov1.BackupStorageLocationPhaseUnavailable)}, wantErr: "is Unavailable", notReady: true},
		{name: "default location available", crds: true, bsls: []runtime.Object{bsl("other", false, velerov1.BackupStorageLocationPhaseUnavailable), bsl("default", true, velerov1.BackupStorageLocationPhaseAvailable)}, want: "default"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := fake.NewClientset()
			if tc.crds {
				k.Resources = []*metav1.APIResourceList{veleroAPI}
			}
			scheme := runtime.NewScheme()
			dyn := dynfake.NewSimpleDynamicClientWithCustomListKinds(scheme, map[schema.GroupVersionResource]string{LocationsGVR: "BackupStorageLocationList"}, tc.bsls...)
			c := &Client{Dyn: dyn, Kube: k, Namespace: "velero", Log: nil}
			got, err := c.Detect(context.Background())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				var nr *NotReadyError
				if tc.notReady != errors.As(err, &nr) {
					t.Errorf("NotReadyError %v, want %v", !tc.notReady, tc.notReady)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Detect = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestMapStorageClassPutsBack(t *testing.T) {
	for _, tc := range []struct {
		name     string
		existing map[string]string // nil: no ConfigMap
		want     map[string]string // after Unmap; nil: ConfigMap gone
	}{
		{name: "no ConfigMap", existing: nil, want: nil},
		{name: "other keys kept", existing: map[string]string{"gp2": "gp3"}, want: map[string]string{"gp2": "gp3"}},
		{name: "user's own mapping of the class restored", existing: map[string]string{"standard": "slow"}, want: map[string]string{"standard": "slow"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := fake.NewClientset()
			if tc.existing != nil {
				_, err := k.CoreV1().ConfigMaps("velero").Create(context.Background(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "mine", Namespace: "velero",
					Labels: map[string]string{LabelPluginConfig: "", LabelChangeStorageClass: ChangeStorageClassKind}}, Data: tc.existing}, metav1.CreateOptions{})
				if err != nil {
					t.Fatal(err)
				}
			}
			c := &Client{Kube: k, Namespace: "velero"}
			ctx := context.Background()
			m, err := c.MapStorageClass(ctx, "standard", "premium")
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := c.MappedClass(ctx, "standard"); got != "premium" {
				t.Fatalf("mapped to %q", got)
			}
			if err := c.Unmap(ctx, m); err != nil {
				t.Fatal(err)
			}
			cm, err := c.findMapping(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == nil {
				if cm != nil {
					t.Fatalf("ConfigMap left behind: %v", cm.Data)
				}
				return
			}
			if len(cm.Data) != len(tc.want) {
				t.Fatalf("data %v, want %v", cm.Data, tc.want)
			}
			for k, v := range tc.want {
				if cm.Data[k] != v {
					t.Errorf("%s=%q, want %q", k, cm.Data[k], v)
				}
			}
		})
	}
}
