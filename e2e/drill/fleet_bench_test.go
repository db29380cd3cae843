package drill_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"k8s.io/client-go/rest"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/pkg/discovery"
	"github.com/rebind-dev/rebind/pkg/drill"
	"github.com/rebind-dev/rebind/pkg/kube"
)

// countingTransport counts the API requests a fleet of drills sends.
type countingTransport struct {
	next http.RoundTripper
	n    *atomic.Int64
}

func (c countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.next.RoundTrip(r)
}

// BenchmarkDrillFleet drills a fleet of releases (2 orgs x 20 dashboards
// each) offline into one shared scratch namespace, as `rebind drill
// --selector ... -A --parallel P --offline` does: the whole fleet
// (REBIND_FLEET_SIZE, default 48) at P=8, then half of it at P=1 for the
// time of one target alone, with the API requests each target costs.
//
//	go test ./e2e/drill/ -run '^$' -bench DrillFleet -benchtime 1x
func BenchmarkDrillFleet(b *testing.B) {
	e2eutil.NeedSandbox(b)
	size := 48
	if s := os.Getenv("REBIND_FLEET_SIZE"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 2 {
			b.Fatalf("REBIND_FLEET_SIZE=%q: want a number of releases >= 2", s)
		}
		size = n
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	start := time.Now()
	rels := make([]*release, size)
	for i := range rels {
		rels[i] = deployGrafana(b, fixtures.Release{Name: fmt.Sprintf("fleet%d", i), Replicas: 1}, 20)
	}
	b.Logf("%d releases deployed and seeded in %s", size, time.Since(start).Round(time.Second))
	scratch := newScratchNamespace(b, "")

	var requests atomic.Int64
	cfg := rest.CopyConfig(sb.RESTConfig)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return countingTransport{next: rt, n: &requests} })
	clients, err := kube.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	run := func(targets []*release, parallel int) (time.Duration, float64) {
		c, err := clients.ForParallelRuns(parallel)
		if err != nil {
			b.Fatal(err)
		}
		d := newDrill(b, c)
		d.Out, d.Log = io.Discard, zap.NewNop() // 10 lines per target otherwise
		var opts []drill.Options
		for _, r := range targets {
			opts = append(opts, drill.Options{Target: discovery.Options{Namespace: r.Rel.Namespace, Release: r.Rel.Name},
				ScratchNamespace: scratch, Offline: true, Timeouts: testTimeouts})
		}
		requests.Store(0)
		t0 := time.Now()
		results := d.RunAll(ctx, opts, parallel)
		took := time.Since(t0)
		for i, res := range results {
			if res.Outcome != drill.Passed || res.Checked != targets[i].total() {
				b.Fatalf("%s: %s, %d checked of %d: %s", res.Target(), res.Outcome, res.Checked, targets[i].total(), res.Error)
			}
		}
		return took, float64(requests.Load()) / float64(len(targets))
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		all, reqAll := run(rels, 8)
		half := rels[:size/2]
		one, reqOne := run(half, 1)
		b.ReportMetric(all.Seconds(), fmt.Sprintf("s/%d-targets-P8", size))
		b.ReportMetric(one.Seconds()/float64(len(half)), "s/target-P1")
		b.ReportMetric(reqAll, "requests/target-P8")
		b.ReportMetric(reqOne, "requests/target-P1")
	}
}
