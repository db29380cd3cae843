package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"

	"github.com/rebind-dev/rebind/pkg/app"
	"github.com/rebind-dev/rebind/pkg/discovery"
	"github.com/rebind-dev/rebind/pkg/drill"
	"github.com/rebind-dev/rebind/pkg/grafana"
	"github.com/rebind-dev/rebind/pkg/inventory"
	"github.com/rebind-dev/rebind/pkg/journal"
	"github.com/rebind-dev/rebind/pkg/kube"
	"github.com/rebind-dev/rebind/pkg/podproxy"
	"github.com/rebind-dev/rebind/pkg/report"
	"github.com/rebind-dev/rebind/pkg/verify"
)

const (
	drillCategory   = "Drill"
	resultsCategory = "Results"
)

// defaultURLTemplate reaches a pod through the headless Service the chart
// governs the StatefulSet with (and the drill copies into the scratch
// namespace), which works wherever rebind runs inside the cluster.
const defaultURLTemplate = "http://{pod}.{service}.{namespace}.svc:3000"

func drillFlags() []cli.Flag {
	def := drill.DefaultTimeouts()
	flags := targetFlags()
	flags = append(flags,
		&cli.StringFlag{Name: "selector", Aliases: []string{"l"}, Category: targetCategory, Usage: "drill every StatefulSet matching this label selector (e.g. app.kubernetes.io/name=grafana) instead of --release/--statefulset"},
		&cli.BoolFlag{Name: "all-namespaces", Aliases: []string{"A"}, Category: targetCategory, Usage: "with --selector: look in every namespace"},
		&cli.IntFlag{Name: "parallel", Value: 1, Category: drillCategory, Usage: "drill at most N targets at a time"},
		leaseDurationFlag(),
		&cli.StringFlag{Name: "scratch-namespace", Value: drill.DefaultScratchNamespace, Category: drillCategory, Usage: "existing namespace to restore into, prepared for drills (label " + drill.LabelScratch + "=true; manifests/rbac-drill.yaml creates " + drill.DefaultScratchNamespace + "): the drill creates its objects there and deletes exactly those; every target shares it, drills of one StatefulSet name one at a time (a Lease). With --create-scratch-namespace: the namespace to create (default rebind-drill-<statefulset>-<random>)"},
		&cli.BoolFlag{Name: "create-scratch-namespace", Category: drillCategory, Usage: "opt-in: create a throwaway scratch namespace and delete it afterwards (needs cluster-wide namespace create/delete: manifests/rbac-drill-create-namespace.yaml)"},
		&cli.StringFlag{Name: "restore-storage-class", Category: drillCategory, Usage: "restore into this class (same CSI driver, reclaimPolicy Delete) instead of the production volumes' class"},
		&cli.StringFlag{Name: "snapshot-class", Category: drillCategory, Usage: "VolumeSnapshotClass of the snapshot the drill takes (default: the driver's default class)"},
		&cli.BoolFlag{Name: "use-latest-snapshot", Category: drillCategory, Usage: "restore the newest readyToUse VolumeSnapshot of each claim instead of taking one (dashboards saved since count as lost)"},
		&cli.BoolFlag{Name: "keep-snapshot", Category: drillCategory, Usage: "keep the VolumeSnapshot the drill took in the production namespace"},
		&cli.BoolFlag{Name: "offline", Category: drillCategory, Usage: "read the restored grafana.db directly instead of starting a throwaway Grafana; " + drill.OfflineHelp},
		&cli.PathFlag{Name: "offline-volume-root", Category: drillCategory, Usage: "with --offline: directory where each restored CSI volume's files are visible as DIR/<volumeHandle> (a host-path style driver's data directory mounted into rebind's pod)"},
		&cli.DurationFlag{Name: "wait-timeout", Category: drillCategory, Value: def.Wait, Usage: "limit for restored claims to bind and the copy to be Ready"},
		&cli.DurationFlag{Name: "snapshot-timeout", Category: drillCategory, Value: def.Snapshot, Usage: "limit for each snapshot to be readyToUse"},
		&cli.DurationFlag{Name: "verify-timeout", Category: drillCategory, Value: def.Verify, Usage: "limit for the restored Grafana to answer and be compared"},
		&cli.DurationFlag{Name: "cleanup-timeout", Category: drillCategory, Value: def.Cleanup, Usage: "limit for removing everything the drill created (also after an interrupt)"},
		&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "text", Category: resultsCategory, Usage: "text, or json for one report per target on stdout"},
		&cli.PathFlag{Name: "metrics-file", Category: resultsCategory, Usage: "write Prometheus text metrics here (node_exporter textfile collector); replaced atomically"},
		&cli.StringFlag{Name: "pushgateway-url", Category: resultsCategory, Usage: "push each target's metrics to this Prometheus Pushgateway (job rebind_drill, grouped by namespace and statefulset)"},
		&cli.StringFlag{Name: "metrics-addr", Category: resultsCategory, Usage: "serve the drill metrics at http://`HOST:PORT`/metrics for Prometheus to scrape while rebind runs (with --every: a long-running drill)"},
		&cli.DurationFlag{Name: "every", Category: drillCategory, Usage: "repeat the drills of every target each `DURATION` until interrupted (a long-running drill, e.g. a Deployment scraped through --metrics-addr) instead of running once"},
		grafanaPodURLFlag("one pod's Grafana (a production pod; or the restored copy's, in the scratch namespace)"),
		&cli.StringFlag{Name: "grafana-url-template", Category: grafanaCategory, Value: defaultURLTemplate, Usage: "URL of a pod's Grafana, production or restored copy; {pod}, {service} and {namespace} are replaced. Used with --grafana-access cluster-dns (the default inside the cluster), or whenever given"},
		grafanaAccessFlag(),
	)
	flags = append(flags, drDrillFlags()...)
	return append(append(flags, grafanaFlags()...), allowEmptyFlag())
}

