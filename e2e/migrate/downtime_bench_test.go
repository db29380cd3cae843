package migrate_test

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/pkg/kube"
	"github.com/rebind-dev/rebind/pkg/migrate"
	"github.com/rebind-dev/rebind/pkg/plan"
	"github.com/rebind-dev/rebind/pkg/workload"
)

// outageProbe measures how long Grafana does not serve, from the outside,
// the way a user's browser would notice: /api/health every few ms.
type outageProbe struct {
	url            string
	stop           chan struct{}
	done           chan struct{}
	mu             sync.Mutex
	longest, total time.Duration
	// upAt is when the last outage ended.
	upAt time.Time
}

func startProbe(url string) *outageProbe {
	p := &outageProbe{url: url, stop: make(chan struct{}), done: make(chan struct{})}
	go p.run()
	return p
}

func (p *outageProbe) run() {
	defer close(p.done)
	client := &http.Client{Timeout: time.Second}
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	var downSince time.Time
	for {
		resp, err := client.Get(p.url + "/api/health")
		up := err == nil && resp.StatusCode == http.StatusOK
		if resp != nil {
			resp.Body.Close()
		}
		now := time.Now()
		switch {
		case !up && downSince.IsZero():
			downSince = now
		case up && !downSince.IsZero():
			p.record(now.Sub(downSince))
			p.mu.Lock()
			p.upAt = now
			p.mu.Unlock()
			downSince = time.Time{}
		}
		select {
		case <-p.stop:
			if !downSince.IsZero() {
				p.record(time.Since(downSince))
			}
			return
		case <-t.C:
		}
	}
}

func (p *outageProbe) record(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.total += d
	if d > p.longest {
		p.longest = d
	}
}

// Stop returns the total time Grafana did not serve.
func (p *outageProbe) Stop() time.Duration {
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.total
}

