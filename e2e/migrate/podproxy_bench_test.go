package migrate_test

import (
	"context"
	"testing"
	"time"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/pkg/grafana"
	"github.com/rebind-dev/rebind/pkg/inventory"
	"github.com/rebind-dev/rebind/pkg/podproxy"
)

// BenchmarkInventoryPodProxy measures what the API server's pod proxy costs
// a verification: the inventory of one Grafana (2 orgs x 500 dashboards)
// taken through the pod proxy (session login, the API server in the path)
// and directly at the runner's loopback URL, in the same run, alternating.
func BenchmarkInventoryPodProxy(b *testing.B) {
	e2eutil.NeedSandbox(b)
	e := deployGrafana(b, fixtures.Release{Name: "grafana", Replicas: 1}, 500)
	pod := e.Rel.Pod(0)
	direct, err := e.Client(pod)
	if err != nil {
		b.Fatal(err)
	}
	px, err := podproxy.New(sb.RESTConfig, sb.Kube)
	if err != nil {
		b.Fatal(err)
	}
	url, rt := px.Pod(e.Rel.Namespace, pod, 3000)
	viaProxy, err := grafana.New(grafana.Options{URL: url, Transport: rt, SessionLogin: true,
		Credentials: grafana.Credentials{User: "admin", Password: e.Rel.Password}, Timeout: 30 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	take := func(c *grafana.Client) (time.Duration, int) {
		start := time.Now()
		inv, err := inventory.FromGrafana(context.Background(), c, inventory.Options{Workers: 8})
		if err != nil {
			b.Fatal(err)
		}
		return time.Since(start), inv.Totals().Dashboards
	}
	take(viaProxy) // the session login and connections, outside the figures
	var dDirect, dProxy time.Duration
	n := 0
	for b.Loop() {
		d, got := take(direct)
		p, gotProxy := take(viaProxy)
		if got != gotProxy || got != e.Dashboards[0] {
			b.Fatalf("direct %d, pod proxy %d dashboards, want %d", got, gotProxy, e.Dashboards[0])
		}
		dDirect += d
		dProxy += p
		n++
	}
	b.ReportMetric(float64(dDirect.Milliseconds())/float64(n), "direct-ms")
	b.ReportMetric(float64(dProxy.Milliseconds())/float64(n), "podproxy-ms")
	b.ReportMetric(dProxy.Seconds()/dDirect.Seconds(), "podproxy/direct")
	b.ReportMetric(float64(e.Dashboards[0]), "dashboards")
}