func drillCommand() *cli.Command {
	return &cli.Command{
		Name:  "drill",
		Usage: "prove a restore would work: snapshot, restore into a scratch namespace, compare every dashboard with production, clean up",
		Description: `A scheduled restore dry-run that never changes production: it takes a
VolumeSnapshot of each ordinal's claim (or uses the newest one), restores it
into the scratch namespace (--scratch-namespace, default ` + drill.DefaultScratchNamespace + `, prepared
by manifests/rbac-drill.yaml) through a Retain VolumeSnapshotContent, starts
a throwaway copy of the StatefulSet there with the production admin Secret,
compares its dashboards with what production serves, and deletes exactly
what it created, also when it fails or is interrupted. The scratch namespace
itself stays; --create-scratch-namespace creates and deletes one instead.

Exit codes: 0 every drill passed; 1 a drill failed (dashboards lost or
changed, or the restore could not be completed); 2 usage or preflight
errors (nothing was created).`,
		Flags:  drillFlags(),
		Action: runDrill,
	}
}

// drillSummary is the JSON document written with -o json.
type drillSummary struct {
	Results  []*drill.Result `json:"results"`
	Targets  int             `json:"targets"`
	Passed   int             `json:"passed"`
	Failed   int             `json:"failed"`
	Errors   int             `json:"errors"`
	Refused  int             `json:"preflightFailed"`
	Duration float64         `json:"durationSeconds"`
}

