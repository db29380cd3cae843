package drill_test

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/e2e/grafanastandin"
	"github.com/rebind-dev/rebind/pkg/drill"
)

// TestDrillPodURLPerNamespace drills, with the binary and one `drill
// --selector -A` run, two releases of the same name in two namespaces:
// both have pod podurl-grafana-0. Each is given its own Grafana URL as
// NS/POD=URL, and the two hold different dashboards, so a drill that read
// the other namespace's URL would compare its restore with the wrong
// production (one admin password for both, so that the wrong one answers).
// A bare POD=URL is refused (it could mean either pod), and
// the URLs given crosswise make both drills fail: the URL really decides.
// With no URL at all, each is reached through the API server's pod proxy.
func TestDrillPodURLPerNamespace(t *testing.T) {
	e2eutil.NeedSandbox(t)
	bin := e2eutil.BuildRebind(t)
	var rels []*release
	for i, perOrg := range []int{3, 5} {
		rels = append(rels, &release{e2eutil.DeploySeeded(t, sb, fixtures.Release{Name: "podurl-grafana", Replicas: 1, Password: "one-password-for-both"},
			grafanastandin.SeedSpec{Orgs: 2, FoldersPerOrg: 1, DashboardsPerOrg: perOrg, Seed: int64(300 + i)})})
	}
	pod := rels[0].Rel.Pod(0)
	if pod != rels[1].Rel.Pod(0) || rels[0].Rel.Namespace == rels[1].Rel.Namespace {
		t.Fatalf("want one pod name in two namespaces, got %s/%s and %s/%s", rels[0].Rel.Namespace, pod, rels[1].Rel.Namespace, rels[1].Rel.Pod(0))
	}
	scratch := newScratchNamespace(t, "")
	url := func(r *release) string { return sb.PodURL(r.Rel.Namespace, pod) }
	entry := func(r *release, u string) string { return r.Rel.Namespace + "/" + pod + "=" + u }
	drillRun := func(t *testing.T, wantCode int, urls ...string) drillReport {
		t.Helper()
		args := []string{"drill", "--selector", "app.kubernetes.io/instance=podurl-grafana", "-A", "--parallel", "2",
			"--offline", "--offline-volume-root", filepath.Join(sb.StorageRoot(), "volumes"), "--scratch-namespace", scratch,
			"--wait-timeout", "90s", "--snapshot-timeout", "90s", "-o", "json"}
		for _, u := range urls {
			args = append(args, "--grafana-pod-url", u)
		}
		res := e2eutil.RunRebind(t, bin, sb.Kubeconfig, args...)
		if res.Code != wantCode {
			t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", res.Code, wantCode, res.Stdout, res.Stderr)
		}
		var rep drillReport
		if wantCode != 2 {
			if err := json.Unmarshal([]byte(res.Stdout), &rep); err != nil {
				t.Fatalf("JSON report: %v\n%s", err, res.Stdout)
			}
			if len(rep.Results) != 2 {
				t.Fatalf("%d results, want 2:\n%s", len(rep.Results), res.Stdout)
			}
		} else if want := "pod " + pod + " is in namespaces"; !strings.Contains(res.Stderr, want) || !strings.Contains(res.Stderr, "say which, as ") {
			t.Fatalf("the refusal does not name the ambiguity (%q):\n%s", want, res.Stderr)
		}
		return rep
	}
	byNS := func(rep drillReport) map[string]*drill.Result {
		m := map[string]*drill.Result{}
		for _, r := range rep.Results {
			m[r.Namespace] = r
		}
		return m
	}
	nss := []string{rels[0].Rel.Namespace, rels[1].Rel.Namespace}

	t.Run("bare POD=URL is ambiguous", func(t *testing.T) {
		before := takeState(t, nss...)
		drillRun(t, 2, pod+"="+url(rels[0]))
		assertNothingLeft(t, before)
	})

	t.Run("crossed URLs fail", func(t *testing.T) {
		before := takeState(t, nss...)
		rep := drillRun(t, 1, entry(rels[0], url(rels[1])), entry(rels[1], url(rels[0])))
		got := byNS(rep)
		for _, r := range rels {
			res := got[r.Rel.Namespace]
			if res == nil || res.Outcome != drill.Failed || res.Lost == 0 {
				t.Errorf("%s with the other release's URL: %+v, want failed with dashboards lost", r.Rel.Namespace, res)
			}
		}
		assertNothingLeft(t, before, rep.Results...)
	})

	t.Run("each its own URL", func(t *testing.T) {
		before := takeState(t, nss...)
		rep := drillRun(t, 0, entry(rels[0], url(rels[0])), entry(rels[1], url(rels[1])))
		got := byNS(rep)
		for _, r := range rels {
			res := got[r.Rel.Namespace]
			if res == nil || res.Outcome != drill.Passed || res.Checked != r.total() || res.Lost != 0 {
				t.Errorf("%s: %+v, want passed with %d dashboards checked", r.Rel.Namespace, res, r.total())
			}
		}
		if rels[0].total() == rels[1].total() {
			t.Fatal("the two releases hold as many dashboards: the check above cannot tell them apart")
		}
		assertNothingLeft(t, before, rep.Results...)
	})

	t.Run("no URL: each through the pod proxy", func(t *testing.T) {
		// The API server's pod proxy names the namespace in its path.
		before := takeState(t, nss...)
		rep := drillRun(t, 0)
		got := byNS(rep)
		for _, r := range rels {
			if res := got[r.Rel.Namespace]; res == nil || res.Outcome != drill.Passed || res.Checked != r.total() {
				t.Errorf("%s: %+v, want passed with %d dashboards checked", r.Rel.Namespace, res, r.total())
			}
		}
		assertNothingLeft(t, before, rep.Results...)
	})
}
