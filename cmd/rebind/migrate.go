package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"
	"golang.org/x/term"

	"github.com/rebind-dev/rebind/pkg/discovery"
	"github.com/rebind-dev/rebind/pkg/events"
	"github.com/rebind-dev/rebind/pkg/grafana"
	"github.com/rebind-dev/rebind/pkg/inventory"
	"github.com/rebind-dev/rebind/pkg/journal"
	"github.com/rebind-dev/rebind/pkg/kube"
	"github.com/rebind-dev/rebind/pkg/migrate"
	"github.com/rebind-dev/rebind/pkg/podproxy"
	"github.com/rebind-dev/rebind/pkg/preflight"
	"github.com/rebind-dev/rebind/pkg/report"
	"github.com/rebind-dev/rebind/pkg/velero"
	"github.com/rebind-dev/rebind/pkg/verify"
	"github.com/rebind-dev/rebind/pkg/waits"
)

const targetCategory = "Target"

// Events on the workload name rebind as their source; the process waits
// this long at exit for them to be written.
const (
	eventComponent    = "rebind"
	eventFlushTimeout = 5 * time.Second
)

func targetFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "namespace", Aliases: []string{"n"}, Category: targetCategory, Usage: "namespace of the release (default: the kubeconfig context's)"},
		&cli.StringFlag{Name: "release", Category: targetCategory, Usage: "Helm release name of the Grafana chart"},
		&cli.StringFlag{Name: "statefulset", Category: targetCategory, Usage: "StatefulSet name (instead of --release)"},
		&cli.StringFlag{Name: "deployment", Category: targetCategory, Usage: "Deployment name (instead of --release; the chart's default persistence.type: pvc)"},
		&cli.StringFlag{Name: "claim-template", Category: targetCategory, Value: "storage", Usage: "name of the data volume: the StatefulSet's volumeClaimTemplate, or the Deployment pod's volume"},
	}
}

func outputFlag() cli.Flag {
	return &cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "text", Usage: "text, or json for a machine-readable report on stdout"}
}