func runDrill(c *cli.Context) error {
	if c.IsSet("to-context") || c.IsSet("to-kubeconfig") {
		return runDRDrill(c)
	}
	switch c.String("output") {
	case "text", "json":
	default:
		return cli.Exit(fmt.Sprintf("--output %q: use text or json", c.String("output")), exitUsage)
	}
	if c.String("selector") != "" && (c.String("release") != "" || c.String("statefulset") != "") {
		return cli.Exit("use either --selector or --release/--statefulset", exitUsage)
	}
	if c.Bool("all-namespaces") && c.String("selector") == "" {
		return cli.Exit("--all-namespaces needs --selector", exitUsage)
	}
	if c.Int("parallel") < 1 {
		return cli.Exit("--parallel must be at least 1", exitUsage)
	}
	if err := journal.ValidateLeaseDuration(c.Duration("lease-duration")); err != nil {
		return cli.Exit(err.Error(), exitUsage)
	}
	if c.Path("offline-volume-root") != "" && !c.Bool("offline") {
		return cli.Exit("--offline-volume-root only applies with --offline", exitUsage)
	}
	if c.String("scratch-namespace") == "" && !c.Bool("create-scratch-namespace") {
		return cli.Exit("--scratch-namespace must name a namespace prepared for drills (or add --create-scratch-namespace)", exitUsage)
	}
	log, clients, ns, err := commandEnv(c)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	base := discovery.Options{Namespace: ns, Release: c.String("release"), StatefulSet: c.String("statefulset"),
		ClaimTemplate: c.String("claim-template"), SnapshotClass: c.String("snapshot-class")}
	targets := []discovery.Options{base}
	if sel := c.String("selector"); sel != "" {
		if targets, err = drill.Targets(c.Context, clients, ns, c.Bool("all-namespaces"), sel, base); err != nil {
			return cli.Exit(err.Error(), exitUsage)
		}
		if len(targets) == 0 {
			return cli.Exit(fmt.Sprintf("no StatefulSet matches --selector %q", sel), exitUsage)
		}
	}
	if clients, err = clients.ForParallelRuns(min(c.Int("parallel"), len(targets))); err != nil {
		return err
	}
	create := c.Bool("create-scratch-namespace")
	scratch := c.String("scratch-namespace")
	switch {
	case create && !c.IsSet("scratch-namespace"):
		scratch = "" // generated per target
	case create && len(targets) > 1:
		return cli.Exit("--scratch-namespace with --create-scratch-namespace names one namespace to create, but the selector matched several targets", exitUsage)
	}

	podURLs, err := grafanaPodURLs(c)
	if err == nil {
		err = podURLs.checkTargets(targets, scratch)
	}
	if err != nil {
		return cli.Exit(err.Error(), exitUsage)
	}
	checker, proxyUse, err := drillChecker(c, clients, log, podURLs)
	if err != nil {
		return cli.Exit(err.Error(), exitUsage)
	}
	progress, ctx, done := progressOutput(c)
	defer done()
	d := &drill.Drill{Clients: clients, Checker: checker, Out: progress, Log: log}
	if root := c.Path("offline-volume-root"); root != "" {
		d.DBReader = volumeRootReader(root)
	}
	var opts []drill.Options
	for _, t := range targets {
		opts = append(opts, drill.Options{
			Target: t, ScratchNamespace: scratch, CreateScratchNamespace: create, RestoreStorageClass: c.String("restore-storage-class"),
			UseLatestSnapshot: c.Bool("use-latest-snapshot"), KeepSnapshot: c.Bool("keep-snapshot"), Offline: c.Bool("offline"), PodProxy: proxyUse,
			LeaseDuration: c.Duration("lease-duration"),
			Timeouts: drill.Timeouts{Wait: c.Duration("wait-timeout"), Snapshot: c.Duration("snapshot-timeout"),
				Verify: c.Duration("verify-timeout"), Cleanup: c.Duration("cleanup-timeout")},
		})
	}
	metrics := drill.NewMetrics()
	if addr := c.String("metrics-addr"); addr != "" {
		srv, err := report.ServeMetrics(addr, metrics.Gatherer())
		if err != nil {
			return cli.Exit(err.Error(), exitUsage)
		}
		defer func() { _ = srv.Close() }()
		fmt.Fprintf(progress, "drill: metrics at http://%s/metrics\n", srv.Addr())
	}
	every := c.Duration("every")
	if every < 0 {
		return cli.Exit("--every must be positive", exitUsage)
	}
	for {
		code, err := drillRound(ctx, c, progress, d, opts, metrics, log)
		if every == 0 || err != nil {
			if err == nil && code != 0 {
				return cli.Exit("", code)
			}
			return err
		}
		t := time.NewTimer(every)
		select {
		case <-c.Context.Done():
			t.Stop()
			// Interrupted between rounds: the last round's verdict stands.
			if code != 0 {
				return cli.Exit("", code)
			}
			return nil
		case <-t.C:
		}
	}
}