// BenchmarkDowntime reports, in one sandbox and one run, how long Grafana
// does not serve during each strategy next to a plain pod restart, the
// milliseconds each adds to a restart's outage, and the ratio the issue
// targets (default restore <= 1.3x restart, medians).
//
//	go test ./e2e/migrate/ -run '^$' -bench Downtime -benchtime 1x
func BenchmarkDowntime(b *testing.B) {
	e2eutil.NeedSandbox(b)
	scenarios := []struct {
		name string
		run  func(e *grafanaEnv) error
	}{
		{"pod-restart", func(e *grafanaEnv) error {
			pod, err := sb.Kube.CoreV1().Pods(e.Rel.Namespace).Get(e.Ctx, e.Rel.Pod(0), metav1.GetOptions{})
			if err != nil {
				return err
			}
			if err := sb.Kube.CoreV1().Pods(e.Rel.Namespace).Delete(e.Ctx, pod.Name, metav1.DeleteOptions{}); err != nil {
				return err
			}
			// The controller recreates a pod of the same name; wait for the
			// new one (different UID) to be Ready.
			if _, err := kube.Until(e.Ctx, time.Minute, "a new pod "+pod.Name, kube.PodLW(sb.Kube, e.Rel.Namespace, pod.Name),
				func(p *corev1.Pod, exists bool) (bool, error) { return exists && p.UID != pod.UID, nil }, nil); err != nil {
				return err
			}
			if err := workload.WaitReady(e.Ctx, sb.Kube, e.Rel.Namespace, e.Rel.FullName(), time.Minute); err != nil {
				return err
			}
			return e.Checker().Ready(e.Ctx, e.Rel.Pod(0))
		}},
		{"reuse", migrateScenario(migrate.Reuse, "", false)},
		{"restore", migrateScenario(migrate.Restore, "premium", false)},
		{"restore-quiesce", migrateScenario(migrate.Restore, "premium", true)},
	}
	// Medians over b.N rounds: one outage lasts a few hundred milliseconds,
	// so a single scheduling hiccup on a shared machine would dominate.
	samples := map[string][]time.Duration{}
	phases := map[string][]map[string]time.Duration{}
	var ratios []float64
	for i := 0; i < b.N; i++ {
		round := map[string]time.Duration{}
		for _, sc := range scenarios {
			// Each scenario on a fresh, seeded release.
			e := deployGrafana(b, fixtures.Release{Name: "grafana", Replicas: 1}, 50)
			trace, err := startTrace(e.Ctx, e.Rel.Namespace, e.Rel.Pod(0), "storage-"+e.Rel.Pod(0), e.Rel.FullName())
			if err != nil {
				b.Fatal(err)
			}
			probe := startProbe(sb.PodURL(e.Rel.Namespace, e.Rel.Pod(0)))
			err = sc.run(e)
			if err == nil {
				// Serving again is part of the outage.
				err = e.Checker().Ready(e.Ctx, e.Rel.Pod(0))
			}
			down := probe.Stop()
			if err != nil {
				b.Fatalf("%s: %v", sc.name, err)
			}
			if down > 0 {
				trace.markAt("serving", probe.upAt)
			}
			// A reuse has no outage to trace.
			if at, err := trace.Stop(); err == nil {
				phases[sc.name] = append(phases[sc.name], at)
			} else if down > 0 {
				b.Logf("%s: %v", sc.name, err)
			}
			round[sc.name] = down
			samples[sc.name] = append(samples[sc.name], down)
			// Each namespace goes as soon as it is measured, StatefulSets
			// first: dying namespaces whose StatefulSets keep retrying used
			// up the controller's API rate limit and made later rounds
			// stall for a second or two, whichever scenario they hit.
			if err := sb.DeleteNamespace(e.Ctx, e.Rel.Namespace); err != nil {
				b.Fatal(err)
			}
		}
		if r := round["pod-restart"]; r > 0 {
			ratios = append(ratios, float64(round["restore"])/float64(r))
		}
		b.Logf("round %d: %v", i+1, round)
	}
	for _, sc := range scenarios {
		if rs := phases[sc.name]; len(rs) > 0 {
			b.Logf("%s, medians from the pod's deletion:%s", sc.name, phaseTable(rs))
		}
	}
	restart := median(samples["pod-restart"])
	for name, ds := range samples {
		b.ReportMetric(float64(median(ds).Milliseconds()), "ms-down/"+name)
		if name != "pod-restart" && median(ds) > 0 {
			// What rebind adds to an outage a restart causes anyway: on a
			// real cluster Grafana's own start takes seconds.
			b.ReportMetric(float64((median(ds) - restart).Milliseconds()), "ms-added/"+name)
		}
	}
	// A reuse of the bound volumes keeps the pods serving: no outage at all.
	b.ReportMetric(float64(median(samples["reuse"]).Milliseconds())/float64(max(median(samples["restore"]).Milliseconds(), 1)), "reuse/restore(median)")
	if len(ratios) > 0 {
		sort.Float64s(ratios)
		b.ReportMetric(ratios[len(ratios)/2], "restore/restart(median)")
		b.ReportMetric(ratios[len(ratios)-1], "restore/restart(worst)")
	}
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func migrateScenario(s migrate.Strategy, class string, quiesce bool) func(*grafanaEnv) error {
	return func(e *grafanaEnv) error {
		o := e.options(s)
		o.ToClass, o.Quiesce = class, quiesce
		rep, err := e.Migrator().Run(e.Ctx, o, migrate.Apply)
		if rep != nil {
			e.T.Logf("%s: rebind reports downtime %v; %s", s, time.Duration(rep.Downtime).Round(time.Millisecond), outageSteps(rep.Steps))
		}
		return err
	}
}

// outageSteps lists how long each step from the start of the outage took,
// which is where a slow round shows its cause.
func outageSteps(steps []plan.Result) string {
	var parts []string
	in := false
	for _, st := range steps {
		in = in || st.ID == "stop-pods" || st.ID == "scale-down"
		if in {
			parts = append(parts, fmt.Sprintf("%s %v", st.ID, st.Duration.Round(time.Millisecond)))
		}
		if st.ID == "redeploy" {
			break
		}
	}
	return strings.Join(parts, ", ")
}

// BenchmarkDowntimeBySize puts data besides grafana.db on the volume (1
// MiB, 256 MiB, 1 GiB; REBIND_BENCH_SIZES_MIB overrides) and measures, in
// one run, the outage of a default restore and of the offline-copy
// approach rsync-based movers take: scale to 0, copy the volume's bytes,
// scale up. The copy's outage is a lower bound of that approach: the swap
// onto the copy is not counted. A restore copies before the outage (the
// snapshot and the restored volume are made while Grafana serves), so its
// outage must not grow with the data.
//
//	go test ./e2e/migrate/ -run '^$' -bench DowntimeBySize -benchtime 3x
func BenchmarkDowntimeBySize(b *testing.B) {
	e2eutil.NeedSandbox(b)
	sizes := []int{1, 256, 1024}
	if s := os.Getenv("REBIND_BENCH_SIZES_MIB"); s != "" {
		sizes = nil
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n <= 0 {
				b.Fatalf("REBIND_BENCH_SIZES_MIB: %q is not a size in MiB", f)
			}
			sizes = append(sizes, n)
		}
	}
	restore := map[int][]time.Duration{}
	copyDown := map[int][]time.Duration{}
	for i := 0; i < b.N; i++ {
		for _, size := range sizes {
			for _, approach := range []string{"restore", "copy"} {
				e := deployGrafana(b, fixtures.Release{Name: "grafana", Replicas: 1}, 20)
				filler := writeFiller(b, e, size)
				probe := startProbe(sb.PodURL(e.Rel.Namespace, e.Rel.Pod(0)))
				var err error
				if approach == "restore" {
					err = migrateScenario(migrate.Restore, "premium", false)(e)
				} else {
					err = offlineCopy(e)
				}
				if err == nil {
					err = e.Checker().Ready(e.Ctx, e.Rel.Pod(0))
				}
				down := probe.Stop()
				if err != nil {
					b.Fatalf("%s with %d MiB: %v", approach, size, err)
				}
				if approach == "restore" {
					// The data came through, not only grafana.db.
					assertFiller(b, e, filler)
					restore[size] = append(restore[size], down)
				} else {
					copyDown[size] = append(copyDown[size], down)
				}
				b.Logf("round %d, %d MiB, %s: down %v", i+1, size, approach, down.Round(time.Millisecond))
				if err := sb.DeleteNamespace(e.Ctx, e.Rel.Namespace); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	for _, size := range sizes {
		r, c := median(restore[size]), median(copyDown[size])
		b.ReportMetric(float64(r.Milliseconds()), fmt.Sprintf("ms-down/restore-%dMiB", size))
		b.ReportMetric(float64(c.Milliseconds()), fmt.Sprintf("ms-down/copy-%dMiB", size))
		if r > 0 {
			b.ReportMetric(float64(c)/float64(r), fmt.Sprintf("copy/restore-%dMiB", size))
		}
	}
	if small, large := median(restore[sizes[0]]), median(restore[sizes[len(sizes)-1]]); small > 0 {
		b.ReportMetric(float64(large)/float64(small), "restore-largest/smallest")
	}
}

type filler struct {
	name string
	size int64
	sum  [32]byte
}

// writeFiller writes size MiB of random bytes next to grafana.db, as
// plugins, images or a large sessions table would take space.
func writeFiller(b *testing.B, e *grafanaEnv, sizeMiB int) filler {
	b.Helper()
	dir, err := fixtures.VolumeDir(sb.StorageRoot(), e.BoundPV(0))
	if err != nil {
		b.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, "filler.bin"))
	if err != nil {
		b.Fatal(err)
	}
	h := sha256.New()
	rng := rand.New(rand.NewPCG(uint64(sizeMiB), 1))
	buf := make([]byte, 1<<20)
	for range sizeMiB {
		for j := 0; j < len(buf); j += 8 {
			binary.LittleEndian.PutUint64(buf[j:], rng.Uint64())
		}
		h.Write(buf)
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	fl := filler{name: "filler.bin", size: int64(sizeMiB) << 20}
	copy(fl.sum[:], h.Sum(nil))
	return fl
}

// assertFiller checks that the volume now serving holds the filler intact.
func assertFiller(b *testing.B, e *grafanaEnv, want filler) {
	b.Helper()
	dir, err := fixtures.VolumeDir(sb.StorageRoot(), e.BoundPV(0))
	if err != nil {
		b.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, want.name))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		b.Fatal(err)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	if n != want.size || sum != want.sum {
		b.Fatalf("the restored volume's %s: %d bytes, sha256 %x; want %d bytes, %x", want.name, n, sum, want.size, want.sum)
	}
}

// offlineCopy is what copy-based movers do: stop Grafana, copy the volume
// file by file, start Grafana again. The copy goes to a scratch directory
// on the same disk; binding the workload to it is not counted.
func offlineCopy(e *grafanaEnv) error {
	ns, name := e.Rel.Namespace, e.Rel.FullName()
	src, err := fixtures.VolumeDir(sb.StorageRoot(), e.BoundPV(0))
	if err != nil {
		return err
	}
	if err := workload.Scale(e.Ctx, sb.Kube, ns, name, 0); err != nil {
		return err
	}
	if err := workload.WaitPodGone(e.Ctx, sb.Kube, ns, e.Rel.Pod(0), time.Minute); err != nil {
		return err
	}
	dst := filepath.Join(e.T.TempDir(), "copy")
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		return fmt.Errorf("copying the volume: %w", err)
	}
	if err := workload.Scale(e.Ctx, sb.Kube, ns, name, 1); err != nil {
		return err
	}
	return workload.WaitReady(e.Ctx, sb.Kube, ns, name, time.Minute)
}