func migrateFlags() []cli.Flag {
	flags := targetFlags()
	flags = append(flags,
		&cli.StringFlag{Name: "strategy", Value: "reuse", Usage: "reuse (keep each PV), restore (CSI snapshot and restore into new PVs) or velero-restore (restore the claims from a Velero backup: any driver)"},
		&cli.StringFlag{Name: "to-storage-class", Usage: "StorageClass of the new volumes (restore; default: the current class)"},
		&cli.StringFlag{Name: "size", Usage: "size of the claims (default: the claim template's request)"},
		&cli.StringFlag{Name: "snapshot-class", Usage: "VolumeSnapshotClass (default: the driver's default class)"},
		&cli.StringFlag{Name: "from-snapshot", Usage: "restore this existing VolumeSnapshot instead of taking one (with several replicas put {ordinal} in the name)"},
		&cli.StringFlag{Name: "from-backup", Usage: "Velero Backup to restore from (--strategy velero-restore)"},
		&cli.StringFlag{Name: "from-pv", Usage: "with --strategy reuse: bind the workload to this PersistentVolume (kept after a helm uninstall, Released or Available) instead of its current one; {ordinal} for several replicas"},
		&cli.PathFlag{Name: "offline-volume-root", Usage: "`DIR` where the volumes' directories are visible (host-path style drivers): rebind reads a --from-pv volume's grafana.db there as the reference"},
		&cli.StringFlag{Name: "backup", Value: migrate.BackupNone, Usage: "none, or velero: take a Velero Backup of the namespace (volumes as CSI snapshots; see --snapshot-move-data) before the first change; refused if it does not complete"},
		&cli.BoolFlag{Name: "snapshot-move-data", Usage: "with --backup velero: copy the volume data to the backup location (Velero's data mover; needs its node-agent), so the backup survives the storage system and any driver can restore it"},
		&cli.DurationFlag{Name: "velero-restore-timeout", Value: migrate.DefaultTimeouts().Snapshot, Usage: "limit of the wait for rebind's Velero Restore, queued behind other Restores included (Velero runs one at a time); when it passes, the Restore is left to Velero and a re-run waits again"},
		&cli.StringFlag{Name: "velero-namespace", Value: velero.DefaultNamespace, Usage: "namespace Velero runs in (--backup velero, --strategy velero-restore)"},
		&cli.StringFlag{Name: "redeploy", Value: migrate.RedeployDirect, Usage: "direct (recreate the StatefulSet from its saved manifest) or helm (helm upgrade the release with its values plus the persistence values, so Helm's record matches)"},
		&cli.StringFlag{Name: "to-kind", Usage: "statefulset or deployment: move the data across the chart's persistence.type switch (the new kind's claim is bound to the data volume before Helm renders it; needs --redeploy helm)"},
		&cli.BoolFlag{Name: "quiesce", Usage: "scale to 0 before snapshotting: consistent, but Grafana is down for the snapshot and restore too"},
		&cli.BoolFlag{Name: "keep-retain", Usage: "leave reclaim policy Retain on the volumes in use afterwards"},
		&cli.BoolFlag{Name: "no-rollback", Usage: "when verification fails, leave the new state for inspection instead of rolling back"},
		&cli.PathFlag{Name: "baseline", Usage: "`FILE` from an earlier \"rebind inventory\" to verify against (needed with --from-snapshot after data loss)"},
		&cli.BoolFlag{Name: "skip-verify", Usage: "do not compare dashboards (not recommended)"},
		&cli.BoolFlag{Name: "again", Usage: "migrate even if the same migration completed in the last 15 minutes (by default such a re-run, as after a run killed at its very end, reports that run and changes nothing)"},
		&cli.StringFlag{Name: "dry-run", Value: "none", Usage: "none; client prints the plan; server also has the API server validate every write without persisting it"},
		&cli.PathFlag{Name: "values-out", Usage: "write the Helm values for the next \"helm upgrade\" to `FILE`"},
		&cli.DurationFlag{Name: "wait-timeout", Value: migrate.DefaultTimeouts().Wait, Usage: "limit of each wait for claims, pods and deletions"},
		&cli.DurationFlag{Name: "snapshot-timeout", Value: migrate.DefaultTimeouts().Snapshot, Usage: "limit of each wait for a snapshot or a restored volume"},
		&cli.DurationFlag{Name: "verify-timeout", Value: migrate.DefaultTimeouts().Verify, Usage: "limit for Grafana to answer after the redeploy"},
		leaseDurationFlag(),
	)
	flags = append(flags, installFlags()...)
	flags = append(flags,
		grafanaPodURLFlag("one pod's Grafana, instead of --grafana-url or --grafana-access"),
		grafanaAccessFlag(),
		outputFlag(),
	)
	return append(append(flags, grafanaFlags()...), allowEmptyFlag())
}

func migrateCommand() *cli.Command {
	return &cli.Command{
		Name:  "migrate",
		Usage: "move the Grafana StatefulSet onto its own or restored volumes, verify every dashboard, roll back on loss",
		Description: `Runs a plan of idempotent steps recorded in a journal ConfigMap: a run that is
interrupted resumes when the same command runs again. Every PV goes to reclaim
policy Retain before anything is deleted; no PV is ever deleted.`,
		Flags:  migrateFlags(),
		Action: func(c *cli.Context) error { return runMigrate(c, modeFromFlag(c)) },
	}
}

func planCommand() *cli.Command {
	return &cli.Command{
		Name:   "plan",
		Usage:  "print the steps a migration would take (same flags as migrate; nothing changes)",
		Flags:  migrateFlags(),
		Action: func(c *cli.Context) error { return runMigrate(c, migrate.PlanOnly) },
	}
}

