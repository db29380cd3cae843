package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"
	"k8s.io/client-go/kubernetes"

	"github.com/rebind-dev/rebind/pkg/grafana"
)

const (
	flagGrafanaURL      = "grafana-url"
	flagGrafanaUser     = "grafana-user"
	flagGrafanaPassword = "grafana-password"
	flagGrafanaToken    = "grafana-token"
	flagGrafanaSecret   = "grafana-secret"
	flagGrafanaOrgID    = "grafana-org-id"
	flagGrafanaCAFile   = "grafana-ca-file"
	flagGrafanaInsecure = "grafana-insecure-skip-verify"
	flagGrafanaTimeout  = "grafana-timeout"
)

const grafanaCategory = "Grafana"

// envGrafanaPassword is read by hand rather than through the flag's
// EnvVars, so that the flag counts as set only when it is on the command
// line, which is what warnPasswordOnCommandLine warns about.
const envGrafanaPassword = "REBIND_GRAFANA_PASSWORD"

// grafanaPassword is --grafana-password, else $REBIND_GRAFANA_PASSWORD.
func grafanaPassword(c *cli.Context) string {
	if c.IsSet(flagGrafanaPassword) {
		return c.String(flagGrafanaPassword)
	}
	return os.Getenv(envGrafanaPassword)
}

// warnPasswordOnCommandLine runs when --grafana-password is on the command
// line (urfave/cli runs a flag's action only for a flag that is set, and
// this one has no EnvVars).
func warnPasswordOnCommandLine(c *cli.Context, _ string) error {
	fmt.Fprintf(c.App.ErrWriter, "warning: --%s on the command line is visible to every user of this machine in `ps` (and in /proc/PID/cmdline), and in the spec of a CronJob or Job that runs rebind; pass it in $%s or use --%s NAMESPACE/NAME (the chart's Secret) instead\n",
		flagGrafanaPassword, envGrafanaPassword, flagGrafanaSecret)
	return nil
}

func grafanaFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: flagGrafanaURL, Category: grafanaCategory, Usage: "Grafana base URL, e.g. https://grafana.example.com; for migrate it must survive the pod swap (an Ingress, not a port-forward)"},
		&cli.StringFlag{Name: flagGrafanaUser, Category: grafanaCategory, Usage: "Grafana user for basic auth", Value: "admin"},
		&cli.StringFlag{Name: flagGrafanaPassword, Category: grafanaCategory, Usage: "Grafana password for basic auth; prefer $" + envGrafanaPassword + " or --" + flagGrafanaSecret + ": a value on the command line shows in ps and in CronJob specs",
			Action: warnPasswordOnCommandLine},
		&cli.StringSliceFlag{Name: flagGrafanaToken, Category: grafanaCategory, Usage: "Grafana service account token (Bearer); repeat it with a token of each org the first one cannot read (a token sees only its own org)", EnvVars: []string{"REBIND_GRAFANA_TOKEN"}},
		&cli.StringFlag{Name: flagGrafanaSecret, Category: grafanaCategory, Usage: "read admin-user/admin-password from the chart's Secret: `NAMESPACE/NAME` or NAME (namespace from --namespace); with --grafana-token, used only to list every org"},
		&cli.Int64SliceFlag{Name: flagGrafanaOrgID, Category: grafanaCategory, Usage: "check only these orgs, on purpose (repeatable); default: every org of the Grafana, and one the credentials cannot read stops the run"},
		&cli.PathFlag{Name: flagGrafanaCAFile, Category: grafanaCategory, Usage: "PEM CA bundle to trust for an https Grafana URL"},
		&cli.BoolFlag{Name: flagGrafanaInsecure, Category: grafanaCategory, Usage: "skip TLS certificate verification (test setups only)"},
		&cli.DurationFlag{Name: flagGrafanaTimeout, Category: grafanaCategory, Usage: "timeout of each Grafana request", Value: grafanaDefaultTimeout},
	}
}

// grafanaDefaultTimeout is generous because a Grafana that just started on a
// restored volume runs its migrations before answering quickly.
const grafanaDefaultTimeout = 30 * time.Second

// grafanaClientFromFlags builds a client for --grafana-url.
func grafanaClientFromFlags(c *cli.Context, kube kubernetes.Interface, log *zap.Logger) (*grafana.Client, error) {
	return grafanaClientForURL(c, kube, log, c.String(flagGrafanaURL))
}

// grafanaClientForURL uses the credential and TLS flags with another URL
// (verify --against-url talks to two Grafanas with one admin).
func grafanaClientForURL(c *cli.Context, kube kubernetes.Interface, log *zap.Logger, url string) (*grafana.Client, error) {
	if url == "" {
		return nil, fmt.Errorf("--%s is required", flagGrafanaURL)
	}
	auth, err := grafanaAuthFromFlags(c, kube, "", "")
	if err != nil {
		return nil, err
	}
	return grafana.New(auth.options(c, url, log))
}