// drillRound drills every target once, records the results in metrics,
// publishes and prints them, and returns the exit code they call for.
func drillRound(ctx context.Context, c *cli.Context, progress io.Writer, d *drill.Drill, opts []drill.Options, metrics *drill.Metrics, log *zap.Logger) (int, error) {
	start := time.Now()
	results := d.RunAll(ctx, opts, c.Int("parallel"))
	sum := drillSummary{Results: results, Targets: len(results), Duration: time.Since(start).Seconds()}
	for _, r := range results {
		metrics.Observe(r, nil)
		switch r.Outcome {
		case drill.Passed:
			sum.Passed++
		case drill.Failed:
			sum.Failed++
		case drill.Refused:
			sum.Refused++
		default:
			sum.Errors++
		}
	}

	publishDrillMetrics(c, results, log)

	if c.String("output") == "json" {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		if err := enc.Encode(sum); err != nil {
			return 0, err
		}
	} else {
		for _, r := range results {
			r.WriteText(c.App.Writer)
		}
	}
	line := fmt.Sprintf("drill: %d target(s): %d passed, %d failed, %d error(s), %d refused by preflight", sum.Targets, sum.Passed, sum.Failed, sum.Errors, sum.Refused)
	fmt.Fprintln(progress, line)

	switch {
	case sum.Failed+sum.Errors > 0:
		return exitFailed, nil
	case sum.Refused > 0:
		return exitUsage, nil
	}
	return 0, nil
}

// publishDrillMetrics writes the metrics file and pushes to the
// Pushgateway. A failure to publish is reported but does not change the
// exit code, which says whether the restores work.
func publishDrillMetrics(c *cli.Context, results []*drill.Result, log *zap.Logger) {
	if path := c.Path("metrics-file"); path != "" {
		if err := drill.WriteMetricsFile(path, results); err != nil {
			log.Error("writing the metrics file", zap.String("path", path), zap.Error(err))
			fmt.Fprintln(c.App.ErrWriter, "warning:", err)
		}
	}
	if url := c.String("pushgateway-url"); url != "" {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Context), time.Minute)
		defer cancel()
		for _, r := range results {
			if err := drill.Push(ctx, nil, url, r); err != nil {
				log.Error("pushing metrics", zap.String("target", r.Target()), zap.Error(err))
				fmt.Fprintln(c.App.ErrWriter, "warning:", err)
			}
		}
	}
}