func rollbackCommand() *cli.Command {
	return &cli.Command{
		Name:  "rollback",
		Usage: "return the StatefulSet or Deployment to its original volumes (after a migration, or from any point of an unfinished one)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "namespace", Aliases: []string{"n"}, Category: targetCategory, Usage: "namespace of the workload"},
			&cli.StringFlag{Name: "statefulset", Category: targetCategory, Usage: "StatefulSet name"},
			&cli.StringFlag{Name: "deployment", Category: targetCategory, Usage: "Deployment name"},
			leaseDurationFlag(),
			outputFlag(),
		},
		Action: func(c *cli.Context) error {
			if err := journal.ValidateLeaseDuration(c.Duration("lease-duration")); err != nil {
				return cli.Exit(err.Error(), exitUsage)
			}
			log, clients, ns, err := commandEnv(c)
			if err != nil {
				return err
			}
			defer func() { _ = log.Sync() }()
			rec := events.New(clients.Kube, eventComponent)
			defer rec.Close(eventFlushTimeout)
			out, ctx, done := progressOutput(c)
			defer done()
			m := &migrate.Migrate{Clients: clients, Out: out, Log: log, Events: rec, LeaseDuration: c.Duration("lease-duration")}
			name := c.String("statefulset")
			if d := c.String("deployment"); d != "" {
				if name != "" {
					return cli.Exit("give either --statefulset or --deployment", exitUsage)
				}
				name = d
			}
			if name == "" {
				return cli.Exit("rollback needs --statefulset NAME or --deployment NAME (the workload the migration moved)", exitUsage)
			}
			rep, err := m.Rollback(ctx, ns, name)
			done()
			return finishReport(c, rep, err)
		},
	}
}

// leaseDurationFlag sets how long a run that stopped renewing its Lease
// (killed on another machine) keeps re-runs and drills out.
func leaseDurationFlag() cli.Flag {
	return &cli.DurationFlag{Name: "lease-duration", Value: journal.DefaultLeaseDuration,
		Usage: fmt.Sprintf("how long the target's Lease must stay unrenewed, as seen by this run, before this run takes it over from a run that died elsewhere; the holder renews every tenth of it and stops before its next change once it could not renew for two thirds of it (%s to %s, whole seconds)", journal.MinLeaseDuration, journal.MaxLeaseDuration)}
}

func modeFromFlag(c *cli.Context) migrate.Mode {
	switch c.String("dry-run") {
	case "client", "true":
		return migrate.PlanOnly
	case "server":
		return migrate.ServerDryRun
	}
	return migrate.Apply
}

// progressWriter sends human progress to stderr when stdout carries JSON.
func progressWriter(c *cli.Context) *os.File {
	if c.String("output") == "json" {
		return os.Stderr
	}
	return os.Stdout
}

// progressOutput is where a command's human progress goes, with its long waits
// shown (live on a terminal, as plain lines otherwise) for the runs under
// the returned context; done clears the live line.
func progressOutput(c *cli.Context) (out io.Writer, ctx context.Context, done func()) {
	f := progressWriter(c)
	p := waits.NewPrinter(f, term.IsTerminal(int(f.Fd())))
	return p, waits.With(c.Context, p), p.Close
}

