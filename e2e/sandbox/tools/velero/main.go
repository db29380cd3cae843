// Command velero is Velero v1.18's own CLI and server (`velero server`),
// built for the e2e sandbox. Upstream's cmd cannot be `go install`ed from the
// module proxy (replace directives), hence this wrapper.
package main

import (
	"os"
	"path/filepath"

	"github.com/vmware-tanzu/velero/pkg/cmd"
	"github.com/vmware-tanzu/velero/pkg/cmd/velero"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

func main() {
	// controller-runtime's manager binds :8080 for metrics whatever
	// --metrics-address says; two sandboxes on one machine would clash.
	metricsserver.DefaultBindAddress = "0"
	baseName := filepath.Base(os.Args[0])
	cmd.CheckError(velero.NewCommand(baseName).Execute())
}
