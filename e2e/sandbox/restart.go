package sandbox

import (
	"context"
	"fmt"
	"time"
)

// Components the fault tests stop and start (the names of their logs under
// logs/).
const (
	ComponentAPIServer          = "kube-apiserver"
	ComponentSnapshotController = "snapshot-controller"
	ComponentControllerManager  = "kube-controller-manager"
	ComponentScheduler          = "kube-scheduler"
)

// StopComponent stops one control-plane process the way an operator or a
// node failure would: SIGTERM (kube-apiserver then drains in-flight requests
// and closes watches, as in a rolling restart), SIGKILL after grace. It
// returns once the process is gone. Everything else keeps running; clients
// see connection errors until StartComponent.
func (s *Sandbox) StopComponent(name string, grace time.Duration) error {
	c, err := s.component(name)
	if err != nil {
		return err
	}
	if c.exited() {
		return fmt.Errorf("sandbox: %s is not running", name)
	}
	c.stop(grace)
	return nil
}

// StartComponent starts a component stopped by StopComponent again, with
// the same binary, flags, ports and data, and waits until it serves: for
// kube-apiserver until /readyz answers, for the others until the process
// has started (they reconnect to the API on their own).
func (s *Sandbox) StartComponent(ctx context.Context, name string) error {
	c, err := s.component(name)
	if err != nil {
		return err
	}
	if !c.exited() {
		return fmt.Errorf("sandbox: %s is still running", name)
	}
	n, err := startChild(s.Dir, c.name, c.bin, c.args, c.env)
	if err != nil {
		return err
	}
	s.mu.Lock()
	for i := range s.children {
		if s.children[i] == c {
			s.children[i] = n
		}
	}
	s.mu.Unlock()
	s.rss.add(n)
	if name == ComponentAPIServer {
		ctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		return s.waitReadyz(ctx, s.Kube.Discovery().RESTClient())
	}
	return nil
}

// RestartComponent is StopComponent, down for the given time, then
// StartComponent: a component restarted mid-run.
func (s *Sandbox) RestartComponent(ctx context.Context, name string, down time.Duration) error {
	if err := s.StopComponent(name, 5*time.Second); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case <-time.After(down):
	}
	return s.StartComponent(context.WithoutCancel(ctx), name)
}

func (s *Sandbox) component(name string) (*child, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil, fmt.Errorf("sandbox: stopped")
	}
	for _, c := range s.children {
		if c.name == name {
			return c, nil
		}
	}
	return nil, fmt.Errorf("sandbox: no component %q", name)
}