func runMigrate(c *cli.Context, mode migrate.Mode) error {
	switch c.String("dry-run") {
	case "none", "client", "server", "true", "false":
	default:
		return cli.Exit(fmt.Sprintf("--dry-run %q: use none, client or server", c.String("dry-run")), exitUsage)
	}
	if err := journal.ValidateLeaseDuration(c.Duration("lease-duration")); err != nil {
		return cli.Exit(err.Error(), exitUsage)
	}
	log, clients, ns, err := commandEnv(c)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	strategy := migrate.Strategy(c.String("strategy"))
	o := migrate.Options{
		Target: discovery.Options{Namespace: ns, Release: c.String("release"), StatefulSet: c.String("statefulset"), Deployment: c.String("deployment"),
			ClaimTemplate: c.String("claim-template"), SnapshotClass: c.String("snapshot-class")},
		Strategy: strategy, ToClass: c.String("to-storage-class"), Size: c.String("size"),
		FromSnapshot: c.String("from-snapshot"), FromPV: c.String("from-pv"), Quiesce: c.Bool("quiesce"), KeepRetain: c.Bool("keep-retain"),
		NoRollback: c.Bool("no-rollback"), BaselineFile: c.Path("baseline"), SkipVerify: c.Bool("skip-verify"), Again: c.Bool("again"),
		Timeouts: migrate.Timeouts{Wait: c.Duration("wait-timeout"), Snapshot: c.Duration("snapshot-timeout"), Verify: c.Duration("verify-timeout"), VeleroRestore: c.Duration("velero-restore-timeout")},
		Backup:   c.String("backup"), VeleroNamespace: c.String("velero-namespace"), FromBackup: c.String("from-backup"),
		SnapshotMoveData: c.Bool("snapshot-move-data"), Redeploy: c.String("redeploy"), ToKind: c.String("to-kind"),
	}
	if root := c.Path("offline-volume-root"); root != "" {
		o.ReadDB = volumeRootReader(root)
	}
	o.Install = installOptions(c)
	checker, viaProxy, err := grafanaChecker(c, clients, ns, log)
	if err != nil {
		return cli.Exit(err.Error(), exitUsage)
	}
	o.GrafanaPodProxy = viaProxy && !o.SkipVerify
	rec := events.New(clients.Kube, eventComponent)
	defer rec.Close(eventFlushTimeout)
	out, ctx, done := progressOutput(c)
	m := &migrate.Migrate{Clients: clients, Checker: checker, Out: out, Log: log, Events: rec, LeaseDuration: c.Duration("lease-duration")}
	rep, err := m.Run(ctx, o, mode)
	done()
	if rep != nil && (rep.Outcome == report.Succeeded || rep.Outcome == report.Unverified) {
		if path := c.Path("values-out"); path != "" && len(rep.HelmValues) > 0 {
			if werr := os.WriteFile(path, []byte(report.ValuesYAML(rep.HelmValues)), 0o644); werr != nil {
				log.Error("writing Helm values", zap.Error(werr))
			}
		}
	}
	return finishReport(c, rep, err)
}

// grafanaChecker reaches each pod's Grafana: at its --grafana-pod-url, else
// --grafana-url, else through the API server's pod proxy or at its cluster
// DNS name (--grafana-access). viaProxy says the pod proxy may be used.
// Credentials come from the flags, or by default from the chart's admin
// Secret (<fullname>, found by discovery), read only when the first pod is
// contacted.
func grafanaChecker(c *cli.Context, clients *kube.Clients, ns string, log *zap.Logger) (_ *verify.Grafana, viaProxy bool, _ error) {
	podURLs, err := grafanaPodURLs(c)
	if err == nil {
		err = podURLs.checkNamespace(ns)
	}
	if err != nil {
		return nil, false, err
	}
	viaProxy, err = podProxyUnlessURL(c)
	if err != nil {
		return nil, false, err
	}
	var (
		px      *podproxy.Proxy
		targets = &grafanaTargets{clients: clients, ns: ns, known: map[string]grafanaTarget{}}
	)
	if viaProxy {
		if len(c.StringSlice(flagGrafanaToken)) > 0 && podURLs.empty() {
			return nil, false, fmt.Errorf("--%s cannot be used through the API server's pod proxy: %w", flagGrafanaToken, grafana.ErrTokenNeedsHeader)
		}
		if px, err = podproxy.New(clients.Config, clients.Kube); err != nil {
			return nil, false, err
		}
		if podURLs.empty() {
			fmt.Fprintln(progressWriter(c), "Grafana: reached through the API server's pod proxy (pods/<pod>:<port>/proxy) as the kubeconfig's user")
		}
	}
	// Preflight asks for the pod proxy rights only when every pod goes
	// through it; with some --grafana-pod-url given, a missing right shows
	// as the API server's 403 when a pod without one is reached.
	viaProxy = viaProxy && podURLs.empty()
	var (
		mu   sync.Mutex
		auth *grafanaAuth
	)
	authFor := func(pod string) (grafanaAuth, error) {
		mu.Lock()
		defer mu.Unlock()
		if auth != nil {
			return *auth, nil
		}
		// The chart names the Secret <fullname>, like the workload: a
		// StatefulSet pod's name without its ordinal, or a Deployment's
		// "pod" (its name, see defaultGrafanaURL).
		a, err := grafanaAuthFromFlags(c, clients.Kube, ns, workloadOf(pod))
		if err != nil {
			return a, err
		}
		auth = &a
		return a, nil
	}
	return &verify.Grafana{
		ClientFor: func(pod string) (*grafana.Client, error) {
			url := podURLs.lookup(ns, pod, true)
			if url == "" {
				url = c.String(flagGrafanaURL)
			}
			a, err := authFor(pod)
			if err != nil {
				return nil, err
			}
			opts := a.options(c, url, log)
			switch {
			case url != "":
			case px != nil:
				opts.URL, opts.Transport = podProxyTarget(c.Context, px, targets, ns, pod)
				opts.SessionLogin = true
			default:
				opts.URL = defaultGrafanaURL(pod, ns)
			}
			return grafana.New(opts)
		},
		Inventory:          inventory.Options{OrgIDs: c.Int64Slice(flagGrafanaOrgID), Logger: log},
		AllowEmptyBaseline: c.Bool("allow-empty-baseline"),
		PollInterval:       500 * time.Millisecond,
	}, viaProxy, nil
}

