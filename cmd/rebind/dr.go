package main

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/rebind-dev/rebind/pkg/app"
	"github.com/rebind-dev/rebind/pkg/discovery"
	"github.com/rebind-dev/rebind/pkg/dr"
	"github.com/rebind-dev/rebind/pkg/kube"
	"github.com/rebind-dev/rebind/pkg/report"
	"github.com/rebind-dev/rebind/pkg/velero"
)

const drCategory = "Disaster recovery"

func veleroDRFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "velero-namespace", Value: velero.DefaultNamespace, Category: drCategory, Usage: "namespace Velero runs in"},
		&cli.DurationFlag{Name: "velero-pickup-timeout", Value: time.Minute, Category: drCategory, Usage: "how long the Velero server may take to pick a Backup or Restore up before rebind reports that none runs"},
	}
}

func backupCommand() *cli.Command {
	flags := append(targetFlags(), veleroDRFlags()...)
	flags = append(flags,
		&cli.StringFlag{Name: "backup-name", Category: drCategory, Usage: "name of the Velero Backup (default rebind-dr-<workload>-<UTC time>)"},
		&cli.DurationFlag{Name: "backup-ttl", Category: drCategory, Usage: "how long Velero keeps the Backup (default: Velero's, 720h)"},
		&cli.DurationFlag{Name: "backup-timeout", Value: 30 * time.Minute, Category: drCategory, Usage: "limit of the wait for the Backup to complete"},
		&cli.BoolFlag{Name: "keep-baseline", Category: drCategory, Usage: "leave the baseline ConfigMap in the namespace after the Backup (default: removed, the Backup holds it)"},
		&cli.StringSliceFlag{Name: "grafana-pod-url", Category: grafanaCategory, Usage: "`POD=URL` of one pod's Grafana (repeatable)"},
		grafanaAccessFlag(),
		outputFlag(),
	)
	return &cli.Command{
		Name:  "backup",
		Usage: "take a Velero Backup of the release that carries its own baseline, for a restore in another cluster",
		Description: `Inventories every dashboard of every pod's Grafana, writes the inventories
into ConfigMap rebind-dr-baseline-<workload> in the release namespace (hashes,
uids and titles; nothing secret), and backs the namespace up with Velero
(volumes as CSI snapshots), rebind's metadata on the Backup. A cluster whose
Velero shares the backup location restores it with ` + "`rebind restore --from-backup`" + `.

Exit codes: 0 Completed; 1 error; 2 bad flags or failed preflight (nothing written).`,
		Flags: append(append(flags, grafanaFlags()...), allowEmptyFlag()),
		Action: func(c *cli.Context) error {
			log, clients, ns, err := commandEnv(c)
			if err != nil {
				return err
			}
			defer func() { _ = log.Sync() }()
			checker, viaProxy, err := grafanaChecker(c, clients, ns, log)
			if err != nil {
				return cli.Exit(err.Error(), exitUsage)
			}
			out, ctx, done := progressOutput(c)
			defer done()
			env := &dr.Env{Clients: clients, Checker: checker, Out: out, Log: log}
			rep, err := env.Backup(ctx, dr.BackupOptions{
				Target: discovery.Options{Namespace: ns, Release: c.String("release"), StatefulSet: c.String("statefulset"), Deployment: c.String("deployment"),
					ClaimTemplate: c.String("claim-template")},
				VeleroNamespace: c.String("velero-namespace"), Name: c.String("backup-name"), TTL: c.Duration("backup-ttl"),
				Pickup: c.Duration("velero-pickup-timeout"), Timeout: c.Duration("backup-timeout"), KeepBaseline: c.Bool("keep-baseline"),
				Grafana: drGrafanaAccess(c, viaProxy),
			})
			done()
			return finishDR(c, rep, err)
		},
	}
}

