package e2eutil

import (
	"bytes"
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/rebind-dev/rebind/pkg/report"
)

// BuildRebind compiles the real binary into the test's temporary directory,
// so end-to-end tests run exactly what an operator runs.
func BuildRebind(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "rebind")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/rebind-dev/rebind/cmd/rebind")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building rebind: %v\n%s", err, out)
	}
	return bin
}

// CLIResult is what one run of the binary left behind.
type CLIResult struct {
	Code           int
	Stdout, Stderr string
}

// RunRebind runs the binary against the cluster of kubeconfig and returns
// its exit code and output; only a failure to start it fails the test.
func RunRebind(t *testing.T, bin, kubeconfig string, args ...string) CLIResult {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"--kubeconfig", kubeconfig}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return CLIResult{Code: code, Stdout: out.String(), Stderr: errb.String()}
}

// Report decodes the JSON report `rebind migrate -o json` printed.
func (r CLIResult) Report(t testing.TB) *report.Report {
	t.Helper()
	var rep report.Report
	if err := json.Unmarshal([]byte(r.Stdout), &rep); err != nil {
		t.Fatalf("the report is not JSON: %v\n%s", err, r.Stdout)
	}
	return &rep
}
