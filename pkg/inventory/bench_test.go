package inventory_test

import (
	"context"
	"net/http/httptest"
	"runtime"
	"runtime/metrics"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rebind-dev/rebind/e2e/grafanastandin"
	"github.com/rebind-dev/rebind/pkg/grafana"
	"github.com/rebind-dev/rebind/pkg/inventory"
)

// sequentialInventory is the plain approach the worker pool is measured
// against: list, then fetch and hash one dashboard after another.
func sequentialInventory(ctx context.Context, c *grafana.Client) (int, error) {
	hits, err := c.SearchDashboards(ctx)
	if err != nil {
		return 0, err
	}
	for _, h := range hits {
		d, err := c.Dashboard(ctx, h.UID)
		if err != nil {
			return 0, err
		}
		if _, err := inventory.HashDashboard(d.Dashboard, h.UID, h.Title); err != nil {
			return 0, err
		}
	}
	return len(hits), nil
}

// peakHeap samples the heap while f runs, to show memory stays bounded
// (it includes the in-process stand-in server).
func peakHeap(f func()) uint64 {
	alloc, _ := heapPeaks(f)
	return alloc
}

// heapPeaks samples, while f runs, the heap allocated (garbage not yet
// collected included: what the process holds) and the live heap as the
// last collection measured it (what f needed).
func heapPeaks(f func()) (alloc, live uint64) {
	var peakAlloc, peakLive atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		var ms runtime.MemStats
		sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		for {
			runtime.ReadMemStats(&ms)
			metrics.Read(sample)
			if ms.HeapAlloc > peakAlloc.Load() {
				peakAlloc.Store(ms.HeapAlloc)
			}
			if v := sample[0].Value.Uint64(); v > peakLive.Load() {
				peakLive.Store(v)
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	f()
	close(stop)
	<-done
	return peakAlloc.Load(), peakLive.Load()
}

func BenchmarkInventory10k(b *testing.B) {
	const n = 10000
	dir := b.TempDir()
	start := time.Now()
	if err := grafanastandin.Seed(dir, grafanastandin.SeedSpec{Orgs: 1, FoldersPerOrg: 20, DashboardsPerOrg: n, Seed: 1}); err != nil {
		b.Fatal(err)
	}
	seeded := time.Since(start)
	s, err := grafanastandin.Open(dir, grafanastandin.Options{AdminPassword: "pw"})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	c, err := grafana.New(grafana.Options{URL: srv.URL, Credentials: grafana.Credentials{User: "admin", Password: "pw"}})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportMetric(seeded.Seconds(), "s/seed")
	runtime.GC()
	b.ReportAllocs()
	b.ResetTimer()

	var concurrent, sequential time.Duration
	var peak uint64
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		var inv *inventory.Inventory
		peak = max(peak, peakHeap(func() { inv, err = inventory.FromGrafana(ctx, c, inventory.Options{Workers: 8}) }))
		concurrent += time.Since(t0)
		if err != nil {
			b.Fatal(err)
		}
		if got := inv.Totals().Dashboards; got != n {
			b.Fatalf("inventory has %d dashboards, want %d", got, n)
		}

		// The baseline runs outside the timer so B/op and allocs/op describe
		// the concurrent inventory only.
		b.StopTimer()
		t1 := time.Now()
		got, err := sequentialInventory(ctx, c)
		sequential += time.Since(t1)
		if err != nil || got != n {
			b.Fatalf("sequential: %d, %v", got, err)
		}
		b.StartTimer()
	}
	b.StopTimer()
	per := concurrent.Seconds() / float64(b.N)
	seq := sequential.Seconds() / float64(b.N)
	b.ReportMetric(per, "s/inventory")
	b.ReportMetric(seq, "s/sequential")
	b.ReportMetric(seq/per, "speedup")
	b.ReportMetric(float64(n)/per, "dashboards/s")
	b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MB")
}
