// Command demo runs rebind's main job end to end on the local sandbox: it
// starts a real control plane, deploys a seeded Grafana the way the Helm
// chart does, then runs the rebind binary to restore Grafana's volume into
// another StorageClass and verify every dashboard. `make demo` runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/e2e/grafanastandin"
	"github.com/rebind-dev/rebind/e2e/sandbox"
	"github.com/rebind-dev/rebind/pkg/grafana"
	"github.com/rebind-dev/rebind/pkg/inventory"
	"github.com/rebind-dev/rebind/pkg/workload"
)

func main() {
	rebind := flag.String("rebind", "bin/rebind", "path to the rebind binary")
	keep := flag.Bool("keep", false, "leave the sandbox running until Ctrl-C, to look around with kubectl")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *rebind, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

func say(format string, args ...any) {
	fmt.Printf("\n==> "+format+"\n", args...)
}

func run(ctx context.Context, rebind string, keep bool) error {
	begin := time.Now()
	rebind, err := filepath.Abs(rebind)
	if err != nil {
		return err
	}
	say("Starting a local Kubernetes sandbox: etcd, kube-apiserver, kube-controller-manager (real PV binder and StatefulSet controller), kube-scheduler, snapshot-controller, kwok nodes, a storage agent playing a CSI driver.\n    The first run builds these from the Go module proxy (several minutes on 2 cores); later runs reuse ~/.cache/rebind-sandbox.")
	// The demo restores through CSI snapshots: no Velero server (whose
	// first build takes tens of minutes on 2 cores).
	sb, err := sandbox.Start(ctx, sandbox.Options{Progress: os.Stdout, NoVelero: true})
	if err != nil {
		return err
	}
	defer func() {
		say("Stopping the sandbox")
		_ = sb.Stop()
	}()
	fmt.Printf("    sandbox ready in %s (kubeconfig %s)\n", sb.Timing.Total.Round(100*time.Millisecond), sb.Kubeconfig)

	rel := fixtures.Release{Name: "grafana", Namespace: "monitoring", Replicas: 1, StorageClass: "standard", Size: "1Gi", Password: "demo-admin-password"}
	say("Deploying Grafana as the Helm chart does (release %q, StatefulSet %q, claim %q in StorageClass %q, reclaim policy Delete)", rel.Name, rel.FullName(), rel.Claim(0), rel.StorageClass)
	if _, err := sb.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: rel.Namespace}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	if err := rel.Deploy(ctx, sb.Kube); err != nil {
		return err
	}
	dir, pv, err := fixtures.ClaimVolumeDir(ctx, sb.Kube, sb.StorageRoot(), rel.Namespace, rel.Claim(0), time.Minute)
	if err != nil {
		return err
	}
	if err := grafanastandin.Seed(dir, grafanastandin.SeedSpec{Orgs: 3, FoldersPerOrg: 4, DashboardsPerOrg: 40, Seed: 7}); err != nil {
		return err
	}
	if err := workload.WaitReady(ctx, sb.Kube, rel.Namespace, rel.FullName(), 2*time.Minute); err != nil {
		return err
	}
	url := sb.PodURL(rel.Namespace, rel.Pod(0))
	client, err := grafana.New(grafana.Options{URL: url, Credentials: grafana.Credentials{User: "admin", Password: rel.Password}})
	if err != nil {
		return err
	}
	inv, err := waitInventory(ctx, client)
	if err != nil {
		return err
	}
	baseline := filepath.Join(os.TempDir(), "rebind-demo-baseline.json")
	if err := inv.SaveFile(baseline); err != nil {
		return err
	}
	t := inv.Totals()
	fmt.Printf("    Grafana (stand-in) serves %d dashboards in %d folders across %d orgs from PersistentVolume %s, at %s\n", t.Dashboards, t.Folders, len(inv.Orgs), pv.Name, url)

	env := append(os.Environ(), "KUBECONFIG="+sb.Kubeconfig)
	common := []string{"--release", rel.Name, "-n", rel.Namespace, "--grafana-pod-url", rel.Pod(0) + "=" + url}

	say("rebind plan: what a restore into StorageClass premium would do (nothing changes)")
	if err := runCmd(ctx, env, rebind, append([]string{"plan", "--strategy", "restore", "--to-storage-class", "premium"}, common...)...); err != nil {
		return err
	}
	values := filepath.Join(os.TempDir(), "rebind-demo-values.yaml")
	say("rebind migrate: snapshot the volume, restore it into premium, swap it under the StatefulSet, verify every dashboard")
	if err := runCmd(ctx, env, rebind, append([]string{"migrate", "--strategy", "restore", "--to-storage-class", "premium", "--values-out", values}, common...)...); err != nil {
		return err
	}
	say("Independent check: rebind verify against the inventory taken before the migration")
	if err := runCmd(ctx, env, rebind, "verify", "--grafana-url", url, "--grafana-secret", rel.Namespace+"/"+rel.FullName(), "--baseline", baseline); err != nil {
		return err
	}
	if b, err := os.ReadFile(values); err == nil {
		say("Helm values written to %s for the next `helm upgrade`:\n%s", values, b)
	}
	say("Demo finished in %s: every dashboard verified on the new volume.", time.Since(begin).Round(time.Second))
	if keep {
		fmt.Printf("    export KUBECONFIG=%s   # Ctrl-C to stop\n", sb.Kubeconfig)
		<-ctx.Done()
	}
	return nil
}

func runCmd(ctx context.Context, env []string, name string, args ...string) error {
	fmt.Printf("    $ rebind %s\n", shellJoin(args))
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env, cmd.Stdout, cmd.Stderr = env, os.Stdout, os.Stderr
	return cmd.Run()
}

func shellJoin(args []string) string {
	out := ""
	for i, a := range args {
		if i > 0 {
			out += " "
		}
		out += a
	}
	return out
}

// waitInventory retries until the runner serves the new pod.
func waitInventory(ctx context.Context, c *grafana.Client) (*inventory.Inventory, error) {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(time.Minute)
	for {
		inv, err := inventory.FromGrafana(ctx, c, inventory.Options{})
		if err == nil {
			return inv, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-deadline:
			return nil, err
		case <-tick.C:
		}
	}
}
