// Command sandbox runs the e2e control plane for `make sandbox`: `start`
// keeps it in the foreground until signalled, `wait` reports when it is
// ready, `down` stops it and waits until every component is gone.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rebind-dev/rebind/e2e/sandbox"
)

// ready is the marker `start` writes once the cluster is usable; `wait` and
// `down` read it.
type ready struct {
	Kubeconfig   string  `json:"kubeconfig"`
	Dir          string  `json:"dir"`
	PID          int     `json:"pid"`
	Children     []int   `json:"children"`
	StartSeconds float64 `json:"startSeconds"`
	BuildSeconds float64 `json:"buildSeconds"`
	PeakRSSBytes int64   `json:"peakRSSBytes"`
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	cmd := os.Args[1]
	fs := flag.NewFlagSet(cmd, flag.ExitOnError)
	state := fs.String("state", ".sandbox", "directory for the pid file, ready marker, logs and cluster data")
	timeout := fs.Duration("timeout", 0, "wait: how long to wait for ready (default 30m: a cold build takes minutes); down: for exit (default 1m)")
	_ = fs.Parse(os.Args[2:])
	if *timeout == 0 {
		*timeout = 30 * time.Minute
		if cmd == "down" {
			*timeout = time.Minute
		}
	}
	abs, err := filepath.Abs(*state)
	if err != nil {
		fail(err)
	}
	switch cmd {
	case "start":
		err = start(abs)
	case "wait":
		err = waitReady(abs, *timeout)
	case "running":
		if _, alive := runningPID(abs); !alive {
			os.Exit(1)
		}
	case "down":
		err = down(abs, *timeout)
	default:
		usage()
	}
	if err != nil {
		fail(err)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: sandbox start|wait|running|down [-state DIR] [-timeout D]")
	os.Exit(2)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "sandbox:", err)
	os.Exit(1)
}

func readyPath(state string) string { return filepath.Join(state, "ready.json") }
func pidPath(state string) string   { return filepath.Join(state, "pid") }

func start(state string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer stop()
	dir := filepath.Join(state, "cluster")
	// A previous run's etcd data would be inconsistent with fresh certs.
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	_ = os.Remove(readyPath(state))
	s, err := sandbox.Start(ctx, sandbox.Options{Dir: dir, KeepDir: true, Progress: os.Stdout})
	if err != nil {
		return err
	}
	r := ready{
		Kubeconfig:   s.Kubeconfig,
		Dir:          s.Dir,
		PID:          os.Getpid(),
		Children:     s.PIDs(),
		StartSeconds: s.Timing.StartToReady().Seconds(),
		BuildSeconds: s.Timing.Binaries.Seconds(),
		PeakRSSBytes: s.PeakRSS(),
	}
	if err := writeJSONAtomic(readyPath(state), r); err != nil {
		_ = s.Stop()
		return err
	}
	fmt.Printf("sandbox: ready in %.1fs, peak RSS %d MiB\n", r.StartSeconds, r.PeakRSSBytes>>20)
	<-ctx.Done()
	fmt.Println("sandbox: stopping")
	_ = os.Remove(readyPath(state))
	err = s.Stop()
	_ = os.Remove(pidPath(state))
	fmt.Printf("sandbox: stopped (peak RSS %d MiB)\n", s.PeakRSS()>>20)
	return err
}

func writeJSONAtomic(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// runningPID reads the pid file and tells whether that process still runs.
func runningPID(state string) (int, bool) {
	b, err := os.ReadFile(pidPath(state))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, alive(pid)
}

func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	// A zombie has exited; only its parent has not reaped it yet.
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	if i := strings.LastIndexByte(string(b), ')'); i >= 0 && i+2 < len(b) {
		return b[i+2] != 'Z'
	}
	return true
}

// waitReady follows the start log until the ready marker appears, or fails
// with the log's end if the process dies first.
func waitReady(state string, timeout time.Duration) error {
	logPath := filepath.Join(state, "sandbox.log")
	var offset int64
	follow := func() {
		f, err := os.Open(logPath)
		if err != nil {
			return
		}
		defer f.Close()
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			return
		}
		n, _ := io.Copy(os.Stderr, f)
		offset += n
	}
	deadline := time.After(timeout)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		follow()
		if b, err := os.ReadFile(readyPath(state)); err == nil {
			var r ready
			if err := json.Unmarshal(b, &r); err != nil {
				return err
			}
			fmt.Printf("export KUBECONFIG=%s\n", r.Kubeconfig)
			fmt.Fprintf(os.Stderr, "# sandbox started in %.1fs (binaries %.1fs), peak RSS %d MiB; stop it with: make sandbox-down\n",
				r.StartSeconds, r.BuildSeconds, r.PeakRSSBytes>>20)
			return nil
		}
		if _, ok := runningPID(state); !ok {
			follow()
			return fmt.Errorf("the sandbox process exited before it was ready; see %s", logPath)
		}
		select {
		case <-deadline:
			return fmt.Errorf("not ready after %s; see %s", timeout, logPath)
		case <-tick.C:
		}
	}
}

func down(state string, timeout time.Duration) error {
	pid, ok := runningPID(state)
	if !ok {
		fmt.Fprintln(os.Stderr, "sandbox: not running")
		_ = os.Remove(pidPath(state))
		return nil
	}
	var r ready
	if b, err := os.ReadFile(readyPath(state)); err == nil {
		_ = json.Unmarshal(b, &r)
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for range tick.C {
		left := 0
		for _, p := range append([]int{pid}, r.Children...) {
			if alive(p) {
				left++
			}
		}
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			// The components die with their parent (Pdeathsig).
			_ = syscall.Kill(pid, syscall.SIGKILL)
			return fmt.Errorf("%d processes still running after %s; killed %d", left, timeout, pid)
		}
	}
	_ = os.Remove(pidPath(state))
	fmt.Fprintln(os.Stderr, "sandbox: down")
	return nil
}
