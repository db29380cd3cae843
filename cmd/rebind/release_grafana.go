package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"

	"github.com/rebind-dev/rebind/pkg/discovery"
	"github.com/rebind-dev/rebind/pkg/grafana"
	"github.com/rebind-dev/rebind/pkg/migrate"
	"github.com/rebind-dev/rebind/pkg/podproxy"
	"github.com/rebind-dev/rebind/pkg/preflight"
)

// releaseGrafanaFlags let inventory and verify name a release's Grafana
// instead of a URL: from a workstation it is then reached through the API
// server's pod proxy, as migrate reaches it, with nothing but the
// kubeconfig.
func releaseGrafanaFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "namespace", Aliases: []string{"n"}, Category: targetCategory, Usage: "namespace of the release (default: the kubeconfig context's); also of a --grafana-secret NAME"},
		&cli.StringFlag{Name: "release", Category: targetCategory, Usage: "Helm release of the Grafana chart: read its Grafana (instead of --grafana-url), with the chart's admin Secret unless credentials are given"},
		&cli.StringFlag{Name: "statefulset", Category: targetCategory, Usage: "the Grafana StatefulSet (instead of --release)"},
		&cli.StringFlag{Name: "deployment", Category: targetCategory, Usage: "the Grafana Deployment (instead of --release)"},
		&cli.IntFlag{Name: "ordinal", Category: targetCategory, Usage: "with a StatefulSet: the replica whose Grafana to read (each has its own volume)"},
		grafanaAccessFlag(),
	}
}

func hasReleaseTarget(c *cli.Context) bool {
	return c.String("release") != "" || c.String("statefulset") != "" || c.String("deployment") != ""
}

// releaseGrafanaClient reaches the Grafana of the release the target flags
// name: one pod of a StatefulSet (--ordinal), or a Deployment's current
// Ready pod, through the API server's pod proxy or at its cluster DNS name
// (--grafana-access). Without credential flags it logs in with the chart's
// admin Secret. The pod proxy's rights are checked first, so that a
// missing one is named rather than shown as Grafana's failure.
func releaseGrafanaClient(c *cli.Context) (*grafana.Client, *zap.Logger, error) {
	viaProxy, err := usePodProxy(c)
	if err != nil {
		return nil, nil, err
	}
	log, clients, ns, err := commandEnv(c)
	if err != nil {
		return nil, nil, err
	}
	ctx := c.Context
	t, err := discovery.Workload(ctx, clients, discovery.Options{Namespace: ns, Release: c.String("release"),
		StatefulSet: c.String("statefulset"), Deployment: c.String("deployment")})
	if err != nil {
		return nil, nil, err
	}
	pod, ord := t.Name(), c.Int("ordinal")
	switch {
	case t.IsDeployment() && ord != 0:
		return nil, nil, fmt.Errorf("--ordinal %d: Deployment %s/%s has one volume, which all its pods share; leave --ordinal out", ord, ns, t.Name())
	case !t.IsDeployment() && (ord < 0 || ord >= t.Replicas()):
		return nil, nil, fmt.Errorf("--ordinal %d: StatefulSet %s/%s has %d replica(s), ordinals 0 to %d", ord, ns, t.Name(), t.Replicas(), t.Replicas()-1)
	case !t.IsDeployment():
		pod = fmt.Sprintf("%s-%d", t.Name(), ord)
	}
	auth, err := grafanaAuthFromFlags(c, clients.Kube, ns, t.AdminSecret)
	if err != nil {
		return nil, nil, err
	}
	opts := auth.options(c, "", log)
	if !viaProxy {
		opts.URL = defaultGrafanaURL(pod, ns)
		return clientOf(opts, log)
	}
	if len(c.StringSlice(flagGrafanaToken)) > 0 {
		return nil, nil, fmt.Errorf("--%s cannot be used through the API server's pod proxy: %w (use the admin Secret or --%s, or --%s)", flagGrafanaToken, grafana.ErrTokenNeedsHeader, flagGrafanaPassword, flagGrafanaURL)
	}
	perms := migrate.PodProxyPermissions(ns)
	if t.IsDeployment() {
		// Its current pod is looked up.
		perms = append(perms, preflight.Permission{Verb: "list", Resource: "pods", Namespace: ns})
	}
	var r preflight.Report
	if err := preflight.CheckAccess(ctx, clients.Kube, perms, &r); err != nil {
		return nil, nil, err
	}
	for i := range r.Problems {
		r.Problems[i].Fix = "Grafana is reached through the API server's pod proxy (no --grafana-url, rebind outside the cluster): grant get and create on pods/proxy (manifests/rbac-migrate.yaml has them), or give --grafana-url"
	}
	if err := r.Err(); err != nil {
		return nil, nil, err
	}
	px, err := podproxy.New(clients.Config, clients.Kube)
	if err != nil {
		return nil, nil, err
	}
	port := podproxy.ContainerPort(&t.PodTemplate().Spec, "grafana", "grafana", 3000)
	if t.IsDeployment() {
		if opts.URL, opts.Transport, err = px.DeploymentSelector(ns, pod, t.Selector(), port); err != nil {
			return nil, nil, err
		}
	} else {
		opts.URL, opts.Transport = px.Pod(ns, pod, port)
	}
	opts.SessionLogin = true
	fmt.Fprintf(c.App.ErrWriter, "Grafana of %s %s/%s: reached through the API server's pod proxy as the kubeconfig's user\n", t.KindName(), ns, pod)
	return clientOf(opts, log)
}

func clientOf(opts grafana.Options, log *zap.Logger) (*grafana.Client, *zap.Logger, error) {
	cl, err := grafana.New(opts)
	return cl, log, err
}