func restoreCommand() *cli.Command {
	flags := append([]cli.Flag{
		&cli.StringFlag{Name: "from-backup", Required: true, Category: drCategory, Usage: "the Velero Backup `NAME` that rebind backup took (in this cluster's Velero, synced from the shared location)"},
		&cli.StringFlag{Name: "into-namespace", Category: drCategory, Usage: "namespace to restore the release into (default: the one it was backed up from)"},
		&cli.StringFlag{Name: "to-storage-class", Category: drCategory, Usage: "StorageClass of the restored claims, of the snapshots' CSI driver (default: the class they were backed up in)"},
		&cli.BoolFlag{Name: "allow-existing-grafana", Category: drCategory, Usage: "restore into a namespace that already holds a Grafana (refused by default: Velero keeps existing objects as they are)"},
		&cli.DurationFlag{Name: "velero-restore-timeout", Value: 30 * time.Minute, Category: drCategory, Usage: "limit of the wait for the Velero Restore, queued behind other Restores included"},
		&cli.DurationFlag{Name: "wait-timeout", Value: 10 * time.Minute, Category: drCategory, Usage: "limit for the restored workload to be Ready"},
		&cli.DurationFlag{Name: "verify-timeout", Value: 5 * time.Minute, Category: drCategory, Usage: "limit for each restored Grafana to answer and be compared"},
		&cli.StringSliceFlag{Name: "grafana-pod-url", Category: grafanaCategory, Usage: "`POD=URL` of one restored pod's Grafana (repeatable)"},
		grafanaAccessFlag(),
		outputFlag(),
	}, veleroDRFlags()...)
	return &cli.Command{
		Name:  "restore",
		Usage: "restore a release from a `rebind backup` of another cluster and verify every dashboard against the baseline the backup carries",
		Description: `Run against the recovery cluster (global --context or --kubeconfig). Refuses,
before anything changes, a backup without rebind's baseline, a class of
another CSI driver than the snapshots', and a namespace that already holds a
Grafana (unless --allow-existing-grafana). Then a Velero Restore (namespace
mapping, and Velero's storage-class mapping ConfigMap while it runs), the
workload waited Ready, and every dashboard compared with the carried baseline.

Exit codes: 0 every dashboard verified; 1 error, or UNVERIFIED (the baseline
was not in the backup, an org could not be read); 2 bad flags or failed
preflight (nothing changed); 3 verification failed (the restored release is
kept for inspection); 4 the restore is incomplete (re-run the same command).`,
		Flags: append(append(flags, grafanaFlags()...), allowEmptyFlag()),
		Action: func(c *cli.Context) error {
			log, clients, _, err := commandEnv(c)
			if err != nil {
				return err
			}
			defer func() { _ = log.Sync() }()
			// Flag errors of the Grafana access surface now, before
			// anything changes.
			podURLs, err := grafanaPodURLs(c)
			if err != nil {
				return cli.Exit(err.Error(), exitUsage)
			}
			viaProxy, err := podProxyUnlessURL(c)
			if err != nil {
				return cli.Exit(err.Error(), exitUsage)
			}
			// As grafanaChecker decides it, for the restored namespace.
			viaProxy = viaProxy && podURLs.empty()
			out, ctx, done := progressOutput(c)
			defer done()
			env := &dr.Env{Clients: clients, Out: out, Log: log}
			rep, err := env.Restore(ctx, dr.RestoreOptions{
				FromBackup: c.String("from-backup"), VeleroNamespace: c.String("velero-namespace"),
				IntoNamespace: c.String("into-namespace"), ToClass: c.String("to-storage-class"), AllowExistingGrafana: c.Bool("allow-existing-grafana"),
				Pickup: c.Duration("velero-pickup-timeout"), Restore: c.Duration("velero-restore-timeout"), Wait: c.Duration("wait-timeout"), Verify: c.Duration("verify-timeout"),
				CheckerFor: func(ns string) (app.Checker, error) {
					checker, _, err := grafanaChecker(c, clients, ns, log)
					return checker, err
				},
				Grafana: drGrafanaAccess(c, viaProxy),
			})
			done()
			return finishDR(c, rep, err)
		},
	}
}

// drGrafanaAccess tells DR's preflight which Secret the credentials come
// from (grafanaAuthFromFlags): the chart's admin Secret when no credential
// flag is given, --grafana-secret when one is; a token alone reads the
// admin Secret only on a best-effort basis, which needs no right.
func drGrafanaAccess(c *cli.Context, viaProxy bool) dr.GrafanaAccess {
	a := dr.GrafanaAccess{PodProxy: viaProxy, Secret: c.String(flagGrafanaSecret)}
	// Blank tokens are ignored there too.
	token := slices.ContainsFunc(c.StringSlice(flagGrafanaToken), func(t string) bool { return strings.TrimSpace(t) != "" })
	a.AdminSecret = a.Secret == "" && grafanaPassword(c) == "" && !token
	return a
}

// finishDR prints the report and maps DR's errors to the exit codes of
// migrate: 3 for a failed verification, 4 for an incomplete run; an
// unverified restore is an error (1), never a success.
func finishDR(c *cli.Context, rep *report.Report, err error) error {
	var (
		failed     *dr.VerificationFailedError
		incomplete *dr.IncompleteError
		unverified *dr.UnverifiedError
	)
	code := -1
	switch {
	case errors.As(err, &failed):
		code = exitRolledBack
	case errors.As(err, &incomplete):
		code = exitHalfway
	case errors.As(err, &unverified):
		code = exitFailed
	}
	if code < 0 {
		return finishReport(c, rep, err)
	}
	if perr := finishReport(c, rep, nil); perr != nil {
		return perr
	}
	return cli.Exit(err.Error(), code)
}

