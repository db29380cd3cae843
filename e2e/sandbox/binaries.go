package sandbox

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// component is one tool module under e2e/sandbox/tools that pins and builds
// some of the sandbox's binaries.
type component struct {
	name     string   // cache key prefix and tools/<name> directory
	version  string   // the pinned upstream version, for the cache key and messages
	label    string   // what the progress line calls it
	packages []string // what `go build` is given, run inside the tool module
	outputs  []string // binary names `go build -o dir/` produces
	ldflags  string
	expect   string // how long a cold build takes, for the progress line
}

// The kube ldflags must stay byte-identical to the pre-build the team runs, so
// the Go build cache is shared; the version stamp lets kubectl parse
// `version` output.
const kubeLDFlags = "-s -w -X k8s.io/component-base/version.gitVersion=v1.37.2 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37"

var components = []component{
	{
		name: "etcd", version: "v3.7.3", label: "etcd",
		packages: []string{"."}, outputs: []string{"etcd"},
		ldflags: "-s -w", expect: "about a minute",
	},
	{
		name: "kube", version: "v1.37.2", label: "kube-apiserver/controller-manager/scheduler",
		packages: []string{
			"k8s.io/kubernetes/cmd/kube-apiserver",
			"k8s.io/kubernetes/cmd/kube-controller-manager",
			"k8s.io/kubernetes/cmd/kube-scheduler",
		},
		outputs: []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler"},
		ldflags: kubeLDFlags, expect: "several minutes on 2 cores",
	},
	{
		name: "kwok", version: "v0.8.0", label: "kwok",
		packages: []string{"sigs.k8s.io/kwok/cmd/kwok"}, outputs: []string{"kwok"},
		ldflags: "-s -w", expect: "about 75 s",
	},
	{
		name: "snapshot-controller", version: "v8.7.0", label: "snapshot-controller",
		packages: []string{"."}, outputs: []string{"snapshot-controller"},
		ldflags: "-s -w", expect: "about a minute",
	},
	{
		name: "velero", version: VeleroVersion, label: "velero server, velero-plugin-for-aws and the S3 store",
		packages: []string{".", "github.com/vmware-tanzu/velero-plugin-for-aws/velero-plugin-for-aws", "./s3server"},
		outputs:  []string{"velero", "velero-plugin-for-aws", "s3server"},
		// The version stamp is what `velero version` and the server's
		// Backup status report (status.version).
		ldflags: "-s -w -X github.com/vmware-tanzu/velero/pkg/buildinfo.Version=" + VeleroVersion,
		expect:  "5-10 minutes on 2 cores",
	},
}

// VeleroVersion is the Velero release the sandbox runs; rebind's go.mod
// pins the same API types.
const VeleroVersion = "v1.18.3"

// Binaries maps a binary name (etcd, kube-apiserver, ...) to its cached path.
type Binaries map[string]string

// CacheDir is where built binaries live: outside the repository so `git
// clean` never forces a multi-minute rebuild.
func CacheDir() (string, error) {
	if d := os.Getenv("REBIND_SANDBOX_CACHE"); d != "" {
		return d, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("sandbox cache: set REBIND_SANDBOX_CACHE: %w", err)
	}
	return filepath.Join(home, ".cache", "rebind-sandbox"), nil
}

// RepoRoot finds the rebind checkout: the tool modules are read from it.
func RepoRoot() (string, error) {
	if d := os.Getenv("REBIND_REPO_ROOT"); d != "" {
		return d, nil
	}
	var starts []string
	// The source path is absolute unless the test binary was built with
	// -trimpath; the working directory is the fallback for that case.
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		starts = append(starts, filepath.Dir(file))
	}
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	for _, dir := range starts {
		for d := dir; ; d = filepath.Dir(d) {
			if isRepoRoot(d) {
				return d, nil
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	return "", errors.New("sandbox: cannot find the rebind repository root (set REBIND_REPO_ROOT)")
}

func isRepoRoot(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if mod, ok := strings.CutPrefix(line, "module "); ok {
			return strings.TrimSpace(mod) == "github.com/rebind-dev/rebind"
		}
	}
	return false
}

// EnsureBinaries returns every sandbox binary, building what the cache lacks.
// Builds run one module at a time: on 2 cores parallel builds only thrash.
func EnsureBinaries(ctx context.Context, log io.Writer) (Binaries, error) {
	if log == nil {
		log = os.Stderr
	}
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	cache, err := CacheDir()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, err
	}
	bins := Binaries{}
	for _, c := range components {
		dir, err := ensureComponent(ctx, c, filepath.Join(root, "e2e", "sandbox", "tools", c.name), cache, log)
		if err != nil {
			return nil, err
		}
		for _, o := range c.outputs {
			bins[o] = filepath.Join(dir, o)
		}
	}
	return bins, nil
}