// grafanaAuth is what rebind authenticates to Grafana with.
type grafanaAuth struct {
	creds grafana.Credentials
	// tokens read the orgs the main credentials cannot, one org each.
	tokens []string
	// lister is a server admin's login, used only to list every org.
	lister *grafana.Credentials
}

func (a grafanaAuth) options(c *cli.Context, url string, log *zap.Logger) grafana.Options {
	return grafana.Options{URL: url, Credentials: a.creds, OrgTokens: a.tokens, ListCredentials: a.lister,
		CAFile: c.Path(flagGrafanaCAFile), InsecureSkipVerify: c.Bool(flagGrafanaInsecure), Timeout: c.Duration(flagGrafanaTimeout), Logger: log}
}

// grafanaAuthFromFlags reads the credential flags. Without any, the chart's
// admin Secret defaultNS/defaultSecret is used (when given). With tokens,
// --grafana-secret (or else that default Secret, if readable) only lists
// the orgs, so that rebind knows which exist.
func grafanaAuthFromFlags(c *cli.Context, kube kubernetes.Interface, defaultNS, defaultSecret string) (grafanaAuth, error) {
	var tokens []string
	for _, t := range c.StringSlice(flagGrafanaToken) {
		if t = strings.TrimSpace(t); t != "" {
			tokens = append(tokens, t)
		}
	}
	password, secret := grafanaPassword(c), c.String(flagGrafanaSecret)
	if password != "" && (len(tokens) > 0 || secret != "") {
		return grafanaAuth{}, fmt.Errorf("use only one of --%s, --%s and --%s (a token may come with --%s, which then only lists the orgs)", flagGrafanaPassword, flagGrafanaToken, flagGrafanaSecret, flagGrafanaSecret)
	}
	var a grafanaAuth
	switch {
	case len(tokens) > 0:
		a.creds = grafana.Credentials{Token: tokens[0], Source: "--" + flagGrafanaToken}
		a.tokens = tokens[1:]
		if secret != "" {
			cr, err := secretCredentials(c, kube, secret)
			if err != nil {
				return a, err
			}
			a.lister = &cr
		} else if defaultSecret != "" && kube != nil {
			// Best effort: without it a token cannot tell which orgs exist,
			// and the run stops naming --grafana-secret and --grafana-org-id.
			if cr, err := grafana.CredentialsFromSecret(c.Context, kube, defaultNS, defaultSecret); err == nil {
				a.lister = &cr
			}
		}
	case password != "":
		a.creds = grafana.Credentials{User: c.String(flagGrafanaUser), Password: password, Source: "--" + flagGrafanaPassword}
	case secret != "":
		cr, err := secretCredentials(c, kube, secret)
		if err != nil {
			return a, err
		}
		a.creds = cr
	case defaultSecret != "" && kube != nil:
		cr, err := grafana.CredentialsFromSecret(c.Context, kube, defaultNS, defaultSecret)
		if err != nil {
			return a, fmt.Errorf("%w (pass --%s, --%s or --%s)", err, flagGrafanaSecret, flagGrafanaPassword, flagGrafanaToken)
		}
		a.creds = cr
	}
	return a, nil
}

// secretCredentials reads --grafana-secret NAMESPACE/NAME or NAME.
func secretCredentials(c *cli.Context, kube kubernetes.Interface, secret string) (grafana.Credentials, error) {
	ns, name, ok := strings.Cut(secret, "/")
	if !ok {
		ns, name = c.String("namespace"), secret
		if ns == "" {
			ns = "default"
		}
	}
	if ns == "" || name == "" {
		return grafana.Credentials{}, fmt.Errorf("--%s must be NAMESPACE/NAME or NAME, got %q", flagGrafanaSecret, secret)
	}
	if kube == nil {
		return grafana.Credentials{}, fmt.Errorf("--%s needs access to a Kubernetes cluster (kubeconfig)", flagGrafanaSecret)
	}
	return grafana.CredentialsFromSecret(c.Context, kube, ns, name)
}

// allowEmptyFlag lets a migration or drill accept a Grafana without any
// dashboard as its baseline.
func allowEmptyFlag() cli.Flag {
	return &cli.BoolFlag{Name: "allow-empty-baseline", Category: grafanaCategory, Usage: "accept a Grafana with no dashboard at all as the baseline (otherwise refused: \"0 of 0 identical\" would pass any restore)"}
}

// grafanaPodURLs reads the repeatable --grafana-pod-url POD=URL flag.
func grafanaPodURLs(c *cli.Context) (map[string]string, error) {
	urls := map[string]string{}
	for _, kv := range c.StringSlice("grafana-pod-url") {
		pod, url, ok := strings.Cut(kv, "=")
		if !ok || pod == "" || url == "" {
			return nil, fmt.Errorf("--grafana-pod-url %q: use POD=URL", kv)
		}
		urls[pod] = url
	}
	return urls, nil
}