// drDrillFlags turn `rebind drill` into a drill against a DR cluster.
func drDrillFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "to-context", Category: drCategory, Usage: "drill into the DR cluster of this kubeconfig context: back up in production (global --context) with the baseline, restore in the DR cluster into a scratch namespace, verify, remove it there"},
		&cli.PathFlag{Name: "to-kubeconfig", Category: drCategory, Usage: "kubeconfig of the DR cluster (default: the global --kubeconfig)"},
		&cli.StringFlag{Name: "velero-namespace", Value: velero.DefaultNamespace, Category: drCategory, Usage: "with --to-context: namespace Velero runs in, in both clusters"},
		&cli.DurationFlag{Name: "backup-ttl", Value: 72 * time.Hour, Category: drCategory, Usage: "with --to-context: how long Velero keeps the drill's Backup"},
		&cli.DurationFlag{Name: "sync-timeout", Value: 5 * time.Minute, Category: drCategory, Usage: "with --to-context: limit for the Backup to reach the DR cluster's Velero (its backup sync)"},
		&cli.DurationFlag{Name: "velero-timeout", Value: 30 * time.Minute, Category: drCategory, Usage: "with --to-context: limit of the Velero Backup and of the Restore"},
		&cli.DurationFlag{Name: "velero-pickup-timeout", Value: time.Minute, Category: drCategory, Usage: "with --to-context: how long Velero may take to pick a Backup or Restore up"},
		// --grafana-access comes with drill's own Grafana flags.
	}
}

// runDRDrill is `rebind drill --to-context`: production is the global
// cluster, the DR cluster the other one.
func runDRDrill(c *cli.Context) error {
	if c.String("selector") != "" || c.Bool("offline") || c.Bool("use-latest-snapshot") || c.Bool("create-scratch-namespace") {
		return cli.Exit("--to-context drills one release (--release/--statefulset) through a Velero backup: --selector, --offline, --use-latest-snapshot and --create-scratch-namespace do not apply", exitUsage)
	}
	log, prod, ns, err := commandEnv(c)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	kc := c.Path("to-kubeconfig")
	if kc == "" {
		kc = c.String("kubeconfig")
	}
	to, err := kube.Load(kube.LoadOptions{Kubeconfig: kc, Context: c.String("to-context")})
	if err != nil {
		return cli.Exit("the DR cluster: "+err.Error(), exitUsage)
	}
	prodChecker, prodViaProxy, err := grafanaChecker(c, prod, ns, log)
	if err != nil {
		return cli.Exit(err.Error(), exitUsage)
	}
	// The scratch namespace's pods have no URL anyone could give before
	// the drill: its Grafana is reached as grafanaChecker decides there.
	toViaProxy, err := podProxyUnlessURL(c)
	if err != nil {
		return cli.Exit(err.Error(), exitUsage)
	}
	scratch := ""
	if c.IsSet("scratch-namespace") {
		scratch = c.String("scratch-namespace")
	}
	out, ctx, done := progressOutput(c)
	defer done()
	o := dr.DrillOptions{
		Target: discovery.Options{Namespace: ns, Release: c.String("release"), StatefulSet: c.String("statefulset"), Deployment: c.String("deployment"),
			ClaimTemplate: c.String("claim-template")},
		VeleroNamespace: c.String("velero-namespace"), ScratchNamespace: scratch, ToClass: c.String("restore-storage-class"),
		BackupTTL: c.Duration("backup-ttl"), Pickup: c.Duration("velero-pickup-timeout"), Backup: c.Duration("velero-timeout"), Sync: c.Duration("sync-timeout"),
		Restore: c.Duration("velero-timeout"), Wait: c.Duration("wait-timeout"), Verify: c.Duration("verify-timeout"), Cleanup: c.Duration("cleanup-timeout"),
		CheckerFor: func(ns string) (app.Checker, error) {
			checker, _, err := grafanaChecker(c, to, ns, log)
			return checker, err
		},
		Grafana:       drGrafanaAccess(c, prodViaProxy),
		TargetGrafana: drGrafanaAccess(c, toViaProxy),
	}
	every := c.Duration("every")
	for {
		rep, err := dr.Drill(ctx, &dr.Env{Clients: prod, Checker: prodChecker, Out: out, Log: log}, &dr.Env{Clients: to, Out: out, Log: log}, o)
		res := finishDR(c, rep, err)
		if every <= 0 {
			done()
			return res
		}
		if res != nil {
			fmt.Fprintln(c.App.ErrWriter, "error:", res)
		}
		t := time.NewTimer(every)
		select {
		case <-c.Context.Done():
			t.Stop()
			return res
		case <-t.C:
		}
	}
}
