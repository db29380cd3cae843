package migrate

import (
	"errors"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rebind-dev/rebind/pkg/discovery"
	"github.com/rebind-dev/rebind/pkg/preflight"
)

// TestCheckOptions: every refusal of the options alone names the flag and
// the fix; valid options pass untouched.
func TestCheckOptions(t *testing.T) {
	tests := []struct {
		name     string
		o        Options
		replicas int
		want     []string // substrings of the one problem; nil: valid
		wantSize string
	}{
		{"reuse, no size", Options{Strategy: Reuse}, 1, nil, ""},
		{"restore with size", Options{Strategy: Restore, Size: "20Gi"}, 1, nil, "20Gi"},
		{"malformed size", Options{Strategy: Reuse, Size: "10GB"}, 1, []string{"--size", `"10GB" is not a Kubernetes quantity`, "such as 10Gi"}, ""},
		{"word for a size", Options{Strategy: Restore, Size: "ten"}, 1, []string{"--size", "not a Kubernetes quantity"}, ""},
		{"zero size", Options{Strategy: Reuse, Size: "0"}, 1, []string{"--size", `"0" is not a positive size`, "leave --size out"}, ""},
		{"zero with a unit", Options{Strategy: Restore, Size: "0Gi"}, 1, []string{"--size", "not a positive size"}, ""},
		{"negative size", Options{Strategy: Restore, Size: "-5Gi"}, 1, []string{"--size", `"-5Gi" is not a positive size`}, ""},
		{"unknown strategy", Options{Strategy: "copy"}, 1, []string{"--strategy", `unknown strategy "copy"`, "reuse, restore or velero-restore"}, ""},
		{"empty strategy", Options{}, 1, []string{"--strategy", `unknown strategy ""`}, ""},
		{"from-snapshot with reuse", Options{Strategy: Reuse, FromSnapshot: "snap", BaselineFile: "b.json"}, 1, []string{"--from-snapshot", "only applies to --strategy restore"}, ""},
		{"from-snapshot with velero-restore", Options{Strategy: VeleroRestore, FromSnapshot: "snap", BaselineFile: "b.json"}, 1, []string{"--from-snapshot", "only applies to --strategy restore"}, ""},
		{"from-snapshot, one name, 2 replicas", Options{Strategy: Restore, FromSnapshot: "nightly", BaselineFile: "b.json"}, 2, []string{"--from-snapshot", "one snapshot for 2 replicas", "{ordinal}"}, ""},
		{"from-snapshot, one name, 1 replica", Options{Strategy: Restore, FromSnapshot: "nightly", BaselineFile: "b.json"}, 1, nil, ""},
		{"from-snapshot with {ordinal}", Options{Strategy: Restore, FromSnapshot: "nightly-{ordinal}", BaselineFile: "b.json"}, 3, nil, ""},
		{"from-snapshot without baseline", Options{Strategy: Restore, FromSnapshot: "nightly"}, 1, []string{"--from-snapshot", "needs a baseline", "--baseline FILE", "--skip-verify"}, ""},
		{"from-snapshot, skip-verify", Options{Strategy: Restore, FromSnapshot: "nightly", SkipVerify: true}, 1, nil, ""},
		{"from-pv with restore", Options{Strategy: Restore, FromPV: "pv-a"}, 1, []string{"--from-pv", "only applies to --strategy reuse"}, ""},
		{"from-pv, one name, 2 replicas", Options{Strategy: Reuse, FromPV: "pv-a"}, 2, []string{"--from-pv", "one PersistentVolume for 2 replicas", "{ordinal}"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r preflight.Report
			size := checkOptions(tt.o, tt.replicas, &r)
			if tt.want == nil {
				if err := r.Err(); err != nil {
					t.Fatalf("want valid, got %v", err)
				}
			} else {
				if len(r.Problems) != 1 {
					t.Fatalf("want one problem, got %+v", r.Problems)
				}
				p := r.Problems[0]
				all := p.Object + ": " + p.Message + "; fix: " + p.Fix
				for _, w := range tt.want {
					if !strings.Contains(all, w) {
						t.Errorf("problem lacks %q: %s", w, all)
					}
				}
				if p.Fix == "" {
					t.Errorf("no fix: %s", all)
				}
			}
			got := ""
			if size != nil {
				got = size.String()
			}
			if got != tt.wantSize {
				t.Errorf("size %q, want %q", got, tt.wantSize)
			}
		})
	}
}

