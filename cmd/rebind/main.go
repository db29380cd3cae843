// Command rebind redeploys a Grafana StatefulSet onto a chosen
// PersistentVolume without losing a dashboard. This file wires flags to the
// operations in pkg/; it holds no migration logic.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"k8s.io/client-go/kubernetes"

	"github.com/rebind-dev/rebind/pkg/kube"
)

// Set by the Makefile with -ldflags -X.
var (
	version = "dev"
	commit  = "unknown"
)

// Exit codes, documented in the README.
const (
	exitOK         = 0
	exitFailed     = 1 // error before any change (also lost dashboards in verify)
	exitUsage      = 2 // bad flags or failed preflight: nothing changed
	exitRolledBack = 3 // verification failed and the migration was rolled back
	exitHalfway    = 4 // stopped mid-way: re-run to resume or `rebind rollback`
	exitLocked     = 5 // another run holds the target
)

func main() {
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	app := newApp(stdout, stderr)
	app.Metadata = map[string]any{argsKey: args}
	// Invoked as a kubectl plugin, kubectl runs "kubectl-rebind".
	if filepath.Base(args[0]) == "kubectl-rebind" {
		app.Name = "kubectl rebind"
	}
	err := app.RunContext(ctx, args)
	if err == nil {
		return exitOK
	}
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		if msg := ec.Error(); msg != "" {
			fmt.Fprintln(stderr, "error:", msg)
		}
		return ec.ExitCode()
	}
	fmt.Fprintln(stderr, "error:", err)
	return exitFailed
}

func init() {
	grafanaKubeClient = func(c *cli.Context) (kubernetes.Interface, error) {
		clients, err := loadClients(c)
		if err != nil {
			return nil, err
		}
		return clients.Kube, nil
	}
	grafanaLogger = func(c *cli.Context) *zap.Logger {
		log, err := newLogger(c)
		if err != nil {
			return nil
		}
		return log
	}
}

// argsKey keeps the command line in the App's Metadata: a flag's Action
// cannot tell by which of its names it was set.
const argsKey = "args"

// commandArgs is the command line rebind was started with.
func commandArgs(c *cli.Context) []string {
	args, _ := c.App.Metadata[argsKey].([]string)
	return args
}

func newApp(stdout, stderr io.Writer) *cli.App {
	return &cli.App{
		Name:                 "rebind",
		Usage:                "redeploy a Grafana StatefulSet onto a chosen PersistentVolume without losing a dashboard",
		Version:              version,
		Writer:               stdout,
		ErrWriter:            stderr,
		EnableBashCompletion: true,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "kubeconfig", Usage: "path to the kubeconfig (default $KUBECONFIG, ~/.kube/config, or in-cluster)"},
			&cli.StringFlag{Name: "context", Usage: "kubeconfig context to use"},
			&cli.StringFlag{Name: "log-format", Value: "console", Usage: "structured log format: console or json (logs go to stderr)"},
			&cli.StringFlag{Name: "log-level", Value: "warn", Usage: "debug, info, warn or error"},
		},
		Commands: []*cli.Command{
			migrateCommand(),
			planCommand(),
			rollbackCommand(),
			inventoryCommand(),
			verifyCommand(),
			drillCommand(),
			backupCommand(),
			restoreCommand(),
			versionCommand(),
			completionCommand(),
		},
		ExitErrHandler: func(*cli.Context, error) {}, // run() prints and maps errors
	}
}

// newLogger builds the zap logger from the global flags.
func newLogger(c *cli.Context) (*zap.Logger, error) {
	var level zapcore.Level
	if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return nil, cli.Exit(fmt.Sprintf("--log-level %q: use debug, info, warn or error", c.String("log-level")), exitUsage)
	}
	var cfg zap.Config
	switch c.String("log-format") {
	case "json":
		cfg = zap.NewProductionConfig()
	case "console":
		cfg = zap.NewDevelopmentConfig()
		cfg.DisableStacktrace = true
	default:
		return nil, cli.Exit(fmt.Sprintf("--log-format %q: use console or json", c.String("log-format")), exitUsage)
	}
	cfg.Level = zap.NewAtomicLevelAt(level)
	cfg.OutputPaths = []string{"stderr"}
	return cfg.Build()
}

// commandEnv is what every cluster command starts with: the logger, the
// clients, and the namespace (--namespace, else the kubeconfig context's).
func commandEnv(c *cli.Context) (*zap.Logger, *kube.Clients, string, error) {
	log, err := newLogger(c)
	if err != nil {
		return nil, nil, "", err
	}
	clients, err := loadClients(c)
	if err != nil {
		return nil, nil, "", cli.Exit(err.Error(), exitUsage)
	}
	ns := c.String("namespace")
	if ns == "" {
		ns = clients.Namespace
	}
	return log, clients, ns, nil
}

func loadClients(c *cli.Context) (*kube.Clients, error) {
	return kube.Load(kube.LoadOptions{Kubeconfig: c.String("kubeconfig"), Context: c.String("context")})
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version",
		Action: func(c *cli.Context) error {
			fmt.Fprintf(c.App.Writer, "rebind %s (commit %s)\n", version, commit)
			return nil
		},
	}
}

func completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script (bash or zsh)",
		ArgsUsage: "bash|zsh",
		Action: func(c *cli.Context) error {
			switch c.Args().First() {
			case "bash", "":
				fmt.Fprint(c.App.Writer, bashCompletion)
			case "zsh":
				fmt.Fprint(c.App.Writer, "autoload -U +X bashcompinit && bashcompinit\n"+bashCompletion)
			default:
				return cli.Exit("completion: choose bash or zsh", exitUsage)
			}
			return nil
		},
	}
}

// bashCompletion asks rebind itself for candidates (urfave/cli's
// --generate-bash-completion), so it never goes stale.
const bashCompletion = `_rebind_complete() {
  local cur words
  cur="${COMP_WORDS[COMP_CWORD]}"
  words=("${COMP_WORDS[@]:0:COMP_CWORD}")
  COMPREPLY=($(compgen -W "$("${words[0]}" "${words[@]:1}" --generate-bash-completion 2>/dev/null)" -- "$cur"))
}
complete -o default -F _rebind_complete rebind kubectl-rebind
`
