package main

import (
	"strings"
	"testing"

	"github.com/rebind-dev/rebind/pkg/discovery"
)

func TestParsePodURLs(t *testing.T) {
	for _, tc := range []struct {
		name    string
		values  []string
		exact   map[string]string
		bare    map[string]string
		wantErr string
	}{
		{name: "none"},
		{name: "pod in the release's namespace", values: []string{"grafana-0=http://g0:3000"},
			bare: map[string]string{"grafana-0": "http://g0:3000"}},
		{name: "namespaced", values: []string{"team-a/grafana-0=http://a:3000", "team-b/grafana-0=https://b.example.com/grafana"},
			exact: map[string]string{"team-a/grafana-0": "http://a:3000", "team-b/grafana-0": "https://b.example.com/grafana"}},
		{name: "both forms", values: []string{"grafana-0=http://x", "team-a/grafana-0=http://a"},
			exact: map[string]string{"team-a/grafana-0": "http://a"}, bare: map[string]string{"grafana-0": "http://x"}},
		{name: "URL with = in its query", values: []string{"ns/grafana-0=http://h/?a=b"},
			exact: map[string]string{"ns/grafana-0": "http://h/?a=b"}},
		{name: "same entry twice", values: []string{"ns/p-0=http://a", "ns/p-0=http://a"},
			exact: map[string]string{"ns/p-0": "http://a"}},
		{name: "no =", values: []string{"nourl"}, wantErr: "no POD=URL"},
		{name: "empty URL", values: []string{"grafana-0="}, wantErr: "no POD=URL"},
		{name: "empty pod", values: []string{"=http://a"}, wantErr: "no POD=URL"},
		{name: "empty namespace", values: []string{"/grafana-0=http://a"}, wantErr: `namespace "" is not a namespace name`},
		{name: "empty pod after namespace", values: []string{"ns/=http://a"}, wantErr: `pod "" is not a pod name`},
		{name: "three parts", values: []string{"a/b/c=http://a"}, wantErr: `pod "b/c" is not a pod name`},
		{name: "upper case namespace", values: []string{"Team/grafana-0=http://a"}, wantErr: `namespace "Team"`},
		{name: "not a URL", values: []string{"grafana-0=grafana-0:3000"}, wantErr: "is not an http(s) URL"},
		{name: "no host", values: []string{"grafana-0=http:///x"}, wantErr: "is not an http(s) URL"},
		{name: "two URLs for one pod", values: []string{"ns/p-0=http://a", "ns/p-0=http://b"}, wantErr: "ns/p-0 is given twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := parsePodURLs(tc.values)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "use NS/POD=URL") {
					t.Fatalf("error %v, want one containing %q and the usage", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !sameMap(u.exact, tc.exact) || !sameMap(u.bare, tc.bare) {
				t.Errorf("exact %v bare %v, want %v %v", u.exact, u.bare, tc.exact, tc.bare)
			}
		})
	}
}

func sameMap(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestPodURLsLookup(t *testing.T) {
	u, err := parsePodURLs([]string{"grafana-0=http://bare", "team-a/grafana-0=http://a", "rebind-drill-scratch/grafana-0=http://copy"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ns, pod string
		home    bool
		want    string
	}{
		{"team-a", "grafana-0", true, "http://a"},    // NS/POD wins over POD
		{"team-b", "grafana-0", true, "http://bare"}, // POD in its release's namespace
		{"team-b", "grafana-1", true, ""},            // another pod
		{"rebind-drill-scratch", "grafana-0", false, "http://copy"},
		{"other-scratch", "grafana-0", false, ""}, // POD=URL never means a scratch copy
	} {
		if got := u.lookup(tc.ns, tc.pod, tc.home); got != tc.want {
			t.Errorf("lookup(%s, %s, %v) = %q, want %q", tc.ns, tc.pod, tc.home, got, tc.want)
		}
	}
}

func TestPodURLsCheck(t *testing.T) {
	fleet := []discovery.Options{
		{Namespace: "team-a", StatefulSet: "grafana"},
		{Namespace: "team-b", StatefulSet: "grafana"},
		{Namespace: "team-b", StatefulSet: "mon-grafana"},
	}
	for _, tc := range []struct {
		name    string
		values  []string
		targets []discovery.Options
		wantErr string
	}{
		{name: "namespaced in a fleet", values: []string{"team-a/grafana-0=http://a", "team-b/grafana-0=http://b"}, targets: fleet},
		{name: "bare pod of one target", values: []string{"mon-grafana-0=http://m"}, targets: fleet},
		{name: "the restored copy", values: []string{"scratch/grafana-0=http://c"}, targets: fleet},
		{name: "bare pod in two namespaces", values: []string{"grafana-0=http://x"}, targets: fleet,
			wantErr: "pod grafana-0 is in namespaces team-a and team-b; say which, as team-a/grafana-0=URL"},
		{name: "namespace without a target", values: []string{"team-c/grafana-0=http://x"}, targets: fleet,
			wantErr: "no target of this drill is in namespace team-c (targets are in team-a, team-b)"},
		{name: "release target", values: []string{"grafana-0=http://x"}, targets: []discovery.Options{{Namespace: "team-a", Release: "grafana"}}},
		{name: "two release targets", values: []string{"grafana-0=http://x"},
			targets: []discovery.Options{{Namespace: "team-a", Release: "grafana"}, {Namespace: "team-b", Release: "grafana"}},
			wantErr: "pod grafana-0 is in namespaces team-a and team-b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := parsePodURLs(tc.values)
			if err != nil {
				t.Fatal(err)
			}
			err = u.checkTargets(tc.targets, "scratch")
			if tc.wantErr == "" && err != nil {
				t.Fatal(err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
		})
	}

	// A migration touches one namespace.
	for _, tc := range []struct {
		value, wantErr string
	}{
		{"grafana-0=http://a", ""},
		{"mon/grafana-0=http://a", ""},
		{"other/grafana-0=http://a", "the release is in namespace mon, not other"},
	} {
		u, err := parsePodURLs([]string{tc.value})
		if err != nil {
			t.Fatal(err)
		}
		err = u.checkNamespace("mon")
		if (tc.wantErr == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: %v, want %q", tc.value, err, tc.wantErr)
		}
	}
}

// TestInventoryReleaseFlags: a release and a URL or file are refused
// together, before anything is reached; with neither, the error names the
// release as a way in.
func TestInventoryReleaseFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"release and URL", []string{"inventory", "--release", "grafana", "--grafana-url", "http://127.0.0.1:1"}, "give either a release"},
		{"StatefulSet and grafana.db", []string{"inventory", "--statefulset", "grafana", "--from-db", "x.db"}, "give either a release"},
		{"nothing to read", []string{"inventory"}, "a release (-n NAMESPACE --release NAME"},
		{"bad access mode", []string{"inventory", "--release", "grafana", "--grafana-access", "tunnel"}, `--grafana-access "tunnel": use auto, pod-proxy or cluster-dns`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runAppSplit(t, tc.args...)
			if code != exitVerifyError || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d, want %d with %q:\n%s", code, exitVerifyError, tc.want, stderr)
			}
		})
	}
}
