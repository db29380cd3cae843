package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"
	"k8s.io/client-go/kubernetes"

	"github.com/rebind-dev/rebind/pkg/inventory"
)

// Hooks the command wiring sets: how to reach the cluster (only needed for
// --grafana-secret) and which logger to use. Left nil, commands run without
// a cluster and log nothing.
var (
	grafanaKubeClient func(c *cli.Context) (kubernetes.Interface, error)
	grafanaLogger     func(c *cli.Context) *zap.Logger
)

// Exit codes of verify.
const (
	exitVerifyOK     = 0
	exitVerifyFailed = 1 // dashboards lost or changed
	exitVerifyError  = 2 // could not compare at all
)

func commandDeps(c *cli.Context) (kubernetes.Interface, *zap.Logger, error) {
	log := zap.NewNop()
	if grafanaLogger != nil {
		if l := grafanaLogger(c); l != nil {
			log = l
		}
	}
	var kube kubernetes.Interface
	if c.String(flagGrafanaSecret) != "" && grafanaKubeClient != nil {
		k, err := grafanaKubeClient(c)
		if err != nil {
			return nil, nil, err
		}
		kube = k
	}
	return kube, log, nil
}

// dbStorageFlag chooses the copy an offline read takes when grafana.db
// holds both Grafana 12's unified storage and the legacy tables.
func dbStorageFlag() cli.Flag {
	return &cli.StringFlag{Name: "db-storage", Usage: "with a grafana.db: legacy or unified (default: the copy Grafana serves, from the unified-storage migration log; refused when the file cannot tell)"}
}

// apiFlag forces the legacy API where Grafana also serves /apis.
func apiFlag() cli.Flag {
	return &cli.StringFlag{Name: "grafana-api", Category: grafanaCategory, Usage: "legacy: read dashboards through /api even where Grafana 12+ serves /apis (default: /apis where served, their stored schema)"}
}

func workersFlag() cli.Flag {
	return &cli.IntFlag{Name: "workers", Usage: "dashboards fetched in parallel", Value: 8}
}

func inventoryOptions(c *cli.Context, log *zap.Logger) inventory.Options {
	return inventory.Options{Workers: c.Int("workers"), OrgIDs: c.Int64Slice(flagGrafanaOrgID), API: c.String("grafana-api"), Logger: log}
}

func inventoryCommand() *cli.Command {
	return &cli.Command{
		Name:  "inventory",
		Usage: "record every dashboard and folder of a Grafana (by content hash) to a JSON file",
		Description: "Online through the HTTP API (--grafana-url, or a release's pod: -n NS --release NAME, reached through\n" +
			"the API server's pod proxy with nothing but the kubeconfig) or offline from a grafana.db file (--from-db).\n" +
			"Keep the file: `rebind verify --baseline FILE` proves later that nothing was lost.",
		Flags: append(append(grafanaFlags(), releaseGrafanaFlags()...),
			renamedPathFlag("from-db", "db", "read this grafana.db `FILE` directly instead of the API (opened read-only)"),
			&cli.PathFlag{Name: "output", Aliases: []string{"o"}, Usage: "write the inventory here (default: stdout)"},
			workersFlag(),
			dbStorageFlag(),
			apiFlag(),
		),
		Action: func(c *cli.Context) error {
			inv, err := takeInventory(c, c.String(flagGrafanaURL), c.Path("from-db"), true)
			if err != nil {
				return cli.Exit(err.Error(), exitVerifyError)
			}
			if out := c.Path("output"); out != "" {
				if err := inv.SaveFile(out); err != nil {
					return cli.Exit(fmt.Sprintf("writing %s: %v", out, err), exitVerifyError)
				}
				t := inv.Totals()
				fmt.Fprintf(c.App.ErrWriter, "inventory of %s: %d orgs, %d folders, %d dashboards written to %s\n",
					inv.Source, len(inv.Orgs), t.Folders, t.Dashboards, out)
				return nil
			}
			return inv.Save(c.App.Writer)
		},
	}
}

// takeInventory reads from exactly one of a live Grafana and a database file;
// release says that the release's Grafana (the target flags) may be it.
func takeInventory(c *cli.Context, url, db string, release bool) (*inventory.Inventory, error) {
	release = release && hasReleaseTarget(c)
	switch {
	case url != "" && db != "":
		return nil, errors.New("give either a Grafana URL or a grafana.db, not both")
	case release && (url != "" || db != ""):
		return nil, errors.New("give either a release (--release, --statefulset or --deployment) or a Grafana URL or grafana.db, not both")
	case release:
		if api := c.String("grafana-api"); api != inventory.APIAuto && api != inventory.APILegacy {
			return nil, fmt.Errorf("--grafana-api %q: use legacy, or leave it out for /apis where Grafana serves it", api)
		}
		client, log, err := releaseGrafanaClient(c)
		if err != nil {
			return nil, err
		}
		return inventory.FromGrafana(c.Context, client, inventoryOptions(c, log))
	case db != "":
		st := inventory.Storage(c.String("db-storage"))
		switch st {
		case inventory.StorageAuto, inventory.StorageLegacy, inventory.StorageUnified:
		default:
			return nil, fmt.Errorf("--db-storage %q: use legacy or unified (default: the copy Grafana serves)", st)
		}
		return inventory.FromSQLiteStorage(c.Context, db, st)
	case url != "":
		if api := c.String("grafana-api"); api != inventory.APIAuto && api != inventory.APILegacy {
			return nil, fmt.Errorf("--grafana-api %q: use legacy, or leave it out for /apis where Grafana serves it", api)
		}
		kube, log, err := commandDeps(c)
		if err != nil {
			return nil, err
		}
		client, err := grafanaClientForURL(c, kube, log, url)
		if err != nil {
			return nil, err
		}
		return inventory.FromGrafana(c.Context, client, inventoryOptions(c, log))
	default:
		return nil, fmt.Errorf("give --%s, a release (-n NAMESPACE --release NAME, or --statefulset/--deployment: its Grafana is reached through the API server) or a grafana.db (inventory --from-db, verify --current-db)", flagGrafanaURL)
	}
}

