package main

import (
	"fmt"
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

func grafanaFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: flagGrafanaURL, Category: grafanaCategory, Usage: "Grafana base URL, e.g. https://grafana.example.com; for migrate it must survive the pod swap (an Ingress, not a port-forward)"},
		&cli.StringFlag{Name: flagGrafanaUser, Category: grafanaCategory, Usage: "Grafana user for basic auth", Value: "admin"},
		&cli.StringFlag{Name: flagGrafanaPassword, Category: grafanaCategory, Usage: "Grafana password for basic auth", EnvVars: []string{"REBIND_GRAFANA_PASSWORD"}},
		&cli.StringFlag{Name: flagGrafanaToken, Category: grafanaCategory, Usage: "Grafana service account token (Bearer)", EnvVars: []string{"REBIND_GRAFANA_TOKEN"}},
		&cli.StringFlag{Name: flagGrafanaSecret, Category: grafanaCategory, Usage: "read admin-user/admin-password from the chart's Secret: `NAMESPACE/NAME` or NAME (namespace from --namespace)"},
		&cli.Int64Flag{Name: flagGrafanaOrgID, Category: grafanaCategory, Usage: "only this org (X-Grafana-Org-Id); default: every org the user can see"},
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
	creds, err := grafanaCredentials(c, kube)
	if err != nil {
		return nil, err
	}
	return grafana.New(grafana.Options{
		URL:                url,
		Credentials:        creds,
		OrgID:              c.Int64(flagGrafanaOrgID),
		CAFile:             c.Path(flagGrafanaCAFile),
		InsecureSkipVerify: c.Bool(flagGrafanaInsecure),
		Timeout:            c.Duration(flagGrafanaTimeout),
		Logger:             log,
	})
}

func grafanaCredentials(c *cli.Context, kube kubernetes.Interface) (grafana.Credentials, error) {
	token, password, secret := c.String(flagGrafanaToken), c.String(flagGrafanaPassword), c.String(flagGrafanaSecret)
	set := 0
	for _, v := range []string{token, password, secret} {
		if v != "" {
			set++
		}
	}
	if set > 1 {
		return grafana.Credentials{}, fmt.Errorf("use only one of --%s, --%s and --%s", flagGrafanaToken, flagGrafanaPassword, flagGrafanaSecret)
	}
	switch {
	case token != "":
		return grafana.Credentials{Token: token, Source: "--" + flagGrafanaToken}, nil
	case password != "":
		return grafana.Credentials{User: c.String(flagGrafanaUser), Password: password, Source: "--" + flagGrafanaPassword}, nil
	case secret != "":
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
	return grafana.Credentials{}, nil
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
