package sandbox

import (
	"context"
	"path/filepath"
	"time"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/rebind-dev/rebind/e2e/sandbox/velerostandin"
)

// startVelero runs the Velero stand-in (see its package comment) unless
// Options.NoVelero: Velero's CRDs are then still installed, which is the
// "installed but no server" case rebind must refuse.
func (s *Sandbox) startVelero(ctx context.Context, kube kubernetes.Interface) error {
	if s.opts.NoVelero {
		return nil
	}
	dyn, err := dynamic.NewForConfig(s.agentRC)
	if err != nil {
		return err
	}
	v, err := velerostandin.New(velerostandin.Config{Kube: kube, Dyn: dyn, StorageRoot: s.StorageRoot(), StoreDir: s.VeleroStore(), Log: s.logger})
	if err != nil {
		return err
	}
	setupCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := v.Setup(setupCtx); err != nil {
		return err
	}
	s.goAddon(ctx, "velero stand-in", v.Run)
	return nil
}

// VeleroStore is the Velero stand-in's backup store.
func (s *Sandbox) VeleroStore() string { return filepath.Join(s.Dir, "velero") }
