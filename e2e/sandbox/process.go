package sandbox

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// child is one control-plane process. Each runs in its own process group so a
// stop reaches anything it forks, and with Pdeathsig so a crashed or killed
// test binary never leaves a control plane behind.
type child struct {
	name    string
	bin     string
	args    []string
	env     []string
	cmd     *exec.Cmd
	logPath string
	log     *os.File
	done    chan struct{}
	err     error // set before done closes
}

func startChild(dir, name, bin string, args []string, env []string) (*child, error) {
	logPath := filepath.Join(dir, "logs", name+".log")
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return nil, err
	}
	// Appended to: a component restarted by a test keeps the story of its
	// first life in the same file.
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, bin: bin, args: args, env: env, cmd: cmd, logPath: logPath, log: f, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		f.Close()
		close(c.done)
	}()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop asks politely, then kills the whole group. The data is disposable, so
// the grace period only exists to let logs flush.
func (c *child) stop(grace time.Duration) {
	pgid := c.pid()
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(grace):
	}
	// Also after a clean exit: a grandchild may still hold the group.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	<-c.done
}

// tail returns the end of the child's log, for error messages.
func (c *child) tail(n int) string {
	b, err := os.ReadFile(c.logPath)
	if err != nil {
		return ""
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// rssSampler records the peak of the summed resident memory of the children.
type rssSampler struct {
	mu       sync.Mutex
	children []*child
	peak     atomic.Int64
	stop     chan struct{}
	stopped  chan struct{}
}

func newRSSSampler() *rssSampler {
	s := &rssSampler{stop: make(chan struct{}), stopped: make(chan struct{})}
	go s.loop()
	return s
}

func (s *rssSampler) add(c *child) {
	s.mu.Lock()
	s.children = append(s.children, c)
	s.mu.Unlock()
	s.sample()
}

func (s *rssSampler) loop() {
	defer close(s.stopped)
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.sample()
		}
	}
}

func (s *rssSampler) sample() {
	s.mu.Lock()
	defer s.mu.Unlock()
	var sum int64
	for _, c := range s.children {
		if !c.exited() {
			sum += rssBytes(c.pid())
		}
	}
	for {
		old := s.peak.Load()
		if sum <= old || s.peak.CompareAndSwap(old, sum) {
			return
		}
	}
}

func (s *rssSampler) close() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.stopped
}

// rssBytes reads VmRSS from /proc; 0 if the process is gone.
func rssBytes(pid int) int64 {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Bytes()
		if v, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			fields := bytes.Fields(v)
			if len(fields) == 0 {
				return 0
			}
			kb, err := strconv.ParseInt(string(fields[0]), 10, 64)
			if err != nil {
				return 0
			}
			return kb * 1024
		}
	}
	return 0
}
