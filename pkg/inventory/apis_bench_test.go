package inventory_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/rebind-dev/rebind/e2e/grafanastandin"
	"github.com/rebind-dev/rebind/pkg/grafana"
	"github.com/rebind-dev/rebind/pkg/inventory"
)

// standinProcess serves a seeded Grafana 12.4 stand-in from its own
// process, so that the heap measured here is rebind's alone.
func standinProcess(b *testing.B, orgs, perOrg int) string {
	b.Helper()
	dir := b.TempDir()
	bin := filepath.Join(dir, "grafana-standin")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/rebind-dev/rebind/e2e/grafanastandin/cmd/grafana-standin").CombinedOutput(); err != nil {
		b.Fatalf("building the stand-in: %v\n%s", err, out)
	}
	data := filepath.Join(dir, "data")
	start := time.Now()
	if err := grafanastandin.Seed(data, grafanastandin.SeedSpec{Version: grafanastandin.V12_4, Orgs: orgs, FoldersPerOrg: 20, DashboardsPerOrg: perOrg, Seed: 1}); err != nil {
		b.Fatal(err)
	}
	b.Logf("seeded %d dashboards in %s", orgs*perOrg, time.Since(start).Round(time.Millisecond))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(bin, "-data-dir", data, "-addr", addr, "-admin-password", "pw", "-grafana-version", "12.4.0")
	cmd.Stderr = os.Stderr
	// The stand-in shares this machine's cores with rebind, and a real
	// Grafana would not: it collects its garbage less often, which spares
	// it about a tenth of its CPU and changes nothing it answers.
	cmd.Env = append(os.Environ(), "GOGC=400")
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	base := "http://" + addr
	for deadline := time.Now().Add(time.Minute); ; {
		if resp, err := http.Get(base + "/api/health"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			b.Fatal("the stand-in did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	runtime.GC() // the seeding's garbage is not rebind's
	return base
}

// rawFetch reads every byte the list API serves for the orgs' dashboards,
// parsing nothing but the continue token, with the orgs side by side as
// the inventory reads them: the floor under an inventory.
func rawFetch(ctx context.Context, base string, orgs int) (int64, error) {
	var (
		total atomic.Int64
		g     errgroup.Group
	)
	hc := &http.Client{}
	for org := int64(1); org <= int64(orgs); org++ {
		g.Go(func() error {
			cont := ""
			for {
				u := fmt.Sprintf("%s/apis/dashboard.grafana.app/v1beta1/namespaces/%s/dashboards?limit=500", base, grafana.Namespace(org))
				if cont != "" {
					u += "&continue=" + url.QueryEscape(cont)
				}
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
				req.SetBasicAuth("admin", "pw")
				resp, err := hc.Do(req)
				if err != nil {
					return err
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 {
					return fmt.Errorf("%s: %d %v", u, resp.StatusCode, err)
				}
				total.Add(int64(len(body)))
				if cont = continueToken(body); cont == "" {
					return nil
				}
			}
		})
	}
	err := g.Wait()
	return total.Load(), err
}

// continueToken finds metadata.continue without decoding the page.
func continueToken(page []byte) string {
	i := bytes.Index(page, []byte(`"continue":"`))
	if i < 0 {
		return ""
	}
	rest := page[i+len(`"continue":"`):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return ""
	}
	return string(rest[:j])
}

// BenchmarkInventoryGrafana12 times an inventory of 10,000 dashboards over
// 3 orgs of a Grafana 12.4 through the list API and through the legacy
// per-uid path, against a raw fetch of the list pages in the same run, and
// rebind's peak heap at 10,000 and 50,000 dashboards (the stand-in runs in
// its own process).
func BenchmarkInventoryGrafana12(b *testing.B) {
	ctx := context.Background()
	for _, n := range []int{10000, 50000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			const orgs = 3
			perOrg := (n + orgs - 1) / orgs // at least n in all: 3 x 3,334 for 10,000
			base := standinProcess(b, orgs, perOrg)
			c, err := grafana.New(grafana.Options{URL: base, Credentials: grafana.Credentials{User: "admin", Password: "pw"}})
			if err != nil {
				b.Fatal(err)
			}
			var raw, list, perUID time.Duration
			var bytesRead int64
			var peakList, peakLive, result, peakUID uint64
			want := orgs * perOrg
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				if bytesRead, err = rawFetch(ctx, base, orgs); err != nil {
					b.Fatal(err)
				}
				raw += time.Since(t0)

				runtime.GC()
				runtime.GC()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				t1 := time.Now()
				var inv *inventory.Inventory
				alloc, live := heapPeaks(func() { inv, err = inventory.FromGrafana(ctx, c, inventory.Options{}) })
				list += time.Since(t1)
				if err != nil || inv.Totals().Dashboards != want {
					b.Fatalf("list API: %v, %d dashboards", err, inv.Totals().Dashboards)
				}
				// What the answer itself holds: it grows with the
				// dashboards whatever the reading costs.
				runtime.GC()
				runtime.GC() // sync.Pool's buffers survive one collection
				runtime.ReadMemStats(&after)
				runtime.KeepAlive(inv)
				held := after.HeapAlloc - min(after.HeapAlloc, before.HeapAlloc)
				if alloc > peakList {
					peakList, peakLive, result = alloc, live, held
				}
				inv = nil

				if n > 10000 {
					continue // the per-uid path's time is a 10,000 figure
				}
				runtime.GC()
				t2 := time.Now()
				peakUID = max(peakUID, peakHeap(func() {
					inv, err = inventory.FromGrafana(ctx, c, inventory.Options{API: inventory.APILegacy, Workers: 8})
				}))
				perUID += time.Since(t2)
				if err != nil || inv.Totals().Dashboards != want {
					b.Fatalf("per-uid path: %v, %d dashboards", err, inv.Totals().Dashboards)
				}
			}
			b.StopTimer()
			per := func(d time.Duration) float64 { return d.Seconds() / float64(b.N) }
			b.ReportMetric(per(raw), "s/raw-fetch")
			b.ReportMetric(per(list), "s/list-api")
			b.ReportMetric(per(list)/per(raw), "list/raw")
			b.ReportMetric(float64(bytesRead)/(1<<20), "MB-served")
			b.ReportMetric(float64(peakList)/(1<<20), "peak-heap-MB-list")
			// The inventory kept for comparison grows with the dashboards
			// (about 220 bytes each); the rest of the live heap is the
			// reading's own, which must not grow.
			b.ReportMetric(float64(result)/(1<<20), "result-MB")
			b.ReportMetric(float64(peakLive-min(peakLive, result))/(1<<20), "working-live-MB-list")
			if n <= 10000 {
				b.ReportMetric(per(perUID), "s/per-uid")
				b.ReportMetric(float64(peakUID)/(1<<20), "peak-heap-MB-per-uid")
			}
		})
	}
}