func verifyCommand() *cli.Command {
	return &cli.Command{
		Name:  "verify",
		Usage: "prove that a Grafana still holds every dashboard of a baseline, unchanged",
		Description: "The current state is --grafana-url, a release's pod (-n NS --release NAME, reached through the API server's\n" +
			"pod proxy with nothing but the kubeconfig) or --current-db. The baseline is one of --baseline FILE\n" +
			"(from `rebind inventory`), --against-url (another live Grafana, same credentials) or --baseline-db FILE.\n" +
			"Exit code 0: every dashboard matches; 1: something was lost, changed or moved; 2: could not verify.\n" +
			"Dashboards only in the current Grafana are reported but do not fail verification.",
		Flags: append(append(grafanaFlags(), releaseGrafanaFlags()...),
			&cli.PathFlag{Name: "baseline", Usage: "inventory `FILE` written by \"rebind inventory\""},
			&cli.StringFlag{Name: "against-url", Usage: "a second live Grafana to use as the baseline"},
			renamedPathFlag("baseline-db", "db", "a grafana.db `FILE` to use as the baseline"),
			&cli.PathFlag{Name: "current-db", Usage: "check this grafana.db instead of --grafana-url"},
			&cli.PathFlag{Name: "json", Usage: "also write the full comparison as JSON to this file"},
			workersFlag(),
			dbStorageFlag(),
			apiFlag(),
			allowEmptyFlag(),
		),
		Action: func(c *cli.Context) error {
			baseline, err := verifyBaseline(c)
			if err != nil {
				return cli.Exit("verify: baseline: "+err.Error(), exitVerifyError)
			}
			if baseline.Totals().Dashboards == 0 && !c.Bool("allow-empty-baseline") {
				return cli.Exit(fmt.Sprintf("verify: baseline %s holds no dashboard: any Grafana would match it; pass --allow-empty-baseline if it really is empty", baseline.Source), exitVerifyError)
			}
			current, err := takeInventory(c, c.String(flagGrafanaURL), c.Path("current-db"), true)
			if err != nil {
				return cli.Exit("verify: current: "+err.Error(), exitVerifyError)
			}
			res := inventory.Compare(baseline, current)
			fmt.Fprintf(c.App.Writer, "baseline %s (taken %s)\ncurrent  %s\n", baseline.Source, baseline.TakenAt.Format("2006-01-02 15:04:05Z07:00"), current.Source)
			fmt.Fprint(c.App.Writer, res.Summary())
			if p := c.Path("json"); p != "" {
				b, err := json.MarshalIndent(res, "", "  ")
				if err == nil {
					err = os.WriteFile(p, append(b, '\n'), 0o644)
				}
				if err != nil {
					return cli.Exit(fmt.Sprintf("verify: writing %s: %v", p, err), exitVerifyError)
				}
			}
			if !res.OK() {
				return cli.Exit("verify: FAILED: dashboards were lost or changed (see above)", exitVerifyFailed)
			}
			return nil
		},
	}
}

func verifyBaseline(c *cli.Context) (*inventory.Inventory, error) {
	file, against, db := c.Path("baseline"), c.String("against-url"), c.Path("baseline-db")
	n := 0
	for _, v := range []string{file, against, db} {
		if v != "" {
			n++
		}
	}
	if n != 1 {
		return nil, errors.New("give exactly one of --baseline, --against-url and --baseline-db")
	}
	if file != "" {
		return inventory.LoadFile(file)
	}
	return takeInventory(c, against, db, false)
}

// renamedPathFlag is a flag whose old spelling stays as an alias. "--db"
// named the source in inventory but the baseline in verify; each command
// now says which, and the old spelling works with a warning.
func renamedPathFlag(name, old, usage string) cli.Flag {
	return &cli.PathFlag{Name: name, Aliases: []string{old}, Usage: usage + " (--" + old + " is the deprecated old spelling)",
		Action: func(c *cli.Context, _ cli.Path) error {
			// Set by either name; only the command line says which.
			if usedSpelling(commandArgs(c), old) {
				fmt.Fprintf(c.App.ErrWriter, "warning: --%s is deprecated for `%s %s`: use --%s\n", old, c.App.Name, c.Command.Name, name)
			}
			return nil
		}}
}

// usedSpelling says whether args hold the flag spelled name (-name or
// --name, with or without =value), before a "--" end of flags.
func usedSpelling(args []string, name string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		trimmed := strings.TrimLeft(a, "-")
		if len(a)-len(trimmed) == 0 || len(a)-len(trimmed) > 2 {
			continue
		}
		if trimmed == name || strings.HasPrefix(trimmed, name+"=") {
			return true
		}
	}
	return false
}