// TestSameRequest: a resume with options other than the recorded ones is
// refused, naming each flag with both values; the recorded options, or
// defaults the user did not type, resume.
func TestSameRequest(t *testing.T) {
	ords := []discovery.Ordinal{{Index: 0}, {Index: 1}}
	recorded := func() *Spec {
		return &Spec{RunID: "r1", Strategy: Restore, ToClass: "premium", Size: "2Gi", Snapshots: []string{"snap-0", "snap-1"}, ExistingSnap: true,
			Redeploy: RedeployDirect, Target: &discovery.Target{Namespace: "mon", Kind: discovery.KindStatefulSet, Ordinals: ords,
				StatefulSet: &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "grafana", Namespace: "mon"}}}}
	}
	same := Options{Strategy: Restore, ToClass: "premium", Size: "2Gi", FromSnapshot: "snap-{ordinal}", Redeploy: RedeployDirect}
	tests := []struct {
		name   string
		change func(o *Options, s *Spec)
		want   []string // nil: resumes
	}{
		{"same options", func(*Options, *Spec) {}, nil},
		{"size in other units", func(o *Options, _ *Spec) { o.Size = "2048Mi" }, nil},
		{"defaults not typed", func(o *Options, _ *Spec) { o.ToClass, o.Size, o.Redeploy = "", "", "" }, nil},
		{"other strategy", func(o *Options, _ *Spec) { o.Strategy = Reuse; o.FromSnapshot = "" }, []string{"--strategy reuse (recorded restore)"}},
		{"other class", func(o *Options, _ *Spec) { o.ToClass = "gold" }, []string{"--to-storage-class gold (recorded premium)"}},
		{"other size", func(o *Options, _ *Spec) { o.Size = "5Gi" }, []string{"--size 5Gi (recorded 2Gi)"}},
		{"bad size", func(o *Options, _ *Spec) { o.Size = "lots" }, []string{"--size lots (recorded 2Gi)"}},
		{"other snapshot", func(o *Options, _ *Spec) { o.FromSnapshot = "old-{ordinal}" }, []string{"--from-snapshot old-0,old-1 (recorded snap-0,snap-1)"}},
		{"snapshot dropped", func(o *Options, _ *Spec) { o.FromSnapshot = "" }, []string{"--from-snapshot none (recorded snap-0,snap-1)"}},
		{"snapshot added to a run that took its own", func(_ *Options, s *Spec) { s.ExistingSnap = false }, []string{"--from-snapshot snap-0,snap-1 (recorded none)"}},
		{"from-pv added", func(o *Options, _ *Spec) { o.FromPV = "pv-{ordinal}" }, []string{"--from-pv pv-0,pv-1 (recorded none)"}},
		{"other redeploy", func(o *Options, _ *Spec) { o.Redeploy = RedeployHelm }, []string{"--redeploy helm (recorded direct)"}},
		{"quiesce added", func(o *Options, _ *Spec) { o.Quiesce = true }, []string{"--quiesce true (recorded false)"}},
		{"from-backup added", func(o *Options, _ *Spec) { o.FromBackup = "nightly" }, []string{"--from-backup nightly (recorded none)"}},
		{"two differences", func(o *Options, _ *Spec) { o.ToClass, o.Size = "gold", "9Gi" }, []string{"--to-storage-class gold", "--size 9Gi"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, s := same, recorded()
			tt.change(&o, s)
			err := sameRequest(s, o)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("want resume, got %v", err)
				}
				return
			}
			var pf *preflight.Error
			if !errors.As(err, &pf) {
				t.Fatalf("want a preflight error, got %v", err)
			}
			for _, w := range append(tt.want, "ConfigMap mon/rebind-journal-grafana", "mon/grafana", "run r1", "re-run it with the recorded options", "rebind rollback -n mon") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}
