package faults_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// killPoint is where a run is killed: Offset after the progress line that
// starts step Step ("• [Step/n] ..."), which the runner prints before the
// step's precondition. Offsets up to the step's duration in a clean run put
// the kill inside the step: in its precondition, between its journal
// record and its writes, in its waits, or just after it finished and
// before its Done record went out.
type killPoint struct {
	Step   int
	Offset time.Duration
}

func (k killPoint) String() string { return fmt.Sprintf("step %d +%s", k.Step, k.Offset) }

// runOutcome is what one run of the binary did.
type runOutcome struct {
	Killed bool
	// Where is the last progress line before the kill: which step the
	// process was in (or had just finished).
	Where          string
	Code           int
	Stdout, Stderr string
	Elapsed        time.Duration
}

var (
	stepStartLine = regexp.MustCompile(`^ • \[(\d+)/(\d+)\] (.*) \.\.\.$`)
	stepDoneLine  = regexp.MustCompile(`^ ✓ \[(\d+)/(\d+)\] `)
)

// killAt is the onStep hook of runBinary that kills the process at kp.
func killAt(kp *killPoint) func(int, *os.Process) {
	if kp == nil {
		return nil
	}
	var armed bool
	return func(step int, p *os.Process) {
		if step == kp.Step && !armed {
			armed = true
			time.AfterFunc(kp.Offset, func() { _ = p.Signal(syscall.SIGKILL) })
		}
	}
}

// runBinary runs the real rebind with args, calling onStep (when not nil)
// as each step's progress line appears: the hook that kills the process or
// breaks something it depends on. Progress goes to stderr (the command
// uses -o json), which is read line by line as the binary prints it.
// Whether the process was killed is what its wait status says, not whether
// a signal was sent: a run that finished just before the timer fired was
// not killed.
func runBinary(ctx context.Context, bin string, args []string, onStep func(step int, p *os.Process)) (runOutcome, error) {
	cmd := exec.CommandContext(ctx, bin, append([]string{"--kubeconfig", sb.Kubeconfig}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	pipe, err := cmd.StderrPipe()
	if err != nil {
		return runOutcome{}, err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return runOutcome{}, err
	}
	var (
		mu    sync.Mutex
		where string
	)
	sc := bufio.NewScanner(pipe)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		stderr.WriteString(line)
		stderr.WriteByte('\n')
		if m := stepStartLine.FindStringSubmatch(line); m != nil {
			mu.Lock()
			where = "in " + strings.TrimSpace(line)
			mu.Unlock()
			if n, _ := strconv.Atoi(m[1]); onStep != nil {
				onStep(n, cmd.Process)
			}
		} else if stepDoneLine.MatchString(line) {
			mu.Lock()
			where = "after " + strings.TrimSpace(line)
			mu.Unlock()
		}
	}
	// What was still unread when the pipe broke is lost with the process.
	_, _ = io.Copy(io.Discard, pipe)
	werr := cmd.Wait()
	out := runOutcome{Stdout: stdout.String(), Stderr: stderr.String(), Elapsed: time.Since(start)}
	mu.Lock()
	out.Where = where
	mu.Unlock()
	var ee *exec.ExitError
	switch {
	case errors.As(werr, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			out.Killed = true
			out.Code = -1
		} else {
			out.Code = ee.ExitCode()
		}
	case werr != nil:
		return out, werr
	}
	if ctx.Err() != nil {
		return out, fmt.Errorf("the run outlived the test's deadline: %w", ctx.Err())
	}
	return out, nil
}

// tail is the end of a run's output, for failure messages.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