// drillChecker reaches Grafana pods in production and in the scratch
// namespace. The restored copy runs on production's data and Secret, so
// both take production's credentials: the flags, or the chart's Secret of
// the target (read once per target namespace). A pod is reached at its
// --grafana-pod-url, else (in production) --grafana-url, else at
// --grafana-url-template when given, else through the API server's pod
// proxy or at its cluster DNS name (--grafana-access). use says where the
// pod proxy serves every pod, for preflight to ask for its rights there.
func drillChecker(c *cli.Context, clients *kube.Clients, log *zap.Logger, podURLs podURLs) (_ func(*discovery.Target, string) app.Checker, use drill.PodProxyUse, _ error) {
	tmpl := c.String("grafana-url-template")
	if !strings.Contains(tmpl, "{pod}") {
		return nil, use, fmt.Errorf("--grafana-url-template %q must contain {pod}", tmpl)
	}
	viaProxy, err := usePodProxy(c)
	if err != nil {
		return nil, use, err
	}
	// A template is a URL the user gave: it wins over the pod proxy.
	viaProxy = viaProxy && !c.IsSet("grafana-url-template")
	var px *podproxy.Proxy
	if viaProxy {
		// Preflight asks for the rights wherever a pod has no
		// --grafana-pod-url (decided per target, whose pods it knows).
		use.Production = c.String(flagGrafanaURL) == ""
		use.Scratch = !c.Bool("offline")
		if !podURLs.empty() {
			use.URLGiven = func(ns, pod string, home bool) bool { return podURLs.lookup(ns, pod, home) != "" }
		}
		if c.Bool("offline") && c.String(flagGrafanaURL) != "" {
			viaProxy = false // every production pod at that URL, no copy runs
		}
	}
	if viaProxy {
		if len(c.StringSlice(flagGrafanaToken)) > 0 {
			return nil, use, fmt.Errorf("--%s cannot be used through the API server's pod proxy: %w", flagGrafanaToken, grafana.ErrTokenNeedsHeader)
		}
		if px, err = podproxy.New(clients.Config, clients.Kube); err != nil {
			return nil, use, err
		}
		fmt.Fprintln(progressWriter(c), "Grafana: reached through the API server's pod proxy (pods/<pod>:<port>/proxy) as the kubeconfig's user, where no URL is given")
	}
	var mu sync.Mutex
	cache := map[string]grafanaAuth{}
	authFor := func(t *discovery.Target) (grafanaAuth, error) {
		key := t.Namespace + "/" + t.Name()
		mu.Lock()
		defer mu.Unlock()
		if a, ok := cache[key]; ok {
			return a, nil
		}
		secret := t.AdminSecret
		if secret == "" {
			secret = t.Name()
		}
		a, err := grafanaAuthFromFlags(c, clients.Kube, t.Namespace, secret)
		if err == nil {
			cache[key] = a
		}
		return a, err
	}
	return func(t *discovery.Target, ns string) app.Checker {
		return &verify.Grafana{
			PollInterval:       500 * time.Millisecond,
			Inventory:          inventory.Options{OrgIDs: c.Int64Slice(flagGrafanaOrgID), Logger: log},
			AllowEmptyBaseline: c.Bool("allow-empty-baseline"),
			ClientFor: func(pod string) (*grafana.Client, error) {
				url := podURLs.lookup(ns, pod, ns == t.Namespace)
				if url == "" && ns == t.Namespace {
					url = c.String(flagGrafanaURL)
				}
				a, err := authFor(t)
				if err != nil {
					return nil, err
				}
				opts := a.options(c, url, log)
				switch {
				case url != "":
				case px != nil:
					// The copy runs production's pod template, so the
					// Grafana port is the same in both namespaces; the
					// target is known, so nothing needs reading.
					port := podproxy.ContainerPort(&t.PodTemplate().Spec, "grafana", "grafana", 3000)
					if t.IsDeployment() {
						if opts.URL, opts.Transport, err = px.DeploymentSelector(ns, pod, t.Selector(), port); err != nil {
							return nil, err
						}
					} else {
						opts.URL, opts.Transport = px.Pod(ns, pod, port)
					}
					opts.SessionLogin = true
				case t.IsDeployment() && tmpl == defaultURLTemplate:
					// A Deployment's pods change names: its "pod" is the
					// workload, reached through the chart's Service.
					opts.URL = defaultGrafanaURL(pod, ns)
				default:
					// A pod's DNS name is under its governing Service.
					svc := t.Service
					if t.StatefulSet != nil {
						svc = t.StatefulSet.Spec.ServiceName
					}
					opts.URL = strings.NewReplacer("{pod}", pod, "{service}", svc, "{namespace}", ns).Replace(tmpl)
				}
				return grafana.New(opts)
			},
		}
	}, use, nil
}

// volumeRootReader finds a restored CSI volume's grafana.db under root, for
// host-path style drivers whose data directory rebind's pod mounts.
func volumeRootReader(root string) drill.DBReader {
	return func(_ context.Context, pv *corev1.PersistentVolume) (string, func(), error) {
		if pv.Spec.CSI == nil {
			return "", nil, fmt.Errorf("PersistentVolume %s is not a CSI volume", pv.Name)
		}
		h := pv.Spec.CSI.VolumeHandle
		if h == "" || strings.ContainsAny(h, `/\`) || h == ".." {
			return "", nil, fmt.Errorf("PersistentVolume %s: volume handle %q is not a directory name", pv.Name, h)
		}
		return filepath.Join(root, h, "grafana.db"), nil, nil
	}
}
