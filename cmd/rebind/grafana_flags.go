package main

import (
	"fmt"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"

	"github.com/rebind-dev/rebind/pkg/discovery"
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

// flagGrafanaPodURL is repeatable: NS/POD=URL, or POD=URL for a pod in the
// release's own namespace.
const flagGrafanaPodURL = "grafana-pod-url"

func grafanaPodURLFlag(what string) cli.Flag {
	return &cli.StringSliceFlag{Name: flagGrafanaPodURL, Category: grafanaCategory,
		Usage: "`NS/POD=URL` of " + what + " (repeatable); POD=URL means the pod of that name in the release's own namespace"}
}

// podURLs are the --grafana-pod-url entries. A pod is named by namespace
// and name: in a fleet, releases of one name in two namespaces both have a
// pod grafana-0, and each must be reached at its own URL.
type podURLs struct {
	// exact: "NS/POD" -> URL.
	exact map[string]string
	// bare: "POD" -> URL, for the pod of that name in its release's
	// namespace (the target's, never a scratch namespace's).
	bare map[string]string
}

func (u podURLs) empty() bool { return len(u.exact) == 0 && len(u.bare) == 0 }

// lookup is the URL given for pod in ns ("" for none); home says that ns is
// the namespace of the release the pod belongs to, where POD=URL applies.
func (u podURLs) lookup(ns, pod string, home bool) string {
	if url := u.exact[ns+"/"+pod]; url != "" {
		return url
	}
	if home {
		return u.bare[pod]
	}
	return ""
}

// parsePodURLs reads --grafana-pod-url values. The key ends at the first
// "=": a URL may hold "=" (a query), a pod or namespace name never does.
func parsePodURLs(values []string) (podURLs, error) {
	u := podURLs{exact: map[string]string{}, bare: map[string]string{}}
	for _, kv := range values {
		key, raw, ok := strings.Cut(kv, "=")
		bad := func(why string) (podURLs, error) {
			return podURLs{}, fmt.Errorf("--%s %q: %s; use NS/POD=URL (or POD=URL for a pod in the release's namespace), e.g. monitoring/grafana-0=https://grafana-0.example.com", flagGrafanaPodURL, kv, why)
		}
		if !ok || key == "" || raw == "" {
			return bad("no POD=URL")
		}
		ns, pod, namespaced := strings.Cut(key, "/")
		if !namespaced {
			ns, pod = "", key
		}
		if namespaced {
			if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
				return bad(fmt.Sprintf("namespace %q is not a namespace name (%s)", ns, errs[0]))
			}
		}
		if errs := validation.IsDNS1123Subdomain(pod); len(errs) > 0 {
			return bad(fmt.Sprintf("pod %q is not a pod name (%s)", pod, errs[0]))
		}
		parsed, err := url.Parse(raw)
		if err != nil || (parsed.Scheme != "http" && parsed.Scheme != "https") || parsed.Host == "" {
			return bad(fmt.Sprintf("%q is not an http(s) URL", raw))
		}
		m, k := u.bare, pod
		if namespaced {
			m, k = u.exact, ns+"/"+pod
		}
		if prev, dup := m[k]; dup && prev != raw {
			return bad(fmt.Sprintf("%s is given twice, with %s and %s", k, prev, raw))
		}
		m[k] = raw
	}
	return u, nil
}

// grafanaPodURLs reads the repeatable --grafana-pod-url flag.
func grafanaPodURLs(c *cli.Context) (podURLs, error) {
	return parsePodURLs(c.StringSlice(flagGrafanaPodURL))
}

// checkNamespace refuses entries that name a pod outside ns, the one
// namespace a migration touches: they would be ignored without a word.
func (u podURLs) checkNamespace(ns string) error {
	for k := range u.exact {
		if n, _, _ := strings.Cut(k, "/"); n != ns {
			return fmt.Errorf("--%s %s: the release is in namespace %s, not %s; name the pod as %s/POD, or just POD", flagGrafanaPodURL, k, ns, n, ns)
		}
	}
	return nil
}

// checkTargets refuses entries a drill of targets would ignore or could
// apply to the wrong pod: NS/POD in a namespace with no target (nor the
// scratch namespace, where the restored copy runs), and POD=URL when
// targets in two namespaces have a pod of that name (a fleet with release
// grafana in two namespaces has grafana-0 twice).
func (u podURLs) checkTargets(targets []discovery.Options, scratch string) error {
	homes := map[string]bool{}
	for _, t := range targets {
		homes[t.Namespace] = true
	}
	for k := range u.exact {
		if n, _, _ := strings.Cut(k, "/"); !homes[n] && n != scratch {
			return fmt.Errorf("--%s %s: no target of this drill is in namespace %s (targets are in %s)", flagGrafanaPodURL, k, n, strings.Join(sortedKeys(homes), ", "))
		}
	}
	for pod := range u.bare {
		in := map[string]bool{}
		for _, t := range targets {
			// A target named by release has a workload name known only
			// after discovery: it may have the pod.
			if t.StatefulSet == "" && t.Deployment == "" || t.StatefulSet == workloadOf(pod) || t.Deployment == pod {
				in[t.Namespace] = true
			}
		}
		if len(in) > 1 {
			nss := sortedKeys(in)
			return fmt.Errorf("--%s %s=...: pod %s is in namespaces %s; say which, as %s/%s=URL", flagGrafanaPodURL, pod, pod, strings.Join(nss, " and "), nss[0], pod)
		}
	}
	return nil
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