// moduleHash keys the cache on what decides the build's result: the pinned
// dependency set and, for modules with a main of our own, its source.
func moduleHash(modDir, ldflags string) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "ldflags=%s\n", ldflags)
	names := []string{"go.mod", "go.sum"}
	// Mains in subdirectories (tools/velero/s3server) count too.
	err := filepath.WalkDir(modDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") {
			return err
		}
		rel, err := filepath.Rel(modDir, path)
		names = append(names, rel)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("sandbox: tool module %s: %w", modDir, err)
	}
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(modDir, n))
		if err != nil {
			return "", fmt.Errorf("sandbox: tool module %s: %w", modDir, err)
		}
		fmt.Fprintf(h, "%s %d\n", n, len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

func ensureComponent(ctx context.Context, c component, modDir, cache string, log io.Writer) (string, error) {
	hash, err := moduleHash(modDir, c.ldflags)
	if err != nil {
		return "", err
	}
	final := filepath.Join(cache, fmt.Sprintf("%s-%s-%s", c.name, c.version, hash))
	if complete(final, c.outputs) {
		return final, nil
	}

	// Test packages run in parallel processes; the lock makes the second one
	// wait for the first build instead of racing it.
	unlock, err := lockFile(ctx, filepath.Join(cache, c.name+".lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	if complete(final, c.outputs) {
		return final, nil
	}

	fmt.Fprintf(log, "sandbox: building %s %s (cold build, %s)...\n", c.label, c.version, c.expect)
	start := time.Now()
	tmp, err := os.MkdirTemp(cache, ".build-"+c.name+"-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	args := append([]string{"build", "-trimpath", "-ldflags", c.ldflags, "-o", tmp + string(filepath.Separator)}, c.packages...)
	cmd := exec.CommandContext(ctx, goTool(), args...)
	cmd.Dir = modDir
	// Each tool module stands alone; a go.work elsewhere must not pull it
	// into another build list.
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("sandbox: building %s in %s: %w\n%s", c.label, modDir, err, out)
	}
	if !complete(tmp, c.outputs) {
		return "", fmt.Errorf("sandbox: building %s produced no %v", c.label, c.outputs)
	}
	// Kept for `make bench`, which reports what filling the cache cost.
	took := time.Since(start)
	_ = os.WriteFile(filepath.Join(tmp, buildSecondsFile), []byte(fmt.Sprintf("%.1f\n", took.Seconds())), 0o644)
	// A directory rename is atomic: readers see every binary or none.
	_ = os.RemoveAll(final)
	if err := os.Rename(tmp, final); err != nil {
		return "", err
	}
	fmt.Fprintf(log, "sandbox: built %s in %s\n", c.label, time.Since(start).Round(time.Second))
	return final, nil
}

func complete(dir string, outputs []string) bool {
	for _, o := range outputs {
		fi, err := os.Stat(filepath.Join(dir, o))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

func goTool() string {
	if g := os.Getenv("GO"); g != "" {
		return g
	}
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	// A bare sandbox binary may run with a PATH that lacks Go.
	return "/usr/local/go/bin/go"
}

// lockFile takes an exclusive flock, giving up when ctx is done.
func lockFile(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- syscall.Flock(int(f.Fd()), syscall.LOCK_EX) }()
	select {
	case err := <-done:
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("sandbox: lock %s: %w", path, err)
		}
		return func() { f.Close() }, nil
	case <-ctx.Done():
		// Closing the file does not interrupt a blocked flock; the goroutine
		// finishes (and the lock drops with the descriptor) when the holder
		// releases it.
		go func() {
			if <-done == nil {
				f.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// buildSecondsFile, in a component's cache directory, holds how long its
// build took (Go's build cache may have been warm for parts of it).
const buildSecondsFile = "build-seconds"

// BuildSeconds reads the recorded build time of a cached component (by its
// name: etcd, kube, kwok, snapshot-controller, velero); ok is false when
// the cache does not hold it or it was built before times were recorded.
func BuildSeconds(name string) (float64, bool) {
	root, err := RepoRoot()
	if err != nil {
		return 0, false
	}
	cache, err := CacheDir()
	if err != nil {
		return 0, false
	}
	for _, c := range components {
		if c.name != name {
			continue
		}
		hash, err := moduleHash(filepath.Join(root, "e2e", "sandbox", "tools", c.name), c.ldflags)
		if err != nil {
			return 0, false
		}
		b, err := os.ReadFile(filepath.Join(cache, fmt.Sprintf("%s-%s-%s", c.name, c.version, hash), buildSecondsFile))
		if err != nil {
			return 0, false
		}
		var sec float64
		if _, err := fmt.Sscan(string(b), &sec); err != nil {
			return 0, false
		}
		return sec, true
	}
	return 0, false
}