// workloadOf is the workload name behind a checker's pod key.
func workloadOf(pod string) string {
	if i := strings.LastIndex(pod, "-"); i > 0 {
		if _, err := strconv.Atoi(pod[i+1:]); err == nil {
			return pod[:i]
		}
	}
	return pod
}

// defaultGrafanaURL reaches Grafana from inside the cluster. A
// StatefulSet's pod <fullname>-<ordinal> has a DNS name under the chart's
// headless Service. A Deployment's pods change names, so its "pod" is the
// workload, reached through the chart's Service <fullname>, port 80: the
// URL follows the pod across the swap.
func defaultGrafanaURL(pod, ns string) string {
	if w := workloadOf(pod); w != pod {
		return fmt.Sprintf("http://%s.%s-headless.%s.svc:3000", pod, w, ns)
	}
	return fmt.Sprintf("http://%s.%s.svc", pod, ns)
}

// finishReport prints the report and maps the error to an exit code.
func finishReport(c *cli.Context, rep *report.Report, err error) error {
	if rep != nil {
		if c.String("output") == "json" {
			if werr := rep.WriteJSON(c.App.Writer); werr != nil {
				return werr
			}
		} else if rep.Outcome != report.Planned || len(rep.HelmValues) > 0 {
			rep.WriteSummary(progressWriter(c))
		}
	}
	if err == nil {
		return nil
	}
	var (
		pf     *preflight.Error
		nf     *discovery.NotFoundError
		rb     *migrate.RolledBackError
		half   *migrate.FailedError
		locked *journal.LockedError
	)
	switch {
	case errors.As(err, &locked):
		return cli.Exit(err.Error(), exitLocked)
	case errors.As(err, &pf), errors.As(err, &nf):
		return cli.Exit(err.Error(), exitUsage)
	case errors.As(err, &rb):
		return cli.Exit(err.Error(), exitRolledBack)
	case errors.As(err, &half):
		return cli.Exit(err.Error(), exitHalfway)
	}
	return cli.Exit(err.Error(), exitFailed)
}

// installFlags say what to redeploy onto --from-pv when the release's
// workload is gone (helm uninstall, namespace deleted).
func installFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "chart", Usage: "with --from-pv when the release's workload is gone, and --redeploy helm: the Grafana chart to install onto the volume (directory, .tgz, or repo/name as `helm install` takes it)"},
		&cli.StringFlag{Name: "chart-version", Usage: "version of a repository --chart"},
		&cli.StringSliceFlag{Name: "values", Aliases: []string{"f"}, Usage: "`FILE` of the release's Helm values for --chart or --values-out (repeatable, merged in order as `helm install -f`); rebind adds persistence.volumeName"},
	}
}

// installOptions are the install flags, when --from-pv asks for a volume
// whose release may be gone; Migrate uses them only if it is.
func installOptions(c *cli.Context) *migrate.InstallOptions {
	if c.String("from-pv") == "" || (c.String("chart") == "" && c.Path("values-out") == "") {
		return nil
	}
	return &migrate.InstallOptions{Chart: c.String("chart"), ChartVersion: c.String("chart-version"), ValuesFiles: c.StringSlice("values"),
		ValuesOnly: c.String("redeploy") != migrate.RedeployHelm && c.Path("values-out") != "", ValuesOut: c.Path("values-out")}
}
